"""Fake quantization of any network, for quantization-aware fine-tuning of networks
other than RDSRN (RDSRN has its own, `rdsrn.quant.qat.QATRDSRN`, whose learned grids
go into the files as they are).

`FakeQuantNet(model)` traces `model` with torch.fx and computes what a static INT8 file
computes: every convolution with int8 per-output-channel weights (pair-safe scales by
default, as every INT8 ONNX file the exporter writes) and every floating-point tensor
(the input and each operation's output) on an asymmetric uint8 grid, as onnxruntime's QDQ
quantization places them. The grids are min/max over calibration patches, then fixed;
fine-tuning moves the weights to absorb the rounding (straight-through gradients). The
weights that come out are a plain float network of the same architecture: the exporter
quantizes them with its own calibration, so the file's grids are close to, not equal to,
the training ones.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import fx, nn
import torch.nn.functional as F

from .qat import WEIGHT_RULES, act_range, fq_weight

# Operations whose output is a view or a selection of their input's values: onnxruntime
# keeps their input's grid (it drops their Q/DQ pairs), so they get no grid of their own.
_SAME_GRID = {F.pixel_shuffle, F.max_pool2d, torch.flatten, torch.reshape, nn.PixelShuffle,
              nn.MaxPool2d, nn.Flatten, "view", "reshape", "permute", "contiguous",
              "flatten", "transpose"}


class ActQuant(nn.Module):
    """Per-tensor asymmetric uint8 fake quantization; `observing` collects min/max."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))
        self.observing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.lo = torch.minimum(self.lo, x.detach().min().float())
            self.hi = torch.maximum(self.hi, x.detach().max().float())
            return x
        if not torch.isfinite(self.lo):
            raise RuntimeError("ActQuant used before calibration")
        scale, zp = act_range(float(self.lo), float(self.hi))
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)


class QConv2d(nn.Module):
    """A Conv2d computed with fake-quantized int8 weights (the wrapped module's own
    parameters: training them trains the float network)."""

    def __init__(self, conv: nn.Conv2d, rule: str) -> None:
        super().__init__()
        self.conv = conv
        self.rule = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, fq_weight(c.weight, self.rule), c.bias, c.stride, c.padding,
                        c.dilation, c.groups)


def _is_float_tensor(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return hasattr(meta, "dtype") and meta.dtype.is_floating_point


def _same_grid(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules[node.target]) in _SAME_GRID
    return node.target in _SAME_GRID


class FakeQuantNet(nn.Module):
    """`model` with INT8 weights and uint8 activations simulated (see the module
    docstring). `m` is the float network (shared parameters), `points` how many
    activation grids there are. Calibrate with `calibrate(batches)` before use."""

    def __init__(self, model: nn.Module, weight_rule: str = "pair_safe",
                 example: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight_rule not in WEIGHT_RULES:
            raise ValueError(f"unknown weight rule {weight_rule!r}")
        from torch.fx.passes.shape_prop import ShapeProp

        self.m = model
        self.scale = model.scale
        self.config = dict(getattr(model, "config", {}))
        try:
            gm = fx.symbolic_trace(model)
        except Exception as exc:  # data-dependent control flow and the like
            raise ValueError(f"{type(model).__name__} cannot be traced by torch.fx "
                             f"({type(exc).__name__}: {exc})") from None
        if example is None:
            side = max(32, int(getattr(model, "min_size", 0)))
            example = torch.rand(1, int(getattr(model, "in_channels", 3)), side, side)
        ShapeProp(gm).propagate(example)
        modules = dict(gm.named_modules())
        self.points = 0
        for node in list(gm.graph.nodes):
            gridded = node.op in ("placeholder", "call_module", "call_function",
                                  "call_method") and _is_float_tensor(node) \
                and not _same_grid(node, modules)
            if node.op == "call_module" and isinstance(modules[node.target], nn.Conv2d):
                name = node.target.replace(".", "_") + "_q"
                gm.add_submodule(name, QConv2d(modules[node.target], weight_rule))
                node.target = name
            if gridded:
                qname = f"act_q{self.points}"
                gm.add_submodule(qname, ActQuant())
                with gm.graph.inserting_after(node):
                    q = gm.graph.call_module(qname, (node,))
                node.replace_all_uses_with(q, delete_user_cb=lambda user: user is not q)
                self.points += 1
        gm.graph.lint()
        gm.recompile()
        self.g = gm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.g(x)

    def act_quants(self) -> list[ActQuant]:
        return [m for m in self.g.modules() if isinstance(m, ActQuant)]

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> int:
        """Min/max of every activation over `batches` (NCHW float in [0, 1]); returns
        how many patches were seen. The grids are fixed afterwards."""
        qs = self.act_quants()
        for q in qs:
            q.lo.fill_(float("inf"))
            q.hi.fill_(float("-inf"))
            q.observing = True
        seen = 0
        try:
            for b in batches:
                self.g(b)
                seen += int(b.shape[0])
        finally:
            for q in qs:
                q.observing = False
        return seen

    def summary(self) -> dict[str, Any]:
        convs = sum(isinstance(m, QConv2d) for m in self.g.modules())
        return {"activation_grids": self.points, "int8_convs": convs,
                "weight_rule": next((m.rule for m in self.g.modules()
                                     if isinstance(m, QConv2d)), None)}
