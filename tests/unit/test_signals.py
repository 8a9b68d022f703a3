"""The training-free signals (patch memory, global Gaussian), their fusion with the students' map,
and the threshold calibration that few normals can support."""

import json
import math

import numpy as np
import pytest
import torch

from inspector.model.checkpoint import CheckpointError, read_manifest
from inspector.engine.engine import EngineOptions, load_engine
from inspector.model.nets.signals import GlobalGaussian, PatchMemory, patch_embeddings, pooled_statistics
from inspector.model.preprocess import prepare_batch, prepare_placed
from trainer.fit import FitConfig, fit
from trainer.metrics import calibrate_threshold
from trainer.signals import bank_size, fit_gaussian, gaussian_references, greedy_coreset
from trainer.synthetic import make_image


# ----------------------------------------------------------------------------- coreset and memory


def _clusters(seed=0, n=2000, k=20, dim=16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 10
    sizes = torch.linspace(1, 40, k)  # very uneven cluster sizes: random sampling misses the small ones
    idx = torch.multinomial(sizes / sizes.sum(), n, replacement=True, generator=g)
    return centres[idx] + 0.1 * torch.randn(n, dim, generator=g)


def _coverage(x, subset):
    return float(torch.cdist(x, subset).min(dim=1).values.max())


def test_coreset_is_deterministic_and_covers_better_than_a_random_subset():
    x = _clusters()
    a, b = greedy_coreset(x, 40, projection_dim=8, seed=3), greedy_coreset(x, 40, projection_dim=8, seed=3)
    assert torch.equal(a, b)
    assert a.shape == (40, 16)
    random = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:40]]
    assert _coverage(x, a) < 0.5 * _coverage(x, random)
    assert _coverage(x, a) < 2.0  # every one of the 20 clusters has a representative


def test_coreset_never_asks_for_more_rows_than_there_are():
    x = torch.randn(5, 4)
    assert greedy_coreset(x, 50).shape == (5, 4)
    assert bank_size(10, 0.1) == 1 and bank_size(10**9, 0.1) <= 8192


def test_collect_bounds_the_patches_kept_per_image():
    from trainer.signals import collect

    g = torch.Generator().manual_seed(0)
    batches = [[torch.randn(4, 2, 8, 8, generator=g), torch.randn(4, 3, 4, 4, generator=g),
                torch.randn(4, 5, 2, 2, generator=g)] for _ in range(3)]
    every, stats = collect(batches, (1,), 3, True, True)
    assert every.shape == (12 * 16, 3) and stats.shape == (12, 2 * (2 + 3 + 5))
    some, _ = collect(batches, (1,), 3, True, False, per_image=5, seed=1)
    assert some.shape == (12 * 5, 3)
    rows = {tuple(r.tolist()) for r in every}
    assert all(tuple(r.tolist()) in rows for r in some)  # a subset of the real patches


def test_patch_memory_is_the_nearest_neighbour_distance():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 6, 8, 8, generator=g),
             torch.randn(2, 8, 4, 4, generator=g)]
    mem = PatchMemory(bank_size=30, channels=6 + 8, levels=(1, 2), pool=3, chunk=7)  # several chunks
    mem.bank.copy_(torch.randn(30, 14, generator=g))
    d = mem(feats)
    assert d.shape == (2, 1, 8, 8)
    p = patch_embeddings(feats, (1, 2), 3).permute(0, 2, 3, 1).reshape(-1, 14)
    brute = torch.cdist(p, mem.bank).min(dim=1).values.view(2, 8, 8)
    torch.testing.assert_close(d[:, 0], brute, atol=1e-4, rtol=1e-4)
    mem.bank[5] = p[17]  # a patch in the bank is at distance 0
    assert float(mem(feats).flatten()[17]) < 1e-2


