"""How the local dev broker (tansu, memory storage) copes as a partition grows: produce rate and
the time one consumer fetch takes from the oldest offset and from the middle, measured as the
partition fills with frame-sized single-record batches (what line cameras send), for two fetch
sizes. No worker is involved; this isolates the broker.

    python bench/broker_depth.py --out runs/broker-depth --depths 2500 5000 10000 20000 40000

Written because the hour-long soak stalled with the worker idle, no frames in flight, a growing
lag and tansu at 100 % of a core. Prints one JSON line per (depth, fetch size) and writes
``broker_depth.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402

from inspector.localstack import LocalBroker  # noqa: E402


def fetch_time(bootstrap: str, tp: TopicPartition, offset: int, fetch_bytes: int, timeout_s: float) -> tuple[float, int]:
    """Seconds until the first non-empty poll from ``offset``, and how many records it returned."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             max_partition_fetch_bytes=fetch_bytes, fetch_max_bytes=max(fetch_bytes, 1 << 20),
                             max_poll_records=100_000, request_timeout_ms=int(timeout_s * 1000) + 5000)
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            got = consumer.poll(timeout_ms=500).get(tp, [])
            if got:
                return time.perf_counter() - t0, len(got)
        return float("inf"), 0
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--depths", type=int, nargs="+", default=[2500, 5000, 10000, 20000, 40000])
    p.add_argument("--record-bytes", type=int, default=13_400, help="a 256 px JPEG frame of the soak")
    p.add_argument("--fetch-bytes", type=int, nargs="+", default=[16 << 20, 1 << 20])
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with LocalBroker(run_dir=args.out / "services") as broker:
        topic = f"depth-{uuid.uuid4().hex[:6]}"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(topic, 1, 1)])
        admin.close()
        tp = TopicPartition(topic, 0)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0, max_in_flight_requests_per_connection=1)
        value = os.urandom(args.record_bytes)
        have = 0
        for depth in args.depths:
            t0 = time.perf_counter()
            futures = [producer.send(topic, key=b"cam-0", value=value) for _ in range(depth - have)]
            producer.flush()
            for f in futures:
                f.get(timeout=60)
            produce_rate = (depth - have) / (time.perf_counter() - t0)
            have = depth
            for fetch_bytes in args.fetch_bytes:
                oldest_s, oldest_n = fetch_time(broker.bootstrap, tp, 0, fetch_bytes, args.timeout)
                middle_s, middle_n = fetch_time(broker.bootstrap, tp, depth // 2, fetch_bytes, args.timeout)
                row = {"depth": depth, "produce_per_s": round(produce_rate, 1), "fetch_bytes": fetch_bytes,
                       "oldest_fetch_s": round(oldest_s, 3), "oldest_records": oldest_n,
                       "middle_fetch_s": round(middle_s, 3), "middle_records": middle_n}
                rows.append(row)
                print(json.dumps(row), flush=True)
        producer.close()
    (args.out / "broker_depth.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
