"""`trainer refresh --model NAME`: retrain from the normal-image store, gate, promote, announce.

Layout (``CHECKPOINTS`` = ``TRAINER_CHECKPOINTS_DIR``, a persistent volume shared with the workers)::

    CHECKPOINTS/<model>/<version>/        immutable checkpoints (model.safetensors + manifest.json)
    CHECKPOINTS/<model>/live -> <version> the live pointer (a relative symlink, replaced atomically);
                                          a worker may start with INSPECTOR_CHECKPOINT=CHECKPOINTS/<model>/live
    CHECKPOINTS/<model>/published.json    the last ModelUpdate acknowledged by the control topic
    CHECKPOINTS/<model>/history.jsonl     one JSON summary per refresh run (promoted or not, and why)
    CHECKPOINTS/<model>/refresh.lock      fcntl lock: one refresh per model at a time
    CHECKPOINTS/<model>/.work-*           scratch of a running refresh (removed; stale ones at the next run)

One run: take the lock (busy -> exit 11); split the store's images into training and held-out
normals (deterministic); warm-start from the live checkpoint (or from scratch); the fit calibrates
the threshold on its own validation split; then the candidate and the live model score the same
held-out normals (and the labelled set when ``TRAINER_EVAL_DIR`` is set). The gate promotes only
with enough images and no metric worse than the live model's by more than its margin. Promotion
writes ``CHECKPOINTS/<model>/<version>/`` atomically (temp dir, fsync, rename) with its lineage,
swaps the ``live`` pointer, and publishes a ``ModelUpdate`` (acks=all) on the workers' control
topic. A run killed at any point leaves either the old or the new complete checkpoint live, never
a half one; if it died between the pointer swap and the publish, the next run publishes again.

Exit codes: 0 promoted, 10 not promoted (the gate said no: the summary says why), 11 busy (another
refresh of the model holds the lock), 2 failed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from inspector.model.checkpoint import (
    CheckpointError,
    Manifest,
    manifest_sha256,
    read_manifest,
    read_weights,
    save_checkpoint,
)

from .settings import TrainerSettings
from .store import ModelStore, check_model_name
from inspector.support.durable import fsync_dir, write_bytes_atomic
from inspector.runtime.rollout import PUBLISHED_RECORD

__all__ = [
    "EXIT_BUSY",
    "EXIT_FAILED",
    "EXIT_NOT_PROMOTED",
    "EXIT_PROMOTED",
    "Busy",
    "adopt",
    "live_checkpoint",
    "model_lock",
    "refresh",
]

EXIT_PROMOTED = 0
EXIT_NOT_PROMOTED = 10
EXIT_BUSY = 11
EXIT_FAILED = 2

LIVE = "live"
PUBLISHED = PUBLISHED_RECORD  # read again by a starting worker (inspector/runtime/rollout.py)
HISTORY = "history.jsonl"
LOCK = "refresh.lock"


class Busy(RuntimeError):
    """Another refresh of the same model holds the lock."""


def _log() -> Any:
    return structlog.get_logger("trainer.refresh")




def _write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=2, default=str).encode())


# ----------------------------------------------------------------------------- lock, pointer

@contextmanager
def model_lock(model_dir: Path, timeout_s: float = 0.0) -> Iterator[Path]:
    """Exclusive ``flock`` on ``MODEL_DIR/refresh.lock``; raises Busy after ``timeout_s``.
    The kernel drops the lock when the process dies, so a killed run never blocks the next."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    raise Busy(f"another refresh of this model holds {path}") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


def live_checkpoint(model_dir: Path) -> Path | None:
    """The live version's directory, or None when the model has none yet."""
    link = model_dir / LIVE
    if not link.is_symlink() and not link.exists():
        return None
    target = link.resolve()
    if not (target / "manifest.json").is_file():
        raise CheckpointError(f"{link} points to {target}, which is not a checkpoint")
    return target


def _set_live(model_dir: Path, version: str) -> None:
    """Atomically point ``live`` at ``version`` (relative symlink, rename over the old one)."""
    tmp = model_dir / f".live.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(version, tmp)
    os.replace(tmp, model_dir / LIVE)
    fsync_dir(model_dir)


