"""Ablation of one fitted checkpoint's parts: students, patch memory, global Gaussian, score and
threshold rules, each scored on the same test set in one run.

Every row re-uses the checkpoint's trained students and fitted signals and calibrates its own
threshold on the same held-out validation normals the fit used (the test set is never used to set
anything), so the rows differ only in what is fused. Prints a markdown table (overall and per
defect type) and writes JSON. It also scores candidates measured against the model but not in it
(rows say so): the students' feature-norm ratio as a map, the global part as the local outlier
factor proper, and the global part pooled over the frame's cells only; and, for every row with a
map, how well it localises inside each defective frame alone.

    python bench/signal_ablation.py --checkpoint runs/mt/rd/checkpoint \\
        --data ../shared/datasets/magnetic_tile --out runs/mt/rd/ablation.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from inspector.contracts.decode import read_image
from inspector.engine.engine import EngineOptions, load_engine
from inspector.model.nets.edges import EDGE_BIN, EDGE_REACH, edge_distance, fit_profile
from inspector.model.nets.signals import pooled_statistics
from inspector.model.preprocess import prepare_batch
from trainer.data import load_sample, resize_mask, scan_dataset, split_train_val
from trainer.evaluate import to_grid
from trainer.metrics import calibrate_threshold, per_type_metrics

# (row name, parts fused, score mode, calibration)
ROWS = [
    ("students alone (RD4AD map, max)", ("student",), "max", "empirical"),
    ("students alone, top-1 % mean", ("student",), "topk", "empirical"),
    ("patch memory alone", ("memory",), "max", "empirical"),
    ("global Gaussian alone", ("gaussian",), "max", "empirical"),
    ("students + patch memory", ("student", "memory"), "max", "empirical"),
    ("patch memory + global Gaussian", ("memory", "gaussian"), "max", "empirical"),
    ("students + memory + Gaussian, empirical threshold", ("student", "memory", "gaussian"), "max", "empirical"),
    ("students + memory + Gaussian, Gumbel threshold", ("student", "memory", "gaussian"), "max", "gumbel"),
    ("students + memory + Gaussian, top-1 % mean", ("student", "memory", "gaussian"), "topk", "auto"),
    ("students + memory + Gaussian, top-5 % mean", ("student", "memory", "gaussian"), "topk5", "auto"),
]
HELD_IN = ("blowhole", "break", "fray")  # magnetic_tile's types used for choices; crack, uneven held out


@torch.no_grad()
def all_parts(model, images, m, batch=16):
    """``model.components`` of ``images``, and (``stats``) the pooled teacher statistics the global
    Gaussian read, for the neighbourhood rows."""
    acc: dict[str, list] = {}
    seen: dict[str, list] = {}
    hooks = [model.teacher.register_forward_hook(lambda _mod, _inputs, out: seen.__setitem__("teacher", out)),
             model.student.register_forward_hook(lambda _mod, _inputs, out: seen.__setitem__("students", out))]
    if model.gaussian is not None:
        hooks.append(model.gaussian.register_forward_hook(
            lambda _mod, inputs, _out: acc.setdefault("stats", []).append(pooled_statistics(inputs[0]))))
    try:
        for i in range(0, len(images), batch):
            x = prepare_batch(images[i:i + batch], m.input_geometry(), m.mean, m.std)
            parts = model.components(x)
            if "norm" not in parts:  # a checkpoint without the norm ratio: measured here as a candidate
                with torch.autocast(x.device.type, enabled=False):
                    parts["norm"] = model.mapper.norm_ratio(seen["teacher"], seen["students"], tuple(x.shape[-2:]))
            for k, v in parts.items():
                acc.setdefault(k, []).append(v)
    finally:
        for hook in hooks:
            hook.remove()
    return {k: torch.cat(v) for k, v in acc.items()}


def global_at(model, val, test, k):
    """The global part judged against ``k`` nearest training normals (0: the plain distance), for
    validation and test images, each normalised by its validation mean and then put on the
    checkpoint's scale so that ``combine`` divides it back (the fit's normaliser, per variant)."""
    gauss = model.gaussian
    out = []
    for parts in (val, test):
        d = gauss.distance(parts["stats"])
        if k:
            kept = gauss.neighbours
            gauss.neighbours = k
            try:
                d = d / gauss.neighbourhood(parts["stats"])
            finally:
                gauss.neighbours = kept
        out.append(d)
    return on_checkpoint_scale(model, out)


def on_checkpoint_scale(model, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """A variant of the global part, for (validation, test) images, normalised by its validation
    mean and put on the checkpoint's scale, so that ``combine`` divides it back (the fit's
    normaliser, per variant)."""
    scale = float(parts[0].mean())
    return [d / scale * model.config.gaussian_scale for d in parts]


def outlier_factor_at(model, val, test):
    """The global part as the local outlier factor proper (Breunig et al. 2000), for comparison with
    the checkpoint's rule: the mean whitened distance to the image's K nearest kept training normals,
    over the same mean for those normals themselves (each leaving itself out), K the checkpoint's.
    Normalised like ``global_at``."""
    gauss = model.gaussian
    k = gauss.neighbours
    ref = gauss.reference.double()
    d_ref = torch.cdist(ref, ref)
    d_ref.fill_diagonal_(float("inf"))
    ref_knn = torch.topk(d_ref, k, dim=1, largest=False).values.mean(dim=1)
    out = []
    for parts in (val, test):
        z = ((parts["stats"] - gauss.mean) @ gauss.whiten).double()
        dist, near = torch.topk(torch.cdist(z, ref), k, dim=1, largest=False)
        out.append((dist.mean(dim=1) / ref_knn[near].mean(dim=1).clamp_min(1e-12)).float())
    return on_checkpoint_scale(model, out)


def frame_cells_global_at(model, m, train_images, val_images, test_images):
    """The global part refitted with each image's statistics pooled over the teacher cells that hold
    its frame, not the mirrored border too (``geometry_ablation``'s ``padframe``; the served graph
    pools the whole input, having one input), judged against the checkpoint's K nearest normals."""
    from geometry_ablation import frame_statistics

    from inspector.model.nets.signals import GlobalGaussian
    from trainer.signals import MAX_REFERENCES, fit_gaussian, set_gaussian

    g = m.input_geometry()
    h, w = g.hw

    @torch.no_grad()
    def stats(images):
        rows = []
        for i in range(0, len(images), 16):
            chunk = images[i:i + 16]
            feats = model.teacher(prepare_batch(chunk, g, m.mean, m.std))
            rows.append(frame_statistics(feats, [g.placement(img.shape[:2]) for img in chunk], h, w))
        return torch.cat(rows)

    train = stats(train_images)
    gauss = GlobalGaussian(train.shape[1], model.gaussian.neighbours, min(len(train), MAX_REFERENCES))
    set_gaussian(gauss, train, *fit_gaussian(train))
    return on_checkpoint_scale(model, [gauss.distance(st) / gauss.neighbourhood(st)
                                       for st in (stats(val_images), stats(test_images))])


