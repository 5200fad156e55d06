"""The anchor skip (RDSRN(anchor=True)): the model, its weights files, its fake-quant
model, and its ONNX / TFLite files (FP32 and QAT INT8) run by the runtime layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rdsrn.models import create_model
from rdsrn.models.rdsrn import RDSRN
from rdsrn.quant.qat import QATRDSRN, point_names, qat_metadata
from export_fixtures import SMALL, crop_inputs, small_source, tiny_eval_dir


def test_anchor_adds_the_nearest_upsampled_input() -> None:
    torch.manual_seed(0)
    plain = RDSRN(**{**SMALL, "scale": 3}).eval()
    anchored = RDSRN(**{**SMALL, "scale": 3}, anchor=True).eval()
    anchored.load_state_dict(plain.state_dict())  # no parameters of its own
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        want = plain(x) + x.repeat_interleave(3, dim=2).repeat_interleave(3, dim=3)
        assert torch.allclose(anchored(x), want, atol=1e-6)
    assert anchored.config["anchor"] is True and "anchor" not in plain.config
    assert create_model("rdsrn_x2", **anchored.config | {"scale": 2}).anchor


def test_weights_file_keeps_the_anchor(tmp_path: Path) -> None:
    from rdsrn.export.source import load_source
    from rdsrn.weights import save_weights

    src = small_source(anchor=True)
    path = tmp_path / "a.safetensors"
    save_weights(path, src.model, {"model": "rdsrn_x4", "config": dict(src.model.config)})
    loaded = load_source(str(path))
    assert loaded.model.anchor
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), src.model(x))


def test_fake_quant_model_quantizes_the_residual(data_dir: Path) -> None:
    """The anchored QAT model has one more point, "recon" (the residual before the add);
    its float mode is the float model, clamped."""
    src = small_source(anchor=True)
    q = QATRDSRN(src.model).eval()
    assert q.points == point_names(SMALL["recursions"], anchor=True)
    assert q.points[-1] == "recon" and "recon" not in point_names(SMALL["recursions"])
    x = torch.from_numpy(crop_inputs(data_dir, [(12, 12)])[0]).permute(0, 3, 1, 2)
    with torch.no_grad():
        q.mode = "float"
        assert torch.equal(q(x), src.model(x).clamp(0, 1))
        q.calibrate([x])
        lo, hi = q.obs_min[q.index["recon"]], q.obs_max[q.index["recon"]]
        assert lo < 0 < hi  # a residual, not an image
        q.mode = "quant"
        y = q(x)
    assert torch.allclose(y * 255, (y * 255).round(), atol=1e-4)


@pytest.mark.slow
def test_anchor_exports_run_in_the_runtime(data_dir: Path, set5_dir: Path,
                                           tmp_path: Path) -> None:
    """FP32, QAT INT8 and mixed files of an anchored model, ONNX and TFLite: gated, the
    upsampling in the graph (Resize / DEPTH_TO_SPACE of copies), and the runtime layer
    upscales with them as the PyTorch model does."""
    from rdsrn.export.bundle import MIXED_GROUPS
    from rdsrn.export.calibration import make_calibration_set
    from rdsrn.export.onnx_export import export_onnx
    from rdsrn.export.tflite_export import export_tflite, inspect
    from rdsrn.runtimes import Upscaler

    src = small_source(anchor=True)
    calib = make_calibration_set(data_dir / "train", 4, 4, size=(24, 24))
    q = QATRDSRN(src.model).eval()
    q.calibrate(torch.from_numpy(calib.nchw()).split(2))
    src.qat = qat_metadata(q)
    common = dict(parity_inputs=crop_inputs(data_dir, [(24, 24)]),
                  eval_dir=tiny_eval_dir(set5_dir, tmp_path / "eval"), max_drop=5.0,
                  log=lambda s: None)
    image = (crop_inputs(data_dir, [(20, 28)])[0][0] * 255).round().astype(np.uint8)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = src.model(x).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
    results = [
        export_onnx(src, tmp_path / "a.onnx", "fp32", **common),
        export_onnx(src, tmp_path / "a_int8.onnx", "int8", calib=calib, qat=True, **common),
        export_tflite(src, tmp_path / "a.tflite", "fp32", **common),
        export_tflite(src, tmp_path / "a_int8.tflite", "int8", calib=calib, qat=True, **common),
        # mixed precision, as bundled for x3 (export.bundle.MIXED_GROUPS)
        export_onnx(src, tmp_path / "a_mixed.onnx", "int8", calib=calib, qat=True,
                    keep_float=MIXED_GROUPS, **common),
        export_tflite(src, tmp_path / "a_mixed.tflite", "int8", calib=calib, qat=True,
                      keep_float=MIXED_GROUPS, **common),
    ]
    for res in results:
        assert res.metadata["model"]["config"]["anchor"] is True
        if res.precision == "int8":
            assert res.metadata["quantization"]["parity_fakequant"]["psnr_vs_torch"] > 40
        out = Upscaler(res.path).upscale(image).astype(np.float64)
        assert out.shape == (80, 112, 3)
        err = np.abs(out - ref)
        assert err.mean() < (0.6 if res.precision == "fp32" else 3.0), res.path.name
    tfl = results[3].metadata["quantization"]
    assert "output_clamp" in tfl  # the ADD saturates on the pixel grid
    for res in (results[3], results[5]):  # the clip, a no-op on that grid, is removed
        ops = inspect(res.path.read_bytes())["ops"]
        assert "MINIMUM" not in ops and "RELU" not in ops and ops["ADD"] >= 1, ops


def test_training_config_builds_the_anchored_model() -> None:
    from rdsrn.training.config import build_model, load_config

    for scale in (2, 3, 4):
        cfg = load_config(f"rdsrn_x{scale}_anchor", [])
        model = build_model(cfg)
        assert model.anchor and model.scale == scale and 0 < cfg.anchor_ramp < cfg.iterations
        assert cfg.init_from == f"rdsrn/weights/rdsrn_x{scale}.safetensors"  # plain weights
        qat = load_config(f"rdsrn_x{scale}_anchor_qat", [])
        assert build_model(qat).anchor and qat.qat and qat.anchor_ramp == 0


def test_weights_of_the_other_variant_are_refused(tmp_path: Path) -> None:
    """Same tensors, different function: load_into must not mix the two up."""
    from rdsrn.runtimes.errors import UserError
    from rdsrn.weights import load_into, save_weights

    src = small_source(anchor=True)
    path = tmp_path / "a.safetensors"
    save_weights(path, src.model, {"model": "rdsrn_x4", "config": dict(src.model.config)})
    with pytest.raises(UserError, match="with the anchor skip"):
        load_into(RDSRN(**SMALL), path)
    plain = tmp_path / "p.safetensors"
    save_weights(plain, RDSRN(**SMALL), {"model": "rdsrn_x4", "config": dict(SMALL)})
    with pytest.raises(UserError, match="without the anchor skip"):
        load_into(RDSRN(**SMALL, anchor=True), plain)
    load_into(RDSRN(**SMALL, anchor=True), path)


def test_anchor_ramp_fine_tunes_plain_weights(tmp_path: Path) -> None:
    """anchor_ramp: plain FP32 weights fine-tuned into an anchored model, the skip's weight
    rising 0 -> 1 with the iteration (also after a resume); the saved weights are an
    anchored model. Bad combinations are one-line config errors."""
    from test_qat import TINY, _tiny_qat_setup

    from rdsrn.runtimes.errors import UserError
    from rdsrn.training.config import load_config
    from rdsrn.training.trainer import Trainer
    from rdsrn.weights import load_state

    data, common = _tiny_qat_setup(tmp_path, images=3, side=280)
    margs = "model_args={channels: 8, hr_channels: 4, wide: 1, anchor: true}"
    sets = [*[c for c in common if not c.startswith("model_args")], margs,
            f"out_dir={tmp_path / 'run'}", f"val_dir={data}", "iterations=2", "val_every=2",
            "ckpt_every=1", "anchor_ramp=4", "precision=fp32"]
    t = Trainer(load_config("rdsrn_x4", sets), progress=False)
    seen = []
    step = t.train_step
    t.train_step = lambda: (step(), seen.append(t.model.anchor_weight))[0]
    t.fit()
    assert seen == [0.0, 0.25]
    _, meta = load_state(tmp_path / "run" / "best.safetensors")
    assert meta["config"]["anchor"] is True
    assert t.model.anchor_weight == 0.25  # validation judges the shipped function, weight 1
    full = t.model.to(memory_format=torch.contiguous_format)
    assert t.validate(use_ema=False) == t.validator(_with(full, 1.0)) \
        != t.validator(_with(full, 0.25))
    r = Trainer(load_config("rdsrn_x4", sets + ["iterations=3"]), resume=True, progress=False)
    step = r.train_step
    r.train_step = lambda: (step(), seen.append(r.model.anchor_weight))[0]
    r.fit()
    assert seen[-1] == 0.5
    plain = [s for s in sets if s != margs] + [f"model_args={TINY}".replace("'", ""),
                                               f"out_dir={tmp_path / 'r2'}"]
    sets.append(f"out_dir={tmp_path / 'r3'}")
    with pytest.raises(UserError, match="anchor_ramp.*no anchor skip"):
        Trainer(load_config("rdsrn_x4", plain), progress=False)
    with pytest.raises(UserError, match="anchor_ramp.*qat"):
        Trainer(load_config("rdsrn_x4", sets + ["qat={calib_patches: 2}"]), progress=False)


def _with(model: torch.nn.Module, weight: float) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model)
    m.anchor_weight = weight
    return m


def test_gpu_session_anchor_trains_the_anchored_names(tmp_path: Path) -> None:
    """`gpu_session --anchor`: every stage trains rdsrn_x{s}_anchor (x4 from scratch with
    the shipped x4 recipe, x3/x2 from its weights), so the results ship under their own
    names, never over the plain weights. (The toy rehearsal of the whole session with
    --anchor runs the same way as tests/test_device_data.py's.)"""
    import argparse

    from rdsrn.training.gpu_session import train_argv

    plan = {"sampler": "device", "compile": False, "batch": 64,
            "stages": {f"x{s}": {"lr": 1e-3, "iterations": 10, "warmup_iters": 1,
                                 "val_every": 5, "ckpt_every": 5} for s in (2, 3, 4)}}
    for anchor in (False, True):
        a = argparse.Namespace(data=["d"], patch=64, toy=False, val="v", x4_init="",
                               anchor=anchor)
        for s in (2, 3, 4):
            argv = train_argv(s, plan, a, tmp_path, False, 1.0)
            sets = [argv[i + 1] for i, t in enumerate(argv) if t == "--set"]
            assert argv[argv.index("--config") + 1] == f"rdsrn_x{s}"
            want = f"rdsrn_x{s}_anchor" if anchor else f"rdsrn_x{s}"
            assert f"model={want}" in sets
            assert any(x.startswith("init_from=") for x in sets) == (s != 4)
