"""Small defects on full-resolution frames: tiles against the whole frame resized, in one run.

Makes 2448×2048 textured parts (a fine stationary grain of ``--grain`` grey levels under slow
illumination changes, as on machined or coated surfaces) with one defect each of ``--contrast``
grey levels, 5-40 px across (a dark or bright spot, or a
thin scratch), in the MVTec layout; trains two RD models with the same teacher, input size,
seed and number of training samples (a tile or a whole frame each: the whole-frame model gets
as many more epochs) on the same normal frames: one on tiles of that size (``--tile``), one on
whole frames resized to about that many pixels (``--tile off``); then scores the same test frames
with both through the serving Engine (``--contrast-map``: also a tiled model with the
local-contrast map fused, one for each of ``--contrast-lines``; ``--zoom N``: also tiled models
with magnified windows). The threshold
of each is set on its own scores of the good test frames for a false-reject rate of at most 1 %
(the largest score of fewer than 100 good frames: none rejected), and recall is reported by defect size. Throughput (frames/s and tiles/s at
2448×2048 and 1280×1024, against 256×256 frames through the whole-frame model) is measured with
the tiled engine, interleaved in rounds.

    python bench/tiling.py --out runs/tiling-g6 --train 10 --good 30 --defects 63 --epochs 4 --grain 6 --zoom 2
    python bench/tiling.py --out runs/tiling --train 10 --good 30 --defects 63 --epochs 4 --grain 14
    python bench/tiling.py --out runs/tiling-c --train 10 --good 30 --defects 63 --epochs 4 --grain 6 \
        --zoom --contrast-map
    python bench/tiling.py --out runs/tiling-n15 --train 10 --good 30 --defects 63 --epochs 4 --grain 6 \
        --zoom --contrast-map --noise 1.5 --rounds 1 --seconds 2
    python bench/tiling.py --out runs/tiling-w15 --train 10 --good 30 --defects 63 --epochs 4 --grain 6 \
        --zoom --contrast-map --contrast-lines whitened plain --noise 1.5 --rounds 1 --seconds 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

HW = (2048, 2448)
SIZES = (5, 8, 12, 16, 24, 32, 40)


def make_texture(rng: np.random.Generator, hw: tuple[int, int] = HW, grain_std: float = 6.0) -> np.ndarray:
    """A grey part: fine grain (2-3 px, ``grain_std`` grey levels) plus slow illumination, 8-bit BGR."""
    h, w = hw
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
    grain *= grain_std / grain.std()
    light = cv2.resize(rng.normal(0, 1, (4, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = 128 + grain + 10 * light
    return cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def add_defect(img: np.ndarray, rng: np.random.Generator, size: int,
               contrast: float = 45.0) -> tuple[np.ndarray, np.ndarray, str]:
    """One defect of ``size`` px across at a random place (away from the border); its mask and kind."""
    h, w = img.shape[:2]
    y, x = int(rng.integers(60, h - 60)), int(rng.integers(60, w - 60))
    mask = np.zeros((h, w), np.uint8)
    kind = ("dark_spot", "bright_spot", "scratch")[int(rng.integers(0, 3))]
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        dx, dy = int(round(size / 2 * np.cos(angle))), int(round(size / 2 * np.sin(angle)))
        cv2.line(mask, (x - dx, y - dy), (x + dx, y + dy), 1, max(1, size // 8))
        delta = -contrast
    else:
        cv2.circle(mask, (x, y), max(1, size // 2), 1, -1)
        delta = -contrast if kind == "dark_spot" else contrast
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)
    out = np.clip(img.astype(np.float32) + delta * soft[..., None], 0, 255).astype(np.uint8)
    return out, mask, kind


def make_data(root: Path, n_train: int, n_good: int, n_defects: int, seed: int, grain: float,
              contrast: float, noise: float = 0.0) -> dict[str, tuple[int, str]]:
    """Writes the data set; returns test file name → (defect size, kind) for the defective ones.
    ``noise``: white sensor noise (grey-level std) on every frame, drawn from its own generator so
    that the parts and defects are those of a run without it."""
    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng(seed + 1)

    def camera(img: np.ndarray) -> np.ndarray:
        if noise <= 0:
            return img
        grey = img[..., 0].astype(np.float32) + noise_rng.normal(0.0, noise, img.shape[:2]).astype(np.float32)
        return cv2.cvtColor(np.clip(np.round(grey), 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)

    def texture(rng: np.random.Generator) -> np.ndarray:
        return make_texture(rng, HW, grain)

    truth: dict[str, tuple[int, str]] = {}
    for folder in ("train/good", "test/good", "test/defect", "ground_truth/defect"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        cv2.imwrite(str(root / "train/good" / f"{i:03d}.png"), camera(texture(rng)))
    for i in range(n_good):
        cv2.imwrite(str(root / "test/good" / f"{i:03d}.png"), camera(texture(rng)))
    for i in range(n_defects):
        size = SIZES[i % len(SIZES)]
        img, mask, kind = add_defect(texture(rng), rng, size, contrast)
        name = f"{i:03d}.png"
        cv2.imwrite(str(root / "test/defect" / name), camera(img))
        cv2.imwrite(str(root / "ground_truth/defect" / f"{i:03d}_mask.png"), mask * 255)
        truth[name] = (size, kind)
    (root / "truth.json").write_text(json.dumps({k: {"size": s, "kind": kd} for k, (s, kd) in truth.items()}))
    return truth


def scores_of(engine, paths: list[Path], batch: int = 4) -> np.ndarray:
    from inspector.contracts.decode import read_image

    out = []
    for i in range(0, len(paths), batch):
        out.append(engine.scores([read_image(p) for p in paths[i:i + batch]]))
    return np.concatenate(out)


def recall_table(good: np.ndarray, bad: np.ndarray, sizes: list[int]) -> dict:
    thr = float(np.max(good)) if len(good) < 100 else float(np.quantile(good, 0.99))
    hit = bad > thr
    sizes_arr = np.asarray(sizes)
    by_size = {int(s): float(hit[sizes_arr == s].mean()) for s in sorted(set(sizes))}
    return {"threshold": thr, "false_reject_rate": float(np.mean(good > thr)), "recall": float(hit.mean()),
            "recall_under_15px": float(hit[sizes_arr < 15].mean()), "recall_15px_and_over": float(hit[sizes_arr >= 15].mean()),
            "recall_by_size": by_size,
            "image_auroc": float(auroc(np.r_[good, bad], np.r_[np.zeros(len(good)), np.ones(len(bad))]))}


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(labels, scores)


def throughput(tiled, whole, rounds: int, seconds: float, others: dict | None = None) -> dict:
    rng = np.random.default_rng(1)
    big = [make_texture(rng, (2048, 2448)) for _ in range(2)]
    cases = {"2448x2048": (tiled, big),
             "1280x1024": (tiled, [make_texture(rng, (1024, 1280)) for _ in range(4)]),
             "256x256 (whole-frame model)": (whole, [make_texture(rng, (256, 256)) for _ in range(8)])}
    for name, engine in (others or {}).items():
        cases[f"2448x2048 ({name})"] = (engine, big)
    rates: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):  # interleaved: every case once per round
        for name, (engine, frames) in cases.items():
            engine.infer(frames[:1])
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                engine.infer(frames)
                n += len(frames)
            rates[name].append(n / (time.perf_counter() - t0))
    out = {}
    for name, (engine, frames) in cases.items():
        fps = float(np.median(rates[name]))
        tiles = engine.units(frames[0].shape[:2])
        out[name] = {"frames_per_s": round(fps, 3), "tiles_per_frame": tiles, "tiles_per_s": round(fps * tiles, 1),
                     "rounds": [round(r, 3) for r in rates[name]]}
    base = out["256x256 (whole-frame model)"]["frames_per_s"]
    for name in out:
        out[name]["ratio_to_256px_frames"] = round(out[name]["frames_per_s"] / base, 4)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train", type=int, default=10)
    p.add_argument("--good", type=int, default=30)
    p.add_argument("--defects", type=int, default=63)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grain", type=float, default=6.0, help="grey-level std of the surface's fine grain")
    p.add_argument("--contrast", type=float, default=45.0, help="grey levels a defect adds or takes away")
    p.add_argument("--noise", type=float, default=0.0,
                   help="white sensor noise (grey-level std) on every frame; 0: none, as in the README's table")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--zoom", type=int, nargs="*", default=[2],
                   help="also train and score tiled models whose windows are enlarged this many times (none: skip)")
    p.add_argument("--contrast-map", action="store_true",
                   help="also train and score a tiled model with the local-contrast map fused (trainer fit --contrast-map)")
    p.add_argument("--contrast-lines", nargs="+", choices=["whitened", "plain"], default=["whitened"],
                   help="with --contrast-map: one contrast model per choice of its line filters (trainer fit "
                        "--contrast-lines); the whitened one is named tiled-contrast, the plain one "
                        "tiled-contrast-plain")
    p.add_argument("--reuse", action="store_true",
                   help="score the checkpoints an earlier run left in OUT (same data and arguments) instead of "
                        "fitting them again; their fit figures are that run's. Delete a checkpoint to refit it")
    p.add_argument("--zoom-epochs", type=int, default=None,
                   help="epochs of the zoomed models (default: as many training samples as the plain tiled model)")
    args = p.parse_args()

    from inspector.engine.engine import load_engine
    from inspector.model.tiling import Tiling
    from inspector.support.logs import configure_logging
    from trainer.fit import FitConfig, fit

    configure_logging("warning")
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "data"
    t0 = time.perf_counter()
    truth = make_data(data, args.train, args.good, args.defects, args.seed, args.grain, args.contrast, args.noise)
    print(f"data: {args.train} train, {args.good} good and {args.defects} defective test frames of "
          f"{HW[1]}x{HW[0]} px, grain std {args.grain:g}, defect contrast {args.contrast:g}, "
          f"sensor noise {args.noise:g} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    previous = args.out / "tiling.json"
    earlier = json.loads(previous.read_text()) if args.reuse and previous.exists() else {}
    results: dict = {"frame": f"{HW[1]}x{HW[0]}", "args": {k: str(v) for k, v in vars(args).items()}}
    engines = {}
    samples = None
    frames_trained = int(round(args.train * 0.8))
    contrast_names = {"whitened": "tiled-contrast", "plain": "tiled-contrast-plain"}
    variants = [("tiled", args.image_size, 1, None)] \
        + ([(contrast_names[lines], args.image_size, 1, lines) for lines in args.contrast_lines]
           if args.contrast_map else []) \
        + [(f"tiled-zoom{z}", args.image_size, z, None) for z in args.zoom if z > 1] + [("whole", None, 1, None)]
    for name, tile, zoom, contrast in variants:
        t0 = time.perf_counter()
        max_tiles = FitConfig.max_tiles
        # the same number of training samples for all: a whole frame is one sample, a tile is one
        if samples is None:
            epochs = args.epochs
        elif tile is None:
            epochs = max(args.epochs, round(samples / max(1, frames_trained)))
        elif zoom > 1 and args.zoom_epochs:
            epochs = args.zoom_epochs
        else:
            positions = frames_trained * Tiling(tile, tile // zoom // 8, zoom).count(HW)
            epochs = max(1, round(samples / max(1, positions)))
            if positions > samples:  # more tile positions than samples: one pass over a sample of them
                max_tiles = samples
        if name in earlier and (args.out / name / "manifest.json").exists():
            summary = {"train_images": earlier[name]["train_images"], "input": earlier[name]["input"]}
            fit_s = earlier[name]["fit_seconds"]
            print(f"{name}: reusing the checkpoint and fit figures of the earlier run", flush=True)
        else:
            summary = fit(FitConfig(data=data, out=args.out / name, image_size=args.image_size, tile=tile, zoom=zoom,
                                    epochs=epochs, seed=args.seed, progress=False, name=f"bench-{name}",
                                    val_fraction=0.2, max_tiles=max_tiles, contrast_map=contrast is not None,
                                    contrast_lines=contrast or FitConfig.contrast_lines))
            fit_s = time.perf_counter() - t0
        if samples is None:
            samples = summary["train_images"] * args.epochs
        engines[name] = load_engine(args.out / name, "cpu")
        good_paths = sorted((data / "test/good").iterdir())
        bad_paths = sorted((data / "test/defect").iterdir())
        t1 = time.perf_counter()
        good, bad = scores_of(engines[name], good_paths), scores_of(engines[name], bad_paths)
        score_s = time.perf_counter() - t1
        table = recall_table(good, bad, [truth[p.name][0] for p in bad_paths])
        table.update(input=summary["input"], fit_seconds=round(fit_s, 1), score_seconds=round(score_s, 1),
                     train_images=summary["train_images"], epochs=epochs,
                     train_samples=summary["train_images"] * epochs)
        results[name] = table
        print(f"{name}: {summary['input']}, {epochs} epochs of {summary['train_images']} images, fit "
              f"{table['fit_seconds']} s; recall {table['recall']:.3f} at FRR "
              f"{table['false_reject_rate']:.3f} (under 15 px {table['recall_under_15px']:.3f}, 15-40 px "
              f"{table['recall_15px_and_over']:.3f}), image AUROC {table['image_auroc']:.3f}; by size "
              f"{table['recall_by_size']}", flush=True)
    others = {name: engines[name] for name, tile, zoom, contrast in variants if zoom > 1 or contrast is not None}
    results["throughput"] = throughput(engines["tiled"], engines["whole"], args.rounds, args.seconds, others)
    for name, row in results["throughput"].items():
        print(f"throughput {name}: {row['frames_per_s']} frames/s, {row['tiles_per_s']} tiles/s "
              f"({row['tiles_per_frame']} tiles a frame), {row['ratio_to_256px_frames']}x the 256 px frames", flush=True)
    (args.out / "tiling.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'tiling.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
