"""The Engine: one batched inference path for the worker, `inspector score` and evaluation."""

import numpy as np
import pytest

from inspector.engine.engine import EngineOptions, load_engine
from inspector.engine.protocol import Engine
from inspector.runtime.settings import Settings
from trainer.synthetic import make_image


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    # fp32 (exact): these tests check the engine's arithmetic against the model's; bf16 backends
    # are held to their tolerance in test_execution_plan
    return load_engine(tiny_checkpoint, "cpu", EngineOptions(precision="fp32"))


def test_inspections_have_every_field(engine):
    img, _ = make_image("scratch", size=128, seed=0, index=500)
    (r,) = engine.infer([img])
    assert isinstance(r.score, float) and r.defect == (r.score >= engine.threshold)
    assert r.mask.shape == (64, 64) and r.mask.dtype == bool
    assert r.heatmap.shape == (engine.image_size, engine.image_size) and r.heatmap.dtype == np.float32
    # the fused score: the map's maximum and the global distance, each in validation-normal units
    m = engine.manifest
    assert m.signals is not None and m.signals.gaussian and m.signals.memory_bank_size > 0
    from inspector.model.preprocess import prepare_batch

    g = engine.model.components(prepare_batch([img], m.image_size, m.mean, m.std))["gaussian"]
    expected = (float(r.heatmap.max()) + float(g[0]) / m.signals.gaussian_scale) / 2
    assert r.score == pytest.approx(expected, rel=1e-4)
    assert r.mask.any() == bool(r.heatmap.max() >= engine.region_threshold)


def test_regions_are_in_original_pixels(engine):
    img, _ = make_image("spot", size=128, seed=0, index=501)
    wide = np.ascontiguousarray(np.concatenate([img, img, img], axis=1))  # 128 x 384
    saved = engine.manifest
    engine.manifest = saved.model_copy(update={"threshold": -1.0, "region_threshold": -1.0})  # all "defect"
    try:
        (r,) = engine.infer([wide])
    finally:
        engine.manifest = saved
    assert r.defect and len(r.regions) == 1
    box = r.regions[0]
    assert (box.x0, box.y0, box.x1, box.y1) == (0, 0, 384, 128)
    assert box.area == 384 * 128 and box.peak == pytest.approx(float(r.heatmap.max()))


def test_any_layout_and_bit_depth(engine):
    rgb, _ = make_image(None, size=128, seed=0, index=502)
    gray = rgb.mean(axis=2).astype(np.uint8)
    gray16 = gray.astype(np.uint16) * 257
    odd = np.ascontiguousarray(rgb[:100, :77])
    scores = [r.score for r in engine.infer([rgb, gray, gray16, odd])]
    assert all(np.isfinite(scores))
    assert scores[1] == pytest.approx(scores[2], rel=1e-3)  # 8-bit and 16-bit of the same picture


def test_batch_equals_one_by_one(engine):
    imgs = [make_image(kind, size=128, seed=0, index=510 + i)[0] for i, kind in enumerate([None, "spot", "scratch"])]
    batched = [r.score for r in engine.infer(imgs)]
    single = [engine.infer([im])[0].score for im in imgs]
    np.testing.assert_allclose(batched, single, rtol=1e-4)
    assert engine.infer([]) == []


def test_the_serving_path_sees_an_engine(engine):
    assert isinstance(engine, Engine)  # every member the worker, rollout and `inspector score` use


def test_settings_become_engine_options_in_one_place(tmp_path):
    s = Settings(engine_backend="torch", engine_precision="fp32", engine_channels_last=False, engine_compile=True,
                 onnx_cache_dir=tmp_path, max_tiles_per_call=7, mask_size=16, region_min_area=0)
    assert s.engine_options() == EngineOptions(backend="torch", precision="fp32", channels_last=False, compile=True,
                                               onnx_cache_dir=tmp_path, max_tiles=7, mask_size=16, min_region_area=1)
    assert Settings(region_min_area=5).engine_options().min_region_area == 5
