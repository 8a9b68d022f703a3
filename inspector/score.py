"""`inspector score`: inspect image files with a checkpoint, through the same Engine the workers use."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Iterator

from inspector.contracts.decode import DecodeError, read_image


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(paths), size):
        yield paths[i:i + size]


def run(args: argparse.Namespace) -> int:
    from inspector.model.checkpoint import CheckpointError
    from inspector.engine.engine import load_engine
    from inspector.engine.protocol import Engine
    from inspector.runtime.sinks import heatmap_png

    try:
        engine: Engine = load_engine(args.checkpoint, args.device)
    except CheckpointError as exc:
        print(json.dumps({"error": "checkpoint_refused", "message": str(exc)}))
        return 2
    if args.heatmaps:
        args.heatmaps.mkdir(parents=True, exist_ok=True)
    failures = 0
    for chunk in _batches(list(args.images), args.batch_size):
        decoded: list[tuple[Path, Any]] = []
        for path in chunk:
            try:
                decoded.append((path, read_image(path)))
            except (DecodeError, OSError) as exc:
                failures += 1
                print(json.dumps({"image": str(path), "verdict": "rejected",
                                  "reason": getattr(exc, "reason", "unreadable"), "message": str(exc)}))
        if not decoded:
            continue
        for (path, image), result in zip(decoded, engine.infer([img for _, img in decoded])):
            line = {"image": str(path), "verdict": "defect" if result.defect else "ok", "score": result.score,
                    "threshold": engine.threshold, "model": engine.name, "version": engine.version,
                    "regions": [r.model_dump() for r in result.regions]}
            if args.heatmaps:
                out = args.heatmaps / f"{path.stem}_heatmap.png"
                out.write_bytes(heatmap_png(result.heatmap, engine.region_threshold))
                line["heatmap"] = str(out)
            print(json.dumps(line), flush=True)
    return 1 if failures else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("score", help="score image files with a checkpoint (JSON lines)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--heatmaps", type=Path, default=None, help="write one heatmap PNG per image here")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=run)
