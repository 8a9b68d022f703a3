"""Worker start-up time (spawn of `inspector serve` → /readyz 200), with the ONNX graph cache cold
(an empty cache folder: the graph is exported) and warm (the graph of this checkpoint is cached),
on a quiet machine and with --busy processes spinning on the cores (a stand-in for a restart
beside a backlog, the publisher and the broker). The conditions alternate round by round, so
they are measured side by side on this noisy machine.

    python bench/startup.py --out runs/startup --rounds 3 --busy 2

Uses the tiny soak model (trained into --out) unless --checkpoint is given; starts its own local
broker and Redis on loopback. Prints one JSON line per start and a summary table; writes
``startup.json`` to --out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import statistics
import sys
from pathlib import Path


from soak import Topics, WorkerSlot, local_stack, log, train_tiny


def _spin() -> None:
    while True:
        pass


def start_once(args: argparse.Namespace, env: dict[str, str], cache: Path, label: str) -> float:
    topics = Topics.create(env["INSPECTOR_KAFKA_BOOTSTRAP_SERVERS"], 1, label)
    slot = WorkerSlot(0, args, env, topics, args.out / "logs")
    slot.env["INSPECTOR_ONNX_CACHE_DIR"] = str(cache)
    slot.start()
    try:
        slot.wait_ready(timeout=300)
        return float(slot.ready_after or 0.0)
    finally:
        slot.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--busy", type=int, default=2, help="spinning processes in the 'busy' condition (0: skip it)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--worker-log-level", default="WARNING")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    loads = ["quiet"] + (["busy"] if args.busy else [])
    results: list[dict] = []
    with local_stack(None, None, args.out / "services") as (env, _broker_pid):
        if args.checkpoint is None:
            args.checkpoint = train_tiny(args.out, 64, 8, 256)
        args.checkpoint = args.checkpoint.resolve()
        warm = args.out / "cache-warm"
        start_once(args, env, warm, "fill")  # fills the warm cache; not counted
        for r in range(args.rounds):
            for load in loads:
                spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy if load == "busy" else 0)]
                for s in spinners:
                    s.start()
                try:
                    for cache_state in ("cold", "warm"):
                        cache = warm
                        if cache_state == "cold":
                            cache = args.out / f"cache-cold-{r}-{load}"
                            shutil.rmtree(cache, ignore_errors=True)
                        took = start_once(args, env, cache, f"{cache_state}-{load}-{r}")
                        row = {"round": r, "load": load, "cache": cache_state, "ready_s": round(took, 2)}
                        results.append(row)
                        print(json.dumps(row), flush=True)
                finally:
                    for s in spinners:
                        s.terminate()
                        s.join(5)
    summary = []
    for load in loads:
        for cache_state in ("cold", "warm"):
            xs = [x["ready_s"] for x in results if x["load"] == load and x["cache"] == cache_state]
            summary.append({"load": load, "cache": cache_state, "n": len(xs), "median_s": round(statistics.median(xs), 2),
                            "min_s": min(xs), "max_s": max(xs)})
    (args.out / "startup.json").write_text(json.dumps({"runs": results, "summary": summary}, indent=1) + "\n")
    print("| load | ONNX cache | starts | median s | min–max s |\n|---|---|---|---|---|")
    for s in summary:
        print(f"| {s['load']} | {s['cache']} | {s['n']} | {s['median_s']} | {s['min_s']}–{s['max_s']} |")
    log(f"wrote {args.out / 'startup.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
