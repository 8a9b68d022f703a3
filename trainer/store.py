"""Per-model store of confirmed-normal images: content-addressed files plus an SQLite index.

Layout (``STORE`` = ``TRAINER_STORE_DIR``)::

    STORE/<model>/objects/ab/<sha256>.<ext>   the image bytes exactly as received (ext from the magic bytes)
    STORE/<model>/index.sqlite                one row per image: sha, camera, line, captured_at, stored_at,
                                              size, width, height, source topic/partition/offset, frame id
    STORE/<model>/rejected/                   undecodable frames (``.bin``) with their reason (``.json``)
    STORE/<model>/tmp/                        files being written (stale ones removed when the store is opened)

Durability: bytes go to ``tmp/`` first, are fsynced, renamed into ``objects/`` (and the folder
fsynced), and only then is the index row committed (SQLite WAL, ``synchronous=FULL``). A crash at
any point leaves at worst an orphan file that no index row names; the index never names a
missing or half-written file. Duplicates (same sha256) are stored once.

Retention: at most ``max_images`` images / ``max_bytes`` bytes per model. Eviction keeps a
time-spread sample: the time span of the store is cut into ``buckets`` equal buckets, and each
eviction thins the most crowded bucket at its densest point (the image whose removal leaves the
smallest gap). A burst of frames from one shift therefore cannot push out last month's images.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from inspector.contracts.decode import DecodeError, DecodeLimits, decode_image, sniff_format
from inspector.support.durable import fsync_dir, write_bytes_atomic

__all__ = [
    "AddResult",
    "ModelStore",
    "NormalStore",
    "StoredImage",
    "check_model_name",
    "choose_evictions",
]

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "tiff": ".tif"}
#: Temporary files older than this are left-overs of a crashed writer (a write takes milliseconds).
TMP_MAX_AGE_S = 600.0
_IMPORT_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    sha TEXT PRIMARY KEY,
    ext TEXT NOT NULL,
    size INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    camera TEXT,
    line TEXT,
    captured_at INTEGER,
    stored_at INTEGER NOT NULL,
    source_topic TEXT,
    source_partition INTEGER,
    source_offset INTEGER,
    frame_id TEXT
);
"""
_COLUMNS = ("sha", "ext", "size", "width", "height", "camera", "line", "captured_at", "stored_at",
            "source_topic", "source_partition", "source_offset", "frame_id")


def check_model_name(name: str) -> str:
    """Model names become folder names: letters, digits, '.', '_', '-' (no path tricks)."""
    if not isinstance(name, str) or not MODEL_NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"invalid model name {name!r}: use 1-128 of [A-Za-z0-9._-], starting with a letter or digit")
    return name




def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class StoredImage:
    sha: str
    ext: str
    size: int
    width: int | None
    height: int | None
    camera: str | None
    line: str | None
    captured_at: int | None
    stored_at: int
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    frame_id: str | None
    path: Path

    @property
    def time_ms(self) -> int:
        """When the image was taken (captured-at), else when it was stored."""
        return self.captured_at if self.captured_at is not None else self.stored_at


@dataclass(frozen=True)
class AddResult:
    status: str  # 'stored' | 'duplicate'
    sha: str
    path: Path


# ----------------------------------------------------------------------------- retention

def choose_evictions(items: Sequence[tuple[str, float]], n: int, buckets: int = 32) -> list[str]:
    """Keys of ``n`` items to evict from ``(key, time)`` pairs, keeping the times spread out.

    The span [oldest, newest] is cut into ``buckets`` equal buckets; each eviction takes from the
    fullest bucket (the newer one on ties) the item whose removal leaves the smallest gap between
    its neighbours (bucket endpoints are kept while the bucket has more than two items).
    """
    if n <= 0 or not items:
        return []
    if n >= len(items):
        return [k for k, _ in items]
    ts = [float(t) for _, t in items]
    lo, hi = min(ts), max(ts)
    width = (hi - lo) / buckets if hi > lo else 1.0
    groups: dict[int, list[tuple[float, str]]] = {}
    for key, t in items:
        b = min(int((float(t) - lo) / width), buckets - 1) if hi > lo else 0
        groups.setdefault(b, []).append((float(t), key))
    for g in groups.values():
        g.sort()
    out: list[str] = []
    for _ in range(n):
        b = max(groups, key=lambda i: (len(groups[i]), i))
        g = groups[b]
        if len(g) <= 2:
            i = len(g) - 1
        else:
            i = min(range(1, len(g) - 1), key=lambda j: (g[j + 1][0] - g[j - 1][0], j))
        out.append(g.pop(i)[1])
        if not g:
            del groups[b]
    return out


