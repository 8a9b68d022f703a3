"""`python -m devtools publish`: a camera simulator that publishes image files to the frames topic.

Each Kafka record is one frame: key = camera id, value = the raw file bytes (PNG/JPEG/...,
undecoded), headers ``frame-id``, ``camera-id``, ``line-id``, ``model`` (when given),
``captured-at`` (epoch ms) and ``content-type`` (from the file extension).

    python -m devtools publish data/good/ --rate 20 --count 500 --camera-id cam-3 --line-id line-1

Bootstrap servers: ``--bootstrap``, else $INSPECTOR_KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:19092.
A JSON summary line (sent, bytes, seconds, achieved rate) is printed on stdout at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import structlog

from inspector.contracts.wire import (
    CAMERA_ID_HEADER,
    CAPTURED_AT_HEADER,
    CONTENT_TYPE_HEADER,
    FRAME_ID_HEADER,
    LINE_ID_HEADER,
    MODEL_HEADER,
)

__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_TOPIC",
    "PublishError",
    "content_type_for",
    "find_images",
    "iter_frames",
    "make_producer",
    "publish_frames",
    "register",
    "run",
]

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_TOPIC = "frames"
BOOTSTRAP_ENV = "INSPECTOR_KAFKA_BOOTSTRAP_SERVERS"

CONTENT_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
    ".pgm": "image/x-portable-graymap",
    ".ppm": "image/x-portable-pixmap",
    ".pnm": "image/x-portable-anymap",
    ".pbm": "image/x-portable-bitmap",
}
FALLBACK_CONTENT_TYPE = "application/octet-stream"

FrameIdStyle = Literal["uuid", "seq"]


class PublishError(RuntimeError):
    """Kafka did not acknowledge one or more frames."""


def _log() -> Any:
    return structlog.get_logger("devtools.camera")


def content_type_for(path: str | os.PathLike[str]) -> str:
    """MIME type from the file extension (``application/octet-stream`` when unknown)."""
    return CONTENT_TYPES.get(Path(path).suffix.lower(), FALLBACK_CONTENT_TYPE)


def find_images(path: str | os.PathLike[str]) -> list[Path]:
    """One file -> ``[file]``; a folder -> its image files (known extensions), recursively,
    sorted by relative path.  Raises ``FileNotFoundError`` when nothing is found."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such file or folder: {root}")
    found = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in CONTENT_TYPES),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not found:
        raise FileNotFoundError(
            f"no image files ({', '.join(sorted(CONTENT_TYPES))}) under {root}"
        )
    return found


def iter_frames(paths: Sequence[Path], count: int | None = None) -> Iterator[tuple[bytes, str]]:
    """``(file bytes, content type)`` for each path; with ``count``, loop until ``count`` frames.
    Files are read lazily (the page cache keeps repeated reads cheap)."""
    if not paths:
        return
    source: Iterable[Path] = paths if count is None else itertools.islice(itertools.cycle(paths), count)
    for p in source:
        yield p.read_bytes(), content_type_for(p)


def make_producer(bootstrap: str, **overrides: Any):
    """A durable frames producer: ``acks=all``, idempotent, 16 MiB max request."""
    from kafka import KafkaProducer

    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "inspector-camera",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_request_size": 16 * 1024 * 1024,
        "request_timeout_ms": 15000,
    }
    config.update(overrides)
    return KafkaProducer(**config)


