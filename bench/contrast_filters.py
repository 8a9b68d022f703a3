"""Which pixel filters see the tiling bench's small defects, with and without camera noise.

The local-contrast map (``trainer fit --contrast-map``) finds most of ``bench/tiling.py``'s small
spots and few of its 1 px scratches. This bench asks whether another training-free filter would
find the scratches, and whether that would hold on a real camera. It makes the tiling bench's
surface (``tiling.make_texture``: a 6-grey-level grain correlated over 1.2 px, slow illumination)
as ``--size``² crops with one defect each (``tiling.add_defect``: spots and 1 px scratches of 5, 8
and 12 px, 45 grey levels), optionally adds white sensor noise of ``--noise`` grey levels to every
frame (the synthetic frames have none; a real camera adds its own read and shot noise),
and scores each filter bank by its largest normalised response over a frame. A defect counts as
found when its frame's peak is above the largest over ``--good`` good frames: the bench's rule.

Rows, each on the residual of the grey level minus its Gaussian background (σ = 8 px):

* ``product``: the map's bank with plain lines (``--contrast-lines plain``): a blob (σ = 1 px) and
  12 lines 11 px long, 0.8 px across;
* ``whitened lines``: the map's bank with whitened lines (``--contrast-lines whitened``, the
  default): the blob, and the same 12 line shapes each divided by the power spectrum of the
  training normals' residual (``LocalContrast.set_whitening``, the spectrum by
  ``trainer.signals.welch_spectrum``): the matched filter for a line in this grain and noise;
* ``more scales``: that bank plus a σ = 2 px blob and 12 lines 7 px long;
* ``prediction error``: the prediction error of a 7×7 linear predictor of each pixel from its neighbours,
  fitted by least squares on the training normals (a classic texture-suppression step: it removes
  what the grain's correlation predicts and leaves what it cannot);
* ``product + prediction error``: the larger of the two at each pixel.

Each filter is divided by its root mean square on ``--train`` training normals, as the product's.

    python bench/contrast_filters.py --noise 0 1.5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiling import add_defect, make_texture  # noqa: E402

from inspector.model.nets.contrast import LocalContrast, line_kernels  # noqa: E402
from inspector.model.nets.discrepancy import gaussian_kernel1d, separable_blur  # noqa: E402
from trainer.signals import SPECTRUM_WINDOW, welch_spectrum  # noqa: E402

SIZES = (5, 8, 12)
Bank = Callable[[torch.Tensor], torch.Tensor]


def residual(bgr: np.ndarray, noise: float, rng: np.random.Generator) -> torch.Tensor:
    """(1,1,H,W) grey level minus its local background, after ``noise`` levels of sensor noise."""
    g = bgr[..., 0].astype(np.float32)
    if noise > 0:
        g = np.clip(np.round(g + rng.normal(0.0, noise, g.shape)), 0, 255).astype(np.float32)
    x = torch.from_numpy(g)[None, None]
    x = x - x.mean()
    return x - separable_blur(x, gaussian_kernel1d(8.0))


def matched_bank(spots: tuple[float, ...], lengths: tuple[float, ...]) -> Bank:
    kernels = [line_kernels(length, 0.8, 12) for length in lengths]

    def apply(x: torch.Tensor) -> torch.Tensor:
        out = [separable_blur(x, gaussian_kernel1d(s), mirror=False) for s in spots]
        out += [F.conv2d(x, k, padding=k.shape[-1] // 2) for k in kernels]
        return torch.cat(out, 1).abs()

    return apply


def fit_predictor(train: list[torch.Tensor], k: int = 7, samples: int = 100_000) -> torch.Tensor:
    """(1,1,k,k) prediction-error kernel: 1 at the centre, minus the least-squares weights with which
    the neighbours predict the centre on the training normals."""
    gen = torch.Generator().manual_seed(0)
    c = k * k // 2
    xs, ys = [], []
    for t in train:
        cols = F.unfold(t, k)[0]
        cols = cols[:, torch.randint(0, cols.shape[1], (samples,), generator=gen)]
        ys.append(cols[c])
        xs.append(torch.cat([cols[:c], cols[c + 1:]]))
    a = torch.linalg.lstsq(torch.cat(xs, 1).T.double(), torch.cat(ys).double()[:, None]).solution[:, 0].float()
    return torch.cat([-a[:c], torch.ones(1), -a[c:]]).view(1, 1, k, k)


def whitened_bank(kernel: torch.Tensor) -> Bank:
    return lambda x: F.conv2d(x, kernel, padding=kernel.shape[-1] // 2).abs()


def both(a: Bank, b: Bank) -> Bank:
    return lambda x: torch.cat([a(x), b(x)], 1)


def peak(bank: Bank, rms: torch.Tensor, x: torch.Tensor, margin: int = 16) -> float:
    """The frame's largest normalised response, ``margin`` px in from the edges (the zero padding)."""
    r = bank(x) / rms.view(1, -1, 1, 1)
    return float(r[..., margin:-margin, margin:-margin].amax())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 1.5], help="sensor noise levels (grey-level std)")
    p.add_argument("--size", type=int, default=1024, help="side of the square frames, px")
    p.add_argument("--train", type=int, default=4)
    p.add_argument("--good", type=int, default=30)
    p.add_argument("--defects", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("| sensor noise | filters | threshold (largest over good frames) | spots < 15 px found | "
          "1 px scratches < 15 px found | scratches at 5 / 8 / 12 px |")
    print("|---|---|---|---|---|---|")
    for noise in args.noise:
        t0 = time.perf_counter()
        rng, noise_rng = np.random.default_rng(args.seed), np.random.default_rng(args.seed + 1)
        hw = (args.size, args.size)
        train = [residual(make_texture(rng, hw), noise, noise_rng) for _ in range(args.train)]
        good = [residual(make_texture(rng, hw), noise, noise_rng) for _ in range(args.good)]
        bad = []
        for i in range(args.defects):
            img, _, kind = add_defect(make_texture(rng, hw), rng, SIZES[i % len(SIZES)])
            bad.append((residual(img, noise, noise_rng), SIZES[i % len(SIZES)], kind == "scratch"))
        product = LocalContrast((1.0, 1.0, 1.0)).bank  # the map's own filters, on the same residual
        lines = LocalContrast((1.0, 1.0, 1.0), lines="whitened")
        lines.set_whitening(welch_spectrum(((t[:, 0], None) for t in train), SPECTRUM_WINDOW))
        predicted = whitened_bank(fit_predictor(train))
        banks = {"product": product, "whitened lines": lines.bank, "more scales": matched_bank((1.0, 2.0), (7.0, 11.0)),
                 "prediction error": predicted, "product + prediction error": both(product, predicted)}
        for name, bank in banks.items():
            rms = torch.stack([bank(t).pow(2).mean(dim=(0, 2, 3)).sqrt() for t in train]).mean(0)
            threshold = max(peak(bank, rms, x) for x in good)
            found: dict[tuple[bool, int], list[bool]] = {}
            for x, size, scratch in bad:
                found.setdefault((scratch, size), []).append(peak(bank, rms, x) > threshold)
            spots = [f for (s, _), v in found.items() if not s for f in v]
            lines = [f for (s, _), v in found.items() if s for f in v]
            by_size = " / ".join(f"{sum(found.get((True, z), []))} of {len(found.get((True, z), []))}" for z in SIZES)
            print(f"| {noise:g} | {name} | {threshold:.2f} | {np.mean(spots):.0%} ({sum(spots)} of {len(spots)}) | "
                  f"{np.mean(lines):.0%} ({sum(lines)} of {len(lines)}) | {by_size} |", flush=True)
        print(f"<!-- noise {noise:g}: {time.perf_counter() - t0:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
