"""`rdsrn bench`: latency / accuracy table across models, formats, precisions, threads.

    rdsrn bench --suite full --pause-pid /work/train.pid     # what the README records
    rdsrn bench --models rdsrn_x4 --formats tflite --precisions fp32,int8 --threads 2
    rdsrn bench --artifact my.tflite --target ssh://pi@raspberrypi.local
    rdsrn bench --artifact my_int8.tflite --target adb:SERIAL --benchmark-binary ./benchmark_model
    rdsrn bench --suite device        # the bundled models, numpy + one runtime (no torch)

Results go to ./rdsrn-bench/<device>/ (in the current folder) unless --out is given.

Heavy imports (torch, runtimes) happen inside run(), never at import.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import sys
from pathlib import Path
from typing import Any

from rdsrn.runtimes.errors import UserError

# benchmarks/suites.py's SUITES (not imported here: that pulls numpy into `rdsrn --help`)
SUITE_NAMES = ("quick", "formats", "table1", "table2", "full", "device")

# Default results folder, relative to the current folder (never the installed package).
DEFAULT_OUT = Path("rdsrn-bench")
DEFAULT_DATA = "Set5"


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to measure")
    g.add_argument("--suite", choices=SUITE_NAMES,
                   help="a named set of cases (see benchmarks/README.md); default: the "
                        "cases given by --models/--formats/..., else RDSRN x4 in PyTorch, "
                        "ONNX, TFLite and bicubic ('device' when PyTorch is not installed)")
    g.add_argument("--models", help="comma list of registry names (e.g. rdsrn_x4,carn_x4)")
    g.add_argument("--formats", help="comma list of pytorch, onnx, tflite, bicubic, upscaler")
    g.add_argument("--precisions", help="comma list of fp32, bf16, fp16, int8 (those a "
                   "format supports)")
    g.add_argument("--threads", help="comma list of thread counts (default: 1 and all cores)")
    g.add_argument("--input", default=None, help="LR input size(s) WxH, comma list "
                   "(default 320x180 -> 1280x720 at x4; with --suite: replaces the "
                   "suite's size, e.g. for a smoke run)")
    g.add_argument("--artifact", action="append", default=[],
                   help="an exported .onnx/.tflite file or a bundled model name such as "
                        "rdsrn_x4_int8.tflite to measure (repeatable)")
    g.add_argument("--weights", metavar="FILE|NAME=FILE[,NAME=FILE]",
                   help="trained weights: FILE for the RDSRN rows, or per network, e.g. "
                        "rlfn_x4=rlfn_x4.pth,imdn_x4=IMDN_x4.pth (official checkpoints or "
                        "your own; default: shipped weights, else seeded random init, "
                        "labelled, speed only)")
    g = p.add_argument_group("how")
    g.add_argument("--runs", type=int, default=20, help="timed runs, at least (default 20)")
    g.add_argument("--warmup", type=int, default=3, help="untimed runs after the first")
    g.add_argument("--min-time", type=float, default=0.0, help="seconds of timed runs, at least")
    g.add_argument("--max-time", type=float, default=30.0, help="stop a slow row's timed "
                   "runs after this many seconds (>= 3 runs; default 30)")
    g.add_argument("--data", default=None, help="accuracy test set(s): Set5, Set14, "
                   "BSD68 (under $RDSRN_DATA/test) or folders, comma list (default Set5 "
                   "when present; without it no PSNR is measured)")
    g.add_argument("--accuracy", choices=("auto", "always", "never"), default="auto",
                   help="auto: PSNR only where trained weights exist")
    g.add_argument("--no-export", action="store_true",
                   help="do not export missing artifacts (those rows become errors)")
    g.add_argument("--cache-dir", help="where exported artifacts are kept")
    g.add_argument("--pause-pid", metavar="PIDFILE",
                   help="SIGSTOP this process (e.g. a training job) while each row is "
                        "timed, SIGCONT right after")
    g.add_argument("--idle-threshold", type=float, default=0.15, help="with --pause-pid: "
                   "wait before each row until other CPU load is below this fraction")
    g.add_argument("--idle-wait", type=float, default=60.0, help="... for at most this "
                   "many seconds (the job runs meanwhile), then measure anyway")
    g.add_argument("--seed", type=int, default=0, help="torch seed of random weights")
    g = p.add_argument_group("where")
    g.add_argument("--target", default="local", help="local | ssh://user@host[:port] | "
                   "adb | adb:SERIAL")
    g.add_argument("--benchmark-binary", help="adb: path of LiteRT's benchmark_model "
                   "(Android arm64 build)")
    g.add_argument("--delegate", default="xnnpack",
                   choices=("xnnpack", "gpu", "nnapi", "npu", "none"),
                   help="adb: delegate flag for benchmark_model")
    g.add_argument("--benchmark-tool", choices=("tflite", "litert"), help="adb: which "
                   "benchmark_model --benchmark-binary is: TensorFlow Lite's tools/benchmark "
                   "(default) or LiteRT's litert/tools (CompiledModel; default for npu)")
    g.add_argument("--gpu-precision", choices=("fp16", "fp32"), default="fp16",
                   help="adb gpu: let the GPU compute in fp16 (default) or not")
    g.add_argument("--gpu-backend", choices=("cl", "gl", "webgpu"),
                   help="adb gpu: OpenCL / OpenGL ES (tflite tool), webgpu (litert tool)")
    g.add_argument("--npu-dispatch-dir", metavar="DEVICE_DIR", help="adb npu: folder on "
                   "the device with libLiteRtDispatch_<vendor>.so")
    g.add_argument("--npu-compiler-plugin-dir", metavar="DEVICE_DIR", help="adb npu: "
                   "folder on the device with the compiler plugin (JIT; not for AOT files)")
    g.add_argument("--require-full-delegation", action="store_true",
                   help="adb gpu/npu, litert tool: fail instead of CPU fallback")
    g.add_argument("--profile", action="store_true", help="per-op profile of the TFLite "
                   "rows (local: benchmarks/tflite_profile.py; adb: benchmark_model's)")
    g.add_argument("--remote-python", default="python3", help="ssh: Python on the host")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="results folder (default ./rdsrn-bench/<device>)")
    g.add_argument("--name", help="file name stem (default: the suite name or 'bench')")
    g.add_argument("--no-write", action="store_true", help="print the table only")


def _data_dirs(spec: str | None, log: Any = print) -> list[Path]:
    """The accuracy folders; None means Set5 when it is present (a device seldom has the
    test sets: then no PSNR, said in one line)."""
    from rdsrn.export.common import data_dir

    if spec is None:
        default = data_dir() / "test" / DEFAULT_DATA
        if default.is_dir():
            return [default]
        log(f"bench: no {DEFAULT_DATA} test set ({default}); PSNR not measured "
            "(set RDSRN_DATA or pass --data FOLDER)")
        return []
    out = []
    for item in _csv(spec):
        p = Path(item)
        if not p.is_dir():
            p = data_dir() / "test" / item
        if not p.is_dir():
            raise UserError(f"test set not found: {item}")
        out.append(p)
    return out


def build_cases(args: argparse.Namespace, cores: int) -> list[Any]:
    from . import device_bench as db
    from .harness import FORMAT_PRECISIONS, Case, have
    from .suites import device_artifacts, suite_cases

    try:
        sizes = [db.parse_size(s) for s in _csv(args.input or "320x180")]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    threads = [int(t) for t in _csv(args.threads)] if args.threads else sorted({1, cores})
    if any(t < 1 for t in threads):
        raise UserError("threads must be >= 1")
    cases: list[Case] = []
    for path in args.artifact:
        cases += _artifact_cases(_model_file(path), threads, sizes)
    explicit = args.models or args.formats or args.precisions
    suite_name = args.suite
    if not suite_name and not explicit and not args.artifact and not have("torch"):
        suite_name = "device"
        print("bench: PyTorch is not installed: measuring the bundled models "
              "(--suite device)", file=sys.stderr)
    if suite_name == "device":
        paths = device_artifacts()
        if not paths:
            raise UserError("no bundled x4 model that an installed runtime can run: "
                            "pip install 'rdsrn[litert]' or 'rdsrn[onnx]'")
        for path in paths:
            cases += _artifact_cases(path, threads, sizes)
        cases += [Case("bicubic", "bicubic", "uint8", t, hw) for t in threads for hw in sizes]
    elif suite_name:
        suite = suite_cases(suite_name, cores)
        for c in suite:
            if args.threads:
                c.threads = threads[-1]
            if args.input:
                c.input_hw = sizes[0]
        cases += suite
    elif explicit or not args.artifact:
        if not have("torch"):
            raise UserError("--models/--formats need PyTorch (model registry, export): "
                            "pip install 'rdsrn[train]'; measure files with --artifact "
                            "FILE or the bundled ones with --suite device")
        from rdsrn.models import list_models, unknown_name_message

        models = _csv(args.models) or ["rdsrn_x4"]
        formats = _csv(args.formats) or ["pytorch", "onnx", "tflite", "bicubic"]
        for m in models:
            if m != "bicubic" and m not in list_models():
                raise UserError(unknown_name_message("model", m, list_models()))
        for f in formats:
            if f not in FORMAT_PRECISIONS:
                raise UserError(f"unknown format {f!r}; choices: {', '.join(FORMAT_PRECISIONS)}")
        wanted = _csv(args.precisions)
        for m in models:
            for f in formats:
                if f == "bicubic":
                    continue
                for prec in FORMAT_PRECISIONS[f]:
                    if wanted and prec not in wanted:
                        continue
                    for t in threads:
                        for hw in sizes:
                            cases.append(Case(m, f, prec, t, hw))
        if "bicubic" in formats:
            cases += [Case("bicubic", "bicubic", "uint8", t, hw) for t in threads for hw in sizes]
    if not cases:
        raise UserError("nothing to measure (check --models/--formats/--precisions)")
    return cases


def _model_file(spec: str) -> Path:
    """An --artifact value: a file, or a bundled model name (rdsrn_x4_int8.tflite)."""
    from rdsrn.runtimes.bundled import resolve_model

    path = Path(spec).expanduser()
    return path if path.is_file() else resolve_model(spec)


def _embedded_metadata(path: Path) -> dict[str, Any]:
    """A model file's embedded rdsrn metadata, read without torch: TFLite in pure
    Python; ONNX with the onnx package, else an onnxruntime session. {} if none."""
    from rdsrn.runtimes.backends import (_read_tflite_meta, detect_format, openvino_metadata,
                                         parse_metadata)
    from rdsrn.runtimes.formats import METADATA_KEY

    fmt = detect_format(path)
    if fmt == "tflite":
        raw = _read_tflite_meta(path)
    elif fmt == "openvino":
        import openvino as ov

        raw = openvino_metadata(ov.Core().read_model(str(path)))
    else:
        try:
            import onnx
        except ImportError:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            session = ort.InferenceSession(str(path), sess_options=opts,
                                           providers=["CPUExecutionProvider"])
            raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        else:
            proto = onnx.load(str(path), load_external_data=False)
            raw = {p.key: p.value for p in proto.metadata_props}.get(METADATA_KEY)
    return parse_metadata(raw, path, fmt)


def _artifact_cases(path: Path, threads: list[int], sizes: list[tuple[int, int]]) -> list[Any]:
    """Cases for a given artifact: model/precision from its embedded metadata."""
    from .harness import Case, have

    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    fmt = {".tflite": "tflite", ".xml": "openvino"}.get(path.suffix.lower(), "onnx")
    meta: dict[str, Any] = {}
    try:
        meta = _embedded_metadata(path)
    except Exception as exc:  # unlabelled rows would be reported as the wrong model
        raise UserError(f"{path}: no readable rdsrn metadata ({exc}); bench measures "
                        "files made by `rdsrn export`") from None
    fmt = str(meta.get("format") or fmt)
    model_meta = meta.get("model")
    name = model_meta.get("name") if isinstance(model_meta, dict) else model_meta
    overrides: dict[str, Any] = {}
    if have("torch"):  # registry names and architecture overrides are PyTorch code
        from rdsrn.models import create_model, list_models

        name = name if isinstance(name, str) and name in list_models() else "rdsrn_x4"
        config = model_meta.get("config") if isinstance(model_meta, dict) else None
        if isinstance(config, dict):  # only what differs from the registry's architecture
            default = getattr(create_model(name), "config", {})
            overrides = {k: v for k, v in config.items() if k in default and default[k] != v}
    else:
        name = name if isinstance(name, str) and name else f"rdsrn_x{meta.get('scale', 4)}"
    return [Case(name, fmt, str(meta.get("precision", "fp32")), t, hw, overrides,
                 artifact=str(path), label=path.name, scale=int(meta.get("scale", 4)),
                 weights_sha256=meta.get("weights_sha256"))
            for t in threads for hw in sizes]


def run(args: argparse.Namespace) -> int:
    from . import device_bench as db
    from . import report
    from .harness import Options, have, run_cases
    from .remote import parse_target

    kind, detail = parse_target(args.target)
    local = db.machine_info()
    cases = build_cases(args, local["cores"])
    opts = Options(warmup=args.warmup, runs=args.runs, min_time=args.min_time,
                   max_time=args.max_time, export=not args.no_export, weights=args.weights,
                   seed=args.seed, accuracy=args.accuracy,
                   accuracy_data=[] if args.accuracy == "never" else
                   _data_dirs(args.data, lambda m: print(m, file=sys.stderr)),
                   pause_pid_file=args.pause_pid, idle_threshold=args.idle_threshold,
                   idle_wait=args.idle_wait,
                   log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.cache_dir:
        opts.cache_dir = Path(args.cache_dir)
    if kind == "local":
        machine = local
        rows = run_cases(cases, opts, machine)
    else:
        from .remote_run import run_remote

        machine, rows = run_remote(kind, detail, cases, opts, args, local)
    report.flag_interference(rows)
    doc = make_doc(args, machine, rows, opts)
    for line in report.table_lines(rows):
        print(line)
    for line in report.legend_lines(rows):
        print(line)
    for k, v in doc["peaks"].items():
        print(f"peak {k}: {v}")
    if args.suite == "device":
        print(default_choice_line(machine))
    if not args.no_write:
        out = Path(args.out) if args.out else DEFAULT_OUT / report.device_slug(machine)
        name = args.name or args.suite or "bench"
        paths = report.write_results(doc, out, name)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
        if "png" not in paths and not have("matplotlib"):
            print("bench: no latency-vs-PSNR plot: matplotlib is not installed "
                  "(pip install 'rdsrn[bench]')", file=sys.stderr)
        if (args.profile or args.suite == "full") and kind == "local":
            for path in _profile_tflite_rows(rows, opts, out, name):
                print(f"wrote {path}")
        if args.suite in ("full", "table1", "table2") and kind == "local":
            from .paper_tables import write_paper_tables

            # beside the device folders from a default-location run
            target = (DEFAULT_OUT if not args.out else out) / "paper_tables.md"
            path = write_paper_tables(rows, machine, target,
                                      source=str(paths["json"]), command=doc["command"])
            print(f"wrote {path}")
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        print(f"bench: {len(failed)} of {len(rows)} row(s) failed (see the status column)",
              file=sys.stderr)
    if rows and len(failed) == len(rows):
        return 1  # nothing measured
    return 0


def default_choice_line(machine: dict[str, Any]) -> str:
    """Which bundled x4 file `Upscaler()` / `rdsrn upscale` pick on `machine`, and why
    (the kernel path from its CPU flags; runtimes.bundled.default_choice)."""
    from rdsrn.runtimes.bundled import default_choice
    from rdsrn.runtimes.errors import UserError

    from .report import cpu_class

    kp = cpu_class(machine)
    try:
        path, _, why = default_choice(4, kernel_path=kp)
    except UserError as exc:
        return f"Default file on this CPU ({kp}): none ({exc})."
    return f"Default file on this CPU ({kp}): {path.name}: {why}."


def make_doc(args: argparse.Namespace, machine: dict[str, Any], rows: list[dict[str, Any]],
             opts: Any) -> dict[str, Any]:
    from . import device_bench as db

    precisions = sorted({r["precision"] for r in rows if r.get("format") != "bicubic"})
    threads = sorted({int(r["threads"]) for r in rows if r.get("threads")})
    peaks = {}
    for prec in precisions:
        for t in threads:
            peaks[f"{prec} x{t} thread(s)"] = db.peak_gmacs(machine, prec, t)["assumptions"]
    notes = []
    if opts.pause_pid_file:
        notes.append(f"The background job in {opts.pause_pid_file} was paused (SIGSTOP) "
                     "during every timed row; background_cpu_before records the other "
                     "CPU load measured right before each row.")
    notes.append("Rows with weights=random were measured for speed only (no trained "
                 "weights for that architecture/configuration).")
    if args.suite == "device":
        notes.append(default_choice_line(machine))
    return {
        "name": args.name or args.suite or "bench",
        "command": "rdsrn " + " ".join(shlex.quote(a) for a in getattr(args, "argv", None) or sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "target": args.target,
        "machine": machine,
        "peaks": peaks,
        "notes": notes,
        "options": {"runs": opts.runs, "warmup": opts.warmup, "min_time": opts.min_time,
                    "max_time": opts.max_time, "accuracy": opts.accuracy,
                    "accuracy_data": [str(p) for p in opts.accuracy_data]},
        "rows": rows,
    }


def _profile_tflite_rows(rows: list[dict[str, Any]], opts: Any, out: Path, name: str
                         ) -> list[Path]:
    """Per-op profiles of each measured TFLite artifact (once per file and thread
    count), each in its own subprocess with the background job paused."""
    import json
    import subprocess

    from . import device_bench as db
    from .harness import SUBPROCESS_CWD, paused

    done: set[tuple[str, int]] = set()
    profiles = []
    for r in rows:
        key = (str(r.get("artifact")), int(r.get("threads") or 1))
        if r.get("format") != "tflite" or r.get("status") != "ok" or key in done:
            continue
        done.add(key)
        tmp = out / f".profile_{len(done)}.json"
        argv = [opts.python, "-m", "rdsrn.benchmarks.tflite_profile", key[0], "--input",
                r["input"], "--threads", str(key[1]), "--runs", str(max(3, opts.runs // 4)),
                "--json", str(tmp)]
        with paused(opts.pause_pid_file, opts.log):
            p = subprocess.run(argv, capture_output=True, text=True, cwd=str(SUBPROCESS_CWD))
        if p.returncode != 0 or not tmp.is_file():
            opts.log(f"bench: profile of {key[0]} failed: {db.one_line(RuntimeError(p.stderr.strip().splitlines()[-1] if p.stderr.strip() else 'no output'))}")
            continue
        prof = json.loads(tmp.read_text())
        tmp.unlink()
        prof["label"] = f"{r['model']} {r['precision']}"
        profiles.append(prof)
    if not profiles:
        return []
    from .tflite_profile import markdown

    text = "# Per-op TFLite profiles\n\n" + "\n".join(
        f"{p['label']}:\n\n{markdown(p)}" for p in profiles)
    md = out / f"{name}_profile.md"
    js = out / f"{name}_profile.json"
    for path, content in ((md, text), (js, json.dumps(profiles, indent=1))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(path)
    return [md, js]
