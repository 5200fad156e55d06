"""Remote targets: benchmark_model output parsing (on real output text published in
the tool's documentation and users' logs), adb / ssh command construction, and the
whole ssh path run against a fake ssh/scp that execute locally."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from rdsrn.benchmarks import remote
from rdsrn.benchmarks.remote import (SshTarget, adb_bench, adb_commands, parse_benchmark_model,
                               parse_target, row_from_benchmark_model, ssh_bench,
                               ssh_commands)
from rdsrn.runtimes.errors import UserError

from test_runtime_artifacts import tiny_tflite  # noqa: F401 (fixture)

# benchmark_model on an Android aarch64 build with XNNPACK (INFO: prefixes, median/p5/
# p95 fields, "Memory footprint delta"); excerpt of a published terminal log.
ANDROID_XNNPACK = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [1000]
INFO: Min warmup runs: [5]
INFO: Graph: [./models/tiny_muaalem_float32.tflite]
INFO: Signature to run: []
INFO: Loaded model ./models/tiny_muaalem_float32.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 2168 out of 2168 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions for subgraph 0.
INFO: The input model file size (MB): 24.6229
INFO: Initialized session in 119.515ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=51629 median=51962 p95=87112

INFO: Running benchmark for at least 1000 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=1000 first=52162 curr=49785 min=49088 max=686105 avg=63743.2 std=60716 p5=49620 median=51891 p95=68628

INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 63743.2
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=55.4961 overall=55.4961
"""

# The same tool failing to prepare a partially delegated INT8 model.
ANDROID_FAILED = """\
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
VERBOSE: Replacing 2136 out of 2168 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 65 partitions for subgraph 0.
ERROR: tensorflow/lite/kernels/batch_matmul.cc:353 (lhs_data->type == kTfLiteFloat32 && rhs_data->type == kTfLiteInt8) || lhs_data->type == rhs_data->type was not true.
ERROR: Node number 57 (BATCH_MATMUL) failed to prepare.
ERROR: Failed to allocate tensors!
ERROR: Benchmarking failed.
"""

# Documentation example (meta-tensorflow-lite, benchmark_model with
# --enable_op_profiling=true on qemu riscv64): scientific notation, op profile tables.
DOC_PROFILE = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [4]
Graph: [./mobilenet_v1_1.0_224.tflite]
Enable op profiling: [1]
#threads used for CPU inference: [4]
Loaded model ./mobilenet_v1_1.0_224.tflite
The input model file size (MB): 16.9008
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
Profiling Info for Benchmark Initialization:
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t         AllocateTensors\t        1\t     1.356\t   100.000%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=1 curr=1356
Memory (bytes): count=0
1 nodes observed



Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                 CONV_2D\t       15\t  2651.853\t    89.897%\t    89.897%\t     0.000\t       15
\t       DEPTHWISE_CONV_2D\t       13\t   296.919\t    10.065%\t    99.962%\t     0.000\t       13
\t         AVERAGE_POOL_2D\t        1\t     0.869\t     0.029%\t    99.992%\t     0.000\t        1
\t                 SOFTMAX\t        1\t     0.232\t     0.008%\t    99.999%\t     0.000\t        1
\t                 SQUEEZE\t        1\t     0.016\t     0.001%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=50 first=2989660 curr=2912978 min=2727203 max=3189476 avg=2.9499e+06 std=109770
Memory (bytes): count=0
31 nodes observed
"""

# Another published run (NNAPI/CPU comparison write-up): "Peak memory footprint" form.
PEAK_MEMORY = """\
count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""


def test_parse_android_xnnpack_log():
    p = parse_benchmark_model(ANDROID_XNNPACK)
    assert p["init_ms"] == pytest.approx(119.515)
    assert p["first_inference_ms"] == pytest.approx(87.112)
    assert p["warmup_avg_ms"] == pytest.approx(58.1474)
    assert p["inference_avg_ms"] == pytest.approx(63.7432)
    # the timed runs' line (count=1000), not the warm-up one (count=9)
    assert p["runs"] == 1000 and p["median_ms"] == pytest.approx(51.891)
    assert p["p95_ms"] == pytest.approx(68.628) and p["min_ms"] == pytest.approx(49.088)
    assert p["memory_kind"] == "delta" and p["memory_overall_mb"] == pytest.approx(55.4961)
    assert p["model_size_mb"] == pytest.approx(24.6229)
    assert p["delegates"] == [{"delegate": "TfLiteXNNPackDelegate", "replaced": 2168,
                               "total": 2168, "partitions": 1}]
    assert p["errors"] == [] and not p["delegate_fallback"]
    row = row_from_benchmark_model(p)
    assert row["status"] == "ok" and row["p50_ms"] == pytest.approx(51.891)
    assert row["mean_ms"] == pytest.approx(63.7432) and row["p90_ms"] is None
    assert "2168/2168" in row["notes"] and row["peak_rss_mb"] == pytest.approx(55.4961)


