"""IMDN (Hui, Gao, Yang, Wang; ACM MM 2019): information multi-distillation network,
for measurement.

From the paper: a 3x3 conv extracts 64 features; six information multi-distillation
blocks (IMDB) follow; their outputs are concatenated and fused by a 1x1 conv
(LeakyReLU) and a 3x3 conv, plus a global skip from the first features; a 3x3 conv to
3*s^2 channels and PixelShuffle upscale.

IMDB: four 3x3 convs in a progressive refinement module. conv1 (64->64) splits 16
distilled / 48 refined channels; conv2 and conv3 (48->64) split the same way; conv4
(48->16); the four distilled parts (64) pass contrast-aware channel attention (mean +
std pooling, 1x1 64->4->64) and a 1x1 conv, plus the block input. LeakyReLU 0.05.
x4: 715,176 parameters (the paper's 715 K), 40.9 G Multi-Adds for 1280x720.

Input: 1 x 3 x H x W RGB in [0, 1]; output 1 x 3 x sH x sW.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .keymap import rename_keys

SLOPE = 0.05


class ContrastAttention(nn.Module):
    """Channel weights = sigmoid(W2 relu(W1 (mean + std)))."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.down = nn.Conv2d(channels, channels // reduction, 1)
        self.up = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * torch.sigmoid(self.up(F.relu(self.down(mean + std))))


class IMDB(nn.Module):
    def __init__(self, channels: int = 64, distill_ratio: float = 0.25) -> None:
        super().__init__()
        d = int(channels * distill_ratio)
        r = channels - d
        self.split = (d, r)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(r, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(r, channels, 3, padding=1)
        self.conv4 = nn.Conv2d(r, d, 3, padding=1)
        self.cca = ContrastAttention(d * 4)
        self.fuse = nn.Conv2d(d * 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, r = self.split
        kept = []
        h = x
        for conv in (self.conv1, self.conv2, self.conv3):
            keep, h = torch.split(F.leaky_relu(conv(h), SLOPE), (d, r), dim=1)
            kept.append(keep)
        kept.append(self.conv4(h))
        return self.fuse(self.cca(torch.cat(kept, dim=1))) + x


class IMDN(nn.Module):
    def __init__(self, scale: int = 4, channels: int = 64, blocks: int = 6,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.in_channels = in_channels
        self.config = dict(scale=scale, channels=channels, blocks=blocks,
                           in_channels=in_channels)
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(IMDB(channels) for _ in range(blocks))
        self.fuse = nn.Conv2d(channels * blocks, channels, 1)
        self.lr_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.up = nn.Conv2d(channels, in_channels * scale * scale, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        outs = []
        h = head
        for block in self.blocks:
            h = block(h)
            outs.append(h)
        fused = F.leaky_relu(self.fuse(torch.cat(outs, dim=1)), SLOPE)
        return F.pixel_shuffle(self.up(self.lr_conv(fused) + head), self.scale)


_OFFICIAL_KEYS = (
    (r"^fea_conv\.", "head."),
    (r"^c\.0\.", "fuse."),
    (r"^LR_conv\.", "lr_conv."),
    (r"^upsampler\.0\.", "up."),
    (r"^IMDB(\d+)\.c([1-4])\.", lambda m: f"blocks.{int(m[1]) - 1}.conv{m[2]}."),
    (r"^IMDB(\d+)\.c5\.", lambda m: f"blocks.{int(m[1]) - 1}.fuse."),
    (r"^IMDB(\d+)\.cca\.conv_du\.([02])\.",
     lambda m: f"blocks.{int(m[1]) - 1}.cca.{'down' if m[2] == '0' else 'up'}."),
)


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Zheng222/IMDN state dict (`checkpoints/IMDN_x4.pth`, ...; [0, 1] pixels, as
    here) with this module's keys. Keys that match no pattern are kept as they are (the
    strict load that follows names them)."""
    return rename_keys(state, _OFFICIAL_KEYS)
