"""Durable filesystem steps shared by checkpoints, the normal-image store and promotion."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (after a rename) so the change survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes, tmp_dir: str | Path | None = None) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old or the new file, never half.

    The bytes go to a temporary file first (in ``tmp_dir``, on the same file system; default
    beside ``path``), are fsynced, renamed over ``path``, and the folder is fsynced."""
    import uuid

    path = Path(path)
    tmp = (Path(tmp_dir) / f"{path.name}.{uuid.uuid4().hex[:8]}.part" if tmp_dir is not None
           else path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"))
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
