"""The artifacts bundled in runtimes/models/ come from the shipped weights and pass the
export gates. Skipped only while no shipped weights exist; once they do, a missing or
stale artifact fails (rebuild with `python -m rdsrn.export.bundle`)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rdsrn.export.bundle import BUNDLES, OUT_DIR, qat_weights  # noqa: E402
from rdsrn.export.cli import artifact_name  # noqa: E402
from rdsrn.export.parity import (DEFAULT_MAX_DROP, FP32_MAX_ABS_DIFF, delta_psnr,  # noqa: E402
                           onnx_runner, tflite_runner, torch_runner)
from rdsrn.weights import file_sha256, weights_path  # noqa: E402
from rdsrn.runtimes.formats import FORMATS, METADATA_KEY  # noqa: E402
from rdsrn.runtimes.tflite_meta import read_tflite_metadata  # noqa: E402

from export_fixtures import crop_inputs  # noqa: E402

WEIGHTS = weights_path("rdsrn_x4")
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(),
                                reason="no shipped rdsrn_x4 weights yet")


def _path(fmt: str, precision: str, model: str = "rdsrn_x4", keep: tuple[str, ...] = ()):
    return OUT_DIR / artifact_name(model, fmt, precision, None, keep_float=keep)


ALL_BUNDLED = [(m, *e) for m, entries in BUNDLES.items() for e in entries]


def _meta(path) -> dict:
    if path.suffix == ".tflite":
        return read_tflite_metadata(path)
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props[METADATA_KEY])


def _runner(path):
    return (tflite_runner if path.suffix == ".tflite" else onnx_runner)(path.read_bytes())


@pytest.fixture(scope="module")
def shipped():
    from rdsrn.export.source import load_source

    return load_source("rdsrn_x4")


@pytest.mark.parametrize("model, fmt, precision, keep", ALL_BUNDLED)
def test_bundled_artifact_is_from_shipped_weights(model, fmt, precision, keep):
    weights = weights_path(model)
    if not weights.is_file():
        pytest.skip(f"no shipped {model} weights")
    path = _path(fmt, precision, model, keep)
    assert path.is_file(), f"{path} missing: run `python -m rdsrn.export.bundle --model {model}`"
    meta = _meta(path)
    qat = qat_weights(model)
    if precision == "int8" and qat is not None:  # INT8 files come from the QAT weights
        weights = qat
        assert meta["quantization"]["ranges"].startswith("learned by quantization-aware")
    assert meta["weights_sha256"] == file_sha256(weights), \
        f"{path} is stale (other weights): run `python -m rdsrn.export.bundle --model {model}`"
    assert meta["precision"] == precision and meta["format"] == fmt
    assert meta["input_size"] == "dynamic" and meta["scale"] == int(model[-1])
    if precision == "fp32":
        assert meta["parity"]["max_abs_diff"] <= FP32_MAX_ABS_DIFF
    else:
        assert meta["delta_psnr"] >= -DEFAULT_MAX_DROP  # negative: INT8 worse than FP32
        assert meta["quantization"]["calibration"]["patches"] >= 100
        if keep:  # a mixed-precision file says which groups are float
            ops = meta["quantization"]["float_ops"]
            assert ops.startswith("layer groups ")
            assert set(ops.removeprefix("layer groups ").split(", ")) == set(keep)
        if fmt == "tflite":
            q = meta["quantization"]["input"]
            assert q["dtype"] == "uint8" and q["zero_point"] == 0
            assert q["scale"] == pytest.approx(1 / 255, rel=1e-6)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_bundled_fp32_reproduces_shipped_model(fmt, shipped, data_dir):
    """Rebuilding from the shipped weights gives the bundled file's outputs."""
    from rdsrn.export.onnx_export import build_fp32
    from rdsrn.export.tf_twin import twin_from_torch
    from rdsrn.export.tflite_export import convert

    path = _path(fmt, "fp32")
    bundled = _runner(path)
    if fmt == "onnx":
        rebuilt = onnx_runner(build_fp32(shipped.model).SerializeToString())
    else:
        rebuilt = tflite_runner(convert(twin_from_torch(shipped.model), "fp32"))
    ref = torch_runner(shipped.model)
    for x in crop_inputs(data_dir, [(40, 56), (23, 31)]):
        y = bundled(x)
        assert np.abs(y - ref(x)).max() <= FP32_MAX_ABS_DIFF
        assert np.abs(y - rebuilt(x)).max() <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_bundled_int8_passes_its_gate(fmt, shipped, set5_dir):
    path = _path(fmt, "int8")
    meta = _meta(path)
    result = delta_psnr(_runner(path), torch_runner(shipped.model), set5_dir, 4)
    assert result["delta_psnr"] >= -DEFAULT_MAX_DROP
    # The recorded figure is what the file does (deterministic CPU kernels).
    assert result["delta_psnr"] == pytest.approx(meta["delta_psnr"], abs=0.02)
