"""Fitting the training-free signals of ``inspector.model.nets.signals`` on normal images.

The patch memory is a greedy (k-center) coreset of the training patches, chosen in a random
projection as PatchCore does; the global Gaussian is fitted with Ledoit-Wolf shrinkage, which
stays well-conditioned when there are fewer images than dimensions. The fusion normalisers are
the mean image score of each part on the held-out validation normals (never the training images
the signals were fitted on, whose scores are optimistic). The local-contrast map
(``inspector.model.nets.contrast``) needs only each filter's normal level: its root mean square
response on the training normals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from inspector.model.nets.contrast import LocalContrast
from inspector.model.nets.model import DiscrepancyModel, ModelConfig
from inspector.model.nets.signals import GlobalGaussian, patch_embeddings, pooled_statistics

# PatchCore keeps 10 % of the patches (1 % loses little); the cap bounds the per-frame cost
# (positions × bank rows × channels: 0.47 GFLOP for a 256 px frame with the lite0 teacher) and the
# greedy selection's time.
DEFAULT_CORESET_FRACTION = 0.1
MAX_BANK = 8192
MAX_CANDIDATES = 200_000  # the coreset is chosen among at most this many random patches
# Training normals kept to judge the global distance against (a seeded random sample beyond it,
# which keeps their density, where a coreset would favour the outlying ones): 5.8 MB and 1.4 MFLOP
# an image with lite0's 352 statistics, whatever the training folder's size.
MAX_REFERENCES = 4096
# Below this root mean square response (unit-range grey levels: 1/40 of an 8-bit level) the normals
# show no texture or noise at all to scale the contrast filters by (a synthetic flat image).
MIN_CONTRAST_RMS = 1e-4


def greedy_coreset(x: torch.Tensor, n: int, projection_dim: int = 64, seed: int = 0,
                   max_candidates: int = MAX_CANDIDATES) -> torch.Tensor:
    """``n`` rows of ``x`` (N, C) chosen so that every row is near one of them (k-center greedy)."""
    g = torch.Generator().manual_seed(seed)
    if len(x) > max_candidates:
        x = x[torch.randperm(len(x), generator=g)[:max_candidates]]
    n = min(n, len(x))
    z = x
    if x.shape[1] > projection_dim:  # Johnson-Lindenstrauss: distances kept, 2-3x less work
        z = x @ (torch.randn(x.shape[1], projection_dim, generator=g) / math.sqrt(projection_dim))
    zn = z.pow(2).sum(dim=1)
    chosen = [int(torch.randint(len(z), (1,), generator=g))]
    nearest = zn - 2.0 * (z @ z[chosen[0]]) + zn[chosen[0]]
    for _ in range(n - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        torch.minimum(nearest, zn - 2.0 * (z @ z[i]) + zn[i], out=nearest)
    return x[torch.tensor(chosen)].contiguous()


def bank_size(n_patches: int, fraction: float) -> int:
    return max(1, min(MAX_BANK, int(round(n_patches * fraction))))


@torch.no_grad()
def collect(batches: Iterable[list[torch.Tensor]], levels: tuple[int, ...], pool: int, memory: bool,
            gaussian: bool, per_image: int | None = None,
            seed: int = 0, valid: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One pass over teacher feature batches of the training normals → (patch embeddings
    (M, C) or None, pooled statistics (N, D) or None), on the CPU. ``per_image`` keeps at most that
    many random positions of each image, so memory stays bounded on large training sets. ``valid``
    (N,H,W bool, in the batches' order): where each frame lies in its padded input; the memory
    keeps patches of the frame only, not of the mirrored border."""
    g = torch.Generator().manual_seed(seed)
    patches, stats = [], []
    seen = 0
    for feats in batches:
        feats = [f.float() for f in feats]
        b = feats[0].shape[0]
        if memory:
            p = patch_embeddings(feats, levels, pool)
            _, c, h, w = p.shape
            p = p.permute(0, 2, 3, 1).reshape(b, h * w, c).cpu()
            keep_pos = None
            if valid is not None:  # a patch whose cell holds any frame pixel (edge cells see the border too)
                v = F.adaptive_max_pool2d(valid[seen:seen + b, None].float(), (h, w))
                keep_pos = v.view(b, h * w) > 0.5
            for j in range(b):
                rows = p[j] if keep_pos is None else p[j][keep_pos[j]]
                if per_image is not None and per_image < len(rows):
                    rows = rows[torch.randperm(len(rows), generator=g)[:per_image]]
                patches.append(rows)
        if gaussian:
            stats.append(pooled_statistics(feats).cpu())
        seen += b
    return (torch.cat(patches) if patches else None), (torch.cat(stats) if stats else None)


