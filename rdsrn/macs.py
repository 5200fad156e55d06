"""Multiply-accumulate (MAC) and parameter counting for one forward pass.

Counting runs the model once on a zero tensor with forward hooks on every
`nn.Conv2d`, `nn.ConvTranspose2d` and `nn.Linear`, so a module that is *called* R times
(RDSRN's shared recursive block) is counted R times — what a static walk over
`model.modules()` would get wrong.

Conventions (the ones SR papers use for "Multi-Adds"):
    Conv2d           out_elements * (in_channels / groups) * kh * kw
    ConvTranspose2d  in_elements  * (out_channels / groups) * kh * kw
    Linear           out_elements * in_features
Bias additions, activations, pooling, attention's elementwise products, PixelShuffle,
concatenation and residual additions are NOT counted (they are a few MACs per element,
well under 1% for these networks). One MAC = one multiply + one add.
"""

from __future__ import annotations

import copy
import torch
from torch import nn

COUNTED_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)

# The output size the RDSRN paper (and most lightweight-SR papers) quote Multi-Adds for.
HD_OUTPUT = (720, 1280)  # (H, W)


def layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """MACs of one call of a counted layer, from its input and output tensors."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        return inp.numel() * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    raise TypeError(f"not a counted layer: {type(module).__name__}")


def count_macs_by_layer(
    model: nn.Module, input_size: tuple[int, int], in_channels: int = 3
) -> dict[str, int]:
    """MACs per named layer for one forward pass on a 1 x C x H x W input.

    Args:
        model: any torch module taking one NCHW tensor.
        input_size: (H, W) of the model input in pixels (the LR size for SR models).
        in_channels: C of the input.
    Returns:
        {qualified layer name: MACs summed over all its calls} (only layers with calls).
    """
    # Shapes only: a copy on the "meta" device runs the forward without computing, so a
    # 1.3 T-MAC network is counted in milliseconds and the caller's model is untouched.
    # Falls back to a real CPU forward if some op has no meta implementation.
    try:
        return _run_counting(copy.deepcopy(model).to("meta").eval(), input_size,
                             in_channels, "meta")
    except (NotImplementedError, RuntimeError):
        return _run_counting(copy.deepcopy(model).cpu().eval(), input_size,
                             in_channels, "cpu")


def _run_counting(
    model: nn.Module, input_size: tuple[int, int], in_channels: int, device: str
) -> dict[str, int]:
    totals: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, COUNTED_TYPES):
            def hook(mod, args, out, _name=name or type(module).__name__):
                totals[_name] = totals.get(_name, 0) + layer_macs(mod, args[0], out)
            handles.append(module.register_forward_hook(hook))
    try:
        x = torch.zeros(1, in_channels, int(input_size[0]), int(input_size[1]),
                        device=device)
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return totals


def count_macs(model: nn.Module, input_size: tuple[int, int], in_channels: int = 3) -> int:
    """Total MACs (multiply-adds) of one forward pass on a 1 x C x H x W input.

    `input_size` is (H, W) of the model input: the LR size for SR networks, the HR size
    for networks on pre-upscaled input (SRCNN). See the module docstring for conventions.
    """
    return sum(count_macs_by_layer(model, input_size, in_channels).values())


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once), including biases."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def lr_size_for_output(output_size: tuple[int, int], scale: int) -> tuple[int, int]:
    """LR (H, W) that a x`scale` model upscales to `output_size` (H, W); must divide."""
    h, w = output_size
    if h % scale or w % scale:
        raise ValueError(f"output {w}x{h} is not divisible by scale {scale}")
    return h // scale, w // scale


def macs_for_hd_output(
    model: nn.Module,
    scale: int | None = None,
    pre_upscaled: bool = False,
    output_size: tuple[int, int] = HD_OUTPUT,
    in_channels: int = 3,
) -> int:
    """Multi-Adds for producing a 1280x720 (default) HR output.

    A x`scale` SR network runs on an LR input of 1280/scale x 720/scale. With
    `pre_upscaled=True` (SRCNN-style networks on a bicubic-upscaled image) the network
    runs on the HR size itself. `scale` defaults to `model.scale`.
    """
    if pre_upscaled:
        size = output_size
    else:
        s = scale if scale is not None else getattr(model, "scale", None)
        if s is None:
            raise ValueError("scale not given and model has no .scale attribute")
        size = lr_size_for_output(output_size, int(s))
    return count_macs(model, size, in_channels)


def conv2d_macs(h_out: int, w_out: int, c_in: int, c_out: int, k: int, groups: int = 1) -> int:
    """Closed form for a k x k Conv2d: H_out * W_out * C_out * (C_in / groups) * k * k."""
    return h_out * w_out * c_out * (c_in // groups) * k * k


# The RDSRN paper's Table I (x4, 1280x720 output): (recursions, csr) -> (params M, G MACs).
PAPER_TABLE1: dict[tuple[int, float], tuple[float, float]] = {
    (1, 0.5): (0.68, 77.0),
    (3, 0.5): (0.684, 136.0),
    (9, 0.5): (0.71, 223.0),
    (3, 0.25): (1.01, 192.0),
    (3, 0.75): (0.49, 102.0),
}


def table1_rows() -> list[dict[str, float]]:
    """Params and Multi-Adds (1280x720 output) of RDSRN x4 for the paper's Table I
    settings, beside the paper's figures. Random weights (counts do not depend on them)."""
    from .models import create_model

    rows = []
    for (r, csr), (p_params, p_gmacs) in PAPER_TABLE1.items():
        model = create_model("rdsrn_x4", recursions=r, csr=csr)
        rows.append(dict(
            recursions=r, csr=csr,
            params_m=count_params(model) / 1e6, paper_params_m=p_params,
            gmacs=macs_for_hd_output(model) / 1e9, paper_gmacs=p_gmacs,
        ))
    return rows


def main() -> int:
    """`python -m rdsrn.macs`: print the Table I comparison."""
    print("RDSRN x4, Multi-Adds for a 1280x720 output (LR 320x180); biases and")
    print("elementwise ops not counted.")
    print(f"{'R':>3} {'CSR':>5} {'params M':>9} {'paper':>7} {'GMACs':>8} {'paper':>7}")
    for row in table1_rows():
        print(f"{row['recursions']:>3} {row['csr']:>5.2f} {row['params_m']:>9.3f} "
              f"{row['paper_params_m']:>7.3f} {row['gmacs']:>8.1f} {row['paper_gmacs']:>7.0f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
