"""The aarch64 end-to-end script (benchmarks/qemu_aarch64_wheel.sh) without qemu: shell
syntax, argument handling (all checked before anything is installed or downloaded) and
the image helpers of benchmarks/qemu_check.py. The emulated run itself is not run here."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rdsrn.benchmarks import qemu_check

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "qemu_aarch64_wheel.sh"
SHELL_FILES = [SCRIPT, REPO / "benchmarks" / "qemu_aarch64_setup.sh",
               REPO / "benchmarks" / "qemu_aarch64.sh", REPO / "benchmarks" / "int8_paths_setup.sh"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "RDSRN_QEMU_ROOT": "/tmp/rdsrn-test-never-used", **(env or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=full_env, timeout=60)


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "rdsrn-0.1.0-py3-none-any.whl"
    path.write_bytes(b"PK")  # only its name and existence are checked before set-up
    return path


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: p.name)
def test_shell_syntax(path: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_help() -> None:
    proc = run_script("--help")
    assert proc.returncode == 0
    assert "QEMU_CPU=cortex-a76" in proc.stdout and "--dry-run" in proc.stdout
    assert "set -euo" not in proc.stdout


def test_dry_run_prints_settings(wheel: Path, tmp_path: Path) -> None:
    proc = run_script("--dry-run", "--size", "32x24", "--models", "rdsrn_x4_int8.tflite",
                      "--no-bench", str(wheel))
    assert proc.returncode == 0, proc.stderr
    settings = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert settings["wheel"] == str(wheel)
    assert settings["size"] == "32x24"
    assert settings["models"] == "rdsrn_x4_int8.tflite"
    assert settings["bench"] == "no"
    assert settings["litert"] == "2.1.6"
    assert settings["cpuinfo"] == "cortex-a76"
    assert not Path("/tmp/rdsrn-test-never-used").exists()


@pytest.mark.parametrize("args, message", [
    ((), "missing the wheel"),
    (("--bogus",), "unknown option --bogus"),
    (("nowhere/rdsrn-0.1.0-py3-none-any.whl",), "no such file"),
    (("--size", "64", "WHEEL"), "--size must look like 64x48"),
    (("--size", "0x48", "WHEEL"), "--size must look like 64x48"),
    (("--models", "rdsrn_x4_int8.tflite,../x.onnx", "WHEEL"), "not a bundled file name"),
    (("--image", "/no/such.png", "WHEEL"), "/no/such.png: no such file"),
    (("WHEEL", "WHEEL"), "one wheel only"),
    (("--size",), "--size needs WxH"),
])
def test_bad_arguments(args: tuple[str, ...], message: str, wheel: Path) -> None:
    proc = run_script(*(str(wheel) if a == "WHEEL" else a for a in args))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rejects_non_rdsrn_wheel(tmp_path: Path) -> None:
    other = tmp_path / "numpy-2.0-cp311-cp311-linux_x86_64.whl"
    other.write_bytes(b"PK")
    proc = run_script(str(other))
    assert proc.returncode == 2 and "not an rdsrn pure-Python wheel" in proc.stderr


@pytest.mark.parametrize("root, message", [("relative/dir", "absolute path"),
                                           (str(REPO / "tmp-qemu"), "outside the repository")])
def test_rejects_bad_work_root(root: str, message: str, wheel: Path) -> None:
    proc = run_script("--dry-run", str(wheel), env={"RDSRN_QEMU_ROOT": root})
    assert proc.returncode == 2 and message in proc.stderr


def test_synthetic_input_is_deterministic() -> None:
    a = qemu_check.synthetic_lr(64, 48, seed=0)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, qemu_check.synthetic_lr(64, 48, seed=0))
    assert not np.array_equal(a, qemu_check.synthetic_lr(64, 48, seed=1))
    assert a.min() < 30 and a.max() > 225  # uses the range, not a flat image
    with pytest.raises(ValueError):
        qemu_check.synthetic_lr(0, 48)


def test_compare_images(tmp_path: Path) -> None:
    import cv2

    img = qemu_check.synthetic_lr(16, 12)
    paths = {name: tmp_path / f"{name}.png" for name in ("a", "b", "c", "d")}
    cv2.imwrite(str(paths["a"]), img)
    cv2.imwrite(str(paths["b"]), img, [cv2.IMWRITE_PNG_COMPRESSION, 0])  # other bytes
    changed = img.copy()
    changed[3, 4, 1] = changed[3, 4, 1] ^ 0x07
    cv2.imwrite(str(paths["c"]), changed)
    cv2.imwrite(str(paths["d"]), img[:, :8])

    same = qemu_check.compare_images(paths["a"], paths["b"])
    assert same["bit_exact"] and same["max_abs_diff"] == 0 and not same["same_bytes"]
    diff = qemu_check.compare_images(paths["a"], paths["c"])
    assert not diff["bit_exact"] and diff["diff_pixels"] == 1
    assert diff["max_abs_diff"] == abs(int(img[3, 4, 1]) - int(changed[3, 4, 1]))
    shape = qemu_check.compare_images(paths["a"], paths["d"])
    assert not shape["bit_exact"] and shape["max_abs_diff"] is None
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        qemu_check.compare_images(paths["a"], tmp_path / "bad.png")


def test_cli_make_input_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "lr.png"
    assert qemu_check.main(["make-input", str(out), "20x10", "--seed", "3"]) == 0
    assert qemu_check.main(["make-input", str(out), "20x10"]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err
    assert qemu_check.main(["make-input", str(tmp_path / "x.png"), "20by10"]) == 2
    assert qemu_check.main(["compare", str(out), str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bit_exact"] and result["same_bytes"] and result["shape_a"] == [10, 20, 3]