# ----------------------------------------------------------------------------- store

class ModelStore:
    """The normal images of one model. Not thread-safe; one writer process at a time is expected
    (readers, e.g. a refresh, may read concurrently: SQLite WAL)."""

    def __init__(self, root: str | Path, model: str, *, max_images: int = 5_000, max_bytes: int = 20 * 1024**3,
                 buckets: int = 32, limits: DecodeLimits | None = None, rejected_max_files: int = 1_000) -> None:
        self.model = check_model_name(model)
        self.dir = Path(root) / model
        self.objects = self.dir / "objects"
        self.tmp = self.dir / "tmp"
        self.rejected_dir = self.dir / "rejected"
        self.index_path = self.dir / "index.sqlite"
        self.max_images = max_images
        self.max_bytes = max_bytes
        self.buckets = buckets
        self.limits = limits or DecodeLimits()
        self.rejected_max_files = rejected_max_files
        self._log = structlog.get_logger("trainer.store").bind(model=model)
        for d in (self.objects, self.tmp, self.rejected_dir):
            d.mkdir(parents=True, exist_ok=True)
        # half-written files of a crashed writer; young ones may belong to a live writer in another process
        cutoff = time.time() - TMP_MAX_AGE_S
        for leftover in self.tmp.iterdir():
            try:
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
        self._db = sqlite3.connect(self.index_path, timeout=30.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    # -- paths -------------------------------------------------------------------------------
    def object_path(self, sha: str, ext: str) -> Path:
        return self.objects / sha[:2] / f"{sha}{ext}"

    # -- queries -----------------------------------------------------------------------------
    def __contains__(self, sha: str) -> bool:
        return self._db.execute("SELECT 1 FROM images WHERE sha=?", (sha,)).fetchone() is not None

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def total_bytes(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM images").fetchone()[0])

    def images(self) -> list[StoredImage]:
        """Every indexed image, oldest first (by captured-at, else stored-at)."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM images ORDER BY COALESCE(captured_at, stored_at), sha").fetchall()
        out = []
        for row in rows:
            rec = dict(zip(_COLUMNS, row))
            out.append(StoredImage(**rec, path=self.object_path(rec["sha"], rec["ext"])))
        return out

    def stats(self) -> dict[str, Any]:
        imgs = self.images()
        times = [i.time_ms for i in imgs]
        return {"model": self.model, "images": len(imgs), "bytes": sum(i.size for i in imgs),
                "oldest_ms": min(times) if times else None, "newest_ms": max(times) if times else None,
                "cameras": sorted({i.camera for i in imgs if i.camera}),
                "lines": sorted({i.line for i in imgs if i.line})}

    # -- writes ------------------------------------------------------------------------------
    def add(self, data: bytes, *, camera: str | None = None, line: str | None = None,
            captured_at: int | None = None, source_topic: str | None = None, source_partition: int | None = None,
            source_offset: int | None = None, frame_id: str | None = None, validate: bool = True) -> AddResult:
        """Store ``data`` durably (or recognise it as a duplicate). Raises DecodeError when it is not a
        usable image (``validate``); nothing is written then."""
        data = bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        fmt = sniff_format(data)
        if sha in self:
            row = self._db.execute("SELECT ext FROM images WHERE sha=?", (sha,)).fetchone()
            return AddResult("duplicate", sha, self.object_path(sha, row[0]))
        width = height = None
        if validate:
            img = decode_image(data, self.limits)
            height, width = int(img.shape[0]), int(img.shape[1])
        if fmt not in EXTENSIONS:
            raise DecodeError("unsupported_type", f"not a known image format ({fmt})")
        ext = EXTENSIONS[fmt]
        final = self.object_path(sha, ext)
        self._write_file(final, data)
        self._index_insert((sha, ext, len(data), width, height, camera, line, captured_at, _now_ms(),
                            source_topic, source_partition, source_offset, frame_id))
        return AddResult("stored", sha, final)

    def _index_insert(self, row: tuple) -> None:
        # autocommit: the row is durable when execute returns (WAL, synchronous=FULL)
        self._db.execute(
            f"INSERT OR IGNORE INTO images ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", row)

    def _write_file(self, final: Path, data: bytes) -> None:
        """temp file + fsync + rename + fsync of the folder."""
        shard = final.parent
        new_shard = not shard.exists()
        shard.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(final, data, tmp_dir=self.tmp)
        if new_shard:
            fsync_dir(self.objects)

    def remove(self, shas: Iterable[str]) -> int:
        """Drop images: index rows first (committed), then the files."""
        shas = list(shas)
        if not shas:
            return 0
        rows = []
        for i in range(0, len(shas), 500):
            part = shas[i:i + 500]
            rows += self._db.execute(
                f"SELECT sha, ext FROM images WHERE sha IN ({', '.join('?' * len(part))})", part).fetchall()
        self._db.execute("BEGIN")
        try:
            self._db.executemany("DELETE FROM images WHERE sha=?", [(s,) for s, _ in rows])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for sha, ext in rows:
            self.object_path(sha, ext).unlink(missing_ok=True)
        return len(rows)

    def enforce_bound(self) -> list[str]:
        """Evict (time-spread retention) until both bounds hold; returns the evicted shas."""
        imgs = self.images()
        n_over = max(0, len(imgs) - self.max_images)
        total = sum(i.size for i in imgs)
        if n_over == 0 and total <= self.max_bytes:
            return []
        items = [(i.sha, i.time_ms) for i in imgs]
        if total > self.max_bytes:  # evict in order until the bytes fit too (sizes are similar per model)
            order = choose_evictions(items, len(items) - 1, self.buckets)
            sizes = {i.sha: i.size for i in imgs}
            evict, kept_bytes = order[:n_over], total - sum(sizes[s] for s in order[:n_over])
            for s in order[n_over:]:
                if kept_bytes <= self.max_bytes:
                    break
                evict.append(s)
                kept_bytes -= sizes[s]
        else:
            evict = choose_evictions(items, n_over, self.buckets)
        self.remove(evict)
        self._log.info("store_evicted", evicted=len(evict), kept=len(imgs) - len(evict))
        return evict

    def reject(self, data: bytes, reason: str, detail: str = "", meta: dict[str, Any] | None = None) -> Path | None:
        """Set an unusable frame aside in ``rejected/`` with its reason; None when the folder is full
        (the frame is still counted by the caller) or the frame is larger than the frame limit."""
        existing = sum(1 for p in self.rejected_dir.glob("*.json"))
        if existing >= self.rejected_max_files:
            return None
        sha = hashlib.sha256(data).hexdigest()
        stem = f"{_now_ms()}-{sha[:16]}"
        record = {"reason": reason, "detail": detail[:1000], "sha256": sha, "size": len(data),
                  "rejected_at": _now_ms(), **(meta or {})}
        if len(data) <= self.limits.max_bytes:
            (self.rejected_dir / f"{stem}.bin").write_bytes(data)
        else:
            record["payload"] = "not kept (over the frame size limit)"
        write_bytes_atomic(self.rejected_dir / f"{stem}.json", json.dumps(record, default=str).encode())
        return self.rejected_dir / f"{stem}.json"

    def import_folder(self, folder: str | Path, camera: str = "import", line: str | None = None) -> dict[str, Any]:
        """Add every image file under ``folder`` (recursive). captured-at = file modification time."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"no such folder: {folder}")
        counts = {"files": 0, "stored": 0, "duplicates": 0, "rejected": 0}
        reasons: dict[str, int] = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in _IMPORT_SUFFIXES):
            counts["files"] += 1
            data = path.read_bytes()
            try:
                res = self.add(data, camera=camera, line=line, captured_at=int(path.stat().st_mtime * 1000),
                               source_topic=f"file:{path}")
            except DecodeError as exc:
                counts["rejected"] += 1
                reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
                self.reject(data, exc.reason, exc.message, {"source": str(path)})
                continue
            counts["stored" if res.status == "stored" else "duplicates"] += 1
        counts["evicted"] = len(self.enforce_bound())
        return {**counts, "rejected_by_reason": reasons, "images": self.count()}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ModelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NormalStore:
    """All models' stores under one root, opened lazily."""

    def __init__(self, root: str | Path, **kwargs: Any) -> None:
        self.root = Path(root)
        self._kwargs = kwargs
        self._open: dict[str, ModelStore] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> NormalStore:
        return cls(settings.store_dir, max_images=settings.store_max_images, max_bytes=settings.store_max_bytes,
                   buckets=settings.retention_buckets, limits=settings.decode_limits(),
                   rejected_max_files=settings.rejected_max_files)

    def model(self, name: str) -> ModelStore:
        if name not in self._open:
            self._open[name] = ModelStore(self.root, name, **self._kwargs)
        return self._open[name]

    def opened(self) -> dict[str, ModelStore]:
        return dict(self._open)

    def close(self) -> None:
        for s in self._open.values():
            s.close()
        self._open.clear()
