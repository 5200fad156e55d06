"""Bad input to `rdsrn train` (issue 14): every refusal is one line, comes before the
data is loaded, and never touches an earlier run."""

from __future__ import annotations

import errno
import os
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from rdsrn.cli import main as cli_main
from rdsrn.runtimes.errors import UserError
from rdsrn.training.config import load_config
from rdsrn.training.trainer import Trainer

TINY_MODEL = "{channels: 16, hr_channels: 8, wide: 2}"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, make_tiny_images) -> Path:
    return make_tiny_images(tmp_path_factory.mktemp("train"), 4)


def tiny_sets(data: Path, out: Path, **extra: object) -> list[str]:
    sets = [f"train_dirs=[{data}]", f"out_dir={out}", f"cache_dir={out}/cache",
            f"model_args={TINY_MODEL}", "patch_size=8", "batch_size=2", "val_every=0",
            "ckpt_every=1000", "log_every=1", "precision=fp32", "threads=1",
            "warmup_iters=2", "iterations=4"]
    return sets + [f"{k}={v}" for k, v in extra.items()]


def train_cli(sets: list[str], *flags: str) -> int:
    argv = ["train", "--config", "rdsrn_x4", "--no-progress", *flags]
    for s in sets:
        argv += ["--set", s]
    return cli_main(argv)


def one_line_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("rdsrn train: error: ")
    return err[0]


