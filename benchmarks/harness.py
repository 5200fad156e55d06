"""The host side of `rdsrn bench`: cases -> artifacts -> measured rows.

A case is (model, format, precision, threads, LR input size). Each case is timed in a
fresh subprocess — device_bench.py for ONNX / TFLite / bicubic (the very code that runs
on a Pi), host_runners for PyTorch eager and the runtime layer — so its peak RSS is its
own and a crashing runtime costs one row. Parameters and MACs come from the PyTorch
definition (rdsrn.macs); accuracy (Y-PSNR/SSIM, ΔPSNR vs the FP32 PyTorch model) is
measured in this process through rdsrn.evaluate, outside the timed windows.

Any failure of one case (no exporter for the architecture, a runtime that cannot load
the file, a timeout) becomes that row's status "error" with a one-line message.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from rdsrn.runtimes.errors import UserError
from rdsrn.runtimes.formats import FORMATS

from . import device_bench as db

REPO = Path(__file__).resolve().parents[1]
DEVICE_BENCH = Path(db.__file__).resolve()
# Working folder of the measuring / exporting subprocesses: the folder that holds the
# `rdsrn` package (the repository root of a source checkout, site-packages of a wheel),
# so `python -m rdsrn...` finds the same package and no folder of ours shadows another
# package's top-level modules.
SUBPROCESS_CWD = Path(importlib.util.find_spec("rdsrn").origin).resolve().parents[1]

# Optional packages and the pip extra that brings them (one-line row errors).
TORCH_MISSING = "needs PyTorch: pip install 'rdsrn[train]'"
EXPORT_MISSING = ("exporting it needs PyTorch and TensorFlow: pip install 'rdsrn[export]' "
                  "(or measure a file: --artifact FILE, --suite device)")


def have(module: str) -> bool:
    """Whether a top-level module is importable (nothing is imported)."""
    return importlib.util.find_spec(module) is not None

# format -> precisions it is measured in. "bicubic" is OpenCV's resize (uint8).
FORMAT_PRECISIONS: dict[str, tuple[str, ...]] = {
    "pytorch": ("fp32", "bf16"),
    **{name: fmt.precisions for name, fmt in FORMATS.items()},  # onnx, tflite, openvino
    "bicubic": ("uint8",),
    "upscaler": ("fp32", "fp16", "int8"),  # runtimes.Upscaler end to end (overhead rows)
}

# Published x4 Set5 Y-PSNR of the comparison networks, with sources (the RDSRN paper's
# Table II for SRCNN/RDN/CARN/RDSRN; IMDN's own paper for IMDN).
PUBLISHED_SET5_X4: dict[str, tuple[float, str]] = {
    "srcnn_x4": (30.48, "Dong et al. TPAMI 2016 (RDSRN paper Table II)"),
    "carn_x4": (32.13, "Ahn et al. ECCV 2018 (RDSRN paper Table II)"),
    "imdn_x4": (32.21, "Hui et al. ACM MM 2019, Table 3"),
    "rlfn_x4": (32.24, "Kong et al. CVPRW 2022, Table 2"),
    "rdn_x4": (32.47, "Zhang et al. CVPR 2018 (RDSRN paper Table II)"),
    "rdsrn_x4": (32.34, "Woo et al., RDSRN paper Table II"),
}


@dataclass
class Case:
    """One row to measure. `input_hw` is the LR (H, W)."""

    model: str  # registry name, or "bicubic"
    format: str
    precision: str
    threads: int
    input_hw: tuple[int, int]
    overrides: dict[str, Any] = field(default_factory=dict)
    artifact: str | None = None  # a given .onnx/.tflite file (else exported on demand)
    label: str = ""
    scale: int = 4
    via: str = "tflite"  # the artifact format an "upscaler" row runs
    weights_sha256: str | None = None  # a given artifact's source weights (metadata)

    @property
    def display(self) -> str:
        return self.label or self.model

    @property
    def artifact_format(self) -> str:
        return self.via if self.format == "upscaler" else self.format


@dataclass
class Options:
    warmup: int = 3
    runs: int = 20
    min_time: float = 0.0
    max_time: float | None = 30.0  # seconds of timed runs per row, at most (>= 3 runs)
    timeout: float = 900.0  # per measuring subprocess
    cache_dir: Path = Path(tempfile.gettempdir()) / "rdsrn-bench-artifacts"
    export: bool = True  # export missing artifacts with `rdsrn export`
    weights: str | None = None  # .safetensors for RDSRN rows (default: shipped / random)
    seed: int = 0
    accuracy: str = "auto"  # auto (trained weights only) | always | never
    accuracy_data: list[Path] = field(default_factory=list)
    pause_pid_file: str | None = None
    # With a pid file: before each row, wait (job resumed meanwhile) until the other
    # CPU load is below this fraction, for at most idle_wait seconds.
    idle_threshold: float | None = 0.15
    idle_wait: float = 60.0
    python: str = sys.executable
    log: Callable[[str], None] = print


# ----------------------------------------------------------------- pause background


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat (0, 0 if unavailable)."""
    try:
        with open("/proc/stat") as f:
            parts = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def background_load(seconds: float = 0.3) -> float | None:
    """Fraction of all CPUs busy while this process sleeps `seconds` (other load)."""
    b0, t0 = _cpu_times()
    time.sleep(seconds)
    b1, t1 = _cpu_times()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else None


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _wait_stopped(pid: int, timeout: float = 2.0) -> None:
    """SIGSTOP is delivered asynchronously: wait until the process shows state T (its
    threads may still be finishing a time slice otherwise)."""
    end = time.monotonic() + timeout
    while _proc_state(pid) not in ("T", "t", "?") and time.monotonic() < end:
        time.sleep(0.005)


