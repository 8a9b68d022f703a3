"""Synthetic textured "parts" with painted defects, in MVTec layout, for tests and the demo.

A dataset seed fixes the texture *statistics* (frequencies, orientations, tint); every
image draws its own phases and noise, so normal images vary but look alike. Each image
has its own RNG stream derived from (seed, split, index): changing one count does not
change the other images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["DEFECT_TYPES", "make_dataset", "make_frame", "make_image"]

DEFECT_TYPES = ("scratch", "spot")
_STREAM = {"train": 1, "test_good": 2, "test_defect": 3, "frame": 4}


@dataclass(frozen=True)
class _Texture:
    freqs: np.ndarray  # cycles per image, (K,)
    angles: np.ndarray  # radians, (K,)
    amps: np.ndarray  # (K,)
    tint: np.ndarray  # per-channel gain, (3,)


def _texture(seed: int) -> _Texture:
    rng = np.random.default_rng((seed, 0))
    k = 4
    amps = rng.uniform(0.5, 1.0, k)
    return _Texture(
        freqs=rng.uniform(2.0, 7.0, k),
        angles=rng.uniform(0.0, np.pi, k),
        amps=0.18 * amps / amps.sum(),
        tint=rng.uniform(0.75, 1.0, 3),
    )


def _render_normal(tex: _Texture, size: int, rng: np.random.Generator, width: int | None = None) -> np.ndarray:
    """Float (S, width or S) base texture in about [0.3, 0.7]; the texture's scale follows the
    height, so a wider image shows more of the same texture, not a stretched one."""
    width = width or size
    yy, xx = np.mgrid[0:size, 0:width].astype(np.float32) / np.float32(size)
    img = np.full((size, width), 0.5, dtype=np.float32)
    phases = rng.uniform(0.0, 2 * np.pi, len(tex.freqs))
    for f, a, amp, ph in zip(tex.freqs, tex.angles, tex.amps, phases):
        img += np.float32(amp) * np.sin(
            np.float32(2 * np.pi * f) * (xx * np.float32(np.cos(a)) + yy * np.float32(np.sin(a))) + np.float32(ph)
        )
    img += rng.normal(0.0, 0.015, (size, width)).astype(np.float32)
    img += np.float32(rng.uniform(-0.02, 0.02))  # small lighting variation
    return img


def _paint_defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Paint one defect in place on float ``img``; returns its uint8 0/255 mask."""
    h, w = img.shape
    size = min(h, w)
    mask = np.zeros((h, w), dtype=np.uint8)
    margin = max(2, size // 8)
    if h == w:
        cx, cy = (int(v) for v in rng.integers(margin, size - margin, 2))
    else:
        cx, cy = (int(v) for v in rng.integers(margin, [w - margin, h - margin]))
    if kind == "scratch":
        length = rng.uniform(0.2, 0.4) * size
        ang = rng.uniform(0.0, np.pi)
        dx, dy = 0.5 * length * np.cos(ang), 0.5 * length * np.sin(ang)
        p0 = (int(np.clip(cx - dx, 1, w - 2)), int(np.clip(cy - dy, 1, h - 2)))
        p1 = (int(np.clip(cx + dx, 1, w - 2)), int(np.clip(cy + dy, 1, h - 2)))
        thickness = max(1, int(round(size / 64 * rng.uniform(1.0, 2.0))))
        cv2.line(mask, p0, p1, 255, thickness=thickness, lineType=cv2.LINE_8)
        value = 0.95 if rng.random() < 0.5 else 0.05  # bright or dark
        img[mask > 0] = np.float32(value)
    elif kind == "spot":
        axes = (
            max(2, int(rng.uniform(0.05, 0.12) * size)),
            max(2, int(rng.uniform(0.05, 0.12) * size)),
        )
        cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, thickness=-1)
        inside = mask > 0
        shift = np.float32(0.25 if rng.random() < 0.5 else -0.25)
        grain = rng.normal(0.0, 0.08, int(inside.sum())).astype(np.float32)
        img[inside] = 0.5 * img[inside] + 0.25 + shift + grain  # flattened texture, other level
    else:
        raise ValueError(f"unknown defect type {kind!r}; known: {', '.join(DEFECT_TYPES)}")
    return mask


