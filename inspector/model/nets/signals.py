"""Training-free anomaly signals read off the frozen teacher's features, beside the students' map.

The students' cosine map sees where a local feature *direction* departs from normal; it is blind
to changes of magnitude and to anomalies spread over the whole part (a low-contrast brightness
change, a texture that is a little off everywhere). Two signals computed from the same teacher
pyramid cover that, and need no training beyond fitting on the normal images:

* ``PatchMemory`` — nearest-neighbour distance of each teacher patch (3×3-averaged features at one
  or more levels) to a memory bank: a greedy coreset of all training patches (PatchCore, Roth et
  al. 2022). It localises, so it is a map.
* ``GlobalGaussian`` — Mahalanobis distance of an image's pooled feature statistics (per-channel
  mean and standard deviation at every level) to a Gaussian fitted on the normals with
  Ledoit-Wolf shrinkage (Rippel et al. 2020, "Gaussian AD"; the standard deviations add the
  texture statistics). One number per image: it does not localise, so it enters the score only.
  With ``neighbours`` = k > 0 the distance is judged against the normals that look like the image
  (the idea of the local outlier factor, Breunig et al. 2000): it is divided by the mean distance of
  the image's k nearest training normals, found in the Gaussian's whitened space. A line's normals
  are often a mixture (lighting set-ups, batches, variants) that one Gaussian measures from one
  centre: an image's distance and its neighbours' move together with its mode, while a defect
  moves only the image's.

These modules only hold buffers and compute; fitting them (coreset, covariance) is the trainer's
job (``trainer.signals``). Every buffer is saved with the checkpoint's weights (hash-verified).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patch_embeddings(feats: list[torch.Tensor], levels: tuple[int, ...], pool: int) -> torch.Tensor:
    """Teacher pyramid → (B, C, h, w) patch features: each level averaged over a ``pool``×``pool``
    neighbourhood, brought to the first level's grid, concatenated over levels."""
    ref = feats[levels[0]].shape[-2:]
    out = []
    for level in levels:
        f = feats[level].float()
        if pool > 1:
            f = F.avg_pool2d(f, pool, 1, pool // 2, count_include_pad=False)
        if tuple(f.shape[-2:]) != tuple(ref):
            f = F.interpolate(f, size=ref, mode="bilinear", align_corners=False)
        out.append(f)
    return torch.cat(out, dim=1)


def pooled_statistics(feats: list[torch.Tensor]) -> torch.Tensor:
    """Teacher pyramid → (B, D): per-channel mean and standard deviation over positions, every level."""
    parts = []
    for f in feats:
        f = f.float().flatten(2)
        mean = f.mean(dim=2)
        std = (f - mean.unsqueeze(2)).pow(2).mean(dim=2).clamp_min(0).sqrt()
        parts += [mean, std]
    return torch.cat(parts, dim=1)


class PatchMemory(nn.Module):
    """Distance of every teacher patch to its nearest neighbour in a bank of normal patches."""

    def __init__(self, bank_size: int, channels: int, levels: tuple[int, ...] = (2,), pool: int = 3,
                 chunk: int = 4096):
        super().__init__()
        self.levels = tuple(levels)
        self.pool = pool
        self.chunk = chunk  # bank rows per matmul: bounds the (queries × bank) distance block
        self.register_buffer("bank", torch.zeros(bank_size, channels))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """(B, 1, h, w) Euclidean distance to the nearest bank patch, on the first level's grid."""
        p = patch_embeddings(feats, self.levels, self.pool)
        b, c, h, w = p.shape
        q = p.permute(0, 2, 3, 1).reshape(b * h * w, c)
        qn = q.pow(2).sum(dim=1, keepdim=True)
        best = None
        for start in range(0, self.bank.shape[0], self.chunk):  # a fixed loop: unrolled in an export
            bank = self.bank[start:start + self.chunk]
            d2 = (qn - 2.0 * (q @ bank.T) + bank.pow(2).sum(dim=1)).amin(dim=1)
            best = d2 if best is None else torch.minimum(best, d2)
        return best.clamp_min(0).sqrt().view(b, 1, h, w)


class GlobalGaussian(nn.Module):
    """Mahalanobis distance of pooled feature statistics to the normals' Gaussian; with
    ``neighbours`` > 0, over the mean distance of the ``neighbours`` nearest of ``references``
    training normals (their whitened statistics and distances are buffers, fitted with the rest)."""

    def __init__(self, dim: int, neighbours: int = 0, references: int = 0):
        super().__init__()
        if neighbours < 0 or (neighbours > 0) != (references > 0):
            raise ValueError(f"judging the distance against neighbours needs neighbours and references both > 0, "
                             f"got neighbours={neighbours} references={references}")
        self.neighbours = min(neighbours, references)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("precision", torch.eye(dim))
        if self.neighbours:
            self.register_buffer("whiten", torch.eye(dim))  # L with precision = L Lᵀ
            self.register_buffer("reference", torch.zeros(references, dim))  # (stats − mean) L of the normals
            self.register_buffer("reference_distance", torch.ones(references))  # their distances, |row|

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        stats = pooled_statistics(feats)
        d = self.distance(stats)
        return d if not self.neighbours else d / self.neighbourhood(stats)

    def distance(self, stats: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of pooled statistics (B, D) to the normals' Gaussian."""
        d = stats - self.mean
        return ((d @ self.precision) * d).sum(dim=1).clamp_min(0).sqrt()

    def neighbourhood(self, stats: torch.Tensor) -> torch.Tensor:
        """(B,) mean distance to the Gaussian of each image's ``neighbours`` nearest reference
        normals (Euclidean in the whitened space, i.e. Mahalanobis between the two images)."""
        z = (stats - self.mean) @ self.whiten
        d2 = z.pow(2).sum(dim=1, keepdim=True) - 2.0 * (z @ self.reference.T) + self.reference_distance.pow(2)
        nearest = torch.topk(d2, self.neighbours, dim=1, largest=False).indices
        return self.reference_distance[nearest].mean(dim=1).clamp_min(1e-6)
