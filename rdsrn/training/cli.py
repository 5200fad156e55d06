"""`rdsrn train`: train a model from a shipped config name or a YAML file."""

from __future__ import annotations

import argparse
import json
import sys

from rdsrn.runtimes.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="rdsrn_x4",
                   help="shipped config name (rdsrn_x2, rdsrn_x3, rdsrn_x4) or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (YAML value), repeatable")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in out_dir from its last.pt (without --resume an "
                        "out_dir that holds a run is refused; exit 128+N after signal N)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                   help="override the config's precision (fp32 forces fp32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="start from these weights (config key init_from): .safetensors, a "
                        "PyTorch state dict or a network's official checkpoint (e.g. "
                        "RLFN's model_zoo/rlfn_x4.pth for model rlfn_x4); tensors whose "
                        "name and shape fit are copied")


def run(args: argparse.Namespace) -> int:
    from rdsrn.runtimes.errors import MissingExtraError

    try:
        import torch  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(exc.name or "torch", "train") from None
    from .config import load_config
    from .trainer import Trainer

    overrides = list(args.overrides)
    if args.precision:
        overrides.append(f"precision={args.precision}")
    if getattr(args, "weights", None):
        overrides.append(f"init_from={json.dumps(str(args.weights))}")
    cfg = load_config(args.config, overrides)
    try:
        result = Trainer(cfg, resume=args.resume, progress=not args.no_progress).fit()
    except OSError as exc:  # a write the trainer did not wrap (plots, cache): one line
        where = exc.filename or cfg.out_dir
        raise UserError(f"{where}: {exc.strerror or exc}") from None
    return exit_code(result, cfg.out_dir)


def exit_code(result: dict, out_dir: str) -> int:
    """0 for a finished (or time-budget) run; 128 + signal number when SIGTERM/SIGINT
    stopped it (a checkpoint was saved), so a scheduler never reads "completed"."""
    signum = int(result.get("signal") or 0) if result.get("stopped") else 0
    if signum:
        print(f"rdsrn train: stopped by signal {signum} at iteration {result['iteration']}; "
              f"checkpoint saved, continue with --resume (out_dir {out_dir})", file=sys.stderr)
        return 128 + signum
    return 0 if result else 1
