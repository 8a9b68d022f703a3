"""Where small defects are lost in a tiled model: each feature level and map on its own.

Reads a checkpoint written by ``bench/tiling.py`` and its data set (``CHECKPOINT/../data``, with
the defects' sizes in ``truth.json``). For
every defective test frame it takes the tile whose centre is nearest the defect and reads each
candidate map's peak within 3 px of the defect; a defect counts as seen by a map when that peak
is above the map's largest value over every tile of ``--good`` good test frames (the frame-level
rule of the bench, at tile level). Candidate maps:

* ``students L0 / L1 / L2 / sum``: the students' 1 − cosine at the teacher's stride 4, 8, 16 and
  their sum (the product's map), each smoothed with a Gaussian of σ = 0, 2 or 4 px (4: the product);
* ``students L2 norm L0``: the squared distance of the stride-4 features, divided by the teacher
  features' mean squared norm (magnitude, which a cosine ignores);
* ``memory L0 / L1 / L2``: a patch memory (3×3 neighbourhoods, a coreset of 8,192 rows, as the
  product's) fitted on the training frames' tiles at one level, smoothed with σ = 4 (the product's
  memory is L2);
* ``local contrast``: the product's local-contrast map (``trainer fit --contrast-map``,
  ``inspector.model.nets.contrast``), its filters normalised on the same training tiles.

    python bench/small_defects.py --checkpoint runs/tiling-ov/tiled --good 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inspector.contracts.decode import read_image
from inspector.engine.engine import EngineOptions, load_engine
from inspector.model.nets.contrast import LocalContrast
from inspector.model.nets.discrepancy import AnomalyMapper
from inspector.model.nets.signals import PatchMemory, patch_embeddings
from inspector.model.preprocess import prepare_placed
from trainer.signals import contrast_rms, greedy_coreset

SMALL = 15  # px: the bench's "under 15 px" group


class Probe:
    def __init__(self, checkpoint: Path, bank_rows: int = 8192, seed: int = 0):
        self.engine = load_engine(checkpoint, "cpu", EngineOptions(backend="torch", precision="fp32"))
        if self.engine.tiling is None:
            raise SystemExit(f"{checkpoint} is not a tiled model")
        self.model, self.tiling = self.engine.model, self.engine.tiling
        self.mappers = {s: AnomalyMapper(s) for s in (0, 2, 4)}
        self.memories: dict[int, PatchMemory] = {}
        m = self.engine.manifest
        self.contrast = LocalContrast(m.std)
        self.bank_rows, self.seed = bank_rows, seed

    def inputs(self, tiles) -> torch.Tensor:
        m = self.engine.manifest
        return prepare_placed(tiles, self.engine.geometry, m.mean, m.std, "cpu")[0]

    @torch.no_grad()
    def features(self, tiles):
        x = self.inputs(tiles)
        teacher, students = self.model.features(x)
        return tuple(x.shape[-2:]), teacher, students[0]

    def fit_memories(self, frames: list[np.ndarray], per_tile: int = 64) -> None:
        g = torch.Generator().manual_seed(self.seed)
        rows: dict[int, list[torch.Tensor]] = {lv: [] for lv in range(3)}
        squares, count = torch.zeros(self.contrast.filters), 0
        for frame in frames:
            tiles, _ = self.tiling.cut(frame)
            x = self.inputs(tiles)
            squares += contrast_rms(self.contrast, x, "cpu").pow(2) * len(x)
            count += len(x)
            for i in range(0, len(tiles), 32):
                _, teacher, _ = self.features(tiles[i:i + 32])
                for lv in rows:
                    e = patch_embeddings(teacher, (lv,), 3)
                    e = e.permute(0, 2, 3, 1).reshape(-1, e.shape[1])
                    rows[lv].append(e[torch.randperm(len(e), generator=g)[:per_tile * len(tiles[i:i + 32])]])
        self.contrast.rms.copy_((squares / count).sqrt())
        for lv, parts in rows.items():
            bank = greedy_coreset(torch.cat(parts), self.bank_rows, seed=self.seed)
            mem = PatchMemory(len(bank), bank.shape[1], (lv,), 3)
            mem.bank.copy_(bank)
            self.memories[lv] = mem

    @torch.no_grad()
    def maps(self, tiles) -> dict[str, np.ndarray]:
        size, teacher, student = self.features(tiles)
        up = lambda d: F.interpolate(d, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        raw = self.model.mapper.raw  # the product's per-level 1 - cosine, upsampled and summed
        levels = {f"L{lv}": raw(teacher[lv:lv + 1], [student[lv:lv + 1]], size) for lv in range(len(teacher))}
        levels["sum"] = raw(teacher, [student], size)
        out = {f"students {k}, sigma {s}": self.mappers[s].smooth(v).squeeze(1).numpy()
               for k, v in levels.items() for s in self.mappers}
        t0, s0 = teacher[0].float(), student[0].float()
        norm = up((t0 - s0).pow(2).sum(1, keepdim=True) / t0.pow(2).sum(1).mean())
        out["students L2 norm L0, sigma 4"] = self.mappers[4].smooth(norm).squeeze(1).numpy()
        for lv, mem in self.memories.items():
            out[f"memory L{lv}, sigma 4"] = self.mappers[4].smooth(up(mem(teacher))).squeeze(1).numpy()
        out["local contrast"] = self.contrast(self.inputs(tiles)).squeeze(1).numpy()
        return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--good", type=int, default=10, help="good test frames whose tiles set each map's level")
    p.add_argument("--train", type=int, default=8, help="training frames the probe's memories are fitted on")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    data = args.checkpoint.parent / "data"
    truth = json.loads((data / "truth.json").read_text())  # written by bench/tiling.py: name -> size, kind
    probe = Probe(args.checkpoint)
    probe.fit_memories([read_image(f) for f in sorted((data / "train/good").iterdir())[:args.train]])
    levels: dict[str, float] = {}
    for f in sorted((data / "test/good").iterdir())[:args.good]:
        tiles, _ = probe.tiling.cut(read_image(f))
        for i in range(0, len(tiles), 32):
            for k, v in probe.maps(tiles[i:i + 32]).items():
                levels[k] = max(levels.get(k, -np.inf), float(v.max()))
    side = probe.tiling.side
    seen: dict[str, list[tuple[int, bool, float]]] = {k: [] for k in levels}
    for f in sorted((data / "test/defect").iterdir()):
        mask = cv2.imread(str(data / "ground_truth/defect" / f"{f.stem}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
        ys, xs = np.nonzero(mask)
        size = int(truth[f.name]["size"])
        tiles, grid = probe.tiling.cut(read_image(f))
        j = min(range(len(grid)), key=lambda i: (grid[i].y + side / 2 - ys.mean()) ** 2 + (grid[i].x + side / 2 - xs.mean()) ** 2)
        t = grid[j]
        part = np.zeros((side, side), np.uint8)
        part[:t.h, :t.w] = mask[t.y:t.y + t.h, t.x:t.x + t.w]
        near = cv2.dilate(part, np.ones((7, 7), np.uint8)) > 0
        if probe.tiling.zoom > 1:
            near = cv2.resize(near.astype(np.uint8), (probe.tiling.tile,) * 2, interpolation=cv2.INTER_NEAREST) > 0
        for k, v in probe.maps([tiles[j]]).items():
            seen[k].append((size, truth[f.name]["kind"] == "scratch", float(v[0][near].max()) / levels[k]))
    rows = []
    for k, v in seen.items():
        a = np.array(v, dtype=np.float64)
        small, big = a[a[:, 0] < SMALL], a[a[:, 0] >= SMALL]
        rows.append({"map": k, "seen_under_15px": float((small[:, 2] > 1).mean()),
                     "spots_under_15px": float((small[small[:, 1] == 0, 2] > 1).mean()),
                     "scratches_under_15px": float((small[small[:, 1] == 1, 2] > 1).mean()),
                     "seen_15px_and_over": float((big[:, 2] > 1).mean()),
                     "median_peak_over_level_under_15px": float(np.median(small[:, 2]))})
    print(f"{len(a)} defects, {len(small)} under {SMALL} px; a map's level: its largest value over every tile of "
          f"{args.good} good frames\n")
    print("| map | < 15 px seen | spots | 1 px scratches | ≥ 15 px seen | median peak / level, < 15 px |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['map']} | {r['seen_under_15px']:.0%} | {r['spots_under_15px']:.0%} | "
              f"{r['scratches_under_15px']:.0%} | {r['seen_15px_and_over']:.0%} | "
              f"{r['median_peak_over_level_under_15px']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "good": args.good, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
