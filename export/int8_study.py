"""INT8 post-training quantization study: ΔPSNR of quantization variants vs the FP32
model, and the onnxruntime U8S8 / S8S8 speed comparison.

    python -m rdsrn.export.int8_study --model rdsrn_x4 --datasets Set5,BSD68 \
        --out benchmarks/results/export_int8_study.md
    python -m rdsrn.export.int8_study --speed-only      # U8S8 vs S8S8 latency only

Writes a markdown table (and a .json beside it); benchmarks/results/export_int8.md
summarises the decisions drawn from it. Latency runs pause the background
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

    data = convert(twin_from_torch(src.model, fused_clamp=True), "int8", calib=calib,
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


NOTES = """\
## How the exported INT8 files are made (and why)

- Post-training static quantization (TFLite: full-integer; ONNX: QDQ, ops without an
  onnxruntime int8 kernel run in float between DequantizeLinear/QuantizeLinear), weights
  int8 symmetric per output channel, activations 8-bit asymmetric per tensor, ranges by
  min/max over calibration patches:
  LR patches (64x64, bicubic x{scale} downscales of random HR crops) of the training
  photos in `../shared/data/train`, never the test sets; the set always reaches pixel
  values 0 and 255, so the uint8 input of the TFLite file has scale exactly 1/255 and
  zero point 0 (the 8-bit pixel values themselves).
- The exported graphs clamp the output to [0, 1] (the PyTorch model does not): the
  output's quantization range is then the pixel range and no code point is spent on
  over/undershoot that every caller clips anyway. All parity figures compare with the
  clamped PyTorch output.
- ΔPSNR = Y-PSNR of the INT8 file minus that of the FP32 PyTorch model, standard
  protocol (MATLAB bicubic LR, BT.601 Y, `scale` border pixels cropped); negative means
  the INT8 file is worse (the sign of `rdsrn export`, the metadata and every table).
  `rdsrn export` stores it in the file's metadata and refuses a file that loses more
  than `--max-drop` (default 0.3 dB).
- ONNX: onnxruntime static quantization, QDQ. U8S8 (uint8 activations, int8 weights) is
  the default because it is faster than S8S8 on x86 (speed table); S8S8 is available with
  `--int8-act int8`.
- TFLite: the CCA's square root is an INT8 SQRT kernel; ai-edge-litert (current LiteRT)
  has it, tflite-runtime 2.14 (2023) does not, so the INT8 .tflite needs ai-edge-litert.
- Regenerate: `python -m rdsrn.export.int8_study --model rdsrn_x4 --datasets Set5,BSD68
  --speed`; decisions drawn from these figures: export_int8.md.
"""


def render(report: dict[str, Any]) -> str:
    """The markdown report of a study run."""
    lines = ["# INT8 export: accuracy (ΔPSNR vs FP32) and speed", "",
             f"Model `{report['model']}`, weights sha256 `{report['weights_sha256'][:16]}`"
             f" ({report.get('weights_file') or 'registry'}); {report['date']}; "
             f"CPU: {report['cpu']}.", ""]
    if report.get("variants"):
        sets = list(report["fp32"])
        lines += ["## ΔPSNR of quantization variants (Y channel, dB; negative = worse than FP32)", "",
                  "FP32 PyTorch: " + ", ".join(f"{d} {v:.3f} dB"
                                               for d, v in report["fp32"].items()), "",
                  "| variant | format | calibration | " + " | ".join(
                      f"{d} PSNR | {d} Δ" for d in sets) + " | size |",
                  "|---|---|---|" + "---|---|" * len(sets) + "---|"]
        for r in report["variants"]:
            calib = f"{r.get('method', 'minmax')} " + (
                f"p{r['percentile']} " if "percentile" in r else "") + f"n={r['n']}"
            extra = []
            if r.get("exclude_cca"):
                extra.append("CCA float")
            if r.get("act") == "int8":
                extra.append("S8S8")
            if r.get("io") == "int8":
                extra.append("int8 I/O")
            cells = " | ".join(f"{r[d]:.3f} | {r['d_' + d]:+.3f}" for d in sets)
            lines.append(f"| {r['variant']}{' (' + ', '.join(extra) + ')' if extra else ''} "
                         f"| {r['format']} | {calib} | {cells} | {r['size'] / 1024:.0f} KiB |")
        lines.append("")
    if report.get("speed"):
        lines += ["## onnxruntime CPU latency: FP32 vs INT8 U8S8 vs S8S8", "",
                  "Batch 1, whole image, interleaved runs; a background training run (if any) paused.", "",
                  "| model | LR input | threads | median ms | min ms |", "|---|---|---|---|---|"]
        for r in report["speed"]:
            lines.append(f"| {r['model']} | {r['lr']} | {r['threads']} | {r['median_ms']} "
                         f"| {r['min_ms']} |")
        lines.append("")
    return "\n".join(lines) + "\n" + NOTES.format(scale=4)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rdsrn.export.int8_study", description=__doc__)
    parser.add_argument("--model", default="rdsrn_x4", help="registry name or .safetensors")
    parser.add_argument("--datasets", default="Set5", help="comma-separated test sets")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--calib", default=str(data_dir() / "train"))
    parser.add_argument("--out",
                        default=str(REPO / "benchmarks" / "results" / "export_int8_study.md"),
                        help="markdown report; the raw figures go to the same name .json")
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
                row[f"d_{d}"] = round(p - base[d], 4)  # negative: INT8 worse
            row["seconds"] = round(time.perf_counter() - t, 1)
            rows.append(row)
            print(row, flush=True)
        report["fp32"] = {d: round(v, 4) for d, v in base.items()}
        report["variants"] = rows
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.write_text(render(report))
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
