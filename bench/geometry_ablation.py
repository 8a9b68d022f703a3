"""How frames are brought to the model input, measured with the training-free signals alone.

The patch memory and the global Gaussian need no training, so each geometry is scored in about
a minute and a half on this CPU without training students: the same teacher, the same coreset
rule, the same test set, only the placement differs. Rows (``MODE:HxW``):

* ``stretch`` — resize to the input whatever the frame's shape (older checkpoints);
* ``pad`` — scale to fit without distortion, mirror into the rest; scores read the frame's part
  (the product's ``pad``, ``inspector.model.geometry``);
* ``padfull`` — ``pad``, but the score reads the whole input, mirrored border included;
* ``padframe`` — ``pad``, and the Gaussian's statistics pooled over the frame's cells only (the
  product pools them over the whole input: the exported graph has one input);
* ``crop`` — scale to cover without distortion, cut the centre (the frame's edges are lost).

Pixel AUROC is measured in each test image's own pixels (maps mapped back, at half resolution),
so every row is judged on the same pixels. "held-in" is the mean image AUROC of blowhole, break
and fray (crack and uneven held out), the rule the defaults are chosen by.

    python bench/geometry_ablation.py --data ../shared/datasets/magnetic_tile \\
        stretch:256x256 pad:288x224 padfull:288x224 crop:288x224 stretch:288x224
"""

from __future__ import annotations

import argparse
import json
import math
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from inspector.contracts.decode import read_image
from inspector.model.geometry import Geometry, Placement
from inspector.model.nets.discrepancy import AnomalyMapper
from inspector.model.nets.signals import GlobalGaussian, PatchMemory, pooled_statistics
from inspector.model.nets.teachers import build_teacher
from inspector.model.preprocess import normalize, to_unit_tensor
from trainer.data import load_sample, scan_dataset, split_train_val
from trainer.metrics import image_auroc, pixel_auroc
from trainer.signals import DEFAULT_CORESET_FRACTION, MAX_CANDIDATES, bank_size, collect, fit_gaussian, greedy_coreset

HELD_IN = ("blowhole", "break", "fray")


