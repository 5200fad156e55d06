"""`rdsrn bench` outcome: exit status when rows fail, the busy-machine flag, the default
results folder, the ΔPSNR sign, bundled names and the device suite. Tiny inputs, few
runs; never asserts a timing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rdsrn.benchmarks import harness, report
from rdsrn.benchmarks.cli import SUITE_NAMES
from rdsrn.benchmarks.harness import Case, Options
from rdsrn.benchmarks.suites import SUITES, suite_cases
from rdsrn.cli import main, missing_extra_message

QUIET = ["--input", "16x12", "--threads", "1", "--runs", "2", "--warmup", "0",
         "--accuracy", "never"]


def test_every_row_failed_exits_non_zero(tmp_path, capsys) -> None:
    rc = main(["bench", "--models", "rdsrn_x4", "--formats", "onnx", "--precisions", "fp32",
               "--no-export", "--cache-dir", str(tmp_path), "--no-write", *QUIET])
    assert rc == 1
    assert "1 of 1 row(s) failed" in capsys.readouterr().err


def test_partial_failure_says_how_many(tmp_path, capsys) -> None:
    rc = main(["bench", "--models", "rdsrn_x4", "--formats", "onnx,bicubic", "--precisions",
               "fp32,uint8", "--no-export", "--cache-dir", str(tmp_path), "--no-write",
               *QUIET])
    assert rc == 0
    assert "1 of 2 row(s) failed" in capsys.readouterr().err


def test_default_results_folder_is_in_the_current_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--models", "rdsrn_x4", "--formats", "bicubic", *QUIET]) == 0
    (device,) = (tmp_path / "rdsrn-bench").iterdir()
    assert (device / "bench.json").is_file() and (device / "bench.md").is_file()
    assert json.loads((device / "bench.json").read_text())["rows"][0]["format"] == "bicubic"


def test_bundled_name_as_artifact(tmp_path) -> None:
    out = tmp_path / "o"
    assert main(["bench", "--artifact", "rdsrn_x4_int8.tflite", "--out", str(out),
                 "--name", "b", *QUIET]) == 0
    (row,) = json.loads((out / "b.json").read_text())["rows"]
    assert row["status"] == "ok" and Path(row["artifact"]).name == "rdsrn_x4_int8.tflite"
    assert row["precision"] == "int8" and row["weights"] == "shipped"
    assert main(["bench", "--artifact", "rdsrn_x9_nope", "--no-write", *QUIET]) == 2


def test_device_suite_is_the_bundled_files() -> None:
    assert set(SUITE_NAMES) == set(SUITES)
    cases = suite_cases("device", 2)
    names = {Path(c.artifact).name for c in cases if c.artifact}
    assert {"rdsrn_x4_int8.tflite", "rdsrn_x4_int8.onnx", "rdsrn_x4_fp32.onnx"} <= names
    assert {c.format for c in cases} == {"onnx", "tflite", "bicubic"}
    assert {c.threads for c in cases} == {1, 2}
    for c in cases:
        if c.artifact:  # rdsrn_x4_{precision}[_float-GROUPS]
            stem = Path(c.artifact).stem
            assert c.precision in ("fp32", "fp16", "int8") and f"_{c.precision}" in stem
            assert c.label == Path(c.artifact).name


# --------------------------------------------------------------------- interference


def _row(**kw):
    base = dict(status="ok", p50_ms=100.0, p90_ms=102.0, model="m", format="onnx",
                precision="fp32", threads=1)
    base.update(kw)
    return base


def test_interference_flags_and_legend() -> None:
    rows = [_row(), _row(other_cpu_during=0.40), _row(p90_ms=130.0),
            _row(p50_ms=0.5, p90_ms=0.9),  # sub-ms rows: spread is not a sign of load
            _row(background_cpu_before=0.30), _row(status="error", error="x",
                                                    other_cpu_during=0.9)]
    assert report.flag_interference(rows) == 3
    assert [bool(r["interference"]) for r in rows] == [False, True, True, False, True, False]
    assert "other CPU load 40% during" in rows[1]["interference"]
    assert "p90/p50 = 1.30" in rows[2]["interference"]
    lines = report.table_lines(rows)
    assert "other CPU" in lines[0]
    assert lines[2].endswith("ok !") and lines[1].endswith("ok")
    legend = report.legend_lines(rows)
    assert any(line.startswith("! = 3 of 6 row(s)") for line in legend)
    md = report.markdown_text({"machine": {}, "rows": rows})
    assert "! = 3 of 6 row(s) possibly disturbed" in md


def test_other_load_arithmetic(monkeypatch) -> None:
    """(machine busy CPU s - our CPU s) / (wall s x CPUs)."""
    ticks = iter([(10.0, 50.0, 1.0), (12.0, 53.0, 2.0)])
    monkeypatch.setattr(harness, "_usage_start", lambda: next(ticks))
    monkeypatch.setattr(harness.os, "cpu_count", lambda: 2)
    start = harness._usage_start()
    assert harness._other_load(start) == pytest.approx((3.0 - 1.0) / (2.0 * 2))


def test_a_busy_machine_is_noticed(tmp_path, monkeypatch) -> None:
    """A CPU-burning process beside a measured (sleeping) row shows as other load: at
    least the CPU time the burner itself got in the measured window (whatever share of
    a CPU the scheduler or a CPU quota gave it, so a loaded machine cannot fail this)."""
    if not Path("/proc/stat").is_file():
        pytest.skip("no /proc/stat")
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    tick = float(harness.os.sysconf("SC_CLK_TCK"))

    def burner_cpu_s() -> float:
        fields = Path(f"/proc/{burner.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    marks: list[tuple[float, float]] = []  # (wall s, burner CPU s) at the window's ends
    real_start = harness._usage_start

    def recording_start():
        usage = real_start()
        marks.append((usage[0], burner_cpu_s()))
        return usage

    monkeypatch.setattr(harness, "_usage_start", recording_start)
    try:
        time.sleep(0.3)
        argv = [sys.executable, "-c", "import json, time; time.sleep(1.0); "
                "print(json.dumps({'row': {'status': 'ok'}}))"]
        row = harness.run_measurement(argv, Options(log=lambda m: None))
    finally:
        burner.kill()
        burner.wait()
    assert row["status"] == "ok" and len(marks) == 2
    (wall0, cpu0), (wall1, cpu1) = marks
    other_cpu_s = row["other_cpu_during"] * (wall1 - wall0) * (harness.os.cpu_count() or 1)
    assert cpu1 - cpu0 > 0  # the burner did run in the window
    assert other_cpu_s >= 0.8 * (cpu1 - cpu0) - 0.05  # 0.05 s: clock-tick granularity


# ------------------------------------------------------------------------ ΔPSNR sign


def test_delta_psnr_is_negative_when_the_row_is_worse(monkeypatch, tmp_path) -> None:
    """One sign everywhere: ΔPSNR = row - FP32 PyTorch reference (INT8 worse: < 0)."""
    import rdsrn.evaluate as evaluate

    def fake(fn, folder, scale):
        return {"images": 1, "psnr": fn, "ssim": 0.9}

    monkeypatch.setattr(evaluate, "evaluate_dataset", fake)
    monkeypatch.setattr(harness, "_upscale_fn",
                        lambda case, artifact, opts, weights:
                        30.0 if case.format == "pytorch" else 29.8)
    monkeypatch.setattr(harness, "weights_for", lambda case, opts: ("w", "shipped"))
    opts = Options(accuracy="always", accuracy_data=[tmp_path], log=lambda m: None)
    out = harness.measure_accuracy(Case("rdsrn_x4", "tflite", "int8", 1, (12, 16)),
                                   tmp_path / "m.tflite", opts, harness.AccuracyCache())
    assert out["delta_psnr"] == pytest.approx(-0.2)
    assert any("negative = less accurate" in line
               for line in report.legend_lines([{"delta_psnr": -0.2}]))
    cells = [report._cell({"d": v}, "d", "+.3f") for v in (-0.127, 0.006, -1e-5, 0.0)]
    assert cells == ["-0.127", "+0.006", "0.000", "0.000"]


# --------------------------------------------------------- one-line missing extras


def test_missing_extra_message_names_the_extra() -> None:
    exc = ModuleNotFoundError("No module named 'torch'", name="torch")
    assert missing_extra_message("export", exc) == (
        "rdsrn export needs PyTorch and TensorFlow (torch is not installed): "
        "pip install 'rdsrn[export]'")
    tf = ModuleNotFoundError("No module named 'tensorflow.lite'", name="tensorflow.lite")
    assert "rdsrn[export]" in missing_extra_message("export", tf)
    assert "rdsrn[train]" in missing_extra_message("train", exc)
    assert missing_extra_message("upscale", exc) is None  # a real bug: keep the traceback
    assert missing_extra_message("export", ModuleNotFoundError("x", name="numpyy")) is None


def test_artifact_without_metadata_is_refused_not_mislabelled(tmp_path, capsys) -> None:
    bogus = tmp_path / "other_model.onnx"
    bogus.write_bytes(b"\x08\x07not an rdsrn export")
    rc = main(["bench", "--artifact", str(bogus), "--no-write", *QUIET])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no readable rdsrn metadata" in err and "Traceback" not in err
