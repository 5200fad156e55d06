"""LiteRT (.tflite) backend: NHWC layout, float and uint8 I/O with the interpreter's own
quantization parameters, dynamic and fixed input sizes, threads; and the bundled
artifacts (when the exporter has produced them) against the PyTorch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rdsrn.runtimes import Upscaler
from rdsrn.runtimes.errors import UserError

from test_runtime_artifacts import (  # noqa: F401 (fixtures)
    REPO, TINY_SCALE, build_tiny_tflite, psnr, read_rgb, tiny_reference, tiny_tflite,
    torch_upscale)


def _img(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _ref_uint8(img: np.ndarray) -> np.ndarray:
    y = tiny_reference()(img[None].astype(np.float32) / 255)[0]
    return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)


def test_fp32_tflite_matches_reference(tiny_tflite) -> None:
    up = Upscaler(tiny_tflite["fp32"], tile=0, threads=1)
    assert (up.scale, up.layout, up.format, up.backend, up.io_dtype) == (
        TINY_SCALE, "NHWC", "tflite", "litert", "float32")
    for h, w in [(31, 17), (8, 40), (1, 1)]:
        img = _img(h, w, seed=h)
        out = up.upscale(img)
        assert out.shape == (h * TINY_SCALE, w * TINY_SCALE, 3)
        assert np.abs(out.astype(int) - _ref_uint8(img)).max() <= 1


def test_int8_uint8_io_uses_interpreter_quantization(tiny_tflite) -> None:
    up = Upscaler(tiny_tflite["int8"], tile=0)
    backend = up._backend
    detail_in = backend.interpreter.get_input_details()[0]
    detail_out = backend.interpreter.get_output_details()[0]
    assert detail_in["dtype"] == np.uint8 and up.io_dtype == "uint8"
    q = detail_in["quantization_parameters"]
    assert backend._in_q == (float(q["scales"][0]), int(q["zero_points"][0]))
    q = detail_out["quantization_parameters"]
    assert backend._out_q == (float(q["scales"][0]), int(q["zero_points"][0]))
    img = _img(40, 30, seed=1)
    out = up.upscale(img)
    # INT8 weights/activations: close to the float graph, not equal
    assert psnr(out, _ref_uint8(img)) >= 30.0


def test_int8_fixed_size_tiles(tiny_tflite) -> None:
    up = Upscaler(tiny_tflite["int8_fixed"])
    assert up.input_size == (16, 16) and up.tile == 16
    dynamic = Upscaler(tiny_tflite["int8"], tile=0)
    for h, w in [(16, 16), (45, 23), (5, 3)]:
        img = _img(h, w, seed=h + w)
        out = up.upscale(img)
        assert out.shape == (h * TINY_SCALE, w * TINY_SCALE, 3)
        if min(h, w) >= 16:  # a 3x3-conv graph: tiling matters only at seams
            assert psnr(out, dynamic.upscale(img)) >= 35.0


def test_threads_reach_the_interpreter(tiny_tflite, monkeypatch) -> None:
    import ai_edge_litert.interpreter as lit

    seen = {}
    real = lit.Interpreter

    class Spy(real):
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(lit, "Interpreter", Spy)
    up = Upscaler(tiny_tflite["fp32"], threads=3)
    assert seen["num_threads"] == 3 and up.threads == 3


def test_tflite_metadata_is_required(tmp_path: Path, tiny_tflite) -> None:
    # a valid model without the rdsrn buffer: refuse rather than guess from the name
    from ai_edge_litert import schema_py_generated as fb
    import flatbuffers

    model = fb.ModelT.InitFromPackedBuf(bytearray(tiny_tflite["fp32"].read_bytes()), 0)
    model.metadata = [m for m in (model.metadata or []) if m.name != b"rdsrn"]
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    bare = tmp_path / "rdsrn_x2_fp32.tflite"
    bare.write_bytes(bytes(builder.Output()))
    with pytest.raises(UserError, match="no 'rdsrn' metadata"):
        Upscaler(bare)
    with pytest.raises(UserError, match="cannot run on backend"):
        Upscaler(tiny_tflite["fp32"], backend="onnxruntime")


def test_metadata_layout_is_cross_checked(tmp_path: Path) -> None:
    path = build_tiny_tflite(tmp_path / "wrong.tflite", int8=False,
                             meta_overrides={"layout": "NCHW"})
    with pytest.raises(UserError, match="layout NCHW"):
        Upscaler(path)


# -- bundled artifacts (written by the exporter) ----------------------------------------

BUNDLED = sorted(p for p in (REPO / "runtimes" / "models").glob("rdsrn_x*_*.*")
                 if p.suffix in (".onnx", ".tflite"))


@pytest.mark.slow
@pytest.mark.parametrize("path", BUNDLED, ids=[p.name for p in BUNDLED])
def test_bundled_artifact_matches_torch(path: Path, set5_dir: Path) -> None:
    """FP32 >= 50 dB from PyTorch; INT8 / FP16 within 1 dB of the parity the exporter
    measured and recorded in the file."""
    import torch  # noqa: F401  (reference only)
    from rdsrn.models import create_model

    up = Upscaler(path, tile=0)
    name = up.metadata["model"]["name"] if isinstance(up.metadata["model"], dict) \
        else up.metadata["model"]
    weights = REPO / "rdsrn" / "weights" / f"{name}.safetensors"
    if not weights.is_file():
        pytest.fail(f"{path.name} is bundled but {weights.name} is not")
    model = create_model(name, pretrained=True).eval()
    img = read_rgb(set5_dir / "bird.png")[:72, :64]
    got = psnr(up.upscale(img), torch_upscale(model, img))
    if up.precision == "fp32":
        assert got >= 50.0
    else:
        recorded = float(up.metadata.get("parity", {}).get("psnr_vs_torch", 0.0))
        assert got >= min(recorded - 1.0, 40.0)
