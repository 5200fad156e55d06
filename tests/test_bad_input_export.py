"""`rdsrn export` bad input and output hygiene (issue 14): unwritable --out found before
any work, a failed write is one line, calibration images that OpenCV asserts on, one
ΔPSNR sign, the same ONNX dimension names in FP32 and INT8 files, TF chatter hidden."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rdsrn import cli
from rdsrn.runtimes.errors import UserError

from export_fixtures import SMALL, small_source
from test_bad_input_training import huge_png


def rdsrn_export(argv, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {"export": cli.COMMANDS["export"]})
    return cli.main(["export", *argv])


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("rdsrn export: error: ")
    return err[0]


@pytest.fixture()
def no_model_loading(monkeypatch):
    """Fail the test if the export gets as far as loading the model."""
    import rdsrn.export.source as source

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the output check")

    monkeypatch.setattr(source, "load_source", boom)


# ---------------------------------------------------------------- outputs
@pytest.mark.parametrize("kind", ["parent_is_file", "out_is_file"])
def test_unwritable_out_fails_before_any_work(tmp_path, monkeypatch, capsys,
                                              no_model_loading, kind):
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    out = blocker / "sub" if kind == "parent_is_file" else blocker
    assert rdsrn_export(["--format", "onnx", "--out", str(out)], monkeypatch) == 2
    assert "--out" in one_line_error(capsys)
    assert blocker.read_text() == "keep"


def test_default_out_is_in_the_working_directory(tmp_path, monkeypatch):
    from rdsrn.export.cli import add_arguments, plan
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    monkeypatch.chdir(tmp_path)
    p = plan(parser.parse_args(["--format", "onnx"]))
    assert p["out"].absolute() == tmp_path / "exported"
    assert not (tmp_path / "exported").exists()  # checked, not created, by the plan


def test_disk_full_at_the_artifact_write_is_one_line(tmp_path, monkeypatch):
    import rdsrn.data
    from rdsrn.export.common import atomic_write_bytes

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rdsrn.data, "write_bytes_atomic", full)
    with pytest.raises(UserError, match=r"m\.onnx: cannot write \(No space left on device\)"):
        atomic_write_bytes(tmp_path / "m.onnx", b"data")


# ---------------------------------------------------------------- images
def test_calibration_image_that_opencv_asserts_on_is_one_line(tmp_path):
    from rdsrn.export.calibration import make_calibration_set

    huge_png(tmp_path / "huge.png")
    with pytest.raises(UserError, match=r"huge\.png"):
        make_calibration_set(tmp_path, 4, n=2, size=(8, 8))


def test_parity_image_that_opencv_asserts_on_is_one_line(tmp_path):
    from rdsrn.export.parity import parity_inputs

    huge_png(tmp_path / "huge.png")
    with pytest.raises(UserError, match=r"huge\.png"):
        parity_inputs(tmp_path, [(8, 8)])


# ---------------------------------------------------------------- ΔPSNR sign
def _bicubic_runner(noise: float):
    import cv2

    rng = np.random.default_rng(0)

    def run(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[1:3]
        y = cv2.resize(x[0], (w * 2, h * 2), interpolation=cv2.INTER_CUBIC)
        y = y + rng.normal(0, noise, y.shape).astype(np.float32) if noise else y
        return np.clip(y, 0, 1)[None]

    return run


def test_delta_psnr_is_negative_when_the_artifact_is_worse(set5_dir, tmp_path):
    from rdsrn.data import read_image, write_image
    from rdsrn.export.common import GateError
    from rdsrn.export.parity import delta_psnr, gate_int8

    d = tmp_path / "hr"
    d.mkdir()
    write_image(d / "bird.png", read_image(set5_dir / "bird.png")[:64, :64].copy())
    r = delta_psnr(_bicubic_runner(0.02), _bicubic_runner(0.0), d, 2)
    assert r["delta_psnr"] < 0 and r["delta_psnr"] == pytest.approx(
        r["psnr"] - r["psnr_fp32"], abs=1e-3)
    gate_int8(r, max_drop=-r["delta_psnr"] + 0.01, what="x")  # within the allowed drop
    with pytest.raises(GateError, match=r"Δ -\d"):
        gate_int8(r, max_drop=-r["delta_psnr"] - 0.01, what="x")
    gate_int8({**r, "delta_psnr": 0.5}, max_drop=0.0, what="x")  # better than FP32: passes


def test_summary_prints_the_same_sign_as_the_tables():
    from rdsrn.export.cli import summary
    from rdsrn.export.common import ExportResult

    meta = {"io_dtype": "float32", "delta_psnr": -0.127,
            "eval": {"dataset": "Set5", "psnr": 31.38}}
    text = summary([ExportResult(Path("m.onnx"), "onnx", "int8", 1, 1.0, meta)], 1.0)
    assert "Δ -0.127 dB" in text


# ---------------------------------------------------------------- ONNX dim names
def _io_dims(model) -> list[list]:
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(model.graph.input) + list(model.graph.output)]


def test_fp32_and_int8_onnx_have_the_same_dimension_names():
    pytest.importorskip("onnxruntime")
    from rdsrn.export.calibration import CalibrationSet
    from rdsrn.export.onnx_export import build_fp32, quantize_int8

    src = small_source(0, recursions=1)
    fp32 = build_fp32(src.model)
    rng = np.random.default_rng(0)
    patches = rng.uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
    int8, _ = quantize_int8(fp32, CalibrationSet(patches, {"patches": 4}))
    assert _io_dims(fp32) == [["batch", 3, "height", "width"],
                              ["batch", 3, "out_height", "out_width"]]
    assert _io_dims(int8) == _io_dims(fp32)
    names = {d.dim_param for v in int8.graph.value_info
             for d in v.type.tensor_type.shape.dim if d.dim_param}
    assert not any("DepthToSpace" in n for n in names)


def test_copy_io_dim_names_renames_inside_the_graph_too():
    from onnx import TensorProto, helper

    from rdsrn.export.onnx_export import copy_io_dim_names

    def graph(out_dims, vi_dims):
        node = helper.make_node("Identity", ["x"], ["y"])
        g = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
            value_info=[helper.make_tensor_value_info("z", TensorProto.FLOAT, vi_dims)])
        return helper.make_model(g)

    src = graph(["batch", 3], ["batch", 3])
    dst = graph(["Op_o0__d0", 3], ["Op_o0__d0", 3])
    assert copy_io_dim_names(src, dst) == 1
    assert _io_dims(dst)[1] == ["batch", 3]
    assert dst.graph.value_info[0].type.tensor_type.shape.dim[0].dim_param == "batch"


# ---------------------------------------------------------------- TF chatter
NOISE = (b"WARNING: All log messages before absl::InitializeLog() is called are written "
         b"to STDERR\n"
         b"I0000 00:00:1796057684.731575   21379 port.cc:153] oneDNN custom operations "
         b"are on.\n"
         b"W0000 00:00:1796057684.731575   21379 tf_tfl_flatbuffer_helpers.cc:365] "
         b"Ignored output_format.\n"
         b"fully_quantize: 0, inference_type: 6, input_inference_type: UINT8\n"
         b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")


@pytest.mark.parametrize("enabled", [True, False])
def test_quiet_tf_drops_chatter_and_keeps_the_rest(capfd, enabled):
    from rdsrn.export.quiet import quiet_tf

    with quiet_tf(enabled):
        os.write(2, NOISE + b"E0000 00:00:1.0 1 x.cc:1] a real error\nmy own warning\n")
    err = capfd.readouterr().err
    assert "a real error" in err and "my own warning" in err
    assert ("oneDNN" in err) == (not enabled) and ("XNNPACK" in err) == (not enabled)
    assert ("absl::InitializeLog" in err) == (not enabled)


@pytest.mark.slow
def test_tensorflow_import_is_silent_under_quiet_tf(tmp_path):
    pytest.importorskip("tensorflow")
    code = ("from rdsrn.export.quiet import quiet_tf\n"
            "with quiet_tf():\n    import tensorflow\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == ""


def test_verbose_flag_is_offered():
    from rdsrn.export.cli import add_arguments
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args(["--verbose"]).verbose
    assert SMALL["channels"] == 16  # fixtures unchanged (fast INT8 in tests)


def test_bundled_onnx_files_share_the_dimension_names():
    onnx = pytest.importorskip("onnx")
    models = Path(__file__).resolve().parents[1] / "runtimes" / "models"
    files = sorted(models.glob("*.onnx"))
    if not files:
        pytest.skip("no bundled ONNX files")
    for f in files:
        dims = _io_dims(onnx.load(str(f), load_external_data=False))
        assert dims == [["batch", 3, "height", "width"],
                        ["batch", 3, "out_height", "out_width"]], f.name
