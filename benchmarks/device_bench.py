#!/usr/bin/env python3
"""Device part of `rdsrn bench`: time one model file with numpy + one runtime.

Standalone on purpose: this one file (plus the model) is what `rdsrn bench --target
ssh://user@host` copies to a Raspberry Pi-class board, so it imports only the standard
library and numpy at module level, and the runtime it measures (ai_edge_litert or
tflite_runtime for .tflite, onnxruntime for .onnx, OpenCV for the bicubic floor) when
it is asked to. Never torch, never the rdsrn package.

    python3 device_bench.py MODEL.tflite --threads 2 --input 320x180 --runs 20 --json -
    python3 device_bench.py bicubic --scale 4 --input 320x180

Prints one JSON object: {"machine": {...}, "row": {...}} (schema SCHEMA_VERSION). Times
are milliseconds of wall-clock (time.perf_counter) per batch-1 inference, input already
in the model's tensor layout and dtype: the raw runtime call, no pre/post-processing.
A failure is reported as row["status"] = "error" with a one-line row["error"]; the exit
status is then 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

SCHEMA_VERSION = 1

# --------------------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name, vendor, family, flags (x86 "flags" or ARM "Features"), MHz and the
    ARM CPU part numbers from /proc/cpuinfo text."""
    out: dict[str, Any] = {"model_name": "", "vendor": "", "family": None, "flags": [],
                           "mhz": None, "cpu_parts": [], "board": ""}
    for line in text.splitlines():
        if ":" not in line:
            continue
        raw_key, _, value = line.partition(":")
        key, value = raw_key.strip().lower(), value.strip()
        if raw_key.strip() == "Model" and value:  # Raspberry Pi: board name
            out["board"] = value
        if key in ("model name", "hardware", "processor") and not out["model_name"]:
            if key != "processor" or not value.isdigit():
                out["model_name"] = value
        elif key == "vendor_id" and not out["vendor"]:
            out["vendor"] = value
        elif key == "cpu family" and out["family"] is None and value.isdigit():
            out["family"] = int(value)
        elif key in ("flags", "features") and not out["flags"]:
            out["flags"] = value.split()
        elif key == "cpu mhz" and out["mhz"] is None:
            try:
                out["mhz"] = float(value)
            except ValueError:
                pass
        elif key == "cpu part" and value not in out["cpu_parts"]:
            out["cpu_parts"].append(value)
    return out


def _max_freq_mhz() -> float | None:
    """cpufreq's maximum (kHz in sysfs), absent in most VMs."""
    raw = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    return int(raw) / 1000.0 if raw.isdigit() else None


def _os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def package_versions(names: tuple[str, ...] = (
        "numpy", "onnxruntime", "ai-edge-litert", "tflite-runtime", "openvino",
        "opencv-python-headless",
        "opencv-python", "torch", "tensorflow-cpu", "tensorflow", "onnx")) -> dict[str, str]:
    """Installed versions from package metadata (imports nothing)."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return {}
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, flags, clock, OS, Python, packages."""
    cpu = parse_cpuinfo(_read("/proc/cpuinfo"))
    max_mhz = _max_freq_mhz()
    return {
        "hostname": platform.node(),
        "arch": platform.machine(),
        "cpu": cpu["model_name"] or platform.processor(),
        "board": cpu["board"],
        "vendor": cpu["vendor"],
        "cpu_family": cpu["family"],
        "cpu_parts": cpu["cpu_parts"],
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "mhz": max_mhz or cpu["mhz"],
        "mhz_source": "cpufreq max" if max_mhz else "/proc/cpuinfo cpu MHz",
        "flags": cpu["flags"],
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "hypervisor": "hypervisor" in cpu["flags"],
    }


# ------------------------------------------------------------------------------ peak

# ARM "CPU part" ids of cores with two 128-bit NEON FMA pipes (A72/A76/A78/X1/A710/...).
_ARM_TWO_PIPES = {"0xd08", "0xd0b", "0xd0d", "0xd41", "0xd44", "0xd47", "0xd48", "0xd4d",
                  "0xd4e", "0xd0c", "0xd40", "0xd49", "0xd4f"}


