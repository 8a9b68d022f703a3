"""The full-resolution local-contrast map (``inspector.model.nets.contrast``): what it sees, what it
ignores, and how a fit stores it and the engine serves it."""

import json

import cv2
import numpy as np
import pytest
import torch

from inspector.engine.capabilities import openvino_available, openvino_cpu_bf16
from inspector.engine.engine import EngineOptions, load_engine
from inspector.model.checkpoint import CheckpointError, read_manifest, read_weights
from inspector.model.nets.contrast import WHITENED_SIZE, LocalContrast, line_kernels, whitened_line_kernels
from inspector.model.preprocess import prepare_batch
from trainer.fit import FitConfig, fit
from trainer.refresh.job import _fit_config
from trainer.settings import TrainerSettings
from trainer.signals import align_contrast, contrast_rms, residual_spectrum
from trainer.synthetic import make_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _grain(seed: int, hw=(160, 160), std=6.0, noise=0.0) -> np.ndarray:
    """A grey surface: 2-3 px grain of ``std`` grey levels under a slow illumination change, with
    ``noise`` grey levels of white sensor noise (8-bit BGR)."""
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.normal(0, 1, hw).astype(np.float32), (0, 0), 1.2)
    g *= std / g.std()
    light = cv2.resize(rng.normal(0, 1, (3, 3)).astype(np.float32), hw[::-1], interpolation=cv2.INTER_CUBIC)
    grey = 128 + g + 10 * light + noise * rng.normal(0, 1, hw).astype(np.float32)
    return cv2.cvtColor(np.clip(np.round(grey), 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def _paint(img: np.ndarray, mask: np.ndarray, delta: float) -> np.ndarray:
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.8)
    return np.clip(img.astype(np.float32) + delta * soft[..., None], 0, 255).astype(np.uint8)


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return prepare_batch(images, images[0].shape[0], MEAN, STD)


@pytest.fixture(scope="module")
def fitted() -> LocalContrast:
    c = LocalContrast(STD)
    c.rms.copy_(contrast_rms(c, _tensor([_grain(s) for s in range(6)]), "cpu"))
    return c


def _fitted(lines: str, train: list[np.ndarray]) -> LocalContrast:
    c = LocalContrast(STD, lines=lines)
    x = _tensor(train)
    if lines == "whitened":
        c.set_whitening(residual_spectrum(c, x, "cpu"))
    c.rms.copy_(contrast_rms(c, x, "cpu"))
    return c


def _peak(c: LocalContrast, images: list[np.ndarray], margin: int = 8) -> np.ndarray:
    with torch.no_grad():
        m = c(_tensor(images))[:, 0, margin:-margin, margin:-margin]
    return m.amax(dim=(1, 2)).numpy()


def test_line_kernels_have_unit_sum_and_turn_with_their_orientation():
    k = line_kernels(11, 0.8, 4)
    assert k.shape[0] == 4 and k.shape[-1] == k.shape[-2]
    assert torch.allclose(k.sum(dim=(1, 2, 3)), torch.ones(4))
    c = k.shape[-1] // 2
    horizontal, vertical = k[0, 0], k[2, 0]  # 0 and 90 degrees
    assert horizontal[c, c + 4] > 10 * horizontal[c + 4, c]
    assert torch.allclose(vertical, horizontal.T, atol=1e-6)


def test_normal_surfaces_read_near_the_filters_normal_level(fitted):
    peaks = _peak(fitted, [_grain(100 + s) for s in range(4)])
    assert np.all(peaks > 2) and np.all(peaks < 7), peaks  # a few rms above the mean, never far
    with torch.no_grad():
        mean = float(fitted(_tensor([_grain(100)])).mean())
    assert 0.5 < mean < 1.5


def test_small_spots_and_two_pixel_lines_stand_out_of_the_grain(fitted):
    normal = _peak(fitted, [_grain(200 + s) for s in range(6)]).max()
    base = _grain(300)
    spot = np.zeros(base.shape[:2], np.uint8)
    cv2.circle(spot, (80, 80), 2, 1, -1)  # a 5 px spot
    line = np.zeros(base.shape[:2], np.uint8)
    cv2.line(line, (60, 70), (90, 82), 1, 2)  # a 30 px scratch, 2 px wide
    peaks = _peak(fitted, [_paint(base, spot, 45), _paint(base, line, -45)])
    assert np.all(peaks > 1.25 * normal), (peaks, normal)
    with torch.no_grad():
        m = fitted(_tensor([_paint(base, spot, 45)]))[0, 0]
    y, x = np.unravel_index(int(m.argmax()), m.shape)
    assert abs(y - 80) <= 3 and abs(x - 80) <= 3  # it points at the spot


def test_whitened_lines_find_one_pixel_scratches_that_plain_lines_lose_in_the_grain():
    """The bench's hard case (bench/contrast_filters.py): a 45-level scratch 1 px wide and 12 px long
    on a 6-level grain with 1.5 levels of sensor noise. Each bank is judged against its own largest
    value over good frames, as the bench and the fused threshold judge it."""
    hw = (192, 192)
    train = [_grain(s, hw, noise=1.5) for s in range(8)]
    good = [_grain(100 + s, hw, noise=1.5) for s in range(12)]
    scratches = []
    for s in range(6):
        mask = np.zeros(hw, np.uint8)
        angle = np.pi * s / 6
        dx, dy = int(round(6 * np.cos(angle))), int(round(6 * np.sin(angle)))
        cv2.line(mask, (96 - dx, 96 - dy), (96 + dx, 96 + dy), 1, 1)
        scratches.append(_paint(_grain(200 + s, hw), mask, -45))
    scratches = [np.clip(np.round(img.astype(np.float32) + 1.5 * np.random.default_rng(300 + i).normal(
        0, 1, img.shape[:2])[..., None]), 0, 255).astype(np.uint8) for i, img in enumerate(scratches)]
    found = {}
    for lines in ("plain", "whitened"):
        c = _fitted(lines, train)
        found[lines] = int((_peak(c, scratches) > _peak(c, good).max()).sum())
    assert found["whitened"] >= 5 and found["whitened"] >= found["plain"] + 3, found


def test_whitened_lines_make_no_false_peak_at_the_inputs_edges():
    """Cut short by the edge, a whitened line would read the grain about twice as high as inside
    (a false peak on every tile's border); the band takes its nearest whole response instead."""
    train = [_grain(s, (128, 128), noise=1.5) for s in range(8)]
    c = _fitted("whitened", train)
    with torch.no_grad():
        lines = [(c.responses(_tensor([_grain(500 + s, (128, 128), noise=1.5)])) / c.rms.view(1, -1, 1, 1))[0, 1:]
                 .amax(dim=0) for s in range(8)]
    edge = max(float(torch.cat([m[:4].flatten(), m[-4:].flatten(), m[:, :4].flatten(), m[:, -4:].flatten()]).max())
               for m in lines)
    inside = max(float(m[4:-4, 4:-4].max()) for m in lines)
    assert edge <= 1.05 * inside, (edge, inside)


def test_under_a_flat_spectrum_the_whitened_lines_are_the_line_shapes():
    """White noise needs no whitening: the matched filter is the shape itself (cropped, unit norm)."""
    k = whitened_line_kernels(torch.ones(64, 64), 11, 0.8, 4)
    assert k.shape == (4, 1, WHITENED_SIZE, WHITENED_SIZE)
    assert torch.allclose(k.flatten(1).norm(dim=1), torch.ones(4), atol=1e-5)
    shapes = line_kernels(11, 0.8, 4)
    r = (shapes.shape[-1] - WHITENED_SIZE) // 2
    shapes = shapes[..., r:r + WHITENED_SIZE, r:r + WHITENED_SIZE]
    expected = shapes / shapes.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    # the zero frequency is dropped (the residual has none): the kernel loses its mean over the
    # 64 px grid, a small offset
    assert (k - expected).abs().max() < 0.02, float((k - expected).abs().max())
    assert k[0, 0].argmax() == k[0, 0].numel() // 2  # centred on the line


def test_whitening_lifts_the_frequencies_the_grain_lacks():
    """Against a grain strong at low and weak at high frequencies the kernel listens higher: across
    the line, its response at 1/4 cycle a pixel grows relative to its response at 1/16."""
    f = torch.fft.fftfreq(64).abs()
    spectrum = torch.exp(-(2 * np.pi * 1.2) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2)) + 0.01
    ratios = []
    for s in (torch.ones(64, 64), spectrum):
        k = whitened_line_kernels(s, 11, 0.8, 1)[0, 0].double()  # orientation 0: along x
        across = torch.fft.fft(k.sum(dim=1), n=64).abs()  # the profile across the line, y
        ratios.append(float(across[16] / across[4]))
    assert ratios[1] > 2 * ratios[0], ratios


