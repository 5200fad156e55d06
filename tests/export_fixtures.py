"""Helpers shared by the export tests (imported by tests/test_export_*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rdsrn.export.source import ModelSource
from rdsrn.models import create_model
from rdsrn.models.rdsrn import RDSRN

# A narrow RDSRN (same structure, few channels) keeps INT8 conversions fast in tests.
SMALL = dict(scale=4, recursions=3, csr=0.5, channels=16, hr_channels=8, wide=2)


def small_source(seed: int = 0, **overrides) -> ModelSource:
    torch.manual_seed(seed)
    model = RDSRN(**{**SMALL, **overrides}).eval()
    _liven(model, seed)
    return ModelSource(model, "rdsrn_x4", f"random-seed-{seed}", None)


def full_source(seed: int = 0) -> ModelSource:
    torch.manual_seed(seed)
    model = create_model("rdsrn_x4").eval()
    _liven(model, seed)
    return ModelSource(model, "rdsrn_x4", f"random-seed-{seed}", None)


def _liven(model: torch.nn.Module, seed: int) -> None:
    """Make a random model's output span [0, 1] like a trained one: default init gives a
    near-constant output near 0, half of it clamped away, which would hide errors.
    A mid-grey bias on the reconstruction conv moves it inside (0, 1); with the anchor
    skip the input is the output's base, and a small bias of either sign stands for
    the residual."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        shift = -0.1 if getattr(model, "anchor", False) else 0.4
        model.recon.bias.copy_(torch.rand(3, generator=g) * 0.2 + shift)


def crop_inputs(data_dir: Path, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    from rdsrn.export.parity import parity_inputs

    return parity_inputs(data_dir / "train", sizes)


def tiny_eval_dir(set5_dir: Path, out: Path, side: int = 96) -> Path:
    """Two HR crops of Set5 images (side x side), so INT8 gates run in seconds."""
    from rdsrn.data import read_image, write_image

    out.mkdir(parents=True, exist_ok=True)
    for name in ("baby.png", "butterfly.png"):
        img = read_image(set5_dir / name)
        write_image(out / name, np.ascontiguousarray(img[:side, :side]))
    return out
