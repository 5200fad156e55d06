"""The installable package: `python -m build` makes a wheel and an sdist that hold the
bundled models, weights and configs; the wheel, installed into fresh virtual environments
with one runtime each (no torch, no TensorFlow), runs the device side: `rdsrn upscale`,
`rdsrn bench` on bundled files, `Upscaler(NAME)`; the commands that need torch fail in
one line naming the pip extra.

The wheel is built once per session (from its sdist, as pip would); the venvs get the
wheel and numpy, OpenCV, tqdm and the one runtime with `--no-deps` from a wheelhouse that
`pip download` fills once per session (pip's cache makes that fast), at the versions of
this environment. The extras' dependency lists are checked from the wheel's METADATA.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.wheel

REPO = Path(__file__).resolve().parents[1]
# source folder -> import package (pyproject's package-dir mapping)
SOURCE_ROOTS = {"rdsrn": "rdsrn", "export": "rdsrn.export", "runtimes": "rdsrn.runtimes",
                "benchmarks": "rdsrn.benchmarks"}
# pip extra -> (distribution it installs, module, the bundled file it should pick)
RUNTIMES = {"onnx": ("onnxruntime", "onnxruntime", "rdsrn_x4_int8.onnx"),
            "litert": ("ai-edge-litert", "ai_edge_litert", "rdsrn_x4_int8.tflite")}
BASE_DISTS = ("numpy", "opencv-python-headless", "tqdm")
HEAVY = ("torch", "tensorflow", "tensorflow-cpu", "tf-keras", "keras", "onnx")


def _run(argv: list[str], cwd: Path, timeout: float = 600, env: dict | None = None
         ) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> dict[str, Path]:
    """{"wheel": ..., "sdist": ...} built from this checkout (sdist, then wheel from it)."""
    out = tmp_path_factory.mktemp("dist")
    p = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
              str(REPO)], cwd=out)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """The runtime side's wheels, at this environment's versions (one pip download)."""
    house = tmp_path_factory.mktemp("wheelhouse")
    pins = [f"{d}=={metadata.version(d)}" for d in BASE_DISTS]
    pins += [f"{d}=={metadata.version(d)}" for d, _, _ in RUNTIMES.values()]
    p = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
              ":all:", "--disable-pip-version-check", "-q", "-d", str(house), *pins],
             cwd=house)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    return house


@pytest.fixture(scope="module", params=sorted(RUNTIMES))
def venv(request, dist, wheelhouse, tmp_path_factory) -> dict:
    """A fresh venv with the wheel and one runtime; no torch, no TensorFlow."""
    extra = request.param
    dist_name, module, default_file = RUNTIMES[extra]
    root = tmp_path_factory.mktemp(f"venv_{extra}")
    p = _run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=root)
    assert p.returncode == 0, p.stderr
    py = root / "bin" / "python"
    p = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
              "--no-index", "--no-compile", "--disable-pip-version-check", "--find-links",
              str(wheelhouse), str(dist["wheel"]), *BASE_DISTS, dist_name], cwd=root)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    cwd = tmp_path_factory.mktemp(f"work_{extra}")  # neutral: no repo folder on sys.path
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "RDSRN_"))}
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {"extra": extra, "module": module, "default": default_file, "py": py,
            "rdsrn": root / "bin" / "rdsrn", "cwd": cwd, "env": env}


def _in(venv: dict, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return _run([str(a) for a in argv], cwd=venv["cwd"], timeout=timeout, env=venv["env"])


# ------------------------------------------------------------------ the built files


def _code_folders() -> set[str]:
    """Import names of every source folder that holds Python code."""
    names = set()
    for folder, package in SOURCE_ROOTS.items():
        for py in (REPO / folder).rglob("*.py"):
            rel = py.parent.relative_to(REPO / folder)
            if "__pycache__" not in rel.parts:
                names.add(".".join([package, *rel.parts]))
    return names


def test_wheel_holds_every_package_and_the_bundled_files(dist) -> None:
    with zipfile.ZipFile(dist["wheel"]) as z:
        names = z.namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"rdsrn"}  # export / runtimes / benchmarks only as rdsrn.*
    packaged = {"/".join(n.split("/")[:-1]).replace("/", ".") for n in names
                if n.endswith(".py")}
    assert _code_folders() <= packaged, _code_folders() - packaged
    for folder, pattern, prefix in (("runtimes/models", "*.onnx", "rdsrn/runtimes/models"),
                                    ("runtimes/models", "*.tflite", "rdsrn/runtimes/models"),
                                    ("rdsrn/weights", "rdsrn_x?.safetensors", "rdsrn/weights"),
                                    ("rdsrn/weights", "rdsrn_x?_anchor_qat.safetensors",
                                     "rdsrn/weights"),
                                    ("rdsrn/configs", "*.yaml", "rdsrn/configs")):
        files = sorted((REPO / folder).glob(pattern))
        assert files, f"nothing to ship in {folder}/{pattern}"
        for f in files:
            assert f"{prefix}/{f.name}" in names, f"{f.name} missing from the wheel"
    # training intermediates are not shipped: the wheel stays small
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if n.endswith(".safetensors"))
    assert shipped == [f"rdsrn_x{s}{t}.safetensors" for s in (2, 3, 4)
                       for t in ("", "_anchor_qat")], shipped
    assert Path(dist["wheel"]).stat().st_size < 45e6
    with tarfile.open(dist["sdist"]) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
    assert {"runtimes/models/rdsrn_x4_int8.tflite", "rdsrn/weights/rdsrn_x4.safetensors",
            "pyproject.toml", "README.md"} <= members


def test_runtime_extras_pull_no_torch_or_tensorflow(dist) -> None:
    with zipfile.ZipFile(dist["wheel"]) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta_name).decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", text, re.M)

    def deps(extra: str | None) -> set[str]:
        out = set()
        for req in requires:
            spec, _, marker = req.partition(";")
            if (extra is None and not marker) or f'extra == "{extra}"' in marker:
                out.add(re.split(r"[ <>=!\[(]", spec.strip(), maxsplit=1)[0].lower())
        return out

    base, onnx, litert = deps(None), deps("onnx"), deps("litert")
    assert {"numpy", "opencv-python-headless"} <= base
    assert onnx == {"onnxruntime"} and litert == {"ai-edge-litert"}
    assert not (base | onnx | litert) & set(HEAVY)
    assert "torch" in deps("train")


# ------------------------------------------------------------- the torch-free venvs


def test_venv_has_no_torch_and_no_top_level_repo_folders(venv) -> None:
    code = ("import importlib.util as u, json; import rdsrn.export, rdsrn.benchmarks.cli, "
            "rdsrn.runtimes; print(json.dumps({m: u.find_spec(m) is not None for m in "
            "('torch', 'tensorflow', 'export', 'benchmarks', 'runtimes', 'rdsrn', "
            f"'{venv['module']}')}}))")
    p = _in(venv, venv["py"], "-c", code)
    assert p.returncode == 0, p.stderr
    found = json.loads(p.stdout.strip().splitlines()[-1])
    assert found == {"torch": False, "tensorflow": False, "export": False,
                     "benchmarks": False, "runtimes": False, "rdsrn": True,
                     venv["module"]: True}
    p = _in(venv, venv["py"], "-c", "import importlib.metadata as m, json; "
            "print(json.dumps([d.metadata['Name'].lower() for d in m.distributions()]))")
    names = set(json.loads(p.stdout.strip().splitlines()[-1]))
    assert "rdsrn" in names and not names & set(HEAVY)


def test_upscale_with_the_default_model(venv) -> None:
    import cv2

    img = venv["cwd"] / "small.png"
    cv2.imwrite(str(img), np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8))
    p = _in(venv, venv["rdsrn"], "upscale", img.name, "-o", "up")
    assert p.returncode == 0, p.stderr
    assert venv["default"] in p.stdout + p.stderr  # the fastest bundled file it can run
    out = cv2.imread(str(venv["cwd"] / "up" / "small_x4.png"))
    assert out is not None and out.shape == (48, 64, 3)


def test_upscaler_accepts_a_bundled_name(venv) -> None:
    code = ("import numpy as np; from rdsrn.runtimes import Upscaler; "
            f"up = Upscaler('{venv['default']}', threads=1); "
            "print(up.model_path.name, up.upscale(np.zeros((8, 9, 3), np.uint8)).shape)")
    p = _in(venv, venv["py"], "-c", code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[-4:] == [venv["default"], "(32,", "36,", "3)"]


def test_bench_a_bundled_file_writes_to_the_current_folder(venv) -> None:
    p = _in(venv, venv["rdsrn"], "bench", "--artifact", venv["default"], "--input", "16x12",
            "--threads", "1", "--runs", "3", "--warmup", "0", "--name", "dev")
    assert p.returncode == 0, p.stderr
    (folder,) = (venv["cwd"] / "rdsrn-bench").iterdir()
    doc = json.loads((folder / "dev.json").read_text())
    assert {(folder / f"dev.{e}").is_file() for e in ("csv", "md")} == {True}
    (row,) = doc["rows"]
    assert row["status"] == "ok" and row["artifact"].endswith(venv["default"])
    assert row["p50_ms"] <= row["p90_ms"] and row["runs"] >= 3
    assert row["first_inference_ms"] > 0 and row["peak_rss_mb"] > 0
    assert "other_cpu_during" in row and row["precision"] == "int8"
    assert doc["machine"]["cores"] >= 1 and "torch" not in doc["machine"]["packages"]
    assert "| model |" in (folder / "dev.md").read_text()


def test_bench_without_torch_defaults_to_the_device_suite(venv) -> None:
    p = _in(venv, venv["rdsrn"], "bench", "--input", "16x12", "--threads", "1", "--runs",
            "2", "--warmup", "0", "--no-write")
    assert p.returncode == 0, p.stderr
    assert "--suite device" in p.stderr
    assert venv["default"] in p.stdout and "bicubic" in p.stdout
    assert "Traceback" not in p.stderr


def test_torch_commands_fail_in_one_line_naming_the_extra(venv) -> None:
    for argv, extra in ((["export", "--model", "rdsrn_x4"], "export"),
                        (["train", "--config", "rdsrn_x4"], "train"),
                        (["bench", "--models", "rdsrn_x4", "--no-write"], "train")):
        p = _in(venv, venv["rdsrn"], *argv)
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pip install 'rdsrn[{extra}]'" in lines[0], lines
    # a suite with PyTorch rows: those rows fail in one line each, the rest is measured
    p = _in(venv, venv["rdsrn"], "bench", "--suite", "quick", "--input", "16x12", "--runs",
            "1", "--warmup", "0", "--no-write")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "needs PyTorch: pip install 'rdsrn[train]'" in p.stdout
    assert "pip install 'rdsrn[export]'" in p.stdout  # the ONNX row would need an export
    assert "2 of 3 row(s) failed" in p.stderr


# ------------------------------------------------- default model per runtime (main env)


def test_bundled_int8_files_pass_the_export_gate() -> None:
    """The default may be an INT8 file only because every bundled INT8 file is within the
    exporter's Set5 gate (0.3 dB, sign-agnostic here)."""
    from rdsrn.benchmarks.cli import _embedded_metadata
    from rdsrn.runtimes.bundled import MODELS_DIR

    int8 = sorted(MODELS_DIR.glob("*_int8.*"))
    assert int8
    for path in int8:
        meta = _embedded_metadata(path)
        assert meta["precision"] == "int8"
        assert abs(float(meta["delta_psnr"])) <= 0.3, (path.name, meta["delta_psnr"])


