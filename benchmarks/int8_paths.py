"""INT8 kernel-path accuracy matrix: every bundled INT8 file on each int8 kernel path a
user's CPU selects, natively or under an emulator with that CPU model.

    python -m rdsrn.benchmarks.int8_paths                       # every runner, default images
    python -m rdsrn.benchmarks.int8_paths --runners native,qemu-avx2 --full

A runner is this host ("native") or a CPU model under qemu-user (x86: qemu-x86_64 with
this venv's Python; ARM: qemu-aarch64 with an arm64 Python and aarch64 wheels, prepared
by `bash benchmarks/int8_paths_setup.sh`). Each runner executes `worker` in a process of
its own, which reports the CPU features that process saw (rdsrn.runtimes.cpu: CPUID /
getauxval, what the runtimes' dispatchers read) and refuses to run when they are not the
intended kernel path. Integer kernels compute the same bits under emulation as on the
device, so the PSNR is the device's; emulated timings are never taken.

Per image the SR output is scored with the evaluation protocol (rdsrn.evaluate) against
HR, and compared bit for bit with the native output. ΔPSNR is against the bundled FP32
ONNX file of the same scale run natively on the same images; the gate is the bundle's
target (export.bundle.INT8_TARGET_DROP). Emulation is ~50-100x slower than native, so
by default emulated runners see a fixed subset (--images); `--full` runs all of Set5 and
BSD68. Results are cached per (runner, file, image set) under --work, so an interrupted
run resumes where it stopped; the report goes to benchmarks/results/int8_paths.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# runner id -> (architecture, emulator CPU model or None for this host, expected path)
RUNNERS: dict[str, tuple[str, str | None, str | None]] = {
    "native": ("host", None, None),
    # x86-64-v1 (qemu64) is not a runner: numpy and onnxruntime's wheels need SSE4.2 and
    # stop on an illegal instruction there. AVX-512 and VNNI have no qemu model (TCG
    # implements neither): run `native` on such a host.
    "qemu-sse4": ("x86_64", "Nehalem-v2", "x86-sse"),
    "qemu-avx2": ("x86_64", "EPYC-Milan", "x86-avx2"),
    "qemu-a53": ("aarch64", "cortex-a53", "arm64-neon"),
    "qemu-a72": ("aarch64", "cortex-a72", "arm64-neon"),
    "qemu-a76": ("aarch64", "cortex-a76", "arm64-dotprod"),
    "qemu-i8mm": ("aarch64", "max,sve=off", "arm64-i8mm"),
    "qemu-n2": ("aarch64", "neoverse-n2", "arm64-sve"),
    "qemu-sve": ("aarch64", "max", "arm64-sve"),
}
# The qemu-user binaries: RDSRN_QEMU_X86_64 / RDSRN_QEMU_AARCH64, else the qemu 10 that
# int8_paths_setup.sh unpacks, else one on PATH (neoverse-n2 needs qemu >= 8.1; qemu 7.2's
# SVE emulation gives LiteRT's SVE kernels wrong results).
AARCH64_ROOT = Path(os.environ.get("RDSRN_QEMU_ROOT", "/tmp/rdsrn-aarch64"))


def _qemu(arch: str) -> str | None:
    unpacked = AARCH64_ROOT / "qemu" / "usr" / "bin" / f"qemu-{arch}"
    return (os.environ.get(f"RDSRN_QEMU_{arch.upper()}")
            or (str(unpacked) if unpacked.is_file() else None)
            or shutil.which(f"qemu-{arch}-static") or shutil.which(f"qemu-{arch}"))


QEMU = {"x86_64": _qemu("x86_64"), "aarch64": _qemu("aarch64")}
# Emulated runners' default images: Set5's bird and butterfly (butterfly is where the
# saturating kernel lost most) and one BSD68 image.
DEFAULT_IMAGES = ("Set5/bird", "Set5/butterfly", "BSD68/3096")
DATASETS = ("Set5", "BSD68")
# Per image, outputs within this PSNR of the native ones differ by rounding (a 1-level
# flip of one intermediate value spreads through ~60 layers to a few output levels, at
# ±0.01 dB), not by saturation (the earlier x4 file: -1.08 dB on one Set5 image).
ROUNDING_DB = 0.05


# ----------------------------------------------------------------------------- worker
def worker(inputs: Path, models: list[str], out_dir: Path, threads: int,
           expect: str | None) -> int:
    """Run each model over the LR images of `inputs` (npz, uint8 RGB) and write one npz of
    SR images per model into `out_dir`; prints one JSON line (CPU seen, versions)."""
    from rdsrn.runtimes import Upscaler
    from rdsrn.runtimes.cpu import cpu_features, kernel_path

    machine, features, source = cpu_features()
    path = kernel_path(machine, features)
    seen = {"machine": machine, "features": sorted(features), "source": source,
            "kernel_path": path, "versions": _versions()}
    if expect is not None and path != expect:
        print(json.dumps({**seen, "error": f"CPU seen is {path}, not {expect}"}))
        return 3
    lrs = dict(np.load(inputs))
    for model in models:
        up = Upscaler(model, threads=threads, tile=0)
        srs = {k: up.upscale(v) for k, v in lrs.items()}
        name = Path(model).name
        tmp = out_dir / f"{name}.tmp.npz"
        np.savez(tmp, **srs)
        os.replace(tmp, out_dir / f"{name}.npz")
    print(json.dumps(seen))
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("onnxruntime", "ai-edge-litert", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------- host
def _images(data_root: Path, full: bool, names: tuple[str, ...]) -> list[Path]:
    from rdsrn.data import list_images

    if full:
        return [p for d in DATASETS for p in list_images(data_root / d)]
    by_stem = {f"{p.parent.name}/{p.stem}": p for d in DATASETS
               for p in list_images(data_root / d)}
    missing = [n for n in names if n not in by_stem]
    if missing:
        raise SystemExit(f"int8_paths: no image {missing[0]} under {data_root}")
    return [by_stem[n] for n in names]


def _pairs(images: list[Path], scale: int) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """(HR, LR, gray) per image by the evaluation protocol (rdsrn.evaluate.load_pair),
    keyed "dataset/stem"."""
    from rdsrn.evaluate import load_pair

    return {f"{p.parent.name}/{p.stem}": load_pair(p, scale) for p in images}


def _score(srs: dict[str, np.ndarray], pairs: dict[str, tuple[np.ndarray, np.ndarray, bool]],
           scale: int) -> dict[str, float]:
    """Y-PSNR per image by the evaluation protocol (rdsrn.evaluate.score_pair)."""
    from rdsrn.evaluate import score_pair

    return {k: score_pair(srs[k], hr, gray, scale, ssim=False)[0]
            for k, (hr, _, gray) in pairs.items()}


def _scale(path: Path) -> int:
    """A model file's scale from its embedded metadata (no runtime session)."""
    from .cli import _embedded_metadata

    return int(_embedded_metadata(path)["scale"])


