"""Facts README.md quotes about magnetic_tile and the EfficientNet-Lite0 teacher.

    python bench/magnetic_tile_facts.py [DATA]

1. How signed the teacher's taps are, and the best cosine a non-negative (ReLU-ended) student
   could reach: cos(relu(f), f) per scale.
2. Mask coverage per defect type, and each type's share of all defect pixels in the test set.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inspector.model.nets.teachers import build_teacher
from inspector.model.preprocess import prepare_batch
from trainer.data import load_sample, scan_dataset


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/datasets/magnetic_tile"
    index = scan_dataset(data)
    teacher = build_teacher("efficientnet_lite0")
    x = prepare_batch([load_sample(s)[0] for s in index.train[:32]], 256, teacher.spec.mean, teacher.spec.std)
    with torch.no_grad():
        taps = teacher(x)
    signed = [{"stride": s, "negative_fraction": round(float((f < 0).float().mean()), 3),
               "best_cos_of_nonnegative_student": round(float(F.cosine_similarity(f.relu().flatten(1), f.flatten(1)).mean()), 3)}
              for s, f in zip(teacher.spec.strides, taps)]
    coverage, pixels = {}, {}
    for t in index.defect_types:
        masks = [load_sample(s)[1] for s in index.test if s.defect_type == t]
        coverage[t] = round(float(np.mean([m.mean() for m in masks])), 3)
        pixels[t] = float(sum(m.mean() for m in masks))  # in image units: sizes differ, all resized alike
    total = sum(pixels.values())
    share = {t: round(v / total, 3) for t, v in pixels.items()}
    print(json.dumps({"teacher_taps": signed, "mask_coverage": coverage, "share_of_defect_pixels": share}, indent=1))


if __name__ == "__main__":
    main()
