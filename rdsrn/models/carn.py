"""CARN (Ahn, Kang, Sohn; ECCV 2018): cascading residual network, for measurement.

From the paper's description: an entry 3x3 conv; three cascading blocks, each holding
three residual blocks whose outputs are cascaded (concatenated with everything before
and fused by a 1x1 conv after every block); the same cascading at the global level
over the three cascading blocks; sub-pixel upsampling; an exit 3x3 conv.

The published CARN is a single multi-scale model (x2, x3 and x4 trained jointly, one
upsampling branch per scale), and its 1,592 K parameters count all three branches; its
90.9 G Multi-Adds (x4, 1280x720 output) use only the x4 branch. `multi_scale=True`
(default) reproduces that: the x2/x3 branches exist (and are counted as parameters) but
forward() uses only `scale`'s branch. A x4-only CARN has 1.11 M parameters.

The group convolutions of the paper (efficient residual block, grouped upsampling
convs) belong to the mobile variant CARN-M; `groups > 1` builds those blocks, but the
full CARN uses plain convs (groups=1), which is what gives 1,592 K.

Input: 1 x 3 x H x W RGB in [0, 1]; output 1 x 3 x sH x sW (the paper's mean shift is
a constant subtraction, omitted: it has no parameters or MACs).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class ResidualBlock(nn.Module):
    """conv-ReLU-conv + identity, then ReLU. With `groups > 1`: CARN-M's efficient
    residual block (grouped 3x3, grouped 3x3, pointwise 1x1)."""

    def __init__(self, channels: int, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
        self.pointwise = nn.Conv2d(channels, channels, 1) if groups > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        if self.pointwise is not None:
            y = self.pointwise(F.relu(y))
        return F.relu(y + x)


class Cascade(nn.Module):
    """Cascading connection over `units`: after unit i, concat(input, out_1..out_i) ->
    1x1 conv -> ReLU feeds unit i+1 (local cascading in a block, global in the net)."""

    def __init__(self, units: list[nn.Module], channels: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self.fuse = nn.ModuleList(
            nn.Conv2d(channels * (i + 2), channels, 1) for i in range(len(units)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        h = x
        for unit, fuse in zip(self.units, self.fuse):
            feats.append(unit(h))
            h = F.relu(fuse(torch.cat(feats, dim=1)))
        return h


class Upsampler(nn.Module):
    """Sub-pixel upsampling: x2 and x4 as one or two (conv 64->256, shuffle 2) stages,
    x3 as one (conv 64->576, shuffle 3) stage."""

    def __init__(self, channels: int, scale: int, groups: int = 1) -> None:
        super().__init__()
        stages = [2, 2] if scale == 4 else [scale]
        layers: list[nn.Module] = []
        for s in stages:
            layers += [nn.Conv2d(channels, channels * s * s, 3, padding=1, groups=groups),
                       nn.ReLU(inplace=True), nn.PixelShuffle(s)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CARN(nn.Module):
    """CARN; `groups=4` with `blocks` sharing off gives a CARN-M-like net (not the paper's
    CARN-M exactly: that also shares weights recursively)."""

    def __init__(self, scale: int = 4, channels: int = 64, blocks: int = 3,
                 units_per_block: int = 3, groups: int = 1, multi_scale: bool = True,
                 in_channels: int = 3) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self.in_channels = in_channels
        self.config = dict(scale=scale, channels=channels, blocks=blocks,
                           units_per_block=units_per_block, groups=groups,
                           multi_scale=multi_scale, in_channels=in_channels)
        self.entry = nn.Conv2d(in_channels, channels, 3, padding=1)
        cascading_blocks = [
            Cascade([ResidualBlock(channels, groups) for _ in range(units_per_block)],
                    channels)
            for _ in range(blocks)]
        self.body = Cascade(cascading_blocks, channels)
        scales = (2, 3, 4) if multi_scale else (scale,)
        self.upsamplers = nn.ModuleDict(
            {f"x{s}": Upsampler(channels, s, groups) for s in scales})
        self.exit = nn.Conv2d(channels, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(self.entry(x))
        return self.exit(self.upsamplers[f"x{self.scale}"](h))
