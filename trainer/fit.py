"""Training: students distilled from a frozen teacher on normal images only.

Paper defaults (Adam 0.005, betas 0.5/0.999, batch 16). Images go through the same
``inspector.model.preprocess`` path the service uses. A validation split of the training normals picks
the best epoch (lowest validation loss) and calibrates the threshold; the test set is never read.
Teacher features are computed once and cached when they fit in memory (the teacher is frozen and
there is no augmentation, so they never change). Resume state is written as safetensors + JSON.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from inspector.engine.backends.plan import Runner
from inspector.model.checkpoint import (EdgeProfile, InputGeometry, Manifest, TilingSpec, new_version, read_manifest,
                                        read_weights, save_checkpoint)
from inspector.contracts.decode import DecodeError, read_image
from inspector.model.geometry import RESIZE_MODES, STRIDE, Geometry, choose_input_size
from inspector.model.nets.losses import cosine_distillation_loss
from inspector.model.nets.contrast import LINE_KINDS
from inspector.model.nets.model import SIGNALS_PREFIX, DiscrepancyModel, ModelConfig, build_student
from inspector.model.nets.teachers import build_teacher
from inspector.model.nets.discrepancy import image_scores
from inspector.model.preprocess import as_geometry, normalize, prepare_placed, unnormalize
from inspector.model.tiling import Tiling, auto_tiling, iter_stitched

from . import distributed
from .anomalies import paint
from .data import data_fingerprint, scan_dataset, split_train_val
from .metrics import calibrate_threshold, score_stats
from .precision import precision_points
from .signals import (DEFAULT_CORESET_FRACTION, align_contrast, all_components, choose_map_weights,
                      fit_edge_profile, fit_signals, fusion_config)

# Tiled fits hold their tiles as model inputs (0.8 MB each at 256 px) beside the teacher's cached
# features (0.7 MB with lite0): 4,096 training tiles are about 6 GB. More positions than that are
# sampled; validation tiles are held to a quarter of it (the threshold still reads whole frames).
DEFAULT_MAX_TILES = 4096


def state_dir(out: Path) -> Path:
    """Resume state lives beside the checkpoint (``OUT.train-state``): the checkpoint directory is
    replaced atomically on every write and holds only the two published files."""
    out = Path(out)
    return out.parent / f"{out.name}.train-state"


@dataclass
class FitConfig:
    data: Path
    out: Path
    method: str = "rd"
    variant: str = "dual"
    teacher: str = "efficientnet_lite0"
    teacher_weights: Path | None = None
    image_size: int = 256  # input side for a square input; with ``resize="pad"`` the input's area is about its square
    input_size: tuple[int, int] | None = None  # (height, width); None: chosen from the training images
    resize: str = "pad"  # pad | stretch (inspector.model.geometry)
    tile: int | str | None = "auto"  # tile side in px, "auto" (inspector.model.tiling.auto_tiling) or None: whole frames
    zoom: int = 1  # tiled: each window of tile/zoom frame px is enlarged zoom times to the tile
    overlap: int | None = None  # px shared by neighbouring tiles (default: tile / 8)
    max_tiles: int | None = DEFAULT_MAX_TILES  # tiled: training tiles held at once (a seeded sample); None: all
    selection: str = "synthetic"  # synthetic | loss: how the kept epoch is chosen
    synthetic_train: float = 0.5  # share of each batch given painted anomalies, clean features as the target
    epochs: int = 200
    batch_size: int = 16
    lr: float = 0.005
    betas: tuple[float, float] = (0.5, 0.999)
    loss: str = "map"
    seed: int = 0
    val_fraction: float = 0.1
    target_frr: float = 0.005
    calibration: str = "auto"  # auto | empirical | gumbel (trainer.metrics.calibrate_threshold)
    precision_thresholds: bool = True  # also calibrate for the reduced precisions runnable here (trainer.precision)
    score_mode: str = "max"
    topk_fraction: float = 0.01
    memory_bank: bool = True  # fuse a patch memory bank of teacher features (inspector.model.nets.signals)
    coreset_fraction: float = DEFAULT_CORESET_FRACTION
    memory_weight: float | str = "auto"  # the memory map's share of the heatmap; auto: chosen on painted anomalies
    norm_map: str = "auto"  # the students' norm-ratio map: auto (kept if it separates painted anomalies) | on | off
    global_gaussian: bool = True  # fuse the global Gaussian of pooled teacher statistics
    global_neighbours: int = 3  # judge its distance against the k nearest training normals' (0: plain)
    contrast_map: bool = False  # fuse the full-resolution local-contrast map (inspector.model.nets.contrast)
    contrast_lines: str = "whitened"  # its line filters: whitened by the training normals' spectrum, or plain
    edge_equalise: bool = True  # equalise the map near frame edges to the interior's normal variation (whole frames)
    device: str | None = None
    amp: bool = True
    cache_teacher: str = "auto"  # auto | yes | no
    cache_limit_gb: float = 4.0
    name: str | None = None
    resume: bool = False
    init_from: Path | None = None  # warm start from a checkpoint (its version becomes the parent)
    progress: bool = True
    max_train_images: int | None = None
    extra_train_paths: list[Path] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_images(paths: list[Path], log) -> tuple[list[np.ndarray], list[Path], list[tuple[str, str]]]:
    """Decode every file once; undecodable ones are skipped, counted and reported."""
    images, kept, skipped = [], [], []
    for p in paths:
        try:
            images.append(read_image(p))
            kept.append(p)
        except DecodeError as exc:
            skipped.append((str(p), exc.reason))
            log.warning("image_skipped", path=str(p), reason=exc.reason)
    return images, kept, skipped


def to_batches(images: list[np.ndarray], geometry: Geometry | int, mean, std,
               chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Model inputs (N,3,H,W) on the CPU and where each frame lies in its input (N,H,W bool; None
    when every frame fills it)."""
    g = as_geometry(geometry)
    parts, placements = [], []
    for i in range(0, len(images), chunk):
        x, p = prepare_placed(images[i:i + chunk], g, mean, std, "cpu")
        parts.append(x)
        placements += p
    x = torch.cat(parts) if parts else torch.empty(0, 3, *g.hw)
    return x, g.valid_mask(placements)