def test_the_spectrum_reads_only_the_frames_pixels_and_refuses_what_it_cannot_fit():
    c = LocalContrast(STD, lines="whitened")
    x = _tensor([_grain(1, (128, 128))])
    valid = torch.zeros(1, 128, 128, dtype=torch.bool)
    valid[:, :, :64] = True
    noisy = x.clone()
    noisy[..., 64:] = torch.randn_like(noisy[..., 64:]) * 3
    clean = residual_spectrum(c, x, "cpu", valid)
    masked, whole = residual_spectrum(c, noisy, "cpu", valid), residual_spectrum(c, noisy, "cpu")
    assert float((masked - clean).abs().mean()) < 0.2 * float((whole - clean).abs().mean())
    flat = np.full((64, 64, 3), 128, np.uint8)
    with pytest.raises(ValueError, match="no power"):
        residual_spectrum(c, _tensor([flat, flat]), "cpu")
    with pytest.raises(ValueError, match="at least 32 px"):
        residual_spectrum(c, _tensor([_grain(2, (24, 24))]), "cpu")
    with pytest.raises(ValueError, match="plain contrast lines are not fitted"):
        LocalContrast(STD).set_whitening(clean)
    with pytest.raises(ValueError, match="unknown contrast lines"):
        LocalContrast(STD, lines="curved")  # type: ignore[arg-type]