def peak_macs_per_cycle(machine: dict[str, Any], precision: str) -> tuple[float, str]:
    """Multiply-adds per core per cycle the ISA allows for `precision`, and why.

    x86: AVX-512 FMA = 2 FMA units x 16 fp32 lanes = 32 fp32 MAC/cycle; AVX-512 VNNI
    (vpdpbusd) = 2 units x 64 int8 MAC = 128; AVX512_BF16 (vdpbf16ps) = 2 x 32 = 64;
    AMX tiles: 1024 bf16 / 2048 int8. AVX2 halves the vector widths. The two-unit
    assumption is Intel server's; AMD Zen 4 (family 25 with AVX-512) executes 512-bit
    ops on 256-bit datapaths, so its real peak is half — noted, not applied, so that
    fractions stay comparable with the brief's definition.
    aarch64: NEON 2 pipes x 4 fp32 lanes = 8; SDOT (asimddp) 2 x 16 = 32 int8;
    FP16 arithmetic (asimdhp) 2 x 8 = 16; one pipe on little cores (A53/A55).
    fp16 on x86 without AVX512-FP16 runs as fp32 (XNNPACK upcasts), so fp32's peak.
    """
    flags = set(machine.get("flags") or [])
    arch = str(machine.get("arch", "")).lower()
    note_zen4 = ""
    if machine.get("vendor") == "AuthenticAMD" and machine.get("cpu_family") == 25 \
            and "avx512f" in flags:
        note_zen4 = ("; NOTE AMD Zen 4 executes AVX-512 as 2x256-bit, its true peak is "
                     "half this")
    if arch in ("aarch64", "arm64"):
        parts = set(machine.get("cpu_parts") or [])
        pipes = 2 if (not parts or parts & _ARM_TWO_PIPES) else 1
        pipe_note = f"{pipes} NEON pipe(s)" + ("" if parts else " (CPU part unknown)")
        if precision == "int8":
            if "asimddp" in flags:
                return pipes * 16.0, f"aarch64 SDOT: {pipe_note} x 16 int8 MAC"
            return pipes * 8.0, f"aarch64 NEON int8 (no dot product): {pipe_note} x 8 MAC"
        if precision == "fp16" and ("asimdhp" in flags or "fphp" in flags):
            return pipes * 8.0, f"aarch64 FP16 FMLA: {pipe_note} x 8 fp16 lanes"
        return pipes * 4.0, f"aarch64 NEON FMLA: {pipe_note} x 4 fp32 lanes"
    if precision == "int8":
        if "amx_int8" in flags:
            return 2048.0, "AMX int8: 2048 MAC/cycle (TMUL)"
        if "avx512_vnni" in flags:
            return 128.0, "AVX-512 VNNI vpdpbusd: 2 units x 64 int8 MAC" + note_zen4
        if "avx_vnni" in flags:
            return 64.0, "AVX-VNNI (256-bit) vpdpbusd: 2 units x 32 int8 MAC"
        if "avx512bw" in flags:
            return 64.0, "AVX-512BW vpmaddubsw+vpmaddwd: ~2 x 32 int8 MAC" + note_zen4
        if "avx2" in flags:
            return 32.0, "AVX2 vpmaddubsw+vpmaddwd: ~2 x 16 int8 MAC"
        return 8.0, "SSE int8: ~8 MAC (rough)"
    if precision == "bf16":
        if "amx_bf16" in flags:
            return 1024.0, "AMX bf16: 1024 MAC/cycle (TMUL)"
        if "avx512_bf16" in flags:
            return 64.0, "AVX512_BF16 vdpbf16ps: 2 units x 32 bf16 MAC" + note_zen4
        # without native bf16 the kernels convert to fp32
    if precision == "fp16" and "avx512fp16" in flags:
        return 64.0, "AVX512-FP16 FMA: 2 units x 32 fp16 lanes"
    suffix = " (fp16 weights run as fp32 on this ISA)" if precision == "fp16" else ""
    if precision == "bf16":
        suffix = " (no native bf16: runs as fp32)"
    if "avx512f" in flags:
        return 32.0, "AVX-512 FMA: 2 units x 16 fp32 lanes" + suffix + note_zen4
    if "avx2" in flags and "fma" in flags:
        return 16.0, "AVX2 FMA: 2 units x 8 fp32 lanes" + suffix
    return 4.0, "SSE: ~4 fp32 MAC (rough)" + suffix


