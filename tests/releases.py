"""Test helper: versions of a checkpoint (same weights, new version and creation time) and the
signed updates that announce them, as the trainer would make them."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from inspector.contracts.wire import ModelUpdate
from inspector.model.repository import update_for_checkpoint
from inspector.model.signing import sign, write_statement


def release_copy(src: Path, dst: Path, version: str, age_s: float = 0.0, **changes: object) -> Path:
    """Copy ``src`` to ``dst`` as ``version``, created ``age_s`` seconds from now (negative: in
    the past), with any other manifest fields changed."""
    shutil.copytree(src, dst)
    (dst / "signature.json").unlink(missing_ok=True)
    mf = json.loads((dst / "manifest.json").read_text())
    created = datetime.now(timezone.utc) + timedelta(seconds=age_s)
    mf.update(version=version, created_at=created.isoformat(), **changes)
    (dst / "manifest.json").write_text(json.dumps(mf))
    return dst


def signed_update(ckpt: Path, key, *, rollback: bool = False, keep: bool = True,
                  published_at: float | None = None) -> ModelUpdate:
    """The update announcing ``ckpt``, signed by ``key`` (None: unsigned); kept beside it when ``keep``."""
    update = update_for_checkpoint(ckpt, rollback=rollback)
    if published_at is not None:
        update = update.model_copy(update={"published_at": published_at})
    if key is not None:
        update = sign(update, key)
        if keep:
            write_statement(ckpt, update)
    return update