def within_frame_auroc(maps: np.ndarray, masks: np.ndarray, types: list[str]) -> dict[str, float]:
    """Per defect type, the mean over its frames of the pixel AUROC inside each frame alone (frames
    whose mask covers part of them): whether a map finds *where* in a frame the defect is, which the
    pooled pixel AUROC mixes with how high a defective frame's map sits against the good frames'."""
    from sklearn.metrics import roc_auc_score

    per: dict[str, list[float]] = {}
    for mp, mk, t in zip(maps, masks, types):
        if t != "good" and 0 < mk.mean() < 1:
            per.setdefault(t, []).append(float(roc_auc_score(mk.ravel(), mp.ravel())))
    return {t: float(np.mean(v)) for t, v in sorted(per.items())}


def combine(model, parts, names, mode, valid=None, memory_weight=None, edges=False):
    """The fused map and score of the ``names`` parts under a score rule; ``edges``: with the
    checkpoint's edge equalisation after the fusion, as the engine applies it."""
    cfg = model.config
    rule = {"score_mode": "topk", "topk_fraction": 0.05} if mode == "topk5" else \
        {"score_mode": mode, "topk_fraction": 0.01}
    if memory_weight is not None:
        rule["memory_weight"] = memory_weight
    if names == ("student",):
        model.config = replace(cfg, memory_bank_size=0, gaussian=False, **rule)
    else:
        model.config = replace(cfg, **rule)
    try:
        if len(names) == 1 and names[0].startswith("gaussian"):
            s = parts[names[0]] / cfg.gaussian_scale
            return None, s
        chosen = {k.split("@")[0]: parts[k] for k in names}
        if edges:
            return model.content_outputs(*model.fuse(chosen), valid)
        return model.fuse(chosen, valid)
    finally:
        model.config = cfg


