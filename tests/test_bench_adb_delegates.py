"""`rdsrn bench --target adb` with the GPU / NPU delegates: benchmark_model flags and
the delegate lines of its output.

The outputs below are HAND-WRITTEN (no Android device was available) from the
documented formats: TensorFlow Lite's tools/benchmark (benchmark_tflite_model.cc,
delegate providers: "Explicitly applied GPU delegate, and the model graph will be
completely executed by the delegate."), the GPU delegate's own log ("Following
operations are not supported by GPU delegate:" / "N operations will run on the GPU, and
the remaining M operations will run on the CPU.", as quoted in tensorflow#56301) and
LiteRT's litert/tools:benchmark_model ("========== BENCHMARK RESULTS ==========" block,
benchmark_litert_model.h). Numbers are made up; node counts are those of the rdsrn x4
files (FP16 static: 247 nodes, INT8: 191)."""

from __future__ import annotations

import argparse
import json

import pytest

from rdsrn.benchmarks import report
from rdsrn.benchmarks.remote import (DelegateOptions, adb_bench, adb_commands,
                                     benchmark_model_flags, input_layer_for, ops_delegated,
                                     parse_benchmark_model, row_from_benchmark_model)
from rdsrn.benchmarks.remote_run import delegate_options
from rdsrn.runtimes.errors import UserError

GPU_FULL = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [/data/local/tmp/rdsrn/rdsrn_x4_fp16_192x192.tflite]
INFO: Use gpu: [1]
INFO: Loaded model /data/local/tmp/rdsrn/rdsrn_x4_fp16_192x192.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for GPU.
INFO: GPU delegate created.
VERBOSE: Replacing 247 out of 247 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions for the whole graph.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 1.41
INFO: Initialized session in 901.2ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=18 first=71234 curr=27011 min=26890 max=71234 avg=29512.4 std=10120 p5=26890 median=27100 p95=71234

INFO: Running benchmark for at least 20 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=37 first=27120 curr=27050 min=26801 max=28302 avg=27211 std=301 p5=26850 median=27150 p95=27890