def test_global_gaussian_is_the_mahalanobis_distance_of_pooled_statistics():
    g = torch.Generator().manual_seed(1)
    normals = [[torch.randn(64, 3, 8, 8, generator=g), torch.randn(64, 2, 4, 4, generator=g)]]
    stats = pooled_statistics(normals[0])
    assert stats.shape == (64, 2 * (3 + 2))
    mean, precision = fit_gaussian(stats)
    gauss = GlobalGaussian(10)
    gauss.mean.copy_(mean)
    gauss.precision.copy_(precision)
    probe = [torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 2, 4, 4, generator=g)]
    d = (pooled_statistics(probe) - mean).double()
    expected = torch.sqrt(((d @ precision.double()) * d).sum(1))
    torch.testing.assert_close(gauss(probe).double(), expected, rtol=1e-4, atol=1e-4)
    brighter = [f * 1.5 + 2.0 for f in probe]  # a global change of magnitude: cosine cannot see it
    assert (gauss(brighter) > 3 * gauss(probe)).all()


def _mode(g, n, centre, spread):
    """Teacher-like features of ``n`` images whose pooled statistics sit around one lighting mode."""
    shift = centre + spread * torch.randn(n, 1, 1, 1, generator=g)
    return [shift + torch.randn(n, 3, 8, 8, generator=g), shift + torch.randn(n, 2, 4, 4, generator=g)]


def _neighbourhood_gaussian(train, k):
    stats = pooled_statistics(train)
    mean, precision = fit_gaussian(stats)
    gauss = GlobalGaussian(stats.shape[1], neighbours=k, references=len(stats))
    gauss.mean.copy_(mean)
    gauss.precision.copy_(precision)
    for name, value in zip(("whiten", "reference", "reference_distance"), gaussian_references(stats, mean, precision)):
        getattr(gauss, name).copy_(value)
    return gauss, stats, mean, precision


def test_global_distance_with_neighbours_is_over_the_nearest_normals_distance():
    """The definition: an image's distance over the mean distance of its k nearest training normals,
    nearness measured by the Gaussian's own (Mahalanobis) metric between images."""
    g = torch.Generator().manual_seed(2)
    train = [torch.cat(p) for p in zip(_mode(g, 60, 0.0, 0.2), _mode(g, 20, 3.0, 1.0))]
    gauss, stats, mean, precision = _neighbourhood_gaussian(train, k=3)
    probe = [torch.cat(p) for p in zip(_mode(g, 4, 0.0, 0.2), _mode(g, 4, 3.0, 1.0))]
    x = pooled_statistics(probe).double()
    p, s, mu = precision.double(), stats.double(), mean.double()
    maha = lambda a, b: torch.sqrt(torch.einsum("nd,de,ne->n", a - b, p, a - b).clamp_min(0))  # noqa: E731
    expected = []
    for row in x:
        nearest = maha(s, row.expand_as(s)).topk(3, largest=False).indices
        expected.append(maha(row[None], mu[None])[0] / maha(s[nearest], mu.expand(3, -1)).mean())
    torch.testing.assert_close(gauss(probe).double(), torch.stack(expected), rtol=1e-3, atol=1e-3)


def test_neighbours_judge_a_rarer_spread_out_mode_like_the_common_one():
    """Normals from two lighting set-ups, one rarer and more variable: the plain distance rates the
    rare mode's fresh normals far above the common one's (so the threshold must sit high above
    most normals); over their neighbours' distances both modes score about alike, and a change of
    contrast that neither mode has still scores above every normal of either."""
    g = torch.Generator().manual_seed(3)
    train = [torch.cat(p) for p in zip(_mode(g, 150, 0.0, 0.05), _mode(g, 20, 3.0, 1.0))]
    gauss, *_ = _neighbourhood_gaussian(train, k=3)
    common, rare = _mode(g, 40, 0.0, 0.05), _mode(g, 40, 3.0, 1.0)
    plain = lambda f: gauss.distance(pooled_statistics(f))  # noqa: E731
    assert float(plain(rare).median() / plain(common).median()) > 1.5
    local_ratio = float(gauss(rare).median() / gauss(common).median())
    assert 0.8 < local_ratio < 1.2, local_ratio
    contrast = [f * 1.5 for f in common]
    assert float(gauss(contrast).min()) > max(float(gauss(common).max()), float(gauss(rare).median()))