@torch.no_grad()
def contrast_rms(contrast: LocalContrast, images: torch.Tensor, device, valid: torch.Tensor | None = None,
                 batch: int = 16) -> torch.Tensor:
    """Each contrast filter's root mean square response over the frame pixels (``valid``) of the
    training normals ``images`` (N,3,H,W, model input): what the normal surface reaches."""
    total = torch.zeros(contrast.filters, dtype=torch.float64)
    count = 0.0
    for i in range(0, len(images), batch):
        r = contrast.responses(images[i:i + batch].to(device)).double().pow(2)
        if valid is None:
            total += r.sum(dim=(0, 2, 3)).cpu()
            count += r.shape[0] * r.shape[2] * r.shape[3]
        else:
            v = valid[i:i + batch, None].to(r.device, r.dtype)
            total += (r * v).sum(dim=(0, 2, 3)).cpu()
            count += float(v.sum())
    rms = (total / max(count, 1.0)).sqrt().float()
    if not bool(torch.isfinite(rms).all()) or bool((rms < MIN_CONTRAST_RMS).any()):
        raise ValueError("the training normals give the local-contrast filters no response (a flat image?): "
                         "cannot normalise them")
    return rms


SPECTRUM_WINDOW = 64  # px: the windows the residual's power spectrum is averaged over (32 on smaller inputs)
SPECTRUM_IMAGES = 256  # at most this many training normals, spread evenly, estimate it


@torch.no_grad()
def residual_spectrum(contrast: LocalContrast, images: torch.Tensor, device, valid: torch.Tensor | None = None,
                      batch: int = 16) -> torch.Tensor:
    """The power spectrum (n×n FFT grid) of the contrast map's residual on the training normals
    ``images`` (N,3,H,W, model input; at most ``SPECTRUM_IMAGES`` of them, spread evenly), their
    pixels outside the frame (``valid``) left out: what ``LocalContrast.set_whitening`` divides by."""
    h, w = images.shape[-2:]
    n = SPECTRUM_WINDOW if min(h, w) >= SPECTRUM_WINDOW else 32
    if min(h, w) < n:
        raise ValueError(f"whitened contrast lines need a model input of at least {n} px, not {h}x{w}")
    keep = torch.linspace(0, len(images) - 1, min(len(images), SPECTRUM_IMAGES)).round().long().unique()
    residuals = ((contrast.residual(images[idx].to(device))[:, 0], None if valid is None else valid[idx])
                 for idx in keep.split(batch))
    return welch_spectrum(residuals, n)


