"""Fake-quantized RDSRN for quantization-aware fine-tuning (QAT).

`QATRDSRN` wraps a float `RDSRN` and runs the same forward pass with fake quantization
exactly where the exported INT8 graphs quantize (checked against the onnxruntime QDQ
graph of `rdsrn export --precision int8 --format onnx`, see tests/test_qat.py):

- weights: int8, symmetric, per output channel, scale max|w| / 127 (range [-127, 127]),
  recomputed from the current weights every step (straight-through rounding);
- activations: 8-bit asymmetric per tensor (uint8 codes 0..255; the TFLite int8 codes
  are the same grid shifted by 128), a learnable scale and zero point per tensor (LSQ+),
  initialised by min/max calibration like the exporters' (the range always contains 0).
  The scale is trained as its logarithm: the calibrated scales span 100x (3e-4..0.035),
  and with Adam (steps of about lr whatever the gradient's size) one learning rate on
  log-scales moves every range by the same relative amount;
- input: scale 1/255, zero point 0 (the 8-bit pixels); output: the clamp to [0, 1] fused
  into the reconstruction conv and quantized with scale 1/255, zero point 0; with the
  anchor skip (RDSRN(anchor=True)) the conv's output, the residual, has its own grid
  ("recon") and the clamp is fused into the add of the nearest-upsampled input, which
  stays on the input's grid;
- one range per recursion pass (the unrolled graph has its own Q/DQ per pass although
  the weights are shared); channel splits and DepthToSpace keep their input's range;
- ranges tied where the TFLite kernels need one grid (`tied_points`): a concatenation
  and every tensor that feeds it (the three LeakyReLUs of a distillation unit, whose
  channel splits are copies; the R recursion outputs before the fusion), so one QAT
  model serves the ONNX and the TFLite file; the sigmoid's output is fixed at scale
  1/256, zero point 0 (TFLite's int8 LOGISTIC accepts no other);
- the CCA's subtraction x - mean and its square are quantized in the TFLite graph only
  (onnxruntime has no QDQ kernels for them, its file keeps them float):
  `TFLITE_ONLY_POINTS`.

Activation points are named like "r1.dwcb2.unit1.conv3" (recursion pass 1, output of that
conv) or "r0.cca.sigmoid"; `POINT_GROUPS` maps them to the layer groups used by
`--keep-float` and the sensitivity table. The learned ranges travel in the weights'
metadata under "qat" (see `qat_metadata`), the weights themselves stay a plain RDSRN
state dict, so every FP32 tool loads them unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from rdsrn.models.rdsrn import LRELU_SLOPE, RDSRN
from rdsrn.runtimes.errors import UserError

from .groups import GROUPS, check_groups  # noqa: F401  (re-exported)

QAT_FORMAT = "rdsrn-qat-2"  # 2: tied concat ranges, fixed sigmoid grid, CCA sub/sq points
_UNIT_POINTS = ("conv1", "lrelu1", "conv2", "lrelu2", "conv3", "lrelu3", "cat", "fuse", "add")
_CCA_POINTS = ("mean", "sub", "sq", "var", "var_eps", "std", "contrast", "fc1", "fc2",
               "sigmoid", "mul")
TFLITE_ONLY_POINTS = ("sub", "sq")  # last name part; float in the ONNX file
SIGMOID_GRID = (1.0 / 256.0, 0)  # uint8 view of TFLite's int8 (1/256, -128)
_BLOCKS = ("dwcb1", "dwcb2")
_UNITS = ("unit1", "unit2")
# The bare (unfolded) output range: scale 1/255, zero point 0.
PIXEL_SCALE = 1.0 / 255.0
WIDE_FACTOR = 257  # 65535 / 255: a uint16 grid over a uint8 grid's range
CCA_EPS = 1e-8  # must equal CCALayer.contrast's


def point_names(recursions: int, anchor: bool = False) -> list[str]:
    """Activation quantization points of an RDSRN with R=`recursions`, forward order;
    with `anchor` also "recon", the reconstruction conv's output (the residual) before
    the nearest-upsampled input is added."""
    names = ["shallow1", "shallow1.lrelu", "shallow2"]
    for k in range(recursions):
        for blk in _BLOCKS:
            for unit in _UNITS:
                names += [f"r{k}.{blk}.{unit}.{p}" for p in _UNIT_POINTS]
        names += [f"r{k}.cca.{p}" for p in _CCA_POINTS]
        names.append(f"r{k}.add")
    names += ["cat", "fusion", "fusion.lrelu", "lr_conv", "lr_add", "upconv"]
    for i in range(4):
        names.append(f"hfrrb.conv{i}")
        if i < 3:
            names.append(f"hfrrb.lrelu{i}")
    names.append("hfrrb.add")
    if anchor:
        names.append("recon")
    return names


def tied_points(recursions: int) -> list[list[str]]:
    """Groups of points that share one range (see the module docstring)."""
    groups = [[f"r{k}.{blk}.{unit}.{p}" for p in ("lrelu1", "lrelu2", "lrelu3", "cat")]
              for k in range(recursions) for blk in _BLOCKS for unit in _UNITS]
    groups.append([f"r{k}.add" for k in range(recursions)] + ["cat"])
    return groups


def stream_point_names(recursions: int) -> list[str]:
    """The points on the four streams that carry the image (shallow, LR trunk, fusion,
    HR; rdsrn.quant.equalize.stream_points): after QAT they hold all of the remaining
    INT8 loss (benchmarks/results/int8_noise_x2_qat.md), so `wide` gives them 16 bits."""
    from .equalize import STREAMS, stream_points

    return [p for st in STREAMS for p in stream_points(st, recursions)]


def widen(scale: float, zero_point: int) -> tuple[float, int]:
    """The uint16 grid (scale, zero point) spanning exactly the range of a uint8 grid:
    65535 steps instead of 255, so scale / 257 and zero point x 257."""
    return scale / WIDE_FACTOR, int(zero_point) * WIDE_FACTOR


def is_tflite_only(name: str) -> bool:
    """True for points the ONNX QDQ graph leaves in float."""
    return name.rsplit(".", 1)[-1] in TFLITE_ONLY_POINTS and ".cca." in name


def point_group(name: str) -> str:
    """Layer group of an activation point (see GROUPS)."""
    head = name.split(".")[0]
    if head in ("shallow1", "shallow2"):
        return "shallow"
    if head.startswith("r") and head[1:].isdigit():
        return "cca" if ".cca." in name else "body"
    if head in ("cat", "fusion", "lr_conv", "lr_add"):
        return "fusion"
    if head == "upconv":
        return "upsample"
    if head == "hfrrb":
        return "hfrrb"
    if head == "recon":
        return "recon"
    raise ValueError(f"unknown activation point {name!r}")


def conv_group(module_name: str) -> str:
    """Layer group of a conv of RDSRN by its module name ("rb.cca.fc1", "recon", ...)."""
    if module_name.startswith("shallow"):
        return "shallow"
    if module_name.startswith("rb.cca"):
        return "cca"
    if module_name.startswith("rb."):
        return "body"
    if module_name in ("fusion", "lr_conv"):
        return "fusion"
    if module_name == "upconv":
        return "upsample"
    if module_name.startswith("hfrrb"):
        return "hfrrb"
    if module_name == "recon":
        return "recon"
    raise ValueError(f"unknown conv {module_name!r}")


def act_range(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric uint8 tensor with float range [lo, hi], by the
    onnxruntime formula: the range is widened to contain 0, scale = (hi - lo) / 255,
    zero point = round(-lo / scale)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        return 1.0, 0
    scale = (hi - lo) / 255.0
    return scale, int(min(255, max(0, round(-lo / scale))))


def _fixed_fq(x: torch.Tensor) -> torch.Tensor:
    return torch.fake_quantize_per_tensor_affine(x, PIXEL_SCALE, 0, 0, 255)


# Weight grids. "max": scale max|w| / 127 per output channel (the TFLite files, and any
# runtime whose int8 kernels accumulate in 32 bits). "pair_safe" (the ONNX files): the
# scale is also at least (sum of the two largest weights of one sign) / 127.5, so any two
# int8 weights of a channel sum to at most 128 in magnitude and a pair of uint8 x int8
# products stays within int16 (255 * 128 = 32640 <= 32767). x86 CPUs without VNNI add such
# pairs into a saturating int16 (vpmaddubsw, onnxruntime's U8S8 kernels on AVX2 and
# AVX-512BW); on every other kernel the rule only costs weight precision (about 1 bit).
WEIGHT_RULES = ("max", "pair_safe")
PAIR_SUM_LIMIT = 128  # largest |w_a + w_b| (same sign, int8 steps) of a pair_safe channel


def weight_scales(w: torch.Tensor, rule: str = "max") -> torch.Tensor:
    """Per-output-channel int8 scales of conv weights `w` (O, I, kh, kw) by `rule`
    (WEIGHT_RULES); float32 tensor of shape (O,), every value > 0."""
    if rule not in WEIGHT_RULES:
        raise ValueError(f"unknown weight rule {rule!r}; choices: {', '.join(WEIGHT_RULES)}")
    flat = w.detach().reshape(w.shape[0], -1).float()
    scale = flat.abs().amax(dim=1) / 127.0
    if rule == "pair_safe":
        k = min(2, flat.shape[1])
        top_pos = flat.clamp_min(0.0).topk(k, dim=1).values.sum(dim=1)
        top_neg = (-flat).clamp_min(0.0).topk(k, dim=1).values.sum(dim=1)
        # round(a) + round(b) <= a + b + 1 = PAIR_SUM_LIMIT for a + b = PAIR_SUM_LIMIT - 0.5
        scale = torch.maximum(scale, torch.maximum(top_pos, top_neg) / (PAIR_SUM_LIMIT - 0.5))
    return scale.clamp_min(1e-12)


def fq_weight(w: torch.Tensor, rule: str = "max") -> torch.Tensor:
    """int8 symmetric per-output-channel fake quantization (straight-through), range
    [-127, 127], scales by `rule` (weight_scales)."""
    zp = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, weight_scales(w, rule), zp, 0, -127, 127)


def _is_nhwc(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def _dense_view(x: torch.Tensor) -> torch.Tensor:
    """`x`, or its NHWC view when it is channels_last: the same elements, contiguous."""
    return x.permute(0, 2, 3, 1) if _is_nhwc(x) else x


class QATRDSRN(nn.Module):
    """RDSRN with fake quantization (see the module docstring).

    `mode`: "quant" (fake quantization, default), "observe" (float, records each point's
    min/max for `finish_calibration`), "float" (plain float forward), "noise" (float
    weights; every activation point gets uniform noise of one 8-bit step of its own
    per-batch min/max range, times `noise_scale`: quantization-noise-aware FP32 training,
    config `quant_noise`, bf16-safe). `float_groups`:
    layer groups left in float (weights and their output activations).
    `learn_ranges`: the activation scales / zero points are trained with the weights
    (LSQ+); False keeps the calibrated ones (about half the backward cost on CPU).
    Input/output as RDSRN: NCHW float RGB in [0, 1]; the output is clamped to [0, 1]
    and, in "quant" mode, on the 1/255 grid.
    """

    def __init__(self, model: RDSRN, float_groups: Iterable[str] = (),
                 learn_ranges: bool = True, weight_rule: str = "max") -> None:
        super().__init__()
        if not isinstance(model, RDSRN):
            raise UserError(f"QAT supports RDSRN models only, got {type(model).__name__}")
        self.m = model
        self.points = point_names(model.recursions, model.anchor)
        # point -> slot of its range; tied points share a slot
        self.index: dict[str, int] = {}
        for group in tied_points(model.recursions):
            slot = len(set(self.index.values()))
            self.index.update({name: slot for name in group})
        for name in self.points:
            if name not in self.index:
                self.index[name] = len(set(self.index.values()))
        self.fixed = frozenset(i for name, i in self.index.items() if name.endswith(".sigmoid"))
        n = len(set(self.index.values()))
        self.act_log_scale = nn.Parameter(torch.full((n,), math.log(0.01)))
        self.act_zp = nn.Parameter(torch.zeros(n))
        self.learn_ranges = learn_ranges
        self.act_log_scale.requires_grad_(learn_ranges)
        self.act_zp.requires_grad_(learn_ranges)
        self.register_buffer("obs_min", torch.full((n,), math.inf))
        self.register_buffer("obs_max", torch.full((n,), -math.inf))
        self.convs = {name: mod for name, mod in model.named_modules()
                      if isinstance(mod, nn.Conv2d)}
        self.float_groups = frozenset(check_groups(float_groups))
        # Set by the training side when the weights were equalized first (its record).
        self.equalization: dict[str, Any] | None = None
        # Points quantized on 16-bit grids over their 8-bit range (W8A16 on the streams,
        # `rdsrn export --a16-streams`); empty: every point 8-bit, as trained.
        self.wide: frozenset[str] = frozenset()
        self.mode = "quant"
        self.noise_scale = 1.0  # mode "noise": the noise's width in 8-bit steps
        self._banks: dict[torch.dtype, torch.Tensor] = {}  # mode "noise": see _uniform
        self._bank_used = 0
        # Analysis switches (int8_sensitivity): quantize only the weights or only the
        # activations in "quant" mode. Exporters always quantize both.
        self.quant_weights = True
        self.quant_acts = True
        if weight_rule not in WEIGHT_RULES:
            raise UserError(f"unknown weight rule {weight_rule!r}; choices: "
                            f"{', '.join(WEIGHT_RULES)}")
        self.weight_rule = weight_rule  # weight_scales: "max", or "pair_safe" for ONNX

    def widen_streams(self) -> None:
        """Put the stream points (`stream_point_names`) on 16-bit grids over their 8-bit
        ranges: the model an `--a16-streams` file computes."""
        self.wide = frozenset(stream_point_names(self.recursions))

    def optimizer_groups(self, lr: float, range_lr: float,
                         zp_lr: float) -> list[dict[str, Any]]:
        """Adam parameter groups: the weights at `lr`, the log-scales at `range_lr`
        (relative change per step) and the zero points at `zp_lr` (uint8 codes per step)."""
        ranges = {id(self.act_log_scale), id(self.act_zp)}
        groups: list[dict[str, Any]] = [
            {"params": [p for p in self.parameters() if id(p) not in ranges], "lr": lr}]
        if self.learn_ranges:
            groups += [{"params": [self.act_log_scale], "lr": range_lr},
                       {"params": [self.act_zp], "lr": zp_lr}]
        return groups

    # RDSRN's attributes, for code that treats this as the model.
    @property
    def config(self) -> dict[str, Any]:
        return self.m.config

    @property
    def scale(self) -> int:
        return self.m.scale

    @property
    def recursions(self) -> int:
        return self.m.recursions

    @property
    def csr(self) -> float:
        return self.m.csr

    # ------------------------------------------------------------------ quantizers
    def _fq(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return x
        i = self.index[name]
        if self.mode == "noise":
            return self._noise(name, i, x)
        if self.mode == "observe":
            with torch.no_grad():
                self.obs_min[i] = torch.minimum(self.obs_min[i], x.min().float())
                self.obs_max[i] = torch.maximum(self.obs_max[i], x.max().float())
            return x
        if point_group(name) in self.float_groups or not self.quant_acts:
            return x
        if i in self.fixed:
            return torch.fake_quantize_per_tensor_affine(x.float(), *SIGMOID_GRID, 0, 255)
        scale = self.act_log_scale[i:i + 1].exp()
        zp = self.act_zp[i:i + 1].clamp(0.0, 255.0)
        if name in self.wide:
            s16, z16 = widen(float(scale), int(round(float(zp))))
            return torch.fake_quantize_per_tensor_affine(x.float(), s16, z16, 0, 65535)
        if not self.learn_ranges:
            return torch.fake_quantize_per_tensor_affine(
                x.float(), scale.detach(), zp.detach().round().int(), 0, 255)
        grad = 1.0 / math.sqrt(x.numel() * 255.0)  # LSQ gradient scaling
        return torch._fake_quantize_learnable_per_tensor_affine(
            x.float(), scale, zp, 0, 255, grad)

    def _noise(self, name: str, i: int, x: torch.Tensor) -> torch.Tensor:
        if point_group(name) in self.float_groups:
            return x
        if i in self.fixed:
            step = SIGMOID_GRID[0]
        else:
            with torch.no_grad():  # aminmax copies a channels_last tensor; its NHWC view not
                lo, hi = torch.aminmax(_dense_view(x))
            step = float(hi - lo) / 255.0
        # The step is a constant to autograd: a differentiable max/min cost 5x the step
        # time on CPU, and its gradient reached only the two extreme elements per batch.
        return torch.add(x, self._uniform(x), alpha=step * self.noise_scale)

    def _uniform(self, x: torch.Tensor) -> torch.Tensor:
        """Uniform [-0.5, 0.5) noise shaped (and laid out) like `x`: a slice at a random
        offset of a bank (one per dtype) renewed after 16 bank-lengths of use. Fresh
        numbers for every point cost 4x the whole training step on CPU; slices of one
        bank are independent enough for noise that stands in for rounding errors."""
        n = x.numel()
        bank = self._banks.get(x.dtype)
        if bank is None or bank.numel() < 2 * n or self._bank_used > 16 * bank.numel():
            bank = (torch.rand(max(1 << 25, 2 * n), device=x.device) - 0.5).to(x.dtype)
            self._banks[x.dtype] = bank
            self._bank_used = 0
        self._bank_used += n
        off = int(torch.randint(0, bank.numel() - n + 1, (1,)))
        flat = bank[off:off + n]
        if _is_nhwc(x):
            b, c, h, w = x.shape
            return flat.view(b, h, w, c).permute(0, 3, 1, 2)
        return flat.view(x.shape)

    def _conv(self, name: str, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
        mod = self.convs[name]
        return F.conv2d(x, weights[name], mod.bias, padding=mod.padding)

    def _weights(self) -> dict[str, torch.Tensor]:
        if self.mode != "quant" or not self.quant_weights:
            return {n: m.weight for n, m in self.convs.items()}
        return {n: (m.weight if conv_group(n) in self.float_groups
                    else fq_weight(m.weight, self.weight_rule))
                for n, m in self.convs.items()}

    # ------------------------------------------------------------------ forward
    def _unit(self, p: str, k: int, x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
        unit = self.m.get_submodule(p)
        d, r, dw, rw = unit.splits
        q = lambda pt, t: self._fq(f"r{k}.{p[3:]}.{pt}", t)  # noqa: E731  p = "rb.dwcb1.unit1"
        lrelu = lambda t: F.leaky_relu(t, LRELU_SLOPE)  # noqa: E731
        y1 = q("lrelu1", lrelu(q("conv1", self._conv(f"{p}.conv1", x, w))))
        d1, r1 = torch.split(y1, (d, r), dim=1)
        y2 = q("lrelu2", lrelu(q("conv2", self._conv(f"{p}.conv2", r1, w))))
        d2, r2 = torch.split(y2, (dw, rw), dim=1)
        d3 = q("lrelu3", lrelu(q("conv3", self._conv(f"{p}.conv3", r2, w))))
        cat = q("cat", torch.cat((d1, d2, d3), dim=1))
        return q("add", q("fuse", self._conv(f"{p}.fuse", cat, w)) + x)

    def _cca(self, k: int, x: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
        q = lambda pt, t: self._fq(f"r{k}.cca.{pt}", t)  # noqa: E731
        mean = q("mean", x.mean(dim=(2, 3), keepdim=True))
        diff = q("sub", x - mean)
        var = q("var", q("sq", diff * diff).mean(dim=(2, 3), keepdim=True))
        # The INT8 graph can round var + eps to exactly 0; sqrt's gradient there is
        # infinite (NaN weights after one step), so the root sees at least eps.
        std = q("std", torch.sqrt(q("var_eps", var + CCA_EPS).clamp_min(CCA_EPS)))
        c = q("contrast", mean + std)
        h = q("fc1", F.relu(self._conv("rb.cca.fc1", c, w)))
        s = q("sigmoid", torch.sigmoid(q("fc2", self._conv("rb.cca.fc2", h, w))))
        return q("mul", x * s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._weights()
        quant = self.mode == "quant"
        if quant:
            x = _fixed_fq(x)
        lrelu = lambda t: F.leaky_relu(t, LRELU_SLOPE)  # noqa: E731
        h = self._fq("shallow1.lrelu", lrelu(self._fq("shallow1", self._conv("shallow1", x, w))))
        shallow = self._fq("shallow2", self._conv("shallow2", h, w))
        feats = []
        h = shallow
        for k in range(self.m.recursions):
            rb_in = h
            for blk in _BLOCKS:
                for unit in _UNITS:
                    h = self._unit(f"rb.{blk}.{unit}", k, h, w)
            h = self._fq(f"r{k}.add", self._cca(k, h, w) + rb_in)
            feats.append(h)
        cat = self._fq("cat", torch.cat(feats, dim=1))
        fused = self._fq("fusion.lrelu", lrelu(self._fq("fusion", self._conv("fusion", cat, w))))
        lr = self._fq("lr_add", self._fq("lr_conv", self._conv("lr_conv", fused, w)) + shallow)
        hr = F.pixel_shuffle(self._fq("upconv", self._conv("upconv", lr, w)), self.m.scale)
        y = hr
        for i in range(4):
            y = self._fq(f"hfrrb.conv{i}", self._conv(f"hfrrb.convs.{i}", y, w))
            if i < 3:
                y = self._fq(f"hfrrb.lrelu{i}", lrelu(y))
        out = self._conv("recon", self._fq("hfrrb.add", hr + y), w)
        if self.m.anchor:  # x is on the 1/255 input grid already; nearest keeps it there
            out = self._fq("recon", out) + self.m.upsampled_input(x)
        out = out.clamp(0.0, 1.0)
        if quant and "recon" not in self.float_groups:
            out = _fixed_fq(out)
        return out

    # ------------------------------------------------------------------ ranges
    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> int:
        """Min/max calibration of every activation point over `batches` (NCHW float in
        [0, 1]); sets the scales and zero points like onnxruntime's MinMax calibrator.
        Returns the number of patches seen."""
        was_training, mode = self.training, self.mode
        self.eval()
        self.obs_min.fill_(math.inf)
        self.obs_max.fill_(-math.inf)
        self.mode = "observe"
        n = 0
        try:
            for x in batches:
                self(x)
                n += x.shape[0]
        finally:
            self.mode = mode
            self.train(was_training)
        for i in range(self.act_log_scale.numel()):
            s, z = (SIGMOID_GRID if i in self.fixed
                    else act_range(float(self.obs_min[i]), float(self.obs_max[i])))
            self.act_log_scale[i] = math.log(s)
            self.act_zp[i] = float(z)
        return n

    def ranges(self) -> dict[str, dict[str, float | int]]:
        """{point: {"scale", "zero_point"}}: the uint8 grids this model computes on."""
        out: dict[str, dict[str, float | int]] = {}
        for n in self.points:
            i = self.index[n]
            if i in self.fixed:
                out[n] = {"scale": SIGMOID_GRID[0], "zero_point": SIGMOID_GRID[1]}
                continue
            s = float(self.act_log_scale[i].detach().exp())
            z = int(round(float(self.act_zp[i].detach().clamp(0.0, 255.0))))
            out[n] = {"scale": s, "zero_point": z}
        return out

    def load_ranges(self, ranges: dict[str, Any]) -> None:
        missing = [n for n in self.points if n not in ranges]
        if missing:
            raise UserError(f"QAT ranges do not fit this model (missing {missing[:2]})")
        with torch.no_grad():
            for n in self.points:
                i = self.index[n]
                self.act_log_scale[i] = math.log(float(ranges[n]["scale"]))
                self.act_zp[i] = float(ranges[n]["zero_point"])


def qat_metadata(model: QATRDSRN, recipe: dict[str, Any] | None = None) -> dict[str, Any]:
    """The "qat" entry of a QAT weights file's metadata: scheme and learned ranges."""
    return {"format": QAT_FORMAT,
            "weights": "int8 symmetric per output channel, scale max|w|/127"
                       + (" or larger (pair_safe)" if model.weight_rule == "pair_safe" else ""),
            "weight_rule": model.weight_rule,
            "activations": "uint8 asymmetric per tensor (learned scale, zero point)",
            "io": "input and output scale 1/255, zero point 0; output clamp fused",
            "float_groups": sorted(model.float_groups),
            "ranges": model.ranges(), **({"recipe": recipe} if recipe else {})}