def huge_png(path: Path) -> None:
    """A PNG whose header claims 100000 x 100000 pixels: OpenCV's decoder asserts."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


# ---------------------------------------------------------------- existing runs
def test_existing_run_is_never_touched_without_resume(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(tiny_sets(tiny_data, out, iterations=2)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert {"last.pt", "log.jsonl"} <= set(before)
    capsys.readouterr()
    assert train_cli(tiny_sets(tiny_data, out, iterations=3)) == 2
    msg = one_line_error(capsys)
    assert "already holds a run" in msg and "--resume" in msg
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # resuming it is allowed and continues where it stopped
    assert train_cli(tiny_sets(tiny_data, out, iterations=3), "--resume") == 0
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 3


def test_resume_without_checkpoint_fails_before_loading_data(tmp_path, capsys):
    # the training folder does not exist: the error must be about --resume, found first
    assert train_cli(tiny_sets(tmp_path / "nodata", tmp_path / "run"), "--resume") == 2
    assert "--resume: no checkpoint" in one_line_error(capsys)


@pytest.mark.parametrize("kind", ["parent_is_file", "out_is_file"])
def test_unwritable_out_dir_fails_before_loading_data(tmp_path, capsys, kind):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "run" if kind == "parent_is_file" else blocker
    assert train_cli(tiny_sets(tmp_path / "nodata", out)) == 2
    msg = one_line_error(capsys)
    assert "out_dir" in msg and "nodata" not in msg
    assert blocker.read_text() == "x"


def test_disk_full_at_checkpoint_is_one_line(tiny_data, tmp_path, monkeypatch, capsys):
    import rdsrn.data

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rdsrn.data, "write_bytes_atomic", full)
    out = tmp_path / "run"
    assert train_cli(tiny_sets(tiny_data, out)) == 2
    msg = one_line_error(capsys)
    assert "last.pt" in msg and "No space left on device" in msg
    assert not (out / "last.pt").exists()


# ---------------------------------------------------------------- config values
BAD_VALUES = [
    ("ckpt_every", "0"), ("log_every", "0"), ("batch_size", "0"), ("patch_size", "0"),
    ("iterations", "0"), ("val_every", "-1"), ("warmup_iters", "-5"), ("threads", "-1"),
    ("seed", "-1"), ("lr", "0"), ("lr", ".nan"), ("lr", "-0.1"), ("min_lr", "1.0"),
    ("weight_decay", "-1"), ("grad_clip", "-1"), ("max_minutes", "-1"), ("gamma", "0"),
    ("ema_decay", "1.0"), ("ema_decay", "-0.5"), ("betas", "[0.9]"), ("betas", "[0.9, 1.5]"),
    ("milestones", "[300, 100]"), ("milestones", "[0]"), ("device", "tpu"),
    ("device", "cuda:x"), ("train_dirs", "[]"), ("out_dir", "''"),
    ("precision", "fp8"), ("schedule", "linear"), ("model_args", "[1, 2]"),
]


@pytest.mark.parametrize("key, value", BAD_VALUES)
def test_every_numeric_key_is_range_checked(key, value):
    with pytest.raises(UserError, match=f"config key '{key}'"):
        load_config("rdsrn_x4", [f"{key}={value}"])


def test_shipped_configs_pass_the_range_checks():
    for s in (2, 3, 4):
        load_config(f"rdsrn_x{s}")


def test_bad_yaml_in_set_is_one_line(capsys):
    assert cli_main(["train", "--set", "model_args={recursions: 1"]) == 2
    assert "not valid YAML" in one_line_error(capsys)


@pytest.mark.parametrize("args, expect", [
    ("{recursion: 2}", "no argument 'recursion'; did you mean 'recursions'"),
    ("{recursions: 0}", "recursions must be >= 1"),
    ("{channels: 0}", "cannot be built or run"),
    ("{csr: 1.5}", "csr must be in"),
    ("{csr: high}", "csr expects float"),
    ("{recursions: 1.5}", "recursions expects int"),
    ("{scale: 5}", "scale must be 2, 3 or 4"),
])
def test_model_args_are_checked_before_the_data_loads(tmp_path, capsys, args, expect):
    sets = tiny_sets(tmp_path / "nodata", tmp_path / "run") + [f"model_args={args}"]
    assert train_cli(sets) == 2
    msg = one_line_error(capsys)
    assert "model_args" in msg and expect in msg and "nodata" not in msg
    assert not (tmp_path / "run").exists()


def test_bool_model_args_are_accepted_and_checked():
    from rdsrn.training.config import build_model

    small = "channels: 8, blocks: 1, units_per_block: 1"
    build_model(load_config("rdsrn_x4", ["model=carn_x4",
                                         f"model_args={{{small}, multi_scale: false}}"]))
    with pytest.raises(UserError, match="multi_scale expects bool"):
        build_model(load_config("rdsrn_x4", ["model=carn_x4", "model_args={multi_scale: 1}"]))


def test_unknown_model_name(tmp_path, capsys):
    assert train_cli(tiny_sets(tmp_path / "nodata", tmp_path / "run", model="rdsrn_x5")) == 2
    assert "did you mean 'rdsrn_x4'" in one_line_error(capsys)


def test_cuda_asked_where_there_is_none(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train_cli(tiny_sets(tmp_path / "nodata", tmp_path / "run", device="cuda")) == 2
    msg = one_line_error(capsys)
    assert "'device'" in msg and "cuda" in msg and "nodata" not in msg


def test_cuda_index_beyond_the_visible_gpus(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    cfg = load_config("rdsrn_x4", tiny_sets(tmp_path / "nodata", tmp_path / "r", device="cuda:3"))
    with pytest.raises(UserError, match=r"cuda:3 asked, but only 1"):
        Trainer(cfg, progress=False)


def test_missing_val_dir_fails_before_loading_data(tmp_path):
    cfg = load_config("rdsrn_x4", tiny_sets(tmp_path / "nodata", tmp_path / "r",
                                            val_every=2, val_dir=str(tmp_path / "noval")))
    with pytest.raises(UserError, match="val_dir"):
        Trainer(cfg, progress=False)


# ---------------------------------------------------------------- images
def test_opencv_assertion_on_a_training_image_is_one_line(tiny_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    huge_png(data / "zz_huge.png")
    assert train_cli(tiny_sets(data, tmp_path / "run")) == 2
    msg = one_line_error(capsys)
    assert "zz_huge.png" in msg


def test_damaged_lr_cache_entry_is_rebuilt(tiny_data, tmp_path):
    cfg = load_config("rdsrn_x4", tiny_sets(tiny_data, tmp_path / "a", iterations=1))
    Trainer(cfg, progress=False)
    cache = sorted((tmp_path / "a" / "cache").glob("*.npy"))
    assert cache
    cache[0].write_bytes(b"garbage")
    cfg2 = load_config("rdsrn_x4", tiny_sets(tiny_data, tmp_path / "b", iterations=1,
                                             cache_dir=str(tmp_path / "a" / "cache")))
    t = Trainer(cfg2, progress=False)
    assert len(t.sampler) == 4 and np.load(cache[0]).dtype == np.uint8


# ---------------------------------------------------------------- checkpoints
class Evil:  # any class: a pickle that needs it is not weights-only
    pass


def test_pickled_checkpoint_is_refused_without_unsafe_advice(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}, "payload": Evil()}, out / "last.pt")
    assert train_cli(tiny_sets(tiny_data, out), "--resume") == 2
    msg = one_line_error(capsys)
    assert "refused" in msg and "Evil" in msg
    assert "weights_only" not in msg and "False" not in msg and "trust" not in msg
    # init_from goes through the same loader
    evil = tmp_path / "evil.pt"
    torch.save({"ema": Evil()}, evil)
    assert train_cli(tiny_sets(tiny_data, tmp_path / "run2", init_from=str(evil))) == 2
    msg = one_line_error(capsys)
    assert "refused" in msg and "weights_only" not in msg


# ---------------------------------------------------------------- signals
def test_sigterm_saves_and_exits_143(tiny_data, tmp_path, monkeypatch):
    real_step = Trainer.train_step

    def step_then_term(self):
        loss = real_step(self)
        if self.iteration == 1:  # the 2nd step: deliver SIGTERM to ourselves
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_term)
    out = tmp_path / "run"
    assert train_cli(tiny_sets(tiny_data, out, iterations=50)) == 128 + signal.SIGTERM
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 2  # a resumable checkpoint of where it stopped
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert train_cli(tiny_sets(tiny_data, out, iterations=4), "--resume") == 0
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 4


# ---------------------------------------------------------------- ship
def test_ship_bad_run_folder_is_one_line(tmp_path, capsys):
    from rdsrn.training.ship import main as ship_main

    assert ship_main(["--run", str(tmp_path / "norun"), "--name", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no best.safetensors" in err[0]


def test_ship_unwritable_results_fail_before_evaluating(tmp_path, monkeypatch, capsys):
    import rdsrn.evaluate
    import rdsrn.training.ship as ship
    from rdsrn.models import create_model
    from rdsrn.weights import save_weights

    run = tmp_path / "run"
    run.mkdir()
    model = create_model("rdsrn_x4", channels=16, hr_channels=8, wide=2)
    save_weights(run / "best.safetensors", model, {"model": "rdsrn_x4",
                                                   "config": model.config})
    for ds in ("Set5", "Set14", "BSD68"):
        (tmp_path / "data" / "test" / ds).mkdir(parents=True)
    fake_repo = tmp_path / "repo"
    fake_repo.mkdir()
    (fake_repo / "benchmarks").write_text("a file where the results folder would go")
    monkeypatch.setattr(ship, "REPO", fake_repo)
    monkeypatch.setattr(rdsrn.evaluate, "evaluate_dataset",
                        lambda *a, **k: pytest.fail("evaluated before the output check"))
    assert ship.main(["--run", str(run), "--name", "x", "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results folder" in err[0]


def test_training_reader_turns_any_decoder_error_into_one_line(tmp_path):
    import cv2

    from rdsrn.training.data import read_training_image

    for exc in (cv2.error("x.cpp:1: error: (-215:Assertion failed) boom"),
                OSError(5, "Input/output error"), MemoryError()):
        def reader(path, exc=exc):
            raise exc
        with pytest.raises(UserError, match=r"training image .*a\.png"):
            read_training_image(tmp_path / "a.png", reader)
