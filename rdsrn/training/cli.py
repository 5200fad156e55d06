"""`rdsrn train`: train a model from a shipped config name or a YAML file."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="rdsrn_x4",
                   help="shipped config name (rdsrn_x2, rdsrn_x3, rdsrn_x4) or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (YAML value), repeatable")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                   help="override the config's precision (fp32 forces fp32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


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
    cfg = load_config(args.config, overrides)
    result = Trainer(cfg, resume=args.resume, progress=not args.no_progress).fit()
    return 0 if result else 1
