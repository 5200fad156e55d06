"""`rdsrn eval`: bad input (issue 14) and artifacts evaluated without torch (issue 13)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rdsrn.cli import build_parser, main as cli_main
from rdsrn.data import read_image, write_image
from test_bad_input_training import huge_png

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "runtimes" / "models"

# Runs `rdsrn` with torch & co. unimportable (as in an install without the train/export
# extras), then fails if any of them got imported anyway.
TORCH_FREE = textwrap.dedent("""
    import importlib.abc, sys
    BLOCKED = ("torch", "tensorflow", "tf_keras", "safetensors", "onnx", "onnxsim",
               "yaml", "matplotlib")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    from rdsrn.cli import main
    rc = main(sys.argv[1:])
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    sys.exit(rc)
""")


def run_torch_free(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "torch_free.py"
    script.write_text(TORCH_FREE)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=600)


@pytest.fixture(scope="module")
def crops(set5_dir, tmp_path_factory) -> Path:
    """Three 96x96 HR crops of Set5 images: the model paths run in seconds on 2 cores."""
    d = tmp_path_factory.mktemp("crops")
    for name in ("baby.png", "bird.png", "butterfly.png"):
        write_image(d / name, read_image(set5_dir / name)[:96, :96].copy())
    return d


def one_line_error(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("rdsrn eval: error: ") and "Traceback" not in text
    return lines[0]


# ---------------------------------------------------------------- without torch
def test_artifacts_and_bicubic_evaluate_without_torch(tmp_path, set5_dir, crops):
    onnx_file = MODELS / "rdsrn_x4_fp32.onnx"
    if not onnx_file.is_file():
        pytest.skip("no bundled rdsrn_x4_fp32.onnx")
    out = tmp_path / "r.json"
    r = run_torch_free(tmp_path, "eval", "--model", str(onnx_file), "--data", str(crops),
                       "--json", str(out), "-q")
    assert r.returncode == 0, r.stderr
    onnx_row = json.loads(out.read_text())[0]
    assert onnx_row["images"] == 3 and onnx_row["psnr"] > 25

    # a bundled model by name (no path), run by whichever runtime is installed
    r = run_torch_free(tmp_path, "eval", "--model", "rdsrn_x4_int8", "--data",
                       str(crops), "--json", str(out), "-q")
    assert r.returncode == 0, r.stderr
    int8_row = json.loads(out.read_text())[0]
    assert int8_row["images"] == 3 and abs(onnx_row["psnr"] - int8_row["psnr"]) < 1.0
    assert int8_row["psnr"] != onnx_row["psnr"]  # really another file
    # ... and by its file name
    r = run_torch_free(tmp_path, "eval", "--model", "rdsrn_x4_fp32.onnx", "--data",
                       str(crops), "--json", str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())[0]["psnr"] == onnx_row["psnr"]

    # the numpy MATLAB-bicubic path reproduces the literature figure without torch
    r = run_torch_free(tmp_path, "eval", "--model", "bicubic", "--scale", "4", "--data",
                       str(set5_dir), "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())[0]["psnr"] == pytest.approx(28.42, abs=0.005)


@pytest.mark.parametrize("model", ["rdsrn_x4", "weights.safetensors"])
def test_torch_models_without_torch_name_the_extra(tmp_path, model):
    r = run_torch_free(tmp_path, "eval", "--model", model, "--data", "Set5")
    assert r.returncode == 2
    msg = one_line_error(r.stderr)
    assert "pip install 'rdsrn[train]'" in msg and "rdsrn_x4_int8" in msg


@pytest.mark.slow
def test_onnx_artifact_matches_the_torch_path_to_1e_3_db(tmp_path, crops):
    """Same weights, two paths: PyTorch (rdsrn_x4) and the FP32 ONNX through the
    torch-free runtime layer give the same PSNR (the file's max |diff| is ~1e-6; on the
    full Set5 and Set14 too, see benchmarks/results/eval_torch_free.md)."""
    pytest.importorskip("torch")
    onnx_file = MODELS / "rdsrn_x4_fp32.onnx"
    if not onnx_file.is_file():
        pytest.skip("no bundled rdsrn_x4_fp32.onnx")
    rows = {}
    for model in ("rdsrn_x4", str(onnx_file)):
        out = tmp_path / "r.json"
        assert cli_main(["eval", "--model", model, "--data", str(crops), "-q",
                         "--json", str(out)]) == 0
        rows[model] = json.loads(out.read_text())[0]
    a, b = rows.values()
    assert abs(a["psnr"] - b["psnr"]) < 1e-3 and abs(a["ssim"] - b["ssim"]) < 1e-5


# ---------------------------------------------------------------- unreadable images
@pytest.fixture()
def bad_folder(tmp_path, set5_dir) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    write_image(d / "a_good.png", read_image(set5_dir / "bird.png")[:60, :60])
    huge_png(d / "b_huge.png")  # OpenCV asserts on the claimed size
    good = (set5_dir / "baby.png").read_bytes()
    (d / "c_cut.png").write_bytes(good[: len(good) // 3])  # truncated
    (d / "d_dir.png").mkdir()  # a folder with an image name
    return d


def test_skip_bad_skips_every_unreadable_image(bad_folder, capsys, tmp_path):
    out = tmp_path / "r.json"
    assert cli_main(["eval", "--model", "bicubic", "--scale", "2", "--data", str(bad_folder),
                     "--skip-bad", "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert "b_huge.png" in err and "c_cut.png" in err and "Traceback" not in err
    assert json.loads(out.read_text())[0]["images"] == 1


def test_opencv_assertion_without_skip_bad_is_one_line(bad_folder, capsys):
    (bad_folder / "c_cut.png").unlink()
    assert cli_main(["eval", "--model", "bicubic", "--scale", "2", "--data",
                     str(bad_folder)]) == 2
    assert "b_huge.png" in one_line_error(capsys.readouterr().err)


# ---------------------------------------------------------------- outputs
@pytest.mark.parametrize("kind", ["parent_is_file", "no_folder", "is_folder"])
def test_bad_json_target_fails_before_the_model_loads(tmp_path, set5_dir, capsys, kind):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = {"parent_is_file": blocker / "r.json", "no_folder": tmp_path / "no" / "r.json",
              "is_folder": tmp_path}[kind]
    # the model does not exist: only the --json check may speak
    assert cli_main(["eval", "--model", "missing.onnx", "--data", str(set5_dir),
                     "--json", str(target)]) == 2
    msg = one_line_error(capsys.readouterr().err)
    assert "--json" in msg and "missing.onnx" not in msg


def test_json_over_the_model_file_is_refused(tmp_path, set5_dir, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    assert cli_main(["eval", "--model", str(model), "--data", str(set5_dir),
                     "--json", str(model)]) == 2
    assert "input file" in one_line_error(capsys.readouterr().err)
    assert model.read_bytes() == b"model"
    image = tmp_path / "hr" / "bird.png"
    image.parent.mkdir()
    image.write_bytes((set5_dir / "bird.png").read_bytes())
    assert cli_main(["eval", "--model", "bicubic", "--scale", "2", "--data",
                     str(image.parent), "--json", str(image)]) == 2
    assert "input file" in one_line_error(capsys.readouterr().err)
    assert image.read_bytes() == (set5_dir / "bird.png").read_bytes()


def test_disk_full_writing_json_is_one_line(tmp_path, set5_dir, capsys, monkeypatch):
    import rdsrn.data

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rdsrn.data, "write_bytes_atomic", full)
    assert cli_main(["eval", "--model", "bicubic", "--scale", "4", "--data", str(set5_dir),
                     "--json", str(tmp_path / "r.json")]) == 2
    assert "No space left on device" in one_line_error(capsys.readouterr().err)


# ---------------------------------------------------------------- progress, data
@pytest.mark.parametrize("tty, quiet, shown", [(True, False, True), (True, True, False),
                                               (False, False, False)])
def test_progress_on_stderr_only_on_a_terminal(set5_dir, capsys, monkeypatch, tty, quiet,
                                               shown):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    argv = ["eval", "--model", "bicubic", "--scale", "4", "--data", str(set5_dir)]
    assert cli_main(argv + (["-q"] if quiet else [])) == 0
    captured = capsys.readouterr()
    assert ("img" in captured.err) == shown
    assert "img" not in captured.out


def test_unknown_data_lists_where_it_looked_and_rdsrn_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RDSRN_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["eval", "--model", "bicubic", "--scale", "4", "--data", "Set5"]) == 2
    msg = one_line_error(capsys.readouterr().err)
    assert str(tmp_path / "Set5") in msg and str(tmp_path / "nowhere" / "test" / "Set5") in msg
    assert "RDSRN_DATA" in msg
    monkeypatch.delenv("RDSRN_DATA")
    assert cli_main(["eval", "--model", "bicubic", "--scale", "4", "--data", "Set9"]) == 2
    msg = one_line_error(capsys.readouterr().err)
    assert "RDSRN_DATA is not set" in msg and "known test sets" in msg


def test_help_documents_rdsrn_data(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--help"])
    assert "RDSRN_DATA" in capsys.readouterr().out


@pytest.mark.parametrize("error", ["cv2", "os", "memory"])
def test_skip_bad_covers_every_decoder_error_type(bad_folder, capsys, monkeypatch, error):
    """Whatever the decoder raises (an OpenCV assertion past the header check, an I/O
    error, an allocation failure) is skipped with --skip-bad, one line without it."""
    import cv2

    import rdsrn.evaluate as ev

    real = ev.read_image
    exc = {"cv2": cv2.error("OpenCV(5.0.0) x.cpp:79: error: (-215:Assertion failed) "
                            "pixels <= CV_IO_MAX_IMAGE_PIXELS in function 'f'"),
           "os": OSError(5, "Input/output error"), "memory": MemoryError()}[error]

    def flaky(path, *a, **k):
        if Path(path).name == "a_good.png":
            raise exc
        return real(path, *a, **k)

    monkeypatch.setattr(ev, "read_image", flaky)
    good = bad_folder / "z_good.png"
    write_image(good, read_image(bad_folder / "a_good.png"))
    assert cli_main(["eval", "--model", "bicubic", "--scale", "2", "--data", str(bad_folder),
                     "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "a_good.png" in err and "Traceback" not in err
    assert cli_main(["eval", "--model", "bicubic", "--scale", "2", "--data",
                     str(bad_folder)]) == 2
    msg = one_line_error(capsys.readouterr().err)
    assert "a_good.png" in msg
    if error == "cv2":
        assert "Assertion failed" in msg and "x.cpp" not in msg


def test_eval_without_model_names_the_choices(capsys):
    assert cli_main(["eval", "--data", "Set5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model is required" in err and "bicubic" in err
