"""`rdsrn export` command line: bad input is a one-line error with exit 2 and no file,
a failing gate leaves no file, weights sources (registry / .safetensors)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import rdsrn.export.parity as parity
from rdsrn.export.source import _infer_config, load_source
from rdsrn import cli
from rdsrn.models.rdsrn import RDSRN
from rdsrn.weights import file_sha256, save_weights

from export_fixtures import SMALL, tiny_eval_dir


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    """A narrow RDSRN saved as .safetensors with metadata (fast exports)."""
    torch.manual_seed(0)
    model = RDSRN(**SMALL)
    path = tmp_path_factory.mktemp("w") / "small.safetensors"
    save_weights(path, model, {"model": "rdsrn_x4", "config": dict(model.config)})
    return path


def rdsrn_export(argv, monkeypatch):
    """rdsrn.cli.main with only the export subcommand registered (other subcommands'
    imports are not under test here)."""
    monkeypatch.setattr(cli, "COMMANDS", {"export": cli.COMMANDS["export"]})
    return cli.main(["export", *argv])


@pytest.mark.parametrize("argv, message", [
    (["--format", "onx"], "did you mean 'onnx'"),
    (["--precision", "int9"], "did you mean 'int8'"),
    (["--format", "onnx", "--precision", "fp16"], "does not take --precision fp16"),
    (["--precision", "int8"], "needs calibration images"),
    (["--input-size", "4x4"], "below the model's minimum"),
    (["--input-size", "big"], "expected HxW"),
    (["--format", "onnx", "--precision", "int8", "--calib", "X", "--int8-io", "uint8"],
     "--int8-io applies to --format tflite"),
    (["--int8-io", "uint8"], "applies to --precision int8"),
    (["--model", "rdsrn_x5"], "did you mean 'rdsrn_x4'"),
    (["--model", "nowhere.safetensors"], "not found"),
    (["--equalize"], "--equalize applies to --precision int8"),
    (["--precision", "int8", "--calib", ".", "--qat", "--equalize"], "drop --equalize"),
    (["--a16-streams"], "--a16-streams applies to --precision int8"),
    (["--format", "onnx", "--precision", "int8", "--calib", ".", "--a16-streams",
      "--calib-method", "entropy"], "drop --calib-method"),
    (["--format", "onnx", "--precision", "int8", "--calib", ".", "--a16-streams",
      "--int8-act", "int8"], "drop --int8-act int8"),
    (["--precision", "int8", "--calib", ".", "--qat", "--a16-streams"], "ONNX only"),
])
def test_bad_input_is_one_line_exit_2(argv, message, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    rc = rdsrn_export([*argv, "--out", str(out)], monkeypatch)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and err.startswith("rdsrn export: error:") and "\n" not in err
    assert not out.exists()


def test_out_must_be_a_folder(tmp_path, monkeypatch, capsys):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    assert rdsrn_export(["--out", str(target)], monkeypatch) == 2
    assert "is not a folder" in capsys.readouterr().err and target.read_text() == "keep me"


def test_unreadable_weights(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors at all")
    assert rdsrn_export(["--model", str(bad), "--out", str(tmp_path / "o")], monkeypatch) == 2
    assert "not a readable safetensors" in capsys.readouterr().err


def test_missing_extra(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real(name, *a))
    rc = rdsrn_export(["--format", "tflite",
                       "--out", str(tmp_path / "o")], monkeypatch)
    assert rc == 2
    assert "pip install 'rdsrn[export]'" in capsys.readouterr().err


def test_failing_gate_leaves_no_file(tmp_path, monkeypatch, capsys, small_weights):
    monkeypatch.setattr(parity, "FP32_MAX_ABS_DIFF", 0.0)  # any real difference fails
    out = tmp_path / "out"
    rc = rdsrn_export(["--model", str(small_weights), "--format", "onnx", "--out", str(out)],
                      monkeypatch)
    assert rc == 2
    assert "parity gate failed" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_export_onnx_fp32_command(tmp_path, monkeypatch, capsys, small_weights):
    out = tmp_path / "out"
    rc = rdsrn_export(["--model", str(small_weights), "--format", "onnx", "--out", str(out)],
                      monkeypatch)
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["rdsrn_x4_fp32.onnx"]
    text = capsys.readouterr().out
    assert "rdsrn eval --model" in text and "rdsrn upscale" in text
    assert "max |diff|" in text


@pytest.mark.slow
def test_int8_tflite_command_on_file_source(tmp_path, monkeypatch, capsys, data_dir,
                                            set5_dir, small_weights):
    """INT8 from a .safetensors file through the command, small calibration set; the
    uint8-I/O file is written only after its ΔPSNR gate."""
    weights = small_weights
    out = tmp_path / "out"
    rc = rdsrn_export(["--model", str(weights), "--format", "tflite", "--precision", "int8",
                       "--calib", str(data_dir / "train"), "--calib-n", "4",
                       "--eval-dir", str(tiny_eval_dir(set5_dir, tmp_path / "eval")),
                       "--max-drop", "50", "--out", str(out)], monkeypatch)
    assert rc == 0, capsys.readouterr().err
    from rdsrn.runtimes.tflite_meta import read_tflite_metadata

    meta = read_tflite_metadata(out / "rdsrn_x4_int8.tflite")
    assert meta["weights_sha256"] == file_sha256(weights)
    assert meta["quantization"]["calibration"]["patches"] >= 4
    assert meta["io_dtype"] == "uint8" and "delta_psnr" in meta


def test_int8_onnx_equalize(tmp_path, monkeypatch, capsys, data_dir, set5_dir, small_weights):
    """--equalize: the calibrated INT8 file records the equalization; its FP32 parity
    gate passed (the transform keeps the float function)."""
    import onnx

    out = tmp_path / "out"
    rc = rdsrn_export(["--model", str(small_weights), "--format", "onnx", "--precision", "int8",
                       "--calib", str(data_dir / "train"), "--calib-n", "4", "--equalize",
                       "--eval-dir", str(tiny_eval_dir(set5_dir, tmp_path / "eval")),
                       "--max-drop", "50", "--out", str(out)], monkeypatch)
    assert rc == 0, capsys.readouterr().err
    assert "equalized feature streams" in capsys.readouterr().out
    import json

    props = {p.key: p.value for p in onnx.load(str(out / "rdsrn_x4_int8.onnx")).metadata_props}
    meta = json.loads(props["rdsrn"])
    eq = meta["quantization"]["calibration"]["equalization"]
    assert set(eq["streams"]) == {"shallow", "trunk", "fusion", "hr"}
    assert meta["weights_sha256"] == file_sha256(small_weights)


def test_safetensors_source(tmp_path):
    torch.manual_seed(1)
    model = RDSRN(**{**SMALL, "recursions": 2, "csr": 0.25})
    with_meta = tmp_path / "a.safetensors"
    save_weights(with_meta, model, {"model": "rdsrn_x4", "config": dict(model.config)})
    src = load_source(str(with_meta))
    assert src.config == model.config and src.weights_sha256 == file_sha256(with_meta)
    # Without metadata the architecture is inferred from the tensor shapes.
    assert _infer_config(model.state_dict()) == dict(model.config)
    bare = tmp_path / "b.safetensors"
    save_weights(bare, model, {})
    src = load_source(str(bare))
    assert src.config == model.config and src.name == "b"
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(src.model(x), model(x))


def test_calibration_reaches_both_ends(data_dir, tmp_path):
    import numpy as np

    from rdsrn.export.calibration import make_calibration_set
    from rdsrn.data import write_image

    calib = make_calibration_set(data_dir / "train", 4, 5, size=(16, 16))
    assert calib.patches.shape[1:] == (16, 16, 3) and calib.patches.shape[0] >= 5
    assert calib.patches.min() == 0.0 and calib.patches.max() == 1.0
    assert "test" not in calib.info["source"]
    # A folder of flat grey images cannot reach 0 and 1: two pixels are set, and said so.
    write_image(tmp_path / "grey.png", np.full((80, 80, 3), 128, np.uint8))
    flat = make_calibration_set(tmp_path, 4, 3, size=(8, 8))
    assert flat.info["range_forced"] and flat.patches.min() == 0 and flat.patches.max() == 1


def test_tiled_runner_equals_whole_image_for_local_op():
    import numpy as np

    from rdsrn.export.parity import tiled

    def nearest_x2(x):  # a purely local "model": tiling must not change it
        return np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)

    x = np.random.default_rng(0).random((1, 23, 37, 3), dtype=np.float32)
    for size in [(8, 8), (10, 16), (30, 40)]:
        np.testing.assert_array_equal(tiled(nearest_x2, size)(x), nearest_x2(x))