@contextmanager
def paused(pid_file: str | None, log: Callable[[str], None] = print) -> Iterator[bool]:
    """SIGSTOP the process in `pid_file` for the duration (e.g. a training job), and
    SIGCONT it on exit — also on an exception, Ctrl-C or SIGTERM. Yields whether a
    process was paused. A missing / stale pid file pauses nothing."""
    pid = None
    if pid_file:
        try:
            pid = int(Path(pid_file).read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            log(f"bench: no running process in {pid_file}; nothing paused")
            pid = None
    if pid is None:
        yield False
        return
    old = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # resume before dying
        os.kill(pid, signal.SIGCONT)
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    os.kill(pid, signal.SIGSTOP)
    _wait_stopped(pid)
    try:
        yield True
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except OSError:
            pass
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------- model facts


def create_torch_model(case: Case, opts: Options, weights: str | None = None) -> Any:
    """The case's PyTorch model (weights: given file, else seeded random init)."""
    import torch

    from rdsrn.models import create_model

    torch.manual_seed(opts.seed)
    return create_model(case.model, weights=weights, **case.overrides).float().eval()


def weights_for(case: Case, opts: Options) -> tuple[str | None, str]:
    """(weights file or None, kind: "given" | "shipped" | "random") for a model case.

    Shipped weights only fit the registry architecture (no overrides)."""
    if case.model == "bicubic":
        return None, "none"
    if case.artifact:
        return _artifact_weights(case, opts)
    given = given_weights(opts.weights, case.model)
    if given and not case.overrides:
        return given, "given"
    from rdsrn.weights import weights_path

    path = weights_path(case.model)
    if path.is_file() and not case.overrides:
        return str(path), "shipped"
    return None, "random"


def given_weights(spec: str | None, model: str) -> str | None:
    """The weights file `--weights` gives for registry model `model`: SPEC is FILE (for
    the RDSRN rows) or NAME=FILE[,NAME=FILE...] (per network, e.g.
    rlfn_x4=rlfn_x4.pth,imdn_x4=IMDN_x4.pth)."""
    if not spec:
        return None
    if "=" not in spec:
        return spec if model.startswith("rdsrn") else None
    pairs = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    return pairs.get(model)


def _artifact_weights(case: Case, opts: Options) -> tuple[str | None, str]:
    """For a given artifact: the PyTorch weights it was exported from, when we have
    them (sha256 match), for the ΔPSNR reference. An INT8 file made from the shipped QAT
    weights (<model>_qat) is compared with the shipped FP32 weights: what it replaces."""
    sha = case.weights_sha256 or ""
    if sha.startswith("random"):
        return None, "random"
    from rdsrn.weights import file_sha256, weights_path

    fp32 = weights_path(case.model)
    given = given_weights(opts.weights, case.model)
    for cand in (given, str(fp32)):
        if cand and Path(cand).is_file() and file_sha256(cand) == sha:
            return cand, "shipped" if cand != given else "given"
    qat = weights_path(f"{case.model}_qat")
    if qat.is_file() and fp32.is_file() and file_sha256(qat) == sha:
        return str(fp32), "shipped"
    return None, "artifact"


def model_counts(case: Case, opts: Options) -> dict[str, Any]:
    """params and MACs of one inference at the case's input size (HR for SRCNN)."""
    if case.model == "bicubic":
        return {"params": 0, "macs": None}
    if not have("torch"):  # counted from the PyTorch definition: unknown without it
        return {"params": None, "macs": None}
    import torch

    from rdsrn.macs import count_macs, count_params
    from rdsrn.models import create_model

    with torch.device("meta"):  # shapes only: no weight init or memory
        model = create_model(case.model, **case.overrides)
    h, w = case.input_hw
    if getattr(model, "pre_upscaled", False):
        h, w = h * model.scale, w * model.scale
    return {"params": count_params(model),
            "macs": count_macs(model, (h, w), getattr(model, "in_channels", 3))}


# ------------------------------------------------------------------------ artifacts


class ArtifactError(Exception):
    """No artifact for this case (one-line reason)."""


@functools.lru_cache(maxsize=1)
def _exporter_fingerprint() -> str:
    """Hash of the exporter's and model's source: a changed exporter never reuses an
    artifact cached by an older one."""
    h = hashlib.sha256()
    for package in ("rdsrn.export", "rdsrn.models"):
        spec = importlib.util.find_spec(package)
        folder = Path(spec.origin).parent if spec and spec.origin else None
        for f in sorted(folder.glob("*.py")) if folder else []:
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _cache_key(case: Case, weights: str | None, opts: Options) -> str:
    ident = json.dumps([case.model, case.overrides, case.format, case.precision,
                        weights and Path(weights).stat().st_mtime_ns, weights, opts.seed,
                        _exporter_fingerprint()], sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def _write_random_weights(case: Case, opts: Options, path: Path) -> None:
    """A seeded random-init .safetensors with the config in its metadata (what
    `rdsrn export --model FILE` reads) for architectures with no trained weights."""
    from rdsrn.weights import save_weights

    model = create_torch_model(case, opts)
    save_weights(path, model, {"model": case.model, "config": dict(model.config),
                               "note": f"random init, torch seed {opts.seed} (benchmark)"})


def prepare_artifact(case: Case, opts: Options) -> Path:
    """The .onnx/.tflite file for a case: the given one, a cached export, or a fresh
    export (RDSRN: `rdsrn export`; other architectures: plain torch.onnx for ONNX)."""
    if case.artifact:
        path = Path(case.artifact)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such model file")
        return path
    weights, kind = weights_for(case, opts)
    fmt = case.artifact_format
    suffix = FORMATS[fmt].suffix
    label = "_".join([case.model] + [f"{k}{v}" for k, v in sorted(case.overrides.items())])
    key_case = Case(case.model, fmt, case.precision, 1, case.input_hw, case.overrides)
    out = opts.cache_dir / (f"{label}_{case.precision}_{_cache_key(key_case, weights, opts)}"
                            f"{suffix}")
    if out.is_file():
        return out
    if not opts.export:
        raise ArtifactError(f"no {fmt} {case.precision} artifact for "
                            f"{case.display} (export disabled)")
    rdsrn = case.model.startswith("rdsrn")
    if fmt == "tflite" and not rdsrn:
        raise ArtifactError(f"no TFLite exporter for {case.model} (the TFLite converter "
                            "covers RDSRN only)")
    needed = ("torch", "tensorflow") if fmt == "tflite" or rdsrn else ("torch", "onnx",
                                                                       "onnxruntime")
    if fmt == "openvino":
        needed = ("torch", "onnx", "onnxruntime", "openvino")
    if not all(have(m) for m in needed):
        raise ArtifactError(f"no {fmt} {case.precision} artifact for {case.display}: "
                            + EXPORT_MISSING)
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    _export(key_case, opts, weights, kind, out)
    return out


def _export(case: Case, opts: Options, weights: str | None, kind: str, out: Path) -> None:
    """`rdsrn export` of the case's network into `out` (random weights: a seeded random
    init saved with its config, so overridden architectures export too)."""
    with tempfile.TemporaryDirectory(dir=opts.cache_dir) as tmp:
        if weights is None:
            spec = str(Path(tmp) / f"{case.model}_random.safetensors")
            _write_random_weights(case, opts, Path(spec))
            model_args = ["--model", spec]
        elif weights.endswith(".safetensors") and case.model.startswith("rdsrn"):
            model_args = ["--model", weights]
        else:
            model_args = ["--model", case.model, "--weights", weights]
        outdir = Path(tmp) / "out"
        outdir.mkdir()
        argv = [opts.python, "-m", "rdsrn.cli", "export", *model_args,
                "--format", case.format, "--precision", case.precision,
                "--out", str(outdir)]
        if case.precision == "int8":
            from rdsrn.export.common import data_dir

            argv += ["--calib", str(data_dir() / "train")]
            if kind == "random":  # speed-only rows: the ΔPSNR gate is meaningless and a
                # small calibration set is enough (it does not change the graph)
                argv += ["--max-drop", "1000", "--calib-n", "16"]
        opts.log(f"bench: exporting {case.display} {case.format} {case.precision} ...")
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                               cwd=str(SUBPROCESS_CWD))
        except subprocess.TimeoutExpired:
            raise ArtifactError("rdsrn export timed out") from None
        made = sorted(outdir.glob(f"*{out.suffix}"))
        if p.returncode != 0 or not made:
            msg = db.one_line(RuntimeError(_last_line(p.stderr) or _last_line(p.stdout)
                                           or f"exit {p.returncode}"))
            raise ArtifactError(f"rdsrn export failed: {msg.split(': ', 1)[-1]}")
        if made[0].with_suffix(".bin").is_file():  # OpenVINO IR: the weights first
            shutil.move(str(made[0].with_suffix(".bin")), out.with_suffix(".bin"))
        shutil.move(str(made[0]), out)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------ measuring


def pre_upscaled(model_name: str) -> bool:
    """Whether a registry model runs on the bicubic-upscaled image (SRCNN)."""
    if model_name == "bicubic":
        return False
    if not have("torch"):  # the registry is PyTorch code; SRCNN is the one such network
        return model_name.startswith("srcnn")
    from rdsrn.models import architecture, list_models

    return model_name in list_models() and \
        bool(getattr(architecture(model_name).ctor, "pre_upscaled", False))


def measure_argv(case: Case, artifact: Path | None, opts: Options,
                 weights: str | None = None) -> list[str]:
    """The subprocess command that times one case (`case.input_hw` is the LR size;
    artifacts of pre-upscaled networks are fed the HR size)."""
    size = db.format_size(case.input_hw)
    if case.format in ("onnx", "tflite", "openvino") and pre_upscaled(case.model):
        size = db.format_size((case.input_hw[0] * case.scale, case.input_hw[1] * case.scale))
    common = ["--threads", str(case.threads), "--input", size, "--warmup", str(opts.warmup),
              "--runs", str(opts.runs), "--min-time", str(opts.min_time)]
    if opts.max_time is not None:
        common += ["--max-time", str(opts.max_time)]
    if case.format == "pytorch":
        argv = [opts.python, "-m", "rdsrn.benchmarks.host_runners", "torch", "--model", case.model,
                "--precision", case.precision, "--seed", str(opts.seed)] + common
        if case.overrides:
            argv += ["--overrides", json.dumps(case.overrides)]
        if weights:
            argv += ["--weights", weights]
        return argv
    if case.format == "upscaler":
        return [opts.python, "-m", "rdsrn.benchmarks.host_runners", "upscaler", "--artifact",
                str(artifact)] + common
    model = "bicubic" if case.format == "bicubic" else str(artifact)
    return [opts.python, str(DEVICE_BENCH), model, "--scale", str(case.scale),
            "--json", "-"] + common


def run_measurement(argv: list[str], opts: Options) -> dict[str, Any]:
    """Run one measuring subprocess (background job paused if asked) -> its row."""
    deadline = time.monotonic() + opts.idle_wait
    while True:
        with paused(opts.pause_pid_file, opts.log) as was_paused:
            load = background_load(0.3) if was_paused else None
            busy = (load is not None and opts.idle_threshold is not None
                    and load > opts.idle_threshold)
            if busy and time.monotonic() < deadline:
                pass  # resume the job (leaving the block) and retry shortly
            else:
                try:
                    usage = _usage_start()
                    p = subprocess.run(argv, capture_output=True, text=True,
                                       timeout=opts.timeout, cwd=str(SUBPROCESS_CWD))
                    other = _other_load(usage)
                except subprocess.TimeoutExpired:
                    return {"status": "error",
                            "error": f"timed out after {opts.timeout:.0f} s"}
                break
        opts.log(f"bench: other CPU load {100 * load:.0f}% with the job paused; "
                 "waiting for it to settle")
        time.sleep(5.0)
    try:
        doc = json.loads(_last_line(p.stdout))
        row = doc["row"]
    except (ValueError, KeyError, TypeError):
        err = _last_line(p.stderr) or _last_line(p.stdout) or f"exit {p.returncode}"
        if p.returncode < 0:
            err = f"killed by signal {-p.returncode}"
        return {"status": "error", "error": f"measurement failed: {err}"[:300]}
    row["background_paused"] = was_paused
    row["background_cpu_before"] = load
    row["other_cpu_during"] = other
    return row


def _usage_start() -> tuple[float, float, float]:
    """(wall s, busy CPU s of the whole machine, CPU s of this process and its waited-for
    children) now: the start of a measured window for _other_load."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not Unix: no /proc/stat either
        return time.monotonic(), 0.0, 0.0
    busy, _ = _cpu_times()
    ours = sum(getattr(resource.getrusage(who), field)
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))
    return time.monotonic(), busy / _CLK_TCK, ours


def _other_load(start: tuple[float, float, float]) -> float | None:
    """Fraction of all CPUs kept busy by other processes (hypervisor steal included)
    since `start`: the machine's busy CPU time minus ours, over wall time x CPUs.
    None without /proc/stat."""
    wall0, busy0, ours0 = start
    wall1, busy1, ours1 = _usage_start()
    cpus = os.cpu_count() or 1
    if busy0 <= 0 or wall1 - wall0 <= 0:
        return None
    other = (busy1 - busy0) - (ours1 - ours0)
    return min(1.0, max(0.0, other / ((wall1 - wall0) * cpus)))


_CLK_TCK = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


# ------------------------------------------------------------------------- accuracy


class AccuracyCache:
    """PSNR/SSIM per (model, overrides, format, precision, artifact), and the FP32
    PyTorch reference per model, each computed once."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}


def _torch_fn(model: Any, precision: str) -> Callable:
    import numpy as np
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = model.to(dtype).eval()

    def upscale(lr):
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None]
        x = x.to(dtype) / 255.0
        with torch.inference_mode():
            y = model(x).float().clamp_(0.0, 1.0)
        out = y[0].permute(1, 2, 0).double().numpy()
        return np.floor(out * 255.0 + 0.5).astype(np.uint8)

    return upscale