def test_the_kept_normals_are_a_bounded_seeded_sample():
    stats = torch.randn(50, 6, dtype=torch.float64)
    mean, precision = fit_gaussian(stats)
    whiten, ref, dist = gaussian_references(stats, mean, precision, limit=20, seed=4)
    again = gaussian_references(stats, mean, precision, limit=20, seed=4)[1]
    assert ref.shape == (20, 6) and torch.equal(ref, again)
    torch.testing.assert_close(dist, ref.norm(dim=1))
    rows = ((stats.float() - mean) @ whiten)  # every kept row is one of the normals, whitened
    assert all(bool(torch.isclose(rows, r, atol=1e-4).all(dim=1).any()) for r in ref)
    torch.testing.assert_close(whiten.double() @ whiten.double().T, precision.double(), rtol=1e-4, atol=1e-4)


def test_a_precision_that_is_not_numerically_definite_still_whitens():
    v = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64)).Q
    precision = ((v * torch.tensor([4.0, 2.0, 1.0, 0.5, -1e-4], dtype=torch.float64)) @ v.T).float()
    assert int(torch.linalg.cholesky_ex(precision.double()).info) > 0  # Cholesky refuses it
    whiten, ref, _ = gaussian_references(torch.randn(8, 5), torch.zeros(5), precision)
    torch.testing.assert_close(whiten.double() @ whiten.double().T, precision.double(), atol=1e-3, rtol=1e-3)
    assert torch.isfinite(ref).all()


def test_global_neighbours_need_references():
    with pytest.raises(ValueError, match="neighbours and references"):
        GlobalGaussian(10, neighbours=3, references=0)
    assert GlobalGaussian(10, neighbours=5, references=2).neighbours == 2  # never more than it holds
    assert not any("reference" in k for k in GlobalGaussian(10).state_dict())  # plain: as before


def test_fit_gaussian_refuses_a_single_image():
    with pytest.raises(ValueError, match="at least 2"):
        fit_gaussian(torch.randn(1, 10))


# ----------------------------------------------------------------------------- fused checkpoints


def test_fused_checkpoint_records_its_signals_and_normalises_them(tiny_checkpoint):
    m = read_manifest(tiny_checkpoint)
    assert m.signals is not None and m.signals.memory_bank_size > 0 and m.signals.gaussian
    assert m.signals.memory_levels == (2,)
    assert m.region_threshold is not None and m.calibration["method"] in ("gumbel", "empirical")
    assert m.calibration["region"]["method"] in ("gumbel", "empirical")
    # each part was divided by its own mean on the validation normals: a normal part scores about 1
    assert 0.5 < m.score_stats["mean"] < 1.5


def test_global_change_raises_the_fused_score_more_than_the_students_map(tiny_checkpoint):
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch"))
    m = engine.manifest
    normals = [make_image(None, size=128, seed=0, index=900 + i)[0] for i in range(6)]
    dim = [np.clip(img.astype(np.float32) * 0.7 + 20, 0, 255).astype(np.uint8) for img in normals]
    parts = {k: engine.model.components(prepare_batch(imgs, m.image_size, m.mean, m.std))
             for k, imgs in (("normal", normals), ("dim", dim))}
    ratio_g = float(parts["dim"]["gaussian"].mean() / parts["normal"]["gaussian"].mean())
    ratio_s = float(parts["dim"]["student"].amax((1, 2)).mean() / parts["normal"]["student"].amax((1, 2)).mean())
    assert ratio_g > 1.5 and ratio_g > ratio_s, (ratio_g, ratio_s)


def test_signals_off_gives_the_students_map_alone(synthetic_data, tmp_path):
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=tmp_path / "plain", image_size=32, epochs=1, progress=False,
                  max_train_images=16, memory_bank=False, global_gaussian=False))
    m = read_manifest(tmp_path / "plain")
    assert m.signals is None and m.region_threshold is None
    engine = load_engine(tmp_path / "plain", "cpu", EngineOptions(backend="torch"))
    (r,) = engine.infer([make_image("spot", size=128, seed=0, index=950)[0]])
    assert r.score == pytest.approx(float(r.heatmap.max()), rel=1e-5)


