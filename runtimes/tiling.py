"""Tiled inference with overlap and linear-ramp seam blending, in bounded memory.

The image is cut into tiles of at most `tile` LR pixels per side that overlap their
neighbours by at least `overlap` pixels (tiles are spread evenly, so every tile has the
same size and edge tiles need no padding). Each tile's output is weighted by a separable
linear ramp across its overlaps, normalised so that the weights of all tiles sum to one
at every output pixel; the blended result is therefore a convex combination, and pixels
near a tile's cut edge (where zero padding of the convolutions distorts the output) get
almost no weight.

Finished output blocks are handed to `emit` as soon as no later tile touches them, so
the caller can write them straight into its preallocated result: the float working
memory is one tile plus the rows shared with the next row of tiles (about
overlap * scale rows of the output width), whatever the image size.
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
    emit: Callable[[int, int, np.ndarray], None],
    channels: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Upscale an image of `height` x `width` LR pixels tile by tile.

    read_tile(y0, y1, x0, x1) -> float32 (y1-y0, x1-x0, channels) LR tile;
    infer(x: float32 (1, h, w, C)) -> float32 (1, h*scale, w*scale, C); every call gets
    the same h x w (the tile size, sides reduced to the image where it is smaller: the
    caller pads images smaller than a fixed tile);
    emit(y0, x0, block) receives each finished output block (float32 bh x bw x C) once,
    at output pixel (y0, x0); the blocks tile the output exactly. `block` is a view into
    a temporary the receiver may modify in place but must not keep.
    progress(done, total) is called after each model call (total = number of tiles).
    `tile` is (tile_h, tile_w).

    Memory: besides one tile, the float32 working set is the rows that the next row of
    tiles also touches (the vertical overlap times `scale`, output width, two buffers);
    finished pixels leave as soon as no later tile touches them.
    """
    th, tw = min(tile[0], height), min(tile[1], width)
    ys, xs = tile_starts(height, th, overlap), tile_starts(width, tw, overlap)
    total = len(ys) * len(xs)
    if total == 1:  # one pass: nothing to blend
        emit(0, 0, infer(read_tile(0, th, 0, tw)[None])[0])
        if progress is not None:
            progress(1, 1)
        return
    s = scale
    wy, wx = ramp_weights(ys, th, height, s), ramp_weights(xs, tw, width, s)
    # Tile row i spans output rows [ys[i]*s, (ys[i]+th)*s): the band [ys[i]*s, ys[i+1]*s)
    # is final after it; the rest (the carry) is accumulated, at full width, until the
    # next tile row. Within the band, tile j finishes columns [xs[j]*s, xs[j+1]*s); its
    # other band columns pass to tile j+1 as `hcarry`.
    carry_h = max(((y + th - ys[i + 1]) * s for i, y in enumerate(ys[:-1])), default=0)
    carry = np.zeros((carry_h, width * s, channels), dtype=np.float32)
    nxt = np.zeros_like(carry)
    old_rows = 0  # rows of `carry` holding data, from output row ys[i]*s down
    done = 0
    for i, y in enumerate(ys):
        band = (ys[i + 1] - y) * s if i + 1 < len(ys) else th * s
        new_rows = th * s - band  # carry rows this tile row leaves
        # Carry rows from earlier tile rows that lie below this band move on.
        moved = max(0, old_rows - band)
        nxt[:moved] = carry[band:old_rows]
        nxt[moved:new_rows] = 0.0
        hcarry: np.ndarray | None = None
        for j, x in enumerate(xs):
            sr = infer(read_tile(y, y + th, x, x + tw)[None])[0]
            part = sr * (wy[i][:, None] * wx[j][None, :])[:, :, None]
            done += 1
            if progress is not None:
                progress(done, total)
            c0, c1 = x * s, (x + tw) * s
            if new_rows:
                nxt[:new_rows, c0:c1] += part[band:]
            win = part[:band]
            hc = 0 if hcarry is None else hcarry.shape[1]
            if hc:
                win[:, :hc] += hcarry
            rows = min(old_rows, band)  # earlier tile rows' share of this band
            if rows:
                win[:rows, hc:] += carry[:rows, c0 + hc:c1]
            fin = (xs[j + 1] - x) * s if j + 1 < len(xs) else tw * s
            hcarry = win[:, fin:]
            emit(y * s, c0, win[:, :fin])
        carry, nxt = nxt, carry
        old_rows = new_rows


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
