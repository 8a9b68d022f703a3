"""MVTec-layout dataset loading: the index, samples with their masks, splits and fingerprints.

Layout::

    ROOT/train/good/*                      normal training images
    ROOT/test/<type>/*                     'good' = normal, any other folder = a defect type
    ROOT/ground_truth/<type>/<stem>_mask.png   one mask per defect test image

Images are returned as decoded; turning them into model input is ``inspector.model.preprocess``'s job
alone, so training, evaluation and serving see the same pixels.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import structlog

from inspector.contracts.decode import read_image
from inspector.model.geometry import as_hw
from inspector.support.hashing import sha256_file

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "DatasetIndex",
    "Sample",
    "data_fingerprint",
    "load_sample",
    "resize_mask",
    "scan_dataset",
    "split_train_val",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
GOOD = "good"


class DatasetError(ValueError):
    """The dataset on disk is not usable; the message names the offending file or folder."""


@dataclass(frozen=True)
class Sample:
    path: Path
    defect_type: str  # 'good' or the defect folder name
    label: int  # 0 normal, 1 defect
    mask_path: Path | None  # None for good images


@dataclass(frozen=True)
class DatasetIndex:
    root: Path
    train: list[Sample]
    test: list[Sample]
    defect_types: list[str]  # sorted, excluding 'good'

    @property
    def train_paths(self) -> list[Path]:
        return [s.path for s in self.train]


def _images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (case-insensitive extensions, hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def scan_dataset(root: str | Path) -> DatasetIndex:
    """Index an MVTec-layout folder; raises DatasetError naming what is missing.

    A missing ``test/`` folder is allowed (empty test list) so that normal-only data can train.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder")
    train_dir = root / "train" / GOOD
    if not train_dir.is_dir():
        raise DatasetError(f"training folder {train_dir} is missing")
    train_files = _images_in(train_dir)
    if not train_files:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise DatasetError(f"training folder {train_dir} has no images ({exts})")
    train = [Sample(p, GOOD, 0, None) for p in train_files]

    test: list[Sample] = []
    defect_types: list[str] = []
    missing_masks: list[Path] = []
    test_dir = root / "test"
    if test_dir.is_dir():
        for type_dir in sorted(d for d in test_dir.iterdir() if d.is_dir() and not d.name.startswith(".")):
            files = _images_in(type_dir)
            if not files:
                continue
            kind = type_dir.name
            if kind == GOOD:
                test.extend(Sample(p, GOOD, 0, None) for p in files)  # masks for good are ignored
                continue
            defect_types.append(kind)
            for p in files:
                mask = root / "ground_truth" / kind / f"{p.stem}_mask.png"
                if not mask.is_file():
                    missing_masks.append(mask)
                test.append(Sample(p, kind, 1, mask))
    else:
        structlog.get_logger().warning("dataset_without_test", root=str(root), expected=str(test_dir))
    if missing_masks:
        shown = ", ".join(str(m) for m in missing_masks[:5])
        more = f" (and {len(missing_masks) - 5} more)" if len(missing_masks) > 5 else ""
        raise DatasetError(f"{len(missing_masks)} defect image(s) lack a mask; expected {shown}{more}")
    return DatasetIndex(root=root, train=train, test=test, defect_types=defect_types)


# --------------------------------------------------------------------------- conversion


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bool mask -> bool ``(S,S)`` (or ``(H,W)`` for a (height, width) size).

    Shrinking: a pixel is defective when > 0.5 of its area is; if that erases a non-empty
    mask (a 1-px scratch shrunk 4x) any coverage counts, so a labelled defect never vanishes.
    Enlarging: nearest neighbour.
    """
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    th, tw = as_hw(size)
    if (h, w) == (th, tw):
        return m.copy()
    if th <= h and tw <= w:
        frac = cv2.resize(m.astype(np.float32), (tw, th), interpolation=cv2.INTER_AREA)
        out = frac > 0.5
        if not out.any() and m.any():
            out = frac > 0.0
        return out
    return cv2.resize(m.astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST).astype(bool)


def _read_mask(path: Path) -> np.ndarray:
    """Mask file -> bool; 0/255 masks (MVTec) and 0/1 masks are both understood."""
    m = read_image(path)
    if m.ndim == 3:
        m = m.max(axis=2)
    if int(m.max(initial=0)) <= 1:
        return m > 0
    return m > (np.iinfo(m.dtype).max // 2)


def load_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """(image as decoded, bool mask at the image's size or None). Raises DecodeError for a bad image."""
    image = read_image(sample.path)
    mask = None
    if sample.mask_path is not None:
        mask = _read_mask(sample.mask_path)
        if mask.shape != image.shape[:2]:
            ih, iw = image.shape[:2]
            mh, mw = mask.shape
            raise DatasetError(
                f"mask {sample.mask_path} is {mw}x{mh} but image {sample.path} is {iw}x{ih}"
            )
    return image, mask


# --------------------------------------------------------------------------- datasets


def split_train_val(
    paths: Sequence[str | Path], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Path], list[Path]]:
    """Deterministic split (independent of input order) -> (train, val), each sorted.

    At least one validation image when ``val_fraction > 0`` and there are >= 2 paths;
    at least one training image always.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    items = sorted(Path(p) for p in paths)
    n = len(items)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    n_val = min(n_val, max(n - 1, 0))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    train = [p for i, p in enumerate(items) if i not in val_idx]
    val = [p for i, p in enumerate(items) if i in val_idx]
    return train, val


def data_fingerprint(paths: Sequence[str | Path], root: str | Path | None = None) -> str:
    """sha256 over sorted (relative path, file sha256) pairs.

    Paths are relative to ``root`` (default: the common folder of the files), so the
    fingerprint survives moving the dataset but changes on renames or content edits.
    """
    files = [Path(p).resolve() for p in paths]
    if root is None:
        base = Path(os.path.commonpath([str(p.parent) for p in files])) if files else Path(".")
    else:
        base = Path(root).resolve()
    pairs = sorted((p.relative_to(base).as_posix(), sha256_file(p)) for p in files)
    h = hashlib.sha256()
    for rel, digest in pairs:
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()
