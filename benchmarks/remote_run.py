"""`rdsrn bench --target ssh://... | adb[:SERIAL]`: artifacts are prepared here, timed
there, and the rows come back into the same table (params, MACs, size and accuracy are
properties of the file and are filled in here)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import device_bench as db
from .harness import (ArtifactError, Case, Options, base_row, measure_accuracy,
                      model_counts, prepare_artifact, weights_for, AccuracyCache)
from . import remote
from .remote import Exec, adb_bench, ssh_bench


def run_remote(kind: str, detail: Any, cases: list[Case], opts: Options,
               args: argparse.Namespace, local_machine: dict[str, Any],
               exec_fn: Exec | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure `cases` on an ssh host or adb device. PyTorch / Upscaler rows need the
    host package and become error rows there; adb runs .tflite only. `exec_fn`
    defaults to remote.run_process (looked up at call time, so tests can replace it)."""
    exec_fn = exec_fn or remote.run_process
    rows: list[dict[str, Any]] = []
    runnable: list[tuple[Case, dict[str, Any], str]] = []  # case, row, model file
    counts: dict[str, dict[str, Any]] = {}
    label = args.target
    for case in cases:
        row = base_row(case)
        row["target"] = label
        row["weights"] = weights_for(case, opts)[1]
        rows.append(row)
        if case.format in ("pytorch", "upscaler"):
            row.update(status="error", error=f"{case.format} rows run on the host only "
                       "(the device part is numpy + runtime)")
            continue
        if kind == "adb" and case.format != "tflite":
            row.update(status="error", error="adb target runs .tflite files only")
            continue
        try:
            key = repr((case.model, sorted(case.overrides.items()), case.input_hw))
            if key not in counts:
                counts[key] = model_counts(case, opts)
            row.update(counts[key])
            model = "bicubic"
            if case.format != "bicubic":
                path = prepare_artifact(case, opts)
                row["artifact"] = str(path)
                row["size_mb"] = path.stat().st_size / 1e6
                model = str(path)
            runnable.append((case, row, model))
        except (ArtifactError, Exception) as exc:  # one row
            row.update(status="error", error=str(exc).splitlines()[0][:300] or
                       type(exc).__name__)
    machine: dict[str, Any] | None = None
    # one remote session per input size
    for hw in sorted({c.input_hw for c, _, _ in runnable}):
        group = [(c, r, m) for c, r, m in runnable if c.input_hw == hw]
        models = sorted({m for _, _, m in group})
        threads = sorted({c.threads for c, _, _ in group})
        if kind == "ssh":
            got_machine, measured = ssh_bench(detail, models, threads, db.format_size(hw),
                                              opts.warmup, opts.runs, opts.min_time,
                                              group[0][0].scale, exec_fn=exec_fn,
                                              python=args.remote_python, timeout=opts.timeout)
        else:
            got_machine, measured = adb_bench(detail, args.benchmark_binary, models, threads,
                                              args.delegate, opts.warmup, opts.runs,
                                              opts.min_time, args.profile, exec_fn=exec_fn,
                                              timeout=opts.timeout,
                                              options=delegate_options(args), input_hw=hw)
        machine = machine or got_machine
        by_key = {(str(m.get("model_file")), int(m.get("threads") or 0)): m for m in measured}
        for case, row, model in group:
            m = by_key.get((model, case.threads))
            if m is None:
                row.update(status="error", error="no result from the target")
                continue
            _merge(row, m, case, machine or {}, opts)
    if machine is None:
        machine = {"target": label, "note": "target unreachable; host machine below",
                   "host": local_machine}
    machine.setdefault("target", label)
    return machine, rows


def delegate_options(args: argparse.Namespace) -> remote.DelegateOptions:
    """adb accelerator options from the `rdsrn bench` flags (absent flags: defaults)."""
    tool = getattr(args, "benchmark_tool", None) or (
        "litert" if getattr(args, "delegate", "") == "npu" else "tflite")
    return remote.DelegateOptions(
        gpu_precision=getattr(args, "gpu_precision", None) or "fp16",
        gpu_backend=getattr(args, "gpu_backend", None),
        npu_dispatch_dir=getattr(args, "npu_dispatch_dir", None),
        npu_compiler_plugin_dir=getattr(args, "npu_compiler_plugin_dir", None),
        require_full_delegation=bool(getattr(args, "require_full_delegation", False)),
        tool=tool)


def _merge(row: dict[str, Any], measured: dict[str, Any], case: Case,
           machine: dict[str, Any], opts: Options) -> None:
    if measured.get("status") != "ok":
        row.update(status="error", error=measured.get("error"))
        return
    for k, v in measured.items():
        if k in ("model_file", "status", "error", "threads"):
            continue
        if k in ("size_mb",) and row.get(k) is not None:
            continue
        row[k] = v
    if row.get("macs") and machine.get("flags") is not None:
        prec = "fp32" if case.format == "bicubic" else case.precision
        db.add_throughput(row, row["macs"], prec, machine)
    elif row.get("macs") and row.get("p50_ms"):
        row["gmacs_per_s"] = row["macs"] / (row["p50_ms"] / 1e3) / 1e9
    # accuracy is a property of the file: measured here, on the host
    try:
        row.update(measure_accuracy(case, Path(row["artifact"]) if row.get("artifact")
                                    else None, opts, _ACC))
    except Exception as exc:
        row["accuracy_error"] = db.one_line(exc)


_ACC = AccuracyCache()
