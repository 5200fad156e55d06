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


def load_source(spec: str, *, weights: str | Path | None = None, scale: int | None = None,
                model_args: dict[str, Any] | None = None,
                random_seed: int | None = None) -> ModelSource:
    """Resolve `--model SPEC [--weights FILE]` (rdsrn.models.load_network) for export.

    A .safetensors RDSRN file without metadata gets its architecture from its tensor
    shapes. With no weights at all, `random_seed` gives a seeded random init
    (development only, marked as such in the metadata).
    """
    import torch

    from rdsrn.models import load_network
    from rdsrn.network_spec import is_user_spec
    from rdsrn.models.rdsrn import RDSRN
    from rdsrn.weights import file_sha256, load_into, load_state, read_metadata

    path = Path(spec).expanduser()
    if path.suffix == ".safetensors" and path.is_file() and weights is None \
            and not read_metadata(path).get("model"):
        state, meta = load_state(path)
        try:
            model = RDSRN(**_infer_config(state))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: cannot build an RDSRN from its tensors ({exc})") from None
        load_into(model, path)
        return ModelSource(model.float().eval(), path.stem, file_sha256(path), str(path),
                           meta.get("qat"))
    if random_seed is not None:
        torch.manual_seed(random_seed)
    model = load_network(spec, weights=weights, scale=scale, model_args=model_args,
                         require_weights=random_seed is None)
    meta = getattr(model, "pretrained_meta", None)
    wfile = getattr(model, "weights_file", None)
    name = path.stem if path.suffix == ".safetensors" else spec
    if is_user_spec(spec):
        name = spec.rpartition(":")[2]
    if path.suffix == ".safetensors" and meta and meta.get("model"):
        name = str(meta["model"])
    if wfile is None:
        return ModelSource(model, name, f"random-seed-{random_seed}", None)
    return ModelSource(model, name, file_sha256(wfile), str(wfile), (meta or {}).get("qat"))
