"""benchmarks/device_bench.py: the standalone device part (machine facts, peak, stats,
runners, JSON CLI). Never asserts wall-clock figures."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rdsrn.benchmarks import device_bench as db

from test_runtime_artifacts import onnx_x4, tiny_tflite, torch_model  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
cpu MHz\t\t: 2596.150
flags\t\t: fpu sse sse2 avx fma avx2 avx512f avx512bw avx512_bf16 avx512_vnni hypervisor

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
cpu MHz\t\t: 2596.150
"""

PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

Revision\t: d04170
Serial\t\t: 0000000000000000
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""


def test_parse_cpuinfo_x86_and_pi():
    x86 = db.parse_cpuinfo(X86_CPUINFO)
    assert x86["model_name"] == "AMD EPYC" and x86["vendor"] == "AuthenticAMD"
    assert x86["family"] == 25 and x86["mhz"] == pytest.approx(2596.15)
    assert "avx512_vnni" in x86["flags"] and x86["board"] == ""
    pi = db.parse_cpuinfo(PI5_CPUINFO)
    assert "asimddp" in pi["flags"] and pi["cpu_parts"] == ["0xd0b"]
    assert pi["board"] == "Raspberry Pi 5 Model B Rev 1.0"


def _machine(text: str, arch: str, cores: int = 2, mhz: float = 2600.0) -> dict:
    info = db.parse_cpuinfo(text)
    return {"arch": arch, "flags": info["flags"], "vendor": info["vendor"],
            "cpu_family": info["family"], "cpu_parts": info["cpu_parts"], "cores": cores,
            "mhz": mhz, "mhz_source": "test"}


def test_peak_x86_avx512():
    m = _machine(X86_CPUINFO, "x86_64")
    assert db.peak_macs_per_cycle(m, "fp32")[0] == 32  # 2 FMA x 16 lanes
    assert db.peak_macs_per_cycle(m, "int8")[0] == 128  # 2 x 64 (vpdpbusd)
    assert db.peak_macs_per_cycle(m, "bf16")[0] == 64
    assert db.peak_macs_per_cycle(m, "fp16")[0] == 32  # no AVX512-FP16: fp32 path
    assert "Zen 4" in db.peak_macs_per_cycle(m, "fp32")[1]
    p = db.peak_gmacs(m, "int8", 2)
    assert p["gmacs"] == pytest.approx(128 * 2 * 2.6)
    assert "2600 MHz" in p["assumptions"] and "VNNI" in p["assumptions"]
    # more threads than cores do not add peak
    assert db.peak_gmacs(m, "fp32", 8)["gmacs"] == pytest.approx(32 * 2 * 2.6)


def test_peak_x86_avx2_only_and_no_clock():
    m = {"arch": "x86_64", "flags": ["avx2", "fma"], "cores": 4, "mhz": 3000.0}
    assert db.peak_macs_per_cycle(m, "fp32")[0] == 16
    assert db.peak_macs_per_cycle(m, "int8")[0] == 32
    assert db.peak_gmacs({**m, "mhz": None}, "fp32", 1)["gmacs"] is None


def test_peak_aarch64():
    pi = _machine(PI5_CPUINFO, "aarch64", cores=4, mhz=2400.0)
    assert db.peak_macs_per_cycle(pi, "fp32")[0] == 8  # 2 NEON pipes x 4 lanes
    assert db.peak_macs_per_cycle(pi, "int8")[0] == 32  # SDOT
    assert db.peak_macs_per_cycle(pi, "fp16")[0] == 16
    little = {**pi, "cpu_parts": ["0xd03"]}  # Cortex-A53: one pipe
    assert db.peak_macs_per_cycle(little, "fp32")[0] == 4
    no_dot = {**pi, "flags": ["fp", "asimd"]}
    assert db.peak_macs_per_cycle(no_dot, "int8")[0] == 16


def test_percentile_matches_numpy_and_summary():
    vals = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.5]
    s = sorted(vals)
    for q in (0, 50, 90, 99, 100):
        assert db.percentile(s, q) == pytest.approx(np.percentile(vals, q))
    out = db.summarize(vals)
    assert out["runs"] == 7 and out["p50_ms"] == 4.0 and out["min_ms"] == 1.0
    assert out["fps"] == pytest.approx(250.0)
    assert out["std_ms"] == pytest.approx(np.std(vals, ddof=1))


def test_measure_counts_runs():
    calls = []
    out = db.measure(lambda: calls.append(1), warmup=2, runs=5)
    assert len(calls) == 1 + 2 + 5 and out["runs"] == 5 and len(out["times_ms"]) == 5
    assert out["warmup_runs"] == 2 and out["first_inference_ms"] >= 0


def test_measure_time_budget_keeps_min_runs():
    calls = []
    out = db.measure(lambda: calls.append(1), warmup=1, runs=1000, max_time_s=0.0,
                     min_runs=3)
    assert out["runs"] == 3


