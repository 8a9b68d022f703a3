"""Edge equalisation (inspector.model.nets.edges): distances, the fitted profile, and the engine
judging with it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from inspector.model.checkpoint import CheckpointError, EdgeProfile, read_manifest
from inspector.model.nets.edges import MIN_GAIN, Equaliser, edge_distance, equalise, fit_profile


def test_distance_to_the_frames_edge():
    d = edge_distance((1, 5, 7), None, "cpu")[0]
    assert d[0].tolist() == [0] * 7 and d[:, 0].tolist() == [0] * 5 and d[-1, -1] == 0
    assert d[2, 3] == 2 and d[1, 1] == 1 and d[2, 1] == 1
    valid = torch.zeros(2, 10, 12, dtype=torch.bool)
    valid[0, 2:8, 3:12] = True  # a padded frame: rows 2..7, columns 3..11
    valid[1] = True
    d = edge_distance((2, 10, 12), valid, "cpu")
    assert d[0, 2, 3] == 0 and d[0, 7, 11] == 0  # the frame's corners
    assert d[0, 4, 7] == 2  # two rows in from row 2 (and three up from row 7)
    assert d[0, 0, 0] == 0 and d[0, 9, 5] == 0  # the mirrored border
    assert torch.equal(d[1], edge_distance((1, 10, 12), None, "cpu")[0])


def _noisy_maps(n=40, hw=(80, 96), edge_sd=1.5, edge_mean=1.5, seed=0):
    """Normal maps: mean 1, spread 0.5 inside; the outer 4 px: mean ``edge_mean``, spread ``edge_sd``."""
    g = torch.Generator().manual_seed(seed)
    maps = 1.0 + 0.5 * torch.randn((n, *hw), generator=g)
    d = edge_distance(maps.shape, None, "cpu")
    edge = d < 4
    maps[edge] = edge_mean + edge_sd * torch.randn(int(edge.sum()), generator=g)
    return maps, d


def test_a_noisy_edge_band_is_damped_to_the_interiors_spread():
    maps, d = _noisy_maps()
    gain, offset = fit_profile(maps, d, None, bin=4, reach=32)
    assert len(gain) == 8 and len(offset) == 8
    assert gain[0] == pytest.approx(0.5 / 1.5, rel=0.05)  # damped to the interior's spread
    assert all(g == pytest.approx(1.0, abs=0.05) for g in gain[1:])  # the rest already is
    eq = equalise(maps, d, 4, gain, offset)
    band = eq[d < 4]
    assert float(band.std()) == pytest.approx(0.5, rel=0.05) and float(band.mean()) == pytest.approx(1.0, abs=0.02)
    inside = d >= 32
    assert torch.equal(eq[inside], maps[inside])  # the reference keeps its values and units
    # a defect in the middle now outscores the normal edge noise that used to hide it
    maps2, _ = _noisy_maps(n=1, seed=7)
    maps2[0, 40, 48] = 4.0
    assert float(maps2[0].max()) > 4.0 and int(maps2[0].argmax()) != 40 * 96 + 48
    assert int(equalise(maps2, d[:1], 4, gain, offset)[0].argmax()) == 40 * 96 + 48


def test_the_serving_equaliser_is_the_definition_with_its_planes_kept_per_frame_rectangle():
    maps, d = _noisy_maps(n=6)
    gain, offset = fit_profile(maps, d, None, bin=4, reach=32)
    valid = torch.zeros(maps.shape, dtype=torch.bool)
    valid[:3, 10:70, :] = True  # three padded frames of one shape, three that fill the input
    valid[3:] = True
    want = equalise(maps, edge_distance(maps.shape, valid, "cpu"), 4, gain, offset)
    eq = Equaliser(4, gain, offset, capacity=2)
    assert torch.allclose(eq(maps, valid), want, atol=1e-6)
    assert len(eq._planes) == 2  # one per rectangle, not one per frame
    assert torch.allclose(eq(maps, None), equalise(maps, edge_distance(maps.shape, None, "cpu"), 4, gain, offset),
                          atol=1e-6)
    other = valid.clone()
    other[0, :, :5] = False  # a third rectangle: the least recently used one is dropped
    eq(maps[:1], other[:1])
    assert len(eq._planes) == 2
    assert torch.equal(Equaliser(4, (), ())(maps, valid), maps)


def test_a_quiet_edge_is_never_amplified():
    maps, d = _noisy_maps(edge_sd=0.01, edge_mean=0.2)  # a uniform background at the edges
    gain, offset = fit_profile(maps, d, None, bin=4, reach=32)
    assert max(gain) <= 1.0 and gain[0] == 1.0
    eq = equalise(maps, d, 4, gain, offset)
    assert float(eq[d < 4].std()) == pytest.approx(0.01, rel=0.1)  # noise not blown up
    assert float(eq[d < 4].mean()) == pytest.approx(1.0, abs=0.02)  # only moved to the interior's level


def test_the_damping_is_bounded_and_small_frames_are_left_alone():
    maps, d = _noisy_maps(edge_sd=100.0)
    gain, _ = fit_profile(maps, d, None, bin=4, reach=32)
    assert gain[0] == MIN_GAIN
    small = torch.rand(4, 12, 12)
    assert fit_profile(small, edge_distance(small.shape, None, "cpu"), None) == ((), ())
    assert torch.equal(equalise(small, edge_distance(small.shape, None, "cpu"), 4, (), ()), small)


def test_only_the_frames_pixels_are_measured():
    """The mirrored border of a padded input is not part of any band."""
    maps, _ = _noisy_maps(hw=(80, 96))
    valid = torch.zeros(maps.shape, dtype=torch.bool)
    valid[:, :, 16:80] = True  # frames 80 x 64 in a 80 x 96 input
    maps[~valid] = 50.0  # the border: wild values that must not count
    d = edge_distance(maps.shape, valid, "cpu")
    gain, offset = fit_profile(maps, d, valid, bin=4, reach=32)
    assert gain and all(MIN_GAIN < g <= 1.0 for g in gain)
    assert all(abs(o) < 5 for o in offset)


def test_the_manifest_refuses_a_profile_that_would_amplify(checkpoint_copy):
    with pytest.raises(ValueError, match="only damps"):
        EdgeProfile(bin=4, gain=(1.5,), offset=(0.0,))
    with pytest.raises(ValueError, match="gains and"):
        EdgeProfile(bin=4, gain=(0.5, 0.6), offset=(0.0,))
    path = checkpoint_copy / "manifest.json"
    doc = json.loads(path.read_text())
    assert doc["edge_profile"] is not None, "the default fit equalises the edges"
    doc["edge_profile"]["gain"][0] = 2.0
    path.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError):
        read_manifest(checkpoint_copy)


def test_the_engine_judges_the_equalised_map(tiny_fit, tiny_checkpoint):
    """A default fit stores a profile; the engine's maps are the graph's maps equalised, and the
    score reads their maximum (so the verdict, the regions and the heatmap agree)."""
    from inspector.engine.engine import EngineOptions, load_engine
    from inspector.model.nets.discrepancy import image_scores
    from inspector.model.preprocess import prepare_placed
    from trainer.synthetic import make_image

    m = read_manifest(tiny_checkpoint)
    assert m.edge_profile is not None and tiny_fit["edge_gain"] == pytest.approx(list(m.edge_profile.gain), abs=1e-4)
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch"))
    model = engine.model
    imgs = [make_image("spot", size=64, width=16, seed=0, index=i)[0] for i in range(3)]
    x, placements = prepare_placed(imgs, engine.geometry, m.mean, m.std)
    raw, graph_scores = model.maps_and_scores(x)
    maps, scores, _ = engine.placed_maps(imgs)
    valid = engine.geometry.valid_mask(placements)
    assert valid is not None  # the spots are padded: the frames' part of each input is judged
    d = edge_distance(tuple(raw.shape), valid, "cpu")
    want = equalise(raw, d, m.edge_profile.bin, tuple(m.edge_profile.gain), tuple(m.edge_profile.offset))
    assert torch.allclose(maps, want, atol=1e-6)
    assert not torch.allclose(maps, raw)
    weight = 0.5 if model.has_global_part else 1.0
    assert torch.allclose(scores, graph_scores + weight * (image_scores(want, valid=valid) - image_scores(raw)),
                          atol=1e-5)
    # without the profile the engine gives the graph's own maps, scored over the frames' pixels
    model.config = replace(model.config, edge_gain=(), edge_offset=())
    maps0, scores0, _ = engine.placed_maps(imgs)
    assert torch.allclose(maps0, raw)
    assert torch.allclose(scores0, graph_scores + weight * (image_scores(raw, valid=valid) - image_scores(raw)),
                          atol=1e-5)
    assert not torch.allclose(scores0, scores)

