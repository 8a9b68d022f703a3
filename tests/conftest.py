"""Shared fixtures: small synthetic data sets and a real (briefly trained) checkpoint, made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MAGNETIC_TILE = Path(os.environ.get("MAGNETIC_TILE", SHARED / "datasets" / "magnetic_tile"))

# Small, fast, real: EfficientNet-Lite0 ImageNet teacher, 64 px synthetic parts.
TINY_SIZE = 64
TINY_EPOCHS = 12


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    from trainer.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "parts", n_train=48, n_test_good=12, n_test_defect=12,
                        size=128, seed=0)


@pytest.fixture(scope="session")
def tiny_fit(tmp_path_factory, synthetic_data) -> dict:
    """A real RD checkpoint trained for a few seconds on synthetic parts (the summary of ``fit``)."""
    from trainer.fit import FitConfig, fit

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    return fit(FitConfig(data=synthetic_data, out=out, method="rd", teacher="efficientnet_lite0",
                         image_size=TINY_SIZE, epochs=TINY_EPOCHS, seed=0, progress=False, name="parts"))


# Non-square parts (line-scan-like strips, 64 x 160 px): the model input follows their aspect ratio.
STRIP_HW = (64, 160)


@pytest.fixture(scope="session")
def strip_data(tmp_path_factory) -> Path:
    from trainer.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "strips", n_train=40, n_test_good=8, n_test_defect=8,
                        size=STRIP_HW[0], width=STRIP_HW[1], seed=3)


@pytest.fixture(scope="session")
def strip_checkpoint(tmp_path_factory, strip_data) -> Path:
    """A real RD checkpoint of non-square parts: default geometry (pad, the frames' aspect ratio)."""
    from trainer.fit import FitConfig, fit

    out = tmp_path_factory.mktemp("ckpt") / "strip"
    summary = fit(FitConfig(data=strip_data, out=out, method="rd", image_size=96, epochs=4, seed=0,
                            progress=False, name="strips"))
    return Path(summary["checkpoint"])


# Full-resolution frames (relative to a 64 px model): 192 x 256 px parts, cut into 64 px tiles.
TILED_HW = (192, 256)


@pytest.fixture(scope="session")
def tiled_data(tmp_path_factory) -> Path:
    from trainer.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "large", n_train=10, n_test_good=4, n_test_defect=4,
                        size=TILED_HW[0], width=TILED_HW[1], seed=5)


@pytest.fixture(scope="session")
def tiled_checkpoint(tmp_path_factory, tiled_data) -> Path:
    """A real tiled RD checkpoint (64 px tiles, 8 px overlap) of 192 x 256 px synthetic parts."""
    from trainer.fit import FitConfig, fit

    out = tmp_path_factory.mktemp("ckpt") / "tiled"
    summary = fit(FitConfig(data=tiled_data, out=out, method="rd", image_size=64, tile=64, overlap=8, epochs=3,
                            seed=0, progress=False, name="tiles", val_fraction=0.3))
    return Path(summary["checkpoint"])


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_fit) -> Path:
    return Path(tiny_fit["checkpoint"])


@pytest.fixture()
def checkpoint_copy(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    import shutil

    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, dst)
    return dst


@pytest.fixture(scope="session")
def magnetic_tile() -> Path:
    if not (MAGNETIC_TILE / "train" / "good").is_dir():
        pytest.skip(f"magnetic_tile data set not found at {MAGNETIC_TILE}")
    return MAGNETIC_TILE