def test_a_checkpoint_written_before_signals_still_loads_and_serves(synthetic_data, tmp_path):
    """A manifest without the new fields (as every checkpoint before them) loads as before."""
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=tmp_path / "old", image_size=32, epochs=1, progress=False,
                  max_train_images=16, memory_bank=False, global_gaussian=False, calibration="empirical"))
    path = tmp_path / "old" / "manifest.json"
    raw = json.loads(path.read_text())
    for key in ("signals", "region_threshold", "calibration"):
        raw.pop(key)
    path.write_text(json.dumps(raw))
    engine = load_engine(tmp_path / "old", "cpu")
    assert engine.region_threshold == engine.threshold
    (r,) = engine.infer([make_image("scratch", size=128, seed=0, index=951)[0]])
    assert r.score == pytest.approx(float(r.heatmap.max()), rel=1e-4)
    assert r.mask.any() == r.defect


def test_the_fit_keeps_the_training_normals_for_the_global_neighbourhood(tiny_checkpoint, synthetic_data, tmp_path):
    m = read_manifest(tiny_checkpoint)
    assert m.signals.gaussian_neighbours == 3  # the default
    assert m.signals.gaussian_references == m.training["train_images"]
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch"))
    assert engine.model.gaussian.reference.shape[0] == m.signals.gaussian_references
    fit(FitConfig(precision_thresholds=False, data=synthetic_data, out=tmp_path / "plain", image_size=32, epochs=1,
                  progress=False, max_train_images=16, memory_bank=False, global_neighbours=0))
    plain = read_manifest(tmp_path / "plain")
    assert plain.signals.gaussian and plain.signals.gaussian_neighbours == 0 and plain.signals.gaussian_references == 0
    assert load_engine(tmp_path / "plain", "cpu").model.gaussian.neighbours == 0
    with pytest.raises(ValueError, match="global_neighbours"):
        fit(FitConfig(data=synthetic_data, out=tmp_path / "bad", epochs=1, global_neighbours=-1))


def test_a_manifest_that_drops_the_neighbourhood_is_refused(checkpoint_copy):
    """The references are weights like the bank: a manifest that does not account for them is
    refused (the running model stays), and one written before they existed means the plain distance."""
    from inspector.model.checkpoint import Signals

    assert Signals(gaussian=True).gaussian_neighbours == 0
    path = checkpoint_copy / "manifest.json"
    raw = json.loads(path.read_text())
    raw["signals"]["gaussian_neighbours"] = raw["signals"]["gaussian_references"] = 0
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_engine(checkpoint_copy, "cpu")


def test_signal_tensors_that_do_not_fit_the_manifest_are_refused(checkpoint_copy):
    path = checkpoint_copy / "manifest.json"
    raw = json.loads(path.read_text())
    raw["signals"]["memory_bank_size"] += 1
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_engine(checkpoint_copy, "cpu")
    raw["signals"]["memory_bank_size"] -= 1
    raw["signals"]["gaussian"] = False
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_engine(checkpoint_copy, "cpu")


def test_warm_start_from_a_fused_checkpoint_refits_the_signals(tiny_checkpoint, synthetic_data, tmp_path):
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=tmp_path / "child", image_size=64, epochs=1, progress=False,
                  init_from=tiny_checkpoint, max_train_images=16))
    child = read_manifest(tmp_path / "child")
    assert child.signals is not None and child.signals.memory_bank_size > 0
    load_engine(tmp_path / "child", "cpu")


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("n", [10, 30, 300])
@pytest.mark.parametrize("dist", ["gumbel", "lognormal"])
def test_threshold_from_few_normals_keeps_near_the_target_false_reject_rate(n, dist):
    """Calibrated on n normals, judged on 200,000 fresh ones from the same law, 200 times over."""
    rng = np.random.default_rng(n)
    draw = (lambda k: rng.gumbel(1.0, 0.1, k)) if dist == "gumbel" else (lambda k: np.exp(rng.normal(0, 0.15, k)))
    fresh = np.sort(draw(200_000))
    target = 0.005

    def achieved(method):
        rates = []
        for _ in range(200):
            thr, _ = calibrate_threshold(draw(n), target, method)
            rates.append(1.0 - np.searchsorted(fresh, thr) / fresh.size)
        return float(np.mean(rates))

    fitted, empirical = achieved("gumbel"), achieved("empirical")
    assert fitted <= 0.02  # the product's bound on false rejects, from as few as 10 normals
    if n <= 30:  # too few normals for the empirical quantile: it is far off, the fit is not
        assert empirical > 0.02 and fitted < 0.5 * empirical
    if dist == "gumbel":  # on its own law the fit is on target
        assert 0.5 * target < fitted < (4.5 if n == 10 else 2.0) * target