def test_delegation_summary_finds_ops_outside_the_delegate():
    # t0 -> CONV(0) -> t1 -> SPLIT_V(1) -> t2, t3 -> ADD(2) -> t4 ; two partitions
    # around the split: {CONV}, {ADD}; SPLIT_V stays on the CPU kernels.
    nodes = [
        {"index": 0, "op_name": "CONV_2D", "inputs": [0, 10, 11], "outputs": [1]},
        {"index": 1, "op_name": "SPLIT_V", "inputs": [1, 12, 13], "outputs": [2, 3]},
        {"index": 2, "op_name": "ADD", "inputs": [2, 3], "outputs": [4]},
        {"index": 3, "op_name": "DELEGATE", "inputs": [0], "outputs": [1]},
        {"index": 4, "op_name": "DELEGATE", "inputs": [2, 3], "outputs": [4]},
    ]
    out = db.delegation_summary(nodes)
    assert out["partitions"] == 2 and out["nodes"] == 3 and out["delegated"] == 2
    assert out["outside"] == {"SPLIT_V": 1}
    assert out["inside"] == {"ADD": 1, "CONV_2D": 1}


def test_parse_size():
    assert db.parse_size("320x180") == (180, 320)
    assert db.format_size((180, 320)) == "320x180"
    for bad in ("320", "0x5", "axb"):
        with pytest.raises(ValueError):
            db.parse_size(bad)


def test_missing_model_is_an_error_row():
    row = db.bench_model("/nonexistent/model.tflite", 1, (8, 8), warmup=0, runs=1)
    assert row["status"] == "error" and "no such model file" in row["error"]
    assert "\n" not in row["error"]
    row = db.bench_model(__file__, 1, (8, 8), warmup=0, runs=1)
    assert row["status"] == "error" and "unknown model type" in row["error"]


def test_bicubic_row_and_throughput():
    m = {"arch": "x86_64", "flags": ["avx512f"], "cores": 2, "mhz": 2000.0}
    row = db.bench_model("bicubic", 1, (12, 16), warmup=0, runs=2, scale=4,
                         macs=10**9, precision="fp32", machine=m)
    assert row["status"] == "ok", row
    assert row["input"] == "16x12" and row["output"] == "64x48"
    assert row["runs"] == 2 and row["peak_rss_mb"] > 0
    assert row["gmacs_per_s"] == pytest.approx(1.0 / (row["p50_ms"] / 1e3))
    assert row["peak_fraction"] == pytest.approx(row["gmacs_per_s"] / (32 * 2.0))


def test_tflite_rows(tiny_tflite):
    fp32 = db.bench_model(str(tiny_tflite["fp32"]), 1, (10, 12), warmup=1, runs=2)
    assert fp32["status"] == "ok", fp32
    assert fp32["input"] == "12x10" and fp32["output"] == "24x20"  # tiny model is x2
    assert fp32["io_dtype"] == "float32" and fp32["size_mb"] > 0
    deleg = fp32["delegation"]  # the tiny graph (CONV_2D, ADD, DEPTH_TO_SPACE) is all XNNPACK
    assert deleg["partitions"] == 1 and deleg["outside"] == {}
    assert deleg["delegated"] == deleg["nodes"] >= 2
    i8 = db.bench_model(str(tiny_tflite["int8_fixed"]), 2, (10, 12), warmup=0, runs=2)
    assert i8["status"] == "ok" and i8["io_dtype"] == "uint8"
    assert i8["input"] == "16x16" and "fixed input" in i8["notes"]
    none = db.bench_model(str(tiny_tflite["fp32"]), 1, (8, 8), runs=1, delegate="none")
    assert none["status"] == "ok" and none["delegate"] == "none"


def test_onnx_row(onnx_x4):
    row = db.bench_model(str(onnx_x4), 1, (8, 12), warmup=0, runs=2)
    assert row["status"] == "ok", row
    assert row["input"] == "12x8" and row["output"] == "48x32"


def test_cli_json_and_exit_code(tmp_path):
    out = tmp_path / "r.json"
    rc = db.main(["bicubic", "--input", "8x8", "--runs", "2", "--json", str(out)])
    doc = json.loads(out.read_text())
    assert rc == 0 and doc["row"]["status"] == "ok" and doc["schema"] == db.SCHEMA_VERSION
    assert {"cpu", "flags", "cores", "mhz", "os", "packages"} <= set(doc["machine"])
    rc = db.main(["missing.onnx", "--input", "8x8", "--json", str(out)])
    assert rc == 1 and json.loads(out.read_text())["row"]["status"] == "error"


def test_standalone_imports_only_stdlib_and_numpy():
    """The file is copied alone to a Pi: top-level imports are stdlib + numpy, and
    importing it loads no torch / rdsrn / runtimes."""
    tree = ast.parse((REPO / "benchmarks" / "device_bench.py").read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top.add(node.module.split(".")[0])
    assert top <= {"__future__", "argparse", "json", "os", "platform", "re", "statistics",
                   "sys", "time", "typing", "numpy"}, top
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import device_bench; "
            "bad = [m for m in ('torch', 'rdsrn', 'runtimes', 'tensorflow', 'onnxruntime') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_tflite_per_op_profile(tiny_tflite):
    from rdsrn.benchmarks.tflite_profile import markdown, one_op_models, profile

    path = tiny_tflite["int8"]
    models = one_op_models(path.read_bytes(), (8, 12))
    ops = [m["op"] for m in models]
    assert "CONV_2D" in ops and "DEPTH_TO_SPACE" in ops
    prof = profile(str(path), (8, 12), threads=1, runs=2, warmup=0)
    assert [o["op"] for o in prof["ops"]] == ops
    assert all(o.get("ms") is not None for o in prof["ops"]), prof["ops"]
    assert set(prof["by_type"]) == set(ops)
    assert sum(t["share"] for t in prof["by_type"].values()) == pytest.approx(1.0)
    assert prof["delegation"]["nodes"] == len(ops)
    assert "| CONV_2D |" in markdown(prof)
