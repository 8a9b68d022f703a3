"""Bytes -> image array, for untrusted camera frames and for training files alike.

Every decoded image is a C-contiguous numpy array, ``H×W`` (gray) or ``H×W×3`` (RGB),
dtype ``uint8`` or ``uint16`` (see docs/CONTRACTS.md).

Untrusted input is checked in order of cost: byte size first, then the magic bytes,
then the dimensions read from the header (no pixel decoding), and only then is the
image decoded. A decompression bomb is therefore refused before any large allocation.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from inspector.contracts.reasons import DECODE_REASONS, RejectReason

__all__ = [
    "FORMATS",
    "DecodeError",
    "DecodeLimits",
    "ImageInfo",
    "decode_image",
    "encode_png",
    "read_image",
    "sniff_format",
]

#: Formats this module can decode (names as returned by :func:`sniff_format`).
FORMATS: frozenset[str] = frozenset({"jpeg", "png", "bmp", "tiff"})

#: Machine-readable reasons carried by :class:`DecodeError` (reason codes of the wire contract).
REASONS: frozenset[RejectReason] = DECODE_REASONS

_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tiff": "TIFF"}
# PIL modes whose pixels are single-channel; cv2 expands gray+alpha PNGs to BGRA.
_PIL_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass(frozen=True)
class DecodeLimits:
    """Limits applied before (and after) decoding untrusted bytes."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 8
    formats: frozenset[str] = field(default_factory=lambda: FORMATS)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.min_side < 1:
            raise ValueError(f"invalid DecodeLimits: {self!r}")
        object.__setattr__(self, "formats", frozenset(f.lower() for f in self.formats))
        unknown = self.formats - FORMATS
        if unknown:
            raise ValueError(f"unknown image formats {sorted(unknown)}; known: {sorted(FORMATS)}")


# Files on disk are trusted more than camera frames, but still bounded. The pixel limit
# stays below 2 * PIL's default MAX_IMAGE_PIXELS (~179 MP), above which PIL refuses by itself.
FILE_LIMITS = DecodeLimits(max_bytes=1024 * 1024 * 1024, max_pixels=150_000_000, min_side=1)


# PIL modes decoded with two bytes per sample.
_PIL_16BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# PIL modes decoded as 3-channel (cv2 BGR); anything else unknown counts as 4 (the worst case).
_PIL_RGB_MODES = frozenset({"RGB", "YCbCr", "LAB", "HSV"})


@dataclass(frozen=True)
class ImageInfo:
    """What the header says, before any pixel is decoded."""

    fmt: str
    width: int
    height: int
    mode: str
    bits: int = 8  # largest bits per sample the header states (PIL's mode may say 8 for 16-bit RGB)

    @property
    def decoded_bytes(self) -> int:
        """Upper estimate of the decoded array's size (channels from the PIL mode, depth from the
        header's bits per sample or the mode)."""
        if self.mode in _PIL_GRAY_MODES:
            channels = 2 if self.mode in ("LA", "La") else 1
        elif self.mode in _PIL_RGB_MODES:
            channels = 3
        else:  # RGBA, CMYK, P (palettes may carry transparency), ...
            channels = 4
        depth = 2 if self.bits > 8 or self.mode in _PIL_16BIT_MODES or self.mode.endswith("16") else 1
        return self.width * self.height * channels * depth