def test_auto_calibration_uses_the_empirical_quantile_once_the_tail_is_sampled():
    rng = np.random.default_rng(0)
    thr, info = calibrate_threshold(rng.gumbel(size=300), 0.005)
    assert info["method"] == "gumbel" and info["n"] == 300 and {"loc", "scale"} <= set(info)
    thr, info = calibrate_threshold(rng.gumbel(size=3000), 0.005)
    assert info["method"] == "empirical" and thr == info["empirical_threshold"]


def test_calibration_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="no normal scores"):
        calibrate_threshold(np.array([]), 0.01)
    with pytest.raises(ValueError, match="target_frr"):
        calibrate_threshold(np.ones(5), 0.0)
    with pytest.raises(ValueError, match="unknown calibration"):
        calibrate_threshold(np.ones(5), 0.01, "magic")
    thr, info = calibrate_threshold(np.full(20, 0.7, np.float32), 0.01, "gumbel")  # all equal: just above
    assert thr > 0.7 and info["scale"] == 0.0


def test_scores_read_the_frames_part_of_a_padded_input(tiny_checkpoint):
    """The engine's score of a padded frame equals the fused score computed from the parts over
    the frame's pixels only (the mirrored border does not count), for max and top-k rules (edge
    equalisation off here: tests/unit/test_edges.py checks it on top)."""
    import torch
    from dataclasses import replace

    from inspector.engine.engine import EngineOptions, load_engine
    from inspector.model.geometry import Geometry
    from trainer.synthetic import make_image

    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch"))
    model = engine.model
    g = Geometry(64, 64, "pad")
    engine.geometry = g
    imgs = [make_image("spot", size=64, width=16, seed=0, index=i)[0] for i in range(3)]
    imgs.append(make_image(None, size=64, seed=0, index=9)[0])  # fills the input
    m = engine.manifest
    for mode in ("max", "topk"):
        model.config = replace(model.config, score_mode=mode, topk_fraction=0.05, edge_gain=(), edge_offset=())
        x, placements = prepare_placed(imgs, g, m.mean, m.std)
        valid = g.valid_mask(placements)
        _, want = model.fuse(model.components(x), valid)
        _, whole = model.fuse(model.components(x))
        maps, got, _ = engine.placed_maps(imgs)
        assert torch.allclose(got, want, atol=1e-5), mode
        assert torch.allclose(got[3], whole[3], atol=1e-5)  # nothing padded: unchanged
        assert not torch.allclose(got[:3], whole[:3])  # padded: the border is not scored


# ----------------------------------------------------------------------------- the maps' weights


def test_memory_weight_mixes_the_two_maps_linearly(tiny_checkpoint):
    from dataclasses import replace

    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch"))
    model, m = engine.model, engine.manifest
    images = [make_image("spot", size=128, seed=0, index=960 + i)[0] for i in range(3)]
    parts = model.components(prepare_batch(images, m.image_size, m.mean, m.std))
    cfg = model.config
    student, memory = parts["student"] / cfg.student_scale, parts["memory"] / cfg.memory_scale
    if cfg.norm_map:  # the fit kept the norm ratio: the students' part is its mix with the cosine map
        student = (1 - cfg.norm_weight) * student + cfg.norm_weight * parts["norm"] / cfg.norm_scale
    for w in (0.0, 0.3, 1.0):
        model.config = replace(cfg, memory_weight=w)
        maps, _ = model.fuse(parts)
        torch.testing.assert_close(maps, (1 - w) * student + w * memory)
    model.config = cfg


