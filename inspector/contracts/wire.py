"""Messages that cross a process boundary: frame headers, verdicts, dead-letter headers, model updates.

These pydantic models are the wire contract; ``inspector schemas --out DIR`` exports their JSON
Schemas. Kafka header values from cameras are untrusted: :meth:`FrameHeaders.from_kafka` never
raises, it drops what it cannot use and says so in ``problems``. Reason codes (``Verdict.reason``,
the ``dlq-reason`` header) are :class:`~inspector.contracts.reasons.RejectReason` members.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from inspector.contracts.reasons import RejectReason

WIRE_VERSION = 1
HEATMAP_KEY_PREFIX = "inspector:heatmap:"
CAMERA_LATEST_KEY_PREFIX = "inspector:camera:"

#: Longest header value (bytes) accepted for identifiers; longer ones are dropped.
MAX_HEADER_VALUE_BYTES = 256
#: At most this many headers are looked at per record.
MAX_HEADERS = 64
#: Printable ASCII/UTF-8 without control characters or whitespace beyond a plain space.
_ID_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
#: captured-at in epoch milliseconds: between 2000-01-01 and 2200-01-01.
_MIN_EPOCH_MS = 946_684_800_000
_MAX_EPOCH_MS = 7_258_118_400_000

HeaderList = list[tuple[str, bytes]]

#: Names of the frame headers a camera sends (read case-insensitively by FrameHeaders.from_kafka).
FRAME_ID_HEADER = "frame-id"
CAMERA_ID_HEADER = "camera-id"
LINE_ID_HEADER = "line-id"
MODEL_HEADER = "model"
CAPTURED_AT_HEADER = "captured-at"
CONTENT_TYPE_HEADER = "content-type"


def heatmap_key(frame_id: str) -> str:
    """Redis key of a frame's heatmap PNG."""
    return f"{HEATMAP_KEY_PREFIX}{frame_id}"


def camera_latest_key(camera_id: str) -> str:
    """Redis list of the latest frame ids of a camera (newest first)."""
    return f"{CAMERA_LATEST_KEY_PREFIX}{camera_id}:latest"


def derived_frame_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# ---------------------------------------------------------------------------------------------
# Input: Kafka headers of a frame
# ---------------------------------------------------------------------------------------------


class FrameHeaders(_Wire):
    """The headers of one record on the frames topic, after validation."""

    frame_id: str = Field(description="`frame-id` header, or topic:partition:offset when absent.")
    frame_id_derived: bool = Field(False, description="True when frame_id was derived.")
    camera_id: str = Field(description="`camera-id` header, else the record key, else 'unknown'.")
    line_id: str | None = Field(None, description="`line-id` header.")
    model: str | None = Field(None, description="`model` header: which model inspects the frame.")
    captured_at: int | None = Field(None, description="`captured-at` header, epoch milliseconds.")
    content_type: str | None = Field(None, description="`content-type` header (a hint only).")
    problems: list[str] = Field(
        default_factory=list, description="Headers that were present but unusable, and why."
    )

    @classmethod
    def from_kafka(
        cls,
        headers: Iterable[tuple[Any, Any]] | None,
        key: bytes | None,
        topic: str,
        partition: int,
        offset: int,
    ) -> FrameHeaders:
        """Parse kafka-python record headers; never raises on garbage."""
        raw: dict[str, bytes | None] = {}
        problems: list[str] = []
        try:
            items = list(headers or ())
        except Exception:  # noqa: BLE001 - foreign objects must not crash the worker
            items = []
            problems.append("headers: unreadable")
        if len(items) > MAX_HEADERS:
            problems.append(f"headers: {len(items)} headers, only the first {MAX_HEADERS} read")
            items = items[:MAX_HEADERS]
        for item in items:
            try:
                name, value = item
            except (TypeError, ValueError):
                continue
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            if not isinstance(name, str):
                continue
            name = name.strip().lower()
            if name in _KNOWN and name not in raw:
                if value is None:
                    value = b""
                raw[name] = bytes(value) if isinstance(value, (bytes, bytearray)) else None

        def text(name: str) -> str | None:
            if name not in raw:
                return None
            value = raw[name]
            if value is None:
                problems.append(f"{name}: not bytes")
                return None
            if len(value) > MAX_HEADER_VALUE_BYTES:
                problems.append(f"{name}: {len(value)} bytes > {MAX_HEADER_VALUE_BYTES}")
                return None
            try:
                s = bytes(value).decode("utf-8").strip()
            except UnicodeDecodeError:
                problems.append(f"{name}: not UTF-8")
                return None
            if not s:
                return None
            if not _ID_RE.match(s):
                problems.append(f"{name}: control characters")
                return None
            return s

        frame_id = text("frame-id")
        derived = frame_id is None
        if derived:
            frame_id = derived_frame_id(topic, partition, offset)
        camera = text("camera-id")
        if camera is None and key:
            try:
                k = bytes(key).decode("utf-8").strip()
                if len(k) <= MAX_HEADER_VALUE_BYTES and _ID_RE.match(k):
                    camera = k
            except UnicodeDecodeError:
                pass
        captured_at = None
        cap = text("captured-at")
        if cap is not None:
            try:
                v = float(cap)
                if not math.isfinite(v) or not (_MIN_EPOCH_MS <= v <= _MAX_EPOCH_MS):
                    raise ValueError
                captured_at = int(v)
            except ValueError:
                problems.append("captured-at: not epoch milliseconds")
        return cls(
            frame_id=frame_id,
            frame_id_derived=derived,
            camera_id=camera or "unknown",
            line_id=text("line-id"),
            model=text("model"),
            captured_at=captured_at,
            content_type=text("content-type"),
            problems=problems,
        )

    @property
    def model_header_bad(self) -> bool:
        """The `model` header was present but unusable: the frame cannot be routed."""
        return any(p.startswith("model:") for p in self.problems)

    def to_kafka(self) -> HeaderList:
        """Headers as a producer would send them (used by the camera simulator and tests)."""
        out: HeaderList = []
        if not self.frame_id_derived:
            out.append(("frame-id", self.frame_id.encode()))
        out.append(("camera-id", self.camera_id.encode()))
        for name, value in (
            ("line-id", self.line_id),
            ("model", self.model),
            ("captured-at", None if self.captured_at is None else str(self.captured_at)),
            ("content-type", self.content_type),
        ):
            if value is not None:
                out.append((name, value.encode()))
        return out


