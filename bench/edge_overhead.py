"""What edge equalisation costs a worker: a batch through the engine (graph + the steps after it)
with the checkpoint's edge profile and without it, interleaved in one run, and the post-graph step
alone. Frames of one shape that does not fill the input (padded), as from one camera.

    python bench/edge_overhead.py --checkpoint runs/e1/rd/checkpoint [--batch 16] [--frame 300x200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from inspector.engine.engine import EngineOptions, load_engine
from inspector.model.geometry import parse_size


def timed(fn, repeats: int) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` calls."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frame", default="300x200", help="frame WIDTHxHEIGHT (default: one that is padded)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    engine = load_engine(args.checkpoint, None, EngineOptions())
    model = engine.model
    if not model.config.edge_gain:
        raise SystemExit(f"{args.checkpoint} has no edge profile to measure")
    h, w = parse_size(args.frame)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(args.batch)]
    g = engine.geometry
    valid = g.valid_mask([g.placement((h, w))] * args.batch, engine.device)
    maps, scores = torch.rand(args.batch, *g.hw, device=engine.device), torch.rand(args.batch, device=engine.device)
    configs = {"equalised": model.config, "off": replace(model.config, edge_gain=(), edge_offset=())}
    engine.placed_maps(frames)  # warm: compilation, first-call costs
    results: dict[str, dict[str, list[float]]] = {k: {"engine": [], "post": []} for k in configs}
    for _ in range(args.rounds):
        for name, cfg in configs.items():
            model.config = cfg
            results[name]["engine"].append(timed(lambda: engine.placed_maps(frames), 3))
            results[name]["post"].append(timed(lambda: model.content_outputs(maps, scores, valid), 20))
    model.config = configs["equalised"]
    print(f"{engine.plan.describe()}, {args.batch} frames of {w}x{h} in a {g.describe()} input, "
          f"{torch.get_num_threads()} threads")
    for name, r in results.items():
        print(f"{name:9s}: batch through the engine {statistics.median(r['engine']):7.1f} ms, "
              f"post-graph step {statistics.median(r['post']):6.2f} ms (medians of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
