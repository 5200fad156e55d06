"""One time-boxed device call: train x4, fine-tune x3 and x2; weights, logs, summary in OUT.

Run through rdsrn/training/gpu_session.sh (which makes the package importable without
installing it); see that file, and benchmarks/results/gpu_training_path.md, for the
one-call command. Stages, each resumable (a re-run skips finished stages and resumes a killed one
from its last.pt):

  env    torch, GPU, CPU count
  prep   MATLAB-bicubic LR caches of x4, x3, x2 in a process pool (once)
  bench  rdsrn.training.gpu_bench: host vs device sampler, eager vs compile, batch sizes
  plan   fastest setting: batch (smallest within 10% of the best pixels/s; lr scaled by
         sqrt(batch/64)), compile or not, iterations from the measured it/s and the budget
  x4     rdsrn train --config rdsrn_x4 (max_minutes as a hard stop)
  ft     rdsrn_x3 and rdsrn_x2 side by side on the one device, from x4's best weights
  collect OUT/rdsrn_x{4,3,2}/best.safetensors, OUT/logs.tar.gz, OUT/summary.json

    python -m rdsrn.training.gpu_session --out OUT [--toy] [--minutes 8.5] ...
    python -m rdsrn.training.gpu_session pack [--budget-mib auto]   # carried data, here
    python -m rdsrn.training.gpu_session compare DIR               # returned vs shipped

Sizes: OUT receives 6 files (the device tool returns at most 8, 16 MiB each).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOY_ARGS = {"channels": 16, "hr_channels": 8, "wide": 2}
# Peak learning rate of each config at batch 64 (the shipped recipes).
BASE_LR = {4: 1e-3, 3: 5e-4, 2: 5e-4}
TAIL_S = 15.0  # after max_minutes: last validation, checkpoint, plot


def log(msg: str) -> None:
    print(f"[gpu_session {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def run_stage(name: str, argv: list[str], timeout_s: float, log_path: Path) -> dict[str, Any]:
    """Run `argv` with its output in `log_path`; SIGTERM at `timeout_s` (the trainer saves a
    checkpoint and stops), SIGKILL 30 s later. Returns {rc, seconds, timed_out}.

    Children get their own process group (so compile workers are stopped with them) but
    stay in this session: whatever ends the device call ends them too."""
    log(f"{name}: {' '.join(argv[2:])[:400]}")
    t0 = time.perf_counter()
    with open(log_path, "ab") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, process_group=0)
    return wait_stage(name, proc, t0, timeout_s)


def wait_stage(name: str, proc: subprocess.Popen, t0: float, timeout_s: float) -> dict[str, Any]:
    timed_out = False
    try:
        rc = proc.wait(timeout=max(1.0, timeout_s - (time.perf_counter() - t0)))
    except subprocess.TimeoutExpired:
        timed_out = True
        log(f"{name}: over {timeout_s:.0f} s, SIGTERM")
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
    sec = time.perf_counter() - t0
    log(f"{name}: rc {rc}, {sec:.1f} s")
    return {"rc": rc, "seconds": round(sec, 1), "timed_out": timed_out}


def env_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                            "cuda": torch.cuda.is_available(), "cpus": len(os.sched_getaffinity(0))}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16"] = torch.cuda.is_bf16_supported()
        try:
            info["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["nvidia_smi"] = f"unavailable ({exc})"
    return info


def model_name(a: argparse.Namespace, scale: int) -> str:
    """The registry name trained at `scale`: rdsrn_x{s}, or rdsrn_x{s}_anchor with --anchor
    (the weights then ship under that name, never over the plain model's)."""
    return f"rdsrn_x{scale}_anchor" if a.anchor else f"rdsrn_x{scale}"


def stage_overrides(a: argparse.Namespace, work: Path) -> list[str]:
    """--set values common to every training/bench process of this session."""
    sets = [f"train_dirs=[{', '.join(a.data)}]", f"cache_dir={work / 'cache'}", "log_every=20",
            f"patch_size={a.patch}"]
    if a.toy:  # JSON is YAML: a --set value
        sets += [f"model_args={json.dumps(TOY_ARGS)}", "threads=1"]
    return sets


def choose_plan(bench: dict[str, Any], a: argparse.Namespace, macs: dict[int, int]) -> dict[str, Any]:
    """Pick sampler/compile/batch from the bench rows and size each stage's iterations."""
    rows = [r for r in bench.get("rows", []) if "it_per_s" in r]
    fallback = not rows
    if fallback:  # the bench failed or timed out: plan from --fallback-its (logged, in plan.json)
        log(f"bench gave no row: planning eager, device sampler, batch 64 at {a.fallback_its} it/s")
        rows = [{"row": "fallback", "sampler": "device", "batch": 64, "it_per_s": a.fallback_its,
                 "lr_mpx_per_s": a.fallback_its * 64 * a.patch ** 2 / 1e6, "warmup_s": 0.0}]
    best_px = max(r["lr_mpx_per_s"] for r in rows)
    modes = {}
    for r in rows:  # best pixels/s per mode
        modes[r["sampler"]] = max(modes.get(r["sampler"], 0.0), r["lr_mpx_per_s"])
    mode = max(modes, key=modes.get)
    # The smallest batch within 10% of the mode's best pixels/s: more steps per second.
    cands = sorted((r for r in rows if r["sampler"] == mode
                    and r["lr_mpx_per_s"] >= 0.9 * modes[mode]), key=lambda r: r["batch"])
    row = cands[0]
    batch, its = row["batch"], row["it_per_s"]
    overhead = a.startup_s + (row["warmup_s"] if mode == "compile" else 0.0)

    def iters(scale: int, minutes: float, share: float) -> int:
        rate = its * macs[4] / macs[scale] * share
        return max(10, int(rate * max(5.0, minutes * 60 - overhead) * a.iter_margin))

    n4 = iters(4, a.x4_minutes, 1.0)
    share = 0.5 if a.parallel_ft else 1.0  # two processes split one device
    plan = {"sampler": "host" if mode == "host" else "device", "compile": mode == "compile",
            "batch": batch, "lr_scale": round(math.sqrt(batch / 64), 4),
            "bench_row": row, "best_lr_mpx_per_s": best_px, "fallback": fallback, "stages": {}}
    for scale, minutes, n in ((4, a.x4_minutes, n4),
                              (3, a.ft_minutes, iters(3, a.ft_minutes, share)),
                              (2, a.ft_minutes, iters(2, a.ft_minutes, share))):
        plan["stages"][f"x{scale}"] = {
            "iterations": n, "lr": BASE_LR[scale] * plan["lr_scale"], "minutes": minutes,
            "warmup_iters": max(5, n // 20), "val_every": max(1, n // 4),
            "ckpt_every": max(5, n // 20)}
    return plan


def train_argv(scale: int, plan: dict[str, Any], a: argparse.Namespace, work: Path,
               resume: bool, minutes: float) -> list[str]:
    st = plan["stages"][f"x{scale}"]
    sets = stage_overrides(a, work) + [
        f"out_dir={work / f'rdsrn_x{scale}'}", f"val_dir={a.val}", f"sampler={plan['sampler']}",
        f"compile={str(plan['compile']).lower()}", f"batch_size={plan['batch']}",
        f"lr={st['lr']:.6g}", f"iterations={st['iterations']}",
        f"warmup_iters={st['warmup_iters']}", f"val_every={st['val_every']}",
        f"ckpt_every={st['ckpt_every']}", f"max_minutes={minutes:.3f}"]
    sets.append(f"model={model_name(a, scale)}")
    if scale != 4:
        sets.append(f"init_from={work / 'rdsrn_x4' / 'best.safetensors'}")
    elif a.x4_init:
        sets.append(f"init_from={a.x4_init}")
    argv = [sys.executable, "-m", "rdsrn.cli", "train", "--config", f"rdsrn_x{scale}",
            "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    return argv + (["--resume"] if resume else [])


def read_log(path: Path) -> dict[str, Any]:
    """Summary of a run's log.jsonl: last iteration, median it/s, best validation."""
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    its = sorted(r["it_per_s"] for r in rows if "it_per_s" in r)
    vals = [r for r in rows if "val_psnr" in r]
    best = max(vals, key=lambda r: max(r["val_psnr"], r.get("val_psnr_raw", -1)), default=None)
    return {"last_iteration": max((r["iteration"] for r in rows), default=0),
            "median_it_per_s": its[len(its) // 2] if its else None,
            "best_val": best, "val_rows": len(vals)}


def session(a: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    summary_path = work / "summary.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.setdefault("sessions", []).append({"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                               "args": vars(a)})
    for d in [*a.data, a.val]:
        if not Path(d).is_dir():
            log(f"missing data folder {d} (carry it: see gpu_session.sh)")
            return 2

    from ..macs import count_macs
    from ..models import create_model
    from .device_data import prepare_lr_cache

    t0 = time.perf_counter()
    n = prepare_lr_cache(list(a.data), [4, 3, 2], str(work / "cache"))
    summary["prep"] = {"images": n, "seconds": round(time.perf_counter() - t0, 1)}
    log(f"prep: LR x4/x3/x2 of {n} images in {summary['prep']['seconds']} s")
    summary["env"] = env_info()  # after the worker pool: no CUDA context before a fork
    log(f"env: {summary['env']}")

    plan_path = work / "plan.json"
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        log("plan: reusing plan.json (re-run)")
    else:
        bench_json = work / "bench.json"
        argv = [sys.executable, "-m", "rdsrn.training.gpu_bench", "--config", "rdsrn_x4",
                "--json", str(bench_json), "--rows", a.bench_rows, "--seconds", str(a.bench_seconds)]
        for s in stage_overrides(a, work) + [f"model={model_name(a, 4)}"]:
            argv += ["--set", s]
        summary["bench_stage"] = run_stage("bench", argv, a.bench_timeout, logs / "bench.log")
        bench = json.loads(bench_json.read_text()) if bench_json.is_file() else {}
        summary["bench"] = bench
        macs = {s: count_macs(create_model(model_name(a, s), **(TOY_ARGS if a.toy else {})), (a.patch, a.patch)) for s in (2, 3, 4)}
        plan = choose_plan(bench, a, macs)
        write_json(plan_path, plan)
    summary["plan"] = plan
    log(f"plan: {json.dumps({k: v for k, v in plan.items() if k != 'bench_row'})}")
    write_json(summary_path, summary)

    deadline = t_start + a.minutes * 60
    per_stage_s = a.startup_s + TAIL_S  # a training process's time outside max_minutes
    limits: dict[int, float] = {}

    def stage(scale: int) -> tuple[subprocess.Popen | None, float, Path]:
        run_dir = work / f"rdsrn_x{scale}"
        if (run_dir / "done.json").is_file():
            log(f"x{scale}: done in an earlier session")
            return None, 0.0, run_dir
        resume = (run_dir / "last.pt").is_file()
        if not resume and run_dir.is_dir() and any(run_dir.iterdir()):
            # Killed before its first checkpoint: nothing to resume, and a new run may not
            # write into an earlier run's folder; keep it aside for the logs.
            aside = run_dir.with_name(f"{run_dir.name}.killed-{time.strftime('%H%M%S')}")
            run_dir.rename(aside)
            log(f"x{scale}: {run_dir} had no last.pt; moved to {aside}")
        left = deadline - time.perf_counter() - a.reserve_s - per_stage_s
        if scale == 4:  # keep the fine-tunes' share
            left -= a.ft_minutes * 60 + per_stage_s
        minutes = max(0.1, min(plan["stages"][f"x{scale}"]["minutes"], left / 60))
        limits[scale] = minutes * 60 + per_stage_s + a.grace_s
        argv = train_argv(scale, plan, a, work, resume, minutes)
        log(f"x{scale}: {'resume' if resume else 'start'}: {' '.join(argv[4:])[:600]}")
        f = open(logs / f"x{scale}.log", "ab")
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, process_group=0)
        f.close()
        return proc, time.perf_counter(), run_dir

    def finish(scale: int, started: tuple[subprocess.Popen | None, float, Path]) -> None:
        proc, t0, run_dir = started
        if proc is None:
            return
        res = wait_stage(f"x{scale}", proc, t0, limits[scale])
        res.update(read_log(run_dir / "log.jsonl"))
        summary.setdefault("stages", {})[f"x{scale}"] = res
        if res["rc"] == 0 and (run_dir / "best.safetensors").is_file():
            write_json(run_dir / "done.json", res)
        collect_weights(scale)  # now, not at the end: a call cut short still returns them
        write_json(summary_path, summary)
        shutil.copyfile(summary_path, out / "summary.json")

    def collect_weights(scale: int) -> bool:
        src = work / f"rdsrn_x{scale}" / "best.safetensors"
        if not src.is_file():
            return False
        (out / f"rdsrn_x{scale}").mkdir(exist_ok=True)
        tmp = out / f"rdsrn_x{scale}" / "best.safetensors.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, out / f"rdsrn_x{scale}" / "best.safetensors")
        return True

    def failed(scale: int) -> bool:
        res = summary.get("stages", {}).get(f"x{scale}")
        return res is not None and res["rc"] != 0 and not res["timed_out"]

    def eager_retry(scales: list[int]) -> None:
        # The bench compiled once, but a compile can still fail in a training process:
        # the rest of the call then trains eagerly (logged, and recorded in the summary).
        bad = [s for s in scales if failed(s)]
        if bad and plan["compile"]:
            log(f"x{bad}: failed with torch.compile; retrying eager (resuming any last.pt)")
            plan["compile"] = False
            summary["compile_fallback"] = bad
            for s in bad:
                finish(s, stage(s))

    finish(4, stage(4))
    eager_retry([4])
    if (work / "rdsrn_x4" / "best.safetensors").is_file():
        if a.parallel_ft:
            s3, s2 = stage(3), stage(2)
            finish(3, s3)
            finish(2, s2)
        else:
            finish(3, stage(3))
            finish(2, stage(2))
        eager_retry([3, 2])
    else:
        log("x4 left no best.safetensors: no fine-tunes")

    # collect
    ok = all([collect_weights(scale) for scale in (4, 3, 2)])
    tmp = out / "logs.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for p in sorted(work.rglob("*")):
            if p.is_file() and (p.suffix in (".jsonl", ".log", ".png") or p.name in
                                ("bench.json", "plan.json", "done.json", "summary.json")):
                tar.add(p, arcname=str(p.relative_to(work)))
    os.replace(tmp, out / "logs.tar.gz")
    summary["wall_s"] = round(time.perf_counter() - t_start, 1)
    summary["complete"] = ok
    write_json(summary_path, summary)
    shutil.copyfile(summary_path, out / "summary.json")
    log(f"done in {summary['wall_s']} s; complete: {ok}; files in {out}")
    return 0 if ok else 1


def tree_mib(repo: Path) -> float:
    """MiB of what a device call sends: tracked plus untracked-not-ignored files."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=repo, capture_output=True, check=True).stdout.split(b"\0")
    return sum((repo / n.decode()).stat().st_size for n in names
               if n and (repo / n.decode()).is_file()) / 2 ** 20


def pack(a: argparse.Namespace) -> int:
    """Copy the validation set and as many training images as fit the budget into
    .devdata/ (ignored through .git/info/exclude), for `carry: [".devdata"]`."""
    from .data import find_images

    dst = REPO / ".devdata"
    exclude = REPO / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    if "/.devdata/" not in (exclude.read_text() if exclude.is_file() else ""):
        with open(exclude, "a") as f:
            f.write("/.devdata/\n")
    if dst.exists():
        shutil.rmtree(dst)
    val = Path(a.val_src)
    shutil.copytree(val, dst / "val" / val.name)
    used = sum(p.stat().st_size for p in (dst / "val").rglob("*") if p.is_file()) / 2 ** 20
    budget = (a.limit_mib - tree_mib(REPO) - used) if a.budget_mib == "auto" else float(a.budget_mib)
    files = [(Path(root), f) for root in a.train_src for f in find_images([root])]
    # Every k-th image of the sorted list first (a spread over both sources), then the rest.
    total = sum(f.stat().st_size for _, f in files) / 2 ** 20
    step = max(1, round(total / max(budget, 1e-3)))
    order = files[::step] + [p for i, p in enumerate(files) if i % step]
    taken, size = [], 0.0
    for root, f in order:
        mib = f.stat().st_size / 2 ** 20
        if size + mib <= budget:
            rel = (Path(root.name) if len(a.train_src) > 1 else Path()) / f.relative_to(root)
            target = dst / "train" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
            taken.append(str(rel))
            size += mib
    manifest = {"train_images": len(taken), "of": len(files), "train_mib": round(size, 1),
                "all_train_mib": round(total, 1), "budget_mib": round(budget, 1),
                "files": taken}
    write_json(dst / "manifest.json", manifest)
    print(f"packed {len(taken)} of {len(files)} training images ({size:.1f} of {total:.1f} MiB, "
          f"budget {budget:.1f} MiB) + {val.name} into {dst}")
    return 0


def compare(a: argparse.Namespace) -> int:
    """Evaluate returned best.safetensors on Set5/Set14/BSD68 next to the shipped weights."""
    from .ablation import TEST_SETS, evaluate_model
    from ..models import create_model
    from ..weights import load_into, read_metadata, weights_path

    for scale in (4, 3, 2):
        f = Path(a.dir) / f"rdsrn_x{scale}" / "best.safetensors"
        if not f.is_file():
            print(f"x{scale}: no {f}")
            continue
        meta = read_metadata(f)
        model = create_model(meta["model"], **meta["config"])
        load_into(model, f)
        new = evaluate_model(model, Path(a.data), scale)
        shipped = read_metadata(weights_path(f"rdsrn_x{scale}")).get("eval", {})
        cells = [f"{ds} {new[ds]['psnr']:.3f} (shipped {shipped.get(ds, {}).get('psnr', float('nan')):.3f})"
                 for ds in TEST_SETS]
        print(f"x{scale}: " + ", ".join(cells))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pack"]:
        p = argparse.ArgumentParser(prog="gpu_session pack", description=pack.__doc__)
        p.add_argument("--train-src", nargs="+", default=[str(REPO.parent / "shared/data/train")])
        p.add_argument("--val-src", default=str(REPO.parent / "shared/data/test/Set5"))
        p.add_argument("--budget-mib", default="auto", help="MiB of training images, or auto")
        p.add_argument("--limit-mib", type=float, default=62.0,
                       help="auto: this minus what the call sends anyway (device limit 64 MiB)")
        return pack(p.parse_args(argv[1:]))
    if argv[:1] == ["compare"]:
        p = argparse.ArgumentParser(prog="gpu_session compare", description=compare.__doc__)
        p.add_argument("dir")
        p.add_argument("--data", default=str(REPO.parent / "shared/data"))
        return compare(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.environ.get("OUT", ""), help="results folder (default $OUT)")
    p.add_argument("--work", default="runs/gpu_session", help="runs, caches, checkpoints")
    p.add_argument("--data", nargs="+", default=[".devdata/train"], help="HR training folders")
    p.add_argument("--val", default=".devdata/val/Set5", help="HR validation folder")
    p.add_argument("--patch", type=int, default=64, help="LR patch side")
    p.add_argument("--bench-rows", default="device:64,host:64,device:256,compile:64,compile:256,device:128",
                   help="most important first: a bench time-out keeps the finished rows")
    p.add_argument("--bench-seconds", type=float, default=4.0, help="timed seconds per row")
    p.add_argument("--bench-timeout", type=float, default=120.0)
    p.add_argument("--minutes", type=float, default=9.0,
                   help="whole session (stages shrink to end by then; the device allows 10)")
    p.add_argument("--reserve-s", type=float, default=20.0, help="kept for collecting results")
    p.add_argument("--x4-minutes", type=float, default=3.5)
    p.add_argument("--ft-minutes", type=float, default=2.0)
    p.add_argument("--grace-s", type=float, default=30.0, help="past a stage's planned end before SIGTERM")
    p.add_argument("--startup-s", type=float, default=25.0, help="per training process: data load etc.")
    p.add_argument("--iter-margin", type=float, default=0.85, help="planned share of the measured rate")
    p.add_argument("--serial-ft", dest="parallel_ft", action="store_false",
                   help="fine-tune x3 then x2 (default: side by side)")
    p.add_argument("--x4-init", default="", help="start x4 from these weights instead of random")
    p.add_argument("--fallback-its", type=float, default=20.0,
                   help="x4 it/s to plan with when the bench gives no row (20: the old GPU path)")
    p.add_argument("--toy", action="store_true", help="tiny model for a CPU rehearsal")
    p.add_argument("--anchor", action="store_true",
                   help="every model with the anchor skip (RDSRN anchor=True; x4 from scratch)")
    a = p.parse_args(argv)
    if not a.out:
        p.error("--out (or $OUT) is required")
    return session(a)


if __name__ == "__main__":
    raise SystemExit(main())