def painted_square(n: int = 12, size: int = 32):
    """Masks of a square painted on ``n`` frames, and a seeded source of uniform noise maps of
    their size: the raw material of hand-made parts for the weight choosers."""
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, 8:16, 8:16] = True
    return masks, lambda: torch.rand(n, size, size, generator=g)


def test_the_chosen_weight_follows_the_map_that_sees_the_paint(tiny_checkpoint):
    """Hand-made parts: one map marks the painted pixels, the other is noise; the chooser must
    give the heatmap to the map that sees the paint, whichever part that is."""
    from trainer.signals import MEMORY_WEIGHTS, choose_memory_weight

    model = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch")).model
    masks, noise = painted_square()
    gauss = torch.ones(len(masks))
    cfg = model.config
    for seeing, blind, expect in (("memory", "student", lambda x: x > 0.5), ("student", "memory", lambda x: x < 0.5)):
        clean = {seeing: noise() * getattr(cfg, f"{seeing}_scale"), blind: noise() * getattr(cfg, f"{blind}_scale"),
                 "gaussian": gauss * cfg.gaussian_scale}
        painted = {seeing: (noise() + 3.0 * masks) * getattr(cfg, f"{seeing}_scale"),
                   blind: noise() * 4.0 * getattr(cfg, f"{blind}_scale"), "gaussian": gauss * cfg.gaussian_scale}
        weight, table = choose_memory_weight(model, clean, painted, masks)
        assert [r["memory_weight"] for r in table] == list(MEMORY_WEIGHTS)
        assert expect(weight), (seeing, weight, table)
        assert max(r["separation"] for r in table) == next(r["separation"] for r in table if r["memory_weight"] == weight)
        assert choose_memory_weight(model, clean, painted, masks, margin=1.0)[0] == 0.5  # the equal mix stays
    assert model.config == cfg  # trying candidates leaves the model as it was


def test_the_fit_records_its_chosen_memory_weight(tiny_checkpoint):
    from trainer.signals import MEMORY_WEIGHTS

    m = read_manifest(tiny_checkpoint)
    kept_norm = m.signals.norm_weight if m.signals.norm_map else 0.0
    assert sorted({r["norm_weight"] for r in m.metrics["memory_weighing"]}) == [0.0, 0.5]  # both were tried
    table = [r for r in m.metrics["memory_weighing"] if r["norm_weight"] == kept_norm]
    assert [r["memory_weight"] for r in table] == list(MEMORY_WEIGHTS)
    assert m.signals.memory_weight in MEMORY_WEIGHTS
    best = max(r["separation"] for r in table)
    chosen = next(r for r in table if r["memory_weight"] == m.signals.memory_weight)
    equal = next(r for r in table if r["memory_weight"] == 0.5)
    if m.signals.memory_weight == 0.5:  # kept unless another weight is clearly better
        assert best - equal["separation"] <= 0.005
    else:
        assert chosen["separation"] == pytest.approx(best, abs=1e-4) and best - equal["separation"] > 0.005
    engine = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch"))
    assert engine.model.config.memory_weight == m.signals.memory_weight


def test_a_given_memory_weight_is_kept_and_nothing_is_weighed(synthetic_data, tmp_path):
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=tmp_path / "w", image_size=32, epochs=1, progress=False,
                  max_train_images=16, memory_weight=0.2, norm_map="off"))
    m = read_manifest(tmp_path / "w")
    assert m.signals.memory_weight == pytest.approx(0.2) and "memory_weighing" not in m.metrics
    assert not m.signals.norm_map
    # the norm ratio still chosen on painted anomalies, at the given memory weight
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=tmp_path / "wn", image_size=32, epochs=1, progress=False,
                  max_train_images=16, memory_weight=0.2))
    m = read_manifest(tmp_path / "wn")
    assert m.signals.memory_weight == pytest.approx(0.2)
    assert {(r["norm_weight"], r["memory_weight"]) for r in m.metrics["memory_weighing"]} == {(0.0, 0.2), (0.5, 0.2)}
    with pytest.raises(ValueError, match="memory_weight"):
        fit(FitConfig(precision_thresholds=False,
                      data=synthetic_data, out=tmp_path / "bad", image_size=32, epochs=1, progress=False,
                      max_train_images=16, memory_weight=1.5))


