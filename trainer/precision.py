"""Thresholds for the reduced precisions a model may be served in (``Manifest.precision_points``).

The fit calibrates its threshold on the validation normals' fp32 scores. A worker on a CPU with
native bf16 runs the model in OpenVINO bf16 (on a GPU: torch with bf16 autocast). Those maps carry
rounding noise, and the maximum of a noisy map sits higher: on magnetic_tile the normals' median
score rose from 0.924 to 1.000 and the fp32 threshold rejected 1.1 % of the good test parts
against its 0.5 % target. So the fit scores the same validation normals once more through each
reduced-precision plan it can run here, with the serving engine's own runner, and calibrates a
threshold for each; the engine uses the one of the plan it runs. A plan this machine cannot run
is not calibrated, and an engine running it falls back to the fp32 threshold and says so.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from inspector.engine.backends.plan import Runner, resolve_plan
from inspector.engine.backends.select import select_runner
from inspector.engine.options import EngineOptions, ExecutionPlan
from inspector.model.checkpoint import Manifest, OperatingPoint
from inspector.model.nets.model import DiscrepancyModel

from .metrics import calibrate_threshold, score_stats

CPU = torch.device("cpu")

#: (runner, the device its inputs go to) → the validation normals' image scores and map maxima
#: (``None``: the model itself, fp32)
ScoreNormals = Callable[[Runner | None, torch.device], tuple[np.ndarray, np.ndarray]]


def reduced_precision_plans(device: torch.device) -> list[ExecutionPlan]:
    """The reduced-precision plans a worker picks by itself (``resolve_plan``'s ``auto``) on the
    CPU and on ``device`` here: OpenVINO bf16 where the CPU has native bf16, torch bf16 autocast
    when the fit runs on a GPU that supports it."""
    plans = [resolve_plan(d, EngineOptions()) for d in dict.fromkeys((CPU, device))]
    return [p for p in plans if p.precision != "fp32"]


def plan_device(plan: ExecutionPlan, fit_device: torch.device) -> torch.device:
    """Where ``plan``'s inputs go: exported graphs run on the CPU."""
    return CPU if plan.backend in ("onnx", "openvino") else fit_device


def precision_points(model: DiscrepancyModel, input_hw: tuple[int, int], fit_device: torch.device,
                     score_normals: ScoreNormals, target_frr: float, method: str, log,
                     plans: list[ExecutionPlan] | None = None) -> dict[str, OperatingPoint]:
    """An operating point per reduced-precision plan (default: ``reduced_precision_plans``),
    keyed by ``ExecutionPlan.numerics``. Each plan runs a copy of ``model`` (the torch backend
    rewrites its model in place); a plan that cannot be built is logged and left out."""
    points: dict[str, OperatingPoint] = {}
    for plan in reduced_precision_plans(fit_device) if plans is None else plans:
        if plan.precision == "fp32":
            continue  # every fp32 plan shares the fitted threshold
        device, t0 = plan_device(plan, fit_device), time.perf_counter()
        try:
            run, _ = select_runner(copy.deepcopy(model).to(device), device, EngineOptions(plan=plan), input_hw)
        except (RuntimeError, ValueError) as exc:
            log.warning("precision_not_calibrated", numerics=plan.numerics, error=str(exc)[:300])
            continue
        scores, peaks = score_normals(run, device)
        threshold, calibration = calibrate_threshold(scores, target_frr, method)
        region = None
        if model.config.fused:
            region, calibration["region"] = calibrate_threshold(peaks, target_frr, method)
        points[plan.numerics] = OperatingPoint(threshold=threshold, region_threshold=region,
                                               calibration=calibration, score_stats=score_stats(scores))
        log.info("precision_calibrated", numerics=plan.numerics, threshold=round(threshold, 6),
                 median_score=round(float(np.median(scores)), 6), images=len(scores),
                 seconds=round(time.perf_counter() - t0, 1))
    return points


def calibrate_checkpoint(checkpoint: str | Path, data: str | Path, out: str | Path, log,
                         device: str | None = None) -> Manifest:
    """A copy of ``checkpoint`` in ``out`` (a new version, its parent the original) with the
    precisions this machine can run calibrated: for a checkpoint fitted before thresholds were
    calibrated per precision, or on a machine without the worker's precision (a GPU box fitting
    for bf16 CPU workers). ``data`` must hold the normals it was fitted on (checked by the data
    fingerprint, and by the fp32 threshold coming out as stored); the weights are copied as
    they are. ``device``: where torch plans are calibrated (default: the GPU if any); the fp32
    replay and the exported graphs run on the CPU."""
    from inspector.engine.capabilities import pick_device
    from inspector.engine.engine import load_engine
    from inspector.model.checkpoint import new_version, read_manifest, read_weights, save_checkpoint

    from .data import data_fingerprint, scan_dataset, split_train_val
    from .fit import normals_scorer, to_batches
    from .refresh.measure import read_images

    manifest = read_manifest(checkpoint)
    paths = list(scan_dataset(data).train_paths)
    train, val = split_train_val(paths, manifest.training.get("val_fraction", 0.1), manifest.training.get("seed", 0))
    if data_fingerprint(train + val) != manifest.data_fingerprint:
        raise ValueError(f"{data}: not the normals {checkpoint} was fitted on (the data fingerprint differs)")
    exact = ExecutionPlan(backend="torch", precision="fp32", channels_last=False, fuse=False)
    engine = load_engine(checkpoint, "cpu", EngineOptions(plan=exact))
    model, geometry, spec = engine.model, engine.geometry, engine.model.teacher.spec
    frames = read_images(val)
    x, valid = to_batches(frames, geometry, spec.mean, spec.std) if engine.tiling is None else (None, None)
    score_normals = normals_scorer(model, x, valid, frames, engine.tiling, geometry, spec)

    method = manifest.calibration.get("method", "auto")
    replayed, _ = calibrate_threshold(score_normals(None, CPU)[0], manifest.target_frr, method)
    if abs(replayed - manifest.threshold) > 1e-3 * max(1.0, abs(manifest.threshold)):
        raise ValueError(f"{data}: the validation normals give an fp32 threshold of {replayed:.6f}, not the stored "
                         f"{manifest.threshold:.6f}: not the images or the model the fit calibrated on")
    points = precision_points(model, geometry.hw, pick_device(device), score_normals, manifest.target_frr, method, log)
    calibrated = manifest.model_copy(update={
        "precision_points": {**manifest.precision_points, **points}, "version": new_version(),
        "parent_version": manifest.version, "created_at": datetime.now(timezone.utc).isoformat()})
    saved = save_checkpoint(out, read_weights(checkpoint, manifest), calibrated)
    log.info("checkpoint_calibrated", out=str(out), version=saved.version, parent=manifest.version,
             numerics=sorted(saved.precision_points))
    return saved
