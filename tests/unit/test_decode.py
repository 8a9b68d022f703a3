"""inspector.contracts.decode: formats, dtypes, layouts and every DecodeError reason."""

from __future__ import annotations

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from inspector.contracts.decode import DecodeError, DecodeLimits, decode_image, encode_png, read_image, sniff_format

RNG = np.random.default_rng(0)
GRAY8 = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
RGB8 = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
RGB16 = RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16)


def _enc(ext: str, rgb_or_gray: np.ndarray, *params: int) -> bytes:
    arr = rgb_or_gray[:, :, ::-1] if rgb_or_gray.ndim == 3 else rgb_or_gray
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(arr), list(params))
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_header_only(width: int, height: int) -> bytes:
    """A valid-looking PNG claiming width×height, with a tiny IDAT (a decompression bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("ext", "src"),
    [
        (".png", GRAY8), (".png", RGB8), (".png", GRAY16), (".png", RGB16),
        (".bmp", GRAY8), (".bmp", RGB8),
        (".tiff", GRAY8), (".tiff", RGB8), (".tiff", GRAY16), (".tiff", RGB16),
    ],
)  # fmt: skip
def test_lossless_roundtrip_keeps_values_dtype_and_rgb_order(ext: str, src: np.ndarray) -> None:
    out = decode_image(_enc(ext, src))
    assert out.dtype == src.dtype
    assert out.shape == src.shape
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, src)


@pytest.mark.parametrize("src", [GRAY8, RGB8])
def test_jpeg_gray_and_colour(src: np.ndarray) -> None:
    smooth = cv2.GaussianBlur(src, (5, 5), 0)
    out = decode_image(_enc(".jpg", smooth, cv2.IMWRITE_JPEG_QUALITY, 98))
    assert out.shape == src.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 6  # RGB order kept, not swapped


def test_rgba_drops_alpha_and_gray_alpha_gives_gray() -> None:
    rgba = np.dstack([RGB8, np.full(GRAY8.shape, 7, np.uint8)])
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    out = decode_image(buf.tobytes())
    assert out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, RGB8)

    bio = io.BytesIO()
    Image.fromarray(np.dstack([GRAY8, GRAY8 // 2]), mode="LA").save(bio, format="PNG")
    out = decode_image(bio.getvalue())
    assert out.shape == (20, 30)
    np.testing.assert_array_equal(out, GRAY8)


def test_float_tiff_in_unit_range_becomes_uint16() -> None:
    f = (GRAY16 / 65535.0).astype(np.float32)
    ok, buf = cv2.imencode(".tiff", f)
    out = decode_image(buf.tobytes())
    assert out.dtype == np.uint16 and out.shape == f.shape
    assert np.abs(out.astype(int) - GRAY16.astype(int)).max() <= 1


def test_negative_float_tiff_is_unsupported() -> None:
    ok, buf = cv2.imencode(".tiff", np.full((10, 10), -1.0, np.float32))
    with pytest.raises(DecodeError) as ei:
        decode_image(buf.tobytes())
    assert ei.value.reason == "unsupported_type"


def test_sniff_format() -> None:
    assert sniff_format(_enc(".jpg", RGB8)) == "jpeg"
    assert sniff_format(_enc(".png", RGB8)) == "png"
    assert sniff_format(_enc(".bmp", RGB8)) == "bmp"
    assert sniff_format(_enc(".tiff", RGB8)) == "tiff"
    assert sniff_format(b"MM\x00*rest") == "tiff"
    assert sniff_format(b"GIF89a...") is None
    assert sniff_format(b"") is None


def test_content_type_is_only_a_hint() -> None:
    out = decode_image(_enc(".png", RGB8), content_type="image/jpeg")
    np.testing.assert_array_equal(out, RGB8)


def _reason(data: bytes, limits: DecodeLimits | None = None) -> str:
    with pytest.raises(DecodeError) as ei:
        decode_image(data, limits or DecodeLimits())
    assert isinstance(ei.value, ValueError) and str(ei.value)
    return ei.value.reason


def test_error_reasons() -> None:
    png = _enc(".png", RGB8)
    assert _reason(b"") == "empty"
    assert _reason(b"this is not an image at all") == "unsupported_type"
    assert _reason(png[: len(png) // 2]) == "undecodable"
    assert _reason(png, DecodeLimits(max_bytes=len(png) - 1)) == "too_large_bytes"
    assert _reason(_enc(".png", np.zeros((1, 1), np.uint8))) == "too_small"
    assert _reason(png, DecodeLimits(formats=frozenset({"jpeg"}))) == "unsupported_type"
    assert _reason(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40) == "undecodable"  # header unreadable


def test_byte_limit_checked_before_anything_else() -> None:
    assert _reason(b"garbage" * 10, DecodeLimits(max_bytes=8)) == "too_large_bytes"


@pytest.mark.parametrize("side", [20_000, 8_000])  # beyond PIL's own bomb limit, and beyond ours only
def test_pixel_bomb_refused_fast_from_header(side: int) -> None:
    bomb = _png_header_only(side, side)
    assert len(bomb) < 200
    t0 = time.perf_counter()
    assert _reason(bomb) == "too_many_pixels"
    assert time.perf_counter() - t0 < 0.5


def test_decode_error_is_picklable() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(DecodeError("empty", "nothing")))
    assert err.reason == "empty" and str(err) == "nothing"


def test_read_image_names_path(tmp_path) -> None:
    good = tmp_path / "ok.png"
    good.write_bytes(_enc(".png", GRAY16))
    np.testing.assert_array_equal(read_image(good), GRAY16)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DecodeError) as ei:
        read_image(bad)
    assert ei.value.reason == "unsupported_type" and str(bad) in str(ei.value)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


@pytest.mark.parametrize("src", [GRAY8, RGB8, GRAY16, RGB16])
def test_encode_png_roundtrip(src: np.ndarray) -> None:
    np.testing.assert_array_equal(decode_image(encode_png(src)), src)


def test_encode_png_bool_and_bad_dtype() -> None:
    mask = GRAY8 > 128
    np.testing.assert_array_equal(decode_image(encode_png(mask)), mask.astype(np.uint8) * 255)
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.float32))


def test_decode_reasons_are_the_contracts_reject_reasons() -> None:
    from inspector.contracts.decode import REASONS
    from inspector.contracts.reasons import DECODE_REASONS, RejectReason

    assert REASONS == DECODE_REASONS and all(isinstance(r, RejectReason) for r in REASONS)
    with pytest.raises(DecodeError) as ei:
        decode_image(b"")
    assert ei.value.reason is RejectReason.EMPTY
    assert DecodeError("undecodable", "from a string").reason is RejectReason.UNDECODABLE
    for not_a_decode_reason in ("unknown_model", "because"):
        with pytest.raises(ValueError, match="unknown DecodeError reason"):
            DecodeError(not_a_decode_reason, "x")