def _cleanup_stale(model_dir: Path) -> list[str]:
    """Remove what killed runs left behind (called with the lock held, so nobody is using it)."""
    removed = []
    for p in model_dir.iterdir():
        if p.name.startswith((".work-", ".live.tmp-")) or (p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def _versions(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.iterdir()
                  if p.is_dir() and not p.is_symlink() and not p.name.startswith(".") and (p / "manifest.json").is_file())


def _prune(model_dir: Path, keep: int) -> list[str]:
    live = live_checkpoint(model_dir)
    protect = set()
    if live is not None:
        protect.add(live.name)
        parent = read_manifest(live).parent_version
        if parent:
            protect.add(parent)
    versions = _versions(model_dir)
    keep_names = {p.name for p in versions[-keep:]} | protect
    removed = []
    for p in versions:
        if p.name not in keep_names:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


# ----------------------------------------------------------------------------- publish

def _location(settings: TrainerSettings, ckpt: Path) -> str:
    ckpt = ckpt.resolve()
    if settings.publish_relative:
        return f"{ckpt.parent.name}/{ckpt.name}"
    return str(ckpt)


def _is_rollback(model_dir: Path, manifest: Manifest) -> bool:
    """Announcing ``manifest`` goes back in time when a newer checkpoint of the model exists."""
    mine = manifest.created()
    if mine is None:
        return False
    for p in _versions(model_dir):
        other = read_manifest(p).created() if p.name != manifest.version else None
        if other is not None and other > mine:
            return True
    return False


def publish(settings: TrainerSettings, ckpt: Path) -> dict[str, Any]:
    """Sign ``ckpt``'s update (when a key is configured), keep the statement beside it, announce it on
    the control topic (key = model name, acks=all) and record it."""
    from kafka import KafkaProducer

    from inspector.runtime.rollout import ensure_control_topic, publish_update, update_for_checkpoint
    from inspector.model.signing import sign, write_statement

    ckpt = ckpt.resolve()
    update = update_for_checkpoint(ckpt, rollback=_is_rollback(ckpt.parent, read_manifest(ckpt)))
    update.checkpoint = _location(settings, ckpt)
    key = settings.signing_private_key()
    if key is not None:
        update = sign(update, key)
        write_statement(ckpt, update)
    else:
        _log().warning("model_update_unsigned", model=update.name, version=update.version,
                       hint="set TRAINER_SIGNING_KEY (trainer keygen) so that workers can verify who made it")
    ensure_control_topic(settings)  # type: ignore[arg-type]  # same attribute names as inspector's Settings
    producer = KafkaProducer(**settings.kafka_common(), client_id=f"{settings.kafka_client_id}-refresh",
                             acks="all", retries=5, request_timeout_ms=int(settings.publish_timeout_s * 1000))
    try:
        publish_update(producer, settings.models_topic, update, timeout_s=settings.publish_timeout_s)
    finally:
        producer.close(timeout=5)
    record = {**json.loads(update.to_bytes()), "topic": settings.models_topic}
    _write_json_atomic(ckpt.parent / PUBLISHED, record)
    _log().info("model_update_published", model=update.name, version=update.version, topic=settings.models_topic,
                checkpoint=update.checkpoint, rollback=update.rollback,
                signed_by=update.signature.key_id if update.signature else None)
    return record


def _republish_if_needed(settings: TrainerSettings, model_dir: Path, live: Path | None) -> bool:
    """A run killed between the pointer swap and the publish: announce the live version again."""
    if live is None:
        return False
    path = model_dir / PUBLISHED
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError):
        done = {}
    if done.get("version") == live.name and done.get("manifest_sha256") == manifest_sha256(live) \
            and done.get("topic") == settings.models_topic:
        return False
    _log().warning("live_not_published", version=live.name, published=done.get("version"))
    publish(settings, live)
    return True


# ----------------------------------------------------------------------------- adopt

