"""The equal-budget Table I/II training driver at toy size: two variants, tiny data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import pytest

from rdsrn.benchmarks.paper_tables_train import Budget, main, overrides, variants

ONLY = ["rdsrn_R1_CSR0.5", "carn_x4"]


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory, make_tiny_images, set5_dir: Path) -> Path:
    """train/ with 4 tiny synthetic images; test/Set5, Set14, BSD68 with two 40x48 crops
    of Set5 images each (x4 LR 10x12)."""
    root = tmp_path_factory.mktemp("toy")
    (root / "train").mkdir()
    make_tiny_images(root / "train", 4)
    crops = [cv2.imread(str(p))[:40, :48] for p in sorted(set5_dir.glob("*.png"))[:2]]
    for ds in ("Set5", "Set14", "BSD68"):
        (root / "test" / ds).mkdir(parents=True)
        for i, crop in enumerate(crops):
            cv2.imwrite(str(root / "test" / ds / f"crop{i}.png"), crop)
    return root


def toy_args(data: Path, tmp: Path, *extra: str) -> list[str]:
    return ["--iterations", "2", "--batch", "2", "--patch", "8", "--threads", "1",
            "--data", str(data), "--runs-dir", str(tmp / "runs"), "--out", str(tmp / "out"),
            "--cache-dir", str(tmp / "cache"), *extra]


def test_trains_scores_reports_and_skips_finished_runs(toy_data: Path, tmp_path: Path) -> None:
    assert main(toy_args(toy_data, tmp_path, "--only", *ONLY)) == 0
    doc = json.loads((tmp_path / "out" / "paper_tables_trained.json").read_text())
    assert doc["budget"] == {"iterations": 2, "batch": 2, "patch": 8, "hr_patch": 32,
                             "lr_patch_pixels": 2 * 2 * 8 * 8}
    assert "--only" in doc["command"] and doc["torch"] and doc["machine"]
    by = {e["label"]: e for e in doc["variants"]}
    assert len(by) == 7  # every variant is listed; the others are not trained
    for label in ONLY:
        e = by[label]
        assert e["status"] == "finished" and e["iterations_done"] == 2
        assert set(e["psnr"]) == {"Set5", "Set14", "BSD68"}
        assert all(math.isfinite(p) and p > 0 for p in e["psnr"].values())
        assert e["params_M"] > 0 and e["gmacs_1280x720"] > 0 and e["train_s"] > 0
        assert "iterations=2" in e["train_command"]
    assert by["imdn_x4"]["status"] == "missing" and "psnr" not in by["imdn_x4"]
    md = (tmp_path / "out" / "paper_tables_trained.md").read_text()
    assert "Reduced CPU budget" in md and "2 iterations x batch 2 x 8x8" in md
    assert "## Table I" in md and "## Table II" in md and "## What it says" in md
    assert f"| 1 | 0.5 | {by['rdsrn_R1_CSR0.5']['params_M']:.3f} |" in md
    assert "RDSRN minus" not in md  # R = 3 (Table II's RDSRN) was not trained

    logs = {label: (tmp_path / "runs" / label / "log.jsonl") for label in ONLY}
    before = {label: (p.read_bytes() if p.exists() else None,
                      (p.parent / "last.pt").stat().st_mtime_ns) for label, p in logs.items()}
    assert main(toy_args(toy_data, tmp_path, "--only", *ONLY)) == 0
    after = {label: (p.read_bytes() if p.exists() else None,
                     (p.parent / "last.pt").stat().st_mtime_ns) for label, p in logs.items()}
    assert after == before  # finished runs are not retrained
    doc2 = json.loads((tmp_path / "out" / "paper_tables_trained.json").read_text())
    assert {e["label"]: e.get("psnr") for e in doc2["variants"]} == \
        {e["label"]: e.get("psnr") for e in doc["variants"]}


def test_an_interrupted_run_is_resumed(toy_data: Path, tmp_path: Path, capsys) -> None:
    from rdsrn.training.config import load_config
    from rdsrn.training.trainer import Trainer

    v = next(x for x in variants() if x.label == "imdn_x4")
    sets = overrides(v, Budget(2, 2, 8), toy_data.absolute(), tmp_path / "runs" / v.label,
                     tmp_path / "cache", 1)
    Trainer(load_config("rdsrn_x4", sets), progress=False).fit(stop_at=1)  # "killed" at 1
    capsys.readouterr()
    assert main(toy_args(toy_data, tmp_path, "--only", v.label)) == 0
    assert "resumed from" in capsys.readouterr().out
    e = next(x for x in json.loads((tmp_path / "out" / "paper_tables_trained.json").read_text())
             ["variants"] if x["label"] == v.label)
    assert e["status"] == "finished" and e["iterations_done"] == 2 and "psnr" in e


def test_another_budget_in_the_same_runs_dir_is_refused(toy_data: Path, tmp_path: Path,
                                                        capsys) -> None:
    assert main(toy_args(toy_data, tmp_path, "--only", "rdsrn_R1_CSR0.5")) == 0
    capsys.readouterr()
    args = toy_args(toy_data, tmp_path, "--eval-only")
    args[1] = "3"  # --iterations 3
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "iterations=2" in err[0] and "--runs-dir" in err[0]


def test_unknown_only_label_is_one_line(toy_data: Path, tmp_path: Path, capsys) -> None:
    assert main(toy_args(toy_data, tmp_path, "--only", "rdsrn_R2_CSR0.5")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rdsrn_R2_CSR0.5" in err[0] and "did you mean" in err[0]
    assert not (tmp_path / "runs").exists()
