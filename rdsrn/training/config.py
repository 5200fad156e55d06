"""Training configuration: a typed dataclass read from YAML, strict about keys and types.

Shipped configs live in rdsrn/configs/<name>.yaml and are usable by name
(`rdsrn train --config rdsrn_x4`). Every field is documented below; an unknown key or a
value of the wrong type is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rdsrn.runtimes.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class TrainConfig:
    """All fields of a training run. Paths are relative to the working directory."""

    # --- model
    model: str = "rdsrn_x4"  # registry name (rdsrn.models.list_models())
    model_args: dict = field(default_factory=dict)  # constructor overrides, e.g. {recursions: 1}
    init_from: str = ""  # optional .safetensors/.pt to start from (shape-matching tensors only; fine-tuning)
    anchor_ramp: int = 0  # with model_args {anchor: true} and plain init_from weights: the
    #   anchor skip's weight rises linearly from 0 to 1 over these first iterations (0: 1 throughout)
    quant_noise: float = 0.0  # > 0: FP32 training with uniform noise of this many 8-bit steps
    #   (of each activation point's per-batch range) at every point the INT8 graphs quantize:
    #   teaches the FP32 model to absorb 8-bit rounding, a step before QAT (rdsrn/training/qat.py)
    qat: dict = field(default_factory=dict)  # quantization-aware fine-tuning, e.g. {calib_patches: 32}; see rdsrn/training/qat.py
    # --- data
    train_dirs: list = field(default_factory=lambda: ["../shared/data/train"])  # HR image folders (recursive)
    val_dir: str = "../shared/data/test/Set5"  # HR validation images (never trained on)
    cache_dir: str = "runs/cache"  # where bicubic LR images are cached (.npy)
    patch_size: int = 48  # LR patch side, pixels (HR patch = patch_size * scale)
    batch_size: int = 16  # patches per iteration (per process under torchrun)
    augment: bool = True  # random flips and 90-degree rotations
    sampler: str = "auto"  # patch sampling: "host" (numpy, RAM), "device" (uint8 set resident on the
    #   training device, crops/flips/rotations there: no host work per step), "auto" (device on CUDA)
    # --- optimisation
    iterations: int = 100000  # total optimizer steps
    lr: float = 1e-3  # Adam peak learning rate
    betas: list = field(default_factory=lambda: [0.9, 0.99])  # Adam betas
    weight_decay: float = 0.0  # Adam weight decay
    schedule: str = "cosine"  # "cosine" or "multistep"
    warmup_iters: int = 500  # linear warm-up steps from 0 to lr
    min_lr: float = 1e-6  # cosine floor
    milestones: list = field(default_factory=lambda: [200000, 400000])  # multistep: steps where lr *= gamma
    gamma: float = 0.5  # multistep factor
    grad_clip: float = 1.0  # max global grad norm (0 disables)
    ema_decay: float = 0.999  # EMA of weights, used for validation and export (0 disables)
    ema_warmup: bool = True  # decay = min(ema_decay, (1+t)/(10+t)) at step t, so a decay d holds
    #   only from step (10d-1)/(1-d) on (8,991 for 0.999); off: d from the first step (a fine-tune)
    loss: str = "l1"  # "l1", "l2" (MSE) or "charbonnier" (sqrt(d^2 + 1e-6), a smooth L1)
    # --- runtime
    precision: str = "auto"  # "auto" (bf16 on AMX/AVX512-BF16 CPUs, AMP on CUDA), "bf16", "fp32"
    channels_last: bool = True  # NHWC memory format (faster with bf16 on CPU)
    compile: bool = False  # torch.compile the training forward/backward (pays on CUDA)
    threads: int = 0  # torch intra-op threads (0: leave torch's default)
    seed: int = 0  # seed of data sampling and initialisation
    device: str = "auto"  # "auto", "cpu" or "cuda"
    # --- bookkeeping
    out_dir: str = "runs/rdsrn_x4"  # checkpoints, logs, plots
    val_every: int = 500  # iterations between validations (0 disables)
    ckpt_every: int = 250  # iterations between "last" checkpoints
    log_every: int = 20  # iterations between log lines
    max_minutes: float = 0.0  # stop (saving a checkpoint) after this wall time; 0 = no limit

    def resolved(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_HINTS = typing.get_type_hints(TrainConfig)


def _check_type(key: str, value: Any) -> Any:
    expected = _HINTS[key]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected in (int, float) and isinstance(value, bool):
        raise UserError(f"config key {key!r}: expected {expected.__name__}, got bool")
    if not isinstance(value, expected):
        raise UserError(
            f"config key {key!r}: expected {expected.__name__}, got {type(value).__name__} ({value!r})")
    return value


def apply(cfg: TrainConfig, values: dict[str, Any], source: str) -> TrainConfig:
    """Set `values` on `cfg`, rejecting unknown keys (with a hint) and wrong types."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    for key, value in values.items():
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            tail = f"; did you mean {hint[0]!r}?" if hint else ""
            raise UserError(f"{source}: unknown config key {key!r}{tail}")
        setattr(cfg, key, _check_type(key, value))
    return cfg


