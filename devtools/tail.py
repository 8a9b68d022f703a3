"""`python -m devtools tail`: print verdicts from the verdicts topic, one line each.

    python -m devtools tail                         # new verdicts from now on, compact lines
    python -m devtools tail --from-beginning --json --count 10 --timeout 30

Reads without a consumer group (partitions are assigned directly; nothing is committed), so
it never disturbs the service's groups.  When the topic does not exist yet it waits for it and
then reads it from its beginning (everything in it is new).  Values are parsed as plain JSON
(the schema is ``inspector.contracts.wire.Verdict``; only common fields are used for the compact line).
Exit status: 0, or 1 when ``--count`` verdicts did not arrive within ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import IO, Any

import structlog

__all__ = [
    "DEFAULT_TOPIC",
    "Received",
    "VerdictTail",
    "format_verdict",
    "parse_verdict",
    "register",
    "run",
]

DEFAULT_TOPIC = "verdicts"
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
BOOTSTRAP_ENV = "INSPECTOR_KAFKA_BOOTSTRAP_SERVERS"


def _log() -> Any:
    return structlog.get_logger("devtools.tail")


class Received:
    """One consumed record: ``verdict`` is the parsed JSON object, or ``None`` with ``error``."""

    __slots__ = ("record", "verdict", "error")

    def __init__(self, record: Any, verdict: dict[str, Any] | None, error: str | None) -> None:
        self.record = record
        self.verdict = verdict
        self.error = error

    def __repr__(self) -> str:
        return f"Received(offset={getattr(self.record, 'offset', None)}, verdict={self.verdict!r}, error={self.error!r})"


def parse_verdict(value: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """``(object, None)`` for a JSON object, else ``(None, reason)``."""
    if value is None:
        return None, "empty value"
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return None, f"not a JSON object: {type(obj).__name__}"
    return obj, None


def _num(value: Any, fmt: str = ".4f") -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        return format(value, fmt)
    return str(value)


def format_verdict(verdict: dict[str, Any], timestamp_ms: int | None = None) -> str:
    """A compact human line, e.g.
    ``19:42:48.285 cam-1 frame=ab12cd34 DEFECT score=0.8123 thr=0.5000 model=rd@3 regions=2 [10,12,40,33]``."""
    parts: list[str] = []
    if timestamp_ms is not None and timestamp_ms >= 0:
        ts = datetime.fromtimestamp(timestamp_ms / 1000, tz=timezone.utc).astimezone()
        parts.append(ts.strftime("%H:%M:%S.") + f"{ts.microsecond // 1000:03d}")
    parts.append(str(verdict.get("camera_id", "?")))
    parts.append(f"frame={verdict.get('frame_id', '?')}")
    parts.append(str(verdict.get("verdict", "?")).upper())
    if "score" in verdict:
        parts.append(f"score={_num(verdict.get('score'))}")
    if "threshold" in verdict:
        parts.append(f"thr={_num(verdict.get('threshold'))}")
    name = verdict.get("model_name", verdict.get("model"))
    version = verdict.get("model_version")
    if name is not None or version is not None:
        parts.append(f"model={name or '?'}@{version or '?'}")
    regions = verdict.get("regions")
    if isinstance(regions, list):
        parts.append(f"regions={len(regions)}")
        boxes = []
        for r in regions[:3]:
            if isinstance(r, dict) and all(k in r for k in ("x0", "y0", "x1", "y1")):
                boxes.append(f"[{r['x0']},{r['y0']},{r['x1']},{r['y1']}]")
        if boxes:
            parts.append(" ".join(boxes) + (" ..." if len(regions) > 3 else ""))
    for field in ("reason", "error"):
        value = verdict.get(field)
        if value:
            parts.append(f"{field}={value if isinstance(value, str) else json.dumps(value)}")
    return " ".join(parts)


class VerdictTail:
    """A group-less reader of one topic.

    ``from_beginning=False`` starts at the current end of every partition.  When the topic
    does not exist yet, it is picked up once it appears and read from its beginning."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        *,
        from_beginning: bool = False,
        consumer_config: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.from_beginning = from_beginning
        self._consumer_config = consumer_config or {}
        self._consumer: Any = None
        self._assigned = False

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> VerdictTail:
        from kafka import KafkaConsumer

        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": "inspector-tail",
            "group_id": None,
            "enable_auto_commit": False,
            "allow_auto_create_topics": False,
            "auto_offset_reset": "earliest",
            "request_timeout_ms": 15000,
            "metadata_max_age_ms": 5000,
            "max_partition_fetch_bytes": 8 * 1024 * 1024,
        }
        config.update(self._consumer_config)
        self._consumer = KafkaConsumer(**config)
        self._try_assign(seek_end=not self.from_beginning)
        return self

    @property
    def assigned(self) -> bool:
        """True once the topic's partitions are assigned and positioned."""
        return self._assigned

    def _try_assign(self, *, seek_end: bool) -> bool:
        from kafka import TopicPartition

        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            return False
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        if seek_end:
            self._consumer.seek_to_end(*tps)
        else:
            self._consumer.seek_to_beginning(*tps)
        positions = {tp.partition: self._consumer.position(tp) for tp in tps}  # resolve now
        self._assigned = True
        _log().debug("tail.assigned", topic=self.topic, positions=positions)
        return True

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                pass
            self._consumer = None

    def __enter__(self) -> VerdictTail:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------
    def poll(self, timeout: float = 0.5) -> list[Received]:
        """Records that arrived within ``timeout`` seconds, parsed, in partition order."""
        if self._consumer is None:
            raise RuntimeError("VerdictTail.open() first")
        if not self._assigned:
            # The topic did not exist when we started: all of it is new, read from the start.
            if not self._try_assign(seek_end=False):
                time.sleep(min(timeout, 0.5))
                return []
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000))
        out: list[Received] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            for record in batches[tp]:
                verdict, error = parse_verdict(record.value)
                out.append(Received(record, verdict, error))
        return out

    def iter(self, *, count: int | None = None, timeout: float | None = None) -> Iterator[Received]:
        """Yield records (bad ones included, see ``Received.error``) until ``count`` good
        verdicts were yielded or ``timeout`` seconds passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        good = 0
        while count is None or good < count:
            wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if wait <= 0:
                return
            for item in self.poll(wait):
                yield item
                if item.verdict is not None:
                    good += 1
                    if count is not None and good >= count:
                        return


# --------------------------------------------------------------------------------------------
# CLI


def register(subparsers: Any) -> None:
    """Add the ``tail`` subcommand."""
    p = subparsers.add_parser(
        "tail",
        help="print verdicts from the verdicts topic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--bootstrap",
        default=None,
        help=f"Kafka bootstrap servers (default ${BOOTSTRAP_ENV} or {DEFAULT_BOOTSTRAP})",
    )
    p.add_argument("--topic", default=DEFAULT_TOPIC, help=f"verdicts topic (default {DEFAULT_TOPIC})")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest retained verdict")
    p.add_argument("--json", action="store_true", help="print each verdict as one compact JSON line")
    p.add_argument("--count", type=int, default=None, help="stop after N verdicts")
    p.add_argument("--timeout", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Entry point of ``python -m devtools tail``."""
    out = out if out is not None else sys.stdout
    if (args.count is not None and args.count < 1) or (args.timeout is not None and args.timeout <= 0):
        print("error: --count must be >= 1 and --timeout > 0", file=sys.stderr)
        return 2
    bootstrap = args.bootstrap or os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP
    started = time.monotonic()
    printed = 0
    tail = VerdictTail(bootstrap, args.topic, from_beginning=args.from_beginning)
    try:
        tail.open()
    except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable and friends
        print(f"error: cannot connect to Kafka at {bootstrap}: {exc!r}", file=sys.stderr)
        return 1
    try:
        remaining = None if args.timeout is None else max(args.timeout - (time.monotonic() - started), 0.001)
        for item in tail.iter(count=args.count, timeout=remaining):
            rec = item.record
            if item.verdict is None:
                print(
                    f"warning: skipped {rec.topic}[{rec.partition}]@{rec.offset}: {item.error}",
                    file=sys.stderr,
                )
                continue
            if args.json:
                line = json.dumps(item.verdict, separators=(",", ":"), ensure_ascii=False)
            else:
                line = format_verdict(item.verdict, getattr(rec, "timestamp", None))
            out.write(line + "\n")
            out.flush()
            printed += 1
    except KeyboardInterrupt:
        return 0
    finally:
        tail.close()
    if args.count is not None and printed < args.count:
        print(f"error: {printed} of {args.count} verdicts within {args.timeout} s", file=sys.stderr)
        return 1
    return 0
