"""MVTec-layout dataset loading and the one definition of "decoded array -> model input".

Layout::

    ROOT/train/good/*                      normal training images
    ROOT/test/<type>/*                     'good' = normal, any other folder = a defect type
    ROOT/ground_truth/<type>/<stem>_mask.png   one mask per defect test image

Conversion rules (shared by training, evaluation and - via :func:`to_float01_chw` - the
inference engine): gray is replicated to 3 channels, uint8 is divided by 255, uint16 by 65535.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import structlog
import torch
from torch.utils.data import Dataset

from inspector.decode import DecodeError, read_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "DatasetIndex",
    "EvalSet",
    "NormalImages",
    "Sample",
    "data_fingerprint",
    "load_sample",
    "load_test_set",
    "resize_mask",
    "scan_dataset",
    "split_train_val",
    "to_float01_chw",
    "to_model_input",
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


def _interpolation(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    """INTER_AREA when shrinking (anti-aliased), INTER_LINEAR otherwise."""
    shrinking = dst_hw[0] <= src_hw[0] and dst_hw[1] <= src_hw[1]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def to_float01_chw(image: np.ndarray) -> np.ndarray:
    """Decoded ``H×W``/``H×W×1``/``H×W×3`` uint8|uint16 -> float32 ``(3,H,W)`` in [0,1], no resizing."""
    img = np.asarray(image)
    if img.dtype == np.uint8:
        scale = 255.0
    elif img.dtype == np.uint16:
        scale = 65535.0
    else:
        raise ValueError(f"expected a uint8 or uint16 image, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        out = np.empty((3, *img.shape), dtype=np.float32)
        np.divide(img, scale, out=out[0], dtype=np.float32)
        out[1] = out[0]
        out[2] = out[0]
        return out
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(scale)
    raise ValueError(f"expected H×W or H×W×3 image, got shape {img.shape}")


def to_model_input(image: np.ndarray, image_size: int) -> np.ndarray:
    """Decoded array -> float32 ``(3,S,S)`` in [0,1]; the training/evaluation input definition."""
    chw = to_float01_chw(image)
    h, w = chw.shape[1:]
    if (h, w) == (image_size, image_size):
        return chw
    hwc = np.ascontiguousarray(chw.transpose(1, 2, 0))
    resized = cv2.resize(hwc, (image_size, image_size), interpolation=_interpolation((h, w), (image_size,) * 2))
    return np.ascontiguousarray(np.clip(resized, 0.0, 1.0).transpose(2, 0, 1))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Bool mask -> bool ``(S,S)``.

    Shrinking: a pixel is defective when > 0.5 of its area is; if that erases a non-empty
    mask (a 1-px scratch shrunk 4x) any coverage counts, so a labelled defect never vanishes.
    Enlarging: nearest neighbour.
    """
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    if (h, w) == (size, size):
        return m.copy()
    if size <= h and size <= w:
        frac = cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
        out = frac > 0.5
        if not out.any() and m.any():
            out = frac > 0.0
        return out
    return cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)


def _resize_native(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=_interpolation((h, w), (size, size)))


def _read_mask(path: Path) -> np.ndarray:
    """Mask file -> bool; 0/255 masks (MVTec) and 0/1 masks are both understood."""
    m = read_image(path)
    if m.ndim == 3:
        m = m.max(axis=2)
    if int(m.max(initial=0)) <= 1:
        return m > 0
    return m > (np.iinfo(m.dtype).max // 2)


def load_sample(sample: Sample, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(image as decoded, bool mask or None). Raises DecodeError for a bad image file.

    With ``image_size`` both are resized to S×S (image keeps its dtype; mask by
    :func:`resize_mask`); with None they are returned at native size.
    """
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
    if image_size is not None:
        image = _resize_native(image, image_size)
        if mask is not None:
            mask = resize_mask(mask, image_size)
    return image, mask


# --------------------------------------------------------------------------- datasets


class NormalImages(Dataset):
    """Normal training images, decoded and resized once up front (datasets are small).

    Undecodable files are skipped and listed in ``.skipped`` as ``(path, reason)``.
    Items are float32 tensors ``(3,S,S)`` normalised with ``mean``/``std``.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        image_size: int,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        log = structlog.get_logger()
        self.image_size = int(image_size)
        self.skipped: list[tuple[Path, str]] = []
        self.paths: list[Path] = []
        arrays: list[np.ndarray] = []
        for p in map(Path, paths):
            try:
                arrays.append(to_model_input(read_image(p), self.image_size))
            except (DecodeError, OSError) as exc:
                reason = exc.reason if isinstance(exc, DecodeError) else "unreadable"
                self.skipped.append((p, reason))
                log.warning("image_skipped", path=str(p), reason=reason, error=str(exc))
                continue
            self.paths.append(p)
        if paths and not arrays:
            raise DatasetError(f"none of the {len(paths)} training images could be decoded (first: {paths[0]})")
        if self.skipped:
            log.info("images_loaded", kept=len(self.paths), skipped=len(self.skipped))
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(3, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(3, 1, 1)
        if arrays:
            self.images = (torch.from_numpy(np.stack(arrays)) - mean_t) / std_t
        else:
            self.images = torch.empty((0, 3, self.image_size, self.image_size), dtype=torch.float32)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@dataclass
class EvalSet:
    """Test images at model size. Unpacks as ``images, masks, labels, types, paths``.

    images: float32 ``(N,3,S,S)`` in [0,1] (numpy; ``torch.from_numpy`` is free);
    masks: bool ``(N,S,S)`` (all False for good images, see :func:`resize_mask`);
    labels: int64 ``(N,)``; types/paths: per image; skipped: ``(path, reason)`` not loaded.
    """

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    types: list[str]
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator:
        return iter((self.images, self.masks, self.labels, self.types, self.paths))

    def __len__(self) -> int:
        return len(self.paths)


def load_test_set(index: DatasetIndex, image_size: int) -> EvalSet:
    """Load ``index.test`` at model size; undecodable images are skipped and reported.

    A mask whose size differs from its image is a DatasetError (bad data, not a bad frame).
    """
    log = structlog.get_logger()
    s = int(image_size)
    images, masks, labels, types, paths = [], [], [], [], []
    skipped: list[tuple[Path, str]] = []
    for sample in index.test:
        try:
            image, mask = load_sample(sample)
        except (DecodeError, OSError) as exc:
            reason = exc.reason if isinstance(exc, DecodeError) else "unreadable"
            skipped.append((sample.path, reason))
            log.warning("image_skipped", path=str(sample.path), reason=reason, error=str(exc))
            continue
        images.append(to_model_input(image, s))
        masks.append(resize_mask(mask, s) if mask is not None else np.zeros((s, s), dtype=bool))
        labels.append(sample.label)
        types.append(sample.defect_type)
        paths.append(sample.path)
    return EvalSet(
        images=np.stack(images) if images else np.zeros((0, 3, s, s), dtype=np.float32),
        masks=np.stack(masks) if masks else np.zeros((0, s, s), dtype=bool),
        labels=np.asarray(labels, dtype=np.int64),
        types=types,
        paths=paths,
        skipped=skipped,
    )


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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    pairs = sorted((p.relative_to(base).as_posix(), _sha256_file(p)) for p in files)
    h = hashlib.sha256()
    for rel, digest in pairs:
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()