def _command(runner: str, threads: int) -> tuple[list[str], dict[str, str]]:
    arch, cpu, _ = RUNNERS[runner]
    script = [str(Path(__file__).resolve()), "worker"]
    if cpu is None:
        return [sys.executable] + script, {}
    qemu = QEMU[arch]
    if qemu is None:
        raise SystemExit(f"int8_paths: qemu-{arch} not found (bash benchmarks/int8_paths_setup.sh)")
    if arch == "x86_64":
        return [qemu, "-cpu", cpu, sys.executable] + script, {}
    sysroot, site = AARCH64_ROOT / "sysroot", AARCH64_ROOT / "site"
    python = sysroot / "usr" / "bin" / "python3.11"
    if not python.exists() or not (site / "onnxruntime").is_dir():
        raise SystemExit(f"int8_paths: no arm64 Python under {AARCH64_ROOT}; run "
                         "bash benchmarks/int8_paths_setup.sh")
    shim = AARCH64_ROOT / "shim"
    _write_shim(shim)
    env = {"PYTHONHOME": str(sysroot / "usr"), "PYTHONPATH": f"{shim}:{site}",
           "QEMU_CPU": cpu}
    return [qemu, "-L", str(sysroot), str(python), "-S"] + script, env


def _write_shim(shim: Path) -> None:
    """A folder that makes `rdsrn.runtimes` importable from this checkout or install
    for a Python that does not have the package (the arm64 one)."""
    import rdsrn.runtimes

    pkg = shim / "rdsrn"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    link = pkg / "runtimes"
    target = Path(rdsrn.runtimes.__file__).resolve().parent
    if link.is_symlink() and link.resolve() != target:
        link.unlink()
    if not link.exists():
        link.symlink_to(target)