_KNOWN = frozenset({FRAME_ID_HEADER, CAMERA_ID_HEADER, LINE_ID_HEADER, MODEL_HEADER, CAPTURED_AT_HEADER,
                    CONTENT_TYPE_HEADER})


# ---------------------------------------------------------------------------------------------
# Output: verdicts
# ---------------------------------------------------------------------------------------------


# The one region type: the engine finds them (inspector.engine.regions), verdicts carry them.
class Region(_Wire):
    """A connected defect region in original image pixels (x1, y1 exclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    x0: int
    y0: int
    x1: int
    y1: int
    area: int = Field(description="Pixels of the region in the original image.")
    peak: float = Field(description="Highest anomaly score inside the region.")


class Mask(_Wire):
    """Binary defect mask at reduced resolution: row-major bits, numpy.packbits (MSB first), base64.

    The cells span the whole frame whatever its shape: cell (r, c) of an h×w mask covers rows
    r·H/h to (r+1)·H/h and columns c·W/w to (c+1)·W/w of an H×W frame. A whole-frame model's mask
    is INSPECTOR_MASK_SIZE² cells; a tiled model's keeps the frame's aspect ratio:
    INSPECTOR_MASK_SIZE cells along the longer side, round(size·shorter/longer) along the other
    (never more cells than pixels)."""

    encoding: Literal["packbits-base64"] = "packbits-base64"
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    data: str

    @classmethod
    def encode(cls, mask: np.ndarray) -> Mask:
        m = np.asarray(mask).astype(bool)
        if m.ndim != 2 or m.size == 0:
            raise ValueError(f"mask must be a non-empty 2-D array, got shape {m.shape}")
        packed = np.packbits(m.reshape(-1))
        return cls(height=m.shape[0], width=m.shape[1], data=base64.b64encode(packed.tobytes()).decode())

    def decode(self) -> np.ndarray:
        raw = np.frombuffer(base64.b64decode(self.data), dtype=np.uint8)
        bits = np.unpackbits(raw)[: self.height * self.width]
        if bits.size != self.height * self.width:
            raise ValueError("mask data shorter than height x width")
        return bits.reshape(self.height, self.width).astype(bool)


class Source(_Wire):
    """Where the frame was read from; (topic, partition, offset) identifies a frame uniquely."""

    topic: str
    partition: int
    offset: int


class Timings(_Wire):
    """Epoch milliseconds along the path of the frame."""

    captured_at: int | None = Field(None, description="From the `captured-at` header.")
    received_at: float = Field(description="Worker polled the record.")
    inferred_at: float | None = Field(None, description="Inference of its batch finished.")
    published_at: float = Field(description="Verdict handed to the producer.")


VerdictKind = Literal["ok", "defect", "rejected"]


class Verdict(_Wire):
    """The JSON value on the verdicts topic (key: camera id). Duplicates share `frame_id`."""

    wire_version: Literal[1] = WIRE_VERSION
    frame_id: str
    camera_id: str
    line_id: str | None = None
    model: str | None = Field(None, description="Model name (None if the frame never reached one).")
    model_version: str | None = None
    verdict: VerdictKind
    score: float | None = None
    threshold: float | None = Field(
        None, description="The threshold the score was judged against: the model's, for the precision this worker "
        "runs it in (Manifest.precision_points), else its fp32 one.")
    regions: list[Region] = Field(default_factory=list)
    mask: Mask | None = None
    heatmap_key: str | None = Field(
        None, description="Redis key of the heatmap PNG (expires; may be missing if Redis was down)."
    )
    reason: RejectReason | None = Field(
        None, description="Why a frame was rejected (machine-readable; see docs/CONTRACTS.md)."
    )
    detail: str | None = Field(None, description="Human-readable detail of the rejection.")
    source: Source
    worker_id: str
    timings: Timings

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Verdict:
        return cls.model_validate_json(data)


# ---------------------------------------------------------------------------------------------
# Dead-letter topic headers
# ---------------------------------------------------------------------------------------------


class DeadLetter(_Wire):
    """Error headers added to a rejected frame's original bytes on the dead-letter topic.

    The original headers are kept; these are appended with the `dlq-` prefix.
    """

    reason: RejectReason = Field(description="Why the frame was rejected (as the verdict's `reason`).")
    detail: str = ""
    frame_id: str
    source_topic: str
    source_partition: int
    source_offset: int
    worker_id: str
    failed_at: float = Field(description="Epoch milliseconds.")

    FIELDS: ClassVar[tuple[str, ...]] = (
        "reason",
        "detail",
        "frame_id",
        "source_topic",
        "source_partition",
        "source_offset",
        "worker_id",
        "failed_at",
    )

    def to_kafka(self, original: Iterable[tuple[Any, Any]] | None = None) -> HeaderList:
        out: HeaderList = []
        for name, value in original or ():
            if isinstance(name, str) and isinstance(value, (bytes, bytearray)) and not name.startswith("dlq-"):
                out.append((name, bytes(value)))
        for f in self.FIELDS:
            value = getattr(self, f)
            out.append(("dlq-" + f.replace("_", "-"), str(value)[:1024].encode()))
        return out

    @classmethod
    def from_kafka(cls, headers: Iterable[tuple[str, bytes]]) -> DeadLetter:
        values = {
            name[4:].replace("-", "_"): value.decode("utf-8", "replace")
            for name, value in headers
            if name.startswith("dlq-")
        }
        return cls.model_validate(values)


# ---------------------------------------------------------------------------------------------
# Control topic
# ---------------------------------------------------------------------------------------------


class ModelSignature(_Wire):
    """An Ed25519 signature over a ModelUpdate's statement (``inspector.model.signing.payload``)."""

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="First 16 hex digits of sha256(raw public key).")
    value: str = Field(min_length=1, max_length=256, description="Base64 of the 64-byte signature.")


