"""Where the exported weights come from: a registry name (its shipped weights) or a
.safetensors file (architecture from its metadata, else inferred from tensor shapes)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdsrn.runtimes.errors import UserError


@dataclass
class ModelSource:
    """A PyTorch RDSRN in eval mode plus what the artifact metadata says about it."""

    model: Any  # rdsrn.models.rdsrn.RDSRN, float32, CPU, eval mode
    name: str  # registry name (or the weights file's stem when unknown)
    weights_sha256: str  # sha256 of the source .safetensors; "random-seed-N" for dev
    weights_file: str | None
    qat: dict[str, Any] | None = None  # the weights' "qat" metadata (QAT ranges), if any

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.model.config)


def _infer_config(state: dict) -> dict[str, Any]:
    """RDSRN constructor arguments from tensor shapes (for files without metadata)."""
    from rdsrn.models.rdsrn import split_channels

    try:
        channels, in_ch = state["shallow1.weight"].shape[:2]
        recursions = state["fusion.weight"].shape[1] // channels
        hr = state["hfrrb.convs.0.weight"].shape[0]
        scale = math.isqrt(state["upconv.weight"].shape[0] // hr)
        conv2 = state["rb.dwcb1.unit1.conv2.weight"]
        wide = conv2.shape[0] // channels
        refined = conv2.shape[1]
    except (KeyError, IndexError, ZeroDivisionError):
        raise UserError("weights file has no RDSRN metadata and does not look like an "
                        "RDSRN state dict") from None
    csr = (channels - refined) / channels
    # round(channels * csr) must give back the distilled width.
    if split_channels(channels, csr)[1] != refined:
        raise UserError("cannot infer the channel split ratio from the weights")
    return dict(scale=scale, recursions=recursions, csr=csr, channels=channels,
                hr_channels=hr, wide=wide, in_channels=in_ch)


def load_source(spec: str, *, random_seed: int | None = None) -> ModelSource:
    """Resolve `--model NAME|FILE`.

    NAME: a registry name; its shipped weights are required unless `random_seed` is given
    (development only: seeded random init, marked as such in the metadata).
    FILE: a .safetensors weights file; its "rdsrn" metadata names the model and config.
    """
    import torch

    from rdsrn.models import create_model, list_models, unknown_name_message
    from rdsrn.models.rdsrn import RDSRN
    from rdsrn.weights import file_sha256, load_into, load_state, weights_path

    path = Path(spec).expanduser()
    if spec.endswith(".safetensors") or path.is_file():
        if not path.is_file():
            raise UserError(f"weights file not found: {path}")
        if path.suffix != ".safetensors":
            raise UserError(f"{path}: expected a .safetensors weights file or a model name")
        state, meta = load_state(path)
        name = meta.get("model") or path.stem
        config = meta.get("config") or _infer_config(state)
        try:
            model = RDSRN(**config)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: bad model config in metadata ({exc})") from None
        load_into(model, path)
        return ModelSource(model.float().eval(), str(name), file_sha256(path), str(path),
                           meta.get("qat"))

    if spec not in list_models():
        raise UserError(unknown_name_message("model", spec, list_models()))
    model = create_model(spec)
    if not isinstance(model, RDSRN):
        raise UserError(f"{spec}: export supports RDSRN models only")
    wpath = weights_path(spec)
    if wpath.is_file():
        model = create_model(spec, pretrained=True)
        return ModelSource(model.float().eval(), spec, file_sha256(wpath), str(wpath),
                           getattr(model, "pretrained_meta", {}).get("qat"))
    if random_seed is None:
        raise UserError(f"no shipped weights for {spec!r} yet ({wpath}); pass a .safetensors "
                        "file, or --random-weights SEED for a development export")
    torch.manual_seed(random_seed)
    model = create_model(spec)
    return ModelSource(model.float().eval(), spec, f"random-seed-{random_seed}", None)
