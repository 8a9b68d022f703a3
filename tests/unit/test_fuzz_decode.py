"""Hostile input at the decode/validation layer: property-based (hypothesis) and the fuzz corpus.

What a worker does with a record before the model sees it is ``admission`` (size, headers, model)
then ``decode_image``; both must answer every input with an image or a reason, never with another
exception, and never allocate more than the limits allow.
"""

from __future__ import annotations

import io
import sys
import threading
import time
import tracemalloc

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from inspector.pipeline.budget import ByteBudget
from inspector.contracts.decode import REASONS, DecodeError, DecodeLimits, ImageInfo, decode_image
from inspector.contracts.wire import FrameHeaders
from inspector.pipeline.admission import admission
from tests.data.fuzz.corpus import MAX_PIXELS, cases, png_bomb

LIMITS = DecodeLimits(max_bytes=32 << 20, max_pixels=MAX_PIXELS)
FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAGIC = [b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*"]


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), (0, 0), 2)
    out = [cv2.imencode(ext, img)[1].tobytes() for ext in (".jpg", ".png", ".bmp")]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="TIFF")
    out.append(buf.getvalue())
    out.append(cv2.imencode(".png", (img[:, :, 0].astype(np.uint16) * 257))[1].tobytes())
    return out


SEEDS = _seed_images()


def check_outcome(data: bytes, limits: DecodeLimits = LIMITS) -> str:
    """Decode; assert the contract either way; return 'image' or the reason."""
    infos: list[ImageInfo] = []
    try:
        img = decode_image(data, limits, None, infos.append)
    except DecodeError as exc:
        assert exc.reason in REASONS
        assert str(exc)
        return exc.reason
    assert isinstance(img, np.ndarray) and img.flags.c_contiguous
    assert img.dtype in (np.uint8, np.uint16)
    assert img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3), img.shape
    h, w = img.shape[:2]
    assert h * w <= limits.max_pixels and min(h, w) >= limits.min_side
    assert len(infos) == 1 and (infos[0].width, infos[0].height) == (w, h)
    return "image"


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_an_image_or_a_reason(data: bytes) -> None:
    check_outcome(data)


@FUZZ
@given(st.sampled_from(MAGIC), st.binary(max_size=4096))
def test_magic_bytes_then_garbage(magic: bytes, rest: bytes) -> None:
    check_outcome(magic + rest)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=40),
    st.one_of(st.none(), st.integers(0, 1 << 16)),
)
def test_mutated_real_images(seed: bytes, flips: list[tuple[int, int]], cut: int | None) -> None:
    """Real JPEG/PNG/BMP/TIFF files with bytes overwritten and/or truncated anywhere."""
    data = bytearray(seed)
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    check_outcome(bytes(data))


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.sampled_from([".png", ".tiff", ".bmp", ".jpg"]),
    st.sampled_from([np.uint8, np.uint16]),
    st.sampled_from([1, 3, 4]),
    st.integers(8, 80),
    st.integers(8, 80),
    st.integers(0, 2**32 - 1),
)
def test_valid_images_decode_and_the_budget_estimate_is_an_upper_bound(ext, dtype, channels, h, w, seed) -> None:
    """Every valid image of any supported layout decodes at its size, and the decoded size the
    header promised (what the worker reserves from its memory budget) is never exceeded."""
    if dtype == np.uint16 and ext in (".bmp", ".jpg"):
        dtype = np.uint8  # these formats are 8-bit only
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    img = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    ok, buf = cv2.imencode(ext, img)
    if not ok:  # a layout this codec cannot write (e.g. 4-channel BMP in some builds)
        return
    infos: list[ImageInfo] = []
    out = decode_image(buf.tobytes(), LIMITS, None, infos.append)
    assert out.shape[:2] == (h, w)
    assert out.nbytes <= infos[0].decoded_bytes, (ext, dtype, channels, infos[0])


headers_strategy = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["frame-id", "camera-id", "line-id", "model", "captured-at", "content-type"]),
                  st.text(max_size=20), st.binary(max_size=20), st.integers(), st.none()),
        st.one_of(st.binary(max_size=600), st.text(max_size=50), st.none(), st.integers(), st.floats()),
    ),
    max_size=80,
)


