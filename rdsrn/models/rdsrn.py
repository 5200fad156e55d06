"""RDSRN: Recursive Distillation Super-Resolution Network (Woo, Sim, Kim).

Structure from the paper's text (its figures are not available):
    LR -> shallow features (two 3x3 convs)
       -> recursive block (RB: DWCB, DWCB, CCA) applied R times with SHARED weights
       -> fusion of the R pass outputs + LR conv + global residual
       -> sub-pixel upscaling (conv + PixelShuffle)
       -> high-frequency residual refinement block (HFRRB: four 3x3 convs at HR)
       -> reconstruction conv -> SR  (+ the nearest-upsampled LR when `anchor`)

Where the paper is silent the choices follow IMDN (Hui et al., ACM MM 2019) and are
noted where they are made. Input and output: RGB, float, NCHW, value range [0, 1]
(the output is not clamped; callers clamp/round).
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

# IMDN uses LeakyReLU with slope 0.05 throughout.
LRELU_SLOPE = 0.05


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


def split_channels(channels: int, csr: float) -> tuple[int, int]:
    """Split `channels` into (distilled, refined) by the channel split ratio.

    CSR is the distilled (retained) fraction; the refined rest goes on to the next conv.
    A larger CSR means fewer channels enter the next conv, hence fewer parameters, which
    is the direction of the paper's Table I.
    """
    distilled = max(1, min(channels - 1, round(channels * csr)))
    return distilled, channels - distilled


class CCALayer(nn.Module):
    """Contrast-aware channel attention (IMDN): weights = MLP(mean + std) per channel."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)  # IMDN: reduction 16
        self.fc1 = conv1x1(channels, hidden)
        self.fc2 = conv1x1(hidden, channels)

    @staticmethod
    def contrast(x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)
        # eps keeps the sqrt gradient finite on flat patches (IMDN has none).
        return mean + torch.sqrt(var + 1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(self.contrast(x)))))
        return x * w


