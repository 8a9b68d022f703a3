import cv2
import numpy as np
import pytest

from trainer.report import heatmap_overlay, overlay_grid, plot_roc, roc_curve_points


def _read_png(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"{path} is not a readable image"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return img


def test_roc_curve_points_and_plot(tmp_path):
    fpr, tpr, auc = roc_curve_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert auc == pytest.approx(0.75)
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr.shape == tpr.shape
    curves = {"image": (fpr, tpr, auc), "pixel": ([0, 0, 1], [0, 1, 1], 1.0)}
    out = plot_roc(curves, tmp_path / "sub" / "roc.png", "ROC")
    img = _read_png(out)
    assert img.ndim == 3 and img.shape[0] == 500 and img.shape[1] == 500
    with pytest.raises(ValueError):
        roc_curve_points([0.1, 0.2], [1, 1])


@pytest.mark.parametrize(
    "image",
    [
        np.full((40, 60), 100, np.uint8),  # gray 8-bit
        np.linspace(0, 4095, 40 * 60).reshape(40, 60).astype(np.uint16),  # 12-bit data in uint16
        np.zeros((40, 60, 3), np.uint8),  # RGB
        np.full((40, 60, 3), 30000, np.uint16),  # constant 16-bit RGB
    ],
)
def test_heatmap_overlay_shapes(image):
    heat = np.zeros((8, 8), np.float32)
    heat[:4, :4] = 1.0  # top-left hot
    mask = np.zeros((8, 8), bool)
    mask[4:, 4:] = True
    out = heatmap_overlay(image, heat, mask=mask)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    # JET: hot = red-ish, cold = blue-ish, in RGB order.
    hot, cold = out[5, 5].astype(int), out[35, 5].astype(int)
    assert hot[0] > hot[2] and cold[2] > cold[0]
    # green contour drawn around the bottom-right mask quadrant
    assert (out[20:, 30:, 1] == 255).any() and not (out[:15, :25, 1] == 255).any()


def test_heatmap_overlay_vmax_and_16bit_scaling():
    img16 = np.array([[0, 4095]], np.uint16).repeat(4, 0)
    out = heatmap_overlay(img16, np.zeros((2, 2)), alpha=0.0)
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255  # stretched to full 8-bit range
    # With vmax=1, a value of 0.5 is mid-scale (green in JET); with the default vmax (= map max) it is red.
    mid = heatmap_overlay(np.zeros((4, 4), np.uint8), np.full((4, 4), 0.5), vmin=0.0, vmax=1.0, alpha=1.0)
    full = heatmap_overlay(np.zeros((4, 4), np.uint8), np.full((4, 4), 0.5), vmin=0.0, alpha=1.0)
    assert mid[0, 0, 1] > mid[0, 0, 0] and full[0, 0, 0] > full[0, 0, 1]


def test_overlay_grid(tmp_path):
    tiles = [np.full((32, 48, 3), v, np.uint8) for v in (0, 80, 160, 240, 255)]
    tiles[1] = np.zeros((64, 96, 3), np.uint8)  # different size gets resized
    tiles[2] = np.zeros((32, 48), np.uint8)  # gray accepted
    out = overlay_grid(tiles, [f"t{i} score=0.5" for i in range(5)], tmp_path / "grid.png", cols=2)
    img = _read_png(out)
    assert img.ndim == 3 and img.shape[2] == 3
    assert img.shape[1] == 4 + 2 * (48 + 4)  # 2 columns of 48 px tiles + padding
    assert img.shape[0] > 3 * 32  # 3 rows plus caption bands
    with pytest.raises(ValueError):
        overlay_grid(tiles, ["only one"], tmp_path / "bad.png")