def _bicubic_fn(scale: int) -> Callable:
    import cv2

    def upscale(lr):
        h, w = lr.shape[:2]
        return cv2.resize(lr, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)

    return upscale


def _upscale_fn(case: Case, artifact: Path | None, opts: Options, weights: str | None
                ) -> Callable | None:
    if case.format == "bicubic":
        return _bicubic_fn(case.scale)
    if case.format == "pytorch":
        model = create_torch_model(case, opts, weights)
        if getattr(model, "pre_upscaled", False) or getattr(model, "in_channels", 3) != 3:
            return None
        return _torch_fn(model, case.precision)
    from rdsrn.runtimes import Upscaler

    up = Upscaler(str(artifact), threads=case.threads, tile=0)
    return up.upscale


def measure_accuracy(case: Case, artifact: Path | None, opts: Options,
                     cache: AccuracyCache) -> dict[str, Any]:
    """{"psnr", "ssim", "delta_psnr", "accuracy_data"} (Nones where not measured)."""
    out: dict[str, Any] = {"psnr": None, "ssim": None, "delta_psnr": None}
    weights, kind = weights_for(case, opts)
    wanted = opts.accuracy == "always" or (opts.accuracy == "auto" and kind in
                                           ("shipped", "given", "none", "artifact"))
    if not wanted or not opts.accuracy_data:
        return out
    from rdsrn.evaluate import evaluate_dataset

    def evaluate(key: str, fn_factory: Callable[[], Callable | None]) -> dict[str, Any] | None:
        if key not in cache.results:
            fn = fn_factory()
            if fn is None:
                cache.results[key] = {}
            else:
                res = [evaluate_dataset(fn, d, case.scale) for d in opts.accuracy_data]
                n = sum(r["images"] for r in res)
                cache.results[key] = {  # image-weighted mean over the folders
                    "psnr": sum(r["psnr"] * r["images"] for r in res) / n,
                    "ssim": sum(r["ssim"] * r["images"] for r in res) / n}
        return cache.results[key] or None

    base = json.dumps([case.model, case.overrides, weights], sort_keys=True)
    key = json.dumps([base, case.format, case.precision,
                      str(artifact) if case.format in ("onnx", "tflite", "openvino", "upscaler") else ""])
    mine = evaluate(key, lambda: _upscale_fn(case, artifact, opts, weights))
    if not mine:
        return out
    out.update(psnr=mine["psnr"], ssim=mine["ssim"],
               accuracy_data=",".join(p.name for p in opts.accuracy_data))
    if case.format != "bicubic" and kind != "artifact" and have("torch"):
        ref_case = Case(case.model, "pytorch", "fp32", case.threads, case.input_hw,
                        case.overrides, scale=case.scale)
        ref = evaluate(json.dumps([base, "pytorch", "fp32", ""]),
                       lambda: _upscale_fn(ref_case, None, opts, weights))
        if ref:
            out["delta_psnr"] = mine["psnr"] - ref["psnr"]
    return out


