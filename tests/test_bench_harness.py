"""The host harness, reports and `rdsrn bench` CLI on tiny inputs with few runs.
Never asserts timings — only structure, error handling and arithmetic."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rdsrn.benchmarks import harness, report
from rdsrn.benchmarks.harness import Case, Options
from rdsrn.benchmarks.paper_tables import paper_tables_markdown
from rdsrn.benchmarks.suites import SUITES, suite_cases
from rdsrn.macs import count_macs
from rdsrn.models import create_model
from rdsrn.runtimes.errors import UserError

from test_runtime_artifacts import onnx_x4, tiny_tflite, torch_model  # noqa: F401 (fixtures)

TINY = (12, 16)  # LR (H, W)


def _opts(tmp_path, **kw) -> Options:
    base = dict(warmup=0, runs=2, max_time=5.0, timeout=300, cache_dir=tmp_path / "cache",
                export=False, accuracy="never", log=lambda m: None)
    base.update(kw)
    return Options(**base)


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory, onnx_x4):
    tmp = tmp_path_factory.mktemp("bench")
    cases = [
        Case("rdsrn_x4", "pytorch", "fp32", 1, TINY),
        Case("rdsrn_x4", "onnx", "fp32", 1, TINY, artifact=str(onnx_x4), label="given.onnx"),
        Case("rdsrn_x4", "onnx", "int8", 1, TINY, artifact=str(tmp / "missing.onnx")),
        Case("carn_x4", "tflite", "fp32", 1, TINY),  # no artifact, export disabled
        Case("bicubic", "bicubic", "uint8", 1, TINY),
        Case("srcnn_x4", "pytorch", "fp32", 1, TINY),  # runs on the upscaled Y channel
    ]
    machine = {"arch": "x86_64", "flags": ["avx512f", "avx512_vnni"], "cores": 2,
               "mhz": 2000.0, "cpu": "Test CPU"}
    return harness.run_cases(cases, _opts(tmp), machine), machine


def test_rows_have_required_keys_and_per_row_errors(tiny_rows):
    rows, _ = tiny_rows
    for r in rows:
        assert set(report.REQUIRED_KEYS) <= set(r), set(report.REQUIRED_KEYS) - set(r)
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "error", "ok", "ok"]
    assert "no such model file" in rows[2]["error"]
    assert "export disabled" in rows[3]["error"]
    assert all("\n" not in (r["error"] or "") for r in rows)


def test_macs_and_throughput_arithmetic(tiny_rows):
    rows, machine = tiny_rows
    pt = rows[0]
    assert pt["macs"] == count_macs(create_model("rdsrn_x4"), TINY)
    assert pt["input"] == "16x12" and pt["output"] == "64x48"
    assert pt["gmacs_per_s"] == pytest.approx(pt["macs"] / (pt["p50_ms"] / 1e3) / 1e9)
    # fp32 peak of the fake machine: 32 MAC/cycle x 1 thread x 2.0 GHz
    assert pt["peak_fraction"] == pytest.approx(pt["gmacs_per_s"] / 64.0)
    assert pt["weights"] in ("random", "shipped") and pt["runtime"] == "pytorch"
    onnx = rows[1]
    assert onnx["size_mb"] == pytest.approx(Path(onnx["artifact"]).stat().st_size / 1e6)
    assert onnx["runtime"] == "onnxruntime" and onnx["model"] == "given.onnx"
    assert rows[4]["macs"] is None and rows[4]["gmacs_per_s"] is None
    for r in (rows[0], rows[1], rows[4]):
        assert r["p50_ms"] <= r["p90_ms"] and r["runs"] >= 2 and r["peak_rss_mb"] > 0
    srcnn = rows[5]  # the task's LR -> HR sizes stay; the net ran on the HR Y channel
    assert srcnn["input"] == "16x12" and srcnn["output"] == "64x48"
    assert srcnn["net_input"] == "64x48" and srcnn["macs"] == 48 * 64 * 57_184


def test_report_files(tiny_rows, tmp_path):
    rows, machine = tiny_rows
    doc = {"name": "tiny", "command": "rdsrn bench ...", "machine": {**machine, "os": "x"},
           "peaks": {"fp32 x1": "assumption text"}, "rows": rows}
    # rdsrn_x4 rows carry the paper's published PSNR, never plotted as our rows' figure:
    # with no measured PSNR there is nothing to plot
    assert not any(r.get("psnr") for r in rows)
    assert "png" not in report.write_results(doc, tmp_path / "none", "tiny")
    doc["rows"] = rows = [dict(rows[0], psnr=30.0, accuracy_data="Set5"), *rows[1:]]
    paths = report.write_results(doc, tmp_path / "out", "tiny")
    assert set(paths) == {"json", "csv", "md", "png"}
    loaded = json.loads(paths["json"].read_text())
    assert set(loaded) >= {"machine", "rows"} and len(loaded["rows"]) == len(rows)
    table = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert list(table[0])[:len(report.REQUIRED_KEYS)] == list(report.REQUIRED_KEYS)
    assert table[2]["status"] == "error"
    md = paths["md"].read_text()
    assert "| model |" in md and "assumption text" in md and "rdsrn bench" in md
    lines = report.table_lines(rows)
    assert len(lines) == len(rows) + 1 and "error: " in lines[3]


def test_plot_with_psnr(tmp_path):
    rows = [dict(model="a", format="tflite", precision="int8", threads=2, status="ok",
                 p50_ms=10.0, psnr=30.0),
            dict(model="carn_x4", format="onnx", precision="fp32", threads=2, status="ok",
                 p50_ms=100.0, psnr=None, psnr_published_set5=32.13)]
    assert report.plot_png(rows, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert not report.plot_png([dict(status="ok", p50_ms=1.0)], tmp_path / "q.png", "t")


def test_device_slug_names_the_cpu_class():
    """Zen 3 and Zen 4 both say "AMD EPYC": the folder tells them apart by kernel path."""
    zen3 = {"arch": "x86_64", "cpu": "AMD EPYC", "cores": 2, "flags": ["avx2", "fma"]}
    zen4 = {**zen3, "flags": ["avx2", "avx512bw", "avx512_vnni", "avx512_bf16"]}
    assert report.device_slug(zen3) == "x86_64-avx2-amd-epyc-2c"
    assert report.device_slug(zen4) == "x86_64-vnni-amd-epyc-2c"
    assert report.device_slug({**zen4, "flags": zen4["flags"] + ["amx_int8"]}) == \
        "x86_64-amx-amd-epyc-2c"
    assert report.device_slug({"arch": "aarch64", "board": "Raspberry Pi 5 Model B",
                               "cores": 4, "flags": ["asimd", "asimddp"]}) == \
        "aarch64-dotprod-raspberry-pi-5-model-b-4c"
    assert report.device_slug({"arch": "x86_64", "cpu": "Intel(R) Xeon(R) Processor", "cores": 2,
                               "flags": ["avx512_vnni", "amx_int8"]}) == \
        "x86_64-amx-intel-xeon-processor-2c"
    assert report.device_slug({"arch": "aarch64", "board": "Raspberry Pi 4 Model B",
                               "cores": 4, "flags": ["asimd"]}) == \
        "aarch64-neon-raspberry-pi-4-model-b-4c"


def test_accuracy_and_delta_psnr(tmp_path, set5_dir):
    """PSNR through rdsrn.evaluate; ΔPSNR of FP32 PyTorch vs itself is exactly 0 and
    bicubic gets none."""
    from rdsrn.data import read_image, write_image

    data = tmp_path / "mini"
    data.mkdir()
    img = read_image(set5_dir / "baby.png")
    write_image(data / "baby.png", np.ascontiguousarray(img[:64, :64]))
    opts = _opts(tmp_path, accuracy="always", accuracy_data=[data])
    cache = harness.AccuracyCache()
    pt = harness.measure_accuracy(Case("rdsrn_x4", "pytorch", "fp32", 1, TINY), None, opts,
                                  cache)
    assert pt["psnr"] is not None and pt["delta_psnr"] == 0.0 and pt["ssim"] is not None
    bic = harness.measure_accuracy(Case("bicubic", "bicubic", "uint8", 1, TINY), None,
                                   opts, cache)
    assert bic["psnr"] > 20 and bic["delta_psnr"] is None
    never = harness.measure_accuracy(Case("rdsrn_x4", "pytorch", "fp32", 1, TINY), None,
                                     _opts(tmp_path, accuracy_data=[data]), cache)
    if harness.weights_for(Case("rdsrn_x4", "pytorch", "fp32", 1, TINY), opts)[1] == "random":
        assert never["psnr"] is None  # auto: no PSNR for random weights


def test_pause_stops_and_resumes(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file = tmp_path / "train.pid"
        pid_file.write_text(f"{proc.pid}\n")

        def state() -> str:
            return Path(f"/proc/{proc.pid}/stat").read_text().split(")")[1].split()[0]

        with harness.paused(str(pid_file), log=lambda m: None) as was:
            assert was and state() == "T"
        time.sleep(0.05)
        assert state() != "T"
        with pytest.raises(RuntimeError):  # resumed on an exception too
            with harness.paused(str(pid_file), log=lambda m: None):
                raise RuntimeError("boom")
        time.sleep(0.05)
        assert state() != "T"
        with harness.paused(str(tmp_path / "none.pid"), log=lambda m: None) as was:
            assert not was
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_suites_are_well_formed():
    for name in SUITES:
        cases = suite_cases(name, 2)
        assert cases
        for c in cases:
            assert c.format in harness.FORMAT_PRECISIONS
            assert c.precision in harness.FORMAT_PRECISIONS[c.format]
    full = suite_cases("full", 2)
    keys = [(c.model, tuple(sorted(c.overrides.items())), c.format, c.precision, c.threads,
             c.via) for c in full]
    assert len(keys) == len(set(keys))
    assert any(c.overrides == {"recursions": 9, "csr": 0.5} for c in full)
    assert {c.model for c in full} >= {"srcnn_x4", "carn_x4", "imdn_x4", "rdn_x4", "rdsrn_x4"}


def test_paper_tables_markdown():
    rows = [dict(arch="rdsrn_x4", overrides=None, format="tflite", precision=p, threads=2,
                 input="320x180", status="ok", p50_ms=ms, weights="random")
            for p, ms in (("fp32", 400.0), ("int8", 100.0))]
    md = paper_tables_markdown(rows, {"cpu": "Test CPU", "cores": 2})
    assert "| 3 | 0.5 | 0.681 / 0.684 | 131.6 / 136 |" in md
    assert "| 400 | 100 | 4.00x |" in md
    assert "| CARN | 1.592 / 1.5 | 90.9 / 90.9 |" in md
    assert "32.21" in md  # IMDN published Set5


def test_cli_local_tiny(tmp_path):
    from rdsrn.cli import main

    out = tmp_path / "res"
    rc = main(["bench", "--models", "rdsrn_x4", "--formats", "pytorch,bicubic", "--precisions", "fp32",
               "--input", "16x12", "--threads", "1", "--runs", "2", "--warmup", "0",
               "--accuracy", "never", "--out", str(out), "--name", "t"])
    assert rc == 0
    doc = json.loads((out / "t.json").read_text())
    assert [r["format"] for r in doc["rows"]] == ["pytorch", "bicubic"]
    assert all(r["status"] == "ok" for r in doc["rows"])
    assert {"cpu", "flags", "os", "packages"} <= set(doc["machine"])
    assert doc["command"].startswith("rdsrn bench") or "bench" in doc["command"]
    assert (out / "t.csv").is_file() and (out / "t.md").is_file()


def test_cli_bad_input():
    from rdsrn.cli import main

    assert main(["bench", "--models", "rdsn_x4", "--no-write"]) == 2
    assert main(["bench", "--input", "12", "--no-write"]) == 2
    assert main(["bench", "--formats", "tensorrt", "--no-write"]) == 2


def test_bench_module_imports_are_light():
    code = ("import sys; import rdsrn.benchmarks.cli; "
            "bad = [m for m in ('torch', 'tensorflow', 'onnxruntime', 'onnx') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_cli_artifact_with_profile(tmp_path, tiny_tflite):
    from rdsrn.cli import main

    out = tmp_path / "res"
    rc = main(["bench", "--artifact", str(tiny_tflite["fp32"]), "--input", "12x10",
               "--threads", "1", "--runs", "2", "--warmup", "0", "--accuracy", "never",
               "--profile", "--out", str(out), "--name", "p"])
    assert rc == 0
    (row,) = json.loads((out / "p.json").read_text())["rows"]
    assert row["status"] == "ok" and row["format"] == "tflite" and row["delegation"]
    prof = json.loads((out / "p_profile.json").read_text())
    assert prof[0]["by_type"] and "| op type |" in (out / "p_profile.md").read_text()


def test_artifact_cache_key_follows_the_exporter_source(monkeypatch) -> None:
    """A changed exporter must not reuse artifacts cached by an older one."""
    from rdsrn.benchmarks import harness

    case = Case("rdsrn_x4", "tflite", "int8", 2, (45, 80))
    before = harness._cache_key(case, None, Options())
    assert harness._cache_key(case, None, Options()) == before
    monkeypatch.setattr(harness, "_exporter_fingerprint", lambda: "other exporter")
    assert harness._cache_key(case, None, Options()) != before


def test_runtime_layer_refuses_an_out_path_before_it_runs(capsys) -> None:
    """`runtime_layer --out` is a file name under benchmarks/results: a path with folders
    is a one-line usage error at once, not a traceback after the whole benchmark."""
    from rdsrn.benchmarks import runtime_layer

    with pytest.raises(SystemExit) as exc:
        runtime_layer.main(["ab", "--model", "missing_a.onnx", "--model", "missing_b.onnx",
                            "--out", "benchmarks/results/x.md"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "--out benchmarks/results/x.md: give a file name" in err[-1]


def test_device_suite_names_the_default_and_why(monkeypatch):
    """`rdsrn bench --suite device` says which bundled file the CPU's kernel path gets."""
    import rdsrn.runtimes.bundled as bundled
    from rdsrn.benchmarks.cli import default_choice_line

    monkeypatch.setattr(bundled, "runtime_available", lambda fmt: True)
    zen3 = {"arch": "x86_64", "flags": ["avx2", "fma"]}
    line = default_choice_line(zen3)
    assert line.startswith("Default file on this CPU (x86-avx2): rdsrn_x4_int8.onnx: no VNNI")
    pi5 = {"arch": "aarch64", "flags": ["asimd", "asimddp"]}
    assert "(arm64-dotprod): rdsrn_x4_int8.tflite" in default_choice_line(pi5)
