"""Tiled inference with overlap and linear-ramp seam blending, in bounded memory.

The image is cut into tiles of at most `tile` LR pixels per side that overlap their
neighbours by at least `overlap` pixels (tiles are spread evenly, so every tile has the
same size and edge tiles need no padding). Each tile's output is weighted by a separable
linear ramp across its overlaps, normalised so that the weights of all tiles sum to one
at every output pixel; the blended result is therefore a convex combination, and pixels
near a tile's cut edge (where zero padding of the convolutions distorts the output) get
almost no weight.

Output rows are accumulated for one row of tiles at a time and handed to `emit` as soon
as no later tile touches them: the float working memory is one buffer of tile * scale
rows of the output width, whatever the image height.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size min(tile, length) covering [0, length), evenly
    spread with at least `overlap` pixels shared by neighbours."""
    if length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be in [0, tile={tile})")
    n = math.ceil((length - overlap) / (tile - overlap))
    n = max(n, 2)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def balanced_tile(length: int, tile: int, overlap: int) -> int:
    """The smallest tile side (<= `tile`) that covers `length` with as few tiles as
    `tile` needs, overlapping by at least `overlap`: 320 px with tile 192 and overlap 16
    is two 168 px tiles (336 px of work) rather than two 192 px tiles (384 px)."""
    if length <= tile:
        return length
    n = math.ceil((length - overlap) / (tile - overlap))
    return min(tile, math.ceil((length + (n - 1) * overlap) / n))


def ramp_weights(starts: list[int], tile: int, length: int, scale: int) -> list[np.ndarray]:
    """Per-tile 1-D weights at output resolution (each of length tile*scale) that sum to
    one at every output position: linear ramps across each overlap."""
    size = min(tile, length) * scale
    raw = []
    for i, s in enumerate(starts):
        w = np.ones(size, dtype=np.float64)
        if i > 0:  # overlap with the previous tile, at the left end
            n = (starts[i - 1] + tile - s) * scale
            if n > 0:
                w[:n] *= (np.arange(n) + 0.5) / n
        if i + 1 < len(starts):  # overlap with the next tile, at the right end
            n = (s + tile - starts[i + 1]) * scale
            if n > 0:
                w[size - n:] *= (n - np.arange(n) - 0.5) / n
        raw.append(w)
    total = np.zeros(length * scale, dtype=np.float64)
    for s, w in zip(starts, raw):
        total[s * scale:s * scale + size] += w
    return [(w / total[s * scale:s * scale + size]).astype(np.float32)
            for s, w in zip(starts, raw)]


def run_tiled(
    read_tile: Callable[[int, int, int, int], np.ndarray],
    height: int,
    width: int,
    infer: Callable[[np.ndarray], np.ndarray],
    scale: int,
    tile: tuple[int, int],
    overlap: int,
    emit: Callable[[int, np.ndarray], None],
    channels: int = 3,
) -> None:
    """Upscale an image of `height` x `width` LR pixels tile by tile.

    read_tile(y0, y1, x0, x1) -> float32 (y1-y0, x1-x0, channels) LR tile;
    infer(x: float32 (1, h, w, C)) -> float32 (1, h*scale, w*scale, C);
    emit(row0, rows) receives finished output rows (float32, n x width*scale x C) in
    order, starting at output row `row0` (a view into a reused buffer: copy it before
    returning). `tile` is (tile_h, tile_w); sides larger than
    the image are reduced to it (the caller pads images smaller than a fixed tile).
    """
    th, tw = min(tile[0], height), min(tile[1], width)
    ys, xs = tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
    if len(ys) == 1 and len(xs) == 1:  # one pass: nothing to blend
        emit(0, infer(read_tile(0, th, 0, tw)[None])[0])
        return
    wy, wx = ramp_weights(ys, th, height, scale), ramp_weights(xs, tw, width, scale)
    # At tile row i, buf holds output rows [ys[i]*scale, (ys[i]+th)*scale): all a tile
    # row touches. Rows above the next tile row are final and are emitted; the rest
    # moves to the top for the next row. One fixed buffer, whatever the height.
    buf = np.zeros((th * scale, width * scale, channels), dtype=np.float32)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            sr = infer(read_tile(y, y + th, x, x + tw)[None])[0]
            weight = (wy[i][:, None] * wx[j][None, :])[:, :, None]
            buf[:, x * scale:(x + tw) * scale] += sr * weight
        done = (ys[i + 1] - y) * scale if i + 1 < len(ys) else th * scale
        emit(y * scale, buf[:done])
        keep = th * scale - done
        buf[:keep] = buf[done:]
        buf[keep:] = 0.0


def pad_to(img: np.ndarray, min_h: int, min_w: int) -> np.ndarray:
    """Pad an HxW[xC] image at the bottom/right to at least min_h x min_w: mirror
    (reflect) padding, or edge-symmetric repetition where the image is too small to
    reflect (a 1-pixel side is replicated)."""
    ph, pw = max(0, min_h - img.shape[0]), max(0, min_w - img.shape[1])
    if ph == 0 and pw == 0:
        return img
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
    if ph < img.shape[0] and pw < img.shape[1]:
        return np.pad(img, pad, mode="reflect")
    return np.pad(img, pad, mode="symmetric")
