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
    # --- data
    train_dirs: list = field(default_factory=lambda: ["../shared/data/train"])  # HR image folders (recursive)
    val_dir: str = "../shared/data/test/Set5"  # HR validation images (never trained on)
    cache_dir: str = "runs/cache"  # where bicubic LR images are cached (.npy)
    patch_size: int = 48  # LR patch side, pixels (HR patch = patch_size * scale)
    batch_size: int = 16  # patches per iteration (per process under torchrun)
    augment: bool = True  # random flips and 90-degree rotations
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
    # --- runtime
    precision: str = "auto"  # "auto" (bf16 on AMX/AVX512-BF16 CPUs, AMP on CUDA), "bf16", "fp32"
    channels_last: bool = True  # NHWC memory format (faster with bf16 on CPU)
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
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a mapping of config keys")
    cfg = apply(TrainConfig(), values, str(path))
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        apply(cfg, {key.strip(): yaml.safe_load(raw)}, "--set")
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise UserError(f"precision must be auto, bf16 or fp32, got {cfg.precision!r}")
    if cfg.schedule not in ("cosine", "multistep"):
        raise UserError(f"schedule must be cosine or multistep, got {cfg.schedule!r}")
    return cfg
