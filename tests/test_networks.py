"""Any SR network through the toolkit: published architectures with their official
checkpoint layouts (RLFN, IMDN), a network from the user's own file, safe checkpoint
loading, and the export -> runtime path for a network that is not RDSRN.

No third-party weights are used: official-layout checkpoints are written here from
random weights under the official key names."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from rdsrn import cli
from rdsrn.models import create_model, list_models, load_network
from rdsrn.runtimes.errors import UserError
from rdsrn.weights import save_weights

from export_fixtures import tiny_eval_dir

TINY_NET = textwrap.dedent('''
    import torch
    from torch import nn

    class TinySR(nn.Module):
        """conv - ReLU - conv - PixelShuffle, on [0, 1] RGB."""
        def __init__(self, scale: int = 2, width: int = 8):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, 3 * scale * scale, 3, padding=1))
            self.shuffle = nn.PixelShuffle(scale)
        def forward(self, x):
            return self.shuffle(self.body(x))

    class NotANetwork:
        pass

    class WrongScale(TinySR):
        def forward(self, x):
            return super().forward(x)[:, :, ::2, ::2]
''')


def _official_rlfn(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s weights under bytedance/RLFN's key names, on [0, 255] pixels."""
    esa = {"reduce": "conv1", "shortcut": "conv_f", "down": "conv2", "body": "conv3",
           "expand": "conv4"}
    out = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "head":
            new, value = "conv_1." + parts[1], value / 255 if parts[1] == "weight" else value
        elif parts[0] == "lr_conv":
            new = "conv_2." + parts[1]
        elif parts[0] == "up":
            new, value = "upsampler.0." + parts[1], value * 255
        else:  # blocks.i.<conv1|conv2|conv3|smooth|esa.x>.param
            i, rest = int(parts[1]) + 1, parts[2:]
            if rest[0] == "esa":
                new = f"block_{i}.esa.{esa[rest[1]]}.{rest[2]}"
            else:
                name = {"conv1": "c1_r", "conv2": "c2_r", "conv3": "c3_r", "smooth": "c5"}[rest[0]]
                new = f"block_{i}.{name}.{rest[1]}"
        out[new] = value.clone()
    return out


