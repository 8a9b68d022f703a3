"""Non-square frames end to end: fit, evaluate, score and regions in the frame's own pixels; older
square checkpoints still load; a training folder of mixed or small images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.model.checkpoint import read_manifest
from inspector.engine.engine import load_engine
from inspector.model.geometry import Geometry
from tests.conftest import STRIP_HW
from trainer.synthetic import make_image


def _strip_with_block(h: int, w: int, box: tuple[int, int, int, int], index: int = 7) -> np.ndarray:
    """A normal strip (synthetic texture at h x w) with a dark block at box = (x0, y0, x1, y1)."""
    img, _ = make_image(size=h, width=w, seed=3, index=index)
    x0, y0, x1, y1 = box
    img = img.copy()
    img[y0:y1, x0:x1] = 10
    return img


def _overlaps(r, box) -> bool:
    x0, y0, x1, y1 = box
    return r.x0 < x1 and x0 < r.x1 and r.y0 < y1 and y0 < r.y1


def test_fit_takes_the_frames_aspect_ratio(strip_checkpoint):
    m = read_manifest(strip_checkpoint)
    # 64 x 160 frames, about 96^2 pixels, multiples of 32: a 64 x 160 input, no padding at all
    assert m.geometry is not None and (m.geometry.height, m.geometry.width, m.geometry.resize) == (64, 160, "pad")
    assert m.input_geometry().placement(STRIP_HW).content_hw == STRIP_HW
    assert m.image_size == 160


def test_regions_come_back_in_the_frames_pixels(strip_checkpoint):
    engine = load_engine(strip_checkpoint, "cpu")
    h, w = 2 * STRIP_HW[0], 2 * STRIP_HW[1]  # a frame twice the training size
    box = (220, 40, 252, 72)  # x0, y0, x1, y1 in the frame's pixels
    good, _ = make_image(size=h, width=w, seed=3, index=5)
    bad = _strip_with_block(h, w, box)
    ok, defect = engine.infer([good, bad])
    assert defect.score > ok.score and defect.defect
    assert defect.regions and _overlaps(defect.regions[0], box)
    for r in defect.regions:
        assert 0 <= r.x0 < r.x1 <= w and 0 <= r.y0 < r.y1 <= h
    # the heatmap is the frame's part of the map: the frame's aspect ratio, model resolution
    assert defect.heatmap.shape == (64, 160)
    assert defect.mask.shape == (engine.mask_size, engine.mask_size) and defect.mask.any()
    # the mask covers the frame: the block (columns 220-252 of 320, rows 40-72 of 128) lies in it
    ys, xs = np.nonzero(defect.mask)
    cells = engine.mask_size
    assert xs.min() <= 252 / w * cells and xs.max() >= 220 / w * cells


def test_a_frame_of_another_shape_is_padded_not_stretched(strip_checkpoint):
    engine = load_engine(strip_checkpoint, "cpu")
    square = _strip_with_block(96, 96, (40, 40, 60, 60))
    [res] = engine.infer([square])
    # 96 x 96 into a 64 x 160 input: scaled to 64 x 64 and mirrored into the rest
    assert res.heatmap.shape == (64, 64)
    for r in res.regions:
        assert 0 <= r.x0 < r.x1 <= 96 and 0 <= r.y0 < r.y1 <= 96


def test_evaluate_on_non_square_frames(strip_checkpoint, strip_data, tmp_path):
    from trainer.evaluate import evaluate

    summary = evaluate(strip_checkpoint, strip_data, report=tmp_path / "report")
    assert summary["input"] == "160x64 pad"
    assert summary["image_auroc"] > 0.7
    assert summary["pixel_auroc"] is not None and summary["pixel_auroc"] > 0.7
    assert (tmp_path / "report" / "heatmaps.png").is_file()


def test_inspector_score_on_non_square_images(strip_checkpoint, tmp_path):
    box = (100, 10, 130, 40)
    img = _strip_with_block(*STRIP_HW, box)
    path = tmp_path / "strip.png"
    cv2.imwrite(str(path), img[:, :, ::-1])
    proc = subprocess.run([sys.executable, "-m", "inspector.cli", "score", "--checkpoint", str(strip_checkpoint),
                           "--device", "cpu", "--heatmaps", str(tmp_path / "h"), str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = json.loads(proc.stdout.strip().splitlines()[-1])
    assert line["verdict"] == "defect"
    assert any(_overlaps(type("R", (), r), box) for r in line["regions"])
    heat = cv2.imread(line["heatmap"], cv2.IMREAD_GRAYSCALE)
    assert heat.shape == STRIP_HW


def test_a_square_checkpoint_without_geometry_still_loads_and_serves(checkpoint_copy):
    """A manifest written before geometry existed has no ``geometry`` key: square, stretched."""
    mf = json.loads((checkpoint_copy / "manifest.json").read_text())
    mf.pop("geometry", None)
    (checkpoint_copy / "manifest.json").write_text(json.dumps(mf))
    engine = load_engine(checkpoint_copy, "cpu")
    size = mf["image_size"]
    assert engine.geometry == Geometry.square(size)
    img, _ = make_image(size=64, width=160, seed=0, index=1)
    [res] = engine.infer([img])
    assert res.heatmap.shape == (size, size)  # stretched over the whole input, as before
    for r in res.regions:
        assert 0 <= r.x0 < r.x1 <= 160 and 0 <= r.y0 < r.y1 <= 64


def test_stretch_keeps_the_square_manifest_of_older_models(synthetic_data, tmp_path):
    from trainer.fit import FitConfig, fit

    out = fit(FitConfig(precision_thresholds=False,
                        data=synthetic_data, out=tmp_path / "c", image_size=64, epochs=1, resize="stretch",
                        progress=False, memory_bank=False, global_gaussian=False))
    m = read_manifest(out["checkpoint"])
    assert m.geometry is None and m.image_size == 64 and m.input_geometry() == Geometry.square(64)


def _write(folder: Path, images: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), img[:, :, ::-1])


def test_mixed_and_small_training_images_have_a_defined_geometry(tmp_path, caplog):
    """Mixed aspect ratios: the median one, each image padded without distortion; images smaller
    than the input: scaled up (logged); a bad explicit size: a clear error."""
    from trainer.fit import FitConfig, fit

    shapes = [(32, 96)] * 8 + [(48, 48)] * 2 + [(24, 24)] * 2  # median aspect 3:1; some tiny
    images = [make_image(size=h, width=w, seed=1, index=i)[0] for i, (h, w) in enumerate(shapes)]
    _write(tmp_path / "mixed" / "train" / "good", images)
    out = fit(FitConfig(precision_thresholds=False,
                        data=tmp_path / "mixed", out=tmp_path / "c", image_size=96, epochs=1, progress=False))
    assert out["input"] == "160x64 pad"  # 3:1 at about 96^2 pixels, snapped to multiples of 32
    with pytest.raises(ValueError, match="multiple of 32"):
        fit(FitConfig(precision_thresholds=False,
                      data=tmp_path / "mixed", out=tmp_path / "d", input_size=(60, 100), epochs=1, progress=False))
