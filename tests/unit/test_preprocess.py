"""inspector.model.preprocess: the one place decoded arrays become model input (training and serving)."""

import numpy as np
import pytest
import torch

from inspector.model.preprocess import normalize, prepare_batch, to_unit_tensor


def test_conversion_rules_for_gray_colour_8_and_16_bit():
    g16 = np.array([[0, 65535], [32768, 65535]], np.uint16)
    t = to_unit_tensor(g16)
    assert t.shape == (3, 2, 2) and t.dtype == torch.float32
    np.testing.assert_allclose(t[0].numpy(), g16 / 65535.0, rtol=1e-6)
    assert torch.equal(t[0], t[2])
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_allclose(to_unit_tensor(rgb).numpy(), rgb.transpose(2, 0, 1) / 255.0, rtol=1e-6)
    rgba = np.dstack([rgb, np.full((5, 7), 9, np.uint8)])
    assert torch.equal(to_unit_tensor(rgba), to_unit_tensor(rgb))
    with pytest.raises(TypeError):
        to_unit_tensor(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        to_unit_tensor(np.zeros((4, 4, 2), np.uint8))


def test_batch_of_mixed_sizes_is_resized_and_normalised():
    images = [np.full((40, 60, 3), 51, np.uint8), np.full((5, 9), 51, np.uint8), np.full((16, 16), 13107, np.uint16)]
    batch = prepare_batch(images, 16, (0.2, 0.2, 0.2), (0.5, 0.5, 0.5))
    assert batch.shape == (3, 3, 16, 16)
    np.testing.assert_allclose(batch.numpy(), 0.0, atol=1e-5)  # constant 0.2 everywhere, up or down
    x = torch.rand(2, 3, 4, 4)
    np.testing.assert_allclose(normalize(x, (0.5,) * 3, (0.25,) * 3).numpy(), ((x - 0.5) / 0.25).numpy(), rtol=1e-6)
