"""Model input geometry: frames of any shape placed without distortion and mapped back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.model.geometry import Geometry, as_hw, choose_input_size, parse_size


def _frame(h: int, w: int) -> torch.Tensor:
    """A (3,h,w) frame whose value encodes the column: mirroring is visible in it."""
    cols = torch.linspace(0.0, 1.0, w).view(1, 1, w).expand(3, h, w)
    return cols.clone()


def test_stretch_fills_the_input_whatever_the_frame():
    g = Geometry.square(64)
    x, p = g.place(_frame(30, 90))
    assert x.shape == (3, 64, 64)
    assert (p.y0, p.y1, p.x0, p.x1) == (0, 64, 0, 64)
    assert p.frame_hw == (30, 90)


@pytest.mark.parametrize("frame_hw", [(100, 250), (250, 100), (600, 200), (64, 64), (17, 301)])
def test_pad_keeps_the_aspect_ratio_and_centres_the_frame(frame_hw):
    g = Geometry(128, 96, "pad")
    x, p = g.place(_frame(*frame_hw))
    assert x.shape == (3, 128, 96)
    ch, cw = p.content_hw
    assert ch == 128 or cw == 96  # it fills one side
    aspect = frame_hw[1] / frame_hw[0]
    assert abs(cw / ch - aspect) / aspect <= 2.0 / min(ch, cw)  # within rounding to whole pixels
    assert abs(p.y0 - (128 - p.y1)) <= 1 and abs(p.x0 - (96 - p.x1)) <= 1


def test_pad_mirrors_the_frame_into_the_border():
    g = Geometry(64, 64, "pad")
    x, p = g.place(_frame(64, 32))  # content 64x32, 16 columns each side
    assert (p.x0, p.x1) == (16, 48)
    content = x[0, 0, p.x0:p.x1]
    left = x[0, 0, :p.x0]
    # reflect without repeating the edge pixel: column x0-k mirrors column x0+k
    assert torch.allclose(left.flip(0), content[1:p.x0 + 1])
    assert torch.allclose(x[0, 0, p.x1:], content.flip(0)[1:p.x0 + 1])


def test_pad_wider_than_the_frame_is_mirrored_repeatedly():
    g = Geometry(32, 256, "pad")
    x, p = g.place(_frame(64, 8))  # content 32x4: 126 columns of padding each side
    assert p.content_hw == (32, 4)
    assert x.shape == (3, 32, 256)
    assert torch.isfinite(x).all()
    assert x.min() >= 0.0 and x.max() <= 1.0
    # every padded column is one of the content's columns
    content_values = set(np.round(x[0, 0, p.x0:p.x1].numpy(), 5).tolist())
    assert set(np.round(x[0, 0].numpy(), 5).tolist()) <= content_values


def test_a_one_pixel_frame_is_replicated():
    x, p = Geometry(32, 32, "pad").place(torch.full((3, 1, 1), 0.25))
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.full_like(x, 0.25))


def test_a_constant_frame_stays_constant():
    x, _ = Geometry(96, 160, "pad").place(torch.full((3, 300, 100), 0.5))
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=1e-6)


def test_frame_map_is_the_frames_part_of_the_map():
    g = Geometry(64, 64, "pad")
    p = g.placement((32, 64))
    m = np.zeros((64, 64), np.float32)
    m[p.y0:p.y1, p.x0:p.x1] = 1.0
    fm = g.frame_map(m, p)
    assert fm.shape == (32, 64) and (fm == 1.0).all()
    batched = g.frame_map(torch.from_numpy(m)[None], p)
    assert tuple(batched.shape) == (1, 32, 64)


def test_choose_input_size_follows_the_frames_aspect_ratio():
    # a 2448x2048 area camera: wider than tall, area about 256^2, multiples of 32
    h, w = choose_input_size([(2048, 2448)] * 3, 256)
    assert (h, w) == (224, 288)
    # a line-scan strip 16:1
    assert choose_input_size([(256, 4096)], 256) == (64, 1024)
    # square frames keep the square
    assert choose_input_size([(100, 100), (300, 300)], 256) == (256, 256)
    # mixed shapes: the median aspect ratio
    assert choose_input_size([(100, 50), (100, 100), (100, 200), (100, 100), (100, 100)], 256) == (256, 256)
    with pytest.raises(ValueError):
        choose_input_size([], 256)


def test_parse_size_and_as_hw():
    assert parse_size("384x256") == (256, 384)
    assert parse_size("256") == (256, 256)
    assert parse_size("320×96") == (96, 320)
    for bad in ("", "axb", "0x10", "1x2x3"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert as_hw(64) == (64, 64) and as_hw((32, 96)) == (32, 96)


def test_geometry_rejects_unknown_modes_and_sizes():
    with pytest.raises(ValueError):
        Geometry(64, 64, "crop")
    with pytest.raises(ValueError):
        Geometry(0, 64, "pad")
    with pytest.raises(ValueError):
        Geometry(64, 64, "pad").placement((0, 10))


def test_valid_mask_marks_each_frames_part():
    g = Geometry(32, 64, "pad")
    ps = [g.placement((32, 64)), g.placement((32, 32))]
    v = g.valid_mask(ps)
    assert v.shape == (2, 32, 64)
    assert v[0].all() and int(v[1].sum()) == 32 * 32 and v[1, :, 16:48].all()
    assert g.valid_mask([g.placement((64, 128))]) is None  # every frame fills the input
