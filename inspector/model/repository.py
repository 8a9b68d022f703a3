"""The models volume: the one reader and writer of its layout (after Triton's model repository).

Layout (``ROOT`` = the trainer's ``TRAINER_CHECKPOINTS_DIR`` = the workers' ``INSPECTOR_MODELS_DIR``,
a persistent volume they share)::

    ROOT/<model>/<version>/        immutable checkpoints (model.safetensors + manifest.json [+ signature.json])
    ROOT/<model>/live -> <version> the live pointer (a relative symlink, replaced atomically);
                                   a worker may start with INSPECTOR_CHECKPOINT=ROOT/<model>/live
    ROOT/<model>/published.json    the last ModelUpdate acknowledged by the control topic (and the topic)
    ROOT/<model>/history.jsonl     one JSON summary per refresh run (promoted or not, and why)
    ROOT/<model>/refresh.lock      fcntl lock: one writer of the model at a time
    ROOT/<model>/.work-*           scratch of a running refresh (removed; stale ones at the next run)

The trainer writes it (``trainer/refresh/``, holding the model's lock); a worker's rollout reads it
(where an update may point, the published record at start-up). Versions are ordered by name:
``checkpoint.new_version()`` names start with their UTC creation time. A write killed at any point
leaves either the old or the new complete checkpoint live, never a half one: versions are written
to a temporary folder and renamed, the pointer is a symlink renamed over the old one, and what a
killed writer left behind (``.work-*``, ``.*.tmp-*``, ``.*.old-*``) goes at the next locked write.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError

from inspector.contracts.wire import ModelUpdate
from inspector.model.checkpoint import (
    MANIFEST_FILE,
    CheckpointError,
    Manifest,
    manifest_sha256,
    read_manifest,
    save_checkpoint,
)
from inspector.support.durable import fsync_dir, write_bytes_atomic

if TYPE_CHECKING:
    import torch

__all__ = [
    "HISTORY",
    "LIVE",
    "LOCK",
    "PUBLISHED",
    "SCRATCH_PREFIX",
    "Busy",
    "ModelRepository",
    "PublishedRecord",
    "update_for_checkpoint",
]

LIVE = "live"
PUBLISHED = "published.json"
HISTORY = "history.jsonl"
LOCK = "refresh.lock"
SCRATCH_PREFIX = ".work-"
#: A published record larger than this is not one (a worker reads it at start-up).
MAX_RECORD_BYTES = 64 * 1024


class Busy(RuntimeError):
    """Another writer (a refresh, an adopt) of the same model holds its lock."""


class PublishedRecord(ModelUpdate):
    """``<model>/published.json``: the update the control topic last acknowledged, and which topic.

    A worker starting later takes it into account beside the topic's records, so a replay that
    compaction left as the topic's only record does not decide what it serves."""

    topic: str | None = Field(None, description="Control topic the update was published on.")

    def as_update(self) -> ModelUpdate:
        return ModelUpdate.model_validate(self.model_dump(exclude={"topic"}))


def update_for_checkpoint(checkpoint_dir: str | Path, *, rollback: bool = False) -> ModelUpdate:
    """An unsigned ModelUpdate announcing a checkpoint directory by its absolute path (the trainer
    signs it; tests and dev tools announce checkpoints with it)."""
    manifest = read_manifest(checkpoint_dir)
    return ModelUpdate(
        name=manifest.name,
        version=manifest.version,
        checkpoint=str(Path(checkpoint_dir).resolve()),
        manifest_sha256=manifest_sha256(checkpoint_dir),
        published_at=float(int(time.time() * 1000)),
        rollback=rollback,
    )


def _component(kind: str, name: str) -> str:
    """A model or version name is one visible path component (no '..', no '/', no hidden names);
    no version is called like the live pointer."""
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name or "\\" in name \
            or "\x00" in name or (kind == "version" and name == LIVE):
        raise ValueError(f"invalid {kind} name {name!r} for the models directory")
    return name


