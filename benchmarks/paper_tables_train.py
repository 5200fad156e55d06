"""The RDSRN paper's Table I and II variants trained with one recipe at one equal CPU
budget, then scored on Set5 / Set14 / BSD68 -> benchmarks/results/paper_tables_trained.{json,md}.

    python -m rdsrn.benchmarks.paper_tables_train [--iterations 600] [--batch 16] [--patch 32]
        [--only LABEL ...] [--runs-dir runs/tables] [--out benchmarks/results] [--eval-only]

Seven runs, all x4 from scratch: RDSRN at each (R, CSR) of suites.TABLE1_SETTINGS (R = 3,
CSR = 0.5 serves both tables), CARN and IMDN. Every run is the in-process Trainer on the
rdsrn_x4 config with the same overrides (RECIPE plus the budget) into RUNS_DIR/<label>.
A finished run is skipped, an interrupted one resumed from its last.pt, so a killed
driver continues where it stopped. Each run is then scored with the EMA weights of its
final checkpoint (no selection on any test set); scores are cached in <label>/eval.json.
The report lists every variant and the results of every finished run in RUNS_DIR.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rdsrn.runtimes.errors import UserError

from .harness import PUBLISHED_SET5_X4
from .paper_tables import PAPER_NAMES, PAPER_TABLE1, PAPER_TABLE2, _counts
from .suites import TABLE1_SETTINGS

DATA = Path(os.environ.get("RDSRN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
SCALE = 4
TEST_SETS = ("Set5", "Set14", "BSD68")
PROG = "python -m rdsrn.benchmarks.paper_tables_train"

# The recipe shared by every run (on top of config rdsrn_x4 and the budget). val_every=0:
# the trainer's in-loop validation would pick last/best.safetensors between EMA and raw
# weights on Set5, and its weights metadata reads model.recursions/csr, which CARN and
# IMDN lack; the driver scores the final EMA weights itself.
RECIPE: dict[str, Any] = {"lr": 0.001, "warmup_iters": 50, "schedule": "cosine",
                          "ema_decay": 0.99, "precision": "auto", "val_every": 0,
                          "ckpt_every": 100}
# Config keys that must match for an existing run folder to count as this budget's run.
SAME_RUN_KEYS = ("model", "model_args", "iterations", "batch_size", "patch_size", "lr",
                 "warmup_iters", "schedule", "min_lr", "ema_decay", "grad_clip", "loss",
                 "seed", "precision", "train_dirs")


@dataclass(frozen=True)
class Variant:
    """One training run: a registry model with constructor overrides."""

    label: str
    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    tables: tuple[str, ...] = ()


def variants() -> list[Variant]:
    """The seven runs in report order: Table I's (R, CSR) settings, then CARN and IMDN."""
    out = [Variant(f"rdsrn_R{r}_CSR{csr}", "rdsrn_x4", {"recursions": r, "csr": csr},
                   ("I", "II") if (r, csr) == (3, 0.5) else ("I",))
           for r, csr in TABLE1_SETTINGS]
    return out + [Variant("carn_x4", "carn_x4", {}, ("II",)),
                  Variant("imdn_x4", "imdn_x4", {}, ("II",))]


@dataclass(frozen=True)
class Budget:
    """Equal for every run: optimizer steps, patches per step, LR patch side (pixels)."""

    iterations: int
    batch: int
    patch: int

    @property
    def lr_pixels(self) -> int:
        """Total LR patch pixels seen in training (iterations x batch x patch^2)."""
        return self.iterations * self.batch * self.patch ** 2


