"""Host-only measurement runners, run in a fresh subprocess per row (clean peak RSS,
and a crash in one runtime cannot take the other rows down):

    python -m rdsrn.benchmarks.host_runners torch --model rdsrn_x4 --precision bf16 ...
    python -m rdsrn.benchmarks.host_runners upscaler --artifact m.tflite ...

`torch`: PyTorch eager, fp32 or bf16 (weights and input cast to bfloat16), batch 1,
    torch.inference_mode; init = model construction + weights load.
`upscaler`: the runtime layer end to end (runtimes.Upscaler.upscale on a uint8 RGB
    image, whole image in one pass): raw interpreter time + pre/post-processing, to
    measure the runtime layer's overhead against device_bench's raw interpreter call.

Both print the same JSON document as device_bench.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from . import device_bench as db


def _torch_row(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rdsrn.models import create_model

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    t0 = time.perf_counter()
    overrides = json.loads(args.overrides) if args.overrides else {}
    torch.manual_seed(args.seed)
    model = create_model(args.model, **overrides)
    if args.weights:
        from rdsrn.weights import load_into

        load_into(model, args.weights)
    model.eval()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.precision]
    model = model.to(dtype)
    h, w = db.parse_size(args.input)
    if getattr(model, "pre_upscaled", False):
        h, w = h * model.scale, w * model.scale
    channels = getattr(model, "in_channels", 3)
    x = torch.rand(1, channels, h, w, generator=torch.Generator().manual_seed(0)).to(dtype)
    init_ms = (time.perf_counter() - t0) * 1e3

    def run() -> Any:
        with torch.inference_mode():
            return model(x)

    timing = db.measure(run, args.warmup, args.runs, args.min_time,
                        max_time_s=args.max_time)
    timing.pop("times_ms")
    y = run()
    return {
        "runtime": "pytorch", "runtime_version": torch.__version__,
        "init_ms": init_ms, "input": db.format_size((h, w)),
        "output": db.format_size((int(y.shape[2]), int(y.shape[3]))),
        "io_dtype": str(dtype).replace("torch.", ""), **timing,
    }


def _upscaler_row(args: argparse.Namespace) -> dict[str, Any]:
    from rdsrn.runtimes import Upscaler

    t0 = time.perf_counter()
    up = Upscaler(args.artifact, threads=args.threads, tile=0)
    init_ms = (time.perf_counter() - t0) * 1e3
    h, w = db.parse_size(args.input)
    if up.input_size is not None:
        h, w = up.input_size
    img = np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    timing = db.measure(lambda: up.upscale(img), args.warmup, args.runs, args.min_time,
                        max_time_s=args.max_time)
    timing.pop("times_ms")
    return {
        "runtime": f"runtimes.Upscaler/{up.backend}", "runtime_version": "",
        "init_ms": init_ms, "input": db.format_size((h, w)),
        "output": db.format_size((h * up.scale, w * up.scale)), "io_dtype": "uint8",
        **timing,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rdsrn.benchmarks.host_runners")
    p.add_argument("kind", choices=("torch", "upscaler"))
    p.add_argument("--model", default="rdsrn_x4")
    p.add_argument("--overrides", default="", help="JSON constructor overrides")
    p.add_argument("--weights", default="", help=".safetensors (default: seeded random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--artifact", default="")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--input", default="320x180", help="LR WxH")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--min-time", type=float, default=0.0)
    p.add_argument("--max-time", type=float, default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    row: dict[str, Any] = {"threads": args.threads, "status": "ok", "error": None}
    if args.kind == "torch":
        try:  # the import itself is not the model's memory
            import torch  # noqa: F401
        except ImportError:
            pass
    rss_before = db.peak_rss_mb()
    try:
        row.update(_torch_row(args) if args.kind == "torch" else _upscaler_row(args))
        row["rss_before_load_mb"] = rss_before
        row["peak_rss_mb"] = db.peak_rss_mb()
    except Exception as exc:  # one row fails, the harness goes on
        row.update(status="error", error=db.one_line(exc))
    print(json.dumps({"schema": db.SCHEMA_VERSION, "machine": db.machine_info(), "row": row}))
    return 0 if row["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
