"""Edge equalisation: the map's normal variation, made the same near a frame's edges as inside it.

Near the edges of a frame a convolutional map varies more on normal parts than inside: the
networks see padding there instead of surface, and real parts have their own edges (bevels,
shadows, the tile's border). The image score is the map's maximum, so on normal parts it lands
at an edge more often than anywhere else (on magnetic_tile half of the validation normals' maxima
lie within 5 px of the frame's edge), and a defect in the middle has to beat the noisiest pixels
of the frame.

The fit measures, on the validation normals, the mean and spread of the map in bands of
``bin`` input pixels by distance to the frame's nearest edge, up to a reach beyond which the
map is left as it is (the reference). Each band is then mapped affinely onto the reference's
mean and spread::

    equalised = gain[k] * map + offset[k]      (k = distance // bin, for distance < len(gain) * bin)

Gains are clipped to [MIN_GAIN, 1]: a band is only ever damped to the interior's spread, never
amplified (a band that varies less than the interior, like a uniform background, is left at its
spread instead of having its noise blown up). The reference pixels are unchanged, so the map keeps
its units: thresholds, region levels and normalisers mean what they meant.
"""

from __future__ import annotations

import torch

#: Width of one band (input pixels) and how far from the edge bands are fitted.
EDGE_BIN = 4
EDGE_REACH = 32
#: The strongest damping a band may get, and the fewest pixels a band needs to be measured.
MIN_GAIN = 0.25
MIN_PIXELS = 256


def edge_distance(shape: tuple[int, int, int], valid: torch.Tensor | None, device) -> torch.Tensor:
    """(B,H,W) int64: each pixel's distance, in pixels, to the nearest edge of its frame (0 on the
    frame's outermost rows and columns; 0 outside it). ``valid`` (B,H,W) bool marks each frame's
    rectangle in a padded input; None: every frame fills the input."""
    b, h, w = shape
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    if valid is None:
        y0 = torch.zeros(b, dtype=torch.long, device=device)
        x0 = torch.zeros_like(y0)
        y1 = torch.full_like(y0, h)
        x1 = torch.full_like(y0, w)
    else:
        in_rows, in_cols = valid.any(2), valid.any(1)  # (B,H), (B,W)
        y0 = in_rows.int().argmax(1)
        y1 = h - in_rows.flip(1).int().argmax(1)
        x0 = in_cols.int().argmax(1)
        x1 = w - in_cols.flip(1).int().argmax(1)
    dy = torch.minimum(rows[None] - y0[:, None], y1[:, None] - 1 - rows[None])  # (B,H)
    dx = torch.minimum(cols[None] - x0[:, None], x1[:, None] - 1 - cols[None])  # (B,W)
    return torch.minimum(dy[:, :, None], dx[:, None, :]).clamp_min(0)


def equalise(maps: torch.Tensor, distance: torch.Tensor, bin: int, gain: tuple[float, ...],
             offset: tuple[float, ...]) -> torch.Tensor:
    """``maps`` (B,H,W) with each band near the edge mapped onto the reference (see the module)."""
    if not gain:
        return maps
    n = len(gain)
    band = (distance // bin).clamp_max(n)  # n: the reference, left as it is
    g = torch.tensor((*gain, 1.0), dtype=maps.dtype, device=maps.device)[band]
    o = torch.tensor((*offset, 0.0), dtype=maps.dtype, device=maps.device)[band]
    return maps * g + o


def fit_profile(maps: torch.Tensor, distance: torch.Tensor, valid: torch.Tensor | None, bin: int = EDGE_BIN,
                reach: int = EDGE_REACH) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(gain, offset) per band from normal maps (B,H,W), their ``edge_distance`` and frame pixels
    (``valid``; None: all). Empty tuples when no reference can be measured (frames narrower than
    twice the reach and a band: then the map is left as it is)."""
    maps = maps.float()
    inside = torch.ones_like(maps, dtype=torch.bool) if valid is None else valid.to(maps.device)
    n = reach // bin
    while n > 0:
        ref = inside & (distance >= n * bin)
        if int(ref.sum()) >= MIN_PIXELS:
            break
        n -= 1
    if n == 0:
        return (), ()
    ref_values = maps[ref]
    mu_ref, sd_ref = float(ref_values.mean()), float(ref_values.std())
    gain, offset = [], []
    for k in range(n):
        values = maps[inside & (distance // bin == k)]
        if values.numel() < MIN_PIXELS:  # too few to measure: leave the band as it is
            gain.append(1.0)
            offset.append(0.0)
            continue
        mu, sd = float(values.mean()), float(values.std())
        g = min(1.0, max(MIN_GAIN, sd_ref / sd)) if sd > 0 else 1.0
        gain.append(g)
        offset.append(mu_ref - g * mu)
    return tuple(gain), tuple(offset)
