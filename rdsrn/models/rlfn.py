"""RLFN (Kong, Li, Liu, Wang, Tian, Xu, Hu, Liu; CVPRW 2022): residual local feature
network, winner of the NTIRE 2022 efficient-SR runtime track.

From the paper: a 3x3 conv extracts C features (RLFN: C = 52, RLFN-S: C = 48); six
residual local feature blocks (RLFB) follow; a 3x3 conv and a skip from the first
features; a 3x3 conv to 3*s^2 channels and PixelShuffle. All convolutions run at LR.

RLFB: three 3x3 convs with LeakyReLU(0.05) and a residual skip over them, a 1x1 conv,
then enhanced spatial attention (ESA): a 1x1 reduction to 16 channels, a strided 3x3
conv (stride 2, no padding), 7x7 max pooling with stride 3, a 3x3 conv, bilinear
upsampling back to the block's size, plus a 1x1 shortcut of the reduced features, a
1x1 expansion and a sigmoid that scales the block's features.
x4: 543,740 parameters (the paper's 0.543 M).

Input: 1 x 3 x H x W RGB in [0, 1], H and W >= 15 (ESA's strided conv and pooling);
output 1 x 3 x sH x sW. The official checkpoints (bytedance/RLFN, `model_zoo/`) work
on [0, 255]: `from_official` maps their keys onto this module and folds the factor 255
into the first and last convolutions, so the network is the same function on [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .keymap import rename_keys

SLOPE = 0.05
MIN_SIZE = 15  # smallest H, W the ESA branch accepts


class ESA(nn.Module):
    """Enhanced spatial attention: a sigmoid mask from a coarse, pooled view."""

    def __init__(self, channels: int, reduced: int = 16) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.shortcut = nn.Conv2d(reduced, reduced, 1)
        self.down = nn.Conv2d(reduced, reduced, 3, stride=2)
        self.body = nn.Conv2d(reduced, reduced, 3, padding=1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        coarse = self.body(F.max_pool2d(self.down(r), kernel_size=7, stride=3))
        coarse = F.interpolate(coarse, size=x.shape[2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.expand(coarse + self.shortcut(r)))


class RLFB(nn.Module):
    """Residual local feature block."""

    def __init__(self, channels: int, esa_channels: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.smooth = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(channels, esa_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in (self.conv1, self.conv2, self.conv3):
            h = F.leaky_relu(conv(h), SLOPE)
        return self.esa(self.smooth(h + x))


class RLFN(nn.Module):
    def __init__(self, scale: int = 4, channels: int = 52, blocks: int = 6,
                 esa_channels: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        self.scale = scale
        self.in_channels = in_channels
        self.min_size = MIN_SIZE
        self.config = dict(scale=scale, channels=channels, blocks=blocks,
                           esa_channels=esa_channels, in_channels=in_channels)
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(RLFB(channels, esa_channels) for _ in range(blocks))
        self.lr_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.up = nn.Conv2d(channels, in_channels * scale * scale, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        h = head
        for block in self.blocks:
            h = block(h)
        return F.pixel_shuffle(self.up(self.lr_conv(h) + head), self.scale)


# official key pattern -> ours (applied in order, first match wins)
_OFFICIAL_KEYS = (
    (r"^conv_1\.", "head."),
    (r"^conv_2\.", "lr_conv."),
    (r"^upsampler\.0\.", "up."),
    (r"^block_(\d+)\.c([123])_r\.", lambda m: f"blocks.{int(m[1]) - 1}.conv{m[2]}."),
    (r"^block_(\d+)\.c5\.", lambda m: f"blocks.{int(m[1]) - 1}.smooth."),
    (r"^block_(\d+)\.esa\.(conv1|conv_f|conv2|conv3|conv4)\.",
     lambda m: f"blocks.{int(m[1]) - 1}.esa."
               + {"conv1": "reduce", "conv_f": "shortcut", "conv2": "down", "conv3": "body",
                  "conv4": "expand"}[m[2]] + "."),
)
OFFICIAL_RANGE = 255.0  # the official checkpoints' pixel range


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A bytedance/RLFN state dict (`model_zoo/rlfn_x4.pth`, ...) as this module's, on
    [0, 1] pixels. Keys that match no pattern are kept as they are (the strict load
    that follows names them)."""
    out = {k: v.clone() for k, v in rename_keys(state, _OFFICIAL_KEYS).items()}
    if "head.weight" in out:
        out["head.weight"] *= OFFICIAL_RANGE
    for k in ("up.weight", "up.bias"):
        if k in out:
            out[k] /= OFFICIAL_RANGE
    return out