def run_runner(runner: str, files: list[Path], images: list[Path], work: Path,
               threads: int, log: Any = print, cached_only: bool = False) -> dict[str, Any]:
    """Results of one runner for `files`, one worker process per scale; cached under
    `work`. `cached_only`: no worker runs, only what the cache holds is returned."""
    from rdsrn.data import write_bytes_atomic

    results: dict[str, Any] = {}
    by_scale: dict[int, list[Path]] = {}
    for f in files:
        by_scale.setdefault(_scale(f), []).append(f)
    for scale, group in sorted(by_scale.items()):
        pairs = _pairs(images, scale)
        lrs = {k: lr for k, (_, lr, _) in pairs.items()}
        tag = hashlib.sha256("|".join(sorted(lrs)).encode()).hexdigest()[:10]
        todo = []
        for f in group:
            digest = hashlib.sha256(f.read_bytes()).hexdigest()[:12]
            cache = work / runner / f"{f.name}.{digest}.{tag}.json"
            if cache.is_file():
                results[f.name] = {**json.loads(cache.read_text()),
                                   "outputs": str(cache.with_suffix(".npz"))}
            else:
                todo.append((f, cache))
        if not todo or cached_only:
            continue
        out = work / runner / f"x{scale}.{tag}"
        out.mkdir(parents=True, exist_ok=True)
        inputs = out / "lr.npz"
        np.savez(inputs, **lrs)
        cmd, env = _command(runner, threads)
        expect = RUNNERS[runner][2]
        cmd += [str(inputs), str(out), "--threads", str(threads),
                *(["--expect", expect] if expect else []), *[str(f) for f, _ in todo]]
        log(f"[{runner}] x{scale}: {len(todo)} file(s) on {len(lrs)} image(s)")
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, **env})
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        seen = json.loads(lines[-1]) if lines else {}
        if proc.returncode != 0 or "error" in seen:
            err = seen.get("error") or (proc.stderr.strip().splitlines() or ["?"])[-1]
            log(f"[{runner}] failed: {err}")
            for f, _ in todo:
                results[f.name] = {"status": "failed", "error": err, "seen": seen}
            continue
        for f, cache in todo:
            srs = dict(np.load(out / f"{f.name}.npz"))
            row = {"status": "ok", "scale": scale, "seen": seen,
                   "psnr": _score(srs, pairs, scale),
                   "sr_sha256": {k: hashlib.sha256(v.tobytes()).hexdigest()[:16]
                                 for k, v in srs.items()}}
            buf = io.BytesIO()
            np.savez(buf, **srs)
            write_bytes_atomic(cache.with_suffix(".npz"), buf.getvalue())
            write_bytes_atomic(cache, json.dumps(row).encode())  # last: marks it done
            results[f.name] = {**row, "outputs": str(cache.with_suffix(".npz"))}
    return results


