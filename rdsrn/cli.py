"""The `rdsrn` command: train / eval / export / upscale / bench.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; those modules import heavy dependencies (torch, tensorflow, a
runtime) only inside `run`, so `rdsrn upscale` works with only the runtime installed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rdsrn.runtimes.errors import UserError

from . import __version__

# subcommand -> (module, one-line help). Explicit list, no discovery magic.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("rdsrn.training.cli", "train a model (needs rdsrn[train])"),
    "eval": ("rdsrn.eval_cli", "evaluate a model or artifact on SR test sets"),
    "export": ("rdsrn.export.cli", "export weights to ONNX / TFLite (needs rdsrn[export])"),
    "upscale": ("rdsrn.runtimes.cli", "upscale images or video with an exported model"),
    "bench": ("rdsrn.benchmarks.cli", "latency / accuracy benchmark table"),
}


# What a command needs beyond the runtime side, for the one-line error when an optional
# package is missing: (top-level module names, what to call them, pip extra).
_NEEDS: dict[str, tuple[frozenset[str], str, str]] = {
    "train": (frozenset({"torch", "yaml", "safetensors", "matplotlib"}), "PyTorch", "train"),
    "eval": (frozenset({"torch", "safetensors"}), "PyTorch", "train"),
    "export": (frozenset({"torch", "safetensors", "yaml", "tensorflow", "onnx", "onnxsim",
                          "onnxruntime", "ai_edge_litert", "tf_keras"}),
               "PyTorch and TensorFlow", "export"),
    "bench": (frozenset({"torch", "safetensors"}), "PyTorch", "train"),
}


def missing_extra_message(command: str, exc: ImportError) -> str | None:
    """The one-line error for `command` failing on a missing optional package, or None
    when the missing module is not one of the command's optional dependencies."""
    missing = (exc.name or "").split(".")[0]
    modules, what, extra = _NEEDS.get(command, (frozenset(), "", ""))
    if missing not in modules:
        return None
    return (f"rdsrn {command} needs {what} ({missing} is not installed): "
            f"pip install 'rdsrn[{extra}]'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rdsrn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rdsrn {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks (also RDSRN_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by reports
    debug = args.debug or os.environ.get("RDSRN_DEBUG") == "1"
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        print("rdsrn: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:
        msg = missing_extra_message(args.command, exc)
        if debug or msg is None:
            raise
        print(f"rdsrn {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except (UserError, FileNotFoundError, KeyError, ValueError) as exc:
        if debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"rdsrn {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
