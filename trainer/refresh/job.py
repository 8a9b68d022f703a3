"""One refresh run: lock, store, split, fit, evaluate, gate, promote, history.

Take the model's lock (busy -> exit 11); split the store's images into training and held-out
normals (deterministic); warm-start from the live checkpoint (or from scratch); the fit calibrates
the threshold on its own validation split; then the candidate and the live model, each loaded once,
score the same held-out normals (and the labelled set when ``TRAINER_EVAL_DIR`` is set). The gate
promotes only with enough images and no metric worse than the live model's by more than its margin.
Every run, promoted or not, is appended to the model's history."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from inspector.model.checkpoint import Manifest, read_manifest
from inspector.model.repository import Busy, ModelRepository

from ..settings import TrainerSettings
from ..store import ModelStore, check_model_name
from .gate import GateFinding, enough_images, gate
from .measure import labelled_metrics, normal_metrics, public, read_images
from .promote import promote, publish, republish_if_needed

__all__ = ["EXIT_BUSY", "EXIT_FAILED", "EXIT_NOT_PROMOTED", "EXIT_PROMOTED", "refresh"]

EXIT_PROMOTED = 0
EXIT_NOT_PROMOTED = 10
EXIT_BUSY = 11
EXIT_FAILED = 2


def refresh(settings: TrainerSettings, model: str, *, from_scratch: bool = False) -> tuple[int, dict[str, Any]]:
    """One refresh run. Returns (exit code, JSON-able summary); never raises for Busy.

    The summary's ``reasons`` are sentences for people; ``gate`` (where the gate ran) lists
    ``{"code": GateReason, "message": sentence}``, empty when the candidate was promoted."""
    t0 = time.monotonic()
    check_model_name(model)
    repo = ModelRepository(settings.checkpoints_dir)
    summary: dict[str, Any] = {"command": "refresh", "model": model}
    log = structlog.get_logger("trainer.refresh").bind(model=model)
    try:
        with repo.lock(model, settings.lock_timeout_s):
            try:
                code = _refresh_locked(settings, repo, model, summary, from_scratch, log)
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
        repo.append_history(model, summary)
    except OSError as exc:
        log.warning("history_not_written", error=str(exc))
    return code, summary


def _not_promoted(summary: dict[str, Any], findings: list[GateFinding], log: Any, **extra: Any) -> int:
    reasons = [f.message for f in findings]
    summary.update(outcome="not_promoted", reasons=reasons, gate=[f.model_dump(mode="json") for f in findings])
    log.warning("refresh_not_promoted", reasons=reasons, codes=[f.code.value for f in findings], **extra)
    return EXIT_NOT_PROMOTED


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


def _fit_config(settings: TrainerSettings, model: str, work: Path, live: Path | None, ref: Manifest | None,
                warm: bool) -> Any:
    """The candidate's training: a refreshed model keeps the live one's method, teacher, input,
    tiling and local-contrast map, so the gate compares like with like; without a live model, the
    settings decide."""
    from ..fit import FitConfig

    return FitConfig(
        data=work / "data", out=work / "candidate", name=model,
        method=ref.method if ref else settings.method,
        variant=(ref.variant or "dual") if ref else "dual",
        teacher=ref.teacher if ref else settings.teacher,
        image_size=ref.image_size if ref else settings.image_size,
        input_size=ref.input_geometry().hw if ref else None,
        resize=ref.input_geometry().resize if ref else "pad",
        tile=(ref.tiling.tile if ref.tiling else None) if ref else "auto",
        overlap=ref.tiling.overlap if ref and ref.tiling else None,
        zoom=ref.tiling.zoom if ref and ref.tiling else 1,
        contrast_map=bool(ref and ref.signals and ref.signals.contrast),
        contrast_lines=ref.signals.contrast_lines if ref and ref.signals else FitConfig.contrast_lines,
        score_mode=ref.score_mode if ref else "max", topk_fraction=ref.topk_fraction if ref else 0.01,
        loss=ref.loss if ref else "map",
        target_frr=ref.target_frr if ref else settings.target_frr,
        epochs=settings.epochs, batch_size=settings.batch_size, seed=settings.seed,
        lr=settings.warm_start_lr if warm else settings.lr,
        val_fraction=settings.val_fraction, device=settings.device, init_from=live if warm else None,
        progress=sys.stderr.isatty(),
    )


def _measure(ckpt: Path, holdout: list[Any], settings: TrainerSettings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load ``ckpt``'s engine once; its metrics on the held-out normals and on the labelled set."""
    from inspector.engine.engine import load_engine

    engine = load_engine(ckpt, settings.device)  # released on return, before the next model is loaded
    normals = normal_metrics(engine, holdout)
    labelled = labelled_metrics(engine, Path(settings.eval_dir)) if settings.eval_dir is not None else None
    return normals, labelled


