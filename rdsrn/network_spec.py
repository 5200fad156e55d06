"""How a command names a network: `--model NAME|FILE|file.py:Class`, `--weights FILE`,
`--model-args JSON`, `--scale`. Torch-free (commands parse these before deciding
whether PyTorch is needed); the network itself is built by `rdsrn.models.load_network`.
"""

from __future__ import annotations

from typing import Any

from rdsrn.runtimes.errors import UserError


def is_user_spec(spec: str) -> bool:
    """Whether `spec` names a user class (`file.py:Class` / `pkg.mod:Class`)."""
    if ":" not in spec:
        return False
    left, _, right = spec.rpartition(":")
    return bool(left) and right.isidentifier() and (left.endswith(".py")
                                                   or all(p.isidentifier() for p in left.split(".")))


def add_network_arguments(parser: Any, *, scale: bool = True) -> None:
    """--weights, --model-args (and --scale unless the command has its own): how a
    command is told which trained network to use, the same on every command."""
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="weights for --model: a .safetensors file or a PyTorch "
                             "checkpoint (.pth/.pt; read without running pickle code), "
                             "ours, yours or a network's official one (e.g. RLFN's "
                             "model_zoo/rlfn_x4.pth with --model rlfn_x4)")
    parser.add_argument("--model-args", default=None, metavar="JSON",
                        help="constructor keyword arguments of --model as a JSON object, "
                             "e.g. '{\"channels\": 48}' (a network of your own: "
                             "--model file.py:Class)")
    if scale:
        parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=None,
                            help="upscaling factor (required for --model file.py:Class)")


def parse_model_args(text: str | None) -> dict[str, Any]:
    """The --model-args JSON object; UserError for anything else."""
    import json

    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--model-args: not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, dict):
        raise UserError("--model-args: expected a JSON object, e.g. '{\"channels\": 48}'")
    return value
