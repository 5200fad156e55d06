"""Upscaler output assembly: written once into one preallocated array (no copy for BGR,
no concatenation for alpha), small float working set, tile-level progress."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest

from rdsrn.runtimes import Upscaler
from rdsrn.runtimes.tiling import run_tiled, tile_starts

from test_runtime_artifacts import onnx_x4, torch_model  # noqa: F401 (fixtures)


class NearestBackend:
    """Stands in for a model: nearest-neighbour x`scale` plus a channel-dependent
    offset (so a channel-order mistake shows), recording the input shapes. Its 8-bit
    outputs stay >= 0.05 from a rounding tie, so exact comparisons are safe."""

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.shapes: list[tuple[int, ...]] = []

    def run(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        y = np.repeat(np.repeat(x, self.scale, axis=1), self.scale, axis=2)
        return y * np.float32(0.8) + np.array([0.0, 0.03, 0.05], np.float32)


def _fake(model: Path, **kw) -> tuple[Upscaler, NearestBackend]:
    up = Upscaler(model, threads=1, **kw)
    fake = NearestBackend(up.scale)
    up._backend = fake  # the assembly is under test, not the model
    return up, fake


def _img(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _traced_peak(fn, img: np.ndarray) -> tuple[np.ndarray, int]:
    """fn(img) and the peak bytes tracemalloc saw while it ran."""
    tracemalloc.start()
    try:
        out = fn(img)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_upscale_bgr_is_upscale_with_reversed_channels(onnx_x4: Path) -> None:
    up, _ = _fake(onnx_x4, tile=24, overlap=4)
    for c in (3, 4):
        img = _img(37, 53, c, seed=c)
        rev = [2, 1, 0] + ([3] if c == 4 else [])
        np.testing.assert_array_equal(up.upscale_bgr(img), up.upscale(img[:, :, rev])[:, :, rev])
    gray = _img(20, 30, 1)[:, :, 0]
    np.testing.assert_array_equal(up.upscale_bgr(gray), up.upscale(gray))


def test_tiled_assembly_is_exact_for_a_pointwise_model(onnx_x4: Path) -> None:
    """Blending is a convex combination: with a pointwise model, tiled == whole image."""
    up, _ = _fake(onnx_x4, tile=24, overlap=5)
    whole, _ = _fake(onnx_x4, tile=0)
    for h, w in [(61, 47), (24, 100), (9, 9)]:
        img = _img(h, w, 3, seed=h)
        np.testing.assert_array_equal(up.upscale(img), whole.upscale(img))


@pytest.mark.parametrize("h, w, tile, overlap", [(242, 250, (128, 128), 16),
                                                  (97, 300, (60, 128), 4), (40, 41, (40, 20), 3)])
def test_run_tiled_three_way_overlaps_exact(h: int, w: int, tile: tuple[int, int],
                                            overlap: int) -> None:
    """Evenly spread tiles can overlap three deep (242 px, tile 128: starts 0, 57, 114);
    a pointwise model must still come out exact, every output pixel emitted once."""
    s = 2
    img = np.random.default_rng(h).random((h, w, 3)).astype(np.float32)
    out = np.full((h * s, w * s, 3), np.nan, np.float32)
    hits = np.zeros((h * s, w * s), np.int32)

    def infer(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(x, s, axis=1), s, axis=2) + np.float32(0.5)

    def emit(y0: int, x0: int, block: np.ndarray) -> None:
        out[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] = block
        hits[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] += 1

    run_tiled(lambda y0, y1, x0, x1: img[y0:y1, x0:x1], h, w, infer, s, tile, overlap, emit)
    assert (hits == 1).all()
    np.testing.assert_allclose(out, infer(img[None])[0], rtol=1e-6)


def test_upscale_bgr_allocates_the_output_once(onnx_x4: Path) -> None:
    """Peak traced allocation during upscale_bgr stays near one output: the old path
    made a reordered copy of the result (>= 2x) and held a float32 strip of a whole tile
    row (here > 1.5x by itself)."""
    up, _ = _fake(onnx_x4, tile=32, overlap=4)
    img = _img(300, 500, 3)
    up.upscale_bgr(img[:8, :8])  # warm up lazy imports outside the measurement
    out, peak = _traced_peak(up.upscale_bgr, img)
    assert out.shape == (1200, 2000, 3) and out.flags.c_contiguous
    assert peak <= 1.4 * out.nbytes, (peak, out.nbytes)


def test_rgba_alpha_written_in_place_matches_whole_resize(onnx_x4: Path) -> None:
    up, _ = _fake(onnx_x4, tile=32, overlap=4)
    img = _img(600, 200, 4)  # taller than one alpha strip
    out, peak = _traced_peak(up.upscale, img)
    assert peak <= 1.4 * out.nbytes, (peak, out.nbytes)
    ref = cv2.resize(img[:, :, 3], (800, 2400), interpolation=cv2.INTER_CUBIC)
    assert np.abs(out[:, :, 3].astype(int) - ref.astype(int)).max() <= 1
    f = img[:, :, 3].astype(np.float32) / 255.0
    rgba = np.concatenate([img[:, :, :3].astype(np.float32) / 255.0, f[:, :, None]], axis=2)
    ref_f = np.clip(cv2.resize(f, (800, 2400), interpolation=cv2.INTER_CUBIC), 0, 1)
    np.testing.assert_allclose(up.upscale(rgba)[:, :, 3], ref_f, atol=1e-5)


@pytest.mark.parametrize("shape", [(100, 130, 3), (100, 130), (100, 130, 4), (10, 10, 3)])
def test_progress_counts_every_tile(onnx_x4: Path, shape: tuple[int, ...]) -> None:
    up, fake = _fake(onnx_x4, tile=40, overlap=8)
    calls: list[tuple[int, int]] = []
    img = _img(shape[0], shape[1], shape[2] if len(shape) == 3 else 1)
    img = img if len(shape) == 3 else img[:, :, 0]
    out = up.upscale(img, progress=lambda done, total: calls.append((done, total)))
    assert out.shape[:2] == (shape[0] * 4, shape[1] * 4)
    total = len(fake.shapes)
    assert total == len(tile_starts(shape[0], min(40, shape[0]), 8)) * \
        len(tile_starts(shape[1], min(40, shape[1]), 8))
    assert calls == [(k, total) for k in range(1, total + 1)]
    fake.shapes.clear()
    calls.clear()
    up.upscale_bgr(img, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (total, total) and len(calls) == total
