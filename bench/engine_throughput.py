"""Inference throughput of the Engine on this machine: images/s and ms/batch against batch size.

Measures the full serving path (decoded uint8 frames → preprocessing → model → maps → scores →
masks/regions), all models in the same run, one after the other, on the same frames.

    python bench/engine_throughput.py CKPT [CKPT ...] [--batch-sizes 1 8 16] [--seconds 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from inspector.engine.engine import load_engine


def frames(n: int, size: tuple[int, int], data: Path | None) -> list[np.ndarray]:
    if data is not None and (data / "test").is_dir():
        from trainer.data import load_sample, scan_dataset

        samples = scan_dataset(data).test
        return [load_sample(samples[i * len(samples) // n])[0] for i in range(n)]
    from trainer.synthetic import make_image

    return [make_image("spot" if i % 4 == 0 else None, size=size[0], seed=0, index=i)[0] for i in range(n)]


def measure(engine, images: list[np.ndarray], batch: int, seconds: float) -> dict:
    batches = [images[i:i + batch] for i in range(0, len(images) - batch + 1, batch)] or [images[:batch]]
    engine.infer(batches[0])  # warm-up
    done, times = 0, []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 3:
        b = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        engine.infer(b)
        times.append(time.perf_counter() - t0)
        done += len(b)
    total = sum(times)
    return {"batch": batch, "images_per_s": round(done / total, 2), "ms_per_batch": round(1000 * float(np.median(times)), 1),
            "batches": len(times)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 16])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--device", default=None)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared/datasets/magnetic_tile")
    args = p.parse_args()
    images = frames(64, (256, 256), args.data)
    rows = []
    for ckpt in args.checkpoints:
        engine = load_engine(ckpt, args.device)
        m = engine.manifest
        for bs in args.batch_sizes:
            r = measure(engine, images, bs, args.seconds)
            r.update(checkpoint=str(ckpt), method=m.method, variant=m.variant, teacher=m.teacher,
                     image_size=m.image_size, device=str(engine.device), threads=torch.get_num_threads())
            rows.append(r)
            print(f"{m.method:5} {str(m.variant or ''):11} {m.teacher:18} {m.image_size}px batch {bs:3}: "
                  f"{r['images_per_s']:8.1f} img/s  {r['ms_per_batch']:8.1f} ms/batch", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