@torch.no_grad()
def welch_spectrum(residuals: Iterable[tuple[torch.Tensor, torch.Tensor | None]], n: int) -> torch.Tensor:
    """Welch's estimate of the power spectrum (n×n FFT grid, zero frequency at [0, 0]) of zero-mean
    residual images (B,H,W), each with its frame pixels (B,H,W bool, or None: all): Hann-windowed
    n-px windows at half-window steps, pixels outside the frame left out, windows mostly outside skipped."""
    hann = torch.hann_window(n, periodic=False, dtype=torch.float64)
    taper = hann[:, None] * hann[None, :]
    power = torch.zeros(n, n, dtype=torch.float64)
    energy = 0.0
    for r, v in residuals:
        r = r.detach().double().cpu()
        v = torch.ones_like(r) if v is None else v.to(r.device, torch.float64)
        windows = r.unfold(1, n, n // 2).unfold(2, n, n // 2).reshape(-1, n, n)
        inside = v.unfold(1, n, n // 2).unfold(2, n, n // 2).reshape(-1, n, n)
        used = inside.mean(dim=(1, 2)) >= 0.5
        windows, weight = windows[used], inside[used] * taper
        if not len(windows):
            continue
        mean = (windows * weight).sum(dim=(1, 2), keepdim=True) / weight.sum(dim=(1, 2), keepdim=True)
        power += (torch.fft.fft2((windows - mean) * weight).abs() ** 2).sum(0)
        energy += float((weight ** 2).sum())
    if energy <= 0:
        raise ValueError("no window of the training normals lies inside their frames: cannot fit the whitened "
                         "contrast lines")
    spectrum = power / energy
    if not bool(torch.isfinite(spectrum).all()) or float(spectrum.median()) <= 0:
        raise ValueError("the training normals give the contrast residual no power (a flat image?): "
                         "cannot whiten the lines")
    return spectrum


def fit_gaussian(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, precision) of pooled statistics (N, D) of the training normals (Ledoit-Wolf)."""
    from sklearn.covariance import LedoitWolf

    if len(stats) < 2:
        raise ValueError("the global Gaussian needs at least 2 training images")
    lw = LedoitWolf().fit(stats.double().numpy())
    return torch.from_numpy(lw.location_).float(), torch.from_numpy(lw.precision_).float()


def gaussian_references(stats: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor,
                        limit: int = MAX_REFERENCES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``GlobalGaussian`` needs to judge an image against its nearest normals: the whitening
    ``L`` (precision = L Lᵀ), the training normals' statistics whitened, ``(stats − mean) L``, and
    their distances to the Gaussian (each row's length); at most ``limit`` normals, a seeded sample."""
    if len(stats) > limit:
        stats = stats[torch.randperm(len(stats), generator=torch.Generator().manual_seed(seed))[:limit]]
    p = precision.double()
    whiten, info = torch.linalg.cholesky_ex(p)
    if int(info):  # not numerically positive definite in float32: any L with L Lᵀ = P will do
        w, v = torch.linalg.eigh(p)
        whiten = v * w.clamp_min(float(w.max()) * 1e-12).sqrt()
    reference = (stats.double() - mean.double()) @ whiten
    return whiten.float(), reference.float(), reference.norm(dim=1).float()


@torch.no_grad()
def set_gaussian(gauss: GlobalGaussian, stats: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor,
                 seed: int = 0) -> None:
    """Put a Gaussian fitted on the training normals' pooled statistics ``stats`` (``fit_gaussian``)
    into ``gauss``, and the normals its neighbourhood is judged against when it has one."""
    gauss.mean.copy_(mean)
    gauss.precision.copy_(precision)
    if gauss.neighbours:
        for name, value in zip(("whiten", "reference", "reference_distance"),
                               gaussian_references(stats, mean, precision, seed=seed)):
            getattr(gauss, name).copy_(value)


@torch.no_grad()
def validation_parts(model: DiscrepancyModel, x_val: torch.Tensor, device, batch: int = 32,
                     valid: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Each part's image score on the validation normals: the students' and memory map's top-k
    (or max, per the config) over the frame's pixels (``valid``), and the global distance."""
    from inspector.model.nets.discrepancy import image_scores

    cfg = model.config
    model.eval()
    acc: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x_val), batch):
        parts = model.components(x_val[i:i + batch].to(device))
        for name, v in parts.items():
            vi = None if valid is None else valid[i:i + batch].to(v.device)
            s = v if v.ndim == 1 else image_scores(v, cfg.score_mode, cfg.topk_fraction, vi)
            acc.setdefault(name, []).append(s.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in acc.items()}


def fit_signals(model: DiscrepancyModel, train_batches: Iterable[list[torch.Tensor]], x_val: torch.Tensor, device, *,
                memory: bool, gaussian: bool, coreset_fraction: float = DEFAULT_CORESET_FRACTION,
                seed: int = 0, n_images: int | None = None, log=None, valid_train: torch.Tensor | None = None,
                valid_val: torch.Tensor | None = None, contrast_images: torch.Tensor | None = None,
                gaussian_neighbours: int = 0, norm_map: bool = False,
                contrast_lines: str = "whitened") -> DiscrepancyModel:
    """A model with the requested signals fitted on ``train_batches`` (teacher feature batches of
    the training normals; ``n_images`` of them) and the fusion normalised on ``x_val`` (validation
    normals). ``contrast_images`` (the training normals, model input): also fit and fuse the
    local-contrast map on them. ``gaussian_neighbours`` > 0: the global distance is divided by that
    of the image's nearest training normals (``GlobalGaussian``), which are kept for it. ``norm_map``:
    the students' part also reads their features' norm ratio (normalised here; its share is chosen
    by ``choose_map_weights``). ``contrast_lines``: the contrast map's lines, plain or whitened (fitted
    here on the same normals, ``residual_spectrum``)."""
    cfg = model.config
    new_cfg = replace(cfg, memory_bank_size=0, gaussian=False, gaussian_neighbours=0, gaussian_references=0,
                      contrast=contrast_images is not None, norm_map=norm_map,
                      contrast_lines=contrast_lines if contrast_images is not None else "plain")
    bank = mean = precision = None
    per_image = max(1, math.ceil(MAX_CANDIDATES / n_images)) if n_images else None
    patches, stats = collect(train_batches, cfg.memory_levels, cfg.memory_pool, memory, gaussian, per_image, seed,
                             valid_train) \
        if (memory or gaussian) else (None, None)
    if patches is not None:
        bank = greedy_coreset(patches, bank_size(len(patches), coreset_fraction), seed=seed)
        new_cfg = replace(new_cfg, memory_bank_size=len(bank))
        if log is not None:
            log.info("memory_bank_fitted", patches=len(patches), bank=len(bank))
        del patches
    if stats is not None:
        mean, precision = fit_gaussian(stats)
        references = min(len(stats), MAX_REFERENCES)
        k = min(gaussian_neighbours, references)
        new_cfg = replace(new_cfg, gaussian=True, gaussian_neighbours=k, gaussian_references=references if k else 0)
    fused = DiscrepancyModel(model.teacher, model.student, replace(new_cfg, student_scale=1.0, memory_scale=1.0,
                                                                   gaussian_scale=1.0)).to(device)
    if bank is not None:
        fused.memory.bank.copy_(bank)
    if mean is not None:
        set_gaussian(fused.gaussian, stats, mean, precision, seed)
    if contrast_images is not None:
        if fused.contrast.line_kind == "whitened":
            spectrum = residual_spectrum(fused.contrast, contrast_images, device, valid_train)
            fused.contrast.set_whitening(spectrum)
            if log is not None:
                log.info("contrast_lines_whitened", window=spectrum.shape[-1],
                         spectrum_range=round(float(spectrum.max() / spectrum.median()), 2))
        fused.contrast.rms.copy_(contrast_rms(fused.contrast, contrast_images, device, valid_train))
        if log is not None:
            log.info("contrast_fitted", rms=[round(float(v), 6) for v in fused.contrast.rms])
    if not fused.config.fused:
        return fused
    parts = validation_parts(fused, x_val, device, valid=valid_val)
    scales = {f"{name}_scale": _positive_mean(v, name) for name, v in parts.items()}
    fused.config = replace(fused.config, **scales)
    if log is not None:
        log.info("signals_normalised", **{k: round(v, 6) for k, v in scales.items()})
    return fused


MEMORY_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # the candidates ``choose_memory_weight`` tries


@torch.no_grad()
def align_contrast(model: DiscrepancyModel, x_val: torch.Tensor, device, valid: torch.Tensor | None = None,
                   batch: int = 32) -> tuple[float, float]:
    """Put the local-contrast map on the scale of the other maps' mix (``contrast_scale``) so that
    the largest value each reaches on the validation normals is the same: the fused heatmap is
    their pixel maximum, so a defect beyond either map's normal extreme is beyond the fused one's.
    (Scaled by its mean peak instead, as the other parts are, a map whose normal peaks vary
    little would sit far below the students' heavier tail and go unseen.) Returns both extremes."""
    from inspector.model.nets.discrepancy import image_scores

    model.eval()
    mix_peak = contrast_peak = 0.0
    for i in range(0, len(x_val), batch):
        parts = model.components(x_val[i:i + batch].to(device))
        v = None if valid is None else valid[i:i + batch].to(parts["contrast"].device)
        mix, _ = model.fuse({k: p for k, p in parts.items() if k in ("student", "memory")}, v)
        mix_peak = max(mix_peak, float(image_scores(mix, "max", valid=v).max()))
        contrast_peak = max(contrast_peak, float(image_scores(parts["contrast"], "max", valid=v).max()))
    if not (math.isfinite(mix_peak) and mix_peak > 0 and math.isfinite(contrast_peak) and contrast_peak > 0):
        raise ValueError(f"cannot align the local-contrast map: peaks {contrast_peak} and {mix_peak} "
                         "on the validation normals")
    model.config = replace(model.config, contrast_scale=contrast_peak / mix_peak)
    return contrast_peak, mix_peak


@torch.no_grad()
def fit_edge_profile(model: DiscrepancyModel, x_val: torch.Tensor, device, valid: torch.Tensor | None = None,
                     batch: int = 32) -> dict | None:
    """Measure the edge equalisation (``inspector.model.nets.edges``) on the validation normals'
    heatmaps, as the graph gives them, and set it on ``model.config``. Returns the manifest's
    record (``Manifest.edge_profile``), or None when no interior is wide enough to refer to."""
    from inspector.model.nets.edges import EDGE_BIN, edge_distance, fit_profile

    model.eval()
    maps = []
    for i in range(0, len(x_val), batch):
        m, _ = model.maps_and_scores(x_val[i:i + batch].to(device))
        maps.append(m.float().cpu())
    if not maps:
        return None
    maps_all = torch.cat(maps)
    v = None if valid is None else valid.cpu()
    gain, offset = fit_profile(maps_all, edge_distance(tuple(maps_all.shape), v, "cpu"), v, EDGE_BIN)
    if not gain:
        return None
    model.config = replace(model.config, edge_bin=EDGE_BIN, edge_gain=gain, edge_offset=offset)
    return {"bin": EDGE_BIN, "gain": list(gain), "offset": list(offset)}


@torch.no_grad()
def all_components(model: DiscrepancyModel, x: torch.Tensor, device, batch: int = 32) -> dict[str, torch.Tensor]:
    """``model.components`` of a whole (N,3,H,W) set, on the CPU."""
    model.eval()
    acc: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(x), batch):
        for name, v in model.components(x[i:i + batch].to(device)).items():
            acc.setdefault(name, []).append(v.float().cpu())
    return {k: torch.cat(v) for k, v in acc.items()}