def adopt(settings: TrainerSettings, model: str, checkpoint: str | Path, *, publish_update: bool = True) -> dict[str, Any]:
    """Make an existing checkpoint the live version (first deployment, or a rollback) and announce it.

    When a newer checkpoint of the model exists, the update is marked (and signed) as a rollback:
    workers refuse an older checkpoint otherwise."""
    check_model_name(model)
    model_dir = Path(settings.checkpoints_dir) / model
    src = Path(checkpoint).resolve()
    manifest = read_manifest(src)
    if manifest.name != model:
        raise CheckpointError(f"{src} is a checkpoint of model {manifest.name!r}, not {model!r} (workers route on the name)")
    with model_lock(model_dir, settings.lock_timeout_s):
        _cleanup_stale(model_dir)
        dest = model_dir / manifest.version
        if src != dest.resolve():
            if dest.exists():
                raise CheckpointError(f"{dest} exists already and is not {src}")
            save_checkpoint(dest, read_weights(src, manifest), manifest)  # verified copy, atomic
        previous = live_checkpoint(model_dir)
        _set_live(model_dir, manifest.version)
        published = publish(settings, dest) if publish_update else None
    return {"command": "refresh", "model": model, "outcome": "adopted", "version": manifest.version,
            "previous_version": previous.name if previous else None, "checkpoint": str(dest),
            "published": published is not None,
            "rollback": bool(published and published.get("rollback")),
            "signed_by": ((published or {}).get("signature") or {}).get("key_id")}


# ----------------------------------------------------------------------------- evaluation

def _read_images(paths: list[Path]) -> list[np.ndarray]:
    from inspector.contracts.decode import DecodeError, read_image

    out = []
    for p in paths:
        try:
            out.append(read_image(p))
        except (DecodeError, OSError) as exc:
            _log().warning("holdout_image_skipped", path=str(p), error=str(exc)[:200])
    return out


