"""Recipe ablation at equal budget: the same base config (same init, data, iterations,
batch, patch, seed) trained once per variant, each variant's raw and EMA weights then
evaluated on Set5, Set14 and BSD68 (Y-PSNR/SSIM, the README protocol).

    python -m rdsrn.training.ablation --config rdsrn_x4 --out runs/ablation \
        --set init_from=rdsrn/weights/rdsrn_x4.safetensors --set iterations=300 \
        --variant l1: --variant l2:loss=l2 --variant charb:loss=charbonnier \
        --md benchmarks/results/recipe_ablation_runs.md

A variant is NAME:KEY=VALUE[,KEY=VALUE...] (the overrides of `rdsrn train --set`).
Results are appended per variant to OUT/ablation.json (a finished variant is skipped on a
re-run), and the table is (re)written to --md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rdsrn.runtimes.errors import UserError

from ..evaluate import evaluate_dataset, torch_upscale_fn
from .config import load_config

REPO = Path(__file__).resolve().parents[2]
TEST_SETS = ("Set5", "Set14", "BSD68")


def evaluate_model(model: torch.nn.Module, data: Path, scale: int) -> dict[str, dict[str, float]]:
    """{set: {psnr, ssim}} on the three test sets at `scale` (fp32, CPU, contiguous)."""
    m = copy.deepcopy(model).float().to("cpu", memory_format=torch.contiguous_format)
    fn = torch_upscale_fn(m)
    out = {}
    for ds in TEST_SETS:
        r = evaluate_dataset(fn, data / "test" / ds, scale)
        out[ds] = {"psnr": round(r["psnr"], 4), "ssim": round(r["ssim"], 5)}
    return out


def parse_variant(text: str) -> tuple[str, list[str]]:
    if ":" not in text:
        raise UserError(f"--variant expects NAME:KEY=VALUE[,...], got {text!r}")
    name, rest = text.split(":", 1)
    return name, [s for s in rest.split(",") if s]


def run_variant(config: str, common: list[str], name: str, extra: list[str], out: Path,
                data: Path) -> dict[str, Any]:
    from .trainer import Trainer

    cfg = load_config(config, [*common, *extra, f"out_dir={out / name}"])
    t0 = time.perf_counter()
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    train_s = time.perf_counter() - t0
    row: dict[str, Any] = {"variant": name, "overrides": extra, "iterations": trainer.iteration,
                           "train_s": round(train_s, 1), "threads": torch.get_num_threads(),
                           "raw": evaluate_model(trainer.model, data, trainer.scale)}
    if trainer.ema:
        row["ema"] = evaluate_model(trainer.ema.model, data, trainer.scale)
    return row


def write_markdown(path: Path, rows: list[dict[str, Any]], header: str) -> None:
    lines = [header, "", "| variant | overrides | weights | it. | Set5 | Set14 | BSD68 | mean |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for which in ("raw", "ema"):
            if which not in r:
                continue
            ps = [r[which][ds]["psnr"] for ds in TEST_SETS]
            lines.append(f"| {r['variant']} | {', '.join(r['overrides']) or '-'} | {which} | "
                         f"{r['iterations']} | " + " | ".join(f"{p:.3f}" for p in ps) +
                         f" | {sum(ps) / 3:.3f} |")
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="rdsrn_x4")
    p.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--variant", action="append", required=True, metavar="NAME:OVERRIDES")
    p.add_argument("--out", required=True, help="folder of the runs and ablation.json")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--baseline", default="", help="also evaluate these weights (.safetensors) as 'init'")
    p.add_argument("--md", default="", help="write the table here")
    args = p.parse_args(argv)
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "ablation.json"
    rows: list[dict[str, Any]] = json.loads(log.read_text()) if log.is_file() else []
    done = {r["variant"] for r in rows}
    if args.baseline and "init" not in done:
        from ..models import create_model
        from ..weights import load_into, read_metadata

        meta = read_metadata(args.baseline)
        if all(ds in meta.get("eval", {}) for ds in TEST_SETS):  # shipped: ship.py's figures
            res = {ds: {"psnr": meta["eval"][ds]["psnr"], "ssim": meta["eval"][ds]["ssim"]}
                   for ds in TEST_SETS}
        else:
            model = create_model(meta["model"], **meta["config"])
            load_into(model, args.baseline)
            res = evaluate_model(model, data, model.scale)
        rows.append({"variant": "init", "overrides": [args.baseline], "iterations": 0, "raw": res})
    for text in args.variant:
        name, extra = parse_variant(text)
        if name in done:
            continue
        row = run_variant(args.config, args.common, name, extra, out, data)
        rows.append(row)
        tmp = log.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, log)
        print(json.dumps(row), flush=True)
    if args.md:
        write_markdown(Path(args.md), rows,
                       f"<!-- python -m rdsrn.training.ablation {' '.join(argv or sys.argv[1:])} -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
