"""Start-up and stop time of the local services (`deploy/local/services`): Apache Kafka (one KRaft
node) from an empty folder (format + start) and again with its data (restart), and redis-server,
each until it answers (a metadata round trip, a PING). Rounds alternate the cases so that they
are measured side by side on this noisy machine.

    python bench/local_services_startup.py --rounds 3

Prints one JSON line per measurement and a summary (median and max seconds per case).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from devtools.localstack import LocalBroker, LocalRedis, ensure_kafka_jars


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    ensure_kafka_jars()  # resolved once, not part of any start
    results: dict[str, list[float]] = {}

    def record(case: str, seconds: float) -> None:
        results.setdefault(case, []).append(seconds)
        print(json.dumps({"case": case, "seconds": round(seconds, 3)}), flush=True)

    for _ in range(args.rounds):
        run_dir = Path(tempfile.mkdtemp(prefix="services-startup-"))
        try:
            broker = LocalBroker(run_dir=run_dir / "kafka")
            record("kafka first start (format + start)", timed(broker.start))
            record("kafka stop (SIGTERM, controlled shutdown)", timed(broker.stop))
            record("kafka restart with its data", timed(broker.start))
            broker.close()
            redis = LocalRedis(run_dir=run_dir / "redis")
            record("redis start", timed(redis.start))
            record("redis stop", timed(redis.stop))
            redis.close()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
    print("\n| case | median s | max s |\n|---|---|---|")
    for case, values in results.items():
        print(f"| {case} | {statistics.median(values):.2f} | {max(values):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