def _scores(engine: Any, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
    out = [engine.scores(images[i:i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros(0)


def _position(scores: np.ndarray, manifest: Manifest) -> np.ndarray:
    """Where scores sit between the model's own calibration normals (0 = their median) and its
    threshold (1): a unit-free scale on which two models' normal scores can be compared."""
    ref = float(manifest.score_stats.get("p50", 0.0))
    span = float(manifest.threshold) - ref
    if not np.isfinite(span) or span <= 1e-12:
        span = float(manifest.score_stats.get("std", 0.0)) or 1.0
    return (scores - ref) / span


def _normal_metrics(engine: Any, images: list[np.ndarray]) -> dict[str, Any]:
    from .metrics import score_stats

    s = _scores(engine, images)
    thr = float(engine.threshold)
    pos = _position(s, engine.manifest)
    return {"version": engine.version, "threshold": thr, "false_reject_rate": float(np.mean(s >= thr)),
            "median_position": float(np.median(pos)), "p95_position": float(np.percentile(pos, 95)),
            "score_stats": score_stats(s)}


def _labelled_metrics(ckpt: Path, eval_dir: Path, device: str | None) -> dict[str, Any]:
    from .evaluate import evaluate

    r = evaluate(ckpt, eval_dir, None, device, keep_scores=True)
    p50 = (r.get("good_score_stats") or {}).get("p50")
    thr = float(r["threshold"])
    manifest = read_manifest(ckpt)
    return {"image_auroc": r["image_auroc"], "pixel_auroc": r.get("pixel_auroc"), "aupro": r.get("aupro"),
            "false_reject_rate": r.get("false_reject_rate"), "defect_recall": r.get("defect_recall"),
            "threshold": thr, "n_images": r["n_images"], "n_good": (r.get("good_score_stats") or {}).get("n", 0),
            "_scores": np.asarray(r["scores"]), "_labels": np.asarray(r["labels"], dtype=bool),
            "good_median_position": None if p50 is None else float(_position(np.array([p50]), manifest)[0])}


def _recall_at_frr(lab: dict[str, Any], frr: float) -> float:
    """Defect recall at the threshold that gives false-reject rate ``frr`` on the labelled good images."""
    from .metrics import threshold_for_false_reject_rate

    scores, labels = lab["_scores"], lab["_labels"]
    thr = threshold_for_false_reject_rate(scores[~labels], min(frr, 0.999))
    return float(np.mean(scores[labels] >= thr))


def _public(lab: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if lab is None else {k: v for k, v in lab.items() if not k.startswith("_")}


def _frr_margin(margin: float, n: int) -> float:
    """The configured FRR margin, but never below one image: a single extra reject among n images
    is not evidence that a model got worse."""
    return max(margin, 1.0 / n) if n else margin


def gate(settings: TrainerSettings, cand: dict[str, Any], live: dict[str, Any] | None,
         cand_lab: dict[str, Any] | None, live_lab: dict[str, Any] | None, target_frr: float) -> tuple[list[str], dict[str, float]]:
    """Reasons to refuse the candidate (empty: promote) and the compared deltas."""
    reasons: list[str] = []
    deltas: dict[str, float] = {}
    s = settings
    if live is None:
        margin = _frr_margin(s.max_frr_increase, cand["score_stats"]["n"])
        if cand["false_reject_rate"] > target_frr + margin:
            reasons.append(f"false-reject rate on held-out normals {cand['false_reject_rate']:.3f} > "
                           f"target {target_frr:.3f} + margin {margin:.3f} (no live model to compare with)")
        return reasons, deltas
    d_frr = cand["false_reject_rate"] - live["false_reject_rate"]
    shift = cand["median_position"] - live["median_position"]
    deltas.update(holdout_frr_increase=d_frr, holdout_normal_score_shift=shift)
    margin = _frr_margin(s.max_frr_increase, cand["score_stats"]["n"])
    if d_frr > margin:
        reasons.append(f"false-reject rate on held-out normals {cand['false_reject_rate']:.3f} is worse than the live "
                       f"model's {live['false_reject_rate']:.3f} by more than {margin:.3f}")
    if shift > s.max_normal_score_shift:
        reasons.append(f"held-out normal scores moved towards the threshold: median position {cand['median_position']:.3f} "
                       f"vs live {live['median_position']:.3f} (0 = calibration median, 1 = threshold; "
                       f"shift {shift:+.3f} > {s.max_normal_score_shift:.3f})")
    if cand_lab is not None and live_lab is not None:
        for key, margin, label in (("image_auroc", s.max_auroc_drop, "image AUROC"), ("aupro", s.max_aupro_drop, "AUPRO")):
            c, l_ = cand_lab.get(key), live_lab.get(key)
            if c is None or l_ is None:
                continue
            deltas[f"labelled_{key}_drop"] = l_ - c
            if l_ - c > margin:
                reasons.append(f"{label} on the labelled set {c:.4f} is below the live model's {l_:.4f} by more than {margin:.3f}")
        c, l_ = cand_lab.get("defect_recall"), live_lab.get("defect_recall")
        if c is not None and l_ is not None:
            deltas["labelled_recall_drop"] = l_ - c
            if l_ - c > s.max_recall_drop:
                # Each model is judged at its own threshold. Lost recall is excused only where it
                # buys fewer false rejects (the live threshold was over-tight) and the candidate,
                # held to the live model's false-reject rate, recalls as much. A candidate whose
                # threshold rose without that gain (e.g. defects among its "normals") is refused.
                c_frr, l_frr = cand_lab.get("false_reject_rate") or 0.0, live_lab.get("false_reject_rate") or 0.0
                if c_frr < l_frr:
                    matched = _recall_at_frr(cand_lab, l_frr)
                    deltas["labelled_recall_drop_at_live_frr"] = l_ - matched
                    if l_ - matched > s.max_recall_drop:
                        reasons.append(f"defect recall on the labelled set {c:.3f} is below the live model's {l_:.3f} by "
                                       f"more than {s.max_recall_drop:.3f}, and still {matched:.3f} at the live model's "
                                       f"false-reject rate (the candidate ranks defects worse)")
                else:
                    reasons.append(f"defect recall on the labelled set {c:.3f} is below the live model's {l_:.3f} by more "
                                   f"than {s.max_recall_drop:.3f} without fewer false rejects "
                                   f"({c_frr:.3f} vs {l_frr:.3f}): the new threshold lets defects through")
        c, l_ = cand_lab.get("false_reject_rate"), live_lab.get("false_reject_rate")
        if c is not None and l_ is not None:
            deltas["labelled_frr_increase"] = c - l_
            margin = _frr_margin(s.max_frr_increase, cand_lab.get("n_good") or 0)
            if c - l_ > margin:
                reasons.append(f"false-reject rate on the labelled set's good images {c:.3f} is worse than the live "
                               f"model's {l_:.3f} by more than {margin:.3f}")
        c, l_ = cand_lab.get("good_median_position"), live_lab.get("good_median_position")
        if c is not None and l_ is not None:
            deltas["labelled_normal_score_shift"] = c - l_
            if c - l_ > s.max_normal_score_shift:
                reasons.append(f"the labelled set's good images moved towards the threshold: median position "
                               f"{c:.3f} vs live {l_:.3f} (shift {c - l_:+.3f} > {s.max_normal_score_shift:.3f})")
    return reasons, deltas


# ----------------------------------------------------------------------------- refresh

def _link(src: Path, dst: Path) -> Path | None:
    """Hard link (symlink across file systems); None when ``src`` was evicted since it was listed."""
    try:
        os.link(src, dst)
    except FileNotFoundError:
        return None
    except OSError:
        os.symlink(src.resolve(), dst)
    return dst


def _link_all(paths: list[Path], folder: Path) -> list[Path]:
    return [d for d in (_link(p, folder / p.name) for p in paths) if d is not None]


def refresh(settings: TrainerSettings, model: str, *, from_scratch: bool = False) -> tuple[int, dict[str, Any]]:
    """One refresh run. Returns (exit code, JSON-able summary); never raises for Busy."""
    t0 = time.monotonic()
    check_model_name(model)
    model_dir = Path(settings.checkpoints_dir) / model
    summary: dict[str, Any] = {"command": "refresh", "model": model}
    log = _log().bind(model=model)
    try:
        with model_lock(model_dir, settings.lock_timeout_s):
            try:
                code = _refresh_locked(settings, model, model_dir, summary, from_scratch, log)
            except Exception as exc:  # noqa: BLE001 - one clear failure for the scheduler; live stays as it was
                code = EXIT_FAILED
                summary.update(outcome="failed", error=type(exc).__name__, message=str(exc)[:2000],
                               reasons=[f"{type(exc).__name__}: {str(exc)[:500]}"])
                log.error("refresh_failed", error=type(exc).__name__, detail=str(exc)[:500])
    except Busy as exc:
        summary.update(outcome="busy", reasons=[str(exc)])
        log.warning("refresh_busy", detail=str(exc))
        return EXIT_BUSY, {**summary, "exit_code": EXIT_BUSY, "seconds": round(time.monotonic() - t0, 2)}
    summary.update(exit_code=code, seconds=round(time.monotonic() - t0, 2))
    try:
        with open(model_dir / HISTORY, "a") as fh:
            fh.write(json.dumps(summary, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        log.warning("history_not_written", error=str(exc))
    return code, summary


def _refresh_locked(settings: TrainerSettings, model: str, model_dir: Path, summary: dict[str, Any],
                    from_scratch: bool, log: Any) -> int:
    from .data import data_fingerprint, split_train_val
    from .fit import FitConfig, fit

    stale = _cleanup_stale(model_dir)
    if stale:
        log.info("stale_files_removed", files=stale)
    live = live_checkpoint(model_dir)
    live_manifest: Manifest | None = read_manifest(live) if live else None
    summary["live_version"] = live_manifest.version if live_manifest else None
    summary["republished"] = _republish_if_needed(settings, model_dir, live)

    store = ModelStore(settings.store_dir, model, max_images=settings.store_max_images,
                       max_bytes=settings.store_max_bytes, buckets=settings.retention_buckets,
                       limits=settings.decode_limits())
    try:
        images = [i for i in store.images() if i.path.is_file()]
        store_stats = store.stats()
    finally:
        store.close()
    summary["images"] = {"store": len(images)}
    if len(images) < settings.min_images:
        reason = (f"too few images in the store for model {model!r}: {len(images)} < min_images {settings.min_images}; "
                  f"collect more confirmed-normal frames (trainer collect) before refreshing")
        summary.update(outcome="not_promoted", reasons=[reason])
        log.warning("refresh_not_promoted", reasons=[reason])
        return EXIT_NOT_PROMOTED

    train_paths, holdout_paths = split_train_val([i.path for i in images], settings.val_fraction, settings.seed)
    summary["images"].update(train=len(train_paths), holdout=len(holdout_paths))
    work = model_dir / f".work-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    good = work / "data" / "train" / "good"
    good.mkdir(parents=True)
    (work / "holdout").mkdir()
    try:
        # hard links pin the bytes even if `collect` evicts them meanwhile (symlinks across file systems)
        train_paths = _link_all(train_paths, good)
        holdout_paths = _link_all(holdout_paths, work / "holdout")
        warm = live_manifest is not None and settings.warm_start and not from_scratch
        ref = live_manifest
        target_frr = ref.target_frr if ref else settings.target_frr
        cfg = FitConfig(
            data=work / "data", out=work / "candidate", name=model,
            method=ref.method if ref else settings.method,
            variant=(ref.variant or "dual") if ref else "dual",
            teacher=ref.teacher if ref else settings.teacher,
            image_size=ref.image_size if ref else settings.image_size,
            # a refreshed model keeps the live one's input, so the gate compares like with like
            input_size=ref.input_geometry().hw if ref else None,
            resize=ref.input_geometry().resize if ref else "pad",
            tile=(ref.tiling.tile if ref.tiling else None) if ref else "auto",
            overlap=ref.tiling.overlap if ref and ref.tiling else None,
            score_mode=ref.score_mode if ref else "max", topk_fraction=ref.topk_fraction if ref else 0.01,
            loss=ref.loss if ref else "map",
            target_frr=target_frr, epochs=settings.epochs, batch_size=settings.batch_size, seed=settings.seed,
            lr=settings.warm_start_lr if warm else settings.lr,
            val_fraction=settings.val_fraction, device=settings.device, init_from=live if warm else None,
            progress=sys.stderr.isatty(),
        )
        log.info("refresh_fit_start", warm_start=warm, parent=summary["live_version"], train_images=len(train_paths),
                 holdout_images=len(holdout_paths), epochs=cfg.epochs)
        fitted = fit(cfg)
        candidate = Path(fitted["checkpoint"])
        summary["candidate_version"] = fitted["version"]
        summary["warm_start"] = warm

        from inspector.engine.engine import load_engine

        holdout = _read_images(holdout_paths)
        cand_engine = load_engine(candidate, settings.device)
        cand = _normal_metrics(cand_engine, holdout)
        del cand_engine
        live_m = None
        if live is not None:
            live_engine = load_engine(live, settings.device)
            live_m = _normal_metrics(live_engine, holdout)
            del live_engine
        cand_lab = live_lab = None
        if settings.eval_dir is not None:
            cand_lab = _labelled_metrics(candidate, Path(settings.eval_dir), settings.device)
            if live is not None:
                live_lab = _labelled_metrics(live, Path(settings.eval_dir), settings.device)
        reasons, deltas = gate(settings, cand, live_m, cand_lab, live_lab, target_frr)
        metrics = {"candidate": {"holdout": cand, "labelled": _public(cand_lab)},
                   "live": {"holdout": live_m, "labelled": _public(live_lab)} if live is not None else None,
                   "deltas": deltas}
        summary["metrics"] = metrics
        log.info("refresh_gate", passed=not reasons, reasons=reasons, **{k: round(v, 4) for k, v in deltas.items()})
        if reasons:
            summary.update(outcome="not_promoted", reasons=reasons)
            log.warning("refresh_not_promoted", reasons=reasons, candidate=fitted["version"])
            return EXIT_NOT_PROMOTED

        # --- promotion -----------------------------------------------------------------------------
        cm = read_manifest(candidate)
        lineage = {
            "parent_version": cm.parent_version, "warm_start": warm, "store_images": len(images),
            "train_images": len(train_paths), "holdout_images": len(holdout_paths),
            "holdout_fingerprint": data_fingerprint(holdout_paths) if holdout_paths else None,
            "store": {k: store_stats[k] for k in ("oldest_ms", "newest_ms", "cameras", "lines")},
            "gate": {"max_frr_increase": settings.max_frr_increase,
                     "max_normal_score_shift": settings.max_normal_score_shift,
                     "max_auroc_drop": settings.max_auroc_drop, "max_aupro_drop": settings.max_aupro_drop,
                     "max_recall_drop": settings.max_recall_drop,
                     "eval_dir": str(settings.eval_dir) if settings.eval_dir else None},
        }
        manifest = cm.model_copy(update={
            "metrics": {**cm.metrics, "refresh": metrics},
            "training": {**cm.training, "refresh": lineage},
        })
        final = model_dir / cm.version
        log.info("promotion_start", version=cm.version)
        save_checkpoint(final, read_weights(candidate, cm), manifest)
        _set_live(model_dir, cm.version)
        summary.update(outcome="promoted", promoted_version=cm.version, checkpoint=str(final), reasons=[])
        log.info("live_pointer_updated", version=cm.version, previous=summary["live_version"])
        summary["published"] = publish(settings, final)
        summary["pruned"] = _prune(model_dir, settings.keep_versions)
        return EXIT_PROMOTED
    finally:
        shutil.rmtree(work, ignore_errors=True)
