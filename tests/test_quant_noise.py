"""quant_noise: FP32 training with 8-bit-step uniform noise at every INT8 point
(rdsrn/training/qat.py, QATRDSRN mode "noise")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rdsrn.models.rdsrn import RDSRN
from rdsrn.quant.qat import QATRDSRN, SIGMOID_GRID
from rdsrn.runtimes.errors import UserError
from export_fixtures import SMALL
from test_qat import _tiny_qat_setup


@pytest.mark.parametrize("channels_last", [False, True])
def test_noise_is_one_step_of_the_tensors_range(channels_last: bool) -> None:
    torch.manual_seed(0)
    q = QATRDSRN(RDSRN(**SMALL))
    q.mode = "noise"
    x = torch.randn(2, 16, 24, 20) * 3.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    step = float(x.max() - x.min()) / 255.0
    for scale in (1.0, 2.5):
        q.noise_scale = scale
        name = "r0.dwcb1.unit1.conv1"
        d = q._fq(name, x) - x
        assert d.shape == x.shape
        assert float(d.abs().max()) <= 0.5 * step * scale * (1 + 1e-5)
        # uniform over one (scaled) step: std step/sqrt(12), no bias, no two points alike
        assert float(d.std()) == pytest.approx(step * scale / 12 ** 0.5, rel=0.03)
        assert abs(float(d.mean())) < 0.02 * step * scale
        assert not torch.equal(d, q._fq(name, x) - x)
    q.noise_scale = 1.0
    s = torch.rand(2, 16, 1, 1)
    d = q._fq("r0.cca.sigmoid", s) - s  # the fixed sigmoid grid, not the batch range
    assert float(d.abs().max()) <= 0.5 * SIGMOID_GRID[0] + 1e-7


def test_noise_mode_forward_and_float_groups() -> None:
    """Noise everywhere differs from the float model by about the INT8 error; with every
    layer group kept float it is the float model; gradients reach the weights."""
    from rdsrn.quant.groups import GROUPS

    torch.manual_seed(0)
    m = RDSRN(**SMALL)
    x = torch.rand(2, 3, 12, 10)
    q = QATRDSRN(m)
    q.mode = "noise"
    y = q(x)
    y.mean().backward()
    assert m.shallow1.weight.grad is not None and q.act_log_scale.grad is None
    with torch.no_grad():
        ref = m(x).clamp(0, 1)
        assert 0 < float((y - ref).abs().mean()) < 0.05
        q.float_groups = frozenset(GROUPS)
        assert torch.equal(q(x), ref)


def test_training_run_with_quant_noise(tmp_path: Path) -> None:
    """Two steps through the Trainer: the noise model trains, validation and the saved
    file are the plain float RDSRN (no QAT ranges; the recipe names the noise), and the
    run resumes; quant_noise with qat, anchor_ramp or out of range is refused."""
    from rdsrn.training.config import load_config
    from rdsrn.training.trainer import Trainer
    from rdsrn.weights import load_state

    data, common = _tiny_qat_setup(tmp_path, images=3, side=280)
    sets = [*common, f"out_dir={tmp_path / 'run'}", f"val_dir={data}", "iterations=2",
            "val_every=2", "ckpt_every=1", "precision=fp32", "quant_noise=1.0", "qat={}"]
    t = Trainer(load_config("rdsrn_x4_qat", sets), progress=False)
    assert isinstance(t.model, QATRDSRN) and t.model.mode == "noise"
    start = t.model.m.shallow1.weight.detach().clone()
    t.fit()
    assert not torch.equal(start, t.model.m.shallow1.weight)
    assert t.model.mode == "noise"  # validation judged a float copy
    state, meta = load_state(tmp_path / "run" / "best.safetensors")
    assert "qat" not in meta and meta["recipe"]["quant_noise"] == 1.0
    assert set(state) == set(RDSRN(scale=4, channels=8, hr_channels=4, wide=1).state_dict())
    q = QATRDSRN(RDSRN(scale=4, channels=8, hr_channels=4, wide=1))
    q.m.load_state_dict(state)
    q.mode = "float"
    psnr_float = t.validator(q)[0]
    assert meta["val"]["psnr_y"] == pytest.approx(psnr_float, abs=1e-3)
    resumed = Trainer(load_config("rdsrn_x4_qat", sets + ["iterations=3"]), resume=True,
                      progress=False)
    assert resumed.iteration == 2 and resumed.model.mode == "noise"
    for extra, msg in ((["qat={calib_patches: 2}"], "not with qat"),
                       (["quant_noise=5"], "must be in \\[0, 4\\]"),
                       (["model=rdsrn_x4_anchor", "anchor_ramp=2"], "not with anchor_ramp")):
        with pytest.raises(UserError, match="quant_noise"):
            Trainer(load_config("rdsrn_x4_qat", sets + [f"out_dir={tmp_path / 'bad'}"] + extra),
                    progress=False)
