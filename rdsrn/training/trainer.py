"""The training loop: L1 loss, Adam, warm-up + cosine/multistep schedule, gradient
clipping, EMA weights, bf16 autocast + channels_last on capable CPUs (bf16, or fp16 AMP, on CUDA),
optional DistributedDataParallel under torchrun, validation on Set5, atomic
checkpoints with exact resume, and SIGINT/SIGTERM handling.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import random
import signal
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rdsrn.runtimes.errors import UserError

from .. import __version__
from ..models import architecture, create_model
from ..weights import save_weights, torch_load
from ..outputs import check_output_dir, write_error
from .config import TrainConfig, build_model, check_values
from .data import PatchSampler
from .device_data import DeviceSampler
from .qat import teacher_target


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 (Linux /proc/cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(precision, reason): 'bf16' or 'fp32' on CPU; 'bf16', 'amp' (fp16 + loss scaling) or
    'fp32' on CUDA."""
    if requested == "fp32":
        return "fp32", "forced by config/--precision"
    if device.type == "cuda":
        # bf16 needs no loss scaler, so no per-step host sync on the inf check.
        if torch.cuda.is_bf16_supported():
            return "bf16", "CUDA GPU supports bf16: bf16 autocast"
        return "amp", "CUDA GPU without bf16: fp16 autocast + GradScaler"
    if requested == "bf16":
        return "bf16", "forced by config/--precision"
    if cpu_has_fast_bf16():
        return "bf16", "CPU has AMX/AVX512-BF16: bf16 autocast"
    return "fp32", "CPU lacks AMX/AVX512-BF16: fp32"


def lr_factor(cfg: TrainConfig, it: int) -> float:
    """Multiplier of cfg.lr at optimizer step `it` (0-based)."""
    if cfg.warmup_iters > 0 and it < cfg.warmup_iters:
        return (it + 1) / cfg.warmup_iters
    if cfg.schedule == "cosine":
        span = max(1, cfg.iterations - cfg.warmup_iters)
        t = min(1.0, (it - cfg.warmup_iters) / span)
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return cfg.gamma ** sum(it >= m for m in cfg.milestones)