def test_illumination_and_uniform_brightness_changes_are_not_contrast(fitted):
    base = _grain(400)
    ramp = np.clip(base.astype(np.float32) + np.linspace(-40, 40, base.shape[1])[None, :, None], 0, 255)
    brighter = np.clip(base.astype(np.float32) + 25, 0, 255)
    peaks = _peak(fitted, [base, ramp.astype(np.uint8), brighter.astype(np.uint8)])
    assert np.all(np.abs(peaks[1:] - peaks[0]) < 0.1 * peaks[0]), peaks


def test_a_flat_training_set_cannot_normalise_the_filters():
    c = LocalContrast(STD)
    flat = np.full((64, 64, 3), 128, np.uint8)
    with pytest.raises(ValueError, match="no response"):
        contrast_rms(c, _tensor([flat, flat]), "cpu")


def test_rms_reads_only_the_frames_pixels():
    c = LocalContrast(STD)
    x = _tensor([_grain(1, (64, 64))])
    valid = torch.zeros(1, 64, 64, dtype=torch.bool)
    valid[:, :, :32] = True
    noisy = x.clone()
    noisy[..., 32:] = torch.randn_like(noisy[..., 32:]) * 3  # outside the frame: ignored
    clean = contrast_rms(c, x, "cpu", valid)
    masked, whole = contrast_rms(c, noisy, "cpu", valid), contrast_rms(c, noisy, "cpu")
    # the noise reaches into the frame only as far as the filters do
    assert bool(((masked - clean).abs() < 0.5 * (whole - clean).abs()).all()), (clean, masked, whole)


@pytest.fixture(scope="module")
def contrast_checkpoint(synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("contrast") / "ckpt"
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=out, image_size=32, epochs=1, progress=False, max_train_images=16,
                  contrast_map=True))
    return out


def test_a_fit_with_the_contrast_map_stores_it_with_its_normal_levels(contrast_checkpoint):
    m = read_manifest(contrast_checkpoint)
    assert m.signals is not None and m.signals.contrast and m.signals.contrast_scale > 0
    assert m.signals.contrast_lines == "whitened"  # the default
    weights = read_weights(contrast_checkpoint, m)
    rms, lines = weights["signals.contrast.rms"], weights["signals.contrast.lines"]
    assert rms.shape == (13,) and bool((rms > 0).all())
    assert lines.shape == (12, 1, WHITENED_SIZE, WHITENED_SIZE) and bool(torch.isfinite(lines).all())
    assert torch.allclose(lines.flatten(1).norm(dim=1), torch.ones(12), atol=1e-4)


@pytest.fixture(scope="module")
def plain_contrast_checkpoint(synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("contrast-plain") / "ckpt"
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=out, image_size=32, epochs=1, progress=False, max_train_images=16,
                  contrast_map=True, contrast_lines="plain"))
    return out


