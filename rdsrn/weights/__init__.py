"""Shipped weights: `<name>.safetensors` files in this folder, each carrying its
metadata (scale, recursions, csr, value range, colour order, training recipe, measured
PSNR/SSIM) as a JSON string under the safetensors metadata key "rdsrn".

safetensors holds tensors only, so loading never executes code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

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

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta[META_KEY]) if META_KEY in meta else {}
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise UserError(f"{path}: not a readable safetensors weights file ({exc})") from None


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


def fit_error(model: nn.Module, state: dict, path: str | Path) -> UserError | None:
    """The one-line error when `state` does not fit `model` (missing, unexpected or
    mis-shaped keys), else None."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [k for k in own if k in state and own[k].shape != tuple(state[k].shape)]
    if not (missing or unexpected or bad_shape):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[:2]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[:2]}")
    if bad_shape:
        k = bad_shape[0]
        parts.append(f"{len(bad_shape)} of another shape, e.g. {k} "
                     f"{tuple(state[k].shape)} vs {tuple(own[k].shape)}")
    name = type(model).__name__
    scale = getattr(model, "scale", None)
    what = f"{name} x{scale}" if scale else name
    return UserError(f"{path}: weights do not fit {what} (keys: {'; '.join(parts)})")


def load_into(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load our .safetensors weights into `model` (`load_weights` without a checkpoint
    mapping), with a one-line error on an architecture mismatch."""
    return load_weights(model, path)


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# Containers training frameworks wrap a state dict in (BasicSR: params / params_ema).
_WRAPPERS = ("params_ema", "params", "state_dict", "ema", "model", "net", "generator")


def torch_load(path: str | Path) -> Any:
    """A PyTorch file's tensors and plain containers (torch.load, weights_only=True).

    A file that needs pickled Python objects is refused, and nothing of it runs.
    torch's own message advises reloading with weights_only=False, which would run code
    from the file, so it is not passed on: the refusal names the offending global only.
    """
    import pickle
    import re

    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if isinstance(exc, pickle.UnpicklingError) and found:
            raise UserError(f"{path}: refused: the checkpoint holds pickled Python objects "
                            f"({found.group(1)}), not only tensors; no pickled code runs, "
                            "so only plain state dicts load") from None
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in first or "trust" in first:
            first = "not a weights-only torch checkpoint"
        raise UserError(f"{path}: unreadable checkpoint ({first})") from None


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, Any]]:
    """(state_dict, metadata) of a .safetensors file or a PyTorch checkpoint.

    Checkpoints are read with torch.load(weights_only=True): its unpickler builds
    tensors and plain containers only, so a pickle payload that would run code is
    refused (a UserError), never executed. A state dict wrapped in one of the usual
    keys ("params_ema", "params", "state_dict", "model", ...) is unwrapped and a
    DataParallel "module." prefix dropped.
    """
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        return load_state(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise UserError(f"{path}: unknown weights file type (expected .safetensors or a "
                        f"PyTorch checkpoint: {', '.join(CHECKPOINT_SUFFIXES)})")
    obj = torch_load(path)
    for key in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: holds no state dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj), {}


def closer_layout(own: dict, state: dict, from_official: Callable[[dict], dict] | None
                  ) -> tuple[dict, bool]:
    """`state` or `from_official(state)` (a network's published-checkpoint key map),
    whichever has more tensors that fit `own` (a model's state dict) by name and shape;
    True when it is the mapped one. The raw state wins a tie."""
    if from_official is None:
        return state, False

    def fitting(st: dict) -> int:
        return sum(k in own and own[k].shape == tuple(v.shape) for k, v in st.items())

    raw = fitting(state)
    if raw == len(own) == len(state):  # already this module's layout
        return state, False
    mapped = from_official(state)
    return (mapped, True) if fitting(mapped) > raw else (state, False)


def load_weights(model: nn.Module, path: str | Path,
                    from_official: Callable[[dict], dict] | None = None) -> dict[str, Any]:
    """Load a weights file of any supported kind into `model`; returns its metadata.

    The state dict is used as it is when its keys fit `model`; otherwise, when the
    architecture knows its published checkpoints (`from_official`), their mapping is
    tried. A UserError names the missing / unexpected keys of the closer of the two.
    """
    state, meta = read_checkpoint(path)
    state, mapped = closer_layout(model.state_dict(), state, from_official)
    if mapped:
        meta = {**meta, "converted_from": "official checkpoint"}
    err = fit_error(model, state, path)
    if err:
        raise err
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
