"""Cross-layer equalization (CLE) of RDSRN's feature streams: a weight transform that
leaves the float function unchanged and makes per-tensor 8-bit activation grids fit.

Why: the INT8 files quantize each activation tensor on one grid for all its channels.
RDSRN carries the image itself through a few feature streams (the shallow features, the
64-channel LR residual stream through every recursion, the 32-channel HR stream around
the HFRRB), and their channels span ranges up to ~50x apart, so most channels see a
coarse grid. Per-channel grids on those streams would recover +0.20 dB of the x2
model's 0.25 dB INT8 loss on Set5 (benchmarks/results/qat.md); no runtime here has
per-channel activation grids, but each stream can be rescaled channel by channel:

    writer rows (and bias) x s_c  ->  stream channel c x s_c  ->  reader columns / s_c

which is exact for linear ops, residual adds, concatenations, channel splits of the
stream, PixelShuffle (per channel group) and LeakyReLU / ReLU (positively homogeneous,
s_c > 0). The channel attention is exact too: its contrast (mean + std per channel)
scales with s_c, so its first 1x1 conv's columns are divided by s_c, and x * w keeps
the scale. (Its std has an epsilon of 1e-8 under the root: a change far below 1e-6.)

Streams (module names of RDSRN):
- "shallow": shallow1 (rows) -> LeakyReLU -> shallow2 (columns);
- "trunk": written by shallow2, every distillation unit's fuse conv, lr_conv (rows);
  read by every unit's conv1, the CCA's fc1, fusion (each of its R column blocks) and
  upconv (columns); the recursions share weights, so one scale serves all passes;
- "fusion": fusion (rows) -> LeakyReLU -> lr_conv (columns);
- "hr": written by upconv (rows c*s^2 .. c*s^2+s^2-1 become HR channel c after
  PixelShuffle) and hfrrb.convs.3 (rows); read by hfrrb.convs.0 and recon (columns).

Scales: for every channel, its range (max - min over calibration patches, 0 included)
at each quantization point of the stream, relative to that point's widest channel; a
high quantile r_c of that over the stream's points sets s_c = (1 / r_c) ** strength,
capped at `max_scale`. s_c >= 1: narrow channels are widened toward the widest. Readers' columns shrink by s_c, which costs the per-
output-channel int8 weights a little precision (hence the cap and `strength`).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from rdsrn.models.rdsrn import RDSRN
from rdsrn.runtimes.errors import UserError

STREAMS = ("shallow", "trunk", "fusion", "hr")
# Over a stream's points, a channel's relative range is taken at this quantile, not the
# max: the trunk has ~40 points, and the max lets one point cap the whole stream's
# scales. Points where a channel is wider than that get a slightly wider tensor range.
DEFAULT_QUANTILE = 0.9


def _trunk_points(recursions: int) -> list[str]:
    pts = ["shallow2", "lr_conv", "lr_add"]
    for k in range(recursions):
        for blk in ("dwcb1", "dwcb2"):
            for unit in ("unit1", "unit2"):
                pts += [f"r{k}.{blk}.{unit}.fuse", f"r{k}.{blk}.{unit}.add"]
        pts += [f"r{k}.cca.mul", f"r{k}.add"]
    return pts


def stream_points(stream: str, recursions: int) -> list[str]:
    """The QAT activation points (rdsrn.quant.qat names) whose channels are `stream`'s."""
    return {"shallow": ["shallow1", "shallow1.lrelu"],
            "trunk": _trunk_points(recursions),
            "fusion": ["fusion", "fusion.lrelu"],
            "hr": ["upconv", "hfrrb.add"]}[stream]


def _units(model: RDSRN) -> list[nn.Module]:
    return [getattr(getattr(model.rb, b), u) for b in ("dwcb1", "dwcb2")
            for u in ("unit1", "unit2")]


