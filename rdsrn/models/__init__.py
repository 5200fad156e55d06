"""Model factory: `create_model(name, **overrides)` over a plain registry."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from . import imdn, rlfn
from .carn import CARN
from .imdn import IMDN
from .rdn import RDN
from .rdsrn import RDSRN
from .rlfn import RLFN
from .srcnn import SRCNN


@dataclass(frozen=True)
class Arch:
    """A registered architecture: constructor, its arguments, and how the published
    checkpoints of the network map onto our module (None: none known)."""

    ctor: Callable[..., nn.Module]
    kwargs: dict[str, Any]
    from_official: Callable[[dict], dict] | None = None


# name -> Arch. Explicit, no import-by-filename magic.
_REGISTRY: dict[str, Arch] = {
    "rdsrn_x2": Arch(RDSRN, dict(scale=2, recursions=3, csr=0.5)),
    "rdsrn_x3": Arch(RDSRN, dict(scale=3, recursions=3, csr=0.5)),
    "rdsrn_x4": Arch(RDSRN, dict(scale=4, recursions=3, csr=0.5)),
    # With the anchor skip (input, nearest-upsampled, added to the output; not in the
    # paper): the INT8-friendly variant (README, "INT8").
    "rdsrn_x2_anchor": Arch(RDSRN, dict(scale=2, recursions=3, csr=0.5, anchor=True)),
    "rdsrn_x3_anchor": Arch(RDSRN, dict(scale=3, recursions=3, csr=0.5, anchor=True)),
    "rdsrn_x4_anchor": Arch(RDSRN, dict(scale=4, recursions=3, csr=0.5, anchor=True)),
    # Published networks: no weights shipped; `weights=` loads the official checkpoints
    # (bytedance/RLFN model_zoo, Zheng222/IMDN checkpoints) or the user's own.
    **{f"rlfn_x{s}": Arch(RLFN, dict(scale=s), rlfn.from_official) for s in (2, 3, 4)},
    **{f"rlfn_s_x{s}": Arch(RLFN, dict(scale=s, channels=48), rlfn.from_official)
       for s in (2, 3, 4)},
    **{f"imdn_x{s}": Arch(IMDN, dict(scale=s), imdn.from_official) for s in (2, 3, 4)},
    # Comparison architectures of the paper's Table II, for params/MACs/latency.
    "srcnn_x4": Arch(SRCNN, dict(scale=4)),
    "carn_x4": Arch(CARN, dict(scale=4)),
    "rdn_x4": Arch(RDN, dict(scale=4)),
}


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return sorted(_REGISTRY)


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """One-line error text with a close-match hint."""
    hint = difflib.get_close_matches(name, choices, n=1)
    tail = f"; did you mean {hint[0]!r}?" if hint else f"; choices: {', '.join(choices)}"
    return f"unknown {kind} {name!r}{tail}"


def architecture(name: str) -> Arch:
    """The registry entry of `name`; KeyError with a close-match hint if unknown."""
    if name not in _REGISTRY:
        raise KeyError(unknown_name_message("model", name, list_models()))
    return _REGISTRY[name]


def create_model(name: str, pretrained: bool = False, weights: str | Path | None = None,
                 **overrides: Any) -> nn.Module:
    """Build a registered model; `overrides` replace constructor arguments.

    pretrained: load the weights shipped in `rdsrn/weights/<name>.safetensors`.
    weights: load a weights file instead: a .safetensors file or a PyTorch checkpoint
    (.pth/.pt, read without running pickle code), ours or the network's official one
    (its keys mapped by the registry entry). UserError when it does not fit.
    """
    arch = architecture(name)
    model = arch.ctor(**{**arch.kwargs, **overrides})
    if pretrained and weights is not None:
        raise ValueError("pass pretrained=True or weights=FILE, not both")
    if pretrained:
        from ..weights import load_pretrained  # local import: optional file I/O

        load_pretrained(model, name)
    elif weights is not None:
        from ..weights import load_weights

        model.pretrained_meta = load_weights(model, weights, arch.from_official)
    return model


def load_network(spec: str, *, weights: str | Path | None = None, scale: int | None = None,
                 model_args: dict[str, Any] | None = None,
                 require_weights: bool = True) -> nn.Module:
    """The one resolver of a PyTorch network for `--model SPEC [--weights FILE]`.

    spec: a registry name (weights: FILE, else the shipped ones), a .safetensors file of
    ours (architecture from its metadata), or a network of the user's own,
    `path/to/file.py:Class` / `package.module:Class` (needs `scale`; `model_args` are
    its constructor's keyword arguments). Returns the network in eval mode, float32,
    with `scale`, `config` and `weights_file` (the file its weights came from, absent for
    a random init); UserError (one line) for anything that does not fit.
    `require_weights=False` allows a randomly initialized network (development only).
    """
    from rdsrn.runtimes.errors import UserError

    from rdsrn.network_spec import is_user_spec

    from . import user
    from ..weights import load_weights, read_metadata, weights_path

    if is_user_spec(spec):
        model = user.build(spec, scale, model_args)
        if weights is not None:
            model.pretrained_meta = load_weights(model, weights)
            model.weights_file = str(weights)
        elif require_weights:
            raise UserError(f"--model {spec}: pass its trained weights with --weights FILE")
        return model.eval()
    if spec.endswith(".safetensors") or Path(spec).is_file():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"weights file not found: {path}")
        if path.suffix != ".safetensors":
            raise UserError(f"{path}: expected a model name, FILE.py:Class or a "
                            ".safetensors file of ours (other checkpoints: --model NAME "
                            "--weights FILE)")
        meta = read_metadata(path)
        name = meta.get("model")
        if not name or name not in _REGISTRY:
            raise UserError(f"{path}: its metadata names no known model (key 'model'); "
                            "give the architecture: --model NAME --weights FILE")
        try:
            model = create_model(name, **(meta.get("config") or {}))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: metadata config does not fit {name!r} ({exc})") from None
        model.pretrained_meta = load_weights(model, path)
        model.weights_file = str(path)
    else:
        if spec not in _REGISTRY:
            raise UserError(unknown_name_message("model", spec, list_models())
                            + " (or FILE.py:Class for a network of your own)")
        overrides = dict(model_args or {})
        if weights is not None:
            model = create_model(spec, weights=weights, **overrides)
            model.weights_file = str(weights)
        elif weights_path(spec).is_file():
            model = create_model(spec, pretrained=True, **overrides)
            model.weights_file = str(weights_path(spec))
        elif require_weights:
            raise UserError(f"{spec}: no weights ship with the toolkit for it; pass "
                            "--weights FILE (the official checkpoint or your own)")
        else:
            model = create_model(spec, **overrides)
    if scale is not None and int(model.scale) != scale:
        raise UserError(f"--scale {scale} disagrees with the model {spec} (x{model.scale})")
    return model.float().eval()