@pytest.mark.parametrize("scale, installed, kp, expected", [
    (4, {"onnx"}, "x86-vnni", "rdsrn_x4_int8.onnx"),
    (4, {"tflite"}, "x86-avx2", "rdsrn_x4_int8.tflite"),
    (4, {"onnx", "tflite"}, "x86-vnni", "rdsrn_x4_int8.tflite"),
    (4, {"onnx", "tflite"}, "x86-avx2", "rdsrn_x4_int8.onnx"),
    (3, {"onnx"}, "arm64-dotprod", "rdsrn_x3_int8.onnx"),
    (3, {"onnx", "tflite"}, "arm64-dotprod", "rdsrn_x3_int8.tflite"),
    (2, {"onnx"}, "x86-amx", "rdsrn_x2_int8.onnx"),
    (2, {"onnx", "tflite"}, "x86-amx", "rdsrn_x2_int8.tflite"),
    (2, {"onnx", "tflite"}, "x86-avx2", "rdsrn_x2_int8.onnx")])
def test_default_model_is_the_fastest_bundled_file(monkeypatch, scale, installed, kp,
                                                    expected) -> None:
    import rdsrn.runtimes.bundled as bundled

    monkeypatch.setattr(bundled, "runtime_available", lambda fmt: fmt in installed)
    monkeypatch.setenv("RDSRN_KERNEL_PATH", kp)
    assert bundled.default_model_path(scale).name == expected
    assert bundled.resolve_model(f"rdsrn_x{scale}").name == expected


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                    reason="openvino not installed (pip install 'rdsrn[openvino]')")
def test_openvino_extra_runs_an_exported_ir_without_torch(dist, data_dir,
                                                          tmp_path_factory) -> None:
    """The wheel with only the openvino extra (no torch, no onnxruntime, no LiteRT) runs
    an OpenVINO IR exported here through `rdsrn upscale`."""
    import cv2

    from rdsrn.export.openvino_export import export_openvino

    from export_fixtures import crop_inputs, small_source

    ir = tmp_path_factory.mktemp("ir") / "small_fp32.xml"
    export_openvino(small_source(), ir, "fp32", parity_inputs=crop_inputs(data_dir, [(40, 40)]),
                    log=lambda s: None)
    house = tmp_path_factory.mktemp("wheelhouse_ov")
    pins = [f"{d}=={metadata.version(d)}" for d in (*BASE_DISTS, "openvino",
                                                    "openvino-telemetry")]
    p = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
              "--disable-pip-version-check", "-q", "-d", str(house), *pins], cwd=house)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    root = tmp_path_factory.mktemp("venv_openvino")
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=root).returncode == 0
    p = _run([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install",
              "-q", "--no-deps", "--no-index", "--no-compile", "--disable-pip-version-check",
              "--find-links", str(house), str(dist["wheel"]), *BASE_DISTS, "openvino",
              "openvino-telemetry"], cwd=root)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    cwd = tmp_path_factory.mktemp("work_openvino")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "RDSRN_"))}
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cv2.imwrite(str(cwd / "small.png"),
                np.random.default_rng(0).integers(0, 256, (12, 16, 3), np.uint8))
    p = _run([str(root / "bin" / "rdsrn"), "upscale", "small.png", "-o", "up", "--model",
              str(ir)], cwd=cwd, env=env)
    assert p.returncode == 0, p.stderr
    out = cv2.imread(str(cwd / "up" / "small_x4.png"))
    assert out is not None and out.shape == (48, 64, 3)
    p = _run([str(root / "bin" / "python"), "-c", "import importlib.util as u; "
              "print([u.find_spec(m) is None for m in ('torch', 'onnxruntime', "
              "'ai_edge_litert', 'tensorflow')])"], cwd=cwd, env=env)
    assert p.stdout.strip().endswith("[True, True, True, True]"), p.stdout + p.stderr
