"""trainer.synthetic: valid MVTec layout, sane masks, determinism, frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspector.contracts.decode import decode_image, read_image
from trainer.data import load_sample, scan_dataset
from trainer.synthetic import make_dataset, make_frame


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_scans_and_masks_are_sane(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", n_train=5, n_test_good=2, n_test_defect=3, size=48)
    idx = scan_dataset(root)
    assert len(idx.train) == 5 and idx.defect_types == ["scratch", "spot"]
    assert sum(s.label == 0 for s in idx.test) == 2 and sum(s.label == 1 for s in idx.test) == 6
    for s in idx.test:
        image, mask = load_sample(s)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        if s.label:
            assert mask is not None and mask.shape == (48, 48)
            assert 0 < mask.sum() < 0.25 * mask.size
            # away from the border: the defect lies inside the part
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
            raw = read_image(s.mask_path)
            assert set(np.unique(raw).tolist()) == {0, 255}


def test_defects_differ_from_normal_texture(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", n_train=1, n_test_good=0, n_test_defect=2, size=64)
    for s in scan_dataset(root).test:
        image, mask = load_sample(s)
        gray = image.astype(float).mean(axis=2)
        assert abs(gray[mask].mean() - gray[~mask].mean()) > 20


def test_deterministic_by_seed(tmp_path: Path) -> None:
    kw = dict(n_train=3, n_test_good=1, n_test_defect=1, size=32)
    a = _files(make_dataset(tmp_path / "a", seed=7, **kw))
    b = _files(make_dataset(tmp_path / "b", seed=7, **kw))
    c = _files(make_dataset(tmp_path / "c", seed=8, **kw))
    assert a == b
    assert a.keys() == c.keys() and a != c
    # normal images vary within a dataset
    assert a["train/good/000.png"] != a["train/good/001.png"]


def test_gray_and_refuses_non_empty_root(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "g", n_train=2, n_test_good=1, n_test_defect=1, size=32, gray=True,
                        defect_types=("spot",))  # fmt: skip
    assert read_image(root / "train" / "good" / "000.png").shape == (32, 32)
    assert scan_dataset(root).defect_types == ["spot"]
    with pytest.raises(FileExistsError):
        make_dataset(root)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
@pytest.mark.parametrize("defect", [None, "scratch", "spot"])
def test_make_frame(fmt: str, defect: str | None) -> None:
    data = make_frame(defect, size=64, fmt=fmt, index=2)
    img = decode_image(data)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert data == make_frame(defect, size=64, fmt=fmt, index=2)
    assert decode_image(make_frame(defect, size=64, fmt=fmt, gray=True)).shape == (64, 64)
