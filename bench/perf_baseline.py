"""The reference implementation's way of inspecting images, as the baseline of bench/perf_matrix.py.

What the official RD4AD test code does (``cal_anomaly_map`` + ``gaussian_filter``), on our model:
one image at a time, PIL + torchvision-transforms preprocessing (Resize, ToTensor, Normalize),
fp32 eager forward, and per scale ``1 − cosine`` → ``F.interpolate(..., align_corners=True)`` →
numpy, summed in numpy (float64), blurred on the CPU with ``scipy.ndimage.gaussian_filter(σ=4)``,
image score = map maximum. It computes no masks or regions (the Engine does), so it is, if
anything, flattered.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter
from torchvision import transforms


class ReferenceInspector:
    """Per-image, CPU, fp32 inference the way the RD4AD reference code does it."""

    def __init__(self, model, image_size: int, mean, std, sigma: float = 4.0):
        self.model = model.eval()
        self.size = image_size
        self.sigma = sigma
        self.transform = transforms.Compose([
            transforms.Resize((image_size, image_size)),
            transforms.ToTensor(),
            transforms.Normalize(mean=list(mean), std=list(std)),
        ])

    def anomaly_map(self, image: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(image).convert("RGB")
        x = self.transform(pil).unsqueeze(0)
        with torch.no_grad():
            teacher = self.model.teacher(x)
            students = self.model.student(x, teacher)
        amap = np.zeros((self.size, self.size))
        for student in students:
            for ft, fs in zip(teacher, student):
                a = 1 - F.cosine_similarity(fs, ft)
                a = F.interpolate(torch.unsqueeze(a, dim=1), size=self.size, mode="bilinear", align_corners=True)
                amap += a[0, 0, :, :].to("cpu").detach().numpy()
        return gaussian_filter(amap, sigma=self.sigma)

    def inspect(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        amap = self.anomaly_map(image)
        return amap, float(amap.max())
