"""Model factory: `create_model(name, **overrides)` over a plain registry."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from torch import nn

from .carn import CARN
from .imdn import IMDN
from .rdn import RDN
from .rdsrn import RDSRN
from .srcnn import SRCNN

# name -> (constructor, default kwargs). Explicit, no import-by-filename magic.
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    "rdsrn_x2": (RDSRN, dict(scale=2, recursions=3, csr=0.5)),
    "rdsrn_x3": (RDSRN, dict(scale=3, recursions=3, csr=0.5)),
    "rdsrn_x4": (RDSRN, dict(scale=4, recursions=3, csr=0.5)),
    # With the anchor skip (input, nearest-upsampled, added to the output; not in the
    # paper): the INT8-friendly variant (README, "INT8").
    "rdsrn_x2_anchor": (RDSRN, dict(scale=2, recursions=3, csr=0.5, anchor=True)),
    "rdsrn_x3_anchor": (RDSRN, dict(scale=3, recursions=3, csr=0.5, anchor=True)),
    "rdsrn_x4_anchor": (RDSRN, dict(scale=4, recursions=3, csr=0.5, anchor=True)),
    # Comparison architectures of the paper's Table II, for params/MACs/latency
    # (no trained weights shipped).
    "srcnn_x4": (SRCNN, dict(scale=4)),
    "carn_x4": (CARN, dict(scale=4)),
    "imdn_x4": (IMDN, dict(scale=4)),
    "rdn_x4": (RDN, dict(scale=4)),
}


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return sorted(_REGISTRY)


def unknown_name_message(kind: str, name: str, choices: list[str]) -> str:
    """One-line error text with a close-match hint."""
    hint = difflib.get_close_matches(name, choices, n=1)
    tail = f"; did you mean {hint[0]!r}?" if hint else f"; choices: {', '.join(choices)}"
    return f"unknown {kind} {name!r}{tail}"


def model_defaults(name: str) -> dict[str, Any]:
    """The registered constructor arguments of `name`."""
    if name not in _REGISTRY:
        raise KeyError(unknown_name_message("model", name, list_models()))
    return dict(_REGISTRY[name][1])


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build a registered model; `overrides` replace constructor arguments.

    With `pretrained=True` the weights shipped in `rdsrn/weights/<name>.safetensors` are
    loaded (overrides that change the architecture are then rejected).
    """
    if name not in _REGISTRY:
        raise KeyError(unknown_name_message("model", name, list_models()))
    ctor, defaults = _REGISTRY[name]
    kwargs = {**defaults, **overrides}
    model = ctor(**kwargs)
    if pretrained:
        from ..weights import load_pretrained  # local import: optional file I/O

        load_pretrained(model, name)
    return model