@torch.no_grad()
def channel_ranges(model: RDSRN, batches: Iterable[torch.Tensor],
                   points: set[str]) -> dict[str, torch.Tensor]:
    """Per-channel range (max(hi, 0) - min(lo, 0)) of each of `points` over `batches`
    (NCHW float in [0, 1]), in the float model. HR points are per HR channel."""
    from .qat import QATRDSRN

    q = QATRDSRN(model, learn_ranges=False)
    q.mode = "float"
    lo: dict[str, torch.Tensor] = {}
    hi: dict[str, torch.Tensor] = {}

    def record(name: str, x: torch.Tensor) -> torch.Tensor:
        if name in points:
            mn, mx = x.amin(dim=(0, 2, 3)).float(), x.amax(dim=(0, 2, 3)).float()
            lo[name] = torch.minimum(lo[name], mn) if name in lo else mn
            hi[name] = torch.maximum(hi[name], mx) if name in hi else mx
        return x

    q._fq = record  # type: ignore[method-assign]
    was = model.training
    model.eval()
    try:
        for b in batches:
            q(b)
    finally:
        model.train(was)
    out = {}
    for name in lo:
        r = hi[name].clamp_min(0) - lo[name].clamp_max(0)
        if name == "upconv":  # PixelShuffle: HR channel c <- conv channels c*s^2 ...
            r = r.view(-1, model.scale * model.scale).amax(dim=1)
        out[name] = r
    return out


def stream_scales(ranges: dict[str, torch.Tensor], points: list[str], strength: float,
                  max_scale: float, quantile: float) -> torch.Tensor:
    """s_c >= 1 per channel (see the module docstring)."""
    rel = torch.stack([ranges[p] / ranges[p].max().clamp_min(1e-12) for p in points])
    worst = rel.quantile(quantile, dim=0).clamp_min(1e-12)
    return worst.reciprocal().pow(strength).clamp(1.0, max_scale)


@torch.no_grad()
def _rows(conv: nn.Conv2d, s: torch.Tensor) -> None:
    conv.weight.mul_(s.view(-1, 1, 1, 1))
    if conv.bias is not None:
        conv.bias.mul_(s)


@torch.no_grad()
def _cols(conv: nn.Conv2d, s: torch.Tensor) -> None:
    conv.weight.div_(s.view(1, -1, 1, 1))


def apply_scales(model: RDSRN, stream: str, s: torch.Tensor) -> None:
    """Rescale `stream`'s channels by `s` (in place; the float function is unchanged)."""
    if stream == "shallow":
        _rows(model.shallow1, s)
        _cols(model.shallow2, s)
    elif stream == "trunk":
        for conv in [model.shallow2, model.lr_conv] + [u.fuse for u in _units(model)]:
            _rows(conv, s)
        for conv in [u.conv1 for u in _units(model)] + [model.rb.cca.fc1]:
            _cols(conv, s)
        _cols(model.fusion, s.repeat(model.recursions))
        _cols(model.upconv, s)
    elif stream == "fusion":
        _rows(model.fusion, s)
        _cols(model.lr_conv, s)
    elif stream == "hr":
        _rows(model.upconv, s.repeat_interleave(model.scale * model.scale))
        _rows(model.hfrrb.convs[3], s)
        _cols(model.hfrrb.convs[0], s)
        _cols(model.recon, s)
    else:
        raise ValueError(f"unknown stream {stream!r}; streams: {', '.join(STREAMS)}")


def equalize(model: RDSRN, batches: list[torch.Tensor], streams: Iterable[str] = STREAMS,
             strength: float = 1.0, max_scale: float = 16.0,
             quantile: float = DEFAULT_QUANTILE) -> dict[str, Any]:
    """Cross-layer equalization of `model` in place, ranges measured on `batches` (LR
    training patches, NCHW float in [0, 1]). Returns the record for the weights'
    metadata (per stream: how far the scales spread)."""
    if not isinstance(model, RDSRN):
        raise UserError(f"equalization supports RDSRN models only, not {type(model).__name__}")
    streams = list(streams)
    points = {st: stream_points(st, model.recursions) for st in streams}
    # Rescaling one stream leaves every other stream's values as they are: one pass.
    ranges = channel_ranges(model, batches, {p for pts in points.values() for p in pts})
    record: dict[str, Any] = {"strength": strength, "max_scale": max_scale,
                              "quantile": quantile, "streams": {}}
    for stream in streams:
        s = stream_scales(ranges, points[stream], strength, max_scale, quantile)
        apply_scales(model, stream, s)
        record["streams"][stream] = {"channels": int(s.numel()),
                                     "scale_median": round(float(s.median()), 3),
                                     "scale_max": round(float(s.max()), 3)}
    return record


def summary(record: dict[str, Any]) -> str:
    """One log line for an `equalize` record."""
    return "equalized feature streams (max channel scale " + ", ".join(
        f"{k} {v['scale_max']}" for k, v in record["streams"].items()) + ")"