def _refresh_locked(settings: TrainerSettings, repo: ModelRepository, model: str, summary: dict[str, Any],
                    from_scratch: bool, log: Any) -> int:
    from ..data import data_fingerprint, split_train_val
    from ..fit import fit

    stale = repo.remove_leftovers(model)
    if stale:
        log.info("stale_files_removed", files=stale)
    live = repo.live(model)
    live_manifest: Manifest | None = read_manifest(live) if live else None
    summary["live_version"] = live_manifest.version if live_manifest else None
    summary["republished"] = republish_if_needed(settings, model, live)

    store = ModelStore(settings.store_dir, model, max_images=settings.store_max_images,
                       max_bytes=settings.store_max_bytes, buckets=settings.retention_buckets,
                       limits=settings.decode_limits())
    try:
        images = [i for i in store.images() if i.path.is_file()]
        store_stats = store.stats()
    finally:
        store.close()
    summary["images"] = {"store": len(images)}
    too_few = enough_images(model, len(images), settings.min_images)
    if too_few:
        return _not_promoted(summary, too_few, log)

    train_paths, holdout_paths = split_train_val([i.path for i in images], settings.val_fraction, settings.seed)
    summary["images"].update(train=len(train_paths), holdout=len(holdout_paths))
    with repo.scratch(model) as work:
        good = work / "data" / "train" / "good"
        good.mkdir(parents=True)
        (work / "holdout").mkdir()
        # hard links pin the bytes even if `collect` evicts them meanwhile (symlinks across file systems)
        train_paths = _link_all(train_paths, good)
        holdout_paths = _link_all(holdout_paths, work / "holdout")
        warm = live_manifest is not None and settings.warm_start and not from_scratch
        target_frr = live_manifest.target_frr if live_manifest else settings.target_frr
        cfg = _fit_config(settings, model, work, live, live_manifest, warm)
        log.info("refresh_fit_start", warm_start=warm, parent=summary["live_version"], train_images=len(train_paths),
                 holdout_images=len(holdout_paths), epochs=cfg.epochs)
        fitted = fit(cfg)
        candidate = Path(fitted["checkpoint"])
        summary["candidate_version"] = fitted["version"]
        summary["warm_start"] = warm

        holdout = read_images(holdout_paths)
        cand, cand_lab = _measure(candidate, holdout, settings)
        live_m = live_lab = None
        if live is not None:
            live_m, live_lab = _measure(live, holdout, settings)
        findings, deltas = gate(settings, cand, live_m, cand_lab, live_lab, target_frr)
        metrics = {"candidate": {"holdout": cand, "labelled": public(cand_lab)},
                   "live": {"holdout": live_m, "labelled": public(live_lab)} if live is not None else None,
                   "deltas": deltas}
        summary["metrics"] = metrics
        log.info("refresh_gate", passed=not findings, reasons=[f.message for f in findings],
                 codes=[f.code.value for f in findings], **{k: round(v, 4) for k, v in deltas.items()})
        if findings:
            return _not_promoted(summary, findings, log, candidate=fitted["version"])

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
        final = promote(settings, model, candidate, manifest)
        summary.update(outcome="promoted", promoted_version=cm.version, checkpoint=str(final), reasons=[], gate=[])
        log.info("live_pointer_updated", version=cm.version, previous=summary["live_version"])
        summary["published"] = publish(settings, final)
        summary["pruned"] = repo.prune(model, settings.keep_versions)
        return EXIT_PROMOTED
