"""Checkpoints: a directory with ``model.safetensors`` and ``manifest.json``.

Nothing is ever unpickled. The manifest records the sha256 of the weights file and of the
teacher's weights; loading checks both before anything is built, and a manifest may also be
pinned by its own sha256 (the rollout message carries it). Writes are atomic: a temporary
directory is filled, fsynced and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inspector.contracts.reasons import RefusalReason
from inspector.model.geometry import Geometry
from inspector.model.tiling import Tiling
from inspector.support.hashing import sha256_file
from inspector.support.durable import fsync_dir

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20


#: Why a checkpoint was refused: the ``reason`` label of ``inspector_model_refused_total``
#: (the values of the wire contract's :class:`~inspector.contracts.reasons.RefusalReason`).
REFUSAL_REASONS: frozenset[str] = frozenset(r.value for r in RefusalReason)


class CheckpointError(RuntimeError):
    """A checkpoint was refused; the message says why and ``reason`` (see REFUSAL_REASONS) says
    it for machines."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


def refusal_reason(exc: BaseException) -> str:
    """The metric label for a refused checkpoint or update.

    Errors raised here carry their reason; the model builder's (``engine.load_engine``) are told
    apart by what they are about."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason in REFUSAL_REASONS:
        return reason
    text = str(exc)
    if isinstance(exc, CheckpointError):
        if "teacher" in text:
            return "teacher"
        if "do not fit" in text:
            return "weights_mismatch"
    return "invalid"


class Signals(BaseModel):
    """The training-free signals fused with the students' map (``inspector.model.nets.model``)."""

    model_config = ConfigDict(extra="forbid")

    memory_bank_size: int = Field(0, ge=0, description="rows of the patch memory bank (0: none)")
    memory_levels: tuple[int, ...] = (2,)
    memory_pool: int = Field(3, ge=1)
    gaussian: bool = False
    gaussian_neighbours: int = Field(0, ge=0, description="the global distance over the mean distance of this many "
                                     "nearest training normals (0: the plain distance, as before it existed)")
    gaussian_references: int = Field(0, ge=0, description="training normals kept for that neighbourhood")
    student_scale: float = Field(1.0, gt=0)
    memory_scale: float = Field(1.0, gt=0)
    gaussian_scale: float = Field(1.0, gt=0)
    memory_weight: float = Field(0.5, ge=0, le=1, description="the memory map's share of the heatmap, the "
                                 "students' map has the rest (0.5 in checkpoints written before it was chosen)")
    norm_map: bool = Field(False, description="the students' part of the heatmap also reads the ratio of their "
                           "features' norms to the teacher's (false: the cosine map alone, as before it existed)")
    norm_weight: float = Field(0.5, ge=0, le=1, description="the norm-ratio map's share of the students' part")
    norm_scale: float = Field(1.0, gt=0)
    contrast: bool = Field(False, description="the full-resolution local-contrast map, fused by the pixel maximum")
    contrast_scale: float = Field(1.0, gt=0)
    contrast_lines: Literal["plain", "whitened"] = Field(
        "plain", description="its line filters: the shapes themselves (plain, as before whitened existed) or "
        "matched to the training normals' spectrum (whitened, the kernels saved with the weights)")


class InputGeometry(BaseModel):
    """The model input's size and how frames are brought to it (``inspector.model.geometry``)."""

    model_config = ConfigDict(extra="forbid")

    height: int = Field(gt=0, le=8192)
    width: int = Field(gt=0, le=8192)
    resize: Literal["pad", "stretch"] = Field(
        description="pad: scaled without distortion, the rest mirrored; stretch: resized to the input")


class TilingSpec(BaseModel):
    """Frames are cut into windows of ``tile / zoom`` px overlapping by ``overlap`` px, each
    enlarged ``zoom`` times to the ``tile``×``tile`` input (``inspector.model.tiling``)."""

    model_config = ConfigDict(extra="forbid")

    tile: int = Field(ge=32, le=4096)
    overlap: int = Field(ge=0, le=2048)
    zoom: int = Field(1, ge=1, le=8)


class EdgeProfile(BaseModel):
    """The fitted edge equalisation of the map (``inspector.model.nets.edges``): band ``k`` (pixels
    at ``k * bin`` to ``(k + 1) * bin`` input px from the frame's nearest edge) becomes
    ``gain[k] * map + offset[k]``; pixels farther in are left as they are."""

    model_config = ConfigDict(extra="forbid")

    bin: int = Field(ge=1, le=256, description="band width, input pixels")
    gain: tuple[float, ...] = Field(max_length=64, description="per band, in [0.25, 1]: damping only")
    offset: tuple[float, ...] = Field(max_length=64)

    @model_validator(mode="after")
    def _bands_agree(self) -> "EdgeProfile":
        if len(self.gain) != len(self.offset):
            raise ValueError(f"edge profile has {len(self.gain)} gains and {len(self.offset)} offsets")
        if any(not 0 < g <= 1 for g in self.gain):
            raise ValueError("edge profile gains must lie in (0, 1]: the equalisation only damps")
        return self


