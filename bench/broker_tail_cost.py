"""What it costs the local dev broker (tansu, memory storage) to serve a consumer at the tail, as
the records it holds pile up: the broker's CPU share (% of one core) and RSS while a producer
sends --rate records/s (acks=all, one record per request, as line cameras do) over --partitions
partitions and one consumer reads them as they come, measured at each total depth, for each
record size. No worker is involved; this isolates the broker.

    python bench/broker_tail_cost.py --out runs/broker-tail --depths 0 20000 60000 120000 --record-bytes 1000 15000

Written because the hour-long soak held for half an hour and then fell behind with tansu near a
full core: tansu never trims a topic (``delete_records`` drops the connection, ``retention.ms``
is not applied), so every record sent stays, and if the cost of a produce or fetch grows with what
the broker holds, any long run on it ends with the broker taking the cores the worker needs.
Prints one JSON line per (record size, depth) and writes ``broker_tail_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kafka import KafkaConsumer, KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402

from inspector.budget import rss_bytes  # noqa: E402
from inspector.localstack import LocalBroker  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import cpu_seconds  # noqa: E402


def fill(producer: KafkaProducer, topic: str, partitions: int, value: bytes, count: int) -> None:
    """Adds ``count`` records as fast as the broker takes them (spread over the partitions)."""
    futures = [producer.send(topic, key=f"cam-{i % partitions}".encode(), value=value, partition=i % partitions)
               for i in range(count)]
    producer.flush()
    for f in futures:
        f.get(timeout=120)


def tail_share(bootstrap: str, topic: str, partitions: int, value: bytes, rate: float, seconds: float,
               broker_pid: int) -> dict:
    """Broker CPU share while ``rate`` records/s are produced and read back at the tail."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest",
                             enable_auto_commit=False, fetch_max_wait_ms=50)
    while not consumer.assignment():
        consumer.poll(timeout_ms=200)
    for tp in consumer.assignment():
        consumer.position(tp)  # pin "latest" before the paced records start
    stop = threading.Event()
    read = [0]

    def reader() -> None:
        while not stop.is_set():
            read[0] += sum(len(r) for r in consumer.poll(timeout_ms=100).values())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_request_size=64 << 20)
    time.sleep(1.0)
    c0, t0 = cpu_seconds(broker_pid), time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - t0) < seconds:
        delay = n / rate - elapsed
        if delay > 0:
            time.sleep(delay)
        producer.send(topic, key=f"cam-{n % partitions}".encode(), value=value, partition=n % partitions)
        n += 1
    producer.flush()
    share = 100 * (cpu_seconds(broker_pid) - c0) / (time.perf_counter() - t0)
    time.sleep(1.0)
    stop.set()
    t.join(5)
    consumer.close()
    producer.close()
    return {"produced": n, "read_back": read[0], "broker_cpu_pct": round(share, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--depths", type=int, nargs="+", default=[0, 20000, 60000, 120000],
                   help="records held by the broker when the tail is measured (ascending)")
    p.add_argument("--record-bytes", type=int, nargs="+", default=[1000, 15000],
                   help="record sizes; 15000 is a 256 px JPEG frame of the soak")
    p.add_argument("--partitions", type=int, default=32)
    p.add_argument("--rate", type=float, default=130.0, help="records/s at the tail (the soak's load)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each tail measurement")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.record_bytes:
        # A fresh broker per record size: tansu keeps everything, so sizes must not share one.
        with LocalBroker(run_dir=args.out / f"services-{size}") as broker:
            topic = f"tail-{uuid.uuid4().hex[:6]}"
            admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
            admin.create_topics([NewTopic(topic, args.partitions, 1)])
            admin.close()
            value = os.urandom(size)
            filler = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5,
                                   max_request_size=64 << 20)
            held = 0
            for depth in args.depths:
                if depth > held:
                    fill(filler, topic, args.partitions, value, depth - held)
                    held = depth
                row = {"record_bytes": size, "depth": depth, "partitions": args.partitions, "rate": args.rate,
                       **tail_share(broker.bootstrap, topic, args.partitions, value, args.rate, args.seconds,
                                    broker.pid),
                       "broker_rss_mb": round(rss_bytes(broker.pid) / 2**20, 1)}
                held += row["produced"]
                rows.append(row)
                print(json.dumps(row), flush=True)
            filler.close()
    (args.out / "broker_tail_cost.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