def publish_frames(
    producer: Any,
    topic: str,
    frames: Iterable[tuple[bytes, str]],
    rate: float = 0.0,
    camera_id: str = "cam-0",
    line_id: str = "line-0",
    model: str | None = None,
    *,
    frame_id_style: FrameIdStyle = "uuid",
    flush_timeout: float = 30.0,
) -> list[str]:
    """Send each ``(bytes, content_type)`` frame to ``topic`` at ``rate`` frames/s (0 = as fast
    as possible), keyed by ``camera_id``.  Flushes and returns the frame ids in send order;
    raises :class:`PublishError` when any frame was not acknowledged."""
    if rate < 0:
        raise ValueError("rate must be >= 0")
    key = camera_id.encode()
    static_headers = [(CAMERA_ID_HEADER, camera_id.encode()), (LINE_ID_HEADER, line_id.encode())]
    if model:
        static_headers.append((MODEL_HEADER, model.encode()))
    failures: list[tuple[str, BaseException]] = []
    frame_ids: list[str] = []
    interval = 1.0 / rate if rate > 0 else 0.0
    start = time.monotonic()
    for seq, (data, content_type) in enumerate(frames):
        if interval:
            delay = start + seq * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        frame_id = uuid.uuid4().hex if frame_id_style == "uuid" else f"{camera_id}-{seq}"
        headers = [
            (FRAME_ID_HEADER, frame_id.encode()),
            *static_headers,
            (CAPTURED_AT_HEADER, str(time.time_ns() // 1_000_000).encode()),
            (CONTENT_TYPE_HEADER, content_type.encode()),
        ]
        future = producer.send(topic, key=key, value=data, headers=headers)
        future.add_errback(lambda exc, fid=frame_id: failures.append((fid, exc)))
        frame_ids.append(frame_id)
    producer.flush(timeout=flush_timeout)
    if failures:
        first_id, first_exc = failures[0]
        _log().error(
            "camera.publish.failed", topic=topic, failed=len(failures), first_frame=first_id,
            error=repr(first_exc),
        )
        raise PublishError(
            f"{len(failures)} of {len(frame_ids)} frames not acknowledged by Kafka "
            f"(first: {first_id}: {first_exc!r})"
        )
    return frame_ids


# --------------------------------------------------------------------------------------------
# CLI


def register(subparsers: Any) -> None:
    """Add the ``publish`` subcommand."""
    p = subparsers.add_parser(
        "publish",
        help="camera simulator: publish image files to the frames topic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="an image file or a folder of images (recursive, sorted)")
    p.add_argument(
        "--bootstrap",
        default=None,
        help=f"Kafka bootstrap servers (default ${BOOTSTRAP_ENV} or {DEFAULT_BOOTSTRAP})",
    )
    p.add_argument("--topic", default=DEFAULT_TOPIC, help=f"input topic (default {DEFAULT_TOPIC})")
    p.add_argument("--rate", type=float, default=0.0, help="frames per second; 0 = as fast as possible")
    p.add_argument(
        "--count", type=int, default=None,
        help="frames to send, looping over the images (default: each image once)",
    )
    p.add_argument("--camera-id", default="cam-0", help="camera id (also the record key)")
    p.add_argument("--line-id", default="line-0", help="production line id")
    p.add_argument("--model", default=None, help="model name header (route to a given model)")
    p.add_argument(
        "--frame-ids", choices=("uuid", "seq"), default="uuid",
        help="frame-id header: uuid4 hex (default) or <camera-id>-<seq>",
    )
    p.set_defaults(func=run)


def _bootstrap(arg: str | None) -> str:
    return arg or os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP


def run(args: argparse.Namespace) -> int:
    """Entry point of ``python -m devtools publish``."""
    log = _log()
    if args.rate < 0 or (args.count is not None and args.count < 0):
        print("error: --rate and --count must be >= 0", file=sys.stderr)
        return 2
    try:
        paths = find_images(args.path)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bootstrap = _bootstrap(args.bootstrap)
    try:
        producer = make_producer(bootstrap)
    except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable and friends
        print(f"error: cannot connect to Kafka at {bootstrap}: {exc!r}", file=sys.stderr)
        return 1
    sent_bytes = 0
    handed_over = 0

    def counted() -> Iterator[tuple[bytes, str]]:
        nonlocal sent_bytes, handed_over
        for data, ctype in iter_frames(paths, args.count):
            sent_bytes += len(data)
            handed_over += 1
            yield data, ctype

    log.info(
        "camera.publish.start", topic=args.topic, bootstrap=bootstrap, images=len(paths),
        count=args.count, rate=args.rate, camera_id=args.camera_id,
    )
    started = time.monotonic()
    status = 0
    frame_ids: list[str] = []
    try:
        frame_ids = publish_frames(
            producer, args.topic, counted(), rate=args.rate, camera_id=args.camera_id,
            line_id=args.line_id, model=args.model, frame_id_style=args.frame_ids,
        )
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130  # close() below still delivers what was handed to the producer
    finally:
        try:
            producer.close(timeout=10)
        except Exception:  # noqa: BLE001
            pass
    seconds = time.monotonic() - started
    summary = {
        "event": "published",
        "topic": args.topic,
        "camera_id": args.camera_id,
        "sent": len(frame_ids) if status == 0 else handed_over,
        "bytes": sent_bytes,
        "seconds": round(seconds, 3),
        "rate": None,
        "target_rate": args.rate or None,
        "ok": status == 0,
    }
    if seconds > 0:
        summary["rate"] = round(summary["sent"] / seconds, 2)
    print(json.dumps(summary), flush=True)
    return status
