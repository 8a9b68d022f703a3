"""The hostile-input corpus: frames (bytes + headers + key) no camera should send, made
deterministically on the fly (nothing binary is committed; ``python tests/data/fuzz/corpus.py DIR``
writes them out to look at).

Each case names the outcomes it may have: a verdict (``ok``/``defect``), or ``rejected`` with one
of the given reasons. Limits assumed: the worker's defaults except ``max_pixels`` =
:data:`MAX_PIXELS` and ``min_side`` 8 (set by the tests that use the corpus).
"""

from __future__ import annotations

import io
import random
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from inspector.contracts.wire import (
    CAPTURED_AT_HEADER,
    CONTENT_TYPE_HEADER,
    FRAME_ID_HEADER,
    LINE_ID_HEADER,
    MODEL_HEADER,
)

MAX_PIXELS = 5_000_000  # the tests run the worker with this pixel limit
VERDICT = frozenset({"ok", "defect"})


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes
    allowed: frozenset[str]  # "ok"/"defect" and/or "rejected:<reason>"
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    key: bytes | None = b"cam-fuzz"
    camera_header: bool = True  # the test adds camera-id/frame-id headers unless False


def _part(size: int = 64, seed: int = 0) -> np.ndarray:
    """A plausible RGB part image (smooth texture), deterministic."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (0, 0), 3)
    return np.ascontiguousarray(base)


def _enc(ext: str, img: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(side: int = 10_000) -> bytes:
    """A valid ``side``×``side`` 8-bit gray PNG of zeros (100 MP at the default) in ~100 KB,
    streamed row by row so that making it never allocates the image."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def flat_png(width: int, height: int, channels: int = 3) -> bytes:
    """A large, single-colour PNG: a few KB that decode to ``width*height*channels`` bytes."""
    img = np.full((height, width, channels) if channels > 1 else (height, width), 90, np.uint8)
    return _enc(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def tiff_claiming(width: int, height: int) -> bytes:
    """A little-endian gray TIFF whose header claims ``width``×``height`` but holds 64 bytes."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 8 + 4), (278, 4, 1, height), (279, 4, 1, 64)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(range(64))


def _flip(data: bytes, rng: random.Random, n: int, start: int) -> bytes:
    out = bytearray(data)
    for _ in range(n):
        i = rng.randrange(start, len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def _pil(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def _tiff(img: np.ndarray) -> bytes:
    return _pil(img, "TIFF")


def cases() -> list[Case]:
    rng = random.Random(7)
    part = _part()
    jpeg = _enc(".jpg", part[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    png = _enc(".png", part)
    tiff = _tiff(part)
    either = lambda *reasons: VERDICT | {f"rejected:{r}" for r in reasons}  # noqa: E731
    rejected = lambda *reasons: frozenset(f"rejected:{r}" for r in reasons)  # noqa: E731
    gray16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    rgb16 = (part.astype(np.uint16) * 257)
    rgba = np.dstack([part, np.full((64, 64), 200, np.uint8)])
    out = [
        Case("jpeg-ok", jpeg, VERDICT),
        Case("png-ok", png, VERDICT),
        Case("bmp-ok", _enc(".bmp", part), VERDICT),
        Case("tiff-ok", tiff, VERDICT),
        Case("png-16bit-gray", _enc(".png", gray16), VERDICT),
        Case("png-16bit-rgb", _enc(".png", rgb16), VERDICT),
        Case("tiff-16bit-gray", _tiff(gray16), VERDICT),
        Case("png-4-channel", _enc(".png", rgba), VERDICT),
        Case("png-gray-alpha", _pil(np.dstack([part[:, :, 0], part[:, :, 1]]), "PNG"), VERDICT),
        Case("jpeg-gray", _enc(".jpg", part[:, :, 0]), VERDICT),
        Case("zero-bytes", b"", rejected("empty")),
        Case("one-pixel-png", _enc(".png", part[:1, :1]), rejected("too_small")),
        Case("one-pixel-jpeg", _enc(".jpg", part[:1, :1]), rejected("too_small")),
        Case("png-bomb-100mp", png_bomb(), rejected("too_many_pixels")),
        Case("tiff-bomb-header", tiff_claiming(60_000, 60_000), rejected("too_many_pixels")),
        Case("tiff-lying-header", tiff_claiming(64, 64), rejected("undecodable")),
        Case("jpeg-truncated-third", jpeg[: len(jpeg) // 3], either("undecodable")),
        Case("jpeg-truncated-header", jpeg[:20], rejected("undecodable")),
        Case("jpeg-magic-then-noise", b"\xff\xd8\xff\xe0" + rng.randbytes(3000), rejected("undecodable")),
        Case("jpeg-bit-flips", _flip(jpeg, rng, 40, 200), either("undecodable")),
        Case("png-truncated", png[: len(png) // 2], either("undecodable")),
        Case("png-bit-flips-in-idat", _flip(png, rng, 30, 60), either("undecodable")),
        Case("png-header-only", png[:33], rejected("undecodable")),
        Case("tiff-truncated", tiff[: len(tiff) // 2], either("undecodable")),
        Case("tiff-magic-then-noise", b"II*\x00" + rng.randbytes(2000), either("undecodable", "too_many_pixels")),
        Case("gif", b"GIF89a" + rng.randbytes(200), rejected("unsupported_type")),
        Case("text", b"<html>not an image</html>", rejected("unsupported_type")),
        Case("random-noise", rng.randbytes(5000), rejected("unsupported_type")),
        Case("wrong-content-type", jpeg, VERDICT, headers=[(CONTENT_TYPE_HEADER, b"image/png")]),
        Case("nonsense-content-type", png, VERDICT, headers=[(CONTENT_TYPE_HEADER, rng.randbytes(300))]),
        Case("garbage-headers", jpeg, VERDICT, headers=[
            (LINE_ID_HEADER, b"\x00\x01\x02\xff"), (CAPTURED_AT_HEADER, b"NaN"), (CONTENT_TYPE_HEADER, b"\xff\xfe"),
            (f"{FRAME_ID_HEADER}-not-really", rng.randbytes(50)), ("", b""), (CAPTURED_AT_HEADER, b"1e400"),
        ]),
        Case("huge-header-values", jpeg, VERDICT, headers=[
            (LINE_ID_HEADER, b"L" * 1_000_000), (CAPTURED_AT_HEADER, b"9" * 5000), ("x-junk", b"j" * 500_000),
        ]),
        Case("many-headers", jpeg, VERDICT, headers=[(f"h{i}", b"v" * 100) for i in range(5000)]),
        Case("unknown-model", jpeg, rejected("unknown_model"), headers=[(MODEL_HEADER, b"no-such-model")]),
        Case("binary-model-header", jpeg, rejected("bad_header"), headers=[(MODEL_HEADER, b"\xff\xfe\x00")]),
        Case("huge-model-header", jpeg, rejected("bad_header"), headers=[(MODEL_HEADER, b"m" * 100_000)]),
        Case("key-1mb", jpeg, VERDICT, key=b"k" * (1 << 20), camera_header=False),
        Case("no-key-no-headers", png, VERDICT, key=None, camera_header=False),
        Case("large-flat-png", flat_png(2000, 2000), VERDICT),  # 12 MB decoded from a few KB
    ]
    return out


def memory_burst(n: int = 48) -> list[bytes]:
    """``n`` distinct frames that are small on the wire and large decoded (4 MP RGB each)."""
    frames = []
    for i in range(n):
        img = np.full((2000, 2000, 3), 40 + i, np.uint8)
        img[i * 40:(i + 1) * 40, :, 0] = 200
        frames.append(_enc(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1]))
    return frames


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus")
    target.mkdir(parents=True, exist_ok=True)
    for c in cases():
        (target / f"{c.name}.bin").write_bytes(c.value)
        print(f"{c.name:28s} {len(c.value):>9d} bytes  {sorted(c.allowed)}")