def _is_leftover(name: str) -> bool:
    """What a killed writer leaves: refresh scratch, a pointer being swapped, a half-written
    checkpoint or file (``.<name>.tmp-*``) or a replaced one not yet removed (``.<name>.old-*``)."""
    return name.startswith((SCRATCH_PREFIX, ".live.tmp-")) or (
        name.startswith(".") and (".tmp-" in name or ".old-" in name))


class ModelRepository:
    """The models volume rooted at ``root``. Holds no state but the path: every call reads the disk."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    # -- paths --------------------------------------------------------------------------------
    def model_dir(self, model: str) -> Path:
        return self.root / _component("model", model)

    def version_dir(self, model: str, version: str) -> Path:
        return self.model_dir(model) / _component("version", version)

    def live_link(self, model: str) -> Path:
        """The pointer itself (what ``INSPECTOR_CHECKPOINT`` may name to follow promotions at start-up)."""
        return self.model_dir(model) / LIVE

    def resolve(self, location: str) -> Path:
        """An update's checkpoint location → a directory inside the repository, the only place
        updates may point.

        A relative path is taken from the root; an absolute path or ``file://`` URL is allowed
        when it lies inside it. Symlinks and ``..`` are followed first, so neither leads out."""
        if location.startswith("file://"):
            location = location[len("file://"):]
        elif "://" in location:
            raise ValueError(f"unsupported checkpoint location scheme: {location.split('://', 1)[0]}")
        if not location or "\x00" in location:
            raise ValueError("empty or malformed checkpoint location")
        root = self.root.resolve()
        path = Path(location)
        resolved = (path if path.is_absolute() else root / path).resolve()
        if not resolved.is_relative_to(root):
            raise ValueError(f"checkpoint location {location!r} resolves to {resolved}, outside the models "
                             f"directory {root} (INSPECTOR_MODELS_DIR)")
        return resolved

    def location(self, checkpoint: Path, *, relative: bool) -> str:
        """How an update names ``checkpoint``: ``<model>/<version>`` (relative to the workers' models
        directory, wherever they mount it) or the absolute path."""
        resolved = Path(checkpoint).resolve()
        if relative:
            return resolved.relative_to(self.root.resolve()).as_posix()
        return str(resolved)

    # -- versions and the live pointer -------------------------------------------------------
    def versions(self, model: str) -> list[Path]:
        """The model's complete checkpoints, oldest first."""
        folder = self.model_dir(model)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()
                      and not p.name.startswith(".") and (p / MANIFEST_FILE).is_file())

    def live(self, model: str) -> Path | None:
        """The live version's directory, or None when the model has none yet."""
        link = self.live_link(model)
        if not link.is_symlink() and not link.exists():
            return None
        target = link.resolve()
        if not (target / MANIFEST_FILE).is_file():
            raise CheckpointError(f"{link} points to {target}, which is not a checkpoint")
        return target

    def set_live(self, model: str, version: str) -> None:
        """Atomically point ``live`` at ``version`` (a relative symlink renamed over the old one)."""
        folder = self.model_dir(model)
        if not (self.version_dir(model, version) / MANIFEST_FILE).is_file():
            raise CheckpointError(f"{folder / version} is not a checkpoint: live cannot point to it")
        tmp = folder / f".live.tmp-{uuid.uuid4().hex[:8]}"
        os.symlink(version, tmp)
        os.replace(tmp, folder / LIVE)
        fsync_dir(folder)

    def write_version(self, model: str, weights: dict[str, torch.Tensor], manifest: Manifest) -> Path:
        """Write ``manifest.version`` of ``model`` (temporary folder, fsync, rename). Versions are
        immutable: an existing one is never replaced."""
        if manifest.name != model:
            raise CheckpointError(f"a checkpoint of model {manifest.name!r} does not belong under {model!r}")
        dest = self.version_dir(model, manifest.version)
        if dest.exists() or dest.is_symlink():
            raise CheckpointError(f"{dest} exists already (versions are immutable)")
        save_checkpoint(dest, weights, manifest)
        return dest

    def is_rollback(self, manifest: Manifest) -> bool:
        """Announcing ``manifest`` goes back in time when a newer checkpoint of the model exists."""
        mine = manifest.created()
        if mine is None:
            return False
        for p in self.versions(manifest.name):
            other = read_manifest(p).created() if p.name != manifest.version else None
            if other is not None and other > mine:
                return True
        return False

    def update_for(self, checkpoint: Path, *, relative: bool = False) -> ModelUpdate:
        """The unsigned update announcing a checkpoint of this repository, marked as a rollback when
        a newer checkpoint of its model exists (workers refuse an older one otherwise)."""
        update = update_for_checkpoint(checkpoint, rollback=self.is_rollback(read_manifest(checkpoint)))
        return update.model_copy(update={"checkpoint": self.location(checkpoint, relative=relative)})

    def prune(self, model: str, keep: int) -> list[str]:
        """Remove all but the newest ``keep`` versions; never the live one nor its parent."""
        live = self.live(model)
        protect = set()
        if live is not None:
            protect.add(live.name)
            parent = read_manifest(live).parent_version
            if parent:
                protect.add(parent)
        versions = self.versions(model)
        keep_names = {p.name for p in versions[-keep:]} | protect
        removed = []
        for p in versions:
            if p.name not in keep_names:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        return removed

    # -- writers: lock, scratch, leftovers ----------------------------------------------------
    @contextmanager
    def lock(self, model: str, timeout_s: float = 0.0) -> Iterator[Path]:
        """Exclusive ``flock`` on ``<model>/refresh.lock``; raises Busy after ``timeout_s``.
        The kernel drops the lock when the process dies, so a killed writer never blocks the next."""
        folder = self.model_dir(model)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / LOCK
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

    @contextmanager
    def scratch(self, model: str) -> Iterator[Path]:
        """A fresh ``.work-*`` folder on the volume (hard links and renames stay on one file
        system), removed afterwards; a killed run's is removed by ``remove_leftovers``."""
        work = self.model_dir(model) / f"{SCRATCH_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        work.mkdir(parents=True)
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def remove_leftovers(self, model: str) -> list[str]:
        """Remove what killed writers left behind. Call it holding the lock: nobody uses them then."""
        folder = self.model_dir(model)
        removed: list[str] = []
        if not folder.is_dir():
            return removed
        for p in folder.iterdir():
            if _is_leftover(p.name):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
        return removed

    # -- history ------------------------------------------------------------------------------
    def append_history(self, model: str, summary: dict[str, Any]) -> None:
        """Append one run's JSON summary to ``<model>/history.jsonl`` (fsynced)."""
        with open(self.model_dir(model) / HISTORY, "a") as fh:
            fh.write(json.dumps(summary, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def history(self, model: str) -> list[dict[str, Any]]:
        path = self.model_dir(model) / HISTORY
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # -- the published record -----------------------------------------------------------------
    def write_published(self, update: ModelUpdate, topic: str) -> PublishedRecord:
        """Record ``update`` as the last one ``topic`` acknowledged for its model (atomically)."""
        record = PublishedRecord.model_validate({**update.model_dump(), "topic": topic})
        write_bytes_atomic(self.model_dir(update.name) / PUBLISHED, record.model_dump_json(indent=2).encode())
        return record

    def published(self, model: str) -> PublishedRecord | None:
        """The record as it is (None: none, unreadable, too large or not a record)."""
        try:
            path = self.model_dir(model) / PUBLISHED
            if path.stat().st_size > MAX_RECORD_BYTES:
                return None
            return PublishedRecord.model_validate_json(path.read_bytes())
        except (OSError, ValueError, ValidationError):
            return None

    def read_published(self, model: str, topic: str) -> ModelUpdate | None:
        """The last update published for ``model`` if the record is there and names ``topic``
        (a record that names no topic at all is taken as one of it)."""
        record = self.published(model)
        if record is None or ("topic" in record.model_fields_set and record.topic != topic):
            return None
        return record.as_update()

    def is_published(self, model: str, checkpoint: Path, topic: str) -> bool:
        """The record announces exactly ``checkpoint`` (version and manifest) on ``topic``."""
        record = self.published(model)
        return (record is not None and record.topic == topic and record.version == Path(checkpoint).name
                and record.manifest_sha256 == manifest_sha256(checkpoint))