def test_the_weight_is_chosen_on_a_bounded_seeded_sample_of_validation_units(synthetic_data, tmp_path, monkeypatch):
    import trainer.fit as fit_module

    seen: list[int] = []
    real = fit_module.choose_map_weights

    def spy(model, clean, painted, masks, valid=None, **kw):
        seen.append(len(masks))
        assert all(len(v) == len(masks) for v in (*clean.values(), *painted.values()))
        return real(model, clean, painted, masks, valid, **kw)

    monkeypatch.setattr(fit_module, "choose_map_weights", spy)
    monkeypatch.setattr(fit_module, "WEIGH_UNITS", 3)
    outs = []
    for run in ("a", "b"):
        fit(FitConfig(precision_thresholds=False,
                      data=synthetic_data, out=tmp_path / run, image_size=32, epochs=1, progress=False,
                      max_train_images=16, val_fraction=0.5))
        outs.append(read_manifest(tmp_path / run).metrics["memory_weighing"])
    assert seen == [3, 3]  # more validation images than that: a sample of 3 was weighed
    assert outs[0] == outs[1]  # the same sample each time (seeded)


def test_a_manifest_written_before_the_weight_fuses_the_maps_equally():
    from inspector.model.checkpoint import Signals

    assert Signals(memory_bank_size=4, gaussian=True).memory_weight == 0.5
    with pytest.raises(ValueError):
        Signals(memory_bank_size=4, memory_weight=1.2)


# ----------------------------------------------------------------------------- the norm-ratio map


def test_the_norm_ratio_map_sees_a_change_of_magnitude_that_the_cosine_cannot():
    from inspector.model.nets.discrepancy import AnomalyMapper

    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, c, s, s, generator=g) for c, s in ((8, 16), (16, 8), (32, 4))]
    mapper = AnomalyMapper(sigma=0.0)
    louder = [[2.0 * t for t in teacher]]  # the same directions at twice the magnitude
    assert float(mapper(teacher, louder, (32, 32)).abs().max()) < 1e-5
    torch.testing.assert_close(mapper.norm_ratio(teacher, louder, (32, 32)),
                               torch.full((2, 32, 32), 3 * math.log(2.0)), atol=1e-4, rtol=1e-4)
    turned = [[t.roll(1, dims=1) for t in teacher]]  # other directions, the same norms
    assert float(mapper.norm_ratio(teacher, turned, (32, 32)).abs().max()) < 1e-4
    assert float(mapper(teacher, turned, (32, 32)).mean()) > 0.5
    # where a feature vector is all zeros the log stays finite
    zero = [[torch.zeros_like(t) for t in teacher]]
    assert torch.isfinite(mapper.norm_ratio(teacher, zero, (32, 32))).all()


def test_the_students_part_mixes_the_norm_ratio_at_its_share(tiny_checkpoint):
    from dataclasses import replace

    model = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch")).model
    cfg = replace(model.config, norm_map=True, norm_scale=0.7, memory_weight=0.4)
    model.config = cfg
    g = torch.Generator().manual_seed(1)
    parts = {k: torch.rand(2, 16, 16, generator=g) for k in ("student", "norm", "memory")}
    for a in (0.0, 0.5, 1.0):
        model.config = replace(cfg, norm_weight=a)
        maps, _ = model.fuse(parts)
        students = (1 - a) * parts["student"] / cfg.student_scale + a * parts["norm"] / 0.7
        torch.testing.assert_close(maps, 0.6 * students + 0.4 * parts["memory"] / cfg.memory_scale)
    model.config = replace(cfg, norm_map=False)
    without = {k: v for k, v in parts.items() if k != "norm"}
    torch.testing.assert_close(model.fuse(without)[0],
                               0.6 * parts["student"] / cfg.student_scale + 0.4 * parts["memory"] / cfg.memory_scale)


