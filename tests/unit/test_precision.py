"""Thresholds per precision: the fit calibrates one for each reduced precision it can run
(``trainer.precision``), and an engine judges with the one of the plan it runs."""

import json

import numpy as np
import pytest
import structlog
import torch
from structlog.testing import capture_logs

from inspector.engine.capabilities import bf16_supported
from inspector.engine.engine import EngineOptions, load_engine
from inspector.engine.options import ExecutionPlan
from inspector.model.checkpoint import MANIFEST_FILE, OperatingPoint, read_manifest
from trainer.data import scan_dataset, split_train_val
from trainer.fit import normal_scores, to_batches
from trainer.metrics import calibrate_threshold
from trainer.precision import calibrate_checkpoint, precision_points, reduced_precision_plans
from trainer.refresh.measure import read_images

CPU = torch.device("cpu")
TORCH_BF16 = ExecutionPlan(backend="torch", precision="bf16", channels_last=True, fuse=True)
needs_cpu_bf16 = pytest.mark.skipif(not bf16_supported(CPU), reason="torch has no bf16 on this CPU")


def _validation_images(checkpoint, data):
    m = read_manifest(checkpoint)
    _, val = split_train_val(scan_dataset(data).train_paths, m.training["val_fraction"], m.training["seed"])
    return read_images(val)


def test_the_fit_calibrates_every_reduced_precision_it_can_run(tiny_fit, tiny_checkpoint, tiled_checkpoint):
    expected = {p.numerics for p in reduced_precision_plans(CPU)}  # openvino-bf16 where the CPU has native bf16
    points = read_manifest(tiny_checkpoint).precision_points
    assert tiny_fit["precision_thresholds"] == {k: v.threshold for k, v in points.items()}  # the fit's summary
    assert tiny_fit["precision_seconds"] >= 0
    for ckpt in (tiny_checkpoint, tiled_checkpoint):
        m = read_manifest(ckpt)
        assert set(m.precision_points) == expected
        for numerics, point in m.precision_points.items():
            assert point.threshold != m.threshold  # its own scores, not a copy of fp32's
            assert point.calibration["n"] == m.score_stats["n"] == point.score_stats["n"]  # the same normals
            assert point.region_threshold is not None  # fused maps: regions outlined in its units too


def test_an_engine_judges_with_the_threshold_of_its_precision(checkpoint_copy):
    m = read_manifest(checkpoint_copy)
    own = OperatingPoint(threshold=m.threshold + 1.0, region_threshold=2.0, calibration={"method": "gumbel", "n": 5},
                         score_stats={"p50": 0.5, "n": 5})
    doc = json.loads((checkpoint_copy / MANIFEST_FILE).read_text())
    doc["precision_points"] = {"torch-bf16": own.model_dump()}
    (checkpoint_copy / MANIFEST_FILE).write_text(json.dumps(doc))

    fp32 = load_engine(checkpoint_copy, "cpu", EngineOptions(backend="torch", precision="fp32"))
    assert (fp32.threshold, fp32.region_threshold) == (m.threshold, m.region_threshold)
    if bf16_supported(CPU):
        with capture_logs() as logs:
            bf16 = load_engine(checkpoint_copy, "cpu", EngineOptions(backend="torch", precision="bf16"))
        assert (bf16.threshold, bf16.region_threshold) == (m.threshold + 1.0, 2.0)
        assert bf16.operating_point.score_stats["p50"] == 0.5  # the refresh gate's scale follows it
        (event,) = [e for e in logs if e["event"] == "operating_point"]
        assert event["numerics"] == "torch-bf16"
    # a reduced precision the fit did not calibrate falls back to fp32's threshold, and says so
    doc["precision_points"] = {}
    (checkpoint_copy / MANIFEST_FILE).write_text(json.dumps(doc))
    if bf16_supported(CPU):
        with capture_logs() as logs:
            bf16 = load_engine(checkpoint_copy, "cpu", EngineOptions(backend="torch", precision="bf16"))
        assert bf16.threshold == m.threshold
        assert [e["numerics"] for e in logs if e["event"] == "threshold_not_calibrated_for_plan"] == ["torch-bf16"]


