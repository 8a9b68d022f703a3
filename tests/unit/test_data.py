"""trainer.data: MVTec scanning, loading errors, split and fingerprint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inspector.contracts.decode import encode_png
from trainer.data import (
    DatasetError,
    data_fingerprint,
    load_sample,
    resize_mask,
    scan_dataset,
    split_train_val,
)

RNG = np.random.default_rng(1)


def _img(h: int, w: int, gray: bool = False, dtype=np.uint8) -> np.ndarray:
    hi = np.iinfo(dtype).max
    shape = (h, w) if gray else (h, w, 3)
    return RNG.integers(0, hi, shape, dtype=dtype, endpoint=True)


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(arr))
    return path


def _mvtec(root: Path, size: int = 24) -> Path:
    for i in range(3):
        _write(root / "train" / "good" / f"{i:03d}.png", _img(size, size))
    _write(root / "test" / "good" / "000.png", _img(size, size))
    _write(root / "test" / "good" / "001.PNG", _img(size, size, gray=True))  # case-insensitive ext
    _write(root / "ground_truth" / "good" / "000_mask.png", np.zeros((5, 5), np.uint8))  # ignored
    _write(root / "test" / "crack" / "000.png", _img(size, size))
    mask = np.zeros((size, size), bool)
    mask[4:12, 6:10] = True
    _write(root / "ground_truth" / "crack" / "000_mask.png", mask)
    (root / "train" / "good" / "notes.txt").write_text("not an image")
    return root


def test_scan_dataset_layout(tmp_path: Path) -> None:
    idx = scan_dataset(_mvtec(tmp_path / "ds"))
    assert [s.path.name for s in idx.train] == ["000.png", "001.png", "002.png"]
    assert idx.defect_types == ["crack"]
    assert [(s.defect_type, s.label) for s in idx.test] == [("crack", 1), ("good", 0), ("good", 0)]
    crack = idx.test[0]
    assert crack.mask_path == tmp_path / "ds" / "ground_truth" / "crack" / "000_mask.png"
    assert all(s.mask_path is None for s in idx.test if s.label == 0)
    assert scan_dataset(tmp_path / "ds") == idx  # deterministic


def test_scan_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope"):
        scan_dataset(tmp_path / "nope")
    root = tmp_path / "ds"
    root.mkdir()
    with pytest.raises(DatasetError, match=r"train.good"):
        scan_dataset(root)
    (root / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        scan_dataset(root)


def test_missing_mask_names_expected_path(tmp_path: Path) -> None:
    root = _mvtec(tmp_path / "ds")
    _write(root / "test" / "crack" / "007.png", _img(24, 24))
    with pytest.raises(DatasetError) as ei:
        scan_dataset(root)
    assert str(root / "ground_truth" / "crack" / "007_mask.png") in str(ei.value)


def test_mask_wrong_size_names_both_files(tmp_path: Path) -> None:
    root = _mvtec(tmp_path / "ds")
    mask_path = _write(root / "ground_truth" / "crack" / "000_mask.png", np.ones((10, 12), bool))
    idx = scan_dataset(root)
    with pytest.raises(DatasetError) as ei:
        load_sample(idx.test[0])
    msg = str(ei.value)
    assert str(mask_path) in msg and str(idx.test[0].path) in msg and "12x10" in msg and "24x24" in msg


def test_load_sample_returns_the_image_as_decoded_with_its_mask(tmp_path: Path) -> None:
    idx = scan_dataset(_mvtec(tmp_path / "ds"))
    image, mask = load_sample(idx.test[0])
    assert image.shape == (24, 24, 3) and image.dtype == np.uint8
    assert mask.dtype == bool and mask.sum() == 32
    assert resize_mask(mask, 12).sum() == 8
    assert load_sample(idx.test[1])[1] is None


def test_resize_mask_keeps_thin_defects() -> None:
    m = np.zeros((64, 64), bool)
    m[10:40, 30] = True  # 1-px line: area>0.5 would erase it when shrinking 4x
    out = resize_mask(m, 16)
    assert out.shape == (16, 16) and out.any()
    blob = np.zeros((64, 64), bool)
    blob[0:32, 0:32] = True
    np.testing.assert_array_equal(resize_mask(blob, 8)[:4, :4], True)
    assert resize_mask(blob, 8).sum() == 16
    assert resize_mask(blob, 128).sum() == 64 * 64


def test_split_train_val_deterministic() -> None:
    paths = [Path(f"/x/{i:02d}.png") for i in range(20)]
    tr, va = split_train_val(paths, 0.25, seed=3)
    assert len(va) == 5 and len(tr) == 15 and not set(tr) & set(va)
    assert split_train_val(list(reversed(paths)), 0.25, seed=3) == (tr, va)
    assert split_train_val(paths, 0.25, seed=4) != (tr, va)
    assert [len(part) for part in split_train_val(paths[:2], 0.1)] == [1, 1]  # at least one each
    assert split_train_val(paths[:1], 0.5) == (paths[:1], [])
    assert split_train_val(paths, 0.0) == (sorted(paths), [])


def test_data_fingerprint(tmp_path: Path) -> None:
    a = _write(tmp_path / "d1" / "a.png", _img(8, 8))
    b = _write(tmp_path / "d1" / "sub" / "b.png", _img(8, 8))
    fp = data_fingerprint([a, b])
    assert fp == data_fingerprint([b, a]) and len(fp) == 64
    moved = tmp_path / "d2"
    moved.mkdir()
    (moved / "sub").mkdir()
    (moved / "a.png").write_bytes(a.read_bytes())
    (moved / "sub" / "b.png").write_bytes(b.read_bytes())
    assert data_fingerprint([moved / "a.png", moved / "sub" / "b.png"]) == fp  # location-independent
    b.write_bytes(encode_png(_img(8, 8)))
    assert data_fingerprint([a, b]) != fp