def overrides(v: Variant, budget: Budget, data: Path, run_dir: Path, cache_dir: Path,
              threads: int) -> list[str]:
    """The `rdsrn train --set` values of run `v`; a value is JSON (valid YAML) unless it is a
    string that YAML reads back unchanged."""
    import yaml

    values: dict[str, Any] = {
        "model": v.model, "model_args": v.model_args, "iterations": budget.iterations,
        "batch_size": budget.batch, "patch_size": budget.patch, **RECIPE, "threads": threads,
        "log_every": min(20, budget.iterations),
        "train_dirs": [str(data / "train")], "cache_dir": str(cache_dir), "out_dir": str(run_dir)}

    def text(val: Any) -> str:
        plain = isinstance(val, str) and yaml.safe_load(val) == val
        return val if plain else json.dumps(val)

    return [f"{k}={text(val)}" for k, val in values.items()]


def train_command(sets: list[str]) -> str:
    """The equivalent shell command for one run."""
    return "rdsrn train --config rdsrn_x4 " + " ".join(f"--set {shlex.quote(s)}" for s in sets)


def log(msg: str) -> None:
    print(f"[paper_tables_train] {msg}", flush=True)


def read_run(run_dir: Path, cfg: Any) -> dict[str, Any] | None:
    """The run's last.pt (None if absent); UserError when it was trained with another
    recipe or budget, so one results file never mixes budgets."""
    from rdsrn.weights import torch_load

    path = run_dir / "last.pt"
    if not path.is_file():
        return None
    ckpt = torch_load(path)
    old, new = ckpt.get("config") or {}, cfg.resolved()
    for key in SAME_RUN_KEYS:
        if old.get(key) != new[key]:
            raise UserError(f"{run_dir}: holds a run with {key}={old.get(key)!r}, this budget "
                            f"has {new[key]!r}; use another --runs-dir")
    return ckpt


def train(cfg: Any, ckpt: dict[str, Any] | None, progress: bool) -> dict[str, Any]:
    """Train (or resume) one run to cfg.iterations; returns Trainer.fit's result."""
    from rdsrn.training.trainer import RUN_FILES, Trainer

    run_dir = Path(cfg.out_dir)
    if ckpt is None:
        # Killed before its first checkpoint: nothing to resume, and the trainer refuses
        # a folder holding a run's files.
        stale = [run_dir / n for n in RUN_FILES if (run_dir / n).exists()]
        for path in stale:
            path.unlink()
        if stale:
            log(f"{run_dir}: no checkpoint (stopped before the first one); starting again")
    trainer = Trainer(cfg, resume=ckpt is not None, progress=progress)
    try:
        return trainer.fit()
    finally:
        del trainer
        gc.collect()


def evaluate_run(v: Variant, run_dir: Path, ckpt: dict[str, Any],
                 sets: dict[str, Path]) -> dict[str, dict[str, float]]:
    """{set: {psnr dB, ssim, images}} of the EMA weights of the final checkpoint (raw
    weights if the run had no EMA), fp32 on CPU; cached in run_dir/eval.json."""
    import torch

    from rdsrn.data import write_bytes_atomic
    from rdsrn.evaluate import evaluate_dataset, torch_upscale_fn
    from rdsrn.models import create_model
    from rdsrn.outputs import write_error

    weights = "ema" if ckpt.get("ema") is not None else "raw"
    key = {"iteration": int(ckpt["iteration"]), "elapsed": float(ckpt.get("elapsed", 0.0)),
           "weights": weights, "scale": SCALE, "sets": {k: str(p) for k, p in sets.items()}}
    cache = run_dir / "eval.json"
    if cache.is_file():
        doc = json.loads(cache.read_text())
        if doc.get("key") == key:
            return doc["results"]
    model = create_model(v.model, **v.model_args)
    if dict(model.config) != ckpt.get("model_config"):
        raise UserError(f"{run_dir / 'last.pt'}: checkpoint is of another architecture")
    model.load_state_dict(ckpt["ema" if weights == "ema" else "model"])
    fn = torch_upscale_fn(model.float().to(memory_format=torch.contiguous_format))
    results = {}
    for name, folder in sets.items():
        r = evaluate_dataset(fn, folder, SCALE)
        results[name] = {"psnr": round(r["psnr"], 4), "ssim": round(r["ssim"], 5),
                         "images": r["images"]}
    try:
        write_bytes_atomic(cache, json.dumps({"key": key, "results": results}, indent=1).encode())
    except OSError as exc:
        raise write_error(cache, exc) from None
    return results


