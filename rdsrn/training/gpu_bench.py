"""Training-step throughput of the real Trainer step on the training device: host vs
device sampler, eager vs torch.compile, several batch sizes, plus the device's measured
bf16 matrix-product peak, so each row can state its share of that peak.

    python -m rdsrn.training.gpu_bench --config rdsrn_x4 --json runs/bench.json \
        --rows host:64,device:64,device:256,compile:64,compile:256 --seconds 8 \
        --set train_dirs=[.devdata/train] --set cache_dir=runs/cache

A row is SAMPLER:BATCH with SAMPLER host (numpy crops in RAM, uint8 batch copied to the
device), device (DeviceSampler) or compile (DeviceSampler + torch.compile). Rows are
written to --json as they finish, so a time-out keeps the finished ones. Effective FLOP
per step = 3 x 2 x forward MACs(patch) x batch (backward ~ 2x forward), the same
accounting as rdsrn.benchmarks.train_throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from ..macs import count_macs
from ..models import create_model
from .config import load_config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, n: int = 8192, reps: int = 10) -> float:
    """bf16 n x n x n matrix products per second on `device`, in TFLOP/s (mean of `reps`
    after 3 warm-ups). Only meaningful on a GPU; on a CPU it is run with n=1024."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def time_steps(trainer: Any, seconds: float, warmup: int) -> tuple[int, float, float]:
    """(timed steps, seconds, seconds of the warm-up incl. any compile) of trainer.train_step."""
    dev = trainer.device
    t0 = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step()
        trainer.iteration += 1
    _sync(dev)
    warm_s = time.perf_counter() - t0
    steps, t0 = 0, time.perf_counter()
    while True:
        loss = trainer.train_step()
        trainer.iteration += 1
        steps += 1
        if steps % 10 == 0 or dev.type == "cpu":
            _sync(dev)
            if time.perf_counter() - t0 >= seconds:
                break
    float(loss)  # the last step is done
    return steps, time.perf_counter() - t0, warm_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="rdsrn_x4")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--rows", default="host:64,device:64,device:128,device:256,compile:64,compile:256")
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per row (compile happens here)")
    p.add_argument("--json", required=True, help="results file (rewritten after each row)")
    args = p.parse_args(argv)
    from .device_data import DeviceSampler
    from .trainer import Trainer, machine_info

    cfg = load_config(args.config, [*args.overrides, "sampler=host", "val_every=0",
                                    "iterations=100000000", "compile=false"])
    trainer = Trainer(cfg, progress=False)
    host = trainer.sampler
    dev = trainer.device
    device_sampler = DeviceSampler.from_host(host, dev, seed=cfg.seed)
    compiled = None
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else machine_info()["cpu"]
    peak = matmul_peak_tflops(dev, 8192 if dev.type == "cuda" else 1024)
    macs = count_macs(create_model(cfg.model, **cfg.model_args), (cfg.patch_size, cfg.patch_size))
    result: dict[str, Any] = {
        "device": name, "torch": torch.__version__, "model": cfg.model, "patch_lr": cfg.patch_size,
        "precision": trainer.precision, "channels_last": cfg.channels_last,
        "fwd_macs_per_patch": macs, "bf16_matmul_peak_tflops": round(peak, 1),
        "train_images": len(host), "device_set_bytes": device_sampler.nbytes(), "rows": []}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    for spec in args.rows.split(","):
        kind, batch = spec.split(":")
        trainer.cfg.batch_size = int(batch)
        trainer.sampler = host if kind == "host" else device_sampler
        compile_s = 0.0
        if kind == "compile":
            if compiled is None:
                t0 = time.perf_counter()
                compiled = torch.compile(trainer.ddp_model, dynamic=False)
                compile_s = time.perf_counter() - t0
            trainer.step_model = compiled
        else:
            trainer.step_model = trainer.ddp_model
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            steps, sec, warm_s = time_steps(trainer, args.seconds, args.warmup)
        except Exception as exc:  # a failed variant (e.g. compile) is a result, not a crash
            row = {"row": spec, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        else:
            its = steps / sec
            flop = 3 * 2 * macs * int(batch) * its
            scale = trainer.scale
            row = {"row": spec, "sampler": kind, "batch": int(batch), "it_per_s": round(its, 2),
                   "lr_mpx_per_s": round(its * int(batch) * cfg.patch_size ** 2 / 1e6, 4),
                   "hr_mpx_per_s": round(its * int(batch) * (cfg.patch_size * scale) ** 2 / 1e6, 3),
                   "effective_tflops": round(flop / 1e12, 3),
                   "share_of_bf16_peak": round(flop / 1e12 / peak, 4),
                   "warmup_s": round(warm_s + compile_s, 1), "timed_steps": steps}
            if dev.type == "cuda":
                row["max_mem_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 2)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