def test_the_norm_ratio_is_kept_only_where_it_separates_the_paint(tiny_checkpoint):
    """Hand-made parts: when the norm-ratio map marks the painted pixels and the cosine map does
    not, it is kept; when it is noise, the cosine map stays alone; a large margin keeps it out."""
    from trainer.signals import NORM_WEIGHT, choose_map_weights

    model = load_engine(tiny_checkpoint, "cpu", EngineOptions(backend="torch")).model
    cfg = model.config
    masks, noise = painted_square()
    ones = torch.ones(len(masks))

    def parts(norm_sees: bool, painted: bool) -> dict[str, torch.Tensor]:
        paint = 3.0 * masks if painted else 0.0
        return {"student": (noise() + (0.3 * masks if painted else 0.0)) * cfg.student_scale,
                "norm": (noise() + (paint if norm_sees else 0.0)) * cfg.norm_scale,
                "memory": noise() * cfg.memory_scale, "gaussian": ones * cfg.gaussian_scale}

    a, w_, table = choose_map_weights(model, parts(True, False), parts(True, True), masks)
    assert a == NORM_WEIGHT and {r["norm_weight"] for r in table} == {0.0, NORM_WEIGHT}
    assert choose_map_weights(model, parts(True, False), parts(True, True), masks, margin=1.0)[0] == 0.0
    a, _, _ = choose_map_weights(model, parts(False, False), parts(False, True), masks)
    assert a == 0.0
    a, w_, table = choose_map_weights(model, parts(True, False), parts(True, True), masks, memory_weight=0.3)
    assert w_ == 0.3 and {r["memory_weight"] for r in table} == {0.3}
    assert model.config == cfg  # trying candidates leaves the model as it was


def test_a_fit_with_the_norm_map_records_it_and_serves_it_through_onnx(synthetic_data, tmp_path):
    fit(FitConfig(precision_thresholds=False, data=synthetic_data, out=tmp_path / "n", image_size=32, epochs=1,
                  progress=False, max_train_images=16, norm_map="on"))
    m = read_manifest(tmp_path / "n")
    assert m.signals.norm_map and m.signals.norm_weight == 0.5 and m.signals.norm_scale > 0
    images = [make_image("spot", size=128, seed=0, index=970 + i)[0] for i in range(3)]
    ref = load_engine(tmp_path / "n", "cpu", EngineOptions(backend="torch"))
    assert "norm" in ref.model.components(prepare_batch(images, m.image_size, m.mean, m.std))
    onnx = load_engine(tmp_path / "n", "cpu", EngineOptions(backend="onnx"))
    for a, b in zip(ref.infer(images), onnx.infer(images)):
        assert b.score == pytest.approx(a.score, rel=1e-4)
        assert np.allclose(a.heatmap, b.heatmap, atol=1e-4)
    fit(FitConfig(precision_thresholds=False, data=synthetic_data, out=tmp_path / "off", image_size=32, epochs=1,
                  progress=False, max_train_images=16, norm_map="off"))
    off = load_engine(tmp_path / "off", "cpu", EngineOptions(backend="torch"))
    assert not off.manifest.signals.norm_map
    assert "norm" not in off.model.components(prepare_batch(images, m.image_size, m.mean, m.std))
    with pytest.raises(ValueError, match="norm_map"):
        fit(FitConfig(precision_thresholds=False, data=synthetic_data, out=tmp_path / "bad", image_size=32,
                      epochs=1, progress=False, max_train_images=16, norm_map="maybe"))


def test_a_manifest_written_before_the_norm_ratio_reads_the_cosine_map_alone():
    from inspector.model.checkpoint import Signals

    assert Signals(memory_bank_size=4, gaussian=True).norm_map is False
    with pytest.raises(ValueError):
        Signals(memory_bank_size=4, norm_weight=1.5)
