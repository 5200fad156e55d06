"""INT8 post-training quantization study: ΔPSNR of quantization variants vs the FP32
model, and the onnxruntime U8S8 / S8S8 speed comparison.

    python -m export.int8_study --model rdsrn_x4 --datasets Set5,BSD68 \
        --out benchmarks/results/export_int8.md
    python -m export.int8_study --speed-only      # U8S8 vs S8S8 latency only

Writes a markdown table (and a .json beside it). Latency runs pause the background
training (kill -STOP on /work/train.pid, always resumed) when --pause-pid-file names it.
No files other than the report are written; artifacts are built in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .common import REPO, data_dir

# name, format, options
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "onnx-minmax-100": ("onnx", dict(n=100)),
    "onnx-minmax-400": ("onnx", dict(n=400)),
    "onnx-percentile-99.999": ("onnx", dict(n=100, method="percentile", percentile=99.999)),
    "onnx-percentile-99.99": ("onnx", dict(n=100, method="percentile", percentile=99.99)),
    "onnx-entropy": ("onnx", dict(n=100, method="entropy")),
    "onnx-cca-float": ("onnx", dict(n=100, exclude_cca=True)),
    "onnx-s8s8": ("onnx", dict(n=100, act="int8")),
    "tflite-minmax-100": ("tflite", dict(n=100)),
    "tflite-minmax-400": ("tflite", dict(n=400)),
    "tflite-int8io": ("tflite", dict(n=100, io="int8")),
}


@contextmanager
def paused(pid_file: str | None) -> Iterator[None]:
    """SIGSTOP the process in `pid_file` for the block (timings), SIGCONT after."""
    pid = None
    if pid_file and Path(pid_file).is_file():
        try:
            pid = int(Path(pid_file).read_text().strip())
            os.kill(pid, signal.SIGSTOP)
        except (ValueError, ProcessLookupError, PermissionError):
            pid = None
    try:
        yield
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)


def build(src: Any, fmt: str, opts: dict[str, Any], calib_dir: Path,
          cache: dict[Any, Any]) -> tuple[bytes, Any]:
    """(artifact bytes, Runner) of one variant."""
    from .calibration import make_calibration_set
    from .parity import onnx_runner, tflite_runner

    n = opts.get("n", 100)
    if n not in cache:
        cache[n] = make_calibration_set(calib_dir, int(src.config["scale"]), n)
    calib = cache[n]
    if fmt == "onnx":
        from .onnx_export import build_fp32, quantize_int8

        if "fp32" not in cache:
            cache["fp32"] = build_fp32(src.model)
        q, _ = quantize_int8(cache["fp32"], calib, act_type=opts.get("act", "uint8"),
                             method=opts.get("method", "minmax"),
                             exclude_cca=opts.get("exclude_cca", False),
                             percentile=opts.get("percentile", 99.999))
        data = q.SerializeToString()
        return data, onnx_runner(data)
    from .tf_twin import twin_from_torch
    from .tflite_export import convert

    data = convert(twin_from_torch(src.model), "int8", calib=calib,
                   int8_io=opts.get("io", "uint8"))
    return data, tflite_runner(data)


def evaluate(run: Any, folder: Path, scale: int) -> float:
    from rdsrn.evaluate import evaluate_dataset

    from .parity import _upscale_fn

    return float(evaluate_dataset(_upscale_fn(run), folder, scale)["psnr"])


def speed(src: Any, calib_dir: Path, sizes: list[tuple[int, int]], threads: int,
          repeats: int, pid_file: str | None) -> list[dict[str, Any]]:
    """Median latency of ONNX FP32, U8S8 and S8S8 under onnxruntime (CPU)."""
    import onnxruntime as ort

    from .calibration import make_calibration_set
    from .onnx_export import build_fp32, quantize_int8

    fp32 = build_fp32(src.model)
    calib = make_calibration_set(calib_dir, int(src.config["scale"]), 16)
    models = {"fp32": fp32.SerializeToString()}
    for act, label in (("uint8", "int8 U8S8"), ("int8", "int8 S8S8")):
        models[label] = quantize_int8(fp32, calib, act_type=act)[0].SerializeToString()
    sessions = {}
    for label, data in models.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sessions[label] = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    rows = []
    for h, w in sizes:
        x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
        times: dict[str, list[float]] = {label: [] for label in sessions}
        with paused(pid_file):
            for sess in sessions.values():  # warm-up
                sess.run(None, {"input": x})
            for _ in range(repeats):  # interleaved, so drift hits all models alike
                for label, sess in sessions.items():
                    t = time.perf_counter()
                    sess.run(None, {"input": x})
                    times[label].append(time.perf_counter() - t)
        for label, ts in times.items():
            rows.append({"model": label, "lr": f"{h}x{w}", "threads": threads,
                         "median_ms": round(statistics.median(ts) * 1000, 1),
                         "min_ms": round(min(ts) * 1000, 1)})
            print(rows[-1], flush=True)
    return rows


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.int8_study", description=__doc__)
    parser.add_argument("--model", default="rdsrn_x4", help="registry name or .safetensors")
    parser.add_argument("--datasets", default="Set5", help="comma-separated test sets")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--calib", default=str(data_dir() / "train"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "export_int8.json"))
    parser.add_argument("--speed", action="store_true", help="also time U8S8 vs S8S8")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pause-pid-file", default="/work/train.pid")
    parser.add_argument("--random-weights", type=int, default=None)
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from .parity import torch_runner
    from .source import load_source

    src = load_source(args.model, random_seed=args.random_weights)
    scale = int(src.config["scale"])
    report: dict[str, Any] = {"model": src.name, "weights_sha256": src.weights_sha256,
                              "weights_file": src.weights_file, "cpu": cpu_name(),
                              "date": time.strftime("%Y-%m-%d %H:%M")}
    if args.speed or args.speed_only:
        report["speed"] = speed(src, Path(args.calib), [(128, 128), (180, 320)],
                                args.threads, args.repeats, args.pause_pid_file)
    if not args.speed_only:
        folders = {d: data_dir() / "test" / d for d in args.datasets.split(",")}
        ref = torch_runner(src.model)
        base = {d: evaluate(ref, f, scale) for d, f in folders.items()}
        print(f"FP32 torch: {base}", flush=True)
        rows = []
        cache: dict[Any, Any] = {}
        for name in args.variants.split(","):
            fmt, opts = VARIANTS[name]
            t = time.perf_counter()
            data, run = build(src, fmt, opts, Path(args.calib), cache)
            row = {"variant": name, "format": fmt, **opts, "size": len(data)}
            for d, f in folders.items():
                p = evaluate(run, f, scale)
                row[d] = round(p, 4)
                row[f"d_{d}"] = round(base[d] - p, 4)
            row["seconds"] = round(time.perf_counter() - t, 1)
            rows.append(row)
            print(row, flush=True)
        report["fp32"] = {d: round(v, 4) for d, v in base.items()}
        report["variants"] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
