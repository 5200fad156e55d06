"""RDN (Zhang, Tian, Kong, Zhong, Fu; CVPR 2018): residual dense network, for
measurement.

From the paper: two shallow 3x3 convs (F_-1, F_0); D residual dense blocks (RDB), each
of C densely connected 3x3 conv+ReLU layers with growth rate G, local feature fusion
(1x1 over G0 + C*G channels -> G0) and local residual learning; global feature fusion
(1x1 over D*G0 -> G0, then 3x3) and global residual learning from F_-1; ESPCN-style
sub-pixel upscaling; a 3x3 reconstruction conv. D = 16, C = 8, G = G0 = 64:
x4 has 22.27 M parameters and 1,309 G Multi-Adds for a 1280x720 output.

Input: 1 x 3 x H x W RGB in [0, 1]; output 1 x 3 x sH x sW.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class RDB(nn.Module):
    def __init__(self, g0: int, g: int, layers: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(g0 + i * g, g, 3, padding=1) for i in range(layers))
        self.lff = nn.Conv2d(g0 + layers * g, g0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(F.relu(conv(torch.cat(feats, dim=1))))
        return self.lff(torch.cat(feats, dim=1)) + x


class RDN(nn.Module):
    def __init__(self, scale: int = 4, blocks: int = 16, layers: int = 8,
                 growth: int = 64, g0: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self.in_channels = in_channels
        self.config = dict(scale=scale, blocks=blocks, layers=layers, growth=growth,
                           g0=g0, in_channels=in_channels)
        self.sfe1 = nn.Conv2d(in_channels, g0, 3, padding=1)
        self.sfe2 = nn.Conv2d(g0, g0, 3, padding=1)
        self.rdbs = nn.ModuleList(RDB(g0, growth, layers) for _ in range(blocks))
        self.gff = nn.Sequential(nn.Conv2d(blocks * g0, g0, 1),
                                 nn.Conv2d(g0, g0, 3, padding=1))
        # x4 as two x2 sub-pixel stages, x2/x3 as one.
        stages = [2, 2] if scale == 4 else [scale]
        up: list[nn.Module] = []
        for s in stages:
            up += [nn.Conv2d(g0, g0 * s * s, 3, padding=1), nn.PixelShuffle(s)]
        self.upscale = nn.Sequential(*up)
        self.recon = nn.Conv2d(g0, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f_minus1 = self.sfe1(x)
        h = self.sfe2(f_minus1)
        outs = []
        for rdb in self.rdbs:
            h = rdb(h)
            outs.append(h)
        dense = self.gff(torch.cat(outs, dim=1)) + f_minus1
        return self.recon(self.upscale(dense))
