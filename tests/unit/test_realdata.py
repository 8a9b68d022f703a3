"""The real Magnetic Tile defect set (skipped cleanly when ../shared is absent)."""

import numpy as np
import pytest

from inspector.engine.engine import load_engine
from trainer.data import load_sample, scan_dataset

pytestmark = pytest.mark.realdata


def test_magnetic_tile_layout_masks_and_sizes(magnetic_tile):
    index = scan_dataset(magnetic_tile)
    assert len(index.train) == 762
    assert index.defect_types == ["blowhole", "break", "crack", "fray", "uneven"]
    counts = {t: sum(s.defect_type == t for s in index.test) for t in index.defect_types + ["good"]}
    assert counts == {"blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103, "good": 190}
    sizes = set()
    for t in index.defect_types:
        sample = next(s for s in index.test if s.defect_type == t)
        image, mask = load_sample(sample)
        assert image.dtype == np.uint8 and mask.shape == image.shape[:2] and mask.any()
        sizes.add(image.shape[:2])
    assert len(sizes) > 1  # the set really has images of differing sizes


def test_engine_scores_real_frames_of_any_size(magnetic_tile, tiny_checkpoint):
    index = scan_dataset(magnetic_tile)
    images = [load_sample(s)[0] for s in index.test[::97]]
    results = load_engine(tiny_checkpoint, "cpu").infer(images)
    assert len(results) == len(images)
    for image, r in zip(images, results):
        assert np.isfinite(r.score)
        for box in r.regions:
            assert 0 <= box.x0 < box.x1 <= image.shape[1] and 0 <= box.y0 < box.y1 <= image.shape[0]