INFO: Inference timings in us: Init: 901200, First inference: 71234, Warmup (avg): 29512.4, Inference (avg): 27211
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=105.2 overall=118.7
INFO: Overall peak memory footprint (MB) via periodic monitoring: 131.4
"""

# GPU delegate that leaves two nodes on the CPU (an op it rejects), as logcat lines.
GPU_PARTIAL = """\
11-30 10:38:42.585 22206 22206 I tflite  : Initialized TensorFlow Lite runtime.
11-30 10:38:42.589 22206 22206 I tflite  : Created TensorFlow Lite delegate for GPU.
11-30 10:38:42.607 22206 22206 E tflite  : Following operations are not supported by GPU delegate:
11-30 10:38:42.607 22206 22206 E tflite  : ARG_MAX: Operation is not supported.
11-30 10:38:42.607 22206 22206 E tflite  : CAST: Not supported Cast case. Input type: INT64 and output type: FLOAT32
11-30 10:38:42.607 22206 22206 E tflite  : 189 operations will run on the GPU, and the remaining 2 operations will run on the CPU.
11-30 10:38:42.610 22206 22206 I tflite  : Replacing 189 out of 191 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions for the whole graph.
11-30 10:38:43.101 22206 22206 I tflite  : Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate w/ 2 delegate kernels.
11-30 10:38:45.000 22206 22206 I tflite  : count=50 first=40210 curr=39876 min=39012 max=41987 avg=39950 std=512 p5=39100 median=39880 p95=40900
11-30 10:38:45.000 22206 22206 I tflite  : Inference timings in us: Init: 512000, First inference: 80120, Warmup (avg): 41000, Inference (avg): 39950
"""

GPU_NONE = """\
INFO: Created TensorFlow Lite delegate for GPU.
INFO: Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate.
INFO: count=20 first=90000 curr=88000 min=87000 max=90000 avg=88500 std=700 p5=87000 median=88400 p95=90000
INFO: Inference timings in us: Init: 20000, First inference: 90000, Warmup (avg): 90000, Inference (avg): 88500
"""

# LiteRT's benchmark_model (CompiledModel API) on an AOT-compiled NPU file.
LITERT_NPU = """\
INFO: [benchmark_litert_model.cc:101] dispatch_library_path: /data/local/tmp/rdsrn/npu
INFO: [benchmark_litert_model.cc:104] compiler_plugin_library_path:
INFO: [benchmark_litert_model.cc:122] Loading model from: /data/local/tmp/rdsrn/rdsrn_x4_int8_192x192_Qualcomm_SM8650.tflite
INFO: [environment.cc:36] Creating LiteRT environment with options
INFO: [auto_registration.cc:178] NPU accelerator registered.
VERBOSE: Replacing 1 out of 1 node(s) with delegate (DispatchDelegate) node, yielding 1 partitions for subgraph 0.
INFO: [benchmark_litert_model.h:63]
========== BENCHMARK RESULTS ==========
INFO: [benchmark_litert_model.h:64] Model initialization: 231.55 ms
INFO: [benchmark_litert_model.h:65] Warmup (first):       12.41 ms
INFO: [benchmark_litert_model.h:67] Warmup (avg):         6.02 ms (3 runs)
INFO: [benchmark_litert_model.h:69] Inference (avg):      5.37 ms (40 runs)
INFO: [benchmark_litert_model.h:73] Inference (min):      5.11 ms
INFO: [benchmark_litert_model.h:75] Inference (max):      6.90 ms
INFO: [benchmark_litert_model.h:77] Inference (std):      0.31
INFO: [benchmark_litert_model.h:84] Throughput:           20.61 MB/s
INFO: [benchmark_litert_model.h:92]
Memory Usage:
INFO: [benchmark_litert_model.h:93] Init footprint:       48.20 MB
INFO: [benchmark_litert_model.h:95] Overall footprint:    51.73 MB
INFO: [benchmark_litert_model.h:100] Peak memory:          63.10 MB
INFO: [benchmark_litert_model.h:106] ======================================
"""


def _flags(**kw) -> list[str]:
    return benchmark_model_flags("/d/m.tflite", 1, kw.pop("delegate"), 1, 10, **kw)


def test_gpu_flags_tflite_tool():
    f = _flags(delegate="gpu")
    assert {"--use_gpu=true", "--use_xnnpack=false", "--gpu_precision_loss_allowed=true",
            "--gpu_experimental_enable_quant=true"} <= set(f)
    assert not any(x.startswith("--gpu_backend") for x in f)
    f = _flags(delegate="gpu", options=DelegateOptions(gpu_precision="fp32", gpu_backend="cl"))
    assert "--gpu_precision_loss_allowed=false" in f and "--gpu_backend=cl" in f
    f = _flags(delegate="gpu", input_layer=("serving_default_input:0", (180, 320)))
    assert "--input_layer=serving_default_input:0" in f
    assert "--input_layer_shape=1,180,320,3" in f
    with pytest.raises(UserError, match="webgpu"):
        _flags(delegate="gpu", options=DelegateOptions(gpu_backend="webgpu"))
    with pytest.raises(UserError, match="LiteRT's benchmark_model"):
        _flags(delegate="npu")


def test_npu_and_gpu_flags_litert_tool():
    o = DelegateOptions(tool="litert", npu_dispatch_dir="/data/local/tmp/rdsrn/npu")
    f = _flags(delegate="npu", options=o)
    assert "--use_npu=true" in f and "--dispatch_library_path=/data/local/tmp/rdsrn/npu" in f
    assert "--use_cpu=true" in f and not any("xnnpack" in x for x in f)
    o = DelegateOptions(tool="litert", npu_dispatch_dir="/n", npu_compiler_plugin_dir="/c",
                        require_full_delegation=True)
    f = _flags(delegate="npu", options=o, profile=True)
    assert {"--compiler_plugin_library_path=/c", "--use_cpu=false",
            "--require_full_delegation=true", "--use_profiler=true"} <= set(f)
    f = _flags(delegate="gpu", options=DelegateOptions(tool="litert", gpu_precision="fp32"))
    assert "--use_gpu=true" in f and "--allow_fp16=false" in f
    with pytest.raises(UserError, match="--npu-dispatch-dir"):
        _flags(delegate="npu", options=DelegateOptions(tool="litert"))
    with pytest.raises(UserError, match="static-shape"):
        _flags(delegate="gpu", options=DelegateOptions(tool="litert"),
               input_layer=("x", (8, 8)))
    with pytest.raises(UserError, match="NNAPI"):
        _flags(delegate="nnapi", options=DelegateOptions(tool="litert"))


def test_parse_gpu_full_delegation():
    p = parse_benchmark_model(GPU_FULL)
    assert p["created"] == ["GPU"]
    assert p["applied"] == [{"delegate": "GPU", "coverage": "complete"}]
    assert p["delegates"] == [{"delegate": "TfLiteGpuDelegateV2", "replaced": 247,
                               "total": 247, "partitions": 1}]
    assert not p["delegate_fallback"]
    row = row_from_benchmark_model(p, "gpu")
    assert row["status"] == "ok" and row["p50_ms"] == pytest.approx(27.15)
    assert row["delegate"] == "gpu" and row["ops_delegated"] == "247/247 (1 partition)"
    assert row["peak_rss_mb"] == pytest.approx(131.4)


def test_parse_gpu_partial_delegation():
    p = parse_benchmark_model(GPU_PARTIAL)
    assert p["gpu_split"] == {"gpu": 189, "cpu": 2}
    assert [u["op"] for u in p["gpu_unsupported"]] == ["ARG_MAX", "CAST"]
    assert p["applied"][0]["coverage"] == "partial" and p["delegate_fallback"]
    row = row_from_benchmark_model(p, "gpu")
    assert row["ops_delegated"] == "189/191 (2 partitions)"
    assert "not on the GPU: ARG_MAX (Operation is not supported.)" in row["notes"]
    assert "delegate fell back to CPU" in row["notes"]
    # without the Replacing line the GPU delegate's own count is used
    no_replacing = "\n".join(ln for ln in GPU_PARTIAL.splitlines() if "Replacing" not in ln)
    assert ops_delegated(parse_benchmark_model(no_replacing), "gpu") == "189/191"


def test_parse_gpu_not_applied():
    p = parse_benchmark_model(GPU_NONE)
    assert p["applied"] == [{"delegate": "GPU", "coverage": "none"}] and p["delegate_fallback"]
    row = row_from_benchmark_model(p, "gpu")
    assert row["ops_delegated"] == "0" and row["p50_ms"] == pytest.approx(88.4)
    assert ops_delegated(p, "none") == "0 (no delegate)"


def test_parse_litert_npu_results():
    p = parse_benchmark_model(LITERT_NPU)
    assert p["tool"] == "litert"
    assert p["init_ms"] == pytest.approx(231.55)
    assert p["first_inference_ms"] == pytest.approx(12.41)
    assert p["inference_avg_ms"] == pytest.approx(5.37) and p["runs"] == 40
    assert p["min_ms"] == pytest.approx(5.11) and p["std_ms"] == pytest.approx(0.31)
    assert p["memory_peak_periodic_mb"] == pytest.approx(63.1)
    row = row_from_benchmark_model(p, "npu")
    assert row["status"] == "ok" and row["p50_ms"] == pytest.approx(5.37)
    assert row["ops_delegated"] == "1/1 (1 partition)"  # the one DISPATCH_OP node
    assert row["peak_rss_mb"] == pytest.approx(63.1)


def test_adb_bench_gpu_rows_and_table(tmp_path, monkeypatch):
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    dyn = tmp_path / "rdsrn_x4_int8.tflite"
    dyn.write_bytes(b"x")
    static = tmp_path / "rdsrn_x4_fp16_192x192.tflite"
    static.write_bytes(b"y")
    metas = {str(dyn): {"input_size": "dynamic", "input_name": "serving_default_input:0"},
             str(static): {"input_size": [192, 192], "input_name": "serving_default_input:0"}}
    import rdsrn.runtimes.tflite_meta as tm
    monkeypatch.setattr(tm, "read_tflite_metadata", lambda p: metas[str(p)])
    assert input_layer_for(dyn, (180, 320)) == ("serving_default_input:0", (180, 320))
    assert input_layer_for(static, (180, 320)) is None
    calls = []

    def fake(argv, timeout):
        calls.append(argv[-1])
        if argv[-1] == "get-state":
            return 0, "device\n", ""
        if "getprop" in argv[-1]:
            return 0, "Pixel 8\nTensor G3\n14\naarch64\n", ""
        if "--graph=" in argv[-1]:
            return 0, GPU_FULL if "fp16" in argv[-1] else GPU_PARTIAL, ""
        return 0, "", ""

    opts = DelegateOptions(gpu_backend="cl")
    _, rows = adb_bench("S", binary, [str(dyn), str(static)], [1], "gpu", 1, 20,
                        exec_fn=fake, options=opts, input_hw=(180, 320))
    runs = [c for c in calls if "--graph=" in c]
    assert "--input_layer_shape=1,180,320,3" in runs[0] and "input_layer" not in runs[1]
    assert all("--gpu_backend=cl" in r for r in runs)
    assert [r["ops_delegated"] for r in rows] == ["189/191 (2 partitions)",
                                                  "247/247 (1 partition)"]
    assert rows[0]["runtime"] == "benchmark_model (tflite)"
    # litert tool + dynamic file: that row is an error, the static one still runs
    _, rows = adb_bench("S", binary, [str(dyn), str(static)], [1], "gpu", 1, 20,
                        exec_fn=fake, options=DelegateOptions(tool="litert"),
                        input_hw=(180, 320))
    assert rows[0]["status"] == "error" and "static-shape" in rows[0]["error"]
    assert rows[1]["status"] == "ok"
    # the delegate columns appear in the table only when a row has them
    base = {"model": "rdsrn_x4", "format": "tflite", "precision": "fp16", "threads": 1}
    lines = report.table_lines([{**base, **rows[1]}], markdown=True)
    assert "| delegate | ops delegated | status |" in lines[0]
    assert "| gpu | 247/247 (1 partition) | ok |" in lines[2]
    assert "ops delegated" not in report.table_lines([base])[0]


def test_cli_flags_to_options():
    from rdsrn.benchmarks.cli import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--target", "adb", "--delegate", "npu",
                      "--npu-dispatch-dir", "/data/local/tmp/rdsrn/npu"])
    o = delegate_options(a)
    assert o.tool == "litert" and o.npu_dispatch_dir == "/data/local/tmp/rdsrn/npu"
    a = p.parse_args(["--target", "adb", "--delegate", "gpu", "--gpu-precision", "fp32",
                      "--gpu-backend", "gl"])
    o = delegate_options(a)
    assert (o.tool, o.gpu_precision, o.gpu_backend) == ("tflite", "fp32", "gl")
    assert delegate_options(argparse.Namespace()).tool == "tflite"
    json.dumps(vars(o))  # plain values, recordable in a report