def evaluate_bicubic(sets: dict[str, Path]) -> dict[str, dict[str, float]]:
    """The bicubic floor on the same sets (same protocol)."""
    from rdsrn.evaluate import bicubic_upscale_fn, evaluate_dataset

    out = {}
    for name, folder in sets.items():
        r = evaluate_dataset(bicubic_upscale_fn(SCALE), folder, SCALE)
        out[name] = {"psnr": round(r["psnr"], 4), "ssim": round(r["ssim"], 5),
                     "images": r["images"]}
    return out


def entry(v: Variant, run_dir: Path, ckpt: dict[str, Any] | None, budget: Budget,
          command: str, results: dict[str, Any] | None) -> dict[str, Any]:
    """One variant's JSON record. train_s is the sum of optimizer-step times over all
    sessions of the run (data loading, checkpoints and evaluation excluded)."""
    params, gmacs = _counts(v.model, v.model_args)
    done = int(ckpt["iteration"]) if ckpt else 0
    e: dict[str, Any] = {
        "label": v.label, "model": v.model, "model_args": v.model_args, "tables": list(v.tables),
        "status": ("finished" if done >= budget.iterations else "partial" if ckpt else "missing"),
        "iterations_done": done, "params_M": round(params, 4), "gmacs_1280x720": round(gmacs, 2),
        "run_dir": str(run_dir), "train_command": command}
    if ckpt:
        train_s = float(ckpt.get("elapsed", 0.0))
        e.update(train_s=round(train_s, 3),  # to the ms: two toy steps can take < 0.05 s
                  it_per_s=round(done / train_s, 4) if train_s else None)
    if results:
        e.update(weights=f"{'EMA' if ckpt and ckpt.get('ema') is not None else 'raw'} weights "
                         f"of last.pt at iteration {done}",
                 psnr={k: r["psnr"] for k, r in results.items()},
                 ssim={k: r["ssim"] for k, r in results.items()},
                 images={k: r["images"] for k, r in results.items()})
    if v.model == "rdsrn_x4":
        r, csr = v.model_args["recursions"], v.model_args["csr"]
        p = PAPER_TABLE1[(r, csr)]
        e["paper_table1"] = {"params_M": p[0], "gmacs": p[1], "urban100_psnr": p[3]}
    if "II" in v.tables and v.model in PAPER_TABLE2:
        p2 = PAPER_TABLE2[v.model]
        e["paper_table2"] = {"params_M": p2[0], "gmacs": p2[1], "set5_psnr": p2[3],
                             "urban100_psnr": p2[4]}
    if v.model in PUBLISHED_SET5_X4:
        e["published_set5"] = {"psnr": PUBLISHED_SET5_X4[v.model][0],
                               "source": PUBLISHED_SET5_X4[v.model][1]}
    return e


# ---------------------------------------------------------------------------- report

def _mean(e: dict[str, Any]) -> float | None:
    """Mean of the three test sets' PSNRs (dB), None unless all were scored."""
    ps = e.get("psnr") or {}
    if not all(s in ps for s in TEST_SETS):
        return None
    return sum(ps[s] for s in TEST_SETS) / len(TEST_SETS)


def _cell(e: dict[str, Any], ds: str) -> str:
    ps = e.get("psnr") or {}
    return f"{ps[ds]:.2f}" if ds in ps else "-"


def _time_cells(e: dict[str, Any]) -> str:
    if e["status"] == "missing":
        return "- | -"
    minutes = f"{e['train_s'] / 60:.1f}" + ("" if e["status"] == "finished"
                                              else f" ({e['iterations_done']} it.)")
    rate = e.get("it_per_s")
    return f"{minutes} | {f'{rate:.2f}' if rate else '-'}"