class DecodeError(ValueError):
    """An image could not be decoded; ``reason`` is one of :data:`REASONS` (a code given as a
    string is taken as the :class:`RejectReason` of that value)."""

    def __init__(self, reason: RejectReason | str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown DecodeError reason {reason!r}")
        super().__init__(message)
        self.reason = RejectReason(reason)
        self.message = message

    def __reduce__(self):  # keep picklable (ValueError's default passes only args)
        return (type(self), (self.reason, self.message))


def sniff_format(data: bytes) -> str | None:
    """Return 'jpeg' | 'png' | 'bmp' | 'tiff' from the magic bytes, or None."""
    head = bytes(data[:8])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def _bits_per_sample(data: bytes, fmt: str, im: Image.Image) -> int:
    if fmt == "png" and len(data) > 24:
        return int(data[24])  # IHDR bit depth
    if fmt == "tiff":
        bps = getattr(im, "tag_v2", {}).get(258)
        if isinstance(bps, (tuple, list)) and bps:
            return max(int(b) for b in bps)
        if isinstance(bps, int):
            return bps
    return 8


def _header_size(data: bytes, fmt: str) -> tuple[int, int, str, int]:
    """(width, height, PIL mode, bits per sample) from the header only; PIL's ``open`` is lazy."""
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[fmt]]) as im:
            width, height = im.size
            return int(width), int(height), str(im.mode), _bits_per_sample(data, fmt, im)
    except Image.DecompressionBombError as exc:
        # PIL's own (global, untouched here) limit fired: far beyond any sane frame.
        raise DecodeError(RejectReason.TOO_MANY_PIXELS, f"image header refused as a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as exc:
        raise DecodeError(RejectReason.UNDECODABLE, f"cannot read {fmt} header: {exc}") from exc


def _to_uint(img: np.ndarray) -> np.ndarray:
    """Keep uint8/uint16; convert other dtypes only when values fit losslessly-ish.

    Why value-preserving and not min/max stretching: a per-image stretch would change
    what "normal" looks like from frame to frame and hide real intensity defects.
    """
    if img.dtype in (np.uint8, np.uint16):
        return img
    if img.dtype == np.bool_:
        return img.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(img.dtype, np.floating):
        if img.size == 0 or not np.isfinite(img).all():
            raise DecodeError(RejectReason.UNSUPPORTED_TYPE, f"{img.dtype} image with non-finite values")
        lo, hi = float(img.min()), float(img.max())
        if lo < 0.0:
            raise DecodeError(RejectReason.UNSUPPORTED_TYPE, f"{img.dtype} image with negative values")
        if hi <= 1.0:  # normalised float image
            return np.round(img * 65535.0).astype(np.uint16)
        if hi <= 65535.0:  # float-typed counts
            return np.round(img).astype(np.uint16)
        raise DecodeError(RejectReason.UNSUPPORTED_TYPE, f"{img.dtype} image with values up to {hi:g}")
    if np.issubdtype(img.dtype, np.integer):
        lo, hi = int(img.min()), int(img.max())
        if lo >= 0 and hi <= 255 and img.dtype.itemsize == 1:
            return img.astype(np.uint8)
        if lo >= 0 and hi <= 65535:
            return img.astype(np.uint16)
        raise DecodeError(RejectReason.UNSUPPORTED_TYPE, f"{img.dtype} image with values in [{lo}, {hi}]")
    raise DecodeError(RejectReason.UNSUPPORTED_TYPE, f"unsupported pixel type {img.dtype}")


def _to_layout(img: np.ndarray, pil_mode: str) -> np.ndarray:
    """cv2 BGR/BGRA/gray+alpha -> RGB or gray, C-contiguous."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return np.ascontiguousarray(img)
    if img.ndim != 3:
        raise DecodeError(RejectReason.UNSUPPORTED_TYPE, f"unsupported array shape {img.shape}")
    channels = img.shape[2]
    if channels == 2:  # gray + alpha
        return np.ascontiguousarray(img[:, :, 0])
    if channels in (3, 4):
        # cv2 expands gray(+alpha) PNGs to BGR(A); give them back as gray.
        if pil_mode in _PIL_GRAY_MODES and np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(
            img[:, :, 1], img[:, :, 2]
        ):
            return np.ascontiguousarray(img[:, :, 0])
        code = cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGB
        return np.ascontiguousarray(cv2.cvtColor(img, code))
    raise DecodeError(RejectReason.UNSUPPORTED_TYPE, f"unsupported channel count {channels}")


def decode_image(
    data: bytes,
    limits: DecodeLimits = DecodeLimits(),
    content_type: str | None = None,
    on_header: Callable[[ImageInfo], None] | None = None,
) -> np.ndarray:
    """Decode untrusted bytes to ``H×W`` or ``H×W×3`` uint8/uint16 (RGB), or raise DecodeError.

    ``content_type`` is only a hint used in messages: the magic bytes decide the format.
    EXIF orientation is ignored on purpose (fixed cameras; pixels as the sensor wrote them).
    ``on_header`` is called once the header passed the limits, before any pixel is decoded (the
    worker reserves the decoded size from its memory budget there).
    """
    n = len(data)
    if n == 0:
        raise DecodeError(RejectReason.EMPTY, "empty image data")
    if n > limits.max_bytes:
        raise DecodeError(RejectReason.TOO_LARGE_BYTES, f"image is {n} bytes, limit {limits.max_bytes}")
    fmt = sniff_format(data)
    if fmt is None or fmt not in limits.formats:
        hint = f" (content type hint {content_type!r})" if content_type else ""
        what = "unknown format" if fmt is None else f"format {fmt!r} not allowed"
        raise DecodeError(
            RejectReason.UNSUPPORTED_TYPE, f"{what}{hint}; allowed: {', '.join(sorted(limits.formats))}"
        )

    width, height, mode, bits = _header_size(data, fmt)
    if width * height > limits.max_pixels:
        raise DecodeError(
            RejectReason.TOO_MANY_PIXELS, f"{fmt} is {width}x{height} = {width * height} px, limit {limits.max_pixels}"
        )
    if min(width, height) < limits.min_side:
        raise DecodeError(RejectReason.TOO_SMALL, f"{fmt} is {width}x{height}, minimum side {limits.min_side}")
    if on_header is not None:
        on_header(ImageInfo(fmt, width, height, mode, bits))

    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise DecodeError(RejectReason.UNDECODABLE, f"cannot decode {fmt}: {exc}") from exc
    if img is None or img.size == 0:
        raise DecodeError(RejectReason.UNDECODABLE, f"cannot decode {fmt} data ({n} bytes)")
    h, w = img.shape[:2]
    # Defensive: the decoder must agree with the header we checked.
    if h * w > limits.max_pixels or min(h, w) < limits.min_side:
        raise DecodeError(RejectReason.UNDECODABLE, f"decoded {w}x{h} disagrees with header {width}x{height}")
    return _to_layout(_to_uint(img), mode)


def read_image(path: str | Path, limits: DecodeLimits = FILE_LIMITS) -> np.ndarray:
    """Decode an image file (generous limits); DecodeError messages name the path.

    OSError (missing file, permissions) propagates unchanged: it is not a decoding problem.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise DecodeError(RejectReason.TOO_LARGE_BYTES, f"{path}: file is {size} bytes, limit {limits.max_bytes}")
    data = path.read_bytes()
    try:
        return decode_image(data, limits)
    except DecodeError as exc:
        raise DecodeError(exc.reason, f"{path}: {exc.message}") from exc


def encode_png(array: np.ndarray) -> bytes:
    """Encode ``H×W`` / ``H×W×1`` / ``H×W×3`` (RGB) uint8/uint16 (bool -> 0/255) as PNG."""
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png needs uint8 or uint16, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    elif arr.ndim != 2:
        raise ValueError(f"encode_png needs H×W or H×W×3, got shape {arr.shape}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise ValueError(f"PNG encoding failed for shape {arr.shape} {arr.dtype}")
    return buf.tobytes()