def test_parse_scientific_notation_and_op_profile():
    p = parse_benchmark_model(DOC_PROFILE)
    assert p["inference_avg_ms"] == pytest.approx(2950.34)
    assert p["warmup_avg_ms"] == pytest.approx(3512.39)
    assert p["runs"] == 50 and p["avg_ms"] == pytest.approx(2950.34)
    assert "median_ms" not in p
    assert [r["node_type"] for r in p["op_summary"]] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "SOFTMAX", "SQUEEZE"]
    assert p["op_summary"][0] == {"node_type": "CONV_2D", "count": 15,
                                  "avg_ms": pytest.approx(2651.853), "pct": pytest.approx(89.897)}
    row = row_from_benchmark_model(p)
    assert row["p50_ms"] == pytest.approx(2950.34) and "p50 = mean" in row["notes"]
    assert row["op_summary"][1]["count"] == 13


def test_parse_peak_memory_form():
    p = parse_benchmark_model(PEAK_MEMORY)
    assert p["memory_kind"] == "peak" and p["memory_init_mb"] == pytest.approx(4.92969)
    assert p["memory_overall_mb"] == pytest.approx(138.809)
    assert p["inference_avg_ms"] == pytest.approx(249.684) and p["std_ms"] == pytest.approx(1.442)


def test_failed_run_is_an_error_row():
    p = parse_benchmark_model(ANDROID_FAILED)
    assert "inference_avg_ms" not in p and len(p["errors"]) == 4
    assert p["delegates"][0]["partitions"] == 65
    row = row_from_benchmark_model(p)
    assert row["status"] == "error" and "Benchmarking failed" in row["error"]
    assert row_from_benchmark_model(parse_benchmark_model(""))["status"] == "error"


def test_parse_target():
    assert parse_target("local") == ("local", None)
    assert parse_target("ssh://pi@raspberrypi.local") == \
        ("ssh", SshTarget("pi", "raspberrypi.local", None))
    assert parse_target("ssh://host:2222") == ("ssh", SshTarget(None, "host", 2222))
    assert parse_target("adb") == ("adb", None)
    assert parse_target("adb:emulator-5554") == ("adb", "emulator-5554")
    for bad in ("ssh://", "ssh://a@b@c", "pi@host", "adb:"):
        with pytest.raises(UserError):
            parse_target(bad)


def test_ssh_command_construction():
    t = SshTarget("pi", "board", 2222)
    cmds = ssh_commands(t, "/tmp/rb x", [Path("/a/device_bench.py"), Path("/b/m.tflite")],
                        ["m.tflite", "--threads", "4", "--json", "-"], python="python3")
    assert cmds["mkdir"] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                             "-p", "2222", "pi@board", "mkdir -p '/tmp/rb x'"]
    assert cmds["copy"] == ["scp", "-q", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                            "-P", "2222", "/a/device_bench.py", "/b/m.tflite",
                            "pi@board:/tmp/rb x/"]
    assert cmds["run"][-1] == ("cd '/tmp/rb x' && python3 device_bench.py m.tflite "
                               "--threads 4 --json -")
    assert cmds["cleanup"][-1] == "rm -rf '/tmp/rb x'"


def test_adb_command_construction():
    cmds = adb_commands("SER1", "/x/benchmark_model", "/m/rdsrn_int8.tflite", 4, "xnnpack",
                        warmup=2, runs=30, profile=True)
    assert cmds["push_binary"] == ["adb", "-s", "SER1", "push", "/x/benchmark_model",
                                   "/data/local/tmp/rdsrn/benchmark_model"]
    assert cmds["push_model"][-1] == "/data/local/tmp/rdsrn/rdsrn_int8.tflite"
    run = cmds["run"]
    assert run[:4] == ["adb", "-s", "SER1", "shell"]
    flags = run[4].split()
    assert flags[0] == "/data/local/tmp/rdsrn/benchmark_model"
    for f in ("--graph=/data/local/tmp/rdsrn/rdsrn_int8.tflite", "--num_threads=4",
              "--warmup_runs=2", "--num_runs=30", "--use_xnnpack=true",
              "--enable_op_profiling=true"):
        assert f in flags
    gpu = adb_commands(None, "b", "m.tflite", 1, "gpu", 1, 10)["run"]
    assert gpu[:2] == ["adb", "shell"] and "--use_gpu=true" in gpu[2]
    assert "--use_xnnpack=false" in gpu[2]
    assert "--use_nnapi=true" in adb_commands(None, "b", "m.tflite", 1, "nnapi", 1, 10)["run"][2]
    with pytest.raises(UserError):
        adb_commands(None, "b", "m.tflite", 1, "hexagonx", 1, 10)


