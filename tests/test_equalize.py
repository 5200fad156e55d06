"""Cross-layer equalization (rdsrn.quant.equalize): the float function stays, the
per-tensor 8-bit grids fit the channels better, and QAT records it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from rdsrn.models.rdsrn import RDSRN
from rdsrn.quant.equalize import (STREAMS, apply_scales, channel_ranges, equalize,
                                  stream_points)
from rdsrn.quant.qat import QATRDSRN
from export_fixtures import SMALL, small_source


def _uneven(scale: int) -> RDSRN:
    """A live small model whose stream channels span very different ranges (what
    training produces and the per-tensor grids suffer from)."""
    model = copy.deepcopy(small_source(0, scale=scale).model)
    torch.manual_seed(1)
    for stream, width in (("shallow", 16), ("trunk", 16), ("fusion", 16), ("hr", 8)):
        apply_scales(model, stream, torch.exp(torch.randn(width) * 1.2))
    return model.eval()


def _batches(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # smooth images: random 4x4 grids upsampled, as photos are smoother than noise
    x = torch.rand(6, 3, 4, 4, generator=g)
    return list(torch.nn.functional.interpolate(x, size=(20, 20), mode="bilinear").split(3))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_float_function_is_unchanged(scale: int) -> None:
    model = _uneven(scale)
    ref = copy.deepcopy(model)
    record = equalize(model, _batches())
    assert set(record["streams"]) == set(STREAMS)
    x = torch.rand(2, 3, 11, 9)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=2e-5, rtol=1e-4)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), ref.parameters()))


def test_channel_ranges_become_even_and_int8_error_drops() -> None:
    model = _uneven(2)
    ref = copy.deepcopy(model)
    batches = _batches()
    pts = set(stream_points("shallow", model.recursions) + stream_points("hr", model.recursions))
    before = channel_ranges(ref, batches, pts)
    record = equalize(model, batches, quantile=1.0)
    after = channel_ranges(model, batches, pts)
    for p in pts:  # narrowest channel relative to the widest: up, widest range unchanged
        assert float(after[p].min() / after[p].max()) > 2 * float(before[p].min() / before[p].max())
    for s in record["streams"].values():
        assert s["scale_max"] >= s["scale_median"] >= 1.0

    def int8_error(m: RDSRN) -> float:
        q = QATRDSRN(m, learn_ranges=False).eval()
        q.calibrate(batches)
        x = _batches(5)[0]
        with torch.no_grad():
            return float((q(x) - m(x).clamp(0, 1)).pow(2).mean())

    assert int8_error(model) < 0.8 * int8_error(ref)


def test_qat_config_equalizes_and_records_it(tmp_path: Path) -> None:
    """qat.equalize in a config: the Trainer's start model computes what the FP32 weights
    compute, and the saved weights carry the record; a non-bool is a one-line error."""
    import numpy as np

    from rdsrn.runtimes.errors import UserError
    from rdsrn.training.config import load_config
    from rdsrn.training.trainer import Trainer
    from rdsrn.weights import load_state, save_weights
    import cv2

    torch.set_num_threads(1)
    data = tmp_path / "train"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(data / f"i{i}.png"),
                    cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (264, 264)))
    init = tmp_path / "fp32.safetensors"
    start = _uneven(4)
    save_weights(init, start, {})
    args = {k: v for k, v in SMALL.items() if k not in ("scale", "recursions", "csr")}
    sets = [f"train_dirs=[{data}]", f"cache_dir={tmp_path / 'cache'}", f"init_from={init}",
            "model_args={" + ", ".join(f"{k}: {v}" for k, v in args.items()) + "}",
            "patch_size=8", "batch_size=2", "threads=1", "max_minutes=0", "iterations=1",
            "val_every=1", f"val_dir={data}", f"out_dir={tmp_path / 'run'}"]
    t = Trainer(load_config("rdsrn_x4_qat", sets + ["qat={calib_patches: 2, equalize: true}"]),
                progress=False)
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        assert torch.allclose(t.model.m(x), start(x), atol=2e-5, rtol=1e-4)
    assert not torch.equal(t.model.m.shallow1.weight, start.shallow1.weight)
    t.fit()
    _, meta = load_state(tmp_path / "run" / "last.safetensors")
    assert set(meta["qat"]["recipe"]["equalization"]["streams"]) == set(STREAMS)
    with pytest.raises(UserError, match="qat.equalize"):
        Trainer(load_config("rdsrn_x4_qat", sets[:-1] + [f"out_dir={tmp_path / 'r2'}",
                                                         "qat={equalize: 1}"]), progress=False)