def edge_statistics(maps: torch.Tensor, dist: torch.Tensor, valid: torch.Tensor | None) -> dict:
    """Where the validation normals' fused maps (not equalised) peak, and how much more they vary
    at the frame's edge than inside: why the edge equalisation exists."""
    inside = torch.ones_like(maps, dtype=torch.bool) if valid is None else valid
    peak_d = torch.stack([d[v][m[v].argmax()] for m, d, v in zip(maps, dist, inside)]).float()
    band0, ref = maps[inside & (dist < EDGE_BIN)], maps[inside & (dist >= EDGE_REACH)]
    return {"normal_maxima_within_4px": float((peak_d < EDGE_BIN).float().mean()),
            "normal_maxima_within_32px": float((peak_d < EDGE_REACH).float().mean()),
            "pixels_within_32px": float((inside & (dist < EDGE_REACH)).sum() / inside.sum()),
            "spread_outer_band": float(band0.std()), "spread_interior": float(ref.std())}


def by_group(names: list[str], scores: dict[str, torch.Tensor]) -> str:
    """Each score's mean ± spread per group of images named ``GROUP_...`` (magnetic_tile's
    acquisition set-ups exp1..exp6), when there are several groups of 3 or more: how alike the
    normals of each mode score."""
    groups = np.array([n.split("_")[0] if "_" in n else "" for n in names])
    kept = sorted(g for g in set(groups) if g and (groups == g).sum() >= 3)
    if len(kept) < 2:
        return ""
    lines = []
    for label, v in scores.items():
        v = v.numpy() / float(v.mean())
        lines.append(f"{label}: " + ", ".join(f"{g} {v[groups == g].mean():.2f} ± {v[groups == g].std():.2f}"
                                              for g in kept))
    return "validation normals' global part (over its mean) per group of file names: " + "; ".join(lines) + "\n"


def recall_at(scores: np.ndarray, labels: np.ndarray, frr: float) -> float:
    """Recall at the threshold that rejects ``frr`` of the test set's good images: how well the
    scores separate at all, whatever threshold a fit chose (for reference; never stored)."""
    good = np.sort(scores[~labels])
    thr = good[min(len(good) - 1, int(np.ceil((1 - frr) * len(good))) - 1)]
    return float(np.mean(scores[labels] > thr))


