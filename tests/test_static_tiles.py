"""Static-shape tile models: `--input-size HxW` exports (ONNX FP32, TFLite FP32/FP16/
INT8) record the size in their metadata; the runtime feeds them exactly that shape,
padding images smaller than a tile, and matches the dynamic model on the same tiles."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rdsrn.export.calibration import make_calibration_set  # noqa: E402
from rdsrn.export.cli import artifact_name  # noqa: E402
from rdsrn.export.onnx_export import export_onnx  # noqa: E402
from rdsrn.export.parity import psnr01  # noqa: E402
from rdsrn.runtimes import Upscaler  # noqa: E402
from rdsrn.runtimes.tiling import pad_to, run_tiled, tile_starts  # noqa: E402
from rdsrn.runtimes.upscaler import DEFAULT_OVERLAP  # noqa: E402

from export_fixtures import crop_inputs, small_source, tiny_eval_dir  # noqa: E402

SIZE = (24, 32)  # static LR input, H x W


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def models(tmp_path_factory, data_dir: Path) -> dict[str, Path]:
    """The small random RDSRN as a dynamic FP32 ONNX and static 24x32 ONNX/TFLite FP32."""
    pytest.importorskip("tensorflow")
    from rdsrn.export.tflite_export import export_tflite

    src = small_source()
    root = tmp_path_factory.mktemp("static")
    static_in, dyn_in = crop_inputs(data_dir, [SIZE]), crop_inputs(data_dir, [(20, 28)])
    return {
        "dynamic": export_onnx(src, root / "m_fp32.onnx", parity_inputs=dyn_in,
                               log=_quiet).path,
        "onnx": export_onnx(src, root / artifact_name("m", "onnx", "fp32", SIZE),
                            input_size=SIZE, parity_inputs=static_in, log=_quiet).path,
        "tflite": export_tflite(src, root / artifact_name("m", "tflite", "fp32", SIZE),
                                input_size=SIZE, parity_inputs=static_in, log=_quiet).path,
    }


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random image (so the model output is not all clipped)."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4 + 2, w // 4 + 2, 3))
    big = np.kron(small, np.ones((4, 4, 1)))[:h, :w]
    return np.clip(big * 255 + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def _record_shapes(up: Upscaler) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    run = up._backend.run

    def recording(x: np.ndarray) -> np.ndarray:
        shapes.append(x.shape)
        return run(x)

    up._backend.run = recording
    return shapes


def test_static_export_records_size_and_name(models: dict[str, Path]) -> None:
    assert models["onnx"].name == "m_fp32_24x32.onnx"
    assert models["tflite"].name == "m_fp32_24x32.tflite"
    for key in ("onnx", "tflite"):
        up = Upscaler(models[key], threads=1)
        assert up.input_size == SIZE and up.metadata["input_size"] == list(SIZE)
        assert up.overlap == min(DEFAULT_OVERLAP, min(SIZE) // 2 - 1)
    assert Upscaler(models["dynamic"], threads=1).input_size is None


@pytest.mark.parametrize("key", ["onnx", "tflite"])
def test_backend_only_sees_the_static_shape(models: dict[str, Path], key: str) -> None:
    up = Upscaler(models[key], threads=1)
    shapes = _record_shapes(up)
    # larger in both sides, not a multiple; smaller than the tile; one side smaller; 1 px
    for h, w in [(61, 77), (10, 12), (50, 9), (1, 1)]:
        shapes.clear()
        out = up.upscale(_rgb(h, w, seed=h))
        assert out.shape == (4 * h, 4 * w, 3) and out.dtype == np.uint8
        assert set(shapes) == {(1, *SIZE, 3)}
        ph, pw = max(h, SIZE[0]), max(w, SIZE[1])
        assert len(shapes) == len(tile_starts(ph, SIZE[0], up.overlap)) * \
            len(tile_starts(pw, SIZE[1], up.overlap))


def _same_tiles(dynamic: Upscaler, img: np.ndarray, overlap: int) -> np.ndarray:
    """The dynamic model run on the static tile grid (float [0, 1] image)."""
    h, w = img.shape[:2]
    s = dynamic.scale
    out = np.zeros((h * s, w * s, 3), np.float32)

    def emit(y0: int, x0: int, block: np.ndarray) -> None:
        out[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] = block

    run_tiled(lambda y0, y1, x0, x1: img[y0:y1, x0:x1], h, w, dynamic.run_tensor, s,
              SIZE, overlap, emit)
    return np.clip(out, 0.0, 1.0)


@pytest.mark.parametrize("key", ["onnx", "tflite"])
def test_static_tiles_match_dynamic_model_on_the_same_tiles(models: dict[str, Path],
                                                            key: str) -> None:
    """FP32 static tiles vs the dynamic model cut into the same tiles: equal to float
    precision. Images smaller than the tile equal the dynamic model on the padded image."""
    static = Upscaler(models[key], threads=1)
    dynamic = Upscaler(models["dynamic"], threads=1, tile=0)  # whole image in one call
    img = _rgb(2 * SIZE[0] - 5, 3 * SIZE[1] - 7, seed=3).astype(np.float32) / 255.0
    out = static.upscale(img)
    assert psnr01(out, _same_tiles(dynamic, img, static.overlap)) >= 60.0
    # vs one whole-image call: tiles see less context (channel statistics), still close
    assert psnr01(out, dynamic.upscale(img)) >= 30.0
    small = _rgb(10, 12, seed=5).astype(np.float32) / 255.0
    np.testing.assert_allclose(static.upscale(small),
                               dynamic.upscale(pad_to(small, *SIZE))[:40, :48], atol=2e-5)


@pytest.mark.slow
def test_static_onnx_int8(tmp_path, data_dir: Path, set5_dir: Path, models) -> None:
    """ONNX INT8 (QDQ) calibrated on patches of the static size: fixed input, tiled."""
    src = small_source()
    out = tmp_path / artifact_name("m", "onnx", "int8", SIZE)
    res = export_onnx(src, out, "int8", input_size=SIZE,
                      calib=make_calibration_set(data_dir / "train", 4, 6, size=SIZE),
                      eval_dir=tiny_eval_dir(set5_dir, tmp_path / "eval"), max_drop=5.0,
                      parity_inputs=crop_inputs(data_dir, [SIZE]), log=_quiet)
    assert res.metadata["input_size"] == list(SIZE)
    up = Upscaler(out, threads=1)
    shapes = _record_shapes(up)
    img = _rgb(40, 70, seed=9)
    sr = up.upscale(img)
    assert up.input_size == SIZE and set(shapes) == {(1, *SIZE, 3)}
    ref = Upscaler(models["dynamic"], threads=1, tile=0).upscale(img)
    assert psnr01(sr / 255.0, ref / 255.0) >= 30.0


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_static_tflite_fp16_int8(tmp_path, data_dir: Path, set5_dir: Path, models,
                                 precision: str) -> None:
    """FP16 and INT8 (calibrated on patches of the static size) static TFLite files:
    the interpreter input is exactly the static shape and tiled output stays close to
    the FP32 dynamic model."""
    from rdsrn.export.tflite_export import export_tflite, inspect

    src = small_source()
    out = tmp_path / artifact_name("m", "tflite", precision, SIZE)
    kw = {}
    if precision == "int8":
        kw = dict(calib=make_calibration_set(data_dir / "train", 4, 6, size=SIZE),
                  eval_dir=tiny_eval_dir(set5_dir, tmp_path / "eval"), max_drop=5.0)
    res = export_tflite(src, out, precision, input_size=SIZE,
                        parity_inputs=crop_inputs(data_dir, [SIZE]), log=_quiet, **kw)
    info = inspect(out.read_bytes())
    assert info["input"]["shape_signature"] == [1, *SIZE, 3]
    assert res.metadata["input_size"] == list(SIZE)
    if precision == "int8":
        assert info["input"]["dtype"] == "uint8"
        assert res.metadata["quantization"]["calibration"]["patch_lr"] == list(SIZE)
    up = Upscaler(out, threads=1)
    shapes = _record_shapes(up)
    img = _rgb(40, 70, seed=9)
    sr = up.upscale(img)
    assert set(shapes) == {(1, *SIZE, 3)} and sr.shape == (160, 280, 3)
    ref = Upscaler(models["dynamic"], threads=1, tile=0).upscale(img)
    assert psnr01(sr / 255.0, ref / 255.0) >= (30.0 if precision == "int8" else 40.0)