def qat_from_metadata(model: RDSRN, meta: dict[str, Any], what: str) -> QATRDSRN:
    """The fake-quant model of FP32 `model` with the ranges stored in its weights'
    metadata; UserError when the weights carry none (FP32-only weights)."""
    qat = meta.get("qat") if isinstance(meta, dict) else None
    if not isinstance(qat, dict):
        raise UserError(f"{what}: FP32-only weights, no QAT ranges in their metadata "
                        "(train them with `rdsrn train --config rdsrn_x4_qat`)")
    if qat.get("format") != QAT_FORMAT:
        raise UserError(f"{what}: QAT ranges of format {qat.get('format')!r}, this version "
                        f"reads {QAT_FORMAT!r} (re-run the QAT fine-tuning)")
    q = QATRDSRN(model, qat.get("float_groups", ()), weight_rule=qat.get("weight_rule", "max"))
    q.load_ranges(qat["ranges"])
    return q.eval()


def check_qat_init(model: RDSRN, path: str) -> None:
    """QAT starts from FP32 weights of exactly this architecture and scale: every tensor
    of `path` must fit `model` (UserError otherwise; plain fine-tuning is more lenient)."""
    from pathlib import Path

    p = Path(path)
    if p.suffix == ".safetensors":
        from rdsrn.weights import check_anchor, load_state

        state, meta = load_state(p)
        check_anchor(model, meta, p)
    else:
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"{p}: unreadable checkpoint ({str(exc).splitlines()[0]})") from None
        state = ckpt.get("ema") or ckpt.get("model") or {}
        state = {k[2:] if k.startswith("m.") else k: v for k, v in state.items()
                 if not k.startswith(("act_", "obs_"))}
    own = model.state_dict()
    bad = sorted(k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape))
    extra = sorted(set(state) - set(own))
    if bad or extra:
        first = (bad or extra)[0]
        raise UserError(f"{p}: QAT needs FP32 weights of this architecture "
                        f"(x{model.scale}, {model.config}); {first!r} does not fit")
