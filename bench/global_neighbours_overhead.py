"""What judging the global distance against its nearest normals costs a worker: the same
checkpoint's model through the default engine plan (the exported graph holds the search) with its
neighbourhood and with the plain distance, a batch of real frames through each, interleaved in one
run; and the global part on its own in torch.

    python bench/global_neighbours_overhead.py --checkpoint runs/n3/rd/checkpoint [--batch 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_overhead import timed  # noqa: E402

from inspector.engine.engine import DiscrepancyEngine, EngineOptions, load_engine  # noqa: E402
from inspector.model.nets.signals import pooled_statistics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    engines = {"neighbours": load_engine(args.checkpoint, None, EngineOptions())}
    k = engines["neighbours"].model.gaussian.neighbours if engines["neighbours"].model.gaussian is not None else 0
    if not k:
        raise SystemExit(f"{args.checkpoint} judges no global distance against neighbours")
    plain = load_engine(args.checkpoint, "cpu", EngineOptions(backend="torch"))
    plain.model.gaussian.neighbours = 0  # the same weights, the plain distance: exported as such below
    engines["plain"] = DiscrepancyEngine(plain.model, plain.manifest, engines["neighbours"].device, EngineOptions())
    g = engines["neighbours"].geometry
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*g.hw, 3), dtype=np.uint8) for _ in range(args.batch)]
    for e in engines.values():
        e.placed_maps(frames)  # warm: compilation, first-call costs
    gauss = plain.model.gaussian
    feats = plain.model.teacher(torch.randn(args.batch, 3, *g.hw))
    stats = pooled_statistics(feats)
    results: dict[str, list[float]] = {k: [] for k in engines}
    part = {"neighbours": [], "plain": []}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, e in engines.items():
                results[name].append(timed(lambda: e.placed_maps(frames), 3))
            part["plain"].append(timed(lambda: gauss.distance(stats), 50))
            gauss.neighbours = k
            part["neighbours"].append(timed(lambda: gauss.distance(stats) / gauss.neighbourhood(stats), 50))
            gauss.neighbours = 0
    print(f"{engines['neighbours'].plan.describe()}, {args.batch} frames of {g.describe()}, "
          f"{torch.get_num_threads()} threads, {gauss.reference.shape[0]} kept normals of "
          f"{gauss.reference.shape[1]} statistics, {k} neighbours")
    for name in engines:
        print(f"{name:10s}: batch through the engine {statistics.median(results[name]):7.1f} ms, "
              f"global part alone in torch {statistics.median(part[name]):6.3f} ms (medians of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
