import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from inspector.model.nets.discrepancy import AnomalyMapper, gaussian_kernel1d, image_scores


def test_kernel_is_the_reference_sigma_4_size_33():
    k = gaussian_kernel1d(4.0)
    assert k.numel() == 33 and torch.isclose(k.sum(), torch.tensor(1.0))


def test_smoothing_equals_scipy_gaussian_filter_including_borders():
    x = torch.rand(3, 1, 48, 80)
    ours = AnomalyMapper(4.0).smooth(x).numpy()
    ref = np.stack([gaussian_filter(x[i, 0].double().numpy(), sigma=4)[None] for i in range(3)])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_map_is_zero_where_student_matches_and_high_where_it_does_not():
    t = [torch.randn(1, 8, 16, 16), torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    s = [f.clone() for f in t]
    s[0][..., 12:, 12:] = -s[0][..., 12:, 12:]  # bottom-right corner differs at stride 4
    maps = AnomalyMapper(sigma=0).forward(t, [s], (64, 64))
    assert maps.shape == (1, 64, 64)
    assert maps[0, :32, :32].abs().max() < 1e-5
    assert maps[0, 56:, 56:].min() > 1.9  # 1 - cos(a, -a) = 2


def test_maps_are_batch_independent_and_sum_over_students():
    mapper = AnomalyMapper()
    t = [torch.randn(4, 8, 16, 16), torch.randn(4, 16, 8, 8), torch.randn(4, 32, 4, 4)]
    s1 = [torch.randn_like(f) for f in t]
    s2 = [torch.randn_like(f) for f in t]
    both = mapper(t, [s1, s2], (64, 64))
    np.testing.assert_allclose(both, mapper(t, [s1], (64, 64)) + mapper(t, [s2], (64, 64)), atol=1e-5)
    one = mapper([f[1:2] for f in t], [[f[1:2] for f in s1]], (64, 64))
    np.testing.assert_allclose(mapper(t, [s1], (64, 64))[1:2], one, atol=1e-5)


def test_image_scores_max_and_topk():
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, 0] = 5.0
    maps[1, :2, :] = 1.0  # 20 pixels at 1
    assert image_scores(maps, "max").tolist() == [5.0, 1.0]
    topk = image_scores(maps, "topk", topk_fraction=0.1)  # 10 pixels
    assert topk[0].item() == pytest.approx(0.5) and topk[1].item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        image_scores(maps, "mean")
