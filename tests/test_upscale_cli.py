"""`rdsrn upscale`: batches with bad files, globs, single-file output, video, refusing
to overwrite, atomic writes, exit status and summary line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from rdsrn.runtimes import cli
from rdsrn.runtimes.errors import UserError

from test_runtime_artifacts import onnx_x4, torch_model  # noqa: F401 (fixtures)


def upscale_main(argv: list[str]) -> int:
    """What `rdsrn upscale ARGS` does (rdsrn.cli.main's dispatch for this command)."""
    parser = argparse.ArgumentParser(prog="rdsrn upscale")
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cli.run(args)
    except UserError as exc:
        print(f"rdsrn upscale: error: {exc}")
        return 2


def _write(path: Path, img: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    """A folder with good images of several kinds and three bad files."""
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    _write(d / "a.png", (rng.random((12, 10, 3)) * 255).astype(np.uint8))
    _write(d / "b.jpg", (rng.random((9, 11, 3)) * 255).astype(np.uint8))
    _write(d / "c16.png", (rng.random((7, 6)) * 65535).astype(np.uint16))
    _write(d / "d_rgba.png", (rng.random((8, 8, 4)) * 255).astype(np.uint8))
    (d / "empty.png").write_bytes(b"")
    (d / "notes.png").write_text("this is not an image\n")
    jpg = cv2.imencode(".jpg", (rng.random((40, 40, 3)) * 255).astype(np.uint8))[1].tobytes()
    (d / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    return d


def test_batch_reports_bad_files_and_goes_on(inputs: Path, tmp_path: Path, onnx_x4: Path,
                                             capsys) -> None:
    out = tmp_path / "out"
    rc = upscale_main([str(inputs), "-o", str(out), "--model", str(onnx_x4)])
    captured = capsys.readouterr()
    assert rc == 1
    a = cv2.imread(str(out / "a_x4.png"), cv2.IMREAD_UNCHANGED)
    assert a.shape == (48, 40, 3) and a.dtype == np.uint8
    assert cv2.imread(str(out / "b_x4.jpg")).shape == (36, 44, 3)
    c = cv2.imread(str(out / "c16_x4.png"), cv2.IMREAD_UNCHANGED)
    assert c.shape == (28, 24) and c.dtype == np.uint16
    assert cv2.imread(str(out / "d_rgba_x4.png"), cv2.IMREAD_UNCHANGED).shape == (32, 32, 4)
    for bad in ("empty", "notes", "trunc"):
        assert bad in captured.err
        assert not list(out.glob(f"{bad}*"))
    assert "upscaled 4 of 7 files x4" in captured.out.splitlines()[-1]
    assert "3 failed" in captured.out.splitlines()[-1]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "a_x4.png").stat().st_mode & 0o777 == 0o666 & ~umask  # like any new file


def test_refuses_to_overwrite(tmp_path: Path, onnx_x4: Path, capsys) -> None:
    src = _write(tmp_path / "a.png", np.full((6, 5, 3), 90, np.uint8))
    out = tmp_path / "out"
    assert upscale_main([str(src), "-o", str(out), "--model", str(onnx_x4)]) == 0
    target = out / "a_x4.png"
    before = target.read_bytes()
    target.write_bytes(b"keep me")
    rc = upscale_main([str(src), "-o", str(out), "--model", str(onnx_x4)])
    assert rc == 2 and "--force" in capsys.readouterr().out
    assert target.read_bytes() == b"keep me"
    assert upscale_main([str(src), "-o", str(out), "--model", str(onnx_x4), "--force"]) == 0
    assert target.read_bytes() == before
    # an input is never overwritten, not even with --force
    original = src.read_bytes()
    rc = upscale_main([str(src), "-o", str(src), "--model", str(onnx_x4), "--force"])
    assert rc == 2 and src.read_bytes() == original


def test_single_file_output_and_glob(tmp_path: Path, onnx_x4: Path) -> None:
    for name in ("x1.png", "x2.png", "y.png"):
        _write(tmp_path / name, np.full((4, 3, 3), 50, np.uint8))
    dst = tmp_path / "res" / "big.png"
    assert upscale_main([str(tmp_path / "x1.png"), "-o", str(dst), "--model", str(onnx_x4)]) == 0
    assert cv2.imread(str(dst)).shape == (16, 12, 3)
    out = tmp_path / "globbed"
    assert upscale_main([str(tmp_path / "x*.png"), "-o", str(out), "--model", str(onnx_x4),
                         "--tile", "2", "--overlap", "0", "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x1_x4.png", "x2_x4.png"]


def test_missing_inputs_and_scale_mismatch(tmp_path: Path, onnx_x4: Path, capsys) -> None:
    src = _write(tmp_path / "a.png", np.full((4, 4, 3), 9, np.uint8))
    rc = upscale_main([str(src), str(tmp_path / "nope.png"), "-o", str(tmp_path / "o"),
                       "--model", str(onnx_x4)])
    assert rc == 1 and "nope.png" in capsys.readouterr().err
    assert (tmp_path / "o" / "a_x4.png").is_file()
    assert upscale_main([str(src), "-o", str(tmp_path / "o2"), "--model", str(onnx_x4),
                         "--scale", "2"]) == 2
    assert "x4 model, not x2" in capsys.readouterr().out
    assert upscale_main([str(tmp_path / "zzz*.png"), "-o", str(tmp_path / "o3"),
                         "--model", str(onnx_x4)]) == 2


def test_video(tmp_path: Path, onnx_x4: Path) -> None:
    src = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 10, (24, 16))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((16, 24, 3), 40 * i, np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert upscale_main([str(src), "-o", str(out), "--model", str(onnx_x4)]) == 0
    cap = cv2.VideoCapture(str(out / "clip_x4.mp4"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 5 and frames[0].shape == (64, 96, 3)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    rc = upscale_main([str(tmp_path / "broken.mp4"), "-o", str(tmp_path / "o2"),
                       "--model", str(onnx_x4)])
    assert rc == 1


def test_default_model_is_the_bundled_one(tmp_path: Path, onnx_x4: Path, monkeypatch,
                                          capsys) -> None:
    import rdsrn.runtimes.bundled as bundled

    monkeypatch.setattr(bundled, "MODELS_DIR", tmp_path / "models")
    (tmp_path / "models").mkdir()
    src = _write(tmp_path / "a.png", np.full((4, 4, 3), 9, np.uint8))
    assert upscale_main([str(src), "-o", str(tmp_path / "o")]) == 2
    assert "no bundled x4 model" in capsys.readouterr().out
    (tmp_path / "models" / "rdsrn_x4_fp32.onnx").write_bytes(onnx_x4.read_bytes())
    assert upscale_main([str(src), "-o", str(tmp_path / "o")]) == 0
    assert "rdsrn_x4_fp32.onnx" in capsys.readouterr().out.splitlines()[-1]


def test_rdsrn_cli_dispatches_upscale(tmp_path: Path, onnx_x4: Path) -> None:
    """The real entry point: `rdsrn upscale` (all subcommand modules must import)."""
    from rdsrn.cli import main

    src = _write(tmp_path / "a.png", np.full((4, 4, 3), 9, np.uint8))
    assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "--model", str(onnx_x4)]) == 0
    assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "--model", str(onnx_x4)]) == 2


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_scale_picks_the_bundled_model_of_that_scale(tmp_path: Path, scale: int) -> None:
    """`rdsrn upscale --scale N` with no --model uses the real bundled xN file."""
    from rdsrn.runtimes.bundled import default_model_path

    path = default_model_path(scale)
    assert path.name.startswith(f"rdsrn_x{scale}_")
    src = _write(tmp_path / "a.png", np.full((5, 7, 3), 90, np.uint8))
    assert upscale_main([str(src), "-o", str(tmp_path / "o"), "--scale", str(scale)]) == 0
    out = next((tmp_path / "o").iterdir())
    assert cv2.imread(str(out)).shape == (5 * scale, 7 * scale, 3)
