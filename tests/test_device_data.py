"""Device-resident sampler (run here on the CPU device): aligned crops, the 8 symmetries,
RNG state, exact resume through the Trainer; losses; LR cache preparation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rdsrn.runtimes.errors import UserError
from rdsrn.training.config import load_config
from rdsrn.training.device_data import DeviceSampler, prepare_lr_cache
from rdsrn.training.trainer import Trainer, charbonnier_loss

TINY_MODEL = "{channels: 16, hr_channels: 8, wide: 2}"


def _block_mean(hr: np.ndarray, s: int) -> np.ndarray:
    h, w = hr.shape[0] // s, hr.shape[1] // s
    blocks = hr[:h * s, :w * s].reshape(h, s, w, s, 3).astype(np.int64).sum(axis=(1, 3))
    return (blocks // (s * s)).astype(np.uint8)  # integer mean: same value for any block order


def _images(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    hr = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((36, 48), (60, 24), (24, 24))]
    return hr, [_block_mean(im, 3) for im in hr]


def _symmetries(patch: np.ndarray) -> list[np.ndarray]:
    out = []
    for flip in (False, True):
        p = patch[:, ::-1] if flip else patch
        out += [np.rot90(p, r) for r in range(4)]
    return out


def test_patches_are_aligned_crops_under_the_8_symmetries() -> None:
    hr, lr = _images()
    s, p = 3, 5
    sampler = DeviceSampler(hr, lr, s, p, "cpu", seed=1)
    seen_t, seen_y = set(), set()
    for _ in range(40):
        # The parameters of the next batch, then that batch, from the same RNG state.
        state = sampler.get_rng_state()
        sampler.set_rng_state(state)
        k, y, x, tr, fr, fc = sampler.draw(8)
        sampler.set_rng_state(state)
        lr_b, hr_b = sampler.sample_uint8(8)
        assert lr_b.shape == (8, 3, p, p) and hr_b.shape == (8, 3, p * s, p * s)
        assert lr_b.dtype == torch.uint8 and lr_b.is_contiguous(memory_format=torch.channels_last)
        for b in range(8):
            kk, yy, xx = int(k[b]), int(y[b]), int(x[b])
            lr_p = lr_b[b].permute(1, 2, 0).numpy()
            hr_p = hr_b[b].permute(1, 2, 0).numpy()
            # LR and HR stay aligned: the block mean of the HR patch is the LR patch.
            np.testing.assert_array_equal(_block_mean(hr_p, s), lr_p)
            # The HR patch is one of the 8 symmetries of the crop at (y*s, x*s).
            crop = hr[kk][yy * s:(yy + p) * s, xx * s:(xx + p) * s]
            matches = [i for i, sym in enumerate(_symmetries(crop)) if np.array_equal(sym, hr_p)]
            assert matches, "HR patch is not a flip/rotation of its crop"
            seen_t.add(int(tr[b]) * 4 + int(fr[b]) * 2 + int(fc[b]))
            seen_y.add((kk, yy))
    assert seen_t == set(range(8))
    assert (2, 0) in seen_y and (0, 36 // 3 - p) in seen_y  # both extremes of y are drawn


def test_no_augment_gives_plain_crops_and_state_replays() -> None:
    hr, lr = _images(1)
    sampler = DeviceSampler(hr, lr, 3, 4, "cpu", seed=5, augment=False)
    state = sampler.get_rng_state()
    a = sampler.sample(6)
    sampler.set_rng_state(state)
    b = sampler.sample(6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert 0.0 <= float(a[1].min()) and float(a[1].max()) <= 1.0
    sampler.set_rng_state(state)
    lr_b, hr_b = sampler.sample_uint8(6)
    sampler.set_rng_state(state)
    k, y, x, *_ = sampler.draw(6)
    for i in range(6):
        crop = lr[int(k[i])][int(y[i]):int(y[i]) + 4, int(x[i]):int(x[i]) + 4]
        np.testing.assert_array_equal(lr_b[i].permute(1, 2, 0).numpy(), crop)


def test_too_small_image_is_an_error() -> None:
    hr, lr = _images()
    with pytest.raises(ValueError, match="smaller than the patch"):
        DeviceSampler(hr, lr, 3, 9, "cpu")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, make_tiny_images) -> Path:
    return make_tiny_images(tmp_path_factory.mktemp("train"), 4)


def _cfg(data: Path, out: Path, *extra: str):
    return load_config("rdsrn_x4", [
        f"train_dirs=[{data}]", f"out_dir={out}", f"cache_dir={out.parent}/cache",
        f"model_args={TINY_MODEL}", "patch_size=8", "batch_size=2", "val_every=0",
        "ckpt_every=1000", "log_every=1", "precision=fp32", "threads=1", "warmup_iters=2",
        "iterations=6", "sampler=device", *extra])


def test_trainer_with_device_sampler_resumes_exactly(tiny_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    straight = Trainer(_cfg(tiny_data, tmp_path / "a"), progress=False)
    assert isinstance(straight.sampler, DeviceSampler)
    straight.fit()
    first = Trainer(_cfg(tiny_data, tmp_path / "b"), progress=False)
    first.fit(stop_at=3)
    second = Trainer(_cfg(tiny_data, tmp_path / "b"), resume=True, progress=False)
    second.fit()
    for name, v in straight.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[name]), name
    # The host sampler draws other patches: the runs must differ.
    host = Trainer(_cfg(tiny_data, tmp_path / "c", "sampler=host"), progress=False)
    host.fit()
    assert not all(torch.equal(v, host.model.state_dict()[n])
                   for n, v in straight.model.state_dict().items())


def test_losses_and_bad_values(tiny_data: Path, tmp_path: Path) -> None:
    a, b = torch.zeros(4), torch.tensor([0.0, 0.5, -0.5, 1.0])
    assert float(charbonnier_loss(a, b)) == pytest.approx(
        float(np.mean(np.sqrt(np.array([0, 0.25, 0.25, 1.0]) + 1e-6))), rel=1e-6)
    t = Trainer(_cfg(tiny_data, tmp_path / "l", "loss=charbonnier", "iterations=2"), progress=False)
    t.fit()
    assert torch.isfinite(torch.stack([p.sum() for p in t.model.parameters()])).all()
    with pytest.raises(UserError, match="'loss'"):
        _cfg(tiny_data, tmp_path / "x", "loss=huber")
    with pytest.raises(UserError, match="'sampler'"):
        _cfg(tiny_data, tmp_path / "x", "sampler=gpu")


def test_prepare_lr_cache_matches_the_sampler_cache(tiny_data: Path, tmp_path: Path) -> None:
    from rdsrn.data import make_lr, mod_crop, read_image

    cache = tmp_path / "cache"
    assert prepare_lr_cache([str(tiny_data)], [2, 3], str(cache), workers=2) == 4
    files = sorted(cache.glob("*.npy"))
    assert len(files) == 8
    img = read_image(tiny_data / "img0.png")
    want = make_lr(mod_crop(img, 3), 3)
    got = [np.load(f) for f in files if f.name.startswith("img0_") and f.name.endswith("_x3.npy")]
    assert len(got) == 1 and np.array_equal(got[0], want)


def test_gpu_session_toy_rehearsal_and_resume(tiny_data: Path, tmp_path: Path) -> None:
    """The one-call device script end to end at toy size on the CPU: every stage, the
    files in OUT, and a re-run that skips finished stages and resumes an unfinished one."""
    import json
    import os
    import subprocess
    import sys
    import tarfile

    repo = Path(__file__).resolve().parents[1]
    val = tmp_path / "val"
    val.mkdir()
    for f in sorted(tiny_data.glob("*.png"))[:2]:
        (val / f.name).write_bytes(f.read_bytes())
    work, out = tmp_path / "work", tmp_path / "out"
    args = ["--toy", "--patch", "8", "--data", str(tiny_data), "--val", str(val), "--work", str(work),
            "--x4-minutes", "0.05", "--ft-minutes", "0.03", "--bench-rows", "device:2,host:2",
            "--bench-seconds", "0.2", "--minutes", "60", "--bench-timeout", "900",
            # generous time-outs: on a loaded 2-core machine a process start alone can take minutes
            "--startup-s", "600", "--grace-s", "120"]
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    script = repo / "rdsrn" / "training" / "gpu_session.sh"
    r = subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and {row["row"] for row in summary["bench"]["rows"]} == {"device:2", "host:2"}
    for s in (4, 3, 2):
        assert (out / f"rdsrn_x{s}" / "best.safetensors").stat().st_size > 0
        assert summary["stages"][f"x{s}"]["rc"] == 0
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"plan.json", "bench.json", "rdsrn_x4/log.jsonl", "logs/x2.log"} <= names
    assert len([p for p in out.rglob("*") if p.is_file()]) <= 8  # the device tool returns <= 8
    # A killed fine-tune (no done.json) resumes from its last.pt; finished stages are skipped.
    (work / "rdsrn_x2" / "done.json").unlink()
    out2 = tmp_path / "out2"
    r = subprocess.run(["bash", str(script), *args], env={**env, "OUT": str(out2)},
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "x4: done in an earlier session" in r.stdout and "plan: reusing" in r.stdout
    assert "resumed from" in (work / "logs" / "x2.log").read_text()
    assert (out2 / "rdsrn_x2" / "best.safetensors").is_file()


def test_gpu_session_plan_picks_the_fastest_mode_and_scales_lr() -> None:
    import argparse

    from rdsrn.training.gpu_session import choose_plan

    a = argparse.Namespace(startup_s=20.0, iter_margin=0.85, x4_minutes=3.0, ft_minutes=2.0,
                           parallel_ft=True, fallback_its=20.0, patch=64)
    row = lambda kind, b, its, warm=1.0: {"row": f"{kind}:{b}", "sampler": kind, "batch": b,  # noqa: E731
                                          "it_per_s": its, "lr_mpx_per_s": its * b * 4096 / 1e6,
                                          "warmup_s": warm}
    bench = {"rows": [row("host", 64, 18.0), row("device", 64, 40.0), row("device", 256, 11.0),
                      row("compile", 64, 60.0, 50.0), row("compile", 256, 16.0, 40.0),
                      {"row": "compile:512", "error": "OutOfMemoryError: ..."}]}
    macs = {4: 100, 3: 80, 2: 50}
    plan = choose_plan(bench, a, macs)
    # compile:256 has 4*16 = 64 > 60 patches/s, but compile:64 is within 10%: the smaller batch.
    assert plan["compile"] and plan["sampler"] == "device" and plan["batch"] == 64
    assert plan["stages"]["x4"]["lr"] == pytest.approx(1e-3)
    assert plan["stages"]["x4"]["iterations"] == int(60.0 * (180 - 20 - 50) * 0.85)
    # The fine-tunes share the device: half the rate, scaled by the MACs ratio.
    assert plan["stages"]["x2"]["iterations"] == int(60.0 * 2 * 0.5 * (120 - 70) * 0.85)
    bench["rows"][4] = row("compile", 256, 20.0, 40.0)  # now batch 256 is > 10% ahead
    plan = choose_plan(bench, a, macs)
    assert plan["batch"] == 256 and plan["stages"]["x4"]["lr"] == pytest.approx(2e-3)
    fallback = choose_plan({"rows": [{"row": "device:64", "error": "x"}]}, a, macs)
    assert fallback["fallback"] and not fallback["compile"] and fallback["batch"] == 64
    assert fallback["stages"]["x4"]["iterations"] == int(20.0 * (180 - 20) * 0.85)
