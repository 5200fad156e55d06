"""Shipped weights: `<name>.safetensors` files in this folder, each carrying its
metadata (scale, recursions, csr, value range, colour order, training recipe, measured
PSNR/SSIM) as a JSON string under the safetensors metadata key "rdsrn".

safetensors holds tensors only, so loading never executes code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: weights_path / file_sha256 work without torch
    from torch import nn

from rdsrn.runtimes.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent
META_KEY = "rdsrn"


def weights_path(name: str) -> Path:
    """Path of the shipped weights of registry model `name` (may not exist)."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata stored in a weights file ({} if none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else {}


def load_state(path: str | Path) -> tuple[dict, dict[str, Any]]:
    """(state_dict, metadata) from a .safetensors file; a clear error if unreadable."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        state = load_file(str(path))
        meta = read_metadata(path)
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise UserError(f"{path}: not a readable safetensors weights file ({exc})") from None
    return state, meta


def save_weights(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write model weights + metadata atomically (temp file + rename)."""
    from safetensors.torch import save

    from ..data import write_bytes_atomic
    from ..outputs import write_error

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    try:
        write_bytes_atomic(path, save(state, metadata={META_KEY: json.dumps(meta, sort_keys=True)}))
    except OSError as exc:
        raise write_error(path, exc) from None


def load_into(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load weights into `model`, with a one-line error on an architecture mismatch."""
    state, meta = load_state(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or bad_shape:
        detail = (missing[:2] and f"missing {missing[:2]}") or \
                 (unexpected[:2] and f"unexpected {unexpected[:2]}") or f"shape of {bad_shape[:2]}"
        raise UserError(f"{path}: weights do not fit this architecture ({detail})")
    check_anchor(model, meta, path)
    model.load_state_dict(state)
    return meta


def check_anchor(model: nn.Module, meta: dict[str, Any], path: str | Path) -> None:
    """UserError when weights trained with the anchor skip meet a model without it, or
    the reverse: the skip has no parameters, so only the metadata tells the two apart."""
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    want, have = bool(cfg.get("anchor", False)), bool(getattr(model, "anchor", False))
    if want != have:
        raise UserError(f"{path}: weights trained {'with' if want else 'without'} the "
                        f"anchor skip, this model is built {'with' if have else 'without'} "
                        "it (model_args anchor)")


def load_pretrained(model: nn.Module, name: str) -> dict[str, Any]:
    """Load the shipped weights of `name` into `model`; returns their metadata."""
    path = weights_path(name)
    if not path.is_file():
        raise UserError(f"no shipped weights for {name!r} (expected {path})")
    meta = load_into(model, path)
    model.pretrained_meta = meta
    return meta
