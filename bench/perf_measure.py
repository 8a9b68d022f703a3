"""Measuring tools for bench/perf_matrix.py: timing loops, peak memory, FLOPs, the matmul ceiling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakRSS:
    """Samples this process's resident memory every few ms; ``peak_extra`` is above the start.

    Freed memory that the allocator keeps is not returned, so this is the growth a batch size
    causes on top of what earlier measurements left behind: an upper-bound-ish estimate."""

    def __init__(self, every_s: float = 0.005):
        self.every_s, self.start, self.peak = every_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def peak_extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def time_batches(run: Callable[[list], Any], images: list[np.ndarray], batch: int, seconds: float,
                 min_batches: int = 2) -> dict:
    """Run ``run`` on batches of ``batch`` images (cycling through ``images``) for ``seconds``."""
    times, i = [], 0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < min_batches:
        b = [images[(i + j) % len(images)] for j in range(batch)]
        i += batch
        t0 = time.perf_counter()
        run(b)
        times.append(time.perf_counter() - t0)
    return {"batch": batch, "images_per_s": batch * len(times) / sum(times),
            "ms_per_batch_p50": 1000 * float(np.median(times)), "batches": len(times)}


def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """Sustained GFLOP/s of a big square matmul in ``dtype`` on the CPU (torch's BLAS / oneDNN)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


def flops_per_image(model: torch.nn.Module, image_size: int) -> dict:
    """FLOPs of one image through ``maps_and_scores`` (FlopCounterMode counts convs, matmuls)."""
    x = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        with FlopCounterMode(display=False) as whole:
            model.maps_and_scores(x)
        with FlopCounterMode(display=False) as teacher:
            model.teacher(x)
    return {"total_gflop": whole.get_total_flops() / 1e9, "teacher_gflop": teacher.get_total_flops() / 1e9}