# ----------------------------------------------------------------------------- rows


def base_row(case: Case) -> dict[str, Any]:
    h, w = case.input_hw
    return {
        "model": case.display, "arch": case.model, "overrides": case.overrides or None,
        "format": case.format, "precision": case.precision, "threads": case.threads,
        "input": db.format_size(case.input_hw),
        "output": db.format_size((h * case.scale, w * case.scale)),
        "p50_ms": None, "p90_ms": None, "macs": None, "gmacs_per_s": None,
        "peak_fraction": None, "psnr": None, "delta_psnr": None, "size_mb": None,
        "status": "ok", "error": None, "target": "local",
    }


def run_case(case: Case, opts: Options, machine: dict[str, Any], acc: AccuracyCache,
             counts_cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Measure one case; every failure ends as status "error" in the row."""
    row = base_row(case)
    if case.format == "pytorch" and not have("torch"):
        row.update(status="error", error="this row " + TORCH_MISSING)
        return row
    weights, kind = weights_for(case, opts)
    row["weights"] = kind
    try:
        key = json.dumps([case.model, case.overrides, case.input_hw], sort_keys=True)
        if key not in counts_cache:
            counts_cache[key] = model_counts(case, opts)
        row.update(counts_cache[key])
        artifact = None
        if case.format in ("onnx", "tflite", "openvino", "upscaler"):
            artifact = prepare_artifact(case, opts)
            row["artifact"] = str(artifact)
            weights_bin = artifact.with_suffix(".bin")  # OpenVINO IR keeps its weights there
            row["size_mb"] = (artifact.stat().st_size + (weights_bin.stat().st_size
                              if artifact.suffix == ".xml" and weights_bin.is_file() else 0)) / 1e6
        elif case.format == "pytorch" and weights:
            row["size_mb"] = Path(weights).stat().st_size / 1e6
        elif case.format == "pytorch" and row.get("params"):
            row["size_mb"] = row["params"] * (2 if case.precision == "bf16" else 4) / 1e6
        measured = run_measurement(measure_argv(case, artifact, opts, weights), opts)
    except (ArtifactError, UserError) as exc:
        row.update(status="error", error=str(exc).splitlines()[0][:300])
        return row
    except Exception as exc:  # unexpected: still one row
        row.update(status="error", error=db.one_line(exc))
        return row
    for k in ("model_file", "threads"):
        measured.pop(k, None)
    if measured.get("status") != "ok":
        row.update(status="error", error=measured.get("error"))
        return row
    row.update({k: v for k, v in measured.items()
                if k not in ("status", "error", "input", "output")})
    if pre_upscaled(case.model):  # keep the task's LR -> HR sizes; note the net's own
        row["net_input"] = measured.get("input")
        row["notes"] = "; ".join(filter(None, [row.get("notes"), "network input: the "
                                               f"bicubic-upscaled {row['output']} Y channel"]))
    else:
        row["input"], row["output"] = measured.get("input", row["input"]), \
            measured.get("output", row["output"])
    if row.get("macs"):
        peak_precision = "fp32" if case.format == "bicubic" else case.precision
        db.add_throughput(row, row["macs"], peak_precision, machine)
    try:
        row.update(measure_accuracy(case, Path(row["artifact"]) if row.get("artifact")
                                    else None, opts, acc))
    except Exception as exc:  # accuracy failing does not erase the timing
        row["accuracy_error"] = db.one_line(exc)
    published = PUBLISHED_SET5_X4.get(case.model)
    if published and not case.overrides:
        row["psnr_published_set5"], row["psnr_published_source"] = published
    return row


def run_cases(cases: list[Case], opts: Options, machine: dict[str, Any] | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    machine = machine or db.machine_info()
    acc = AccuracyCache()
    counts: dict[str, dict[str, Any]] = {}
    rows = []
    for i, case in enumerate(cases, 1):
        opts.log(f"bench: [{i}/{len(cases)}] {case.display} {case.format} {case.precision} "
                 f"{case.threads} thread(s) {db.format_size(case.input_hw)}")
        row = run_case(case, opts, machine, acc, counts)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows
