"""Training core: strict configs, exact resume, DDP replica agreement, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from rdsrn.cli import main as cli_main
from rdsrn.training.config import TrainConfig, load_config
from rdsrn.training.trainer import Trainer, lr_factor
from rdsrn.runtimes.errors import UserError

TINY_MODEL = "{channels: 16, hr_channels: 8, wide: 2}"


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, make_tiny_images) -> Path:
    return make_tiny_images(tmp_path_factory.mktemp("train"), 6)


def tiny_cfg(data: Path, out: Path, **extra: str) -> TrainConfig:
    sets = [f"train_dirs=[{data}]", f"out_dir={out}", f"cache_dir={out}/cache",
            f"model_args={TINY_MODEL}", "patch_size=8", "batch_size=2", "val_every=0",
            "ckpt_every=1000", "log_every=1", "precision=fp32", "threads=1", "warmup_iters=2",
            "iterations=6"]
    sets += [f"{k}={v}" for k, v in extra.items()]
    return load_config("rdsrn_x4", sets)


def test_unknown_key_and_wrong_type_are_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: rdsrn_x4\nbatch_sise: 8\n")
    with pytest.raises(UserError, match="unknown config key 'batch_sise'.*batch_size"):
        load_config(str(bad))
    bad.write_text("iterations: many\n")
    with pytest.raises(UserError, match="iterations.*expected int"):
        load_config(str(bad))
    with pytest.raises(UserError, match="unknown config 'rdsrn_x5'"):
        load_config("rdsrn_x5")


def test_cli_bad_config_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2]\n")
    assert cli_main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr" in err[0] and "expected float" in err[0]


def test_empty_data_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cfg = tiny_cfg(tmp_path / "empty", tmp_path / "run")
    with pytest.raises(UserError, match="no images"):
        Trainer(cfg, progress=False)


def test_shipped_configs_load() -> None:
    for s in (2, 3, 4):
        cfg = load_config(f"rdsrn_x{s}")
        assert cfg.model == f"rdsrn_x{s}"


def test_schedule_warmup_and_cosine() -> None:
    cfg = TrainConfig(iterations=100, warmup_iters=10, lr=1e-3, min_lr=1e-5)
    assert lr_factor(cfg, 0) == pytest.approx(0.1)
    assert lr_factor(cfg, 9) == pytest.approx(1.0)
    assert lr_factor(cfg, 10) == pytest.approx(1.0)
    assert lr_factor(cfg, 100) == pytest.approx(1e-2)
    mids = [lr_factor(cfg, i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(mids, mids[1:]))


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_warmup_ramp_and_its_switch() -> None:
    """With the ramp the decay is min(d, (1+t)/(10+t)), so 0.999 and 0.9995 average alike
    for thousands of steps; ema_warmup=False applies d from the first step."""
    from rdsrn.training.trainer import EMA

    def averaged(decay: float, warmup: bool, steps: int) -> torch.Tensor:
        model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(model.weight)
        ema = EMA(model, decay, warmup)
        with torch.no_grad():
            model.weight.fill_(1.0)
        for t in range(steps):
            ema.update(model, t)
        return ema.model.weight.detach().clone()

    with_ramp = averaged(0.999, True, 300)
    assert torch.equal(with_ramp, averaged(0.9995, True, 300))
    expect = 1.0 - np.prod([min(0.999, (1 + t) / (10 + t)) for t in range(300)])
    assert with_ramp.item() == pytest.approx(expect, rel=1e-5)
    no_ramp = averaged(0.999, False, 300)
    assert no_ramp.item() == pytest.approx(1 - 0.999 ** 300, rel=1e-5)
    assert not torch.equal(no_ramp, averaged(0.9995, False, 300))


def test_resume_is_exact(tiny_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    straight = Trainer(tiny_cfg(tiny_data, tmp_path / "a"), progress=False)
    straight.fit()
    first = Trainer(tiny_cfg(tiny_data, tmp_path / "b"), progress=False)
    first.fit(stop_at=3)
    second = Trainer(tiny_cfg(tiny_data, tmp_path / "b"), resume=True, progress=False)
    assert second.iteration == 3
    second.fit()
    assert second.iteration == 6
    assert _states_equal(straight.model.state_dict(), second.model.state_dict())
    assert _states_equal(straight.ema.model.state_dict(), second.ema.model.state_dict())
    # A different stop point must differ from a wrong (non-resumed) continuation.
    # Continuing without the optimizer/RNG state would not match.
    fresh = Trainer(tiny_cfg(tiny_data, tmp_path / "c"), progress=False)
    fresh.model.load_state_dict(first.model.state_dict())
    fresh.iteration = 3
    fresh.fit()
    assert not _states_equal(straight.model.state_dict(), fresh.model.state_dict())
    assert (tmp_path / "a" / "curves.png").is_file()


def test_resume_rejects_other_architecture(tiny_data: Path, tmp_path: Path) -> None:
    Trainer(tiny_cfg(tiny_data, tmp_path / "r", iterations="1"), progress=False).fit()
    other = tiny_cfg(tiny_data, tmp_path / "r")
    other.model_args = {"channels": 16, "hr_channels": 8, "wide": 2, "recursions": 2}
    with pytest.raises(UserError, match="another architecture"):
        Trainer(other, resume=True, progress=False)


def test_corrupt_checkpoint_is_an_error(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    out.mkdir()
    (out / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable checkpoint"):
        Trainer(tiny_cfg(tiny_data, out), resume=True, progress=False)
    assert (out / "last.pt").read_bytes() == b"not a checkpoint"


def test_ddp_two_gloo_processes_keep_replicas_identical(tiny_data: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp_job.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from rdsrn.training.config import load_config
        from rdsrn.training.trainer import Trainer
        torch.set_num_threads(1)
        out = {str(tmp_path / 'ddp')!r}
        cfg = load_config("rdsrn_x4", ["train_dirs=[{tiny_data}]", f"out_dir={{out}}",
            f"cache_dir={{out}}/cache_{{os.environ['RANK']}}", "model_args={TINY_MODEL}",
            "patch_size=8", "batch_size=2", "val_every=0", "ckpt_every=1000",
            "precision=fp32", "threads=1", "iterations=3", "warmup_iters=1"])
        t = Trainer(cfg, progress=False)
        t.fit()
        torch.save(t.model.state_dict(), f"{{out}}/rank{{os.environ['RANK']}}.pt")
        torch.distributed.destroy_process_group()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", "29531", str(script)],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    assert _states_equal(r0, r1)
    ckpt = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 3 and _states_equal(ckpt["model"], r0)


def test_time_budget_stop_still_validates_final_weights(tiny_data: Path, tmp_path: Path) -> None:
    """A run ended by max_minutes must score (and possibly keep) its last weights."""
    import json

    cfg = tiny_cfg(tiny_data, tmp_path / "run", iterations="1000", val_every="500",
                   val_dir=str(tiny_data), max_minutes="0.000001")
    result = Trainer(cfg, progress=False).fit()
    assert 1 <= result["iteration"] < 1000
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    val_rows = [r for r in rows if "val_psnr" in r]
    assert [r["iteration"] for r in val_rows] == [result["iteration"]]
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_uint8_batches_match_float_batches(tiny_data: Path, tmp_path: Path) -> None:
    from rdsrn.training.data import PatchSampler

    a = PatchSampler([str(tiny_data)], 4, 8, str(tmp_path / "c"), seed=3, progress=False)
    b = PatchSampler([str(tiny_data)], 4, 8, str(tmp_path / "c"), seed=3, progress=False)
    lr_f, hr_f = a.sample(4)
    lr_u, hr_u = b.sample_uint8(4)
    assert lr_u.dtype == torch.uint8 and hr_u.shape == (4, 3, 32, 32)
    assert torch.equal(lr_f, lr_u.float() / 255) and torch.equal(hr_f, hr_u.float() / 255)


def test_saved_weights_get_normal_permissions(tmp_path: Path) -> None:
    """Weights are written atomically but not left 0600 (the temp file's mode)."""
    from rdsrn.models import create_model
    from rdsrn.weights import save_weights

    mask = os.umask(0o022)
    try:
        save_weights(tmp_path / "w.safetensors", create_model("rdsrn_x4", channels=16,
                                                              hr_channels=8, wide=2), {})
    finally:
        os.umask(mask)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob("*.tmp"))