def test_a_checkpoint_from_before_whitened_lines_serves_its_plain_lines(plain_contrast_checkpoint, tmp_path):
    """Manifests written before the field existed have no ``contrast_lines``: they read plain, and
    their weights hold no line kernels (the shapes are computed)."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(plain_contrast_checkpoint, old)
    raw = json.loads((old / "manifest.json").read_text())
    assert raw["signals"].pop("contrast_lines") == "plain"
    (old / "manifest.json").write_text(json.dumps(raw))
    assert "signals.contrast.lines" not in read_weights(old, read_manifest(old))
    images = [make_image(kind, size=128, seed=0, index=975 + i)[0] for i, kind in enumerate(("spot", "scratch", None))]
    now = load_engine(plain_contrast_checkpoint, "cpu", EngineOptions(backend="torch")).infer(images)
    before = load_engine(old, "cpu", EngineOptions(backend="torch")).infer(images)
    assert [a.score for a in now] == [b.score for b in before]
    # claiming whitened lines that the weights lack is refused
    raw["signals"]["contrast_lines"] = "whitened"
    (old / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_engine(old, "cpu")


def test_a_bad_contrast_lines_choice_is_refused(synthetic_data, tmp_path):
    with pytest.raises(ValueError, match="contrast_lines must be one of"):
        fit(FitConfig(data=synthetic_data, out=tmp_path / "x", image_size=32, epochs=1, progress=False,
                      contrast_map=True, contrast_lines="curved"))


def test_a_refresh_keeps_the_live_models_contrast_map(contrast_checkpoint, plain_contrast_checkpoint,
                                                    tiny_checkpoint, tmp_path):
    settings = TrainerSettings()
    for ckpt, expected in ((contrast_checkpoint, (True, "whitened")), (plain_contrast_checkpoint, (True, "plain")),
                           (tiny_checkpoint, (False, None))):
        cfg = _fit_config(settings, "m", tmp_path, ckpt, read_manifest(ckpt), warm=False)
        assert cfg.contrast_map is expected[0]
        if expected[1]:
            assert cfg.contrast_lines == expected[1]


def test_the_heatmap_is_the_larger_of_the_mix_and_the_contrast_map(contrast_checkpoint):
    engine = load_engine(contrast_checkpoint, "cpu", EngineOptions(backend="torch"))
    model, m = engine.model, engine.manifest
    x = prepare_batch([make_image("spot", size=128, seed=0, index=960 + i)[0] for i in range(3)],
                      m.image_size, m.mean, m.std)
    parts = model.components(x)
    maps, _ = model.fuse(parts)
    cfg = model.config
    w = cfg.memory_weight
    mix = (1 - w) * parts["student"] / cfg.student_scale + w * parts["memory"] / cfg.memory_scale
    assert torch.allclose(maps, torch.maximum(mix, parts["contrast"] / cfg.contrast_scale), atol=1e-6)
    assert bool((maps > mix + 1e-6).any())  # the contrast map does lift some pixels


def test_the_exported_graph_computes_the_contrast_map_too(contrast_checkpoint):
    images = [make_image(kind, size=128, seed=0, index=970 + i)[0] for i, kind in enumerate(("spot", "scratch", None))]
    ref = load_engine(contrast_checkpoint, "cpu", EngineOptions(backend="torch")).infer(images)
    graph = load_engine(contrast_checkpoint, "cpu", EngineOptions(backend="onnx")).infer(images)
    for a, b in zip(ref, graph):
        assert b.score == pytest.approx(a.score, rel=1e-4)
        assert np.allclose(a.heatmap, b.heatmap, atol=1e-4)


def test_aligning_puts_the_contrast_maps_normal_extreme_at_the_mixs(contrast_checkpoint):
    engine = load_engine(contrast_checkpoint, "cpu", EngineOptions(backend="torch"))
    model, m = engine.model, engine.manifest
    normals = [make_image(None, size=128, seed=0, index=990 + i)[0] for i in range(5)]
    x = prepare_batch(normals, m.image_size, m.mean, m.std)
    contrast_peak, mix_peak = align_contrast(model, x, "cpu")
    parts = model.components(x)
    mix, _ = model.fuse({k: parts[k] for k in ("student", "memory")})
    assert float((parts["contrast"] / model.config.contrast_scale).max()) == pytest.approx(float(mix.max()), rel=1e-5)
    assert float(mix.max()) == pytest.approx(mix_peak, rel=1e-5) and contrast_peak > 0


@pytest.mark.skipif(not (openvino_available() and openvino_cpu_bf16()), reason="needs OpenVINO and a bf16 CPU")
def test_the_contrast_map_keeps_its_precision_in_a_bf16_graph(contrast_checkpoint):
    """The residual is formed near zero, so a bf16 graph keeps it: no fallback, scores close."""
    from inspector.engine.backends.openvino import BF16_TOLERANCE

    images = [make_image(kind, size=128, seed=0, index=980 + i)[0] for i, kind in enumerate(("spot", "scratch", None))]
    ref = load_engine(contrast_checkpoint, "cpu", EngineOptions(backend="torch")).infer(images)
    engine = load_engine(contrast_checkpoint, "cpu", EngineOptions(backend="openvino"))
    assert engine.plan.describe() == "openvino-bf16"
    scores, ref_scores = np.array([r.score for r in engine.infer(images)]), np.array([r.score for r in ref])
    assert np.abs(scores - ref_scores).max() <= BF16_TOLERANCE * np.abs(ref_scores).max()


def test_a_manifest_that_claims_a_contrast_map_its_weights_lack_is_refused(checkpoint_copy):
    path = checkpoint_copy / "manifest.json"
    raw = json.loads(path.read_text())
    raw["signals"]["contrast"] = True
    path.write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_engine(checkpoint_copy, "cpu")
