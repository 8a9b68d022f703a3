"""The narrow interface the service (and ``inspector score``, and evaluation) sees of a model.

``load_engine(dir)`` verifies and loads a checkpoint; ``Engine.infer(images)`` runs one batch of
decoded images through the model on its device and returns one ``Inspection`` per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import structlog
import torch

from .checkpoint import CheckpointError, Manifest, manifest_sha256, read_manifest, read_weights
from .fastpath import FastPath, build_runner, choose, fallback
from .nets.model import DiscrepancyModel, ModelConfig, build_student
from .nets.teachers import TeacherWeightsError, build_teacher
from .onnx_cache import OnnxCache, cache_key
from .preprocess import prepare_batch
from .regions import Region, find_regions, reduced_masks

__all__ = ["Engine", "Inspection", "Region", "load_engine", "CheckpointError", "pick_device"]


@dataclass
class Inspection:
    score: float
    defect: bool
    regions: list[Region]
    mask: np.ndarray  # bool (mask_size, mask_size)
    heatmap: np.ndarray = field(repr=False)  # float32 (image_size, image_size)


def pick_device(device: str | None = None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_config(manifest: Manifest) -> ModelConfig:
    signals = manifest.signals.model_dump() if manifest.signals is not None else {}
    if "memory_levels" in signals:
        signals["memory_levels"] = tuple(signals["memory_levels"])
    return ModelConfig(method=manifest.method, variant=manifest.variant or "dual", sigma=manifest.sigma,
                       score_mode=manifest.score_mode, topk_fraction=manifest.topk_fraction, **signals)


class Engine:
    """A loaded, verified model ready for batched inference on one device."""

    def __init__(self, model: DiscrepancyModel, manifest: Manifest, device: torch.device,
                 mask_size: int = 64, min_region_area: int = 1, fast: FastPath | None = None,
                 onnx_fallback: bool = True, onnx_cache: tuple[OnnxCache, str] | None = None):
        """``fast`` says how the model runs (default: the measured best for ``device``). With
        ``onnx_fallback`` an ONNX backend that cannot be built or fails its check against torch
        degrades to the torch backend (logged); without it the error propagates."""
        self.model = model.to(device).eval()
        self.manifest = manifest
        self.device = device
        self.mask_size = mask_size
        self.min_region_area = min_region_area
        fast = fast or choose(device)
        try:
            self._run, self.fast = build_runner(self.model, device, fast, manifest.image_size, onnx_cache)
        except RuntimeError as exc:
            if fast.backend != "onnx" or not onnx_fallback:
                raise
            structlog.get_logger("inspector.engine").warning("onnx_backend_unavailable", error=str(exc)[:300])
            self._run, self.fast = build_runner(self.model, device, fallback(fast), manifest.image_size)

    name = property(lambda self: self.manifest.name)
    version = property(lambda self: self.manifest.version)
    threshold = property(lambda self: self.manifest.threshold)

    @property
    def region_threshold(self) -> float:
        """The map level that outlines regions, masks and the heatmap's midpoint."""
        m = self.manifest
        return m.threshold if m.region_threshold is None else m.region_threshold
    image_size = property(lambda self: self.manifest.image_size)

    @torch.inference_mode()
    def maps(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps (B,S,S) float32 and scores (B,), on the device (the CPU for onnx)."""
        batch = prepare_batch(images, self.image_size, self.manifest.mean, self.manifest.std, self.device)
        return self._run(batch)

    def warm_up(self, max_batch: int) -> None:
        """Run every batch shape serving will see once (compiled models: every bucket), off the
        serving path; the first call at a new shape is slow (compilation, kernel selection)."""
        from .fastpath import buckets

        size = int(self.image_size)
        rng = np.random.default_rng(0)
        sizes = buckets(max_batch) if self.fast.compile else [max_batch]
        for n in sizes:
            self.infer([rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)])

    def infer(self, images: Sequence[np.ndarray]) -> list[Inspection]:
        if not images:
            return []
        maps, scores = self.maps(images)
        thr, region_thr = self.threshold, self.region_threshold
        masks = reduced_masks(maps, region_thr, self.mask_size)
        heatmaps = maps.cpu().numpy()
        scores_np = scores.cpu().numpy()
        out = []
        for i, image in enumerate(images):
            score = float(scores_np[i])
            defect = score >= thr
            regions = find_regions(heatmaps[i], region_thr, image.shape[:2], self.min_region_area) if defect else []
            out.append(Inspection(score=score, defect=defect, regions=regions, mask=masks[i], heatmap=heatmaps[i]))
        return out


def load_engine(checkpoint_dir: str | Path, device: str | None = None, *, teacher_weights: str | Path | None = None,
                expected_manifest_sha256: str | None = None, mask_size: int = 64, min_region_area: int = 1,
                backend: str = "auto", precision: str = "auto", channels_last: bool | None = None,
                compile: bool | None = None, fast: FastPath | None = None,
                onnx_cache_dir: str | Path | None = None) -> Engine:
    """Verify and load a checkpoint. Raises ``CheckpointError`` (never a half-built engine).

    ``backend`` (auto|torch|onnx), ``precision`` (auto|fp32|bf16), ``channels_last`` and
    ``compile`` choose how the model runs; ``auto``/``None`` take the measured best for the device
    (``inspector.fastpath.choose``); ``fast`` sets all of it at once (benchmarks, tests). An
    explicitly requested onnx backend that fails is an error; an ``auto`` one falls back to torch.
    ``onnx_cache_dir`` keeps exported graphs between loads of the same checkpoint (None: export
    at every load)."""
    manifest = read_manifest(checkpoint_dir, expected_manifest_sha256)
    state = read_weights(checkpoint_dir, manifest)
    try:
        teacher = build_teacher(manifest.teacher, teacher_weights)
    except (ValueError, TeacherWeightsError) as exc:
        raise CheckpointError(f"{checkpoint_dir}: teacher {manifest.teacher!r} unavailable: {exc}") from exc
    if teacher.weights_sha256 != manifest.teacher_sha256:
        raise CheckpointError(
            f"{checkpoint_dir}: teacher weights sha256 {teacher.weights_sha256} differ from the ones the "
            f"students were trained against ({manifest.teacher_sha256})"
        )
    try:
        config = model_config(manifest)
        model = DiscrepancyModel(teacher, build_student(config, teacher), config)
        model.load_weights(state)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint_dir}: weights do not fit a {manifest.method} model: {exc}") from exc
    dev = pick_device(device)
    try:
        fast = fast or choose(dev, backend, precision, channels_last, compile)
        cache = None
        if onnx_cache_dir is not None and fast.backend == "onnx":
            cache = (OnnxCache(Path(onnx_cache_dir)), cache_key(manifest_sha256(checkpoint_dir), manifest.image_size))
        return Engine(model, manifest, dev, mask_size, min_region_area, fast, onnx_fallback=backend == "auto",
                      onnx_cache=cache)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint_dir}: cannot run as requested ({backend}, {precision}): {exc}") from exc