class DistillationUnit(nn.Module):
    """One "small block" of a DWCB: three 3x3 convs with progressive distillation.

    conv1: C -> C, split (d, r); conv2: r -> Cw (the wider channel when `wide`), split
    (dw, rw); conv3: rw -> d; the distilled parts are concatenated, fused by a 1x1 conv
    back to C channels and added to the input (IMDB's layout, with three convs so that
    the wide conv is the 2nd conv of the 1st small block and the 5th conv overall in the
    2nd small block, as the paper places it).
    """

    def __init__(self, channels: int, csr: float, wide: int) -> None:
        super().__init__()
        d, r = split_channels(channels, csr)
        wide_ch = channels * wide
        dw, rw = split_channels(wide_ch, csr)
        self.splits = (d, r, dw, rw)
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(r, wide_ch)
        self.conv3 = conv3x3(rw, d)
        self.fuse = conv1x1(d + dw + d, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, r, dw, rw = self.splits
        y1 = F.leaky_relu(self.conv1(x), LRELU_SLOPE)
        d1, r1 = torch.split(y1, (d, r), dim=1)
        y2 = F.leaky_relu(self.conv2(r1), LRELU_SLOPE)
        d2, r2 = torch.split(y2, (dw, rw), dim=1)
        d3 = F.leaky_relu(self.conv3(r2), LRELU_SLOPE)
        return self.fuse(torch.cat((d1, d2, d3), dim=1)) + x


class DWCB(nn.Module):
    """Distillation wider-channel block: two distillation units (small blocks)."""

    def __init__(self, channels: int, csr: float, wide: int) -> None:
        super().__init__()
        self.unit1 = DistillationUnit(channels, csr, wide)
        self.unit2 = DistillationUnit(channels, csr, wide)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit2(self.unit1(x))


class RecursiveBlock(nn.Module):
    """RB = DWCB -> DWCB -> CCA, with a residual connection around it (IMDB-style)."""

    def __init__(self, channels: int, csr: float, wide: int) -> None:
        super().__init__()
        self.dwcb1 = DWCB(channels, csr, wide)
        self.dwcb2 = DWCB(channels, csr, wide)
        self.cca = CCALayer(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cca(self.dwcb2(self.dwcb1(x))) + x


class HFRRB(nn.Module):
    """High-frequency residual refinement block: four 3x3 convs at HR plus a skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(channels, channels) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, conv in enumerate(self.convs):
            y = conv(y)
            if i < len(self.convs) - 1:
                y = F.leaky_relu(y, LRELU_SLOPE)
        return x + y


class RDSRN(nn.Module):
    """RDSRN super-resolution network.

    Args:
        scale: upscaling factor (2, 3 or 4).
        recursions: R, passes of the shared recursive block (paper: 3).
        csr: channel split ratio in (0, 1), the distilled fraction (paper: 0.5).
        channels: LR feature width (IMDN: 64).
        hr_channels: feature width at HR, in the HFRRB (32: what the paper's
            Multi-Adds leave for the HR part, see shared/paper/NOTES.md).
        wide: widening factor of the wider-channel conv. 3 puts the x4 model at the
            paper's 0.68 M parameters; the paper does not give it.
        in_channels: image channels (3, RGB).
        anchor: add the LR input, nearest-neighbour upsampled, to the output (an
            input->output "anchor" skip, as QuickSRNet has; not in the paper), so the
            network predicts only the residual and its feature streams stop carrying the
            image: those streams hold nearly all of the INT8 loss
            (benchmarks/results/int8_noise_x2_qat.md). In `config` only when True, so
            files written before the option read unchanged.
    """

    def __init__(
        self,
        scale: int = 4,
        recursions: int = 3,
        csr: float = 0.5,
        channels: int = 64,
        hr_channels: int = 32,
        wide: int = 3,
        in_channels: int = 3,
        anchor: bool = False,
    ) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        if recursions < 1:
            raise ValueError(f"recursions must be >= 1, got {recursions}")
        if not 0.0 < csr < 1.0:
            raise ValueError(f"csr must be in (0, 1), got {csr}")
        self.scale = scale
        self.recursions = recursions
        self.csr = csr
        self.config = dict(
            scale=scale, recursions=recursions, csr=csr, channels=channels,
            hr_channels=hr_channels, wide=wide, in_channels=in_channels,
        )
        self.anchor = bool(anchor)
        if self.anchor:
            self.config["anchor"] = True
        # Training only (config anchor_ramp): plain weights fine-tuned into an anchored
        # model start at 0 and ramp to 1. Not a parameter, not saved: exported models use 1.
        self.anchor_weight = 1.0
        self.shallow1 = conv3x3(in_channels, channels)
        self.shallow2 = conv3x3(channels, channels)
        self.rb = RecursiveBlock(channels, csr, wide)
        # Fusion of all R pass outputs (IMDN fuses its block outputs by a 1x1 conv); it
        # is the only part that grows with R, as the paper's parameter counts do.
        self.fusion = conv1x1(channels * recursions, channels)
        self.lr_conv = conv3x3(channels, channels)
        # A 1x1 conv feeds PixelShuffle: a 3x3 conv to 32*s^2 channels would alone
        # exceed the paper's parameter budget at x4.
        self.upconv = conv1x1(channels, hr_channels * scale * scale)
        self.hfrrb = HFRRB(hr_channels)
        self.recon = conv3x3(hr_channels, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.shallow2(F.leaky_relu(self.shallow1(x), LRELU_SLOPE))
        feats = []
        h = shallow
        for _ in range(self.recursions):
            h = self.rb(h)
            feats.append(h)
        fused = F.leaky_relu(self.fusion(torch.cat(feats, dim=1)), LRELU_SLOPE)
        lr = self.lr_conv(fused) + shallow
        hr = F.pixel_shuffle(self.upconv(lr), self.scale)
        out = self.recon(self.hfrrb(hr))
        if self.anchor:
            up = self.upsampled_input(x)
            out = out + (up if self.anchor_weight == 1.0 else self.anchor_weight * up)
        return out

    def upsampled_input(self, x: torch.Tensor) -> torch.Tensor:
        """The anchor skip's term: `x` (NCHW) nearest-neighbour upsampled by `scale`.
        Nearest, not bicubic: exact (a copy), one Resize op every INT8 runtime runs on the
        input's own 8-bit grid, and no extra rounding."""
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")
