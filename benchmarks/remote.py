"""Remote targets of `rdsrn bench`: an ssh host (Raspberry Pi-class board) and an
Android device over adb.

ssh://user@host[:port]  copies device_bench.py and the model files to a temporary
    folder on the host (scp), runs `python3 device_bench.py MODEL ... --json -` there
    (ssh) and parses its JSON; the host needs numpy and one runtime, never torch.
adb[:SERIAL]            pushes the .tflite and LiteRT's `benchmark_model` binary (a path
    the user gives: this repository ships no binaries) to /data/local/tmp/rdsrn, runs
    it with thread and delegate flags, and parses its text output.

Command construction is separate from execution (`Exec` is injectable) so the tests
check the exact argv lists with a fake ssh/adb.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

from rdsrn.runtimes.errors import UserError

# (argv, timeout seconds) -> (returncode, stdout, stderr)
Exec = Callable[[Sequence[str], float], tuple[int, str, str]]

DEVICE_BENCH = Path(__file__).with_name("device_bench.py")
ADB_DIR = "/data/local/tmp/rdsrn"
DELEGATES = ("xnnpack", "gpu", "nnapi", "npu", "none")
# benchmark_model builds: "tflite" = TensorFlow Lite's tools/benchmark (Interpreter API,
# delegate providers: --use_xnnpack/--use_gpu/--use_nnapi ...); "litert" = LiteRT's
# litert/tools:benchmark_model (CompiledModel API: --use_cpu/--use_gpu/--use_npu,
# --dispatch_library_path ...), the one that runs NPU (AOT-compiled or JIT) models.
BENCHMARK_TOOLS = ("tflite", "litert")


@dataclass(frozen=True)
class DelegateOptions:
    """Accelerator options for benchmark_model on the device.

    gpu_precision: "fp16" lets the GPU compute in half precision (the delegates'
        default; tflite --gpu_precision_loss_allowed, litert --allow_fp16), "fp32" not.
    gpu_backend: tflite "cl" | "gl" (OpenCL / OpenGL ES), litert "webgpu"; None = the
        binary's default (OpenCL, falling back to OpenGL).
    gpu_quant: tflite --gpu_experimental_enable_quant (run INT8 files on the GPU by
        dequantizing; the delegate's default is on).
    npu_dispatch_dir / npu_compiler_plugin_dir: folders ON THE DEVICE holding
        libLiteRtDispatch_<vendor>.so (always needed for NPU) and
        libLiteRtCompilerPlugin_<vendor>.so (only for on-device JIT compilation of a
        model that was not compiled ahead of time).
    require_full_delegation: litert: fail instead of falling back to the CPU.
    tool: which benchmark_model build the binary is (BENCHMARK_TOOLS); NPU needs
        "litert".
    """

    gpu_precision: str = "fp16"
    gpu_backend: str | None = None
    gpu_quant: bool = True
    npu_dispatch_dir: str | None = None
    npu_compiler_plugin_dir: str | None = None
    require_full_delegation: bool = False
    tool: str = "tflite"


def run_process(argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
    """Default Exec: run argv, capture text output; a missing program or a timeout
    becomes a non-zero return code with a one-line message (never an exception)."""
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: timed out after {timeout:.0f} s"
    return p.returncode, p.stdout, p.stderr


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


# ------------------------------------------------------------------------------- ssh


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    host: str
    port: int | None

    @property
    def dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        return f"ssh://{self.dest}" + (f":{self.port}" if self.port else "")


def parse_target(text: str) -> tuple[str, Any]:
    """"local" | "ssh://[user@]host[:port]" | "adb" | "adb:SERIAL" -> (kind, detail)."""
    if text in ("", "local"):
        return "local", None
    if text.startswith("ssh://"):
        m = re.fullmatch(r"ssh://(?:([^@/:\s]+)@)?([^@/:\s]+)(?::(\d+))?/?", text)
        if not m:
            raise UserError(f"bad ssh target {text!r}; expected ssh://user@host[:port]")
        return "ssh", SshTarget(m.group(1), m.group(2), int(m.group(3)) if m.group(3) else None)
    if text == "adb":
        return "adb", None
    if text.startswith("adb:") and len(text) > 4:
        return "adb", text[4:]
    raise UserError(f"bad target {text!r}; expected local, ssh://user@host[:port], "
                    "adb or adb:SERIAL")


def _ssh_base(t: SshTarget) -> list[str]:
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if t.port:
        argv += ["-p", str(t.port)]
    return argv + [t.dest]


def ssh_commands(t: SshTarget, remote_dir: str, files: Sequence[Path | str],
                 bench_args: Sequence[str], python: str = "python3") -> dict[str, Any]:
    """argv lists: mkdir, scp of each file, one run per bench_args entry, cleanup.

    `bench_args` are device_bench.py arguments in which the model path is already the
    remote one (remote_dir/basename)."""
    rdir = shlex.quote(remote_dir)
    scp = ["scp", "-q", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if t.port:
        scp += ["-P", str(t.port)]
    run = _ssh_base(t) + [
        f"cd {rdir} && {shlex.quote(python)} device_bench.py "
        + " ".join(shlex.quote(a) for a in bench_args)]
    return {
        "mkdir": _ssh_base(t) + [f"mkdir -p {rdir}"],
        "copy": scp + [str(f) for f in files] + [f"{t.dest}:{remote_dir}/"],
        "run": run,
        "cleanup": _ssh_base(t) + [f"rm -rf {rdir}"],
    }


def remote_model_args(model_name: str, threads: int, input_size: str, warmup: int,
                      runs: int, min_time: float, scale: int) -> list[str]:
    """device_bench.py arguments for one row (model_name is the remote basename or
    "bicubic")."""
    return [model_name, "--threads", str(threads), "--input", input_size,
            "--warmup", str(warmup), "--runs", str(runs), "--min-time", str(min_time),
            "--scale", str(scale), "--json", "-"]


def parse_device_json(stdout: str) -> dict[str, Any]:
    """The JSON object device_bench.py prints (the last line that parses)."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise ValueError("no JSON in device_bench output")


def ssh_bench(t: SshTarget, models: Sequence[str], threads: Sequence[int], input_size: str,
              warmup: int, runs: int, min_time: float, scale: int,
              exec_fn: Exec = run_process, python: str = "python3",
              timeout: float = 900.0) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Run device_bench.py on the host for every (model, threads).

    `models` are local files or "bicubic". Returns (remote machine info or None, rows);
    an unreachable host or a failed copy gives one error row per case."""
    remote_dir = f"/tmp/rdsrn-bench-{abs(hash((t.dest, tuple(models)))) % 10**8}"
    files = [DEVICE_BENCH] + [Path(m) for m in models if m != "bicubic"]
    names = [m if m == "bicubic" else Path(m).name for m in models]
    cases = [(m, n, th) for m, n in zip(models, names) for th in threads]

    def all_failed(msg: str) -> tuple[None, list[dict[str, Any]]]:
        return None, [{"model_file": m, "threads": th, "status": "error",
                       "error": f"{t.label}: {msg}"} for m, _, th in cases]

    probe = ssh_commands(t, remote_dir, files, [], python)
    rc, out, err = exec_fn(probe["mkdir"], 30)
    if rc != 0:
        return all_failed(f"unreachable ({last_line(err) or f'ssh exit {rc}'})")
    rc, out, err = exec_fn(probe["copy"], 300)
    if rc != 0:
        return all_failed(f"copy failed ({last_line(err) or f'scp exit {rc}'})")
    machine = None
    rows = []
    for local, name, th in cases:
        args = remote_model_args(name, th, input_size, warmup, runs, min_time, scale)
        cmd = ssh_commands(t, remote_dir, files, args, python)["run"]
        rc, out, err = exec_fn(cmd, timeout)
        try:
            doc = parse_device_json(out)
            row = doc["row"]
            machine = machine or doc.get("machine")
        except (ValueError, KeyError):
            row = {"status": "error",
                   "error": f"{t.label}: {last_line(err) or last_line(out) or f'exit {rc}'}"}
        row["model_file"] = local
        row["threads"] = th
        rows.append(row)
    exec_fn(probe["cleanup"], 30)
    return machine, rows


# ------------------------------------------------------------------------------- adb


def adb_base(serial: str | None) -> list[str]:
    return ["adb"] + (["-s", serial] if serial else [])


def benchmark_model_flags(remote_model: str, threads: int, delegate: str, warmup: int,
                          runs: int, min_time: float = 0.0, profile: bool = False,
                          options: DelegateOptions | None = None,
                          input_layer: tuple[str, tuple[int, int]] | None = None
                          ) -> list[str]:
    """benchmark_model flags for one run.

    `input_layer`: (input tensor name, (H, W)) for a dynamic-shape file, which
    benchmark_model would otherwise run at its stored 1x1 shape (tflite tool only)."""
    o = options or DelegateOptions()
    if delegate not in DELEGATES:
        raise UserError(f"unknown delegate {delegate!r}; choices: {', '.join(DELEGATES)}")
    if o.tool not in BENCHMARK_TOOLS:
        raise UserError(f"unknown benchmark tool {o.tool!r}; choices: "
                        f"{', '.join(BENCHMARK_TOOLS)}")
    if o.gpu_precision not in ("fp16", "fp32"):
        raise UserError(f"gpu precision must be fp16 or fp32, got {o.gpu_precision!r}")
    backends = ("cl", "gl") if o.tool == "tflite" else ("webgpu",)
    if o.gpu_backend is not None and o.gpu_backend not in backends:
        raise UserError(f"gpu backend {o.gpu_backend!r} is not one the {o.tool} "
                        f"benchmark_model takes ({', '.join(backends)})")
    flags = [f"--graph={remote_model}", f"--num_threads={threads}",
             f"--warmup_runs={warmup}", f"--num_runs={runs}",
             "--report_peak_memory_footprint=true"]
    if min_time > 0:
        flags.append(f"--min_secs={min_time:g}")
    if o.tool == "litert":
        return flags + _litert_flags(delegate, o, profile, input_layer)
    if delegate == "npu":
        raise UserError("the npu delegate needs LiteRT's benchmark_model "
                        "(litert/tools:benchmark_model; --benchmark-tool litert)")
    if input_layer is not None:
        name, (h, w) = input_layer
        flags += [f"--input_layer={name}", f"--input_layer_shape=1,{h},{w},3"]
    # XNNPACK is on by default in recent LiteRT; say so explicitly either way so the
    # run does not depend on the binary's default.
    flags.append(f"--use_xnnpack={'true' if delegate == 'xnnpack' else 'false'}")
    if delegate == "gpu":
        flags += ["--use_gpu=true",
                  f"--gpu_precision_loss_allowed={_tf(o.gpu_precision == 'fp16')}",
                  f"--gpu_experimental_enable_quant={_tf(o.gpu_quant)}"]
        if o.gpu_backend:
            flags.append(f"--gpu_backend={o.gpu_backend}")
    elif delegate == "nnapi":
        flags.append("--use_nnapi=true")
    if profile:
        flags.append("--enable_op_profiling=true")
    return flags


def _tf(v: bool) -> str:
    return "true" if v else "false"


def _litert_flags(delegate: str, o: DelegateOptions, profile: bool,
                  input_layer: tuple[str, tuple[int, int]] | None) -> list[str]:
    """LiteRT benchmark_model (CompiledModel) accelerator flags."""
    if input_layer is not None:
        raise UserError("LiteRT's benchmark_model cannot resize inputs: give it a "
                        "static-shape file (rdsrn export --input-size HxW)")
    if delegate == "nnapi":
        raise UserError("LiteRT's benchmark_model has no NNAPI accelerator; use the "
                        "TensorFlow Lite build (--benchmark-tool tflite)")
    flags = []
    if delegate == "gpu":
        flags += ["--use_gpu=true", f"--allow_fp16={_tf(o.gpu_precision == 'fp16')}"]
        if o.gpu_backend:
            flags.append(f"--gpu_backend={o.gpu_backend}")
    elif delegate == "npu":
        if not o.npu_dispatch_dir:
            raise UserError("the npu delegate needs the device folder of "
                            "libLiteRtDispatch_<vendor>.so (--npu-dispatch-dir)")
        flags += ["--use_npu=true", f"--dispatch_library_path={o.npu_dispatch_dir}"]
        if o.npu_compiler_plugin_dir:
            flags.append(f"--compiler_plugin_library_path={o.npu_compiler_plugin_dir}")
    if delegate in ("gpu", "npu") and o.require_full_delegation:
        flags += ["--use_cpu=false", "--require_full_delegation=true"]
    else:
        flags.append("--use_cpu=true")
    if profile:
        flags.append("--use_profiler=true")
    return flags


def adb_commands(serial: str | None, binary: str | Path, model: str | Path, threads: int,
                 delegate: str, warmup: int, runs: int, min_time: float = 0.0,
                 profile: bool = False, options: DelegateOptions | None = None,
                 input_layer: tuple[str, tuple[int, int]] | None = None
                 ) -> dict[str, list[str]]:
    """argv lists to prepare the device and run one benchmark."""
    base = adb_base(serial)
    remote_bin = f"{ADB_DIR}/benchmark_model"
    remote_model = f"{ADB_DIR}/{Path(model).name}"
    flags = benchmark_model_flags(remote_model, threads, delegate, warmup, runs,
                                  min_time, profile, options, input_layer)
    return {
        "state": base + ["get-state"],
        "mkdir": base + ["shell", f"mkdir -p {ADB_DIR}"],
        "push_binary": base + ["push", str(binary), remote_bin],
        "chmod": base + ["shell", f"chmod 755 {remote_bin}"],
        "push_model": base + ["push", str(model), remote_model],
        "run": base + ["shell", " ".join([remote_bin] + flags)],
        "device_info": base + ["shell", "getprop ro.product.model; getprop ro.soc.model; "
                               "getprop ro.build.version.release; uname -m"],
    }


_NUM = r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)"


def _f(text: str) -> float:
    return float(text)


def parse_benchmark_model(text: str) -> dict[str, Any]:
    """Parse benchmark_model's text output (any mix of "INFO: " prefixes, logcat tags).

    Returns (times in ms; absent fields omitted):
      init_ms, first_inference_ms, warmup_avg_ms, inference_avg_ms  (summary line, µs in
          the output, possibly in scientific notation such as 2.95034e+06)
      runs, min_ms, max_ms, std_ms, median_ms, p5_ms, p95_ms  (last "count=" line: the
          timed runs; the warm-up one comes first)
      memory_init_mb, memory_overall_mb, memory_kind ("delta" or "peak"),
      memory_peak_periodic_mb
      model_size_mb, delegates [{"delegate", "replaced", "total", "partitions"}],
      delegate_fallback (bool), op_summary [{"node_type", "count", "avg_ms", "pct"}],
      errors [lines starting with ERROR]
    """
    out: dict[str, Any] = {"delegates": [], "errors": [], "op_summary": [],
                           "delegate_fallback": False}
    m = None
    for m in re.finditer(r"Inference timings in us: Init: " + _NUM + r", First inference: "
                         + _NUM + r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): "
                         + _NUM, text):
        pass
    if m:
        out["init_ms"] = _f(m.group(1)) / 1e3
        out["first_inference_ms"] = _f(m.group(2)) / 1e3
        out["warmup_avg_ms"] = _f(m.group(3)) / 1e3
        out["inference_avg_ms"] = _f(m.group(4)) / 1e3
    counts = [c for c in re.finditer(r"count=(\d+)((?: \w+=" + _NUM + r")+)", text)
              if not c.group(0).startswith("count=0")]
    # The op-profile tables end with "Timings (microseconds): count=..." lines; the
    # timed-run line is the last "count=" line before the summary line.
    summary_at = m.start() if m else len(text)
    timed = [c for c in counts if c.start() < summary_at and "first=" in c.group(0)]
    if timed:
        c = timed[-1]
        fields = dict(re.findall(r"(\w+)=" + _NUM, c.group(2)))
        out["runs"] = int(c.group(1))
        for key, name in (("min", "min_ms"), ("max", "max_ms"), ("std", "std_ms"),
                          ("median", "median_ms"), ("p5", "p5_ms"), ("p95", "p95_ms"),
                          ("avg", "avg_ms")):
            if key in fields:
                out[name] = _f(fields[key]) / 1e3
    mem = re.search(r"(Memory footprint delta from the start of the tool|Peak memory "
                    r"footprint) \(MB\): init=" + _NUM + r" overall=" + _NUM, text)
    if mem:
        out["memory_kind"] = "delta" if mem.group(1).startswith("Memory") else "peak"
        out["memory_init_mb"] = _f(mem.group(2))
        out["memory_overall_mb"] = _f(mem.group(3))
    periodic = re.search(r"Overall peak memory footprint \(MB\) via periodic monitoring: "
                         + _NUM, text)
    if periodic:
        out["memory_peak_periodic_mb"] = _f(periodic.group(1))
    size = re.search(r"The input model file size \(MB\): " + _NUM, text)
    if size:
        out["model_size_mb"] = _f(size.group(1))
    for d in re.finditer(r"Replacing (\d+) out of (\d+) node\(s\) with delegate "
                         r"\(([^()]+)\) node, yielding (\d+) partitions", text):
        out["delegates"].append({"delegate": d.group(3), "replaced": int(d.group(1)),
                                 "total": int(d.group(2)), "partitions": int(d.group(4))})
    out.update(_parse_delegate_summary(text))
    if re.search(r"will not be executed by the delegate|not fully delegated|"
                 r"partially executed by the delegate|Falling back to (the )?CPU",
                 text, re.IGNORECASE) or out.get("gpu_split", {}).get("cpu"):
        out["delegate_fallback"] = True
    if "inference_avg_ms" not in out:
        out.update(_parse_litert_results(text))
    out["errors"] = [ln.strip() for ln in text.splitlines()
                     if re.match(r"\s*(?:\S+\s+)?ERROR:", ln)]
    out["op_summary"] = _parse_node_type_summary(text)
    return out


def _parse_delegate_summary(text: str) -> dict[str, Any]:
    """The delegate lines benchmark_model and the delegates log:

      Created TensorFlow Lite delegate for GPU.            -> created ["GPU"]
      Explicitly applied GPU delegate, and the model graph will be completely executed
      by the delegate.                                     -> applied [{"delegate":
                                                              "GPU", "coverage":
                                                              "complete"}]
      Though GPU delegate is explicitly applied, the model graph will not be executed
      by the delegate.                                     -> coverage "none"
      Following operations are not supported by GPU delegate:
      UNPACK: Operation is not supported.                  -> gpu_unsupported
      294 operations will run on the GPU, and the remaining 2 operations will run on
      the CPU.                                             -> gpu_split {"gpu", "cpu"}
    """
    out: dict[str, Any] = {
        "created": [m.group(1) for m in re.finditer(
            r"Created TensorFlow Lite (?:XNNPACK )?delegate for (\w+)", text)],
        "applied": []}
    for m in re.finditer(r"Explicitly applied (\S+) delegate, and the model graph will be "
                         r"(completely|partially) executed by the delegate", text):
        out["applied"].append({"delegate": m.group(1), "coverage":
                               "complete" if m.group(2) == "completely" else "partial"})
    for m in re.finditer(r"Though (\S+) delegate is explicitly applied, the model graph "
                         r"will not be executed by the delegate", text):
        out["applied"].append({"delegate": m.group(1), "coverage": "none"})
    m = re.search(r"(\d+) operations? will run on the GPU, and the remaining (\d+) "
                  r"operations? will run on the CPU", text)
    if m:
        out["gpu_split"] = {"gpu": int(m.group(1)), "cpu": int(m.group(2))}
    unsupported = []
    block = text.split("Following operations are not supported by GPU delegate:")
    if len(block) > 1:
        for line in block[-1].splitlines()[1:]:
            u = re.search(r"([A-Z][A-Z0-9_]+): (.+)$", line)
            if not u:
                break
            unsupported.append({"op": u.group(1), "reason": u.group(2).strip()})
    out["gpu_unsupported"] = unsupported
    return out


def _parse_litert_results(text: str) -> dict[str, Any]:
    """LiteRT benchmark_model's "BENCHMARK RESULTS" block (ms in the output)."""
    out: dict[str, Any] = {}
    for key, pattern in (("init_ms", r"Model initialization:\s+" + _NUM + " ms"),
                         ("first_inference_ms", r"Warmup \(first\):\s+" + _NUM + " ms"),
                         ("warmup_avg_ms", r"Warmup \(avg\):\s+" + _NUM + " ms"),
                         ("inference_avg_ms", r"Inference \(avg\):\s+" + _NUM + " ms"),
                         ("min_ms", r"Inference \(min\):\s+" + _NUM + " ms"),
                         ("max_ms", r"Inference \(max\):\s+" + _NUM + " ms"),
                         ("std_ms", r"Inference \(std\):\s+" + _NUM),
                         ("memory_peak_periodic_mb", r"Peak memory:\s+" + _NUM + " MB"),
                         ("memory_init_mb", r"Init footprint:\s+" + _NUM + " MB"),
                         ("memory_overall_mb", r"Overall footprint:\s+" + _NUM + " MB")):
        m = None
        for m in re.finditer(pattern, text):
            pass
        if m:
            out[key] = _f(m.group(1))
    runs = re.findall(r"Inference \(avg\):\s+" + _NUM + r" ms \((\d+) runs\)", text)
    if runs:
        out["runs"] = int(runs[-1][1])
    if "memory_init_mb" in out:
        out["memory_kind"] = "peak"
    if out:
        out["tool"] = "litert"
    return out


# delegate -> how its TfLiteDelegate / provider is named in benchmark_model's log
_DELEGATE_NAMES = {"xnnpack": r"xnnpack", "gpu": r"gpu", "nnapi": r"nnapi",
                   "npu": r"dispatch|npu|qnn|neuron"}


def ops_delegated(parsed: dict[str, Any], delegate: str | None) -> str | None:
    """"replaced/total nodes (k partitions)" for the requested delegate, from the
    "Replacing ..." line, else the GPU delegate's own split, else the coverage
    benchmark_model states; None when the log says nothing."""
    if delegate == "none":
        return "0 (no delegate)"
    pat = _DELEGATE_NAMES.get(delegate or "", r"$^")
    recs = [d for d in parsed.get("delegates", []) if re.search(pat, d["delegate"], re.I)]
    if recs:
        replaced = sum(d["replaced"] for d in recs)
        parts = sum(d["partitions"] for d in recs)
        return f"{replaced}/{recs[0]['total']} ({parts} partition{'s' if parts != 1 else ''})"
    split = parsed.get("gpu_split")
    if delegate == "gpu" and split:
        return f"{split['gpu']}/{split['gpu'] + split['cpu']}"
    for a in parsed.get("applied", []):
        if re.search(pat, a["delegate"], re.I):
            return {"complete": "all", "partial": "some", "none": "0"}[a["coverage"]]
    return None


def _parse_node_type_summary(text: str) -> list[dict[str, Any]]:
    """Rows of the last "Summary by node type" table (the regular runs' profile)."""
    blocks = text.split("Summary by node type")
    if len(blocks) < 2:
        return []
    rows = []
    for line in blocks[-1].splitlines()[1:]:
        parts = line.split()
        if not parts:
            if rows:
                break
            continue
        if parts[0].startswith("[") or parts[0].startswith("="):
            continue
        # node type may contain no spaces: TYPE COUNT AVG_MS AVG% CDF% MEM TIMES
        m = re.match(r"\s*(\S+)\s+(\d+)\s+" + _NUM + r"\s+" + _NUM + r"%", line)
        if not m:
            if rows:
                break
            continue
        rows.append({"node_type": m.group(1), "count": int(m.group(2)),
                     "avg_ms": _f(m.group(3)), "pct": _f(m.group(4))})
    return rows


def row_from_benchmark_model(parsed: dict[str, Any], delegate: str | None = None
                             ) -> dict[str, Any]:
    """Map a parse to the common row keys. benchmark_model reports a mean and (newer
    builds) a median, not p90: p50_ms is the median when printed, else the mean.
    `delegate`: the one asked for, whose coverage becomes row["ops_delegated"]."""
    row: dict[str, Any] = {"status": "ok", "error": None}
    if "inference_avg_ms" not in parsed:
        err = parsed["errors"][-1] if parsed["errors"] else "no timing summary in output"
        return {"status": "error", "error": f"benchmark_model: {err}"[:300]}
    row["init_ms"] = parsed.get("init_ms")
    row["first_inference_ms"] = parsed.get("first_inference_ms")
    row["mean_ms"] = parsed["inference_avg_ms"]
    row["p50_ms"] = parsed.get("median_ms", parsed["inference_avg_ms"])
    row["p90_ms"] = None
    row["p99_ms"] = None
    row["std_ms"] = parsed.get("std_ms")
    row["min_ms"] = parsed.get("min_ms")
    row["max_ms"] = parsed.get("max_ms")
    row["runs"] = parsed.get("runs")
    row["fps"] = 1000.0 / row["p50_ms"] if row["p50_ms"] else None
    row["peak_rss_mb"] = parsed.get("memory_peak_periodic_mb",
                                    parsed.get("memory_overall_mb"))
    notes = []
    if "median_ms" not in parsed:
        notes.append("p50 = mean (no median printed)")
    for d in parsed["delegates"]:
        notes.append(f"{d['delegate']}: {d['replaced']}/{d['total']} nodes, "
                     f"{d['partitions']} partition(s)")
    for a in parsed.get("applied", []):
        notes.append(f"{a['delegate']} delegate: {a['coverage']} graph")
    if parsed.get("gpu_unsupported"):
        notes.append("not on the GPU: " + ", ".join(
            f"{u['op']} ({u['reason']})" for u in parsed["gpu_unsupported"]))
    if parsed["delegate_fallback"]:
        notes.append("delegate fell back to CPU")
    row["notes"] = "; ".join(notes)
    row["delegates"] = parsed["delegates"]
    if delegate is not None:
        row["delegate"] = delegate
        row["ops_delegated"] = ops_delegated(parsed, delegate)
    if parsed["op_summary"]:
        row["op_summary"] = parsed["op_summary"]
    return row


def input_layer_for(model: str | Path, input_hw: tuple[int, int] | None
                    ) -> tuple[str, tuple[int, int]] | None:
    """(input name, (H, W)) when `model` is a dynamic-shape rdsrn export and a size is
    known; None for static files (and files without rdsrn metadata)."""
    if input_hw is None:
        return None
    from rdsrn.runtimes.tflite_meta import read_tflite_metadata

    try:
        meta = read_tflite_metadata(model)
    except (OSError, ValueError):
        return None
    if meta.get("input_size", "dynamic") != "dynamic" or not meta.get("input_name"):
        return None
    return str(meta["input_name"]), (int(input_hw[0]), int(input_hw[1]))


def adb_bench(serial: str | None, binary: str | Path, models: Sequence[str],
              threads: Sequence[int], delegate: str, warmup: int, runs: int,
              min_time: float = 0.0, profile: bool = False, exec_fn: Exec = run_process,
              timeout: float = 900.0, options: DelegateOptions | None = None,
              input_hw: tuple[int, int] | None = None
              ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """benchmark_model on an Android device for each (.tflite, threads).

    `options`: GPU / NPU settings and which benchmark_model build `binary` is;
    `input_hw`: LR (H, W) that dynamic-shape files are resized to."""
    label = f"adb:{serial}" if serial else "adb"
    cases = [(m, th) for m in models for th in threads]

    def failed(msg: str, which=cases) -> list[dict[str, Any]]:
        return [{"model_file": m, "threads": th, "delegate": delegate, "status": "error",
                 "error": f"{label}: {msg}"} for m, th in which]

    if not binary or not Path(binary).is_file():
        return None, failed(f"benchmark_model binary not found: {binary!s} "
                            "(give --benchmark-binary PATH)")
    first = adb_commands(serial, binary, models[0] if models else "x.tflite", 1, delegate,
                         warmup, runs, options=options)  # bad options: UserError here
    rc, out, err = exec_fn(first["state"], 30)
    if rc != 0 or "device" not in out:
        return None, failed(f"no device ({last_line(err) or last_line(out) or f'exit {rc}'})")
    for step in ("mkdir", "push_binary", "chmod"):
        rc, out, err = exec_fn(first[step], 300)
        if rc != 0:
            return None, failed(f"{step} failed ({last_line(err) or f'exit {rc}'})")
    rc, out, _ = exec_fn(first["device_info"], 30)
    info = out.strip().splitlines() if rc == 0 else []
    machine = {"device": "android", "model": info[0] if info else "",
               "soc": info[1] if len(info) > 1 else "",
               "android": info[2] if len(info) > 2 else "",
               "arch": info[3] if len(info) > 3 else ""}
    rows = []
    for model in models:
        if not str(model).endswith(".tflite"):
            rows += failed("adb target runs .tflite files only", [(model, th) for th in threads])
            continue
        cmds = adb_commands(serial, binary, model, 1, delegate, warmup, runs)
        rc, out, err = exec_fn(cmds["push_model"], 300)
        if rc != 0:
            rows += failed(f"push failed ({last_line(err) or f'exit {rc}'})",
                           [(model, th) for th in threads])
            continue
        layer = input_layer_for(model, input_hw)
        for th in threads:
            try:
                cmd = adb_commands(serial, binary, model, th, delegate, warmup, runs,
                                   min_time, profile, options, layer)["run"]
            except UserError as e:
                rows += failed(str(e), [(model, th)])
                continue
            rc, out, err = exec_fn(cmd, timeout)
            row = row_from_benchmark_model(parse_benchmark_model(out + "\n" + err), delegate)
            row.update(model_file=str(model), threads=th, delegate=delegate,
                       runtime="benchmark_model" + (f" ({options.tool})" if options else ""))
            rows.append(row)
    return machine, rows