def _order(points: list[tuple[str, float]]) -> str:
    return " > ".join(f"{name} ({value:.2f})" for name, value in
                      sorted(points, key=lambda t: -t[1]))


def _setting_findings(entries: list[dict[str, Any]], axis: str) -> str | None:
    """Our order of R (at CSR 0.5) or CSR (at R = 3) beside the paper's Urban100 order."""
    def on_axis(a: dict[str, Any]) -> bool:
        return a["csr"] == 0.5 if axis == "R" else a["recursions"] == 3

    keep = [(e, e["model_args"]) for e in entries
            if e["model"] == "rdsrn_x4" and _mean(e) is not None and on_axis(e["model_args"])]
    if len(keep) < 2:
        return None
    name = (lambda a: f"R={a['recursions']}") if axis == "R" else (lambda a: f"CSR={a['csr']}")
    ours = [(name(a), _mean(e)) for e, a in keep]
    paper = [(name(a), PAPER_TABLE1[(a["recursions"], a["csr"])][3]) for _, a in keep]
    same = [n for n, _ in sorted(ours, key=lambda t: -t[1])] == \
           [n for n, _ in sorted(paper, key=lambda t: -t[1])]
    costs = ", ".join(f"{name(a)} {e['params_M']:.3f} M / {e['gmacs_1280x720']:.0f} G / "
                      f"{e['train_s'] / 60:.1f} min" for e, a in keep)
    where = "at CSR 0.5" if axis == "R" else "at R = 3"
    return (f"- {'Recursions' if axis == 'R' else 'Channel split ratio'} {where}, mean PSNR over "
            f"Set5/Set14/BSD68 (dB): {_order(ours)}. The paper's Urban100 order: "
            f"{_order(paper)} — {'the same order' if same else 'a different order'}. "
            f"Cost (params / Multi-Adds / training time): {costs}.")


def _versus(rd: dict[str, Any], other: dict[str, Any]) -> str:
    """RDSRN minus `other` per set, with the cost ratios and the published Set5 gap."""
    diffs = ", ".join(f"{ds} {rd['psnr'][ds] - other['psnr'][ds]:+.2f}" for ds in TEST_SETS)
    mean_gap = _mean(rd) - _mean(other)
    name = PAPER_NAMES[other["model"]]
    text = (f"- RDSRN minus {name}: {diffs} dB (mean {mean_gap:+.2f}): RDSRN "
            f"{'ahead' if mean_gap > 0 else 'behind' if mean_gap < 0 else 'level'} at this "
            f"budget, with {rd['params_M'] / other['params_M']:.2f}x {name}'s params, "
            f"{rd['gmacs_1280x720'] / other['gmacs_1280x720']:.2f}x its Multi-Adds and "
            f"{rd['train_s'] / other['train_s']:.2f}x its training time")
    pr, po = rd.get("published_set5"), other.get("published_set5")
    if pr and po:
        text += f"; published Set5 gap {pr['psnr'] - po['psnr']:+.2f} dB"
    return text + "."