def peak_gmacs(machine: dict[str, Any], precision: str, threads: int) -> dict[str, Any]:
    """Peak GMAC/s of `threads` cores (capped at the usable cores) for `precision`,
    with the assumptions spelled out."""
    per_cycle, why = peak_macs_per_cycle(machine, precision)
    cores = max(1, min(int(threads), int(machine.get("cores") or 1)))
    mhz = machine.get("mhz")
    if not mhz:
        return {"gmacs": None, "assumptions": f"{why}; clock unknown"}
    gmacs = per_cycle * cores * float(mhz) / 1000.0
    return {
        "gmacs": gmacs,
        "macs_per_cycle_per_core": per_cycle,
        "cores": cores,
        "mhz": mhz,
        "assumptions": (f"{why}; x {cores} core(s) x {float(mhz):.0f} MHz "
                        f"({machine.get('mhz_source', '')}; turbo not counted) "
                        f"= {gmacs:.0f} GMAC/s"),
    }


# ------------------------------------------------------------------------- measuring


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process so far, MiB.

    Linux: VmHWM of /proc/self/status — not ru_maxrss, which a child process inherits
    from its parent's high-water mark across fork + exec."""
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an ascending list, q in 0..100."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(times_ms: list[float]) -> dict[str, Any]:
    """p50/p90/p99/mean/std/min/max in ms and FPS (1000 / p50) of the timed runs."""
    s = sorted(times_ms)
    p50 = percentile(s, 50)
    return {
        "runs": len(s),
        "p50_ms": p50,
        "p90_ms": percentile(s, 90),
        "p99_ms": percentile(s, 99),
        "mean_ms": statistics.fmean(s),
        "std_ms": statistics.stdev(s) if len(s) > 1 else 0.0,
        "min_ms": s[0],
        "max_ms": s[-1],
        "fps": 1000.0 / p50 if p50 > 0 else None,
    }


def measure(run_once: Callable[[], Any], warmup: int = 3, runs: int = 20,
            min_time_s: float = 0.0, max_runs: int = 10_000,
            max_time_s: float | None = None, min_runs: int = 3) -> dict[str, Any]:
    """First inference, `warmup` untimed runs, then timed runs: at least `runs` and
    at least `min_time_s` seconds (capped at `max_runs`).

    `max_time_s` bounds a slow model's row: warm-up and timed runs stop once they have
    taken that long (never fewer than `min_runs` timed runs; warm-up drops to one run
    when the first inference alone takes over a tenth of it). Returns summarize() plus
    first_inference_ms, warmup_runs and the raw times_ms."""
    t0 = time.perf_counter()
    run_once()
    first_s = time.perf_counter() - t0
    if max_time_s is not None and first_s > max_time_s / 10:
        warmup = min(warmup, 1)
    for _ in range(max(0, warmup)):
        run_once()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - start
        enough = len(times) >= max(1, runs) and (elapsed >= min_time_s
                                                 or len(times) >= max_runs)
        over_budget = (max_time_s is not None and elapsed >= max_time_s
                       and len(times) >= max(1, min_runs))
        if enough or over_budget:
            break
        t = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - t) * 1e3)
    out = summarize(times)
    out["first_inference_ms"] = first_s * 1e3
    out["warmup_runs"] = max(0, warmup)
    out["times_ms"] = times
    return out


# --------------------------------------------------------------------------- runners


