"""Tiled inspection of full-resolution frames: cut a frame into overlapping tiles at the model's
input size, run the tiles, stitch their maps back into one map of the frame.

A defect a few pixels wide at 2448×2048 is gone once the whole frame is shrunk to a few hundred
pixels; cut into tiles, the model sees it at full resolution. Without zoom nothing is resized: a
tile is a ``tile``×``tile`` window of the frame, and the stitched map has the frame's own size, so regions
are in original pixels by construction. A frame (or a side) smaller than a tile is mirrored up to
the tile and only its own part of the map is kept.

Tile positions along a side of length L: ``n = ceil((L - overlap) / (tile - overlap))`` tiles,
spread evenly from 0 to ``L - tile`` (neighbours share at least ``overlap`` pixels). Stitching is a
weighted mean with a separable window that ramps over ``overlap`` pixels at each tile edge, so
tile borders (where the network sees least context) count least, and a map that agrees on the
overlaps (a constant, a ramp) comes back unchanged. Because the window is separable and the grid
is a product of two sets of positions, the normaliser is the outer product of two 1-D sums: one
frame-sized float32 buffer is all the stitching holds.

``zoom`` > 1 magnifies: each window is ``tile / zoom`` frame pixels, enlarged (bilinear) to the
``tile``×``tile`` input, and its map is brought back down (area mean) before stitching. A defect of
a few pixels then spans ``zoom``² as many cells of the teacher's finest features, for ``zoom``² as
many tiles a frame. Positions, overlap and regions stay in frame pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: Frames with at least this many times the model input's pixels are tiled when a fit chooses
#: (``trainer fit --tile auto``): 64× a 256² input is 4.2 MP, above object data sets (MVTec AD
#: and VisA frames are at most ~1.5 MP, where the whole-frame model is the one to keep) and
#: below line-camera frames (5-20 MP).
AUTO_TILE_FACTOR = 64
MIN_TILE = 32
MIN_WINDOW = 16


@dataclass(frozen=True)
class Tile:
    """Where a tile lies in its frame: rows y..y+h, columns x..x+w (h, w < the tile side only
    where the frame is smaller than a tile)."""

    y: int
    x: int
    h: int
    w: int


@dataclass(frozen=True)
class Tiling:
    """``tile``: the model input's side (px); ``overlap``: frame pixels neighbouring windows share;
    ``zoom``: how many times a window of the frame is enlarged to the input (1: not at all)."""

    tile: int
    overlap: int
    zoom: int = 1

    def __post_init__(self) -> None:
        if self.tile < MIN_TILE:
            raise ValueError(f"tile side must be at least {MIN_TILE} px, got {self.tile}")
        if self.zoom < 1 or self.tile % self.zoom or self.side < MIN_WINDOW:
            raise ValueError(f"zoom must divide the {self.tile} px tile into windows of at least {MIN_WINDOW} px, "
                             f"got {self.zoom}")
        if not 0 <= self.overlap <= self.side // 2:
            raise ValueError(f"overlap must be in [0, window/2], got {self.overlap} for a {self.side} px window")

    @property
    def side(self) -> int:
        """A window's side in frame pixels."""
        return self.tile // self.zoom

    def starts(self, length: int) -> list[int]:
        """Window offsets along one side (one window at 0 when the side is not longer than one)."""
        side = self.side
        if length <= side:
            return [0]
        n = math.ceil((length - self.overlap) / (side - self.overlap))
        n = max(n, 2)
        return [round(i * (length - side) / (n - 1)) for i in range(n)]

    def grid(self, hw: tuple[int, int]) -> list[Tile]:
        h, w = hw
        th, tw = min(self.side, h), min(self.side, w)
        return [Tile(y, x, th, tw) for y in self.starts(h) for x in self.starts(w)]

    def count(self, hw: tuple[int, int]) -> int:
        return len(self.starts(hw[0])) * len(self.starts(hw[1]))

    def crop(self, image: np.ndarray, t: Tile) -> np.ndarray:
        """One tile of the frame at the input's ``tile``×``tile`` (mirrored up where the frame is
        smaller than a window; enlarged ``zoom`` times)."""
        side = self.side
        crop = image[t.y:t.y + t.h, t.x:t.x + t.w]
        if t.h < side or t.w < side:
            pad = [(0, side - t.h), (0, side - t.w)] + [(0, 0)] * (image.ndim - 2)
            crop = np.pad(crop, pad, mode="symmetric")
        if self.zoom > 1:
            crop = cv2.resize(crop, (self.tile, self.tile), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(crop)

    def frame_part(self, tile_map: np.ndarray, t: Tile) -> np.ndarray:
        """The part of a tile's map (at the input's size) that covers its window of the frame."""
        m = np.asarray(tile_map, np.float32)
        if self.zoom > 1:
            m = cv2.resize(m, (self.side, self.side), interpolation=cv2.INTER_AREA)
        return m[:t.h, :t.w]

    def cut(self, image: np.ndarray) -> tuple[list[np.ndarray], list[Tile]]:
        """The frame's tiles and where they lie."""
        tiles = self.grid(image.shape[:2])
        return [self.crop(image, t) for t in tiles], tiles

    def window(self, length: int) -> np.ndarray:
        """1-D blending weights over one tile side: a ramp over ``overlap`` px at each end."""
        if self.overlap == 0:
            return np.ones(length, np.float32)
        i = np.arange(length, dtype=np.float32)
        ramp = np.minimum((i + 0.5) / self.overlap, (length - i - 0.5) / self.overlap)
        return np.clip(ramp, 1e-3, 1.0).astype(np.float32)

    def stitch(self, maps: Sequence[np.ndarray] | np.ndarray, tiles: Sequence[Tile], hw: tuple[int, int]) -> np.ndarray:
        """One float32 map of the frame from its tiles' maps (each at the input's size)."""
        h, w = hw
        out = np.zeros((h, w), np.float32)
        wy_sum = np.zeros(h, np.float32)
        wx_sum = np.zeros(w, np.float32)
        ys, xs = {}, {}
        for t, m in zip(tiles, maps):
            wy, wx = self.window(t.h), self.window(t.w)
            out[t.y:t.y + t.h, t.x:t.x + t.w] += self.frame_part(m, t) * np.outer(wy, wx)
            ys[t.y] = (t.h, wy)
            xs[t.x] = (t.w, wx)
        for y, (th, wy) in ys.items():
            wy_sum[y:y + th] += wy
        for x, (tw, wx) in xs.items():
            wx_sum[x:x + tw] += wx
        out /= np.outer(wy_sum, wx_sum)
        return out


def iter_stitched(images: Sequence[np.ndarray], tiling: Tiling,
                  run: Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]],
                  max_tiles: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(frame index, stitched map, its tiles' values) for each frame, in order, with every tile of
    every frame run through ``run`` (tiles → (maps (n,t,t), one value per tile)) at most
    ``max_tiles`` at a time.

    The tiles of several frames share engine calls (a micro-batch of small frames is one call),
    and a frame is stitched and handed out as soon as its last tile is back, so beyond the inputs
    at most ``max_tiles`` tile maps and the frames still being stitched are held."""
    max_tiles = max(1, int(max_tiles))
    pending: list[np.ndarray] = []  # tiles cut, not yet run
    owners: list[int] = []  # frame of each pending tile
    maps_of: dict[int, list[np.ndarray]] = {}
    values_of: dict[int, list[float]] = {}
    grids: list[list[Tile]] = []
    nxt = 0

    def flush() -> None:
        maps, values = run(pending)
        for k, owner in enumerate(owners):
            maps_of.setdefault(owner, []).append(maps[k])
            values_of.setdefault(owner, []).append(float(values[k]))
        pending.clear()
        owners.clear()

    def ready(upto: int):
        nonlocal nxt
        while nxt < upto and len(maps_of.get(nxt, ())) == len(grids[nxt]):
            i = nxt
            nxt += 1
            yield i, tiling.stitch(maps_of.pop(i), grids[i], images[i].shape[:2]), \
                np.asarray(values_of.pop(i), np.float32)

    for i, image in enumerate(images):
        grid = tiling.grid(image.shape[:2])
        grids.append(grid)
        for t in grid:  # copied only when about to run: a 20 MP frame is never held twice
            pending.append(tiling.crop(image, t))
            owners.append(i)
            if len(pending) >= max_tiles:
                flush()
                yield from ready(i + 1)
    if pending:
        flush()
    yield from ready(len(images))


def auto_tiling(frame_sizes: Sequence[tuple[int, int]], image_size: int) -> Tiling | None:
    """Tiles of ``image_size`` (a multiple of 32) with 1/8 overlap when the median training
    frame has at least ``AUTO_TILE_FACTOR`` times the model input's pixels; else None."""
    if not frame_sizes:
        return None
    pixels = float(np.median([h * w for h, w in frame_sizes]))
    if pixels < AUTO_TILE_FACTOR * image_size * image_size:
        return None
    tile = max(MIN_TILE, (image_size // 32) * 32)
    return Tiling(tile, tile // 8)


def fit_to_aspect(hw: tuple[int, int], longest: int) -> tuple[int, int]:
    """(h, w) with the longer side ``longest`` (no larger than the frame) and the frame's aspect."""
    h, w = hw
    scale = min(1.0, longest / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))