def findings(entries: list[dict[str, Any]], bicubic: dict[str, Any] | None) -> list[str]:
    """The "what it says" bullets, computed from the scored entries (none if too few)."""
    lines = [s for s in (_setting_findings(entries, "R"), _setting_findings(entries, "CSR")) if s]
    scored = [e for e in entries if _mean(e) is not None]
    rd = next((e for e in scored if e["model"] == "rdsrn_x4" and "II" in e["tables"]), None)
    for other in scored:
        if rd and other["model"] != "rdsrn_x4":
            lines.append(_versus(rd, other))
    if rd and rd.get("published_set5"):
        gap = rd["psnr"]["Set5"] - rd["published_set5"]["psnr"]
        lines.append(f"- RDSRN (R = 3, CSR = 0.5) Set5: {rd['psnr']['Set5']:.2f} dB, "
                     f"{gap:+.2f} dB relative to the paper's {rd['published_set5']['psnr']} dB "
                     "(its full training schedule).")
    if bicubic and scored:
        gains = [e["psnr"]["Set5"] - bicubic["Set5"]["psnr"] for e in scored]
        lines.append(f"- Set5 gain over bicubic ({bicubic['Set5']['psnr']:.2f} dB): "
                     f"{min(gains):+.2f} to {max(gains):+.2f} dB across the "
                     f"{len(gains)} scored runs.")
    if lines:
        lines.append("- One seed per variant: run-to-run spread was not measured, so small "
                     "differences are weak evidence.")
    return lines