# ----------------------------------------------------------------------------- report
def summarize(results: dict[str, dict[str, Any]], fp32: dict[int, Any],
              targets: dict[int, float]) -> list[dict[str, Any]]:
    """One row per (runner, file): mean PSNR and ΔPSNR vs the FP32 file per dataset over
    the images it ran, and how its outputs compare with the native ones. `ok`: within the
    target on every image of Set5 and BSD68 (measured), or bit-identical to a native run
    that is, or `estimated`: every image within ROUNDING_DB of native and the native
    full-set Δ plus the mean Δ vs native within the target."""
    rows = []
    native = results.get("native", {})
    for runner, files in results.items():
        for name, r in sorted(files.items()):
            row: dict[str, Any] = {"runner": runner, "file": name, "status": r["status"]}
            if r["status"] != "ok":
                row.update(error=r.get("error"), ok=False)
                rows.append(row)
                continue
            scale = r["scale"]
            ref = fp32[scale]["psnr"]
            row.update(scale=scale, kernel_path=r["seen"]["kernel_path"],
                       cpu_features=r["seen"]["features"], versions=r["seen"]["versions"],
                       target_drop=targets[scale])
            within = True
            for d in DATASETS:
                keys = [k for k in r["psnr"] if k.startswith(d + "/")]
                if not keys:
                    continue
                psnr = float(np.mean([r["psnr"][k] for k in keys]))
                delta = psnr - float(np.mean([ref[k] for k in keys]))
                row[d] = {"images": len(keys), "psnr": round(psnr, 3), "delta": round(delta, 3),
                          "worst_image_delta": round(min(r["psnr"][k] - ref[k] for k in keys), 3)}
                within = within and delta >= -targets[scale]
            full = {k for k in ref} <= set(r["psnr"])
            row["all_images"] = full
            row["within_target"] = within
            nat = native.get(name, {})
            common = [k for k in r["sr_sha256"] if k in nat.get("sr_sha256", {})]
            if runner == "native" or not common:
                row["same_as_native"] = None
                row["ok"] = within and full
            else:
                same = all(r["sr_sha256"][k] == nat["sr_sha256"][k] for k in common)
                row["same_as_native"] = same
                dn = float(np.mean([r["psnr"][k] - nat["psnr"][k] for k in common]))
                row["delta_vs_native"] = round(dn, 3)
                row["max_diff_vs_native"] = _max_diff(r.get("outputs"), nat.get("outputs"),
                                                      common)
                # Rounding-level differences: float summation order in the float layers
                # of mixed files, onnxruntime's other requantization rounding on ARM.
                close = all(abs(r["psnr"][k] - nat["psnr"][k]) <= ROUNDING_DB
                            for k in common)
                nat_full = nat_deltas(native, name, ref)
                row["estimated"] = (not same and close and nat_full is not None)
                row["ok"] = ((within and full)
                             or (same and nat_ok(native, name, ref, targets[scale]))
                             or (row["estimated"] and all(
                                 d + dn >= -targets[scale] for d in nat_full.values())))
            rows.append(row)
    return rows


def nat_deltas(native: dict[str, Any], name: str, ref: dict[str, float]
               ) -> dict[str, float] | None:
    """Mean ΔPSNR per dataset of the native run of `name`, if it covered every image."""
    r = native.get(name, {})
    if r.get("status") != "ok" or not set(ref) <= set(r["psnr"]):
        return None
    return {d: float(np.mean([r["psnr"][k] - ref[k] for k in ref if k.startswith(d + "/")]))
            for d in DATASETS}


def nat_ok(native: dict[str, Any], name: str, ref: dict[str, float], target: float) -> bool:
    """The native run of `name` covered every image and is within `target` per dataset."""
    deltas = nat_deltas(native, name, ref)
    return deltas is not None and all(d >= -target for d in deltas.values())