def fusion_separation(model: DiscrepancyModel, clean: dict[str, torch.Tensor], painted: dict[str, torch.Tensor],
                      masks: torch.Tensor, valid: torch.Tensor | None, memory_weight: float) -> dict[str, float]:
    """How well the fused model, with this memory weight, tells normals (``clean``: their
    ``components``) from the same normals with synthetic anomalies painted on (``painted``; ``masks``
    where the paint is): image AUROC of the fused score and pixel AUROC of the fused map over the
    frames' pixels, and their mean (the same measure that picks the training epoch)."""
    from .metrics import image_auroc, pixel_auroc

    cfg = model.config
    model.config = replace(cfg, memory_weight=memory_weight)
    try:
        _, s_clean = model.fuse(clean, valid)
        maps, s_painted = model.fuse(painted, valid)
    finally:
        model.config = cfg
    where = torch.ones_like(masks) if valid is None else valid
    img = image_auroc(torch.cat([s_clean, s_painted]).numpy(), np.r_[np.zeros(len(s_clean), bool), np.ones(len(s_painted), bool)])
    pix = pixel_auroc(maps[where].numpy(), masks[where].numpy())
    return {"image_auroc": img, "pixel_auroc": pix, "separation": (img + pix) / 2}


def choose_memory_weight(model: DiscrepancyModel, clean: dict[str, torch.Tensor], painted: dict[str, torch.Tensor],
                         masks: torch.Tensor, valid: torch.Tensor | None = None,
                         candidates: tuple[float, ...] = MEMORY_WEIGHTS,
                         margin: float = 0.005) -> tuple[float, list[dict[str, float]]]:
    """The memory map's share of the heatmap that best separates synthetic anomalies (``painted``:
    the ``components`` of the validation normals with anomalies painted on where ``masks`` says)
    from the clean normals (``clean``), and every candidate's measures. How far the students' map
    and the patch memory can each be trusted depends on the surface (on a variable texture the
    students' map is the noisier one); painted anomalies measure it without a real defect. The
    equal mix, the rule before the weight was chosen, stays unless another candidate separates
    better by more than ``margin`` (a few painted images more or less make that much difference);
    ties among the others go to the candidate nearest 1/2."""
    table = [{"memory_weight": w, **fusion_separation(model, clean, painted, masks, valid, w)} for w in candidates]
    best = max(table, key=lambda r: (round(r["separation"], 4), -abs(r["memory_weight"] - 0.5)))
    equal = next((r for r in table if r["memory_weight"] == 0.5), None)
    if equal is not None and best["separation"] - equal["separation"] <= margin:
        return 0.5, table
    return best["memory_weight"], table