@FUZZ
@given(headers_strategy, st.one_of(st.none(), st.binary(max_size=600)), st.integers(0, 1 << 40))
def test_any_headers_parse_and_route_without_raising(headers, key, offset) -> None:
    h = FrameHeaders.from_kafka(headers, key, "frames", 0, offset)
    assert h.frame_id and h.camera_id
    assert len(h.frame_id.encode()) <= 256 or h.frame_id_derived
    model = h.model or "parts"
    verdict = admission(100, 1000, h, model, lambda name: name == "parts")
    if h.model_header_bad:
        assert verdict is not None and verdict[0] == "bad_header"
    elif model != "parts":
        assert verdict is not None and verdict[0] == "unknown_model"
    else:
        assert verdict is None


def test_unreadable_header_objects_do_not_raise() -> None:
    class Exploding:
        def __iter__(self):
            raise RuntimeError("boom")

    h = FrameHeaders.from_kafka(Exploding(), b"k", "frames", 1, 2)
    assert h.frame_id == "frames:1:2" and h.problems


# ---------------------------------------------------------------------------------------------
# the corpus (tests/data/fuzz/corpus.py), through the same checks the worker runs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
def test_corpus_case_gets_an_allowed_outcome(case) -> None:
    headers = list(case.headers)
    h = FrameHeaders.from_kafka(headers, case.key, "frames", 0, 7)
    model = h.model or "parts"
    reject = admission(len(case.value), 32 << 20, h, model, lambda name: name == "parts")
    if reject is None:
        outcome = check_outcome(case.value)
        outcome = "ok" if outcome == "image" else f"rejected:{outcome}"
    else:
        outcome = f"rejected:{reject[0]}"
    # "ok" stands for a verdict here: which of ok/defect is the model's business
    assert outcome in case.allowed or (outcome == "ok" and "defect" in case.allowed), (case.name, outcome)


def test_decompression_bomb_is_refused_without_allocating_it() -> None:
    bomb = png_bomb()
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as err:
            decode_image(bomb, DecodeLimits(max_pixels=64_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.reason == "too_many_pixels"
    assert peak < 5_000_000, f"refusing a 100 MP bomb allocated {peak} bytes"


# ---------------------------------------------------------------------------------------------
# the decoded-image budget
# ---------------------------------------------------------------------------------------------


def test_budget_blocks_until_released_and_lets_one_oversized_item_through() -> None:
    b = ByteBudget(100)
    assert b.acquire(60) and b.acquire(40)
    assert not b.acquire(1, timeout=0.05)
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(b.acquire(50, timeout=5)))
    t.start()
    time.sleep(0.1)
    assert not got  # still waiting
    b.release(60)
    t.join(5)
    assert got == [True] and b.used == 90
    b.release(90)
    assert b.acquire(500, timeout=0.1)  # larger than the budget: allowed once it is empty
    assert not b.acquire(1, timeout=0.05)
    b.release(500)
    assert b.used == 0


def test_budget_lets_the_head_of_the_line_overdraw_when_woken() -> None:
    """The worker's head-of-line frame must not wait for bytes held by frames queued behind it."""
    b = ByteBudget(100)
    assert b.acquire(90)  # held by frames that wait for the head in the pump
    head = threading.Event()
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(b.acquire(50, timeout=10, overdraw=head.is_set)))
    t.start()
    time.sleep(0.1)
    assert not got  # not the head yet, does not fit: waits
    head.set()
    b.wake()  # what the pump does after it moved frames on
    t.join(2)
    assert got == [True] and b.used == 140  # over the limit by that one image
    assert not b.acquire(1, timeout=0.05)  # everyone else still waits


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=30))
def test_budget_never_holds_more_than_its_limit_plus_one_item(sizes: list[int]) -> None:
    b = ByteBudget(256)
    held: list[int] = []
    peak = 0
    lock = threading.Lock()

    def take(n: int) -> None:
        nonlocal peak
        assert b.acquire(n, timeout=5)
        with lock:
            held.append(n)
            peak = max(peak, b.used)
        time.sleep(0.001)
        with lock:
            held.remove(n)
        b.release(n)

    threads = [threading.Thread(target=take, args=(n,)) for n in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert b.used == 0
    assert peak <= max(256, max(sizes))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_mmap_threshold_can_be_pinned_and_none_leaves_it_alone() -> None:
    from inspector.pipeline.budget import pin_mmap_threshold

    assert pin_mmap_threshold(1 << 20)
    assert not pin_mmap_threshold(None)