def parse_size(text: str) -> tuple[int, int]:
    """"WxH" (e.g. "320x180") -> (H, W)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"size must be WIDTHxHEIGHT like 320x180, got {text!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 1 or h < 1:
        raise ValueError(f"size must be positive, got {text!r}")
    return h, w


def format_size(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def _random_tensor(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator
                   ) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


class Runner:
    """One loaded model with a fixed input tensor; run() is one raw inference."""

    runtime = "none"
    runtime_version = ""
    output_hw: tuple[int, int] = (0, 0)
    notes: list[str]

    def run(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


def _litert_interpreter_module() -> tuple[Any, str, str]:
    for module, label, dist in (("ai_edge_litert.interpreter", "ai_edge_litert",
                                 "ai-edge-litert"),
                                ("tflite_runtime.interpreter", "tflite_runtime",
                                 "tflite-runtime")):
        try:
            import importlib

            mod = importlib.import_module(module)
            return mod, label, package_versions((dist,)).get(dist, "")
        except ImportError:
            continue
    try:
        import tensorflow as tf  # last resort (heavy), host only

        return tf.lite, "tensorflow.lite", tf.__version__
    except ImportError:
        raise RuntimeError("no TFLite runtime: pip install ai-edge-litert "
                           "(or tflite-runtime)") from None


class TFLiteRunner(Runner):
    """LiteRT Interpreter. delegate "xnnpack" = the default CPU delegate (applied by the
    interpreter itself), "none" = builtin kernels only."""

    def __init__(self, path: str, threads: int, input_hw: tuple[int, int] | None,
                 delegate: str = "xnnpack", seed: int = 0) -> None:
        mod, self.runtime, self.runtime_version = _litert_interpreter_module()
        self.notes = []
        kwargs: dict[str, Any] = {"model_path": path, "num_threads": int(threads)}
        if delegate == "none":
            kwargs["experimental_op_resolver_type"] = \
                mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        elif delegate != "xnnpack":
            raise ValueError(f"delegate must be xnnpack or none here, got {delegate!r}")
        self.interpreter = mod.Interpreter(**kwargs)
        inp = self.interpreter.get_input_details()[0]
        sig = [int(v) for v in inp.get("shape_signature", inp["shape"])]
        fixed = tuple(int(v) for v in inp["shape"])
        if input_hw is not None and (sig[1] == -1 or sig[2] == -1):
            shape = (1, input_hw[0], input_hw[1], sig[3])
            self.interpreter.resize_tensor_input(inp["index"], list(shape), strict=False)
        else:
            shape = fixed
            if input_hw is not None and tuple(shape[1:3]) != tuple(input_hw):
                self.notes.append(f"fixed input {shape[2]}x{shape[1]} used")
        self.interpreter.allocate_tensors()
        self.input_hw = (int(shape[1]), int(shape[2]))
        self._index = inp["index"]
        self._x = _random_tensor(tuple(shape), inp["dtype"], np.random.default_rng(seed))
        self._out = self.interpreter.get_output_details()[0]["index"]
        self.interpreter.set_tensor(self._index, self._x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out)
        self.output_hw = (int(y.shape[1]), int(y.shape[2]))
        self.io_dtype = str(np.dtype(inp["dtype"]))

    def run(self) -> Any:
        self.interpreter.set_tensor(self._index, self._x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)

    def delegation(self) -> dict[str, Any] | None:
        """Which ops the delegate took, from the node list after allocate_tensors.

        The interpreter lists the original nodes plus one DELEGATE node per partition;
        walking back from each partition's outputs to its inputs through the original
        producers finds the nodes inside it. Uses a private API: None if unavailable."""
        try:
            nodes = self.interpreter._get_ops_details()
        except Exception:
            return None
        return delegation_summary(nodes)


def delegation_summary(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """{"partitions", "nodes", "delegated", "outside": {op: n}, "inside": {op: n}} from
    interpreter node details (dicts with index, op_name, inputs, outputs)."""
    orig = {n["index"]: n for n in nodes if n["op_name"] != "DELEGATE"}
    parts = [n for n in nodes if n["op_name"] == "DELEGATE"]
    producer = {int(t): i for i, n in orig.items() for t in n["outputs"]}
    inside: set[int] = set()
    for part in parts:
        stop = {int(t) for t in part["inputs"]}
        stack = [int(t) for t in part["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in stop or t in seen or t not in producer:
                continue
            seen.add(t)
            i = producer[t]
            if i not in inside:
                inside.add(i)
                stack.extend(int(v) for v in orig[i]["inputs"] if int(v) >= 0)

    def count(ids) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in ids:
            out[orig[i]["op_name"]] = out.get(orig[i]["op_name"], 0) + 1
        return dict(sorted(out.items()))

    return {"partitions": len(parts), "nodes": len(orig), "delegated": len(inside),
            "outside": count(i for i in orig if i not in inside), "inside": count(inside)}


def _input_hw(dims: list[Any], input_hw: tuple[int, int] | None, notes: list[str],
              what: str) -> tuple[int, int]:
    """(H, W) to feed: a fixed-size model's own (noted when --input differs), else
    --input (required for a dynamic-size model)."""
    if all(isinstance(v, int) and v > 0 for v in dims):
        hw = (int(dims[0]), int(dims[1]))
        if input_hw is not None and hw != tuple(input_hw):
            notes.append(f"fixed input {hw[1]}x{hw[0]} used")
        return hw
    if input_hw is None:
        raise ValueError(f"dynamic-size {what} model: give --input")
    return (int(input_hw[0]), int(input_hw[1]))


class OnnxRunner(Runner):
    def __init__(self, path: str, threads: int, input_hw: tuple[int, int] | None,
                 seed: int = 0) -> None:
        import onnxruntime as ort

        self.runtime, self.runtime_version = "onnxruntime", ort.__version__
        self.notes = []
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(path, sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        dims = list(inp.shape)
        nchw = dims[1] in (1, 3)
        hw_dims = dims[2:4] if nchw else dims[1:3]
        hw = _input_hw(hw_dims, input_hw, self.notes, "ONNX")
        c = dims[1] if nchw else dims[3]
        c = c if isinstance(c, int) and c > 0 else 3
        shape = (1, c, hw[0], hw[1]) if nchw else (1, hw[0], hw[1], c)
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
                 "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}.get(inp.type, np.float32)
        self.input_hw = hw
        self._feed = {inp.name: _random_tensor(shape, dtype, np.random.default_rng(seed))}
        self._out = [self.session.get_outputs()[0].name]
        y = self.run()[0]
        self.output_hw = (int(y.shape[2]), int(y.shape[3])) if nchw else \
            (int(y.shape[1]), int(y.shape[2]))
        self.io_dtype = str(np.dtype(dtype))

    def run(self) -> Any:
        return self.session.run(self._out, self._feed)


class OpenVINORunner(Runner):
    """OpenVINO Runtime, CPU device, f32 inference precision (the runtime layer's
    setting), latency hint; an IR model (.xml with its .bin)."""

    def __init__(self, path: str, threads: int, input_hw: tuple[int, int] | None,
                 seed: int = 0) -> None:
        import openvino as ov

        self.runtime, self.runtime_version = "openvino", ov.__version__
        self.notes = []
        core = ov.Core()
        model = core.read_model(path)
        dims = [d.get_length() if d.is_static else -1 for d in model.input(0).get_partial_shape()]
        hw = _input_hw(dims[2:4], input_hw, self.notes, "OpenVINO")
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()
        self.input_hw = hw
        self._x = _random_tensor((1, 3, hw[0], hw[1]), np.float32, np.random.default_rng(seed))
        y = self.run()
        self.output_hw = (int(y.shape[2]), int(y.shape[3]))
        self.io_dtype = "float32"

    def run(self) -> Any:
        return self.request.infer({0: self._x})[self.compiled.output(0)]


class BicubicRunner(Runner):
    """OpenCV bicubic resize of a uint8 RGB image: the floor every SR model must beat."""

    def __init__(self, scale: int, threads: int, input_hw: tuple[int, int], seed: int = 0
                 ) -> None:
        import cv2

        cv2.setNumThreads(int(threads))
        self.runtime, self.runtime_version = "opencv", cv2.__version__
        self.notes = []
        self._cv2 = cv2
        self.input_hw = tuple(input_hw)
        self._img = _random_tensor((input_hw[0], input_hw[1], 3), np.uint8,
                                   np.random.default_rng(seed))
        self._size = (input_hw[1] * scale, input_hw[0] * scale)
        self.output_hw = (input_hw[0] * scale, input_hw[1] * scale)
        self.io_dtype = "uint8"

    def run(self) -> Any:
        return self._cv2.resize(self._img, self._size, interpolation=self._cv2.INTER_CUBIC)


def open_runner(model: str, threads: int, input_hw: tuple[int, int] | None,
                scale: int = 4, delegate: str = "xnnpack") -> Runner:
    """A Runner for a .tflite / .onnx path or the word "bicubic"."""
    if model == "bicubic":
        if input_hw is None:
            raise ValueError("bicubic needs --input")
        return BicubicRunner(scale, threads, input_hw)
    if not os.path.isfile(model):
        raise FileNotFoundError(f"{model}: no such model file")
    lower = model.lower()
    if lower.endswith(".tflite"):
        return TFLiteRunner(model, threads, input_hw, delegate)
    if lower.endswith(".onnx"):
        return OnnxRunner(model, threads, input_hw)
    if lower.endswith(".xml"):
        return OpenVINORunner(model, threads, input_hw)
    raise ValueError(f"{model}: unknown model type (expected .tflite, .onnx, .xml "
                     "(OpenVINO) or bicubic)")


def one_line(exc: BaseException) -> str:
    """An exception as one short line: 'Type: first line of the message'."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    msg = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return msg[:300]


