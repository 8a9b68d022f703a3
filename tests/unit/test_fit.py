"""Training: the loss falls, a briefly trained model separates synthetic defects, resume, calibration."""

import json

import numpy as np
import pytest

from inspector.model.checkpoint import read_manifest
from trainer.evaluate import evaluate
from trainer.fit import FitConfig, fit, state_dir


def test_loss_falls_and_threshold_is_calibrated(tiny_checkpoint):
    m = read_manifest(tiny_checkpoint)
    history = m.training["history"]
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    # the kept epoch: best separation of synthetic anomalies on the validation normals, ties to the lower loss
    assert m.metrics["selection"] == "synthetic"
    keys = [(-h["synthetic"]["separation"], h["val_loss"]) for h in history]
    assert m.metrics["best_epoch"] == min(range(len(keys)), key=keys.__getitem__) + 1
    for h in history:
        assert 0.0 <= h["synthetic"]["image_auroc"] <= 1.0 and 0.0 <= h["synthetic"]["pixel_auroc"] <= 1.0
    assert m.metrics["val_false_reject_rate"] <= m.target_frr
    assert m.threshold > m.score_stats["max"]  # 0.5 % of a few validation images: above them all


def test_briefly_trained_model_separates_synthetic_defects(tiny_checkpoint, synthetic_data):
    result = evaluate(tiny_checkpoint, synthetic_data, None, "cpu")
    assert result["image_auroc"] >= 0.9, result
    assert result["pixel_auroc"] >= 0.85, result
    assert set(result["per_type"]) == {"scratch", "spot"}


def test_selection_by_loss_keeps_the_lowest_validation_loss(synthetic_data, tmp_path):
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=tmp_path / "m", image_size=32, epochs=3, seed=1, progress=False,
                  max_train_images=16, selection="loss"))
    m = read_manifest(tmp_path / "m")
    history = m.training["history"]
    assert m.metrics["selection"] == "loss" and all("synthetic" not in h for h in history)
    assert m.metrics["best_epoch"] == int(np.argmin([h["val_loss"] for h in history])) + 1
    with pytest.raises(ValueError, match="selection"):
        fit(FitConfig(precision_thresholds=False,
                      data=synthetic_data, out=tmp_path / "x", epochs=1, progress=False, selection="best"))


def test_training_on_painted_anomalies_runs_and_is_recorded(synthetic_data, tmp_path):
    import torch

    from inspector.model.nets.teachers import build_teacher
    from trainer.fit import painted_inputs

    summary = fit(FitConfig(precision_thresholds=False,
                            data=synthetic_data, out=tmp_path / "m", image_size=32, epochs=2, seed=1, progress=False,
                            max_train_images=16, synthetic_train=0.5))
    assert read_manifest(tmp_path / "m").training["synthetic_train"] == 0.5 and summary["best_epoch"] in (1, 2)
    # the painted share gets the teacher's features of the painted image; the rest is untouched
    m = read_manifest(tmp_path / "m")
    teacher = build_teacher(m.teacher)
    x = torch.randn(4, 3, 32, 32)
    tf = teacher(x)

    class _M:
        pass

    model = _M()
    model.teacher = teacher
    x_in, tf_in = painted_inputs(model, x, tf, 2, seed=0, spec=teacher.spec, valid=None)
    assert not torch.equal(x_in[:2], x[:2]) and torch.equal(x_in[2:], x[2:])
    for a, b in zip(tf_in, tf):
        assert torch.equal(a[2:], b[2:]) and not torch.equal(a[:2], b[:2])
    with pytest.raises(ValueError, match="synthetic_train"):
        fit(FitConfig(precision_thresholds=False,
                      data=synthetic_data, out=tmp_path / "x", epochs=1, progress=False, synthetic_train=1.5))


def test_resume_continues_where_it_stopped(synthetic_data, tmp_path):
    base = dict(data=synthetic_data, out=tmp_path / "m", image_size=32, seed=1, progress=False, max_train_images=16,
                precision_thresholds=False)
    fit(FitConfig(**base, epochs=1))
    summary = fit(FitConfig(**base, epochs=3, resume=True))
    history = json.loads((state_dir(tmp_path / "m") / "state.json").read_text())["history"]
    assert read_manifest(tmp_path / "m").training["history"] == history
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert summary["best_epoch"] in (1, 2, 3)


def test_undecodable_training_images_are_skipped_and_reported(synthetic_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    (data / "train" / "good" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    summary = fit(FitConfig(precision_thresholds=False, edge_equalise=False,
                            data=data, out=tmp_path / "m", image_size=32, epochs=1, progress=False,
                            max_train_images=100))
    assert summary["skipped_images"] == 1
    assert summary["edge_gain"] is None and read_manifest(tmp_path / "m").edge_profile is None  # asked: not fitted
    assert read_manifest(tmp_path / "m").training["skipped_images"][0][1] == "undecodable"


def test_warm_start_records_the_parent(tiny_checkpoint, synthetic_data, tmp_path):
    parent = read_manifest(tiny_checkpoint)
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=tmp_path / "child", image_size=64, epochs=1, progress=False,
                  init_from=tiny_checkpoint, max_train_images=16))
    assert read_manifest(tmp_path / "child").parent_version == parent.version
    with pytest.raises(ValueError, match="warm-start"):
        fit(FitConfig(precision_thresholds=False,
                      data=synthetic_data, out=tmp_path / "x", method="dskd", image_size=64, epochs=1,
                      progress=False, init_from=tiny_checkpoint))


# ----------------------------------------------------------------------------- awkward training folders


def _folder(tmp_path, images):
    import cv2

    d = tmp_path / "odd" / "train" / "good"
    d.mkdir(parents=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(d / f"{i:03d}.png"), img)
    return tmp_path / "odd"


def test_a_single_training_image_is_a_clear_error(tmp_path):
    from trainer.synthetic import make_image

    data = _folder(tmp_path, [make_image(None, size=64, seed=0, index=0)[0]])
    with pytest.raises(ValueError, match="not enough usable normal images.*1 train, 0 validation"):
        fit(FitConfig(precision_thresholds=False,
                      data=data, out=tmp_path / "m", image_size=32, epochs=1, progress=False))


def test_mixed_aspect_ratios_and_images_smaller_than_the_input_train(tmp_path):
    """Documented behaviour: the input takes the training images' median aspect ratio; every image
    is scaled into it without distortion (the rest mirrored), smaller ones enlarged (bilinear). The
    model's input is recorded in the manifest."""
    from trainer.synthetic import make_image

    rng = np.random.default_rng(0)
    images = []
    for i in range(12):
        img = make_image(None, size=128, seed=0, index=i)[0]
        h, w = [(24, 40), (128, 48), (50, 128), (20, 20)][i % 4]  # wide, tall, and smaller than the input
        y, x = rng.integers(0, 128 - h + 1), rng.integers(0, 128 - w + 1)
        images.append(np.ascontiguousarray(img[y:y + h, x:x + w]))
    data = _folder(tmp_path, images)
    summary = fit(FitConfig(precision_thresholds=False,
                            data=data, out=tmp_path / "m", image_size=32, epochs=1, progress=False))
    m = read_manifest(tmp_path / "m")
    assert summary["train_images"] + m.metrics["val_images"] == 12
    assert m.geometry is not None and m.geometry.resize == "pad" and summary["input"] == f"{m.geometry.width}x{m.geometry.height} pad"