def _max_diff(a: str | None, b: str | None, keys: list[str]) -> int | None:
    """Largest |difference| (uint8 levels) between two cached output sets on `keys`."""
    if not a or not b or not Path(a).is_file() or not Path(b).is_file():
        return None
    x, y = np.load(a), np.load(b)
    return int(max(np.abs(x[k].astype(np.int16) - y[k].astype(np.int16)).max() for k in keys))


def markdown(rows: list[dict[str, Any]], command: str, host: dict[str, Any],
             not_run: dict[str, list[str]] | None = None) -> str:
    from rdsrn.runtimes.cpu import KERNEL_PATHS

    lines = ["# INT8 kernel-path accuracy matrix", "",
             f"Command: `{command}`", "",
             f"Host: {host['cpu']} ({host['kernel_path']}; features "
             f"{', '.join(host['features'])}); "
             f"emulators: {host['emulators']}.", "",
             "ΔPSNR (dB, Y channel) of each bundled INT8 file against the bundled FP32 ONNX "
             "file of the same scale, run natively on the same images; *n* = images. "
             "*same as native*: every output bit-identical to the native run, so the "
             "runner's PSNR on all images is the native one; otherwise the largest "
             "difference in uint8 levels. *ok*: within the target (x2/x3 0.10 dB, x4 "
             "0.05 dB) on all of Set5 and BSD68: measured, or by being the same as native, "
             f"or *est.*: every image within {ROUNDING_DB} dB of native (rounding, not "
             "saturation) and the native full-set Δ plus the Δ vs native still within. "
             "Accuracy only: no emulated timings.", "",
             f"The native rows, and the full-set figures the emulated rows inherit from "
             f"them, hold for this host's INT8 kernel class only (`{host['kernel_path']}`: "
             f"{KERNEL_PATHS.get(host['kernel_path'], 'not characterised')}); on another "
             "class run `--runners native` there.", "",
             "| runner | kernel path seen | file | Set5 Δ (n) | BSD68 Δ (n) | worst image Δ "
             "| Δ vs native | same as native (max diff, levels) | ok |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['runner']} | – | {r['file']} | failed: {r.get('error')} "
                         "|||||| **no** |")
            continue
        cells, worst = [], []
        for d in DATASETS:
            v = r.get(d)
            cells.append(f"{v['delta']:+.3f} ({v['images']})" if v else "–")
            if v:
                worst.append(v["worst_image_delta"])
        same = {True: "yes", False: "no", None: "–"}[r["same_as_native"]]
        if r.get("max_diff_vs_native") is not None and not r["same_as_native"]:
            same += f" ({r['max_diff_vs_native']})"
        dn = f"{r['delta_vs_native']:+.3f}" if "delta_vs_native" in r else "–"
        ok = ("yes (est.)" if r.get("estimated") else "yes") if r["ok"] else "**no**"
        lines.append(f"| {r['runner']} | {r['kernel_path']} | {r['file']} | {cells[0]} | "
                     f"{cells[1]} | {min(worst):+.3f} | {dn} | {same} | {ok} |")
    versions: dict[str, str] = {}
    for r in rows:
        if r["status"] == "ok":
            versions.setdefault(r["runner"], ", ".join(
                f"{k} {v}" for k, v in sorted(r["versions"].items())))
    lines += ["", "Runtimes each runner used: " + "; ".join(
        f"{k}: {v}" for k, v in versions.items()) + "."]
    if not_run:
        lines += ["", "Not run (no result in the cache): " + "; ".join(
            f"{r}: {', '.join(v)}" for r, v in not_run.items()) + "."]
    lines += ["", "Kernel paths:", ""]
    lines += [f"- `{k}`: {v}" for k, v in KERNEL_PATHS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        w = argparse.ArgumentParser(prog="int8_paths.py worker")
        w.add_argument("inputs", type=Path)
        w.add_argument("out_dir", type=Path)
        w.add_argument("models", nargs="+")
        w.add_argument("--threads", type=int, default=1)
        w.add_argument("--expect")
        a = w.parse_args(argv[1:])
        return worker(a.inputs, a.models, a.out_dir, a.threads, a.expect)
    from concurrent.futures import ThreadPoolExecutor

    from rdsrn.data import write_bytes_atomic
    from rdsrn.eval_cli import data_root
    from rdsrn.runtimes.bundled import MODELS_DIR, bundled_models
    from rdsrn.export.bundle import INT8_TARGET_DROP
    from rdsrn.runtimes.cpu import cpu_features, kernel_path

    p = argparse.ArgumentParser(prog="python -m rdsrn.benchmarks.int8_paths",
                                description=__doc__.splitlines()[0])
    p.add_argument("--runners", default=",".join(RUNNERS),
                   help=f"comma-separated, of: {', '.join(RUNNERS)}")
    p.add_argument("--files", default=None,
                   help="comma-separated model files (default: every bundled INT8 file)")
    p.add_argument("--full", action="store_true", help="all of Set5 and BSD68 on every runner")
    p.add_argument("--images", default=",".join(DEFAULT_IMAGES),
                   help="dataset/stem list for the default (not --full) run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="runners at once")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rdsrn-int8-paths",
                   help="cache of outputs: an interrupted run resumes from it")
    p.add_argument("--name", default="int8_paths", help="report file name (no suffix)")
    p.add_argument("--cached-only", action="store_true",
                   help="run nothing: report what the cache under --work holds")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    unknown = [r for r in runners if r not in RUNNERS]
    if unknown:
        p.error(f"unknown runner {unknown[0]!r}")
    files = ([Path(f) for f in args.files.split(",")] if args.files else
             [f for f in bundled_models() if "_int8" in f.name])
    full = _images(data_root(), True, ())
    images = full if args.full else _images(data_root(), False, tuple(args.images.split(",")))
    scales = sorted({_scale(f) for f in files})
    fp32_files = [MODELS_DIR / f"rdsrn_x{s}_fp32.onnx" for s in scales]
    fp32 = run_runner("native", fp32_files, full, args.work, args.threads)
    fp32_by_scale = {r["scale"]: r for r in fp32.values()}
    results = {"native": run_runner("native", files, full, args.work, args.threads)}
    emulated = [r for r in runners if r != "native"]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {r: pool.submit(run_runner, r, files, images, args.work, args.threads,
                                  cached_only=args.cached_only)
                   for r in emulated}
        results.update({r: f.result() for r, f in futures.items()})
    rows = summarize(results, fp32_by_scale, INT8_TARGET_DROP)
    not_run = {r: sorted(f.name for f in files if f.name not in results.get(r, {}))
               for r in runners}
    not_run = {r: v for r, v in not_run.items() if v}
    from .device_bench import machine_info

    machine, features, _ = cpu_features()
    host = {"cpu": machine_info()["cpu"], "features": sorted(features),
            "kernel_path": kernel_path(machine, features), "emulators": _emulators()}
    command = "python -m rdsrn.benchmarks.int8_paths " + " ".join(argv)
    doc = {"command": command.strip(), "host": host, "images": [str(i) for i in images],
           "rows": rows, "not_run": not_run}
    args.out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(args.out / f"{args.name}.json", (json.dumps(doc, indent=1) + "\n").encode())
    text = markdown(rows, doc["command"], host, not_run)
    write_bytes_atomic(args.out / f"{args.name}.md", text.encode())
    bad = [r for r in rows if not r["ok"]]
    print(text)
    print(f"wrote {args.out / args.name}.{{json,md}}")
    return 1 if bad else 0


def _emulators() -> str:
    out = []
    for path in QEMU.values():
        if path:
            text = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
            out.append(text.splitlines()[0] if text else path)
    return "; ".join(out) or "none"


if __name__ == "__main__":
    raise SystemExit(main())
