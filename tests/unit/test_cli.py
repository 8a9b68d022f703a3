"""The command lines a user runs: `trainer evaluate`, `trainer calibrate` and `inspector score` (as real
subprocesses)."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from inspector.model.checkpoint import read_manifest
from trainer.synthetic import make_image


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_trainer_evaluate_prints_metrics_json_and_writes_a_report(tiny_checkpoint, synthetic_data, tmp_path):
    proc = run("trainer.cli", "evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(synthetic_data),
               "--report", str(tmp_path / "report"), "--device", "cpu")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert 0.0 <= result[key] <= 1.0
        for per in result["per_type"].values():
            assert key in per
    for name in ("metrics.json", "roc_image.png", "roc_pixel.png", "heatmaps.png"):
        assert (tmp_path / "report" / name).is_file()
    assert cv2.imread(str(tmp_path / "report" / "heatmaps.png")) is not None
    # judged at the threshold of the precision it ran in (bf16 where this CPU has it), and says so
    m = read_manifest(tiny_checkpoint)
    assert result["threshold_calibrated_in"] in ("fp32", *m.precision_points)
    assert result["threshold"] == m.operating_point(result["threshold_calibrated_in"]).threshold
    exact = run("trainer.cli", "evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(synthetic_data),
                "--device", "cpu", "--precision", "fp32")
    exact = json.loads(exact.stdout.strip().splitlines()[-1])
    assert (exact["threshold_calibrated_in"], exact["threshold"]) == ("fp32", m.threshold)
    assert exact["plan"] in ("onnx-fp32", "openvino-fp32") or exact["plan"].startswith("torch-fp32")


def test_trainer_calibrate_writes_a_new_version_or_a_clear_error(tiny_checkpoint, synthetic_data, strip_data,
                                                                 tmp_path):
    proc = run("trainer.cli", "calibrate", "--checkpoint", str(tiny_checkpoint), "--data", str(strip_data),
               "--out", str(tmp_path / "wrong"), check=False)
    assert proc.returncode == 2
    assert "fingerprint" in json.loads(proc.stdout.strip().splitlines()[-1])["message"]
    proc = run("trainer.cli", "calibrate", "--checkpoint", str(tiny_checkpoint), "--data", str(synthetic_data),
               "--out", str(tmp_path / "cal"), "--device", "cpu")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    m = read_manifest(tmp_path / "cal")
    assert out["version"] == m.version and out["parent_version"] == read_manifest(tiny_checkpoint).version
    assert out["precision_thresholds"] == {k: v.threshold for k, v in m.precision_points.items()}


def test_inspector_score_json_lines_heatmaps_and_bad_files(tiny_checkpoint, tmp_path):
    good, _ = make_image(None, size=128, seed=0, index=700)
    bad, _ = make_image("spot", size=128, seed=0, index=701)
    cv2.imwrite(str(tmp_path / "good.png"), good[..., ::-1])
    cv2.imwrite(str(tmp_path / "bad.jpg"), bad[..., ::-1])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    proc = run("inspector.cli", "score", "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
               "--heatmaps", str(tmp_path / "maps"), str(tmp_path / "good.png"), str(tmp_path / "bad.jpg"),
               str(tmp_path / "broken.png"), check=False)
    assert proc.returncode == 1  # one file could not be read
    lines = {json.loads(line)["image"].rsplit("/", 1)[-1]: json.loads(line) for line in proc.stdout.splitlines()}
    assert lines["broken.png"]["verdict"] == "rejected" and lines["broken.png"]["reason"] == "unsupported_type"
    for name in ("good.png", "bad.jpg"):
        line = lines[name]
        assert line["verdict"] in ("ok", "defect") and line["verdict"] == ("defect" if line["score"] >= line["threshold"] else "ok")
        heat = cv2.imread(line["heatmap"], cv2.IMREAD_UNCHANGED)
        assert heat is not None and heat.shape == (64, 64)
    assert lines["bad.jpg"]["score"] > lines["good.png"]["score"]


def test_refused_checkpoint_is_a_clear_error(checkpoint_copy, tmp_path):
    (checkpoint_copy / "model.safetensors").write_bytes(b"truncated")
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((32, 32), np.uint8))
    proc = run("inspector.cli", "score", "--checkpoint", str(checkpoint_copy), str(image), check=False)
    assert proc.returncode == 2
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] == "checkpoint_refused" and "sha256" in out["message"]
    proc = run("trainer.cli", "evaluate", "--checkpoint", str(checkpoint_copy), "--data", str(tmp_path), check=False)
    assert proc.returncode == 2 and json.loads(proc.stdout.strip().splitlines()[-1])["error"] == "CheckpointError"


@pytest.mark.parametrize("value", ["1.5", "-0.1", "most"])
def test_trainer_fit_refuses_a_memory_weight_outside_zero_to_one(value, synthetic_data, tmp_path):
    proc = run("trainer.cli", "fit", "--data", str(synthetic_data), "--out", str(tmp_path / "c"),
               "--memory-weight", value, check=False)
    assert proc.returncode != 0 and "--memory-weight" in proc.stderr
    assert not (tmp_path / "c").exists()