class OperatingPoint(BaseModel):
    """A threshold and what it was calibrated on: the validation normals as one way of running
    the model scores them (``Manifest.operating_point``)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float
    region_threshold: float | None = None
    calibration: dict[str, Any] = Field(default_factory=dict)
    score_stats: dict[str, float | int] = Field(default_factory=dict)

    def map_threshold(self) -> float:
        """The map level that outlines regions (the image threshold when none was calibrated)."""
        return self.threshold if self.region_threshold is None else self.region_threshold


class Manifest(BaseModel):
    """Everything needed to rebuild, verify and judge a trained model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    name: str = Field(description="model name that frames route on (the `model` header)")
    version: str = Field(description="unique version of this checkpoint")
    parent_version: str | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    method: str
    variant: str | None = None
    teacher: str
    teacher_sha256: str
    image_size: int = Field(gt=0, le=8192, description="input side (square models); the longer side with `geometry`")
    geometry: InputGeometry | None = Field(
        None, description="input height, width and resize mode; None: an image_size square, stretched (older checkpoints)")
    tiling: TilingSpec | None = Field(
        None, description="full-resolution frames cut into tiles of the input size; None: each frame resized whole")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    sigma: float = 4.0
    score_mode: str = "max"
    topk_fraction: float = 0.01
    loss: str = "map"
    threshold: float
    target_frr: float
    signals: Signals | None = Field(None, description="fused training-free signals; None: the students' map alone")
    region_threshold: float | None = Field(
        None, description="map level that outlines regions and masks; None: the image threshold")
    edge_profile: EdgeProfile | None = Field(
        None, description="the map's bands near each frame's edge equalised to the interior's normal variation; "
        "None: not equalised (tiled models, older checkpoints, --no-edge-equalise)")
    calibration: dict[str, Any] = Field(default_factory=dict, description="how the threshold was set")
    score_stats: dict[str, float | int] = Field(default_factory=dict)
    precision_points: dict[str, OperatingPoint] = Field(
        default_factory=dict,
        description="thresholds calibrated on the same validation normals as scored in a reduced precision, "
        "keyed by ExecutionPlan.numerics (e.g. 'openvino-bf16'); fp32 plans, and plans not listed, use "
        "`threshold`")
    metrics: dict[str, Any] = Field(default_factory=dict)
    data_fingerprint: str = ""
    training: dict[str, Any] = Field(default_factory=dict)
    weights_sha256: str = ""

    def operating_point(self, numerics: str = "fp32") -> OperatingPoint:
        """The threshold for scores computed as ``numerics`` says (``ExecutionPlan.numerics``):
        its own when the fit calibrated one, else the fp32 one (``threshold``)."""
        point = self.precision_points.get(numerics)
        if point is not None:
            return point
        return OperatingPoint(threshold=self.threshold, region_threshold=self.region_threshold,
                              calibration=self.calibration, score_stats=self.score_stats)

    def input_tiling(self) -> Tiling | None:
        t = self.tiling
        return None if t is None else Tiling(t.tile, t.overlap, t.zoom)

    def created(self) -> datetime | None:
        """``created_at`` as a time (None when it is not ISO 8601): the order of checkpoints."""
        try:
            t = datetime.fromisoformat(self.created_at)
        except (TypeError, ValueError):
            return None
        return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)

    def input_geometry(self) -> Geometry:
        g = self.geometry
        return Geometry.square(self.image_size) if g is None else Geometry(g.height, g.width, g.resize)


def new_version() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]




def save_checkpoint(out_dir: str | Path, student_state: dict[str, torch.Tensor], manifest: Manifest) -> Manifest:
    """Write weights and manifest atomically into ``out_dir`` (replacing an older checkpoint there)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        weights = tmp / WEIGHTS_FILE
        save_file({k: v.detach().cpu().contiguous() for k, v in student_state.items()}, str(weights))
        manifest = manifest.model_copy(update={"weights_sha256": sha256_file(weights)})
        (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
        for f in (weights, tmp / MANIFEST_FILE):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
        os.rename(tmp, out)
        fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def read_manifest(ckpt_dir: str | Path, expected_sha256: str | None = None) -> Manifest:
    path = Path(ckpt_dir) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir}: no {MANIFEST_FILE}", "manifest_missing")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise CheckpointError(f"{path}: manifest larger than {MAX_MANIFEST_BYTES} bytes", "manifest_invalid")
    raw = path.read_bytes()
    if expected_sha256 is not None:
        import hashlib

        got = hashlib.sha256(raw).hexdigest()
        if got != expected_sha256:
            raise CheckpointError(
                f"{path}: manifest sha256 {got} does not match the expected {expected_sha256}", "manifest_hash"
            )
    try:
        return Manifest.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise CheckpointError(f"{path}: invalid manifest: {exc}", "manifest_invalid") from exc


def read_weights(ckpt_dir: str | Path, manifest: Manifest) -> dict[str, torch.Tensor]:
    """Load the student weights after checking their hash; safetensors never runs code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(ckpt_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir}: no {WEIGHTS_FILE}", "weights_missing")
    digest = sha256_file(path)
    if not manifest.weights_sha256 or digest != manifest.weights_sha256:
        raise CheckpointError(
            f"{path}: sha256 {digest} does not match the manifest's {manifest.weights_sha256 or '(none)'}; "
            "the file is truncated, modified or not the one the manifest describes",
            "weights_hash",
        )
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}", "weights_unreadable") from exc


def manifest_sha256(ckpt_dir: str | Path) -> str:
    return sha256_file(Path(ckpt_dir) / MANIFEST_FILE)
