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

from collections import OrderedDict

import torch

#: Width of one band (input pixels) and how far from the edge bands are fitted.
EDGE_BIN = 4
EDGE_REACH = 32
#: The strongest damping a band may get, and the fewest pixels a band needs to be measured.
MIN_GAIN = 0.25
MIN_PIXELS = 256


def frame_bounds(shape: tuple[int, int, int], valid: torch.Tensor | None) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of each frame's rectangle in its input (B,H,W); ``valid`` (B,H,W) bool marks
    each frame's rectangle in a padded input; None: every frame fills the input."""
    b, h, w = shape
    if valid is None:
        return [(0, h, 0, w)] * b
    in_rows, in_cols = valid.any(2), valid.any(1)  # (B,H), (B,W)
    y0 = in_rows.int().argmax(1)
    y1 = h - in_rows.flip(1).int().argmax(1)
    x0 = in_cols.int().argmax(1)
    x1 = w - in_cols.flip(1).int().argmax(1)
    return [tuple(r) for r in torch.stack([y0, y1, x0, x1], 1).tolist()]


def rect_distance(hw: tuple[int, int], bounds: list[tuple[int, int, int, int]], device) -> torch.Tensor:
    """(B,H,W) int64: each pixel's distance, in pixels, to the nearest edge of its frame's rectangle
    ``bounds[i]`` = (y0, y1, x0, x1) (0 on the rectangle's outermost rows and columns; 0 outside it)."""
    h, w = hw
    y0, y1, x0, x1 = torch.tensor(bounds, dtype=torch.long, device=device).reshape(-1, 4).T
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    dy = torch.minimum(rows[None] - y0[:, None], y1[:, None] - 1 - rows[None])  # (B,H)
    dx = torch.minimum(cols[None] - x0[:, None], x1[:, None] - 1 - cols[None])  # (B,W)
    return torch.minimum(dy[:, :, None], dx[:, None, :]).clamp_min(0)


def edge_distance(shape: tuple[int, int, int], valid: torch.Tensor | None, device) -> torch.Tensor:
    """``rect_distance`` of each frame of a batch (B,H,W); ``valid`` as in ``frame_bounds``."""
    return rect_distance(tuple(shape[-2:]), frame_bounds(shape, valid), device)


def band_planes(distance: torch.Tensor, bin: int, gain: tuple[float, ...], offset: tuple[float, ...],
                dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The gain and offset of every pixel at ``distance`` from its frame's edge (the reference,
    beyond the last band: 1 and 0)."""
    band = (distance // bin).clamp_max(len(gain))
    return (torch.tensor((*gain, 1.0), dtype=dtype, device=distance.device)[band],
            torch.tensor((*offset, 0.0), dtype=dtype, device=distance.device)[band])


def equalise(maps: torch.Tensor, distance: torch.Tensor, bin: int, gain: tuple[float, ...],
             offset: tuple[float, ...]) -> torch.Tensor:
    """``maps`` (B,H,W) with each band near the edge mapped onto the reference (see the module):
    the definition, for any distances (``Equaliser`` is the serving path's cached form of it)."""
    if not gain:
        return maps
    g, o = band_planes(distance.to(maps.device), bin, gain, offset, maps.dtype)
    return maps * g + o


class Equaliser:
    """``equalise`` for serving: the gain and offset of every pixel depend only on the frame's
    rectangle in the input, so they are built once per rectangle (a line camera's frames share
    one) and a batch costs one multiply-add per pixel. Holds the ``capacity`` most recent ones."""

    def __init__(self, bin: int, gain: tuple[float, ...], offset: tuple[float, ...], capacity: int = 64):
        self.bin, self.gain, self.offset, self.capacity = bin, tuple(gain), tuple(offset), capacity
        self._planes: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def planes(self, hw: tuple[int, int], bounds: tuple[int, int, int, int], device,
               dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(H,W) gain and offset of a frame lying at ``bounds`` in an input of ``hw``."""
        key = (hw, bounds, str(device), dtype)
        found = self._planes.get(key)
        if found is not None:
            self._planes.move_to_end(key)
            return found
        gain, offset = band_planes(rect_distance(hw, [bounds], "cpu")[0], self.bin, self.gain, self.offset, dtype)
        planes = (gain.to(device), offset.to(device))
        self._planes[key] = planes
        if len(self._planes) > self.capacity:
            self._planes.popitem(last=False)
        return planes

    def __call__(self, maps: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        if not self.gain:
            return maps
        hw = tuple(maps.shape[-2:])
        out = torch.empty_like(maps)
        for i, bounds in enumerate(frame_bounds(tuple(maps.shape), valid)):
            gain, offset = self.planes(hw, bounds, maps.device, maps.dtype)
            torch.addcmul(offset, maps[i], gain, out=out[i])
        return out


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