def _official_imdn(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`model`'s weights under Zheng222/IMDN's key names (DataParallel prefix)."""
    top = {"head": "fea_conv", "fuse": "c.0", "lr_conv": "LR_conv", "up": "upsampler.0"}
    out = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] in top:
            new = f"{top[parts[0]]}.{parts[1]}"
        else:
            i, rest = int(parts[1]) + 1, parts[2:]
            if rest[0] == "cca":
                new = f"IMDB{i}.cca.conv_du.{0 if rest[1] == 'down' else 2}.{rest[2]}"
            else:
                new = f"IMDB{i}.{'c5' if rest[0] == 'fuse' else 'c' + rest[0][-1]}.{rest[1]}"
        out["module." + new] = value.clone()
    return out


def test_registry_has_the_published_networks():
    names = set(list_models())
    assert {"rlfn_x2", "rlfn_x3", "rlfn_x4", "rlfn_s_x4", "imdn_x2", "imdn_x3",
            "imdn_x4"} <= names
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(create_model("rlfn_x4")) == 543_740  # the paper's 0.543 M
    assert count(create_model("imdn_x4")) == 715_176  # the paper's 715 K


@pytest.mark.parametrize("name, to_official", [("rlfn_x4", _official_rlfn),
                                               ("imdn_x3", _official_imdn)])
def test_official_checkpoint_layout_loads_to_the_same_function(name, to_official, tmp_path):
    """A checkpoint in the official layout (keys, wrappers, RLFN's [0, 255] range) loads
    through `create_model(weights=...)` into the same function as the source weights."""
    torch.manual_seed(0)
    ref = create_model(name).eval()
    ckpt = tmp_path / f"{name}.pth"
    torch.save({"params": to_official(ref)}, ckpt)
    loaded = create_model(name, weights=ckpt).eval()
    x = torch.rand(1, 3, 24, 31)
    with torch.no_grad():
        assert torch.allclose(loaded(x), ref(x), atol=1e-5, rtol=1e-4)
    assert loaded.pretrained_meta["converted_from"] == "official checkpoint"


def test_weights_of_another_scale_name_the_keys(tmp_path):
    ckpt = tmp_path / "rlfn_x2.pth"
    torch.save(_official_rlfn(create_model("rlfn_x2")), ckpt)
    with pytest.raises(UserError) as err:
        create_model("rlfn_x4", weights=ckpt)
    msg = str(err.value)
    assert "do not fit RLFN x4" in msg and "up.weight" in msg and "\n" not in msg


def test_pickle_payload_never_runs(tmp_path):
    """A checkpoint whose pickle would run code is refused; the code does not run."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ckpt = tmp_path / "evil.pth"
    torch.save({"weight": Payload()}, ckpt)
    with pytest.raises(UserError, match="no pickled code runs"):
        create_model("rlfn_x4", weights=ckpt)
    assert not marker.exists()


@pytest.fixture
def user_net(tmp_path):
    path = tmp_path / "my_net.py"
    path.write_text(TINY_NET)
    torch.manual_seed(0)
    ns: dict = {}
    exec(compile(TINY_NET, str(path), "exec"), ns)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, ns["TinySR"](scale=2), {})
    return path, weights


def test_user_network_loads_and_is_checked(user_net):
    path, weights = user_net
    model = load_network(f"{path}:TinySR", scale=2, weights=weights)
    assert model.scale == 2 and model.config == {"scale": 2, "in_channels": 3}
    with pytest.raises(UserError, match="needs --scale"):
        load_network(f"{path}:TinySR", weights=weights)
    with pytest.raises(UserError, match="is not a torch.nn.Module"):
        load_network(f"{path}:NotANetwork", scale=2, weights=weights)
    with pytest.raises(UserError, match="defines no 'Nope'"):
        load_network(f"{path}:Nope", scale=2, weights=weights)
    with pytest.raises(UserError, match="is not x2 the input"):
        load_network(f"{path}:WrongScale", scale=2, weights=weights)
    with pytest.raises(UserError, match="do not fit TinySR"):
        load_network(f"{path}:TinySR", scale=3, weights=weights, model_args={"scale": 3})


def test_user_module_that_fails_to_import(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import no_such_module_here\n")
    with pytest.raises(UserError, match="failed to import: ModuleNotFoundError"):
        load_network(f"{bad}:Net", scale=2, weights=None)


def _main(argv, monkeypatch):
    keep = {k: cli.COMMANDS[k] for k in ("eval", "export")}
    monkeypatch.setattr(cli, "COMMANDS", keep)
    return cli.main(argv)


def test_eval_user_network_command(user_net, set5_dir, tmp_path, monkeypatch, capsys):
    path, weights = user_net
    out = tmp_path / "r.json"
    rc = _main(["eval", "--model", f"{path}:TinySR", "--scale", "2", "--weights",
                str(weights), "--data", str(tiny_eval_dir(set5_dir, tmp_path / "e")),
                "--json", str(out)], monkeypatch)
    assert rc == 0, capsys.readouterr().err
    assert "x2" in capsys.readouterr().out and out.is_file()
    rc = _main(["eval", "--model", f"{path}:TinySR", "--data", "Set5"], monkeypatch)
    assert rc == 2 and "needs --scale" in capsys.readouterr().err


def test_user_network_exports_to_onnx_int8_and_runs(user_net, data_dir, set5_dir, tmp_path,
                                                     monkeypatch, capsys):
    """A network from the user's file -> INT8 ONNX (PTQ, gated, pair-safe) -> Upscaler
    from the file's metadata alone; --format all skips TFLite with a note."""
    path, weights = user_net
    out = tmp_path / "out"
    rc = _main(["export", "--model", f"{path}:TinySR", "--scale", "2", "--weights",
                str(weights), "--precision", "int8", "--calib", str(data_dir / "train"),
                "--calib-n", "4", "--eval-dir", str(tiny_eval_dir(set5_dir, tmp_path / "e")),
                "--max-drop", "50", "--out", str(out)], monkeypatch)
    text = capsys.readouterr()
    assert rc == 0, text.err
    assert "skipping tflite" in text.out
    onnx_file = out / "TinySR_int8.onnx"
    from rdsrn.runtimes import Upscaler

    up = Upscaler(onnx_file)
    assert up.scale == 2 and up.metadata["model"]["arch"] == "TinySR"
    assert up.metadata["quantization"]["pair_bound"]["safe"]
    img = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    assert up.upscale(img).shape == (40, 48, 3)
    rc = _main(["export", "--model", f"{path}:TinySR", "--scale", "2", "--weights",
                str(weights), "--format", "tflite", "--out", str(out)], monkeypatch)
    assert rc == 2 and "RDSRN only" in capsys.readouterr().err


def test_rlfn_exports_to_onnx_with_parity(tmp_path, monkeypatch, capsys):
    """RLFN's ESA (strided conv, max pool, bilinear resize to a dynamic size) in a
    dynamic-size ONNX file within the FP32 parity gate; min_input recorded."""
    out = tmp_path / "out"
    rc = _main(["export", "--model", "rlfn_x4", "--random-weights", "0", "--format", "onnx",
                "--out", str(out)], monkeypatch)
    assert rc == 0, capsys.readouterr().err
    from rdsrn.runtimes import Upscaler

    up = Upscaler(out / "rlfn_x4_fp32.onnx")
    assert up.metadata["min_input"] >= 15 and up.metadata["model"]["arch"] == "RLFN"
    img = (np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)
    assert up.upscale(img).shape == (120, 160, 3)


def test_generic_qat_run_from_an_official_checkpoint(tmp_path):
    """`rdsrn train --config rlfn_x4_qat --weights official.pth` on a narrow RLFN: the
    official layout initializes it, the fake-quant network (pair-safe int8 convs, uint8
    grids) trains, and the saved weights are a plain RLFN state dict that loads back."""
    import cv2

    from rdsrn.quant.generic import FakeQuantNet
    from rdsrn.training.config import load_config
    from rdsrn.training.trainer import Trainer
    from rdsrn.weights import load_state

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        small = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        cv2.imwrite(str(data / f"{i}.png"), cv2.resize(small, (280, 280)))
    narrow = {"channels": 8, "blocks": 1, "esa_channels": 4}
    torch.manual_seed(0)
    ckpt = tmp_path / "official.pth"
    torch.save(_official_rlfn(create_model("rlfn_x4", **narrow)), ckpt)
    sets = [f"train_dirs=[{data}]", f"val_dir={data}", f"cache_dir={tmp_path / 'cache'}",
            f"out_dir={tmp_path / 'run'}", f"model_args={narrow}".replace("'", ""),
            f"init_from={ckpt}", "patch_size=16", "batch_size=2", "iterations=2",
            "val_every=2", "ckpt_every=1", "threads=1", "qat={calib_patches: 2, distill: true}"]
    t = Trainer(load_config("rlfn_x4_qat", sets), progress=False)
    assert isinstance(t.model, FakeQuantNet)
    before = {k: v.clone() for k, v in t.model.m.state_dict().items()}
    t.fit()
    state, meta = load_state(tmp_path / "run" / "last.safetensors")
    assert set(state) == set(before) and meta["recipe"]["qat_weights"]["int8_convs"] == 12
    assert any(not torch.equal(state[k], before[k]) for k in state)
    create_model("rlfn_x4", weights=tmp_path / "run" / "last.safetensors", **narrow)
    with pytest.raises(UserError, match="qat.equalize': RDSRN only"):
        Trainer(load_config("rlfn_x4_qat", sets[:3] + [f"out_dir={tmp_path / 'r2'}"]
                            + sets[4:] + ["qat={equalize: true}"]), progress=False)