class ModelUpdate(_Wire):
    """Value on the compacted control topic (key: model name): the version workers should serve.

    Signed, it states name, version, manifest_sha256, rollback and published_at; the location is
    not signed (it depends on where the models volume is mounted) and must lie inside the
    worker's models directory."""

    name: str = Field(min_length=1, max_length=MAX_HEADER_VALUE_BYTES)
    version: str = Field(min_length=1, max_length=MAX_HEADER_VALUE_BYTES)
    checkpoint: str = Field(
        description="Checkpoint directory inside the worker's models_dir: a path relative to it, or an "
        "absolute path / file:// URL that resolves (symlinks and '..' followed) inside it."
    )
    manifest_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the checkpoint's manifest.json."
    )
    published_at: float | None = Field(
        None, description="Epoch milliseconds when the update was issued (whole ms when signed). A worker "
        "refuses an update issued no later than the one of the model it serves (a replay)."
    )
    rollback: bool = Field(
        False, description="A deliberate return to a checkpoint older than the one served "
        "(`trainer refresh --adopt`); without it an older checkpoint is refused."
    )
    signature: ModelSignature | None = Field(
        None, description="Ed25519 signature of the trainer; required by workers that have trusted keys."
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelUpdate:
        return cls.model_validate_json(data)


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------

SCHEMAS: dict[str, type[BaseModel]] = {
    "frame-headers": FrameHeaders,
    "verdict": Verdict,
    "dead-letter": DeadLetter,
    "model-update": ModelUpdate,
}


def export_schemas(out_dir: str | Path) -> list[Path]:
    """Write one JSON Schema per wire message into ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in SCHEMAS.items():
        path = out / f"{name}.schema.json"
        schema = model.model_json_schema()
        schema["$id"] = f"inspector/{name}/v{WIRE_VERSION}"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


def _schemas_main(args: argparse.Namespace) -> int:
    for path in export_schemas(args.out):
        print(path)
    return 0


def register(subparsers: Any) -> None:
    """Add `inspector schemas --out DIR` (once, even if called twice)."""
    if "schemas" in getattr(subparsers, "choices", {}):
        return
    p = subparsers.add_parser("schemas", help="write JSON Schemas of the wire messages")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.set_defaults(func=_schemas_main)
