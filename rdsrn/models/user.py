"""A network the user brings: `path/to/file.py:ClassName` or `package.module:ClassName`.

The class is imported and built with the user's keyword arguments; the toolkit then
needs two facts about it, recorded on the instance as every registry network has them:
`scale` (the user's `--scale`) and `config` (the constructor arguments plus scale and
in_channels). A probe forward pass proves the output is `scale` x the input before
anything is exported or measured. Importing the user's file runs its code: that is
what the user asked for, unlike loading weights, which never runs code.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from rdsrn.runtimes.errors import UserError

PROBE_SIZE = 32  # H = W of the probe input (pixels); larger when the network asks


def import_class(spec: str) -> type:
    """The class named by `spec`; UserError (one line) if it cannot be imported or is
    not a torch.nn.Module subclass."""
    from torch import nn

    where, _, name = spec.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser()
            if not path.is_file():
                raise UserError(f"--model {spec}: no such file {path}")
            mod_name = f"rdsrn_user_{abs(hash(str(path.resolve())))}"
            loader_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[mod_name] = module  # dataclasses and pickling look it up here
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except UserError:
        raise
    except Exception as exc:  # the user's module failing to import, in whatever way
        raise UserError(f"--model {spec}: {where} failed to import: "
                        f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, name, None)
    if cls is None:
        raise UserError(f"--model {spec}: {where} defines no {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UserError(f"--model {spec}: {name} is not a torch.nn.Module subclass")
    return cls


def build(spec: str, scale: int | None, model_args: dict[str, Any] | None = None) -> Any:
    """The user's network, built, in eval mode, with `scale` and `config` set and its
    output shape checked. `scale` is required (the network does not declare it)."""
    if scale is None:
        raise UserError(f"--model {spec}: a network of your own needs --scale")
    cls = import_class(spec)
    args = dict(model_args or {})
    try:
        model = cls(**args)
    except Exception as exc:
        call = ", ".join(f"{k}={v!r}" for k, v in args.items())
        raise UserError(f"--model {spec}: {cls.__name__}({call}) failed: "
                        f"{type(exc).__name__}: {exc}") from None
    declared = getattr(model, "scale", None)
    if isinstance(declared, int) and declared != scale:
        raise UserError(f"--model {spec}: the network says scale {declared}, --scale is {scale}")
    in_channels = int(getattr(model, "in_channels", 3))
    model.scale = scale
    model.in_channels = in_channels
    model.config = {**args, "scale": scale, "in_channels": in_channels}
    check_output(model, spec)
    return model.float().eval()


def check_output(model: Any, what: str) -> None:
    """UserError unless `model` maps 1 x C x h x w to 1 x C x (s*h) x (s*w)."""
    import torch

    size = max(PROBE_SIZE, int(getattr(model, "min_size", 0)))
    c, s = int(model.in_channels), int(model.scale)
    x = torch.rand(1, c, size, size + 8)
    try:
        with torch.no_grad():
            y = model.eval()(x)
    except Exception as exc:
        raise UserError(f"{what}: forward pass on a 1x{c}x{size}x{size + 8} input failed: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") \
            from None
    want = (1, c, s * size, s * (size + 8))
    got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
    if got != want:
        raise UserError(f"{what}: output {got} is not x{s} the input (expected {want})")
