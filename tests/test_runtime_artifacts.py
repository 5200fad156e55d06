"""Model files for the runtime tests, built in a temporary folder (no tests here).

ONNX: torch.onnx.export of rdsrn_x4 — the shipped weights when present, otherwise
seeded random weights wrapped as bicubic + model (a random RDSRN alone outputs ~0, which
clipping to [0, 1] would make a degenerate test image). The wrapper keeps every part of
the network in the graph, so parity and tiling behaviour are still those of RDSRN.
TFLite: tiny conv + depth_to_space graphs made with TensorFlow (tests only), FP32 and
full-INT8 with uint8 I/O, dynamic or fixed input size; the full-model TFLite parity is
checked on the bundled artifacts when the exporter has produced them.
Tests may use torch and tensorflow to make artifacts and references; the runtime never.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED_X4 = REPO / "rdsrn" / "weights" / "rdsrn_x4.safetensors"


def base_meta(fmt: str, scale: int, **kw: Any) -> dict[str, Any]:
    meta = dict(format=fmt, scale=scale, layout="NCHW" if fmt == "onnx" else "NHWC",
                value_range=[0, 1], color_order="RGB", precision="fp32",
                io_dtype="float32", quantization={}, input_size="dynamic", min_input=1,
                model="rdsrn_x4")
    meta.update(kw)
    return meta


def torch_reference_model():
    """(model, description): the torch module whose export the tests run."""
    import torch
    import torch.nn.functional as F
    from rdsrn.models import create_model

    if SHIPPED_X4.is_file():
        return create_model("rdsrn_x4", pretrained=True).eval(), "shipped"
    torch.manual_seed(1234)
    net = create_model("rdsrn_x4").eval()

    class BicubicPlusRDSRN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            up = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
            return up + self.net(x)

    return BicubicPlusRDSRN().eval(), "random"


def torch_upscale(model, img: np.ndarray) -> np.ndarray:
    """uint8 RGB HxWx3 -> uint8 through the torch model (rounded, clamped)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        y = model(x)[0].permute(1, 2, 0).numpy()
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def export_onnx(model, path: Path, meta: dict[str, Any], fixed: tuple[int, int] | None = None) -> Path:
    import onnx
    import torch

    h, w = fixed or (32, 32)
    kwargs: dict[str, Any] = {}
    if fixed is None:
        kwargs["dynamic_axes"] = {"input": {2: "h", 3: "w"}, "output": {2: "H", 3: "W"}}
    torch.onnx.export(model, (torch.rand(1, 3, h, w),), str(path), input_names=["input"],
                      output_names=["output"], opset_version=17, dynamo=False, **kwargs)
    set_onnx_meta(path, meta)
    return path


def set_onnx_meta(path: Path, meta: dict[str, Any] | None, out: Path | None = None) -> Path:
    """Write `path` (or a copy at `out`) with the rdsrn entry replaced (None: removed)."""
    import onnx

    proto = onnx.load(str(path))
    keep = [p for p in proto.metadata_props if p.key != "rdsrn"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    if meta is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "rdsrn", json.dumps(meta)
    onnx.save(proto, str(out or path))
    return out or path


@pytest.fixture(scope="session")
def torch_model():
    return torch_reference_model()[0]


@pytest.fixture(scope="session")
def onnx_x4(tmp_path_factory, torch_model) -> Path:
    """Dynamic-size FP32 ONNX of the torch model (NCHW, float I/O)."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(torch_model, path, base_meta("onnx", 4))


@pytest.fixture(scope="session")
def onnx_x4_fixed(tmp_path_factory, torch_model) -> Path:
    """The same model with a fixed 32x32 input."""
    path = tmp_path_factory.mktemp("onnx_fixed") / "fixed.onnx"
    return export_onnx(torch_model, path, base_meta("onnx", 4, input_size=[32, 32]),
                       fixed=(32, 32))


# -- tiny TFLite models -------------------------------------------------------------

TINY_SCALE = 2


def tiny_weights() -> tuple[np.ndarray, np.ndarray]:
    """3x3 conv 3 -> 3*s*s, near nearest-neighbour upscaling plus a little mixing."""
    s = TINY_SCALE
    rng = np.random.default_rng(7)
    w = np.zeros((3, 3, 3, 3 * s * s), np.float32)
    for k in range(s * s):
        for c in range(3):
            w[1, 1, c, k * 3 + c] = 1.0
    w += rng.normal(0, 0.04, w.shape).astype(np.float32)
    b = rng.normal(0, 0.01, (3 * s * s,)).astype(np.float32)
    return w, b


def tiny_reference() -> Callable[[np.ndarray], np.ndarray]:
    """float32 NHWC [0,1] -> float32 NHWC through the tiny graph, eagerly in TF."""
    import tensorflow as tf

    w, b = tiny_weights()

    def f(x: np.ndarray) -> np.ndarray:
        y = tf.nn.depth_to_space(tf.nn.conv2d(x, w, 1, "SAME") + b, TINY_SCALE)
        return y.numpy()

    return f


def build_tiny_tflite(path: Path, *, int8: bool, fixed: tuple[int, int] | None = None,
                      meta_overrides: dict[str, Any] | None = None) -> Path:
    import tensorflow as tf
    from rdsrn.export.metadata import embed_tflite

    w, b = tiny_weights()
    shape = [1, fixed[0], fixed[1], 3] if fixed else [1, None, None, 3]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def graph(x):
        return tf.nn.depth_to_space(tf.nn.conv2d(x, w, 1, "SAME") + b, TINY_SCALE)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([graph.get_concrete_function()],
                                                           graph)
    if int8:
        rng = np.random.default_rng(3)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [rng.random((1, 16, 16, 3), dtype=np.float32)] for _ in range(16))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    meta = base_meta("tflite", TINY_SCALE, precision="int8" if int8 else "fp32",
                     io_dtype="uint8" if int8 else "float32",
                     input_size=list(fixed) if fixed else "dynamic")
    meta.update(meta_overrides or {})
    path.write_bytes(embed_tflite(conv.convert(), meta))
    return path


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory) -> dict[str, Path]:
    """{"fp32", "int8", "int8_fixed"} tiny TFLite files (x2, NHWC)."""
    root = tmp_path_factory.mktemp("tflite")
    return {
        "fp32": build_tiny_tflite(root / "fp32.tflite", int8=False),
        "int8": build_tiny_tflite(root / "int8.tflite", int8=True),
        "int8_fixed": build_tiny_tflite(root / "int8_fixed.tflite", int8=True, fixed=(16, 16)),
    }


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