def load_config(name_or_path: str, overrides: list[str] | None = None) -> TrainConfig:
    """Load a shipped config by name or a YAML file, then apply `key=value` overrides
    (values parsed as YAML, so `--set iterations=5000 --set model_args={recursions: 1}`)."""
    import yaml

    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            hint = difflib.get_close_matches(name_or_path, shipped, n=1)
            tail = f"; did you mean {hint[0]!r}?" if hint else f"; shipped: {', '.join(shipped)}"
            raise UserError(f"unknown config {name_or_path!r}{tail}")
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config ({exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of config keys")
    cfg = apply(TrainConfig(), values, str(path))
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item}: value is not valid YAML "
                            f"({str(exc).splitlines()[0]})") from None
        apply(cfg, {key.strip(): value}, "--set")
    check_values(cfg)
    return cfg


def _fail(key: str, value: Any, rule: str) -> UserError:
    return UserError(f"config key {key!r}: {value!r} {rule}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_values(cfg: TrainConfig) -> None:
    """Range-check every value (types are checked by `apply`); UserError naming the key.

    Runs before any data is loaded, so a bad value fails in a second instead of
    crashing minutes later (at the first log line, checkpoint or validation).
    NaN fails every range check (comparisons with NaN are false).
    """
    c = cfg
    at_least = {"patch_size": 1, "batch_size": 1, "iterations": 1, "ckpt_every": 1,
                "log_every": 1, "warmup_iters": 0, "threads": 0, "seed": 0, "val_every": 0,
                "anchor_ramp": 0}
    for key, low in at_least.items():
        value = getattr(c, key)
        if not (isinstance(value, int) and value >= low):
            raise _fail(key, value, f"must be an integer >= {low}")
    if not (c.lr > 0 and c.lr < float("inf")):
        raise _fail("lr", c.lr, "must be > 0")
    if not (0 <= c.min_lr <= c.lr):
        raise _fail("min_lr", c.min_lr, f"must be in [0, lr={c.lr:g}]")
    for key in ("weight_decay", "grad_clip", "max_minutes"):
        value = getattr(c, key)
        if not (0 <= value < float("inf")):
            raise _fail(key, value, "must be >= 0 (0 disables)" if key != "weight_decay"
                        else "must be >= 0")
    if not (0 <= c.quant_noise <= 4):
        raise _fail("quant_noise", c.quant_noise, "must be in [0, 4] 8-bit steps (0 disables)")
    if not (0 <= c.ema_decay < 1):
        raise _fail("ema_decay", c.ema_decay, "must be in [0, 1) (0 disables)")
    if not (0 < c.gamma < float("inf")):
        raise _fail("gamma", c.gamma, "must be > 0")
    if len(c.betas) != 2 or not all(_is_num(b) and 0 <= b < 1 for b in c.betas):
        raise _fail("betas", c.betas, "must be two numbers in [0, 1)")
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 1
               for m in c.milestones) or list(c.milestones) != sorted(c.milestones):
        raise _fail("milestones", c.milestones, "must be increasing integers >= 1")
    if c.precision not in ("auto", "bf16", "fp32"):
        raise _fail("precision", c.precision, "must be auto, bf16 or fp32")
    if c.schedule not in ("cosine", "multistep"):
        raise _fail("schedule", c.schedule, "must be cosine or multistep")
    if c.sampler not in ("auto", "host", "device"):
        raise _fail("sampler", c.sampler, "must be auto, host or device")
    if c.loss not in ("l1", "l2", "charbonnier"):
        raise _fail("loss", c.loss, "must be l1, l2 or charbonnier")
    dev = c.device
    if not (dev in ("auto", "cpu", "cuda") or
            (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise _fail("device", dev, "must be auto, cpu, cuda or cuda:N")
    if not c.train_dirs or not all(isinstance(d, str) and d for d in c.train_dirs):
        raise _fail("train_dirs", c.train_dirs, "must be a non-empty list of folders")
    for key in ("out_dir", "cache_dir"):
        if not getattr(c, key):
            raise _fail(key, getattr(c, key), "must name a folder")
    if not isinstance(c.model_args, dict) or not all(isinstance(k, str) for k in c.model_args):
        raise _fail("model_args", c.model_args, "must be a mapping of constructor arguments")


def build_model(cfg: TrainConfig) -> Any:
    """The model of `cfg` (CPU, float32), with its model_args checked against the
    constructor: unknown keys, wrong types and values the model cannot run with (R=0,
    channels=0, ...) are one-line UserErrors. A forward pass on an 8x8 input proves it
    runs. Needs torch."""
    import inspect
    import warnings

    import torch

    from rdsrn.models import architecture, list_models, unknown_name_message

    if cfg.model not in list_models():
        raise UserError(f"config key 'model': {unknown_name_message('model', cfg.model, list_models())}")
    ctor = architecture(cfg.model).ctor
    params = {n: p for n, p in inspect.signature(ctor).parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    hints = typing.get_type_hints(ctor.__init__)
    for key, value in cfg.model_args.items():
        if key not in params:
            hint = difflib.get_close_matches(key, list(params), n=1)
            tail = f"; did you mean {hint[0]!r}?" if hint else f"; {cfg.model} takes: {', '.join(params)}"
            raise UserError(f"config key 'model_args': {cfg.model} has no argument {key!r}{tail}")
        expected = hints.get(key)
        ok = expected is None or (isinstance(value, expected)
                                    and (expected is bool or not isinstance(value, bool))) \
            or (expected is float and _is_num(value))
        if not ok:
            raise UserError(f"config key 'model_args': {key} expects {expected.__name__}, "
                            f"got {type(value).__name__} ({value!r})")
    from rdsrn.models import create_model
    from rdsrn.models.rdsrn import RDSRN

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-size init warnings before the error
            model = create_model(cfg.model, **cfg.model_args)
            in_ch = int(getattr(model, "config", {}).get("in_channels", 3))
            side = max(8, int(getattr(model, "min_size", 0)))
            with torch.no_grad():
                model.eval()(torch.rand(1, in_ch, side, side))
    except Exception as exc:  # the constructors raise ValueError/TypeError/RuntimeError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"config key 'model_args' {cfg.model_args}: {cfg.model} cannot be "
                        f"built or run ({first})") from None
    if cfg.anchor_ramp and not getattr(model, "anchor", False):
        raise UserError("config key 'anchor_ramp': the model has no anchor skip "
                        "(model_args {anchor: true})")
    if cfg.quant_noise and (cfg.qat or cfg.anchor_ramp or not isinstance(model, RDSRN)):
        # QAT quantizes the same points already; the noise model always adds the whole
        # anchor; it is RDSRN's forward with noise points.
        raise UserError("config key 'quant_noise': " + (
            "not with qat (fake quantization)" if cfg.qat else "not with anchor_ramp"
            if cfg.anchor_ramp else f"supports RDSRN models only, not {cfg.model}"))
    if cfg.anchor_ramp and (cfg.qat or cfg.compile):
        # The fake-quant model always adds the whole input; a compiled graph would
        # recompile for every new weight.
        raise UserError("config key 'anchor_ramp': not with " + ("qat" if cfg.qat else
                        "compile: true"))
    return model.train()