def bench_model(model: str, threads: int = 1, input_hw: tuple[int, int] | None = None,
                warmup: int = 3, runs: int = 20, min_time_s: float = 0.0,
                scale: int = 4, delegate: str = "xnnpack", macs: int | None = None,
                precision: str | None = None, machine: dict[str, Any] | None = None,
                keep_times: bool = False, max_time_s: float | None = None
                ) -> dict[str, Any]:
    """Measure one model; never raises for a model/runtime failure (status "error")."""
    row: dict[str, Any] = {"model_file": model, "threads": int(threads),
                           "delegate": delegate if model.endswith(".tflite") else None,
                           "status": "ok", "error": None}
    rss_before = peak_rss_mb()
    try:
        t0 = time.perf_counter()
        runner = open_runner(model, threads, input_hw, scale, delegate)
        row["init_ms"] = (time.perf_counter() - t0) * 1e3
        row.update(runtime=runner.runtime, runtime_version=runner.runtime_version,
                   input=format_size(runner.input_hw), output=format_size(runner.output_hw),
                   io_dtype=runner.io_dtype, notes="; ".join(runner.notes))
        if isinstance(runner, TFLiteRunner):
            deleg = runner.delegation()
            if deleg is not None:
                row["delegation"] = deleg
                if deleg["outside"] and delegate != "none":
                    runner.notes.append(
                        f"{deleg['partitions']} delegate partition(s); outside: " +
                        ", ".join(f"{k} x{v}" for k, v in deleg["outside"].items()))
                    row["notes"] = "; ".join(runner.notes)
        timing = measure(runner.run, warmup, runs, min_time_s, max_time_s=max_time_s)
        if not keep_times:
            timing.pop("times_ms")
        row.update(timing)
    except Exception as exc:  # one row fails, the caller goes on
        row.update(status="error", error=one_line(exc))
        return row
    row["rss_before_load_mb"] = rss_before
    row["peak_rss_mb"] = peak_rss_mb()
    if macs:
        add_throughput(row, macs, precision or "fp32", machine or machine_info())
    if os.path.isfile(model):
        row["size_mb"] = os.path.getsize(model) / 1e6
    return row


