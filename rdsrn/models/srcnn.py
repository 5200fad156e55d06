"""SRCNN (Dong, Loy, He, Tang; TPAMI 2016), the 9-5-5 configuration, for measurement.

Three convolutions on the bicubic-upscaled luminance (Y) channel: 9x9 patch extraction
(n1 = 64), 5x5 non-linear mapping (n2 = 32), 5x5 reconstruction. With 'same' padding the
network runs at the HR size, so its Multi-Adds are counted at the output size
(57,184 params x 921,600 px = 52.7 G for 1280x720, the RDSRN paper's Table II figure).

Input: 1 x 1 x H x W, the bicubic-upscaled Y channel in [0, 1]; output the same size.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class SRCNN(nn.Module):
    """SRCNN f1-f2-f3 = 9-5-5, n1 = 64, n2 = 32 (Table 2 of the TPAMI paper).

    `scale` is recorded for the harness (the network itself is scale-agnostic: it works
    on an image already upscaled by bicubic interpolation). `pre_upscaled = True` tells
    the MAC counter and benchmark to feed it HR-sized input.
    """

    pre_upscaled = True

    def __init__(self, scale: int = 4, in_channels: int = 1, n1: int = 64, n2: int = 32,
                 f1: int = 9, f2: int = 5, f3: int = 5) -> None:
        super().__init__()
        self.scale = scale
        self.in_channels = in_channels
        self.config = dict(scale=scale, in_channels=in_channels, n1=n1, n2=n2,
                           f1=f1, f2=f2, f3=f3)
        self.patch = nn.Conv2d(in_channels, n1, f1, padding=f1 // 2)
        self.mapping = nn.Conv2d(n1, n2, f2, padding=f2 // 2)
        self.recon = nn.Conv2d(n2, in_channels, f3, padding=f3 // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.recon(F.relu(self.mapping(F.relu(self.patch(x)))))
