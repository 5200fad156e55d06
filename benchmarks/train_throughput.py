"""Training throughput of a model at the default batch/patch: bf16 (autocast +
channels_last) vs fp32, side by side, with effective TFLOP/s.

    python -m rdsrn.benchmarks.train_throughput [--model rdsrn_x4] [--steps 6] [--out DIR]

Effective FLOP per step = 3 x 2 x forward MACs(patch) x batch (backward ~ 2x forward).
Results go to benchmarks/results/<host>/training_throughput.{json,md}. Run it on an
otherwise idle machine: this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rdsrn.macs import count_macs
from rdsrn.models import create_model
from rdsrn.training.trainer import cpu_has_fast_bf16, machine_info


def measure(model_name: str, precision: str, batch: int, patch: int, steps: int,
            warmup: int) -> dict:
    torch.manual_seed(0)
    model = create_model(model_name)
    scale = model.scale
    channels_last = precision == "bf16"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr = torch.rand(batch, 3, patch, patch)
    hr = torch.rand(batch, 3, patch * scale, patch * scale)
    if channels_last:
        lr = lr.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                sr = model(lr)
        else:
            sr = model(lr)
        F.l1_loss(sr.float(), hr).backward()
        opt.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    macs = count_macs(create_model(model_name), (patch, patch))
    flop = 3 * 2 * macs * batch
    return {"model": model_name, "precision": precision, "channels_last": channels_last,
            "batch": batch, "patch_lr": patch, "threads": torch.get_num_threads(),
            "median_step_s": round(sec, 4), "it_per_s": round(1 / sec, 4),
            "samples_per_s": round(batch / sec, 2), "fwd_macs_per_sample": macs,
            "effective_tflops": round(flop / sec / 1e12, 4), "steps": steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="rdsrn_x4")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results/<host>)")
    args = p.parse_args(argv)
    rows = [measure(args.model, prec, args.batch, args.patch, args.steps, args.warmup)
            for prec in ("fp32", "bf16")]
    speedup = rows[1]["it_per_s"] / rows[0]["it_per_s"]
    out = Path(args.out or Path(__file__).parent / "results" / socket.gethostname())
    out.mkdir(parents=True, exist_ok=True)
    info = {**machine_info(), "fast_bf16": cpu_has_fast_bf16(), "host": socket.gethostname(),
            "command": "python -m rdsrn.benchmarks.train_throughput " + " ".join(argv or sys.argv[1:])}
    (out / "training_throughput.json").write_text(
        json.dumps({"machine": info, "rows": rows, "bf16_speedup": round(speedup, 2)}, indent=2))
    lines = ["# Training throughput (bf16 vs fp32)", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
             f"{platform.platform()}", f"Command: `{info['command']}`", "",
             "| model | precision | batch x LR patch | it/s | samples/s | effective TFLOP/s |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['precision']}{' + channels_last' if r['channels_last'] else ''}"
                     f" | {r['batch']} x {r['patch_lr']}² | {r['it_per_s']:.3f} | "
                     f"{r['samples_per_s']:.1f} | {r['effective_tflops']:.3f} |")
    lines += ["", f"bf16 / fp32 speed-up: **{speedup:.2f}x**"]
    (out / "training_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