def _finish(img: np.ndarray, tex: _Texture, gray: bool) -> np.ndarray:
    img = np.clip(img, 0.0, 1.0)
    if not gray:
        img = img[:, :, None] * tex.tint.astype(np.float32)[None, None, :]
    return np.round(img * 255.0).astype(np.uint8)


def make_image(
    defect: str | None = None,
    *,
    size: int = 128,
    seed: int = 0,
    index: int = 0,
    gray: bool = False,
    width: int | None = None,
    _stream: str = "frame",
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image (RGB ``S×W×3`` or gray ``S×W`` uint8; ``W`` = ``width`` or ``S``) and its bool
    mask (None if normal).

    ``seed`` is the dataset seed (same texture family as ``make_dataset(seed=...)``);
    ``index`` picks the image within the family.
    """
    if size < 16 or (width is not None and width < 16):
        raise ValueError(f"size and width must be >= 16, got {size} and {width}")
    tex = _texture(seed)
    rng = np.random.default_rng((seed, _STREAM[_stream], index))
    img = _render_normal(tex, size, rng, width)
    mask = _paint_defect(img, defect, rng) > 0 if defect is not None else None
    return _finish(img, tex, gray), mask


def _rgb_to_bgr(img: np.ndarray) -> np.ndarray:
    return img[:, :, ::-1] if img.ndim == 3 else img


def _write_png(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(_rgb_to_bgr(img)))
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())


def make_dataset(
    root: str | Path,
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_defect: int = 10,
    size: int = 128,
    seed: int = 0,
    defect_types: Sequence[str] = DEFECT_TYPES,
    gray: bool = False,
    width: int | None = None,
) -> Path:
    """Write an MVTec-layout dataset under ``root`` and return it.

    ``n_test_defect`` is per defect type. ``root`` must be absent or empty so that the
    content is exactly determined by the arguments.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; make_dataset needs a fresh folder")
    for kind in defect_types:
        if kind not in DEFECT_TYPES:
            raise ValueError(f"unknown defect type {kind!r}; known: {', '.join(DEFECT_TYPES)}")
        if kind == "good":
            raise ValueError("'good' is reserved for normal images")
    (root / "train" / "good").mkdir(parents=True, exist_ok=True)
    (root / "test" / "good").mkdir(parents=True, exist_ok=True)

    for i in range(n_train):
        img, _ = make_image(size=size, seed=seed, index=i, gray=gray, width=width, _stream="train")
        _write_png(root / "train" / "good" / f"{i:03d}.png", img)
    for i in range(n_test_good):
        img, _ = make_image(size=size, seed=seed, index=i, gray=gray, width=width, _stream="test_good")
        _write_png(root / "test" / "good" / f"{i:03d}.png", img)
    for t, kind in enumerate(defect_types):
        (root / "test" / kind).mkdir(parents=True, exist_ok=True)
        (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n_test_defect):
            img, mask = make_image(
                kind, size=size, seed=seed, index=t * 100_000 + i, gray=gray, width=width, _stream="test_defect"
            )
            _write_png(root / "test" / kind / f"{i:03d}.png", img)
            _write_png(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return root


def make_frame(
    defect: str | None = None,
    *,
    size: int = 128,
    seed: int = 0,
    index: int = 0,
    fmt: str = "png",
    gray: bool = False,
    quality: int = 95,
    width: int | None = None,
) -> bytes:
    """One encoded frame (``fmt`` 'png' or 'jpeg') like those of ``make_dataset(seed=seed)``.

    Frames use their own RNG stream, so they are never copies of training images.
    """
    img, _ = make_image(defect, size=size, seed=seed, index=index, gray=gray, width=width)
    img = np.ascontiguousarray(_rgb_to_bgr(img))
    fmt = fmt.lower()
    if fmt == "png":
        ok, buf = cv2.imencode(".png", img)
    elif fmt in ("jpeg", "jpg"):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        raise ValueError(f"fmt must be 'png' or 'jpeg', got {fmt!r}")
    if not ok:
        raise ValueError(f"encoding a {fmt} frame failed")
    return buf.tobytes()