NORM_WEIGHT = 0.5  # the norm-ratio map's share of the students' part when it is kept


def choose_map_weights(model: DiscrepancyModel, clean: dict[str, torch.Tensor], painted: dict[str, torch.Tensor],
                       masks: torch.Tensor, valid: torch.Tensor | None = None, *, choose_norm: bool = True,
                       memory_weight: float | None = None,
                       margin: float = 0.005) -> tuple[float, float, list[dict[str, float]]]:
    """The heatmap's weights, ``(norm_weight, memory_weight, table)``, on painted anomalies as in
    ``choose_memory_weight``. With ``choose_norm`` (a model fitted with the norm-ratio map) both
    the students' cosine map alone and with the norm ratio at ``NORM_WEIGHT`` are tried, each at
    the memory weight ``choose_memory_weight`` picks for it (or the given ``memory_weight``), and
    compared there; the norm ratio is kept only when it separates better by more than ``margin``:
    the cosine map alone is the rule before it, and one map fewer to compute. A norm weight of 0
    means the map is dropped (``norm_map`` False)."""
    norms = (0.0, NORM_WEIGHT) if choose_norm else (model.config.norm_weight if model.config.norm_map else 0.0,)
    cfg = model.config
    results, table = {}, []
    try:
        for a in norms:
            model.config = replace(cfg, norm_weight=a)
            use = (lambda d: d) if a else (lambda d: {k: v for k, v in d.items() if k != "norm"})  # noqa: E731
            if model.memory is not None and memory_weight is None:
                w, rows = choose_memory_weight(model, use(clean), use(painted), masks, valid)
            else:  # a given weight, or no memory map to weigh
                w = cfg.memory_weight if memory_weight is None else memory_weight
                rows = [{"memory_weight": w, **fusion_separation(model, use(clean), use(painted), masks, valid, w)}]
            best = next(r for r in rows if r["memory_weight"] == w)
            results[a] = (w, best["separation"])
            table += [{"norm_weight": a, **r} for r in rows]
    finally:
        model.config = cfg
    a = norms[-1]
    if len(norms) > 1 and results[NORM_WEIGHT][1] - results[0.0][1] <= margin:
        a = 0.0
    return a, results[a][0], table


def _positive_mean(v: np.ndarray, name: str) -> float:
    m = float(np.mean(v))
    if not math.isfinite(m) or m <= 0:
        raise ValueError(f"the {name} part scores the validation normals at {m}: cannot normalise it")
    return m


def fusion_config(cfg: ModelConfig) -> dict | None:
    """The manifest's record of the signals (``Manifest.signals``); None without signals."""
    if not cfg.fused:
        return None
    return {"memory_bank_size": cfg.memory_bank_size, "memory_levels": list(cfg.memory_levels),
            "memory_pool": cfg.memory_pool, "gaussian": cfg.gaussian,
            "gaussian_neighbours": cfg.gaussian_neighbours, "gaussian_references": cfg.gaussian_references,
            "student_scale": cfg.student_scale,
            "memory_scale": cfg.memory_scale, "gaussian_scale": cfg.gaussian_scale, "memory_weight": cfg.memory_weight,
            "norm_map": cfg.norm_map, "norm_weight": cfg.norm_weight, "norm_scale": cfg.norm_scale,
            "contrast": cfg.contrast, "contrast_scale": cfg.contrast_scale, "contrast_lines": cfg.contrast_lines}