def memory_at_levels(model, levels, train_images, m, val_images, test_images):
    """The memory map with a bank refitted at other teacher levels (same coreset rule), for the
    level ablation; returns (val maps, test maps) normalised like the checkpoint's."""
    from inspector.model.nets.model import DiscrepancyModel
    from trainer.signals import bank_size, collect, greedy_coreset

    cfg = replace(model.config, memory_levels=tuple(levels), memory_bank_size=1, gaussian=False)

    def batches():
        for i in range(0, len(train_images), 16):
            with torch.no_grad():
                yield model.teacher(prepare_batch(train_images[i:i + 16], m.input_geometry(), m.mean, m.std))

    g = m.input_geometry()
    patches, _ = collect(batches(), tuple(levels), cfg.memory_pool, True, False,
                         valid=g.valid_mask([g.placement(img.shape[:2]) for img in train_images]))
    bank = greedy_coreset(patches, bank_size(len(patches), m.training.get("coreset_fraction", 0.1)),
                          seed=m.training.get("seed", 0))
    other = DiscrepancyModel(model.teacher, model.student, replace(cfg, memory_bank_size=len(bank)))
    other.memory.bank.copy_(bank)
    val = all_parts(other, val_images, m)["memory"]
    test = all_parts(other, test_images, m)["memory"]
    scale = float(val.flatten(1).amax(1).mean())
    return val / scale * model.config.memory_scale, test / scale * model.config.memory_scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--memory-weights", default="0,0.25,0.5,0.75,1", metavar="W,W",
                    help="add a row of the whole model for each of these memory weights (the memory map's "
                         "share of the heatmap; the checkpoint's own is in the rows above)")
    ap.add_argument("--global-neighbours", default="0,1,3,5,7,10,20", metavar="K,K",
                    help="add a row of the whole model (edges equalised) for each of these neighbourhoods of the "
                         "global distance (0: the plain distance; needs a checkpoint that kept its training "
                         "normals, --global-neighbours > 0 at the fit)")
    ap.add_argument("--memory-levels", nargs="*", default=[], metavar="L,L",
                    help="also refit the memory bank at these teacher levels (e.g. 1,2) and add rows")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    engine = load_engine(args.checkpoint, "cpu", EngineOptions(backend="torch"))
    model, m = engine.model, engine.manifest
    if m.signals is None:
        raise SystemExit(f"{args.checkpoint} has no fused signals to ablate")
    index = scan_dataset(args.data)
    _, val_paths = split_train_val(index.train_paths, m.training.get("val_fraction", 0.1), m.training.get("seed", 0))
    val_images = [read_image(p) for p in val_paths]
    val = all_parts(model, val_images, m)
    images, masks, types = [], [], []
    geometry = m.input_geometry()
    val_valid = geometry.valid_mask([geometry.placement(img.shape[:2]) for img in val_images])
    for s in index.test:
        img, mask = load_sample(s)
        images.append(img)
        types.append(s.defect_type)
        masks.append(resize_mask(mask, geometry.hw) if mask is not None else np.zeros(geometry.hw, bool))
    placements = [geometry.placement(img.shape[:2]) for img in images]
    test_valid = geometry.valid_mask(placements)  # scores read each frame's part of its input
    test = all_parts(model, images, m)
    masks = np.stack(masks)
    labels = np.asarray([t != "good" for t in types])
    rows_spec = list(ROWS)
    train_paths, _ = split_train_val(index.train_paths, m.training.get("val_fraction", 0.1), m.training.get("seed", 0))
    for spec in args.memory_levels:
        levels = [int(x) for x in spec.split(",")]
        train_images = [read_image(p) for p in train_paths]
        key = f"memory@{spec}"
        val[key], test[key] = memory_at_levels(model, levels, train_images, m, val_images, images)
        del train_images
        rows_spec.insert(3, (f"patch memory alone, levels {spec}", (key,), "max", "empirical"))
        rows_spec.insert(len(rows_spec), (f"students + memory {spec} + Gaussian", ("student", key, "gaussian"),
                                          "max", "auto"))
    if "contrast" in val:  # a checkpoint fitted with --contrast-map: its map alone and the whole model
        rows_spec.insert(4, ("local-contrast map alone", ("contrast",), "max", "empirical"))
        rows_spec.append(("students + memory + Gaussian + local contrast (the checkpoint's model)",
                          ("student", "memory", "gaussian", "contrast"), "max", "auto"))
    # the edge equalisation: the checkpoint's own profile, or (older checkpoints) one measured here
    # on the validation normals' fused maps as the fit would (trainer.signals.fit_edge_profile)
    own = bool(model.config.edge_gain)
    # a checkpoint that kept the norm ratio: its students' part is the cosine and norm-ratio maps
    own_norm = bool(model.config.norm_map)
    students = ("student", "norm") if own_norm else ("student",)
    fused, _ = combine(model, val, (*students, "memory", "gaussian"), "max")
    dist = edge_distance(tuple(fused.shape), val_valid, "cpu")
    edge_facts = edge_statistics(fused, dist, val_valid)
    if not own:
        gain, offset = fit_profile(fused, dist, val_valid, EDGE_BIN)
        model.config = replace(model.config, edge_bin=EDGE_BIN, edge_gain=gain, edge_offset=offset)
    if model.config.edge_gain:
        rows_spec.insert(rows_spec.index(ROWS[7]) + 1,
                         ("students + memory + Gaussian, edges equalised " +
                          ("(the checkpoint's model)" if own else "(profile measured here)"),
                          ("student", "memory", "gaussian"), "max", "gumbel", None, True))
    kept_norm = model.config.norm_weight if own_norm else 0.0
    weighing = {r["memory_weight"]: r["separation"] for r in m.metrics.get("memory_weighing", [])
                if r.get("norm_weight", 0.0) == kept_norm}
    for w in (float(x) for x in args.memory_weights.split(",") if x):
        painted = f", painted separation {weighing[w]:.3f}" if w in weighing else ""
        rows_spec.append((f"students + memory + Gaussian, memory weight {w:g}{painted}",
                          ("student", "memory", "gaussian"), "max", "auto", w))
    group_facts = ""
    if model.gaussian is not None and model.gaussian.neighbours:
        own_k = model.gaussian.neighbours
        val["gaussian@0"], test["gaussian@0"] = global_at(model, val, test, 0)
        group_facts = by_group([Path(p).name for p in val_paths], {"plain distance": val["gaussian@0"],
                                                                   f"{own_k} neighbours": val["gaussian"]})
        rows_spec.insert(rows_spec.index(ROWS[3]), ("global Gaussian alone, plain distance", ("gaussian@0",),
                                                    "max", "empirical"))
        neighbourhoods = [int(x) for x in args.global_neighbours.split(",") if x]
        for k in neighbourhoods:
            key = f"gaussian@{k}" if k != own_k else "gaussian"
            if k != own_k:
                val[key], test[key] = global_at(model, val, test, k)
            label = "plain distance" if k == 0 else f"{k} neighbours" + (" (the checkpoint's model)" if k == own_k else "")
            rows_spec.append((f"students + memory + Gaussian, edges equalised, global {label}",
                              ("student", "memory", key), "max", "gumbel", None, True))
    # candidates measured against the model (not in it): a map of the students' feature-norm ratio,
    # the global part as the local outlier factor proper, and pooled over the frame's cells only
    if own_norm:  # the checkpoint's norm-ratio map alone, and the whole model without it
        for parts in (val, test):
            parts["student@cosine"] = parts["student"]
        rows_spec.insert(1, ("students' feature-norm ratio map alone", ("norm",), "max", "empirical"))
        rows_spec.append(("students (cosine map alone, no norm ratio) + memory + Gaussian, edges equalised",
                          ("student@cosine", "memory", "gaussian"), "max", "gumbel", None, True))
    else:
        val_peak = lambda v: float(v.flatten(1).amax(1).mean())  # noqa: E731
        ratio = val_peak(val["student"]) / val_peak(val["norm"])
        for parts in (val, test):
            parts["student@norm"] = parts["norm"] * ratio
            parts["student@both"] = (parts["student"] + parts["student@norm"]) / 2
        rows_spec.insert(1, ("students' feature-norm ratio map alone", ("student@norm",), "max", "empirical"))
        rows_spec.append(("students' cosine and norm-ratio maps averaged + memory + Gaussian, edges equalised",
                          ("student@both", "memory", "gaussian"), "max", "gumbel", None, True))
    if model.gaussian is not None and model.gaussian.neighbours:
        k = model.gaussian.neighbours
        val["gaussian@lof"], test["gaussian@lof"] = outlier_factor_at(model, val, test)
        train_images = [read_image(p) for p in train_paths]
        val["gaussian@frame"], test["gaussian@frame"] = frame_cells_global_at(model, m, train_images, val_images,
                                                                              images)
        del train_images
        for key, label in (("gaussian@lof", f"local outlier factor ({k} neighbours)"),
                           ("gaussian@frame", f"pooled over the frame's cells ({k} neighbours)")):
            rows_spec.append((f"global Gaussian alone, {label}", (key,), "max", "empirical"))
            rows_spec.append((f"students + memory + Gaussian, edges equalised, global {label}",
                              ("student", "memory", key), "max", "gumbel", None, True))
    if own_norm:  # the fused rows read the checkpoint's students' part, the norm ratio with the cosine
        rows_spec = [(name, tuple(x for n in names for x in (students if n == "student" else (n,)))
                      if len(names) > 1 else names, *rest) for name, names, *rest in rows_spec]
    rows = []
    for name, names, mode, calibration, *extra in rows_spec:
        w = extra[0] if extra else None
        edges = bool(extra[1]) if len(extra) > 1 else False
        _, val_scores = combine(model, val, names, mode, val_valid, w, edges)
        thr, cal = calibrate_threshold(val_scores.numpy(), m.target_frr, calibration)
        maps, scores = combine(model, test, names, mode, test_valid, w, edges)
        scores = scores.numpy()
        if maps is not None:  # each frame's part of its map on the evaluation grid (trainer.evaluate)
            maps = np.stack([to_grid(geometry.frame_map(mp, p), geometry.hw) for mp, p in zip(maps.numpy(), placements)])
        res = per_type_metrics(types, scores, maps, None if maps is None else masks)
        o = res["overall"]
        rows.append({"row": name, "image_auroc": o["image_auroc"], "pixel_auroc": o.get("pixel_auroc"),
                     "aupro": o.get("aupro"), "threshold": thr, "calibration": cal["method"],
                     "false_reject_rate": float(np.mean(scores[~labels] >= thr)),
                     "defect_recall": float(np.mean(scores[labels] >= thr)),
                     "recall_at_2pct_frr": recall_at(scores, labels, 0.02),
                     "per_type": {t: r["image_auroc"] for t, r in res["per_type"].items()},
                     "pixel_per_type": {t: r["pixel_auroc"] for t, r in res["per_type"].items() if "pixel_auroc" in r},
                     "pixel_within_frame": {} if maps is None else within_frame_auroc(maps, masks, types)})
        held = [rows[-1]["per_type"][t] for t in HELD_IN if t in rows[-1]["per_type"]]
        rows[-1]["held_in_mean"] = float(np.mean(held)) if held else None
        print(json.dumps(rows[-1]), flush=True)
    types_seen = sorted(rows[0]["per_type"])
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"\n{m.method} ({m.variant or '-'}), {m.teacher}, {geometry.describe()}, memory weight "
          f"{model.config.memory_weight:g}, best epoch "
          f"{m.metrics.get('best_epoch')}; fit: train {m.training.get('train_seconds')} s + signals "
          f"{m.training.get('signals_seconds')} s; target false-reject rate {m.target_frr:.3%}\n")
    print(f"validation normals (map before edge equalisation): {edge_facts['normal_maxima_within_4px']:.0%} of "
          f"their maxima within {EDGE_BIN} px of the frame's edge and {edge_facts['normal_maxima_within_32px']:.0%} "
          f"within {EDGE_REACH} px ({edge_facts['pixels_within_32px']:.0%} of the pixels); the map's spread in "
          f"the outermost {EDGE_BIN} px {edge_facts['spread_outer_band']:.3f}, beyond {EDGE_REACH} px "
          f"{edge_facts['spread_interior']:.3f}; edge gains {', '.join(f'{g:.2f}' for g in model.config.edge_gain)}"
          f"{'' if own else ' (measured here)'}\n")
    if group_facts:
        print(group_facts)
    print("| parts | image AUROC | pixel AUROC | AUPRO | false rejects | recall | recall at 2 % false rejects* | "
          "held-in types** | " + " | ".join(types_seen) + " |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(types_seen))
    for r in rows:
        print(f"| {r['row']} | {fmt(r['image_auroc'])} | {fmt(r['pixel_auroc'])} | {fmt(r['aupro'])} | "
              f"{r['false_reject_rate']:.1%} | {r['defect_recall']:.1%} | {r['recall_at_2pct_frr']:.1%} | "
              f"{fmt(r['held_in_mean'])} | "
              + " | ".join(fmt(r["per_type"][t]) for t in types_seen) + " |")
    pixel_types = [t for t in types_seen if any(r["pixel_per_type"].get(t) is not None for r in rows)]
    print("\n| parts | pixel AUROC | " + " | ".join(f"{t} pixel AUROC" for t in pixel_types) + " |")
    print("|---|---|" + "---|" * len(pixel_types))
    for r in rows:
        if r["pixel_auroc"] is not None:
            print(f"| {r['row']} | {fmt(r['pixel_auroc'])} | "
                  + " | ".join(fmt(r["pixel_per_type"].get(t)) for t in pixel_types) + " |")
    frame_types = sorted({t for r in rows for t in r["pixel_within_frame"]})
    print("\n| parts (maps) | " + " | ".join(f"{t} within its frames" for t in frame_types) + " |")
    print("|---|" + "---|" * len(frame_types))
    for r in rows:
        if r["pixel_within_frame"]:
            print(f"| {r['row']} | " + " | ".join(fmt(r["pixel_within_frame"].get(t)) for t in frame_types) + " |")
    print("\nfalse rejects and recall: on the test set at the threshold each row calibrates on the validation "
          "normals; *: at the threshold that rejects 2 % of the test set's good images (reference only); "
          f"**: mean image AUROC over {', '.join(HELD_IN)}, the types choices are made on. \"within its "
          "frames\": the pixel AUROC inside each defective frame alone, averaged over the type's frames.")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
