"""A disk cache of exported ONNX graphs, so a restarted worker does not export its model again.

The export is the slowest part of loading a model on a CPU worker (seconds when the machine is
quiet, tens of seconds when it is busy serving), and a worker that restarts after a crash loads
the same checkpoint again. The cache key covers everything the graph depends on: the checkpoint's
manifest (which pins the student weights and the teacher weights by sha256), the input size and
the versions of torch and the exporter. A cached graph is never trusted on its key alone: the
caller checks it against the torch model on a fresh random probe before serving from it, and an
entry that fails that check (or cannot be read) is removed and exported again.

Failures of the cache itself (read-only or full disk) are logged and cost only the export.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import structlog

from inspector.model.geometry import as_hw
from inspector.support.durable import write_bytes_atomic

FORMAT = 1  # bump when the exported graph changes for reasons the key does not see


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "absent"
    return out


def cache_key(manifest_sha256: str, image_size: int | tuple[int, int]) -> str:
    h, w = as_hw(image_size)
    size = {"image_size": h} if h == w else {"input_hw": [h, w]}  # square keys as before
    material = {"format": FORMAT, "manifest": manifest_sha256, **size, **library_versions()}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class OnnxCache:
    """One folder of ``<key>.onnx`` files, written atomically."""

    root: Path

    def path(self, key: str) -> Path:
        return self.root / f"{key}.onnx"

    def get(self, key: str) -> bytes | None:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            structlog.get_logger(__name__).warning("onnx_cache_unreadable", key=key[:12], error=str(exc))
            return None

    def put(self, key: str, data: bytes) -> bool:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(self.path(key), data)
            return True
        except OSError as exc:
            structlog.get_logger(__name__).warning("onnx_cache_unwritable", root=str(self.root), error=str(exc))
            return False

    def discard(self, key: str) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError:
            pass
