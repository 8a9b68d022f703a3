"""The engine of a discrepancy model: a verified checkpoint, run on one device as asked.

``load_engine(dir, device, options)`` verifies and loads a checkpoint into a ``DiscrepancyEngine``
(the serving path sees it as ``inspector.engine.protocol.Engine``); ``infer(images)`` runs one
batch of decoded images through the model and returns one ``Inspection`` per image. How the model
runs (backend, precision, ...) is ``backends.select``'s choice from ``EngineOptions``. A tiled
model (``Manifest.tiling``) cuts each frame into tiles, runs the tiles of the whole batch
together (at most ``max_tiles`` per call) and stitches each frame's map (``inspector.model.tiling``);
everything after that (score, regions, mask, heatmap) reads the stitched map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import structlog
import torch

from inspector.contracts.wire import Region
from inspector.engine.backends.onnx_cache import OnnxCache, cache_key
from inspector.engine.backends.plan import buckets
from inspector.engine.backends.select import select_runner
from inspector.engine.capabilities import pick_device
from inspector.engine.options import EngineOptions
from inspector.engine.regions import find_regions, reduced_masks
from inspector.model.checkpoint import (CheckpointError, Manifest, OperatingPoint, manifest_sha256, read_manifest,
                                        read_weights)
from inspector.model.geometry import Geometry, Placement
from inspector.model.nets.model import DiscrepancyModel, ModelConfig, build_student
from inspector.model.nets.teachers import TeacherWeightsError, build_teacher
from inspector.model.preprocess import prepare_placed
from inspector.model.tiling import fit_to_aspect, iter_stitched

#: Longest side of a tiled frame's heatmap (kept in Redis): the stitched map is at frame resolution.
TILED_HEATMAP_SIDE = 1024

__all__ = ["DiscrepancyEngine", "EngineOptions", "Geometry", "Inspection", "Region", "load_engine",
           "CheckpointError", "pick_device"]


@dataclass
class Inspection:
    score: float
    defect: bool
    regions: list[Region]
    mask: np.ndarray  # bool, covering the whole frame: mask_size² (tiled: mask_size on the longer side)
    heatmap: np.ndarray = field(repr=False)  # float32, the frame's map (model resolution; tiled: ≤ 1024 px)


def model_config(manifest: Manifest) -> ModelConfig:
    signals = manifest.signals.model_dump() if manifest.signals is not None else {}
    if "memory_levels" in signals:
        signals["memory_levels"] = tuple(signals["memory_levels"])
    edge = manifest.edge_profile
    edges = {} if edge is None else {"edge_bin": edge.bin, "edge_gain": tuple(edge.gain), "edge_offset": tuple(edge.offset)}
    return ModelConfig(method=manifest.method, variant=manifest.variant or "dual", sigma=manifest.sigma,
                       score_mode=manifest.score_mode, topk_fraction=manifest.topk_fraction, **signals, **edges)


class DiscrepancyEngine:
    """A loaded, verified model ready for batched inference on one device."""

    def __init__(self, model: DiscrepancyModel, manifest: Manifest, device: torch.device,
                 options: EngineOptions = EngineOptions(), onnx_cache: tuple[OnnxCache, str] | None = None):
        """``options`` say how the model runs (``backends.select`` decides and may fall back:
        ``self.plan`` is what runs) and what inspections carry. Raises ``ValueError`` for an
        impossible request, ``RuntimeError`` for a plan that cannot be built."""
        self.model = model.to(device).eval()
        self.manifest = manifest
        self.device = device
        self.options = options
        self.mask_size = options.mask_size
        self.min_region_area = options.min_region_area
        self.geometry = manifest.input_geometry()
        self.tiling = manifest.input_tiling()
        self.max_tiles = max(1, int(options.max_tiles))
        self._run, self.plan = select_runner(self.model, device, options, self.geometry.hw, onnx_cache)
        self._log_operating_point()

    def _log_operating_point(self) -> None:
        numerics, log = self.numerics, structlog.get_logger("inspector.engine")
        fields = {"model": self.manifest.name, "version": self.manifest.version, "numerics": numerics,
                  "threshold": round(self.threshold, 6)}
        if self.threshold_calibrated_in == numerics:
            log.info("operating_point", **fields)
        else:  # e.g. a checkpoint fitted where this precision could not run, or before it was calibrated
            log.warning("threshold_not_calibrated_for_plan", **fields,
                        hint="the fp32 threshold is used: false rejects may differ from the target")

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @manifest.setter
    def manifest(self, manifest: Manifest) -> None:
        self._manifest, self._point = manifest, None  # the operating point follows the manifest

    name = property(lambda self: self.manifest.name)
    version = property(lambda self: self.manifest.version)

    @property
    def numerics(self) -> str:
        return self.plan.numerics

    @property
    def threshold_calibrated_in(self) -> str:
        n = self.plan.numerics
        return n if n in self.manifest.precision_points else "fp32"

    @property
    def operating_point(self) -> OperatingPoint:
        """The thresholds for the scores this engine's plan gives: calibrated on the validation
        normals in the plan's own precision where the fit could (a bf16 plan's maxima sit higher
        than fp32's), else the fp32 ones. Derived once per manifest: verdicts read it per frame."""
        if self._point is None:
            self._point = self.manifest.operating_point(self.plan.numerics)
        return self._point

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    @property
    def region_threshold(self) -> float:
        """The map level that outlines regions, masks and the heatmap's midpoint."""
        return self.operating_point.map_threshold()

    image_size = property(lambda self: self.manifest.image_size)

    def units(self, hw: tuple[int, int]) -> int:
        """Engine work for one frame of this size: its tiles (tiled models), else 1."""
        return 1 if self.tiling is None else self.tiling.count(hw)

    @torch.inference_mode()
    def _run_tiles(self, tiles: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Tiles (each the input size) → their maps (n,t,t) and the global parts of their scores."""
        m = self.manifest
        batch, _ = prepare_placed(tiles, self.geometry, m.mean, m.std, self.device)
        return self.model.tile_outputs(*self._run(batch))

    def _stitched(self, images: Sequence[np.ndarray]):
        """(index, stitched map, score) of each frame of a tiled model, as each is complete."""
        for i, fmap, parts in iter_stitched(images, self.tiling, self._run_tiles, self.max_tiles):
            yield i, fmap, self.model.frame_score(fmap, parts)

    def scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Image scores (float64), tiled or not."""
        if self.tiling is not None:
            return np.array([s for _, _, s in self._stitched(images)], np.float64)
        return self.maps(images)[1].cpu().numpy().astype(np.float64)

    @torch.inference_mode()
    def placed_maps(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, list[Placement]]:
        """Anomaly maps of the model input (B,H,W) float32, scores (B,), on the device (the CPU
        for onnx), and where each frame lies in its map (``Geometry.frame_map``). Whole-frame
        models only: a tiled model's maps are its frames' stitched maps (``frame_maps``)."""
        if self.tiling is not None:
            raise ValueError("a tiled model has no single input map per frame: use frame_maps, scores or infer")
        m = self.manifest
        batch, placements = prepare_placed(images, self.geometry, m.mean, m.std, self.device)
        maps, scores = self._run(batch)
        # the maps edge-equalised (when fitted) and, for padded frames, the score read from the
        # frame's part of the map, not the mirrored border
        maps, scores = self.model.content_outputs(maps, scores, self.geometry.valid_mask(placements, maps.device))
        return maps, scores, placements

    def maps(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps of the model input (B,H,W) float32 and scores (B,)."""
        maps, scores, _ = self.placed_maps(images)
        return maps, scores

    def frame_maps(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Each frame's part of its map (float32, the frame's aspect at model resolution; tiled:
        the stitched map at frame resolution) and scores."""
        if self.tiling is not None:
            out = list(self._stitched(images))
            return [fmap for _, fmap, _ in out], np.array([s for _, _, s in out], np.float32)
        maps, scores, placements = self.placed_maps(images)
        maps_np = maps.float().cpu().numpy()
        return [self.geometry.frame_map(maps_np[i], p) for i, p in enumerate(placements)], scores.cpu().numpy()

    def warm_up(self, max_batch: int) -> None:
        """Run every batch shape serving will see once (compiled models: every bucket), off the
        serving path; the first call at a new shape is slow (compilation, kernel selection)."""
        h, w = self.geometry.hw
        rng = np.random.default_rng(0)
        sizes = buckets(max_batch) if self.plan.compile else [max_batch]
        for n in sizes:
            self.infer([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)])

    def infer(self, images: Sequence[np.ndarray]) -> list[Inspection]:
        if not images:
            return []
        if self.tiling is not None:
            return [self._inspect_tiled(fmap, score) for _, fmap, score in self._stitched(images)]
        maps, scores, placements = self.placed_maps(images)
        thr, region_thr = self.threshold, self.region_threshold
        if self.geometry.fills(placements):  # one pooling call for the batch
            masks = list(reduced_masks(maps, region_thr, self.mask_size))
        else:
            masks = [reduced_masks(self.geometry.frame_map(maps[i:i + 1], p), region_thr, self.mask_size)[0]
                     for i, p in enumerate(placements)]
        heatmaps = maps.cpu().numpy()
        scores_np = scores.cpu().numpy()
        out = []
        for i, image in enumerate(images):
            score = float(scores_np[i])
            defect = score >= thr
            heat = np.ascontiguousarray(self.geometry.frame_map(heatmaps[i], placements[i]))
            regions = find_regions(heat, region_thr, image.shape[:2], self.min_region_area) if defect else []
            out.append(Inspection(score=score, defect=defect, regions=regions, mask=masks[i], heatmap=heat))
        return out


    def _inspect_tiled(self, fmap: np.ndarray, score: float) -> Inspection:
        """Verdict parts of a tiled frame from its stitched map (frame resolution): regions in
        original pixels, the mask with the frame's aspect (``mask_size`` cells on the longer
        side), the heatmap at most ``TILED_HEATMAP_SIDE`` px on the longer side."""
        defect = score >= self.threshold
        region_thr = self.region_threshold
        mh, mw = fit_to_aspect(fmap.shape, self.mask_size)
        mask = reduced_masks(torch.from_numpy(fmap)[None], region_thr, (mh, mw))[0]
        regions = find_regions(fmap, region_thr, fmap.shape, self.min_region_area) if defect else []
        hh, hw = fit_to_aspect(fmap.shape, TILED_HEATMAP_SIDE)
        heat = fmap if (hh, hw) == fmap.shape else cv2.resize(fmap, (hw, hh), interpolation=cv2.INTER_AREA)
        return Inspection(score=float(score), defect=defect, regions=regions, mask=mask,
                          heatmap=np.ascontiguousarray(heat, dtype=np.float32))


def load_engine(checkpoint_dir: str | Path, device: str | None = None, options: EngineOptions = EngineOptions(), *,
                expected_manifest_sha256: str | None = None,
                teacher_weights: str | Path | None = None) -> DiscrepancyEngine:
    """Verify and load a checkpoint, to run on ``device`` (default: the GPU if any) as ``options``
    ask (default: the measured best for the device). Raises ``CheckpointError`` (never a
    half-built engine), also for options the device cannot honour or a backend asked for
    explicitly that cannot be built. ``expected_manifest_sha256`` pins the manifest (updates)."""
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
    cache = None
    if options.onnx_cache_dir is not None:
        key = cache_key(manifest_sha256(checkpoint_dir), manifest.input_geometry().hw)
        cache = (OnnxCache(Path(options.onnx_cache_dir)), key)
    try:
        return DiscrepancyEngine(model, manifest, dev, options, onnx_cache=cache)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{checkpoint_dir}: cannot run as requested "
                              f"({options.backend}, {options.precision}): {exc}") from exc