def test_adb_bench_with_fake_adb(tmp_path):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    model = tmp_path / "m_int8.tflite"
    model.write_bytes(b"x")
    calls = []

    def fake(argv, timeout):
        calls.append(list(argv))
        if argv[-1] == "get-state":
            return 0, "device\n", ""
        if "getprop" in argv[-1]:
            return 0, "Pixel 8\nTensor G3\n14\naarch64\n", ""
        if argv[-1].startswith("/data/local/tmp/rdsrn/benchmark_model --graph"):
            return 0, ANDROID_XNNPACK, ""
        return 0, "", ""

    machine, rows = adb_bench("SER1", binary, [str(model)], [1, 4], "xnnpack", 1, 20,
                              exec_fn=fake)
    assert machine["model"] == "Pixel 8" and machine["arch"] == "aarch64"
    assert [r["threads"] for r in rows] == [1, 4]
    assert all(r["status"] == "ok" and r["p50_ms"] == pytest.approx(51.891) for r in rows)
    runs = [c for c in calls if "--graph=" in c[-1]]
    assert len(runs) == 2 and "--num_threads=4" in runs[1][-1].split()
    # no device: every row is an error with the reason, nothing raised
    _, rows = adb_bench("SER1", binary, [str(model)], [1], "xnnpack", 1, 5,
                        exec_fn=lambda a, t: (1, "", "error: device 'SER1' not found"))
    assert rows[0]["status"] == "error" and "not found" in rows[0]["error"]
    # missing binary: error rows, adb never called
    _, rows = adb_bench(None, tmp_path / "nope", [str(model)], [1], "xnnpack", 1, 5,
                        exec_fn=lambda a, t: pytest.fail("adb called"))
    assert "benchmark_model binary not found" in rows[0]["error"]


def _fake_ssh_bin(tmp_path: Path, refuse: bool = False) -> Path:
    """ssh/scp stand-ins: ssh runs its command string locally; scp copies locally."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    ssh = bindir / "ssh"
    scp = bindir / "scp"
    log = tmp_path / "ssh.log"
    if refuse:
        ssh.write_text("#!/bin/sh\necho 'ssh: connect to host board port 22: Connection "
                       "refused' >&2\nexit 255\n")
    else:
        ssh.write_text(f"""#!/bin/sh
echo "ssh $*" >> {log}
while [ $# -gt 1 ]; do
  case "$1" in -o|-p) shift 2;; *) shift;; esac
  [ $# -eq 1 ] && break
done
exec /bin/sh -c "$1"
""")
    scp.write_text(f"""#!/bin/sh
echo "scp $*" >> {log}
files=""
while [ $# -gt 0 ]; do
  case "$1" in -q) shift;; -o|-P) shift 2;; *) files="$files $1"; shift;; esac
done
dest=""
for f in $files; do dest="$f"; done
dir="${{dest#*:}}"
for f in $files; do [ "$f" = "$dest" ] || cp "$f" "$dir"; done
""")
    for f in (ssh, scp):
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return bindir


def test_ssh_bench_end_to_end_with_fake_ssh(tmp_path, monkeypatch, tiny_tflite):
    bindir = _fake_ssh_bin(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    t = SshTarget("pi", "board", None)
    machine, rows = ssh_bench(t, [str(tiny_tflite["fp32"]), "bicubic"], [1], "12x10",
                              warmup=0, runs=2, min_time=0.0, scale=2,
                              python=sys.executable)
    assert machine and machine["cores"] >= 1
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    assert rows[0]["model_file"] == str(tiny_tflite["fp32"]) and rows[0]["output"] == "24x20"
    assert rows[1]["model_file"] == "bicubic" and rows[1]["output"] == "24x20"
    log = (tmp_path / "ssh.log").read_text()
    assert "pi@board" in log and "device_bench.py" in log and "rm -rf" in log


def test_ssh_unreachable_gives_error_rows(tmp_path, monkeypatch):
    bindir = _fake_ssh_bin(tmp_path, refuse=True)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    machine, rows = ssh_bench(SshTarget("pi", "board", None), ["bicubic"], [1, 2], "8x8",
                              0, 1, 0.0, 4)
    assert machine is None and len(rows) == 2
    assert all(r["status"] == "error" and "Connection refused" in r["error"] for r in rows)


def test_cli_ssh_target_with_fake_ssh(tmp_path, monkeypatch, tiny_tflite):
    """`rdsrn bench --artifact X --target ssh://...`: rows come back into the table."""
    from rdsrn.cli import main

    bindir = _fake_ssh_bin(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "res"
    rc = main(["bench", "--artifact", str(tiny_tflite["int8"]), "--target", "ssh://pi@board",
               "--remote-python", sys.executable, "--input", "12x10", "--threads", "1",
               "--runs", "2", "--warmup", "0", "--accuracy", "never", "--out", str(out),
               "--name", "pi"])
    assert rc == 0
    doc = json.loads((out / "pi.json").read_text())
    (row,) = doc["rows"]
    assert row["status"] == "ok", row
    assert row["target"] == "ssh://pi@board" and row["format"] == "tflite"
    assert row["precision"] == "int8" and row["p50_ms"] > 0
    assert doc["machine"]["target"] == "ssh://pi@board"