def charbonnier_loss(sr: torch.Tensor, hr: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt((sr - hr)^2 + eps^2)): L1 away from 0, quadratic within ~eps (images in [0, 1])."""
    return torch.sqrt((sr - hr).pow(2) + eps * eps).mean()


LOSSES = {"l1": F.l1_loss, "l2": F.mse_loss, "charbonnier": charbonnier_loss}


class EMA:
    """Exponential moving average of a model's parameters (buffers copied)."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm start: the average follows the weights closely in the first steps (and a
        # decay d holds only from step (10d-1)/(1-d) on: ema_warmup=False skips the ramp).
        d = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        # One fused kernel list instead of two small kernels per tensor: e += (1 - d)(p - e).
        torch._foreach_lerp_(list(self.model.parameters()),
                             [p.detach() for p in model.parameters()], 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save `obj` to `path` atomically; a failed write (disk full, folder gone,
    permissions) is a one-line UserError and leaves no partial file."""
    import io

    from ..data import write_bytes_atomic
    from ..outputs import write_error

    buf = io.BytesIO()
    torch.save(obj, buf)  # in memory: torch's zip writer reports ENOSPC as RuntimeError
    try:
        write_bytes_atomic(path, buf.getvalue())
    except OSError as exc:
        raise write_error(path, exc) from None


def init_weights_from(model: nn.Module, path: str,
                      from_official: Callable[[dict], dict] | None = None) -> int:
    """Copy every tensor of `path` whose name and shape match `model`; returns how many.

    `path`: .safetensors, a `rdsrn train` checkpoint (its EMA weights) or any PyTorch
    state dict; with `from_official` (the architecture's published-checkpoint mapping)
    the mapped keys are used when more of them fit."""
    from ..weights import closer_layout, read_checkpoint

    p = Path(path)
    state, _ = read_checkpoint(p)
    own = model.state_dict()
    state, _ = closer_layout(own, state, from_official)
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise UserError(f"{p}: no tensor fits this architecture")
    own.update(matched)
    model.load_state_dict(own)
    return len(matched)


class Validator:
    """Y-PSNR/SSIM on a folder of HR images at the training scale (fp32, EMA weights)."""

    def __init__(self, folder: str, scale: int) -> None:
        from ..data import list_images, make_lr, mod_crop
        from ..evaluate import read_hr

        self.scale = scale
        self.pairs = []
        for path in list_images(folder):
            hr = read_hr(path)
            if hr.ndim == 2:
                hr = np.repeat(hr[:, :, None], 3, axis=2)
            hr = mod_crop(hr, scale)
            self.pairs.append((make_lr(hr, scale), hr))

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> tuple[float, float]:
        from ..metrics import calc_psnr, calc_ssim

        model.eval()
        psnrs, ssims = [], []
        device = next(model.parameters()).device
        for lr, hr in self.pairs:
            x = torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255).to(device)
            y = model(x).clamp(0, 1)[0].permute(1, 2, 0).mul(255).round().byte().cpu().numpy()
            psnrs.append(calc_psnr(y, hr, crop_border=self.scale, test_y_channel=True))
            ssims.append(calc_ssim(y, hr, crop_border=self.scale, test_y_channel=True))
        return float(np.mean(psnrs)), float(np.mean(ssims))


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "os": platform.platform()}


# Files of a run in out_dir: a new run (no --resume) refuses a folder holding any of them.
RUN_FILES = ("last.pt", "best.pt", "log.jsonl", "last.safetensors", "best.safetensors",
             "curves.png")


def check_run_folder(out: Path, resume: bool, probe: bool = True) -> None:
    """A new run never touches an earlier one; --resume needs its checkpoint. With
    `probe`, out_dir must also be writable (or creatable). UserError otherwise."""
    last = out / "last.pt"
    if resume:
        if not last.is_file():
            raise UserError(f"--resume: no checkpoint at {last}")
    else:
        found = [n for n in RUN_FILES if (out / n).exists()]
        if found:
            raise UserError(f"out_dir {out} already holds a run ({', '.join(found)}); "
                            "continue it with --resume, or start a new one with "
                            "--set out_dir=NEW_FOLDER")
    if probe:
        check_output_dir(out, "config key 'out_dir'")


def check_architecture(ckpt: dict[str, Any], path: Path, name: str, model: nn.Module) -> None:
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path}: not an rdsrn training checkpoint")
    if ckpt.get("model_name") != name or ckpt.get("model_config") != dict(model.config):
        raise UserError(f"{path}: checkpoint is of another architecture "
                        f"({ckpt.get('model_name')} {ckpt.get('model_config')})")


def resolve_device(name: str, world: int = 1) -> torch.device:
    """The torch device for config `device` (auto, cpu, cuda, cuda:N); a one-line
    UserError when CUDA is asked for and there is none (or not that many GPUs)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise UserError(f"config key 'device': {name!r} asked, but {why} "
                            f"(torch {torch.__version__}); use device=cpu or auto")
        if ":" in name:
            index = int(name.split(":", 1)[1])
        else:
            index = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else -1
        count = torch.cuda.device_count()
        if index >= count:
            raise UserError(f"config key 'device': cuda:{index} asked, but only {count} "
                            "CUDA GPU(s) are visible")
        return torch.device("cuda" if index < 0 else f"cuda:{index}")
    return torch.device(name)


class Trainer:
    """Runs one training job described by a TrainConfig."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> None:
        self.cfg = cfg
        self.progress = progress
        self.stop_requested = False
        self.stop_signal = 0
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        # Everything that can be refused is checked before the model is built and the
        # data is loaded (minutes on a large folder).
        check_values(cfg)
        self.device = resolve_device(cfg.device, self.world)
        check_run_folder(Path(cfg.out_dir), resume, probe=self.rank == 0)
        if self.rank == 0:
            check_output_dir(cfg.cache_dir, "config key 'cache_dir'")
        if cfg.val_every > 0 and cfg.val_dir and not Path(cfg.val_dir).is_dir():
            raise UserError(f"config key 'val_dir': {cfg.val_dir} is not a folder "
                            "(set val_every=0 to train without validation)")
        resume_ckpt = torch_load(Path(cfg.out_dir) / "last.pt") if resume else None
        build_model(cfg)  # validates model_args (unknown keys, R=0, ...); discarded
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed patch size: pick the fastest kernels once
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.precision, self.precision_reason = choose_precision(cfg.precision, self.device)
        self.out = Path(cfg.out_dir)
        self.is_main = self.rank == 0

        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.teacher: nn.Module | None = None
        self.model = create_model(cfg.model, **cfg.model_args).to(self.device)
        if resume_ckpt is not None:
            check_architecture(resume_ckpt, self.out / "last.pt", cfg.model, self.model)
        if cfg.init_from:
            n = init_weights_from(self.model, cfg.init_from,
                                  architecture(cfg.model).from_official)
            self.log_text(f"initialised {n} tensors from {cfg.init_from}")
        if cfg.qat:  # quantization-aware fine-tuning: the fake-quant model (training/qat.py)
            from .qat import prepare, teacher

            self.teacher = teacher(self.model, cfg)  # before resume: the init_from weights
            self.model = prepare(self.model, cfg, resume_ckpt is None, self.log_text)
        elif cfg.quant_noise:  # noise-aware FP32 training (training/qat.py)
            from .qat import noise_model

            self.model = noise_model(self.model, cfg)
        self.scale = self.model.scale
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
        # Not fused=True: it demands identical param/grad strides, which torch.compile's
        # grads of channels_last 1x1 weights need not have (pytorch#126585); the default
        # foreach implementation has no such condition.
        from .qat import optimizer_groups

        self.optimizer = torch.optim.Adam(optimizer_groups(self.model, cfg), lr=cfg.lr,
                                          betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(cfg, it))
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "amp" else None
        self.ddp_model: nn.Module = self.model
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.sampler: PatchSampler | DeviceSampler = PatchSampler(
            cfg.train_dirs, self.scale, cfg.patch_size, cfg.cache_dir,
            seed=cfg.seed + 1000 * self.rank, augment=cfg.augment,
            progress=progress and self.is_main)
        if cfg.sampler == "device" or (cfg.sampler == "auto" and self.device.type == "cuda"):
            self.sampler = DeviceSampler.from_host(self.sampler, self.device,
                                                   seed=cfg.seed + 1000 * self.rank)
        self.loss_fn = LOSSES[cfg.loss]
        # compile traces lazily at the first step; the plain module stays for EMA/validation.
        self.step_model = (torch.compile(self.ddp_model, dynamic=False) if cfg.compile
                           else self.ddp_model)
        self.validator = (Validator(cfg.val_dir, self.scale)
                          if self.is_main and cfg.val_every > 0 and cfg.val_dir else None)
        self.iteration = 0
        self.best_psnr = -1.0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        if resume_ckpt is not None:
            self._resume(resume_ckpt)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "format": "rdsrn-checkpoint-1",
            "model_name": self.cfg.model,
            "model_config": dict(self.model.config),
            "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "iteration": self.iteration,
            "best_psnr": self.best_psnr,
            "elapsed": self.elapsed,
            "rng": {**({"device_sampler": self.sampler.get_rng_state()}
                       if isinstance(self.sampler, DeviceSampler)
                       else {"numpy": json.dumps(self.sampler.rng.bit_generator.state)}),
                    "torch": torch.get_rng_state(),
                    "python": json.dumps(random.getstate())},
            "config": self.cfg.resolved(),
        }

    def _resume(self, ckpt: dict[str, Any]) -> None:
        path = self.out / "last.pt"
        self.model.load_state_dict(ckpt["model"])
        if self.ema and ckpt["ema"] is not None:
            self.ema.model.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        self.best_psnr = float(ckpt["best_psnr"])
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        rng = ckpt["rng"]
        if isinstance(self.sampler, DeviceSampler):
            if "device_sampler" not in rng:
                self.log_text("checkpoint was written by the host sampler: device patch draws "
                              "restart from the seed (not the sequence of an uninterrupted run)")
            elif not self.rank:  # other ranks keep their own seeds
                self.sampler.set_rng_state(rng["device_sampler"])
        elif "numpy" not in rng:
            self.log_text("checkpoint was written by the device sampler: host patch draws "
                          "restart from the seed (not the sequence of an uninterrupted run)")
        else:
            state = json.loads(rng["numpy"])
            if self.rank:  # each rank draws its own patches
                state = np.random.default_rng(self.cfg.seed + 1000 * self.rank).bit_generator.state
            self.sampler.rng.bit_generator.state = state
        torch.set_rng_state(ckpt["rng"]["torch"])
        py = json.loads(ckpt["rng"]["python"])
        random.setstate((py[0], tuple(py[1]), py[2]))
        self.log_text(f"resumed from {path} at iteration {self.iteration}")

    def save(self, name: str = "last.pt") -> None:
        if self.is_main:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_error(self.out, exc) from None
            atomic_torch_save(self.state(), self.out / name)

    # ------------------------------------------------------------------ logging
    def log_text(self, msg: str) -> None:
        if self.is_main:
            print(f"[rdsrn train] {msg}", flush=True)

    def log_row(self, row: dict[str, Any]) -> None:
        if not self.is_main:
            return
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise write_error(self.out / "log.jsonl", exc) from None

    def weights_meta(self, psnr: float, ssim: float) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "model": cfg.model, "config": dict(self.model.config), "scale": self.scale,
            "recursions": getattr(self.model, "recursions", None),
            "csr": getattr(self.model, "csr", None),
            "value_range": [0, 1], "color_order": "RGB", "layout": "NCHW",
            "rdsrn_version": __version__,
            "recipe": {"data": cfg.train_dirs, "iterations": self.iteration,
                       "planned_iterations": cfg.iterations, "batch": cfg.batch_size * self.world,
                       "patch_lr": cfg.patch_size, "precision": self.precision,
                       "optimizer": f"Adam lr={cfg.lr} betas={cfg.betas}",
                       "schedule": f"{cfg.schedule} warmup={cfg.warmup_iters}",
                       "ema_decay": cfg.ema_decay, "ema_warmup": cfg.ema_warmup, "loss": cfg.loss.upper(),
                       "wall_time_s": round(self.elapsed, 1), "machine": machine_info(),
                       "init_from": cfg.init_from or None},
            "val": {"dataset": Path(cfg.val_dir).name, "psnr_y": round(psnr, 4),
                    "ssim_y": round(ssim, 5), "iteration": self.iteration},
        }

    # ------------------------------------------------------------------ loop
    def _handle_signal(self, signum, _frame) -> None:
        self.stop_requested = True
        self.stop_signal = int(signum)
        self.log_text(f"signal {signum}: saving a checkpoint and stopping")

    def validate(self, use_ema: bool = True) -> tuple[float, float]:
        from .qat import float_view

        # quant_noise: judge the float model that is saved (and copy no noise bank)
        model = float_view(self.ema.model if (self.ema and use_ema) else self.model)
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        if hasattr(model, "anchor_weight"):  # mid anchor_ramp: judge what will be shipped
            model.anchor_weight = 1.0
        psnr, ssim = self.validator(model)
        self.model.train()
        return psnr, ssim

    def train_step(self) -> torch.Tensor:
        """One optimizer step; returns the detached loss (a device tensor: no host sync)."""
        # uint8 crosses to the device (4x fewer bytes than float) and is scaled there.
        lr, hr = self.sampler.sample_uint8(self.cfg.batch_size)
        lr = lr.to(self.device, non_blocking=True).float().div_(255.0)
        if self.cfg.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        if self.teacher is not None:  # qat.distill: the FP32 start model's SR is the target
            hr = teacher_target(self.teacher, lr)
        else:
            hr = hr.to(self.device, non_blocking=True).float().div_(255.0)
        self.optimizer.zero_grad(set_to_none=True)
        if self.cfg.anchor_ramp:  # from the iteration: a resumed run continues the ramp
            self.model.anchor_weight = min(1.0, self.iteration / self.cfg.anchor_ramp)
        if self.precision == "fp32":
            loss = self.loss_fn(self.step_model(lr), hr)
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            with torch.autocast(self.device.type, dtype=dtype):
                sr = self.step_model(lr)
            loss = self.loss_fn(sr.float(), hr)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model, self.iteration)
        return loss.detach()

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to cfg.iterations, or stop (with a checkpoint) at iteration `stop_at`."""
        cfg = self.cfg
        self.log_text(f"model {cfg.model} {self.model.config}, "
                      f"{sum(p.numel() for p in self.model.parameters())} params, "
                      f"{len(self.sampler)} training images, world {self.world}")
        self.log_text(f"precision: {self.precision} ({self.precision_reason}), device {self.device}, "
                      f"threads {torch.get_num_threads()}")
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = None
        if self.progress and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=cfg.iterations, initial=self.iteration, unit="it", dynamic_ncols=True)
        self.model.train()
        session_start = time.perf_counter()
        t_last, it_last, losses = time.perf_counter(), self.iteration, []
        result: dict[str, Any] = {}
        time_up = False
        try:
            end = min(cfg.iterations, stop_at or cfg.iterations)
            while self.iteration < end and not self.stop_requested:
                t0 = time.perf_counter()
                losses.append(self.train_step())
                self.iteration += 1
                self.elapsed += time.perf_counter() - t0
                if bar:
                    bar.update(1)
                if self.iteration % cfg.log_every == 0:
                    now = time.perf_counter()
                    mean_loss = float(torch.stack(losses).mean())
                    if bar:
                        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                    self.log_row({"iteration": self.iteration, "loss": mean_loss,
                                  "lr": self.scheduler.get_last_lr()[0],
                                  "it_per_s": (self.iteration - it_last) / (now - t_last),
                                  "elapsed_s": round(self.elapsed, 1)})
                    t_last, it_last, losses = now, self.iteration, []
                if self.validator and self.iteration % cfg.val_every == 0:
                    self._validate_and_keep()
                if self.iteration % cfg.ckpt_every == 0:
                    self.save()
                if cfg.max_minutes and time.perf_counter() - session_start > cfg.max_minutes * 60:
                    self.log_text(f"max_minutes={cfg.max_minutes} reached")
                    time_up = True
                    break
            self.save()
            # The final weights are always a candidate, also when the time budget ended the run.
            finished = self.iteration >= cfg.iterations or time_up
            if self.validator and finished and self.iteration % cfg.val_every:
                self._validate_and_keep()
            result = {"iteration": self.iteration, "best_psnr": self.best_psnr,
                      "stopped": self.stop_requested, "signal": self.stop_signal}
        finally:
            if bar:
                bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        if self.is_main:
            from .plots import plot_curves

            plot_curves(self.out / "log.jsonl", self.out / "curves.png")
        self.log_text(f"done at iteration {self.iteration}; best val PSNR {self.best_psnr:.3f} dB")
        return result

    def _validate_and_keep(self) -> None:
        """Validate the EMA and the raw weights; keep whichever is better as best.*.

        On short schedules the EMA can lag behind the raw weights, so both are measured
        and logged and the shipped candidate is the better of the two.
        """
        psnr, ssim = self.validate(use_ema=True)
        row = {"iteration": self.iteration, "val_psnr": psnr, "val_ssim": ssim}
        model, which = (self.ema.model if self.ema else self.model), "ema" if self.ema else "raw"
        if self.ema:
            raw_psnr, raw_ssim = self.validate(use_ema=False)
            row.update(val_psnr_raw=raw_psnr, val_ssim_raw=raw_ssim)
            if raw_psnr > psnr:
                psnr, ssim, model, which = raw_psnr, raw_ssim, self.model, "raw"
        self.log_row(row)
        self.log_text(f"iter {self.iteration}: val {Path(self.cfg.val_dir).name} x{self.scale} "
                      f"EMA {row['val_psnr']:.3f} dB" +
                      (f", raw {row['val_psnr_raw']:.3f} dB" if self.ema else "") +
                      f" (SSIM {ssim:.4f}, keeping {which})")
        meta = self.weights_meta(psnr, ssim)
        meta["val"]["weights"] = which
        from .qat import weights_view

        model, meta = weights_view(model, meta)  # QAT: plain weights + ranges in meta
        save_weights(self.out / "last.safetensors", model, meta)
        if psnr > self.best_psnr:
            self.best_psnr = psnr
            save_weights(self.out / "best.safetensors", model, meta)
            self.save("best.pt")
        from .plots import plot_curves

        plot_curves(self.out / "log.jsonl", self.out / "curves.png")
