"""Runtime layer (runtimes/) on ONNX artifacts: parity with PyTorch, tiling, image kinds,
metadata-driven configuration, errors, and that torch / tensorflow are never loaded."""

from __future__ import annotations

import builtins
import importlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rdsrn.runtimes import Upscaler
from rdsrn.runtimes.backends import dequantize, quantize
from rdsrn.runtimes.errors import MissingExtraError, UserError
from rdsrn.runtimes.tiling import balanced_tile, pad_to, ramp_weights, run_tiled, tile_starts
from rdsrn.runtimes.upscaler import DEFAULT_OVERLAP, DEFAULT_TILE

from test_runtime_artifacts import (  # noqa: F401 (fixtures)
    REPO, base_meta, onnx_x4, onnx_x4_fixed, psnr, read_rgb, set_onnx_meta, torch_model,
    torch_upscale, tiny_tflite)


def _rand_img(h: int, w: int, c: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = np.iinfo(dtype).max
    shape = (h, w, c) if c else (h, w)
    # smooth-ish content: low-res noise, upsampled
    small = rng.random((max(2, h // 4), max(2, w // 4), c or 1)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(shape)
    return np.clip(np.rint(img * hi), 0, hi).astype(dtype)


@pytest.fixture(scope="module")
def up(onnx_x4: Path) -> Upscaler:
    return Upscaler(onnx_x4, threads=2)


# -- no torch / tensorflow -----------------------------------------------------------

def test_runtime_never_imports_torch_or_tensorflow(onnx_x4: Path, tiny_tflite) -> None:
    code = f"""
import sys, numpy as np
import rdsrn.runtimes, rdsrn.runtimes.cli, rdsrn.runtimes.io
from rdsrn.runtimes import Upscaler
img = (np.arange(20 * 24 * 3) % 251).astype(np.uint8).reshape(20, 24, 3)
a = Upscaler({str(onnx_x4)!r}).upscale(img)
b = Upscaler({str(tiny_tflite['int8'])!r}).upscale(img)
assert a.shape == (80, 96, 3) and b.shape == (40, 48, 3)
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras'))
print('LOADED', bad)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "LOADED []" in res.stdout, res.stdout


def test_import_runtimes_is_light() -> None:
    code = ("import sys, rdsrn.runtimes, rdsrn.runtimes.cli; "
            "print(sorted(m for m in ('numpy', 'cv2', 'onnxruntime', 'torch') "
            "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# -- parity with PyTorch ---------------------------------------------------------------

def test_fp32_matches_torch(onnx_x4: Path, torch_model, set5_dir: Path) -> None:
    up = Upscaler(onnx_x4, tile=0)
    for name in ("baby.png", "butterfly.png"):
        img = read_rgb(set5_dir / name)[:96, :80]
        out = up.upscale(img)
        ref = torch_upscale(torch_model, img)
        assert out.shape == ref.shape == (384, 320, 3)
        assert psnr(out, ref) >= 50.0
        assert np.abs(out.astype(int) - ref).max() <= 2


def test_attributes_come_from_metadata(onnx_x4: Path, tmp_path: Path) -> None:
    # A misleading file name changes nothing: the content decides.
    odd = tmp_path / "rdsrn_x2_int8.tflite"
    odd.write_bytes(onnx_x4.read_bytes())
    up = Upscaler(odd, threads=1)
    assert (up.scale, up.layout, up.precision, up.format, up.backend) == (
        4, "NCHW", "fp32", "onnx", "onnxruntime")
    assert up.input_size is None and up.threads == 1
    assert up._backend.session.get_session_options().intra_op_num_threads == 1
    assert up.upscale(np.zeros((5, 6, 3), np.uint8)).shape == (20, 24, 3)


def test_metadata_errors(onnx_x4: Path, tmp_path: Path) -> None:
    bare = set_onnx_meta(onnx_x4, None, tmp_path / "bare.onnx")
    with pytest.raises(UserError, match="no 'rdsrn' metadata"):
        Upscaler(bare)
    wrong = set_onnx_meta(onnx_x4, base_meta("onnx", 4, layout="NHWC"), tmp_path / "w.onnx")
    with pytest.raises(UserError, match="layout NHWC"):
        Upscaler(wrong)
    fixed_claim = set_onnx_meta(onnx_x4, base_meta("onnx", 4, input_size=[32, 32]),
                                tmp_path / "f.onnx")
    # a dynamic graph declared fixed-size: the metadata rules (tiles of that size)
    assert Upscaler(fixed_claim).input_size == (32, 32)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(UserError, match="cannot load"):
        Upscaler(junk)
    with pytest.raises(UserError, match="no such model"):
        Upscaler(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="cannot run on backend"):
        Upscaler(onnx_x4, backend="litert")


# -- tiling --------------------------------------------------------------------------

def test_tile_starts_and_weights_partition_of_unity() -> None:
    for length, tile, overlap in [(100, 100, 8), (101, 40, 8), (500, 192, 24), (193, 192, 24),
                                  (17, 8, 3), (1000, 64, 31)]:
        starts = tile_starts(length, tile, overlap)
        t = min(tile, length)
        assert starts[0] == 0 and starts[-1] + t == length
        assert all(b - a <= t - overlap for a, b in zip(starts, starts[1:]))
        for scale in (1, 3):
            ws = ramp_weights(starts, tile, length, scale)
            total = np.zeros(length * scale)
            for s, w in zip(starts, ws):
                assert w.min() > 0
                total[s * scale:(s + t) * scale] += w
            np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_balanced_tile() -> None:
    assert balanced_tile(320, 192, 16) == 168
    assert balanced_tile(100, 192, 16) == 100
    assert balanced_tile(2 * 192 - 16, 192, 16) == 192
    for length in range(1, 700, 7):
        t = balanced_tile(length, 192, 16)
        starts = tile_starts(length, t, 16)
        assert t <= 192 and starts[-1] + t == length
        assert len(starts) == len(tile_starts(length, 192, 16))  # no extra tiles
        assert all(b - a <= t - 16 for a, b in zip(starts, starts[1:]))


def test_run_tiled_exact_for_a_local_operator() -> None:
    """With a pointwise 'model' tiling must be exact: blending is a convex combination."""
    h, w, s = 150, 97, 3
    img = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
    out = np.zeros((h * s, w * s, 3), np.float32)
    hits = np.zeros((h * s, w * s), np.int32)
    emitted = []

    def infer(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(x, s, axis=1), s, axis=2) * 2.0

    def emit(y0: int, x0: int, block: np.ndarray) -> None:
        emitted.append(block.shape[:2])
        out[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] = block
        hits[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] += 1

    run_tiled(lambda y0, y1, x0, x1: img[y0:y1, x0:x1], h, w, infer, s, (40, 40), 8, emit)
    np.testing.assert_allclose(out, infer(img[None])[0], rtol=1e-6)
    # every output pixel is emitted exactly once, one block per tile, none larger than
    # a tile (bounded memory)
    assert (hits == 1).all()
    assert len(emitted) == len(tile_starts(h, 40, 8)) * len(tile_starts(w, 40, 8))
    assert max(bh for bh, _ in emitted) <= 40 * s and max(bw for _, bw in emitted) <= 40 * s


def test_pad_to_handles_tiny_images() -> None:
    one = np.array([[[7, 8, 9]]], np.uint8)
    padded = pad_to(one, 8, 8)
    assert padded.shape == (8, 8, 3) and (padded == one).all()
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert pad_to(img, 5, 4)[3:].tolist() == [img[1].tolist(), img[0].tolist()]  # reflect


@pytest.mark.slow
def test_default_tiling_close_to_whole_image(up: Upscaler, set5_dir: Path, data_dir: Path) -> None:
    """CCA pools over the whole input, so tiles differ from one pass; the defaults must
    keep the difference >= 45 dB. The crops span two default tiles with the minimum
    overlap, so the seam is as narrow as it gets."""
    assert (up.tile, up.overlap) == (DEFAULT_TILE, DEFAULT_OVERLAP)
    length = 2 * DEFAULT_TILE - DEFAULT_OVERLAP
    whole = Upscaler(up.model_path, tile=0)
    crops = [read_rgb(set5_dir / "baby.png")[:96, :length],
             # transposed: a horizontal seam
             read_rgb(data_dir / "test" / "BSD68" / "108005.png")[:96, :length]
             .transpose(1, 0, 2).copy()]
    for img in crops:
        assert max(img.shape[:2]) == length
        assert psnr(up.upscale(img), whole.upscale(img)) >= 45.0


def test_fixed_input_model_tiles_and_pads(onnx_x4_fixed: Path, onnx_x4: Path) -> None:
    up = Upscaler(onnx_x4_fixed)
    assert up.input_size == (32, 32) and up.tile == 32
    whole = Upscaler(onnx_x4, tile=0)
    for h, w in [(50, 70), (10, 12), (1, 1), (33, 5)]:
        img = _rand_img(h, w, seed=h)
        out = up.upscale(img)
        assert out.shape == (4 * h, 4 * w, 3)
        if min(h, w) >= 32:  # no padding: only seams and tile statistics differ
            assert psnr(out, whole.upscale(img)) >= 35.0
    with pytest.raises(UserError, match="fixed input size"):
        Upscaler(onnx_x4_fixed, tile=64)


# -- image kinds -----------------------------------------------------------------------

def test_gray_rgba_uint16_float(up: Upscaler) -> None:
    rgb = _rand_img(21, 17, seed=1)
    out_rgb = up.upscale(rgb)
    assert out_rgb.shape == (84, 68, 3) and out_rgb.dtype == np.uint8

    gray = rgb[:, :, 1]
    out_gray = up.upscale(gray)
    assert out_gray.shape == (84, 68) and out_gray.dtype == np.uint8
    # gray = the model on R=G=B, channels averaged (before rounding), then rounded
    x = np.repeat(gray[None, :, :, None], 3, axis=3).astype(np.float32) / 255
    ref = np.clip(np.rint(up.run_tensor(x)[0].mean(axis=2) * 255), 0, 255)
    assert np.abs(out_gray - ref).max() <= 1
    assert up.upscale(gray[:, :, None]).shape == (84, 68, 1)

    alpha = _rand_img(21, 17, c=0, seed=2)
    rgba = np.dstack([rgb, alpha])
    out_rgba = up.upscale(rgba)
    assert out_rgba.shape == (84, 68, 4)
    np.testing.assert_array_equal(out_rgba[:, :, :3], out_rgb)
    np.testing.assert_array_equal(out_rgba[:, :, 3],
                                  cv2.resize(alpha, (68, 84), interpolation=cv2.INTER_CUBIC))
    assert up.upscale(np.dstack([gray, alpha])).shape == (84, 68, 2)

    rgb16 = rgb.astype(np.uint16) * 257
    out16 = up.upscale(rgb16)
    assert out16.dtype == np.uint16 and out16.shape == (84, 68, 3)
    assert np.abs(out16 / 257.0 - out_rgb).max() <= 1.0
    assert out16.max() > 255  # really 16-bit, not 8-bit values in a uint16 array

    outf = up.upscale(rgb.astype(np.float32) / 255)
    assert outf.dtype == np.float32 and 0 <= outf.min() and outf.max() <= 1
    assert np.abs(outf * 255 - out_rgb).max() <= 0.51


def test_bgr_helper(up: Upscaler) -> None:
    rgb = _rand_img(12, 9, seed=3)
    np.testing.assert_array_equal(up.upscale_bgr(rgb[:, :, ::-1]), up.upscale(rgb)[:, :, ::-1])
    rgba = np.dstack([rgb, rgb[:, :, 0]])
    bgra = rgba[:, :, [2, 1, 0, 3]]
    np.testing.assert_array_equal(up.upscale_bgr(bgra), up.upscale(rgba)[:, :, [2, 1, 0, 3]])


def test_odd_and_tiny_sizes(up: Upscaler) -> None:
    for h, w in [(1, 1), (1, 7), (9, 1), (7, 5), (3, 2)]:
        out = up.upscale(_rand_img(h, w, seed=h * w))
        assert out.shape == (4 * h, 4 * w, 3)
        assert out.dtype == np.uint8
    out16 = up.upscale(np.full((1, 1), 40000, np.uint16))
    assert out16.shape == (4, 4) and out16.dtype == np.uint16


def test_min_input_pads_then_crops(onnx_x4: Path, tmp_path: Path) -> None:
    path = set_onnx_meta(onnx_x4, base_meta("onnx", 4, min_input=8), tmp_path / "m8.onnx")
    up8 = Upscaler(path, tile=0)
    assert up8.min_input == 8
    img = _rand_img(3, 5, seed=4)
    out = up8.upscale(img)
    assert out.shape == (12, 20, 3)
    # the same as upscaling the padded 8x8 image and cropping
    full = Upscaler(onnx_x4, tile=0).upscale(pad_to(img, 8, 8))
    np.testing.assert_array_equal(out, full[:12, :20])
    with pytest.raises(UserError, match="min_input"):
        Upscaler(path, tile=4)


def test_rejects_bad_images(up: Upscaler) -> None:
    for bad in (np.zeros((4, 4, 5), np.uint8), np.zeros((4, 4), np.int32),
                np.zeros((0, 4, 3), np.uint8), np.zeros((2, 2, 2, 3), np.uint8)):
        with pytest.raises(UserError):
            up.upscale(bad)


# -- quantization helpers, missing runtimes ---------------------------------------------

def test_quantize_rounds_and_clamps() -> None:
    x = np.array([0.0, 0.6 / 255, 1.4 / 255, 1.5001 / 255, 1.3, -0.2], np.float32)
    assert quantize(x, 1 / 255, 0, np.dtype(np.uint8)).tolist() == [0, 1, 1, 2, 255, 0]
    q = quantize(x, 1 / 255, -128, np.dtype(np.int8))
    assert q.tolist() == [-128, -127, -127, -126, 127, -128]
    np.testing.assert_allclose(dequantize(q, 1 / 255, -128)[:4], [0, 1 / 255, 1 / 255, 2 / 255],
                               atol=1e-7)


def _block_imports(monkeypatch, names: tuple[str, ...]) -> None:
    real_import = builtins.__import__
    real_import_module = importlib.import_module
    real_find_spec = importlib.util.find_spec

    def blocked(name: str) -> bool:
        return name.split(".")[0] in names

    def fake_import(name, *args, **kwargs):
        if blocked(name):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    def fake_import_module(name, package=None):
        if blocked(name):
            raise ImportError(f"No module named {name!r}")
        return real_import_module(name, package)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(importlib, "import_module", fake_import_module)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if blocked(name) else real_find_spec(name, *a))


def test_missing_onnxruntime_names_the_extra(onnx_x4: Path, monkeypatch) -> None:
    _block_imports(monkeypatch, ("onnxruntime",))
    with pytest.raises(MissingExtraError) as info:
        Upscaler(onnx_x4)
    assert info.value.extra == "onnx"
    assert "pip install 'rdsrn[onnx]'" in str(info.value) and "\n" not in str(info.value)


def test_missing_litert_names_the_extra(tiny_tflite, monkeypatch) -> None:
    _block_imports(monkeypatch, ("ai_edge_litert", "tflite_runtime", "tensorflow"))
    with pytest.raises(MissingExtraError) as info:
        Upscaler(tiny_tflite["fp32"])
    assert info.value.extra == "litert"
    assert "pip install 'rdsrn[litert]'" in str(info.value)


def test_bundled_model_lookup(onnx_x4: Path, tmp_path: Path, monkeypatch) -> None:
    import rdsrn.runtimes.bundled as bundled

    monkeypatch.setattr(bundled, "MODELS_DIR", tmp_path)
    with pytest.raises(UserError, match="no bundled x4 model"):
        bundled.default_model_path(4)
    (tmp_path / "rdsrn_x4_fp32.onnx").write_bytes(onnx_x4.read_bytes())
    assert bundled.default_model_path(4) == tmp_path / "rdsrn_x4_fp32.onnx"
    assert bundled.resolve_model(None) == tmp_path / "rdsrn_x4_fp32.onnx"
    assert bundled.resolve_model("rdsrn_x4") == tmp_path / "rdsrn_x4_fp32.onnx"
    assert bundled.resolve_model("rdsrn_x4_fp32") == tmp_path / "rdsrn_x4_fp32.onnx"
    assert bundled.resolve_model(str(onnx_x4)) == onnx_x4
    with pytest.raises(UserError, match="bundled: rdsrn_x4_fp32"):
        bundled.resolve_model("rdsrn_x9_nope")
    with pytest.raises(UserError, match="no bundled tflite x4"):
        bundled.default_model_path(4, format="tflite")