def render_markdown(doc: dict[str, Any]) -> str:
    b, rec = doc["budget"], doc["recipe"]
    entries: list[dict[str, Any]] = doc["variants"]
    ship = doc.get("shipped_recipe")
    bic = doc.get("bicubic")
    lines = ["# RDSRN paper Tables I and II, trained at one equal CPU budget", "",
             f"**Reduced CPU budget.** Every variant was trained from scratch (x4) with the same "
             f"recipe and seed for {b['iterations']} iterations x batch {b['batch']} x "
             f"{b['patch']}x{b['patch']} LR patches = {b['lr_patch_pixels']:,} LR patch "
             f"pixels (HR patch {b['patch'] * SCALE}x{b['patch'] * SCALE})"]
    if ship:
        lines[-1] += (f", {ship['lr_patch_pixels'] / b['lr_patch_pixels']:.0f}x less than this "
                      f"repo's shipped rdsrn_x4 recipe ({ship['iterations']} x {ship['batch']} x "
                      f"{ship['patch']}^2 = {ship['lr_patch_pixels'] / 1e9:.2f} G)")
    lines[-1] += (" and far below the papers' schedules. These PSNRs measure early convergence "
                  "at equal budget, not final accuracy; they are not comparable with the papers' "
                  "figures in absolute terms. Scored weights: the EMA weights of each run's last "
                  "checkpoint — no selection on Set5 or any other set.")
    lines += ["", f"Recipe: config rdsrn_x4 with Adam lr {rec['lr']}, "
              f"{rec['warmup_iters']} warm-up iterations, {rec['schedule']} schedule to "
              f"{rec['min_lr']}, grad clip {rec['grad_clip']}, EMA {rec['ema_decay']}, "
              f"{rec['loss'].upper()} loss, precision {rec['precision']} "
              f"({doc['precision_resolved']}), threads {doc['threads']}, "
              f"{doc['train_images']} training images from `{doc['data']}/train`. Evaluation: "
              f"Y-PSNR with a {SCALE}-pixel border, MATLAB bicubic LR (rdsrn.evaluate). "
              f"Params and Multi-Adds (1280x720 output) from rdsrn.macs. Train time: optimizer "
              f"steps only, summed over sessions.",
              f"Machine: {doc['machine']}; torch {doc['torch']}; load average "
              f"{doc['load_average_at_start']} when the driver started (other jobs slow the "
              "timing columns, not the PSNRs).",
              f"Command: `{doc['command']}`", ""]

    lines += ["## Table I — recursions R and channel split ratio CSR", "",
              "| R | CSR | Params M | Multi-Adds G | Set5 | Set14 | BSD68 | train min | it/s | "
              "paper Urban100 dB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        if "I" in e["tables"]:
            a = e["model_args"]
            lines.append(f"| {a['recursions']} | {a['csr']} | {e['params_M']:.3f} | "
                         f"{e['gmacs_1280x720']:.1f} | {_cell(e, 'Set5')} | {_cell(e, 'Set14')} | "
                         f"{_cell(e, 'BSD68')} | {_time_cells(e)} | "
                         f"{e['paper_table1']['urban100_psnr']} |")

    lines += ["", "## Table II — comparison networks", "",
              "| Method | Params M | Multi-Adds G | Set5 | Set14 | BSD68 | train min | it/s | "
              "Set5 dB paper / published | paper Urban100 dB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        if "II" in e["tables"]:
            pub = e.get("published_set5")
            p2 = e.get("paper_table2")
            lines.append(f"| {PAPER_NAMES[e['model']]} | {e['params_M']:.3f} | "
                         f"{e['gmacs_1280x720']:.1f} | {_cell(e, 'Set5')} | {_cell(e, 'Set14')} | "
                         f"{_cell(e, 'BSD68')} | {_time_cells(e)} | "
                         f"{pub['psnr'] if pub else '-'} | {p2['urban100_psnr'] if p2 else '-'} |")
    if bic:
        cells = " | ".join(f"{bic[ds]['psnr']:.2f}" for ds in TEST_SETS)
        lines.append(f"| Bicubic | - | - | {cells} | - | - | - | - |")
    lines += ["", "PSNR columns: our runs at this budget (dB, Y channel). \"-\": not trained "
              "to the end yet. Published Set5 sources: "
              + "; ".join(f"{PAPER_NAMES[e['model']]}: {e['published_set5']['source']}"
                          for e in entries if "II" in e["tables"] and e.get("published_set5"))
              + ".", ""]
    missing = [e["label"] for e in entries if e["status"] != "finished"]
    if missing:
        lines += [f"Not finished: {', '.join(missing)}.", ""]
    what = findings(entries, bic)
    lines += ["## What it says", ""] + (what or ["Too few finished runs to compare."]) + [""]
    return "\n".join(lines)


def write_atomic(path: Path, text: str) -> None:
    from rdsrn.data import write_bytes_atomic
    from rdsrn.outputs import write_error

    try:
        write_bytes_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        raise write_error(path, exc) from None


# ---------------------------------------------------------------------------- driver

def run(args: argparse.Namespace, command: str) -> int:
    """Train what is missing, score every finished run, write the JSON and markdown."""
    from rdsrn.models import unknown_name_message
    from rdsrn.outputs import check_output_dir

    try:
        import torch
        import yaml  # noqa: F401
    except ImportError as exc:
        from rdsrn.runtimes.errors import MissingExtraError

        raise MissingExtraError(exc.name or "torch", "train") from None
    from rdsrn import __version__
    from rdsrn.training.cli import exit_code
    from rdsrn.training.config import load_config
    from rdsrn.training.data import find_images
    from rdsrn.training.trainer import choose_precision

    from .runtime_layer import machine

    all_variants = variants()
    labels = [v.label for v in all_variants]
    for label in args.only or []:
        if label not in labels:
            raise UserError(f"--only: {unknown_name_message('variant', label, labels)}")
    chosen = {v.label for v in all_variants if not args.only or v.label in args.only}
    data = Path(args.data).expanduser().absolute()
    sets = {ds: data / "test" / ds for ds in TEST_SETS}
    for folder in [data / "train", *sets.values()]:
        if not folder.is_dir():
            raise UserError(f"--data {args.data}: {folder} is not a folder (expected "
                            f"train/ and test/{{{','.join(TEST_SETS)}}})")
    train_images = len(find_images([str(data / "train")]))
    runs_dir, out = Path(args.runs_dir), Path(args.out)
    check_output_dir(out, "--out")
    check_output_dir(runs_dir, "--runs-dir")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    budget = Budget(args.iterations, args.batch, args.patch)
    cache_dir = Path(args.cache_dir)
    progress = sys.stderr.isatty()

    configs = {}
    for v in all_variants:
        sets_v = overrides(v, budget, data, runs_dir / v.label, cache_dir, args.threads)
        configs[v.label] = (load_config("rdsrn_x4", sets_v), train_command(sets_v))
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    entries = []
    for v in all_variants:
        cfg, cmd = configs[v.label]
        run_dir = runs_dir / v.label
        ckpt = read_run(run_dir, cfg)
        done = ckpt is not None and int(ckpt["iteration"]) >= budget.iterations
        if v.label in chosen and not done and not args.eval_only:
            log(f"{v.label}: " + (f"resuming at iteration {ckpt['iteration']}" if ckpt
                                  else "training") + f" to {budget.iterations} in {run_dir}")
            result = train(cfg, ckpt, progress)
            if result.get("stopped"):
                return exit_code(result, cfg.out_dir)
            ckpt = read_run(run_dir, cfg)
            done = ckpt is not None and int(ckpt["iteration"]) >= budget.iterations
        elif done and v.label in chosen:
            log(f"{v.label}: finished ({ckpt['iteration']} iterations), not retrained")
        results = None
        if done:
            log(f"{v.label}: scoring the final EMA weights on {', '.join(TEST_SETS)}")
            results = evaluate_run(v, run_dir, ckpt, sets)
        entries.append(entry(v, run_dir, ckpt, budget, cmd, results))
        del ckpt

    base = load_config("rdsrn_x4")
    shipped = Budget(base.iterations, base.batch_size, base.patch_size)
    recipe = {k: v for k, v in configs[all_variants[0].label][0].resolved().items()
              if k in ("lr", "warmup_iters", "schedule", "min_lr", "ema_decay", "grad_clip",
                       "loss", "precision", "betas", "seed", "augment", "val_every", "ckpt_every")}
    precision, reason = choose_precision(RECIPE["precision"], torch.device("cpu"))
    doc = {
        "generated_by": PROG, "command": command, "rdsrn_version": __version__,
        "machine": machine(), "torch": torch.__version__, "load_average_at_start": load,
        "threads": args.threads if args.threads > 0 else torch.get_num_threads(),
        "budget": {"iterations": budget.iterations, "batch": budget.batch, "patch": budget.patch,
                   "hr_patch": budget.patch * SCALE, "lr_patch_pixels": budget.lr_pixels},
        "shipped_recipe": {"iterations": shipped.iterations, "batch": shipped.batch,
                           "patch": shipped.patch, "lr_patch_pixels": shipped.lr_pixels},
        "recipe": recipe, "precision_resolved": f"{precision}: {reason}",
        "data": str(data), "train_images": train_images,
        "evaluation": {"scale": SCALE, "sets": {k: str(p) for k, p in sets.items()},
                       "weights": "EMA weights of each run's last.pt (no selection)"},
        "bicubic": evaluate_bicubic(sets),
        "variants": entries,
    }
    json_path, md_path = out / "paper_tables_trained.json", out / "paper_tables_trained.md"
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(json_path, json.dumps(doc, indent=1) + "\n")
    write_atomic(md_path, render_markdown(doc))
    log(f"wrote {json_path} and {md_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=600, help="optimizer steps per run")
    p.add_argument("--batch", type=int, default=16, help="patches per step")
    p.add_argument("--patch", type=int, default=32, help="LR patch side, pixels (HR: x4)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for training and scoring (0: torch's default)")
    p.add_argument("--only", nargs="+", metavar="LABEL",
                   help=f"train only these: {', '.join(v.label for v in variants())}")
    p.add_argument("--runs-dir", default="runs/tables", help="one folder per run under it")
    p.add_argument("--out", default=str(RESULTS), help="folder of the JSON and markdown")
    p.add_argument("--data", default=str(DATA),
                   help="folder with train/ and test/Set5, test/Set14, test/BSD68")
    p.add_argument("--cache-dir", default="runs/cache", help="the trainer's LR image cache")
    p.add_argument("--eval-only", action="store_true",
                   help="train nothing; score and report the finished runs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = " ".join([PROG, *map(shlex.quote, argv)])
    try:
        return run(args, command)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
