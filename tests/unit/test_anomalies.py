"""Synthetic anomalies for epoch selection: reproducible by seed, masks where the paint is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inspector.model.geometry import Geometry
from trainer.anomalies import KINDS, paint, smooth_mask
from trainer.synthetic import make_image


def _normals(n: int = 6, h: int = 64, w: int = 96) -> torch.Tensor:
    imgs = [make_image(size=h, width=w, seed=2, index=i)[0] for i in range(n)]
    return torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255.0 for i in imgs])


def test_same_seed_same_paint_other_seed_other_paint():
    x = _normals()
    a, ma, ka = paint(x, seed=5)
    b, mb, kb = paint(x, seed=5)
    c, mc, _ = paint(x, seed=6)
    assert torch.equal(a, b) and torch.equal(ma, mb) and ka == kb
    assert not torch.equal(ma, mc)
    assert ka == [KINDS[i % 3] for i in range(len(x))]
    assert torch.equal(x, _normals())  # the input is not touched


def test_one_images_paint_does_not_depend_on_the_others():
    x = _normals()
    a, ma, _ = paint(x, seed=1)
    y = x.clone()
    y[4] = 0.5  # another image changes (not the donor of image 0, which is image 1)
    b, mb, _ = paint(y, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(ma[0], mb[0])


def test_masks_match_the_paint():
    x = _normals(9)
    out, masks, kinds = paint(x, seed=0)
    for i, kind in enumerate(kinds):
        diff = (out[i] - x[i]).abs().amax(dim=0)
        m = masks[i]
        assert m.any(), kind
        assert 0.01 < m.float().mean() < 0.6, kind  # a region, not a dot or the whole frame
        if kind in ("patch", "texture"):
            assert float(diff[~m].max()) == 0.0, kind  # nothing changes outside the mask
            assert float((diff[m] > 1e-3).float().mean()) > 0.5, kind
        else:  # blob: soft edges, but the change inside is larger than anywhere outside
            assert float(diff[m].mean()) > 2 * float(diff[~m].mean()), kind
            assert float(diff[m].min()) >= float(diff[~m].max()) * 0.3, kind
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_paint_stays_on_the_frame_not_on_the_mirrored_border():
    g = Geometry(64, 128, "pad")
    frames = [make_image(size=64, width=48, seed=2, index=i)[0] for i in range(6)]
    xs, ps = zip(*[g.place(torch.from_numpy(f).permute(2, 0, 1).float() / 255.0) for f in frames])
    x = torch.stack(xs)
    valid = g.valid_mask(list(ps))
    out, masks, _ = paint(x, seed=3, valid=valid)
    assert not (masks & ~valid).any()
    assert torch.equal(out[:, :, ~valid[0]], x[:, :, ~valid[0]])


def test_smooth_mask_is_one_area_inside_its_box():
    rng = np.random.default_rng(0)
    m = smooth_mask(rng, 64, 64, (10, 40, 20, 50))
    assert m.any() and not m[:10].any() and not m[40:].any() and not m[:, :20].any() and not m[:, 50:].any()


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="two normal images"):
        paint(_normals(1))
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        paint(_normals(2), kinds=("scratch",))
    with pytest.raises(ValueError):
        paint(torch.zeros(2, 64, 64))
