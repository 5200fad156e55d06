"""OpenVINO: export (IR .xml + .bin from the gated ONNX file), the runtime backend, and
its bad input: an .xml without its .bin, a file of another runtime, a missing extra."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from rdsrn.runtimes.errors import MissingExtraError, UserError

from export_fixtures import crop_inputs, small_source, tiny_eval_dir

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino not installed (pip install 'rdsrn[openvino]')")


@pytest.fixture(scope="module")
def ir_files(tmp_path_factory, data_dir):
    """FP32 and INT8 IR of a narrow RDSRN (the INT8 one gated on two Set5 crops)."""
    from rdsrn.export.calibration import make_calibration_set
    from rdsrn.export.openvino_export import export_openvino

    out = tmp_path_factory.mktemp("ov")
    src = small_source()
    inputs = crop_inputs(data_dir, [(48, 48), (37, 53)])
    fp32 = export_openvino(src, out / "m_fp32.xml", "fp32", parity_inputs=inputs,
                           log=lambda s: None)
    calib = make_calibration_set(data_dir / "train", 4, 4)
    int8 = export_openvino(src, out / "m_int8.xml", "int8", parity_inputs=inputs,
                           calib=calib, max_drop=50,
                           eval_dir=tiny_eval_dir(data_dir / "test" / "Set5", out / "e"),
                           log=lambda s: None)
    return src, fp32, int8


def test_fp32_ir_matches_pytorch_through_the_runtime(ir_files, data_dir):
    from rdsrn.export.parity import torch_runner
    from rdsrn.runtimes import Upscaler

    src, fp32, _ = ir_files
    assert fp32.metadata["format"] == "openvino" and fp32.path.with_suffix(".bin").is_file()
    assert fp32.metadata["parity"]["max_abs_diff"] <= 1e-4
    up = Upscaler(fp32.path, tile=0)
    assert up.scale == 4 and up.backend == "openvino"
    x = crop_inputs(data_dir, [(40, 44)])[0]
    img = (x[0] * 255).round().astype(np.uint8)
    y = up.upscale(img).astype(np.float32) / 255
    ref = torch_runner(src.model)(img[None].astype(np.float32) / 255)[0]
    assert np.abs(y - ref).max() <= 1 / 255 + 1e-6  # uint8 output rounding


def test_int8_ir_is_gated_and_runs(ir_files):
    from rdsrn.runtimes import Upscaler

    _, _, int8 = ir_files
    meta = int8.metadata
    assert meta["precision"] == "int8" and "delta_psnr" in meta
    assert meta["quantization"]["pair_bound"]["safe"]
    out = Upscaler(int8.path).upscale(np.full((20, 24, 3), 128, np.uint8))
    assert out.shape == (80, 96, 3)


def test_xml_without_its_bin_is_one_line(ir_files, tmp_path):
    from rdsrn.runtimes import Upscaler

    lone = tmp_path / "lone.xml"
    shutil.copy(ir_files[1].path, lone)
    with pytest.raises(UserError, match=r"lone.bin is missing"):
        Upscaler(lone)


def test_a_file_of_another_runtime_is_refused(ir_files):
    from rdsrn.runtimes import Upscaler

    with pytest.raises(UserError, match="cannot run on backend 'onnxruntime'; it runs on openvino"):
        Upscaler(ir_files[1].path, backend="onnxruntime")


def test_missing_extra_names_it(ir_files, monkeypatch):
    import importlib

    from rdsrn.runtimes.backends import load_backend

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingExtraError, match=r"rdsrn\[openvino\]"):
        load_backend(ir_files[1].path)


def test_device_bench_times_an_ir(ir_files):
    from rdsrn.benchmarks import device_bench as db

    runner = db.open_runner(str(ir_files[1].path), 1, (24, 20))
    assert runner.runtime == "openvino" and runner.output_hw == (96, 80)
    with pytest.raises(ValueError, match="dynamic-size OpenVINO model: give --input"):
        db.open_runner(str(ir_files[1].path), 1, None)
