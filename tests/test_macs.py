"""MAC counter against hand-computed counts on small layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from rdsrn.macs import (count_macs, count_macs_by_layer, count_params, conv2d_macs,
                        lr_size_for_output, macs_for_hd_output)
from rdsrn.models import create_model


def test_single_conv_3x3_padded():
    m = nn.Conv2d(3, 8, 3, padding=1)
    # 5x7 output, 8 out channels, each output = 3*3*3 MACs.
    assert count_macs(m, (5, 7)) == 5 * 7 * 8 * 27
    assert count_params(m) == 8 * 27 + 8


def test_strided_unpadded_conv():
    m = nn.Conv2d(4, 6, 3, stride=2)  # 9x9 -> 4x4
    assert count_macs(m, (9, 9), in_channels=4) == 4 * 4 * 6 * 4 * 9


def test_shared_module_called_twice_counts_twice():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(F.relu(self.conv(x)))

    m = Twice()
    assert count_macs(m, (4, 4)) == 2 * (4 * 4 * 3 * 27)
    assert count_params(m) == 3 * 27 + 3  # weights shared: counted once
    assert count_macs_by_layer(m, (4, 4)) == {"conv": 2 * 4 * 4 * 3 * 27}


def test_grouped_and_depthwise_conv():
    g = nn.Conv2d(8, 16, 3, padding=1, groups=4)
    assert count_macs(g, (6, 6), in_channels=8) == 6 * 6 * 16 * (8 // 4) * 9
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert count_macs(dw, (6, 6), in_channels=8) == 6 * 6 * 8 * 9
    assert count_params(dw) == 8 * 9


def test_pixel_shuffle_net():
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 3 * 4, 1), nn.PixelShuffle(2),
                        nn.Conv2d(3, 3, 3, padding=1))
    h, w = 5, 6
    expected = (conv2d_macs(h, w, 3, 16, 3) + conv2d_macs(h, w, 16, 12, 1)
                + conv2d_macs(2 * h, 2 * w, 3, 3, 3))
    assert count_macs(net, (h, w)) == expected


def test_linear_and_transposed_conv():
    lin = nn.Linear(10, 4)

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x.flatten(1))

    assert count_macs(Flat(), (1, 5), in_channels=2) == 4 * 10
    up = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)  # 3x3 -> 6x6
    # every input element scatters into out_channels * k * k outputs
    assert count_macs(up, (3, 3), in_channels=4) == 3 * 3 * 4 * 2 * 16


def test_model_untouched_and_real_forward_still_works():
    m = nn.Conv2d(3, 4, 3, padding=1)
    count_macs(m, (8, 8))
    assert m.weight.device.type == "cpu"
    assert m(torch.zeros(1, 3, 8, 8)).shape == (1, 4, 8, 8)


def test_hd_output_sizes():
    assert lr_size_for_output((720, 1280), 4) == (180, 320)
    with pytest.raises(ValueError):
        lr_size_for_output((720, 1280), 7)
    net = nn.Conv2d(3, 3, 3, padding=1)
    assert macs_for_hd_output(net, scale=4) == 180 * 320 * 3 * 27
    assert macs_for_hd_output(net, pre_upscaled=True) == 720 * 1280 * 3 * 27


def test_rdsrn_recursion_scales_macs_linearly():
    """Each extra RB pass adds the same MACs; params change only by the fusion conv."""
    size = (12, 16)
    macs = {r: count_macs(create_model("rdsrn_x4", recursions=r), size) for r in (1, 2, 3)}
    step = macs[2] - macs[1]
    # the fusion 1x1 conv grows by 64 input channels per pass as well
    assert step > 0 and macs[3] - macs[2] == step
    p1 = count_params(create_model("rdsrn_x4", recursions=1))
    p3 = count_params(create_model("rdsrn_x4", recursions=3))
    assert p3 - p1 == 2 * 64 * 64  # fusion conv: 64*R -> 64, 1x1


# Published (params, G Multi-Adds for a 1280x720 x4 output) of the Table II networks.
PUBLISHED = {
    "srcnn_x4": (57_184 + 97, 52.7),   # SRCNN 9-5-5 on Y; paper's 0.057 M excludes biases
    "carn_x4": (1_592_000, 90.9),      # CARN paper: 1,592 K, 90.9 G
    "imdn_x4": (715_000, 40.9),        # IMDN paper: 715 K, 40.9 G
    "rdn_x4": (22_271_107, 1309.0),    # RDN: 22 M; RDSRN Table II: 1,309 G
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_comparison_networks_match_published_counts(name):
    model = create_model(name)
    params, gmacs = PUBLISHED[name]
    assert count_params(model) == pytest.approx(params, rel=0.002)
    pre = getattr(model, "pre_upscaled", False)
    macs = macs_for_hd_output(model, pre_upscaled=pre, in_channels=model.in_channels)
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.002)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_comparison_networks_run(name):
    model = create_model(name).eval()
    x = torch.rand(1, model.in_channels, 6, 5)
    with torch.no_grad():
        y = model(x)
    s = 1 if getattr(model, "pre_upscaled", False) else 4
    assert y.shape == (1, model.in_channels, 6 * s, 5 * s)
