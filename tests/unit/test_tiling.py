"""Tiled inspection: the grid, exact stitching, batching tiles across frames, and a real tiled
model from fit to verdict parts (regions in original pixels, masks and heatmaps in the frame's
aspect)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.pipeline.batching import MicroBatcher
from inspector.model.checkpoint import read_manifest
from inspector.engine.engine import TILED_HEATMAP_SIDE, EngineOptions, load_engine
from inspector.model.tiling import Tiling, auto_tiling, fit_to_aspect, iter_stitched
from tests.conftest import TILED_HW

SIZES = [(300, 500), (40, 500), (64, 64), (63, 130), (1000, 33), (7, 9), (129, 127)]


def _ramp(hw):
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float32)
    return 0.5 * yy + 2.0 * xx - 3.0


@pytest.mark.parametrize("hw", SIZES)
def test_stitching_is_exact_where_tiles_agree(hw):
    """A constant stays that constant and a ramp stays that ramp, at any size (smaller than a
    tile, odd, one side shorter)."""
    t = Tiling(64, 8)
    image = np.zeros((*hw, 3), np.uint8)
    tiles, grid = t.cut(image)
    assert all(tile.shape == (64, 64, 3) for tile in tiles) and len(tiles) == len(grid) == t.count(hw)
    np.testing.assert_allclose(t.stitch([np.full((64, 64), 2.5, np.float32)] * len(grid), grid, hw), 2.5, rtol=1e-6)
    ramp = _ramp(hw)
    maps = [np.pad(ramp[g.y:g.y + g.h, g.x:g.x + g.w], [(0, 64 - g.h), (0, 64 - g.w)], constant_values=99)
            for g in grid]
    np.testing.assert_allclose(t.stitch(maps, grid, hw), ramp, atol=1e-3)


@pytest.mark.parametrize("hw", SIZES)
def test_the_grid_covers_every_pixel_inside_the_frame_with_the_overlap(hw):
    t = Tiling(64, 12)
    covered = np.zeros(hw, int)
    grid = t.grid(hw)
    for g in grid:
        assert 0 <= g.y and 0 <= g.x and g.y + g.h <= hw[0] and g.x + g.w <= hw[1]
        covered[g.y:g.y + g.h, g.x:g.x + g.w] += 1
    assert covered.min() >= 1
    for side in hw:
        starts = t.starts(side)
        assert all(b - a <= 64 - 12 for a, b in zip(starts, starts[1:]))  # neighbours share >= overlap


def test_frames_smaller_than_a_tile_are_mirrored_up_and_keep_their_own_part():
    t = Tiling(64, 8)
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    (tile,), (g,) = t.cut(image)
    assert tile.shape == (64, 64, 3) and (g.h, g.w) == (20, 30)
    np.testing.assert_array_equal(tile[:20, :30], image)
    np.testing.assert_array_equal(tile[20:40, :30], image[::-1])  # mirrored, not zeros


def test_bad_tilings_are_refused():
    for tile, overlap in ((16, 0), (64, 40), (64, -1)):
        with pytest.raises(ValueError):
            Tiling(tile, overlap)


def test_tiles_of_several_frames_share_engine_calls_and_frames_come_out_in_order():
    t = Tiling(32, 4)
    frames = [np.full((h, w, 3), i, np.uint8) for i, (h, w) in enumerate([(40, 40), (20, 20), (100, 70), (33, 90)])]
    calls = []

    def run(tiles):
        calls.append(len(tiles))
        return np.stack([np.full((32, 32), float(tile[0, 0, 0]), np.float32) for tile in tiles]), \
            np.array([float(tile[0, 0, 0]) for tile in tiles])

    out = list(iter_stitched(frames, t, run, max_tiles=5))
    assert [i for i, _, _ in out] == [0, 1, 2, 3]
    assert max(calls) <= 5 and sum(calls) == sum(t.count(f.shape[:2]) for f in frames)
    assert len(calls) == -(-sum(calls) // 5)  # full calls across frame boundaries
    for i, fmap, values in out:
        assert fmap.shape == frames[i].shape[:2] and np.allclose(fmap, i) and np.allclose(values, i)


def test_a_tiled_fit_draws_at_most_its_limit_of_tiles_evenly_and_by_seed():
    from trainer.fit import tiles_of

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, hw, dtype=np.uint8) for hw in ((200, 300), (130, 70), (200, 300))]
    tiling = Tiling(64, 8)
    every, total = tiles_of(frames, tiling)
    assert total == len(every) == sum(tiling.count(f.shape) for f in frames)
    assert tiles_of(frames, tiling, limit=total)[0][5].tobytes() == every[5].tobytes()  # under the limit: all
    drawn, total2 = tiles_of(frames, tiling, limit=12, seed=3)
    assert total2 == total and len(drawn) == 12
    keys = {t.tobytes() for t in drawn}
    assert len(keys) == 12 and keys <= {t.tobytes() for t in every}  # distinct positions, cut as serving cuts them
    assert [t.tobytes() for t in tiles_of(frames, tiling, limit=12, seed=3)[0]] == [t.tobytes() for t in drawn]
    assert [t.tobytes() for t in tiles_of(frames, tiling, limit=12, seed=4)[0]] != [t.tobytes() for t in drawn]
    big = [rng.integers(0, 255, (640, 640), dtype=np.uint8) for _ in range(4)]
    owner = {t.tobytes(): i for i, f in enumerate(big) for t in tiling.cut(f)[0]}
    sample, _ = tiles_of(big, tiling, limit=200, seed=0)
    per_frame = np.bincount([owner[t.tobytes()] for t in sample], minlength=4)
    assert per_frame.min() >= 30  # drawn over every frame's positions, not the first frames'
    with pytest.raises(ValueError, match="max_tiles"):
        tiles_of(frames, tiling, limit=0)


def test_auto_tiling_takes_line_camera_frames_and_leaves_object_photos_whole():
    assert auto_tiling([(2048, 2448)] * 3, 256) == Tiling(256, 32)
    assert auto_tiling([(1024, 1024)] * 3, 256) is None  # MVTec AD size: whole frames
    assert auto_tiling([(600, 200), (100, 250)], 256) is None  # magnetic_tile
    assert auto_tiling([], 256) is None


def test_fit_to_aspect():
    assert fit_to_aspect((2048, 2448), 64) == (54, 64)
    assert fit_to_aspect((20, 30), 64) == (20, 30)  # never larger than the frame


def test_the_batcher_counts_tiles():
    b = MicroBatcher(max_batch=10, max_delay_s=60, max_items=100)
    b.put("m", "a", weight=4)
    b.put("m", "b", weight=4)
    assert b.get(timeout=0) is None  # 8 of 10 units: not full, not due
    b.put("m", "c", weight=4)
    batch = b.get(timeout=0)
    assert batch.items == ["a", "b"] and batch.weight == 8  # c would overflow: next batch
    b.put("m", "huge", weight=50)
    b.flush_now()
    assert b.get(timeout=0).items == ["c"]
    batch = b.get(timeout=0)
    assert batch.items == ["huge"] and batch.full  # one frame of more tiles than a batch still goes
    b.put("m", "x", weight=3)
    b.put("m", "y", weight=3)
    assert b.drop(lambda item: item != "x") == ["x"]
    assert b.get(timeout=0).weight == 3


# ------------------------------------------------------------------------------------------ a real tiled model

def test_a_tiled_fit_calibrates_on_whole_frames_and_stores_its_tiling(tiled_checkpoint):
    m = read_manifest(tiled_checkpoint)
    assert m.edge_profile is None  # tiled models are not edge-equalised
    assert (m.tiling.tile, m.tiling.overlap) == (64, 8) and m.input_geometry().hw == (64, 64)
    assert m.training["train_frames"] < m.training["train_images"]  # trained on tiles of the frames
    assert m.score_stats["n"] == m.metrics["val_images"] < m.training["train_frames"]  # whole validation frames
    assert m.signals is None or not m.signals.gaussian  # a tile's statistics are not its frame's


@pytest.fixture(scope="module")
def tiled_engine(tiled_checkpoint):
    return load_engine(tiled_checkpoint, "cpu", EngineOptions(max_tiles=16, precision="fp32"))  # exact, as fitted


def _frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (*hw, 3), dtype=np.uint8) for hw in ((*TILED_HW,), (500, 300), (50, 41), (64, 64))]


def test_tiled_serving_matches_the_calibration_and_keeps_each_frames_shape(tiled_engine, tiled_checkpoint):
    from trainer.fit import tiled_normal_scores

    frames = _frames()
    out = tiled_engine.infer(frames)
    maps, scores = tiled_engine.frame_maps(frames)
    np.testing.assert_allclose([o.score for o in out], scores, rtol=1e-5)
    np.testing.assert_allclose(tiled_engine.scores(frames), scores, rtol=1e-5)
    fit_scores, _ = tiled_normal_scores(tiled_engine.model, frames, tiled_engine.tiling, tiled_engine.geometry,
                                        tiled_engine.model.teacher.spec, torch.device("cpu"))
    np.testing.assert_allclose(fit_scores, scores, rtol=1e-3, atol=1e-3)  # the threshold means the same
    for frame, fmap, o in zip(frames, maps, out):
        h, w = frame.shape[:2]
        assert fmap.shape == (h, w)
        assert o.mask.shape == fit_to_aspect((h, w), tiled_engine.mask_size)
        assert o.heatmap.shape == fit_to_aspect((h, w), TILED_HEATMAP_SIDE)
        assert o.defect == (o.score >= tiled_engine.threshold)
    assert tiled_engine.units(TILED_HW) == tiled_engine.tiling.count(TILED_HW) > 1 and tiled_engine.units((10, 10)) == 1
    with pytest.raises(ValueError, match="tiled"):  # no silent resize of a whole frame into one tile
        tiled_engine.maps(frames)


def test_tiled_regions_and_masks_are_in_original_pixels_up_to_the_frame_edges(tiled_engine):
    h, w = 700, 1100
    fmap = np.zeros((h, w), np.float32)
    fmap[h - 30:, w - 50:] = 10.0  # at the bottom-right edge
    fmap[100:110, 0:8] = 10.0  # at the left edge
    o = tiled_engine._inspect_tiled(fmap, score=1e9)
    boxes = sorted((r.x0, r.y0, r.x1, r.y1) for r in o.regions)  # x1, y1 exclusive
    assert boxes == [(0, 100, 8, 110), (w - 50, h - 30, w, h)]
    mh, mw = o.mask.shape
    assert (mh, mw) == fit_to_aspect((h, w), tiled_engine.mask_size) and o.mask[-1, -1] and not o.mask[0, -1]


def test_trainer_evaluate_and_inspector_score_go_through_the_tiles(tiled_checkpoint, tiled_data, tmp_path):
    """`trainer evaluate` and `inspector score` share the engine's tiling path: full-size frames,
    regions in their own pixels."""
    import json

    import cv2

    from inspector.cli import main as inspector_main
    from trainer.evaluate import TILED_GRID, evaluate

    r = evaluate(tiled_checkpoint, tiled_data, tmp_path / "report", "cpu")
    assert r["input"] == "64x64 pad" and 0.0 <= r["image_auroc"] <= 1.0
    assert r["n_images"] == len(list((tiled_data / "test").glob("*/*.png")))
    assert r["pixel_auroc"] is not None
    frame = next((tiled_data / "test").glob("*/*.png"))
    img = cv2.imread(str(frame))
    assert img.shape[:2] == TILED_HW and TILED_GRID >= max(TILED_HW)
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert inspector_main(["score", "--checkpoint", str(tiled_checkpoint), str(frame)]) == 0
    line = json.loads(buf.getvalue().strip().splitlines()[-1])
    for reg in line.get("regions", []):
        assert 0 <= reg["x0"] < reg["x1"] <= TILED_HW[1] and 0 <= reg["y0"] < reg["y1"] <= TILED_HW[0]


def test_fit_tile_option_parses():
    from trainer.cli import _tile_arg

    assert _tile_arg("auto") == "auto" and _tile_arg("off") is None and _tile_arg("256") == 256
    with pytest.raises(SystemExit):
        _tile_arg("big")


# ---------------------------------------------------------------------------------------------
# zoom: windows of tile/zoom frame pixels enlarged to the input
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw", SIZES)
def test_zoomed_windows_are_enlarged_to_the_input_and_stitch_back_to_the_frame(hw):
    """A zoomed tile is its window enlarged to the input; an engine that returned its input as the
    map would give the frame back (a constant exactly, a ramp up to the half-pixel border of the
    enlargement), in frame pixels."""
    t = Tiling(64, 4, zoom=2)
    assert t.side == 32
    ramp = _ramp(hw)
    tiles, grid = t.cut(ramp)
    assert all(tile.shape == (64, 64) for tile in tiles) and len(tiles) == t.count(hw)
    assert all(g.h <= 32 and g.w <= 32 for g in grid)
    np.testing.assert_allclose(t.stitch([np.full((64, 64), 2.5, np.float32)] * len(grid), grid, hw), 2.5, rtol=1e-6)
    back = t.stitch(tiles, grid, hw)
    assert back.shape == hw
    np.testing.assert_allclose(back, ramp, atol=0.3125 + 1e-4)  # 1/8 of a pixel step on each axis (0.5 + 2) at the frame border
    if min(hw) >= 40:  # away from the border the enlargement and the area mean undo each other
        assert np.mean(np.abs(back[1:-1, 1:-1] - ramp[1:-1, 1:-1])) < 0.05


def test_zoom_multiplies_the_tiles_of_a_frame_and_bad_zooms_are_refused():
    hw = (2048, 2448)
    plain, zoomed = Tiling(256, 32), Tiling(256, 16, zoom=2)
    assert zoomed.side == 128 and 3.5 < zoomed.count(hw) / plain.count(hw) < 4.5
    for bad in (dict(tile=64, overlap=8, zoom=3), dict(tile=64, overlap=2, zoom=8), dict(tile=64, overlap=20, zoom=2),
                dict(tile=64, overlap=4, zoom=0)):
        with pytest.raises(ValueError):
            Tiling(**bad)


def test_the_manifest_keeps_the_zoom_and_older_manifests_have_none():
    from inspector.model.checkpoint import TilingSpec

    assert TilingSpec.model_validate({"tile": 64, "overlap": 8}).zoom == 1
    with pytest.raises(ValueError):
        TilingSpec.model_validate({"tile": 64, "overlap": 8, "zoom": 0})


def test_a_zoomed_tiled_model_trains_and_serves_frames_in_their_own_pixels(tiled_data, tmp_path):
    from trainer.fit import FitConfig, fit

    summary = fit(FitConfig(precision_thresholds=False,
                            data=tiled_data, out=tmp_path / "zoomed", method="rd", image_size=64, tile=64, zoom=2,
                            epochs=1, seed=0, progress=False, name="zoomed", val_fraction=0.3, max_tiles=40))
    m = read_manifest(summary["checkpoint"])
    per_frame = Tiling(64, 4, zoom=2).count(TILED_HW)
    t = m.training  # more tile positions than --max-tiles: a sample of them, recorded
    assert t["train_tiles"] == t["train_images"] == 40 < t["train_tile_positions"] == t["train_frames"] * per_frame
    assert t["val_tiles"] == 10 < t["val_tile_positions"] and m.metrics["val_images"] == t["val_tile_positions"] // per_frame
    assert (m.tiling.tile, m.tiling.overlap, m.tiling.zoom) == (64, 4, 2) and m.input_geometry().hw == (64, 64)
    engine = load_engine(summary["checkpoint"], "cpu", EngineOptions(max_tiles=64))
    assert engine.tiling.side == 32 and engine.units(TILED_HW) == Tiling(64, 4, zoom=2).count(TILED_HW)
    assert engine.units(TILED_HW) > Tiling(64, 8).count(TILED_HW)
    frame = np.random.default_rng(1).integers(0, 255, (*TILED_HW, 3), dtype=np.uint8)
    maps, scores = engine.frame_maps([frame])
    (o,) = engine.infer([frame])
    assert maps[0].shape == TILED_HW and np.isclose(scores[0], o.score, rtol=1e-4)
    assert np.isfinite(o.score) and o.mask.shape == fit_to_aspect(TILED_HW, engine.mask_size)
    for r in o.regions:
        assert 0 <= r.x0 < r.x1 <= TILED_HW[1] and 0 <= r.y0 < r.y1 <= TILED_HW[0]