def choose_tiling(cfg: FitConfig, frame_sizes: list[tuple[int, int]], log) -> Tiling | None:
    """Tiles for full-resolution frames: given (``tile``), chosen from the frames' size
    (``"auto"``), or none."""
    if cfg.tile is None:
        return None
    if cfg.tile == "auto":
        tiling = auto_tiling(frame_sizes, cfg.image_size)
        tile = None if tiling is None else tiling.tile
    else:
        tile = int(cfg.tile)
        if tile % STRIDE:
            raise ValueError(f"tile side {tile} must be a multiple of {STRIDE}")
    tiling = None
    if tile is not None:
        side = tile // max(1, cfg.zoom)
        tiling = Tiling(tile, side // 8 if cfg.overlap is None else cfg.overlap, cfg.zoom)
        tiles = sum(tiling.count(hw) for hw in frame_sizes)
        log.info("tiling", tile=tiling.tile, overlap=tiling.overlap, zoom=tiling.zoom, frames=len(frame_sizes), tiles=tiles,
                 median_frame_px=int(np.median([h * w for h, w in frame_sizes])))
    return tiling


def tiles_of(images: list[np.ndarray], tiling: Tiling, limit: int | None = None,
             seed: int = 0) -> tuple[list[np.ndarray], int]:
    """The tiles of ``images`` and how many positions they have in all: every position, or, when
    there are more than ``limit``, a seeded sample of ``limit`` positions drawn evenly over all the
    frames' positions. Only the drawn tiles are cut: a training folder of full-resolution frames
    (100 frames of 5 MP hold 41,800 zoom-2 tiles: about 60 GB as model inputs and cached teacher
    features) stays within memory."""
    if limit is not None and limit < 1:
        raise ValueError(f"max_tiles must be at least 1 (or None: every tile), got {limit}")
    grids = [tiling.grid(img.shape[:2]) for img in images]
    total = sum(len(g) for g in grids)
    if limit is None or total <= limit:
        return [t for img in images for t in tiling.cut(img)[0]], total
    drawn = np.sort(np.random.default_rng(seed).choice(total, size=limit, replace=False))
    starts = np.cumsum([0] + [len(g) for g in grids])
    frame = np.searchsorted(starts, drawn, side="right") - 1
    return [tiling.crop(images[f], grids[f][i - starts[f]]) for f, i in zip(frame, drawn)], total


@torch.no_grad()
def tiled_normal_scores(model: DiscrepancyModel, frames: list[np.ndarray], tiling: Tiling, geometry: Geometry,
                        spec, device, max_tiles: int = 32, run: Runner | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whole-frame scores and stitched-map maxima of normal frames, as the engine computes them;
    ``run``: a serving runner of ``model`` instead of the model itself."""
    model.eval()
    run_batch = run or model.maps_and_scores

    def run_tiles(tiles: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x, _ = to_batches(tiles, geometry, spec.mean, spec.std)
        return model.tile_outputs(*run_batch(x.to(device)))

    scores, peaks = [], []
    for _, fmap, parts in iter_stitched(frames, tiling, run_tiles, max_tiles):
        scores.append(model.frame_score(fmap, parts))
        peaks.append(float(fmap.max()))
    return np.asarray(scores, np.float32), np.asarray(peaks, np.float32)


def input_geometry(cfg: FitConfig, frame_sizes: list[tuple[int, int]], log) -> Geometry:
    """The model input for these training frames: given, or their median aspect ratio at about
    ``image_size``² pixels (``stretch`` without a given size: the square of older models)."""
    if cfg.resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {cfg.resize!r}")
    if cfg.input_size is not None:
        h, w = cfg.input_size
        if cfg.resize == "pad" and (h % STRIDE or w % STRIDE):  # stretch: older square sizes stay valid
            raise ValueError(f"input size {w}x{h} must be a multiple of {STRIDE} on both sides")
    elif cfg.resize == "stretch":
        h = w = cfg.image_size
    else:
        h, w = choose_input_size(frame_sizes, cfg.image_size)
    geometry = Geometry(h, w, cfg.resize)
    aspects = [fw / fh for fh, fw in frame_sizes]
    small = sum(1 for fh, fw in frame_sizes if geometry.placement((fh, fw)).content_hw[0] > 2 * fh)
    log.info("input_geometry", input=geometry.describe(), frames=len(frame_sizes),
             aspect_min=round(min(aspects), 3), aspect_max=round(max(aspects), 3), upscaled_over_2x=small)
    return geometry


@torch.no_grad()
def teacher_features(model: DiscrepancyModel, x: torch.Tensor, device, batch: int = 32, dtype=torch.float32) -> list[torch.Tensor]:
    outs: list[list[torch.Tensor]] = [[], [], []]
    for i in range(0, len(x), batch):
        for k, f in enumerate(model.teacher(x[i:i + batch].to(device))):
            outs[k].append(f.to(dtype))
    return [torch.cat(o) for o in outs]


def feature_bytes(model: DiscrepancyModel, n: int, hw: tuple[int, int]) -> int:
    c = model.teacher.spec.channels
    s = model.teacher.spec.strides
    return 4 * n * sum(ci * (hw[0] // si) * (hw[1] // si) for ci, si in zip(c, s))


@torch.no_grad()
def validation_loss(model: DiscrepancyModel, x: torch.Tensor, feats, device, kind: str, batch: int = 32) -> float:
    model.student.eval()
    total, n = 0.0, 0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(device)
        tf = [f[i:i + batch].to(device).float() for f in feats] if feats is not None else None
        t, s = model.features(xb, tf)
        total += float(cosine_distillation_loss(t, s, kind)) * len(xb)
        n += len(xb)
    model.student.train()
    return total / max(n, 1)


SELECTIONS = ("synthetic", "loss")


@torch.no_grad()
def synthetic_separation(model: DiscrepancyModel, x_val: torch.Tensor, f_val, x_syn: torch.Tensor, f_syn,
                         masks: torch.Tensor, valid: torch.Tensor | None, device, batch: int = 32) -> dict[str, float]:
    """How well the students' map tells the validation normals from the same normals with
    synthetic anomalies painted on (``trainer.anomalies``): image AUROC (clean against painted,
    map maxima over each frame) and pixel AUROC (painted pixels against the rest of the frames)."""
    from .metrics import image_auroc, pixel_auroc

    model.student.eval()
    size = tuple(x_val.shape[-2:])

    def maps_of(x, feats):
        out = []
        for i in range(0, len(x), batch):
            tf = [f[i:i + batch].to(device).float() for f in feats] if feats is not None else None
            t, s = model.features(x[i:i + batch].to(device), tf)
            out.append(model.mapper(t, s, size).float().cpu())
        return torch.cat(out)

    clean, painted = maps_of(x_val, f_val), maps_of(x_syn, f_syn)
    model.student.train()
    scores = torch.cat([image_scores(clean, "max", valid=valid), image_scores(painted, "max", valid=valid)])
    labels = np.r_[np.zeros(len(clean), bool), np.ones(len(painted), bool)]
    where = torch.ones_like(masks) if valid is None else valid
    img = image_auroc(scores.numpy(), labels)
    pix = pixel_auroc(painted[where].numpy(), masks[where].numpy())
    return {"image_auroc": img, "pixel_auroc": pix, "separation": (img + pix) / 2}


@torch.no_grad()
def painted_inputs(model: DiscrepancyModel, xb: torch.Tensor, tf: list[torch.Tensor], n_paint: int, seed: int,
                   spec, valid: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The first ``n_paint`` images of a training batch with synthetic anomalies painted on (the
    rest of the batch lends content), and the teacher's features of the painted batch."""
    unit = unnormalize(xb[:n_paint + 1].float().cpu(), spec.mean, spec.std)  # >= 2 images: n_paint > 0 needs bs >= 2
    painted, _, _ = paint(unit, seed=seed, valid=None if valid is None else valid[:len(unit)].cpu())
    x_in = xb.clone()
    x_in[:n_paint] = normalize(painted[:n_paint], spec.mean, spec.std).to(xb.device, xb.dtype)
    tf_painted = model.teacher(x_in[:n_paint])
    tf_in = [torch.cat([p.to(t.dtype), t[n_paint:]]) for p, t in zip(tf_painted, tf)]
    return x_in, tf_in


def painted_validation(x_val: torch.Tensor, spec, seed: int,
                       valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised validation inputs with synthetic anomalies painted on (``trainer.anomalies``)
    and the paint's masks: what the epoch and the memory weight are chosen on."""
    painted, masks, _ = paint(unnormalize(x_val, spec.mean, spec.std), seed=seed, valid=valid)
    return normalize(painted, spec.mean, spec.std), masks


NORM_MAP_MODES = ("auto", "on", "off")


def _check_memory_weight(value: float | str) -> None:
    if value == "auto":
        return
    if isinstance(value, str) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"memory_weight must be 'auto' or a share in [0, 1], got {value!r}")


#: Most validation units (frames, or tiles of a tiled model) the memory weight is chosen on, a
#: seeded sample when there are more: a tiled fit has hundreds of validation tiles, and scoring
#: them all twice and ranking their pixels once per candidate took most of its signal fitting.
WEIGH_UNITS = 256


def weigh_maps(cfg: FitConfig, model: DiscrepancyModel, x_val: torch.Tensor, x_syn: torch.Tensor | None,
               syn_masks: torch.Tensor | None, valid_val: torch.Tensor | None, spec, device, log) -> list[dict] | None:
    """Set the fitted model's heatmap weights (``ModelConfig.memory_weight``, and whether the
    students' norm-ratio map is kept, ``norm_map`` / ``norm_weight``): the configured ones, or with
    ``auto`` those that best separate synthetic anomalies painted on the validation normals
    (``trainer.signals.choose_map_weights``; painted here when the epoch was chosen by the loss).
    Returns every candidate's measures for the manifest, or None when nothing was weighed."""
    auto_memory = model.memory is not None and cfg.memory_weight == "auto"
    auto_norm = model.config.norm_map and cfg.norm_map == "auto"
    if model.memory is not None and cfg.memory_weight != "auto":
        model.config = replace(model.config, memory_weight=float(cfg.memory_weight))
    if not (auto_memory or auto_norm):
        return None
    if len(x_val) < 2:  # painting borrows content from another normal
        if auto_norm:  # unmeasured, the cosine map alone stays, as it was before the norm ratio
            model.config = replace(model.config, norm_map=False)
        log.warning("map_weights_default", reason="synthetic anomalies need at least 2 validation images",
                    memory_weight=model.config.memory_weight, norm_map=model.config.norm_map)
        return None
    if len(x_val) > WEIGH_UNITS:
        keep = torch.randperm(len(x_val), generator=torch.Generator().manual_seed(cfg.seed))[:WEIGH_UNITS].sort().values
        log.info("memory_weighing_sample", units=WEIGH_UNITS, of=len(x_val))
        x_val, valid_val = x_val[keep], None if valid_val is None else valid_val[keep]
        if x_syn is not None:
            x_syn, syn_masks = x_syn[keep], syn_masks[keep]
    if x_syn is None:
        x_syn, syn_masks = painted_validation(x_val, spec, cfg.seed, valid_val)
    # the students' and memory maps' mix only: the local-contrast map joins it by the pixel
    # maximum afterwards (``align_contrast``), whatever the mix
    def mixed(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v for k, v in all_components(model, x, device).items() if k != "contrast"}

    norm_weight, weight, table = choose_map_weights(
        model, mixed(x_val), mixed(x_syn), syn_masks, valid_val, choose_norm=auto_norm,
        memory_weight=None if auto_memory else model.config.memory_weight)
    model.config = replace(model.config, memory_weight=weight, norm_map=norm_weight > 0,
                           norm_weight=norm_weight if norm_weight > 0 else model.config.norm_weight)
    log.info("map_weights_chosen", memory_weight=weight, norm_weight=norm_weight,
             separation={f"norm {r['norm_weight']:g} memory {r['memory_weight']:g}": round(r["separation"], 4)
                         for r in table})
    return [{k: round(v, 4) for k, v in r.items()} for r in table]


@torch.no_grad()
def normal_scores(model: DiscrepancyModel, x: torch.Tensor, device, batch: int = 32,
                  valid: torch.Tensor | None = None, run: Runner | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image scores and map maxima of normal images (over each frame's part of its input, as the
    engine scores them); ``run``: a serving runner of ``model`` instead of the model itself."""
    model.eval()
    run = run or model.maps_and_scores
    scores, peaks = [], []
    for i in range(0, len(x), batch):
        maps, s = run(x[i:i + batch].to(device))
        v = None if valid is None else valid[i:i + batch].to(maps.device)
        maps, s = model.content_outputs(maps, s, v)
        scores.append(s.float().cpu())
        peaks.append(image_scores(maps, "max", valid=v).float().cpu())
    if not scores:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return torch.cat(scores).numpy(), torch.cat(peaks).numpy()


def normals_scorer(model: DiscrepancyModel, x: torch.Tensor | None, valid: torch.Tensor | None,
                   frames: list[np.ndarray], tiling: Tiling | None, geometry: Geometry, spec):
    """(run, device) → image scores and map maxima of the validation normals, as the engine
    computes them: whole frames from their model inputs ``x`` (``valid``: where each frame lies),
    tiled models from the ``frames`` themselves (the threshold is for whole frames, as they are
    served); ``run``: a serving runner of ``model`` (``trainer.precision``), ``None``: the model."""
    def score(run: Runner | None, on: torch.device) -> tuple[np.ndarray, np.ndarray]:
        if tiling is None:
            return normal_scores(model, x, on, valid=valid, run=run)
        return tiled_normal_scores(model, frames, tiling, geometry, spec, on, run=run)

    return score


def _teacher_batches(model: DiscrepancyModel, x: torch.Tensor, feats: list[torch.Tensor] | None, device,
                     batch: int = 32):
    """Teacher features of ``x`` a batch at a time: from the cache when there is one."""
    for i in range(0, len(x), batch):
        if feats is not None:
            yield [f[i:i + batch] for f in feats]
        else:
            with torch.no_grad():
                yield model.teacher(x[i:i + batch].to(device))


# ----------------------------------------------------------------------------- resume state

def _save_state(out: Path, model: DiscrepancyModel, opt: torch.optim.Optimizer, epoch: int, best: dict, history: list) -> None:
    from safetensors.torch import save_file

    d = state_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {f"student.{k}": v.detach().cpu().contiguous() for k, v in model.student.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best["state"].items()} if best.get("state") else {})
    osd = opt.state_dict()
    for pid, st in osd["state"].items():
        for key, val in st.items():
            tensors[f"opt.{pid}.{key}"] = val.detach().cpu().contiguous() if torch.is_tensor(val) else torch.tensor(val)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(d / "state.safetensors.tmp"))
    meta = {"epoch": epoch, "best_epoch": best.get("epoch"), "best_val": best.get("val"), "best_key": best.get("key"),
            "param_groups": osd["param_groups"], "history": history}
    (d / "state.json.tmp").write_text(json.dumps(meta))
    (d / "state.safetensors.tmp").replace(d / "state.safetensors")
    (d / "state.json.tmp").replace(d / "state.json")


def _load_state(out: Path, model: DiscrepancyModel, opt: torch.optim.Optimizer) -> tuple[int, dict, list]:
    from safetensors.torch import load_file

    d = state_dir(out)
    meta = json.loads((d / "state.json").read_text())
    tensors = load_file(str(d / "state.safetensors"))
    model.student.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("student.")})
    best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    best = {"epoch": meta["best_epoch"], "val": meta["best_val"], "state": best_state or None,
            "key": meta.get("best_key", [meta["best_val"]] if meta.get("best_val") is not None else None)}
    return meta["epoch"], best, meta["history"]


# ----------------------------------------------------------------------------- fit

def fit(cfg: FitConfig) -> dict[str, Any]:
    """Train, select the best epoch, calibrate, and write a checkpoint to ``cfg.out``. Returns a summary."""
    log = structlog.get_logger("trainer.fit")
    seed_everything(cfg.seed)  # the same seed on every rank: identical shuffles, disjoint shards
    ctx, device = distributed.setup(cfg.device)
    try:
        return _fit(cfg, ctx, device, log)
    finally:
        distributed.teardown(ctx)


def _fit(cfg: FitConfig, ctx: distributed.Dist, device: torch.device, log) -> dict[str, Any]:
    _check_memory_weight(cfg.memory_weight)
    if cfg.norm_map not in NORM_MAP_MODES:
        raise ValueError(f"norm_map must be one of {NORM_MAP_MODES}, got {cfg.norm_map!r}")
    if cfg.contrast_lines not in LINE_KINDS:
        raise ValueError(f"contrast_lines must be one of {LINE_KINDS}, got {cfg.contrast_lines!r}")
    if cfg.global_neighbours < 0:
        raise ValueError(f"global_neighbours must be >= 0 (0: the plain distance), got {cfg.global_neighbours}")
    out = Path(cfg.out)
    index = scan_dataset(cfg.data)
    paths = list(index.train_paths) + [Path(p) for p in cfg.extra_train_paths]
    if cfg.max_train_images:
        paths = sorted(paths)[: cfg.max_train_images]
    train_paths, val_paths = split_train_val(paths, cfg.val_fraction, cfg.seed)
    train_imgs, train_paths, skipped = load_images(train_paths, log)
    val_imgs, val_paths, skipped_val = load_images(val_paths, log)
    skipped += skipped_val
    if len(train_imgs) < 2 or not val_imgs:
        raise ValueError(f"not enough usable normal images in {cfg.data}: {len(train_imgs)} train, {len(val_imgs)} validation")

    teacher = build_teacher(cfg.teacher, cfg.teacher_weights)
    mcfg = ModelConfig(method=cfg.method, variant=cfg.variant, score_mode=cfg.score_mode,
                       topk_fraction=cfg.topk_fraction)
    model = DiscrepancyModel(teacher, build_student(mcfg, teacher), mcfg).to(device)
    parent = None
    init_geometry = None
    init_tiling = None
    if cfg.init_from is not None:
        init_manifest = read_manifest(cfg.init_from)
        if (init_manifest.method, init_manifest.teacher) != (cfg.method, cfg.teacher):
            raise ValueError(f"cannot warm-start a {cfg.method}/{cfg.teacher} model from {init_manifest.method}/{init_manifest.teacher}")
        # the students only: the signals are fitted anew on this run's normals
        model.student.load_state_dict({k: v for k, v in read_weights(cfg.init_from, init_manifest).items()
                                       if not k.startswith(SIGNALS_PREFIX)})
        parent = init_manifest.version
        init_geometry = init_manifest.input_geometry()  # a warm start keeps the input it was trained at
        init_tiling = init_manifest.input_tiling()
    spec = teacher.spec
    sizes = [img.shape[:2] for img in train_imgs]
    tiling = (init_tiling if cfg.init_from is not None else choose_tiling(cfg, sizes, log))
    val_frames: list[np.ndarray] = []
    n_frames = len(train_imgs)
    tile_counts: dict[str, int] = {}
    if tiling is not None:  # full-resolution frames: train on every tile position, or a sample of them
        geometry = Geometry(tiling.tile, tiling.tile, "pad")
        val_frames = val_imgs
        limit = cfg.max_tiles
        train_imgs, train_tiles = tiles_of(train_imgs, tiling, limit, cfg.seed)
        val_imgs, val_tiles = tiles_of(val_imgs, tiling, None if limit is None else max(1, limit // 4), cfg.seed + 1)
        tile_counts = {"train_tiles": len(train_imgs), "train_tile_positions": train_tiles,
                       "val_tiles": len(val_imgs), "val_tile_positions": val_tiles}
        if len(train_imgs) < train_tiles or len(val_imgs) < val_tiles:
            log.info("tiles_sampled", max_tiles=limit, **tile_counts)
    else:
        geometry = init_geometry if init_geometry is not None and cfg.input_size is None else \
            input_geometry(cfg, sizes, log)
    x_train, valid_train = to_batches(train_imgs, geometry, spec.mean, spec.std)
    x_val, valid_val = to_batches(val_imgs, geometry, spec.mean, spec.std)
    del train_imgs, val_imgs, sizes

    if cfg.selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {cfg.selection!r}")
    x_syn = syn_masks = None
    selection = cfg.selection
    if selection == "synthetic" and len(x_val) < 2:  # painting borrows content from another normal
        log.warning("selection_by_loss", reason="synthetic anomalies need at least 2 validation images",
                    val_images=len(x_val))
        selection = "loss"
    if selection == "synthetic":
        x_syn, syn_masks = painted_validation(x_val, spec, cfg.seed, valid_val)
    n_cached = len(x_train) + len(x_val) + (len(x_syn) if x_syn is not None else 0)
    cache = cfg.cache_teacher == "yes" or (
        cfg.cache_teacher == "auto" and feature_bytes(model, n_cached, geometry.hw) < cfg.cache_limit_gb * 2**30)
    feat_dtype = torch.float16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    f_train = teacher_features(model, x_train, device, dtype=feat_dtype) if cache else None
    f_val = teacher_features(model, x_val, device, dtype=feat_dtype) if cache else None
    f_syn = teacher_features(model, x_syn, device, dtype=feat_dtype) if cache and x_syn is not None else None
    if cache:
        x_train_dev = x_train.to(device) if device.type == "cuda" else x_train
        log.info("teacher_features_cached", images=len(x_train) + len(x_val), seconds=round(time.perf_counter() - t0, 1))
    else:
        x_train_dev = x_train

    opt = torch.optim.Adam(model.student.parameters(), lr=cfg.lr, betas=cfg.betas)
    start_epoch, best, history = 0, {"epoch": None, "val": math.inf, "state": None}, []
    if cfg.resume and (state_dir(out) / "state.json").is_file():
        start_epoch, best, history = _load_state(out, model, opt)
        log.info("resumed", epoch=start_epoch, best_epoch=best["epoch"])

    use_amp = cfg.amp and device.type == "cuda"
    n = len(x_train)
    bs = min(cfg.batch_size, max(1, n // ctx.world))  # per process
    if not 0.0 <= cfg.synthetic_train <= 1.0:
        raise ValueError(f"synthetic_train must be in [0, 1], got {cfg.synthetic_train}")
    n_paint = min(bs, int(round(cfg.synthetic_train * bs))) if bs >= 2 else 0
    steps = n // (bs * ctx.world)  # drop the last partial batch: tiny batches destabilise batch norm
    trained = distributed.wrap(model.student, ctx, device)
    model.student.train()
    train_seconds = 0.0
    bar = None
    if cfg.progress and ctx.main:
        from tqdm import tqdm

        bar = tqdm(total=(cfg.epochs - start_epoch) * steps, desc=f"fit {cfg.method}", unit="step",
                   file=sys.stderr, dynamic_ncols=True, disable=None)
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        perm = torch.randperm(n)
        running = 0.0
        for step in range(steps):
            first = (step * ctx.world + ctx.rank) * bs
            idx = perm[first:first + bs]
            xb = x_train_dev[idx.to(x_train_dev.device)].to(device, non_blocking=True)
            tf = [f[idx.to(f.device)].to(device).float() for f in f_train] if f_train is not None else None
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                if tf is None:
                    with torch.no_grad():
                        tf = model.teacher(xb)
                x_in, tf_in = xb, tf
                if n_paint:
                    seed = (cfg.seed * 1_000_003 + epoch) * 100_003 + step
                    x_in, tf_in = painted_inputs(model, xb, tf, n_paint, seed, spec,
                                                 None if valid_train is None else valid_train[idx])
                # the target is always the teacher's view of the clean image: a student that
                # reproduces a painted anomaly is penalised for it
                loss = cosine_distillation_loss(tf, trained(x_in, tf_in), cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.detach().item()
            if bar is not None:
                dt = time.perf_counter() - t_epoch
                bar.set_postfix(epoch=epoch + 1, loss=f"{running / (step + 1):.4f}", img_s=f"{(step + 1) * bs / dt:.0f}")
                bar.update(1)
        epoch_s = time.perf_counter() - t_epoch
        train_seconds += epoch_s
        if not ctx.main:
            continue  # rank 0 alone validates, keeps the best epoch and writes
        val = validation_loss(model, x_val, f_val, device, cfg.loss)
        entry = {"epoch": epoch + 1, "train_loss": running / max(steps, 1), "val_loss": val, "seconds": round(epoch_s, 2)}
        if x_syn is not None:
            entry["synthetic"] = synthetic_separation(model, x_val, f_val, x_syn, f_syn, syn_masks, valid_val, device)
        history.append(entry)
        log.info("epoch", epoch=epoch + 1, train_loss=round(running / max(steps, 1), 5), val_loss=round(val, 5),
                 images_per_s=round(steps * bs * ctx.world / epoch_s, 1),
                 **({"synthetic_separation": round(entry["synthetic"]["separation"], 4)} if x_syn is not None else {}))
        # the kept epoch: the best separation of synthetic anomalies (ties: the lower validation
        # loss), or the lowest validation loss
        key = (-entry["synthetic"]["separation"], val) if x_syn is not None else (val,)
        if best.get("key") is None or key < tuple(best["key"]):
            best = {"epoch": epoch + 1, "val": val, "key": list(key),
                    "state": {k: v.detach().cpu().clone() for k, v in model.student.state_dict().items()}}
        _save_state(out, model, opt, epoch + 1, best, history)
    if bar is not None:
        bar.close()
    if not ctx.main:
        return {"rank": ctx.rank}
    if best["state"] is not None:
        model.student.load_state_dict(best["state"])

    t_signals = time.perf_counter()
    model = fit_signals(model, _teacher_batches(model, x_train, f_train, device), x_val, device,
                        # a tile's global statistics are not its frame's: tiled models score by the map
                        memory=cfg.memory_bank, gaussian=cfg.global_gaussian and tiling is None,
                        coreset_fraction=cfg.coreset_fraction, seed=cfg.seed, n_images=len(x_train), log=log,
                        valid_train=valid_train, valid_val=valid_val,
                        contrast_images=x_train if cfg.contrast_map else None,
                        gaussian_neighbours=cfg.global_neighbours, norm_map=cfg.norm_map != "off",
                        contrast_lines=cfg.contrast_lines)
    weighing = weigh_maps(cfg, model, x_val, x_syn, syn_masks, valid_val, spec, device, log)
    if model.contrast is not None:
        contrast_peak, mix_peak = align_contrast(model, x_val, device, valid_val)
        log.info("contrast_aligned", contrast_scale=round(model.config.contrast_scale, 6),
                 contrast_peak=round(contrast_peak, 4), mix_peak=round(mix_peak, 4))
    edge_profile = None
    if cfg.edge_equalise and tiling is None:  # a tiled frame's edges are a sliver of it: not fitted
        edge_profile = fit_edge_profile(model, x_val, device, valid_val)
        log.info("edge_profile", **({"gain": [round(g, 3) for g in edge_profile["gain"]]} if edge_profile
                                    else {"skipped": "no interior wide enough to refer to"}))
    signals_seconds = time.perf_counter() - t_signals
    score_normals = normals_scorer(model, x_val, valid_val, val_frames, tiling, geometry, spec)
    scores, peaks = score_normals(None, device)
    threshold, calibration = calibrate_threshold(scores, cfg.target_frr, cfg.calibration)
    region_threshold = None
    if model.config.fused:  # the map's own units: outline where it exceeds what normals reach
        region_threshold, region_cal = calibrate_threshold(peaks, cfg.target_frr, cfg.calibration)
        calibration["region"] = region_cal
    t_points = time.perf_counter()
    points = precision_points(model, geometry.hw, device, score_normals, cfg.target_frr, cfg.calibration, log,
                              plans=None if cfg.precision_thresholds else [])
    points_seconds = time.perf_counter() - t_points
    signals = fusion_config(model.config)
    manifest = Manifest(
        name=cfg.name or Path(cfg.data).resolve().name, version=new_version(), parent_version=parent,
        method=cfg.method, variant=cfg.variant if cfg.method == "dskd" else None,
        teacher=cfg.teacher, teacher_sha256=teacher.weights_sha256, image_size=max(geometry.hw),
        geometry=None if geometry == Geometry.square(geometry.height) else InputGeometry(
            height=geometry.height, width=geometry.width, resize=geometry.resize),
        tiling=None if tiling is None else TilingSpec(tile=tiling.tile, overlap=tiling.overlap, zoom=tiling.zoom),
        mean=spec.mean, std=spec.std, sigma=mcfg.sigma, score_mode=cfg.score_mode, topk_fraction=cfg.topk_fraction,
        loss=cfg.loss, threshold=threshold, target_frr=cfg.target_frr, score_stats=score_stats(scores),
        precision_points=points,
        signals=signals, region_threshold=region_threshold, calibration=calibration,
        edge_profile=None if edge_profile is None else EdgeProfile(**edge_profile),
        metrics={"val_loss": best["val"], "best_epoch": best["epoch"], "val_images": len(scores),
                 "selection": selection, **({"memory_weighing": weighing} if weighing else {}),
                 "val_false_reject_rate": float(np.mean(scores >= threshold))},
        data_fingerprint=data_fingerprint(train_paths + val_paths),
        training={"epochs": cfg.epochs, "batch_size": bs, "lr": cfg.lr, "betas": list(cfg.betas), "seed": cfg.seed,
                  "val_fraction": cfg.val_fraction, "coreset_fraction": cfg.coreset_fraction,
                  "selection": selection, "synthetic_train": cfg.synthetic_train,
                  "train_images": n, "train_frames": n_frames, **tile_counts,
                  "skipped_images": skipped, "device": str(device),
                  "train_seconds": round(train_seconds, 1), "signals_seconds": round(signals_seconds, 1),
                  "precision_seconds": round(points_seconds, 1),
                  "amp": use_amp, "teacher_cache": cache,
                  "processes": ctx.world,
                  "history": history,
                  "train_images_per_s": round(steps * bs * ctx.world * max(cfg.epochs - start_epoch, 0) / train_seconds, 1) if train_seconds else None},
    )
    manifest = save_checkpoint(out, model.student_state(), manifest)
    log.info("checkpoint_written", out=str(out), version=manifest.version, threshold=threshold)
    described = geometry.describe() if tiling is None else (
        f"tiles {tiling.tile}px, overlap {tiling.overlap}px" + (f", zoom {tiling.zoom}x" if tiling.zoom > 1 else ""))
    return {"checkpoint": str(out), "version": manifest.version, "method": cfg.method, "input": described,
            "variant": manifest.variant, "teacher": cfg.teacher, "threshold": threshold,
            "best_epoch": best["epoch"], "val_loss": best["val"], "train_seconds": round(train_seconds, 1),
            "signals_seconds": round(signals_seconds, 1), "calibration": calibration["method"],
            "precision_thresholds": {k: v.threshold for k, v in points.items()},
            "precision_seconds": round(points_seconds, 1),
            **({"memory_weight": model.config.memory_weight} if model.memory is not None else {}),
            "norm_weight": model.config.norm_weight if model.config.norm_map else 0.0,
            **({"global_neighbours": model.config.gaussian_neighbours} if model.gaussian is not None else {}),
            "edge_gain": None if edge_profile is None else [round(g, 4) for g in edge_profile["gain"]],
            "train_images": n, "skipped_images": len(skipped)}