@needs_cpu_bf16
def test_a_precision_is_calibrated_on_the_scores_its_engine_gives(tiny_checkpoint, synthetic_data):
    """The fit's pass over the validation normals through a plan's runner gives the scores the
    served engine gives for the same frames: the stored threshold means what it says."""
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch", precision="fp32", channels_last=False))
    m = engine.manifest
    images = _validation_images(tiny_checkpoint, synthetic_data)
    x, valid = to_batches(images, engine.geometry, m.mean, m.std)

    def score_normals(run, on):
        return normal_scores(engine.model, x, on, valid=valid, run=run)

    with capture_logs() as logs:
        points = precision_points(engine.model, engine.geometry.hw, CPU, score_normals, m.target_frr, "auto",
                                  structlog.get_logger(), plans=[TORCH_BF16])
    assert set(points) == {"torch-bf16"}
    assert [e["numerics"] for e in logs if e["event"] == "precision_calibrated"] == ["torch-bf16"]
    served = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch", precision="bf16"))
    scores = served.scores(images)
    threshold, _ = calibrate_threshold(scores.astype(np.float32), m.target_frr, "auto")
    assert points["torch-bf16"].threshold == pytest.approx(threshold, rel=2e-3)
    # the fitted model itself was left as it was (the torch plan rewrites a copy in place)
    fp32_again, _ = normal_scores(engine.model, x, CPU, valid=valid)
    np.testing.assert_allclose(fp32_again, engine.scores(images), rtol=1e-4)


def test_a_plan_that_cannot_be_built_is_left_out(tiny_checkpoint, monkeypatch):
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch", precision="fp32"))

    def fail(*args, **kwargs):
        raise RuntimeError("export failed")

    monkeypatch.setattr("trainer.precision.select_runner", fail)
    with capture_logs() as logs:
        points = precision_points(engine.model, engine.geometry.hw, CPU, lambda run, on: (None, None), 0.005,
                                  "auto", structlog.get_logger(), plans=[TORCH_BF16])
    assert points == {}
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["precision_not_calibrated"]


def test_an_older_manifest_without_points_still_loads(checkpoint_copy):
    doc = json.loads((checkpoint_copy / MANIFEST_FILE).read_text())
    doc.pop("precision_points", None)
    (checkpoint_copy / MANIFEST_FILE).write_text(json.dumps(doc))
    m = read_manifest(checkpoint_copy)
    assert m.precision_points == {} and m.operating_point("openvino-bf16").threshold == m.threshold


def test_calibrate_adds_the_points_to_a_new_version_of_an_older_checkpoint(checkpoint_copy, tiny_checkpoint,
                                                                          synthetic_data, strip_data, tmp_path):
    """`trainer calibrate`: a checkpoint fitted without per-precision thresholds gets them, as a new
    version whose parent is the original, with the same weights; other normals are refused."""
    fitted = read_manifest(tiny_checkpoint)
    doc = json.loads((checkpoint_copy / MANIFEST_FILE).read_text())
    doc["precision_points"] = {}
    (checkpoint_copy / MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="fingerprint"):
        calibrate_checkpoint(checkpoint_copy, strip_data, tmp_path / "wrong", structlog.get_logger())
    assert not (tmp_path / "wrong").exists()

    m = calibrate_checkpoint(checkpoint_copy, synthetic_data, tmp_path / "cal", structlog.get_logger())
    assert read_manifest(tmp_path / "cal") == m
    assert m.parent_version == fitted.version != m.version
    assert m.weights_sha256 == fitted.weights_sha256 and m.threshold == fitted.threshold
    assert set(m.precision_points) == set(fitted.precision_points)  # what the fit itself stored, here
    for numerics, point in m.precision_points.items():
        assert point.threshold == pytest.approx(fitted.precision_points[numerics].threshold, rel=1e-4)
    # a model whose threshold the normals do not reproduce is refused (here: a changed threshold)
    doc["threshold"] = fitted.threshold * 2
    (checkpoint_copy / MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not the images or the model"):
        calibrate_checkpoint(checkpoint_copy, synthetic_data, tmp_path / "bad", structlog.get_logger())