def place_crop(t: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, Placement]:
    """Scale to cover (h, w) without distortion and cut the centre; the placement covers the input."""
    fh, fw = t.shape[-2:]
    s = max(h / fh, w / fw)
    nh, nw = max(h, round(fh * s)), max(w, round(fw * s))
    r = F.interpolate(t[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return r[:, y0:y0 + h, x0:x0 + w], Placement((fh, fw), 0, h, 0, w)


def frame_statistics(feats, placements, h, w) -> torch.Tensor:
    """Pooled statistics of each image over the teacher cells that hold its frame."""
    rows = []
    for j, p in enumerate(placements):
        cut = []
        for f in feats:
            fh, fw = f.shape[-2:]
            cut.append(f[j:j + 1, :, p.y0 * fh // h:math.ceil(p.y1 * fh / h), p.x0 * fw // w:math.ceil(p.x1 * fw / w)])
        rows.append(pooled_statistics(cut))
    return torch.cat(rows)


def batches(paths, mode, h, w, teacher, batch=16):
    """Teacher features, valid masks, placements and frame sizes, a batch at a time."""
    g = Geometry(h, w, "stretch" if mode.startswith("stretch") else "pad")
    spec = teacher.spec
    for i in range(0, len(paths), batch):
        placed, shapes = [], []
        for p in paths[i:i + batch]:
            t = to_unit_tensor(read_image(p))
            shapes.append(tuple(t.shape[-2:]))
            placed.append(place_crop(t, h, w) if mode == "crop" else g.place(t))
        x = normalize(torch.stack([x for x, _ in placed]), spec.mean, spec.std)
        ps = [p for _, p in placed]
        valid = None if mode == "padfull" else g.valid_mask(ps)
        with torch.no_grad():
            yield teacher(x), valid, ps, shapes


def run(spec: str, index, train, val, teacher) -> dict:
    mode, size = spec.split(":")
    h, w = (int(v) for v in size.lower().split("x"))
    t0 = time.perf_counter()
    feats, valids, frame_stats = [], [], []
    for f, v, ps, _ in batches(train, mode, h, w, teacher):
        feats.append(f)
        valids.append(v if v is not None else torch.ones(len(f[0]), h, w, dtype=torch.bool))
        if mode == "padframe":
            frame_stats.append(frame_statistics(f, ps, h, w))
    per_image = max(1, math.ceil(MAX_CANDIDATES / len(train)))
    patches, stats = collect(iter(feats), (2,), 3, True, True, per_image, 0, torch.cat(valids))
    if mode == "padframe":
        stats = torch.cat(frame_stats)
    del feats
    bank = greedy_coreset(patches, bank_size(len(patches), DEFAULT_CORESET_FRACTION))
    memory = PatchMemory(len(bank), bank.shape[1], (2,), 3)
    memory.bank.copy_(bank)
    gauss = GlobalGaussian(stats.shape[1])
    mean, precision = fit_gaussian(stats)
    gauss.mean.copy_(mean)
    gauss.precision.copy_(precision)
    mapper = AnomalyMapper(4.0)

    def score(paths):
        mem, glob, maps = [], [], []
        for f, valid, ps, shapes in batches(paths, mode, h, w, teacher):
            with torch.no_grad():
                m = mapper.smooth(F.interpolate(memory(f), size=(h, w), mode="bilinear", align_corners=False)).squeeze(1)
                if mode == "padframe":
                    glob.append(gauss.distance(frame_statistics(f, ps, h, w)).numpy())
                else:
                    glob.append(gauss(f).numpy())
            for j, p in enumerate(ps):
                mem.append(float(m[j][valid[j]].max() if valid is not None else m[j].max()))
                fm = m[j, p.y0:p.y1, p.x0:p.x1].numpy()
                fh, fw = shapes[j]
                maps.append(cv2.resize(fm, (max(1, fw // 2), max(1, fh // 2)), interpolation=cv2.INTER_LINEAR))
        return np.array(mem), np.concatenate(glob), maps

    vm, vg, _ = score(val)
    samples = index.test
    tm, tg, tmaps = score([s.path for s in samples])
    labels = np.array([s.defect_type != "good" for s in samples])
    types = np.array([s.defect_type for s in samples])
    masks = []
    for s, mp in zip(samples, tmaps):
        if s.mask_path is None:
            masks.append(np.zeros(mp.shape, bool))
        else:
            mk = load_sample(s)[1].astype(np.uint8)
            masks.append(cv2.resize(mk, (mp.shape[1], mp.shape[0]), interpolation=cv2.INTER_NEAREST) > 0)
    fused = (tm / vm.mean() + tg / vg.mean()) / 2
    good = np.sort(fused[~labels])
    thr = good[int(np.ceil(0.98 * len(good))) - 1]
    per_type = {t: image_auroc(fused[(types == t) | ~labels], labels[(types == t) | ~labels])
                for t in sorted(set(types) - {"good"})}
    return {"geometry": spec, "memory_image_auroc": image_auroc(tm, labels), "gaussian_image_auroc": image_auroc(tg, labels),
            "image_auroc": image_auroc(fused, labels),
            # crop: the map covers the frame's centre only, so there is no map of its edges to judge
            "memory_pixel_auroc": None if mode == "crop" else pixel_auroc(
                np.concatenate([m.ravel() for m in tmaps]), np.concatenate([m.ravel() for m in masks])),
            "recall_at_2pct_frr": float(np.mean(fused[labels] > thr)),
            "held_in": float(np.mean([per_type[t] for t in HELD_IN if t in per_type])),
            "per_type": per_type, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--teacher", default="efficientnet_lite0")
    ap.add_argument("rows", nargs="+", metavar="MODE:HxW")
    args = ap.parse_args()
    index = scan_dataset(args.data)
    train, val = split_train_val(index.train_paths, 0.1, 0)
    teacher = build_teacher(args.teacher).eval()
    rows = []
    for spec in args.rows:
        rows.append(run(spec, index, train, val, teacher))
        print(json.dumps(rows[-1]), flush=True)
    types = sorted(rows[0]["per_type"])
    print("\n| geometry (input HxW) | memory image AUROC | Gaussian image AUROC | fused image AUROC | memory pixel AUROC "
          "| recall at 2 % false rejects | held-in types | " + " | ".join(types) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(types))
    for r in rows:
        print(f"| {r['geometry']} | {r['memory_image_auroc']:.3f} | {r['gaussian_image_auroc']:.3f} | {r['image_auroc']:.3f} | "
              f"{'–' if r['memory_pixel_auroc'] is None else format(r['memory_pixel_auroc'], '.3f')} | {r['recall_at_2pct_frr']:.1%} | {r['held_in']:.3f} | "
              + " | ".join(f"{r['per_type'][t]:.3f}" for t in types) + " |")


if __name__ == "__main__":
    main()