def add_throughput(row: dict[str, Any], macs: int, precision: str,
                   machine: dict[str, Any]) -> None:
    """Fill macs, gmacs_per_s (at p50) and peak_fraction of a timed row in place."""
    row["macs"] = int(macs)
    p50 = row.get("p50_ms")
    if not p50:
        return
    row["gmacs_per_s"] = macs / (p50 / 1e3) / 1e9
    peak = peak_gmacs(machine, precision, int(row.get("threads") or 1))
    row["peak_gmacs"] = peak["gmacs"]
    row["peak_assumptions"] = peak["assumptions"]
    row["peak_fraction"] = row["gmacs_per_s"] / peak["gmacs"] if peak["gmacs"] else None


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="model file (.tflite / .onnx) or 'bicubic'")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--input", default=None, help="LR input size WxH, e.g. 320x180 "
                   "(default: the model's fixed size)")
    p.add_argument("--scale", type=int, default=4, help="bicubic only")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--min-time", type=float, default=0.0, help="seconds of timed runs, "
                   "at least (with --runs as the minimum count)")
    p.add_argument("--max-time", type=float, default=None, help="stop a slow model's "
                   "timed runs after this many seconds (at least 3 runs)")
    p.add_argument("--delegate", choices=("xnnpack", "none"), default="xnnpack")
    p.add_argument("--macs", type=int, default=None, help="MACs of one inference, for "
                   "GMAC/s and peak fraction")
    p.add_argument("--precision", default=None, help="fp32 | fp16 | int8 (peak to use)")
    p.add_argument("--times", action="store_true", help="keep every run's time")
    p.add_argument("--dump-output", metavar="NPY", help="save the output for the fixed "
                   "seeded input (functional cross-machine checks, e.g. under qemu)")
    p.add_argument("--json", default="-", help="output file ('-' = stdout)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    machine = machine_info()
    try:
        input_hw = parse_size(args.input) if args.input else None
    except ValueError as exc:
        print(f"device_bench: error: {exc}", file=sys.stderr)
        return 2
    row = bench_model(args.model, args.threads, input_hw, args.warmup, args.runs,
                      args.min_time, args.scale, args.delegate, args.macs,
                      args.precision, machine, args.times, args.max_time)
    if args.dump_output and row["status"] == "ok":
        try:  # same seeded input as the timed runs
            y = open_runner(args.model, args.threads, input_hw, args.scale,
                            args.delegate).run()
            np.save(args.dump_output, np.asarray(y[0] if isinstance(y, list) else y))
            row["output_dump"] = args.dump_output
        except Exception as exc:
            row.update(status="error", error=f"dump failed: {one_line(exc)}")
    text = json.dumps({"schema": SCHEMA_VERSION, "machine": machine, "row": row})
    if args.json == "-":
        print(text)
    else:
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, args.json)
    return 0 if row["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
