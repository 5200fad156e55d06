"""Measurements of the runtime layer (runtimes/), written as markdown under
benchmarks/results/:

    python -m rdsrn.benchmarks.runtime_layer tiling   --model M.onnx [--input-scale 2]
        PSNR between tiled and whole-image output on Set5 / BSD68 per (tile, overlap)
        -> runtime_tiling.md
    python -m rdsrn.benchmarks.runtime_layer seams    --model M.onnx
        the same on strips exactly two tiles long (narrowest overlap) -> appended
    python -m rdsrn.benchmarks.runtime_layer overhead --model M [--model M2 ...]
        Upscaler.upscale vs the bare interpreter call on the same input
        -> runtime_overhead.md
    python -m rdsrn.benchmarks.runtime_layer ab --model A --model B [...] --out NAME.md
        same-run A/B latency of two or more files (bare interpreter calls, blocks of
        runs alternating between the files, so load drift hits every file alike)

Timings pause the background training run (kill -STOP <pid in /work/train.pid>) and
always resume it (kill -CONT), also on errors and Ctrl-C. Only numpy, OpenCV and the
runtime are used (no torch). Peak memory is measured by benchmarks/runtime_memory.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("RDSRN_DATA", REPO.parent / "shared" / "data"))
TRAIN_PID = Path(os.environ.get("RDSRN_TRAIN_PID", "/work/train.pid"))


@contextlib.contextmanager
def training_paused() -> Iterator[None]:
    """SIGSTOP the background training process for the duration; always SIGCONT."""
    pid = None
    if TRAIN_PID.is_file():
        try:
            pid = int(TRAIN_PID.read_text().strip())
            os.kill(pid, signal.SIGSTOP)
        except (ValueError, ProcessLookupError, PermissionError):
            pid = None
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def resume_and_raise(signum, frame):  # pragma: no cover - interactive
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        raise KeyboardInterrupt

    for s in old:
        signal.signal(s, resume_and_raise)
    try:
        if pid is not None:
            time.sleep(1.0)  # let the cores go quiet
        yield
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for s, h in old.items():
            signal.signal(s, h)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores available, {platform.system()}"


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def model_label(up) -> str:
    return f"{up.model_path.name} ({up.format} {up.precision}, {up.backend})"


# -- tiling ------------------------------------------------------------------------------

def cmd_tiling(args: argparse.Namespace) -> None:
    import cv2

    from rdsrn.runtimes import Upscaler

    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    whole = Upscaler(args.model, tile=0, threads=args.threads)
    tilers = {c: Upscaler(args.model, tile=c[0], overlap=c[1], threads=args.threads)
              for c in configs}
    rows = []
    for name in args.sets.split(","):
        folder = DATA / "test" / name
        files = sorted(folder.glob("*.png"))[:args.limit or None]
        per_cfg: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
        npx = 0
        for f in files:
            img = read_rgb(f)
            if args.input_scale != 1:
                h, w = img.shape[0] // args.input_scale, img.shape[1] // args.input_scale
                img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
            npx += img.shape[0] * img.shape[1]
            ref = whole.upscale(img)
            for c, up in tilers.items():
                per_cfg[c].append(psnr(up.upscale(img), ref))
            print(f"{name}/{f.name} {img.shape[1]}x{img.shape[0]}: "
                  + ", ".join(f"{c[0]}/{c[1]} {per_cfg[c][-1]:.2f}" for c in configs),
                  flush=True)
        for c in configs:
            v = [x for x in per_cfg[c] if np.isfinite(x)]  # inf: the image fits one tile
            rows.append((name, len(files), npx / len(files), c, len(v),
                         min(v) if v else float("inf"), statistics.mean(v) if v else float("inf")))
    lines = [
        "# Tiled vs whole-image output (runtime layer)",
        "",
        f"Model: {model_label(whole)}; weights: {args.weights_note}.",
        f"Inputs: {'the first %d images' % args.limit if args.limit else 'every image'} of each set, {'the HR image itself' if args.input_scale == 1 else f'downscaled 1/{args.input_scale} (INTER_AREA)'}"
        " as the LR input, so that images span several tiles. PSNR (RGB, 8-bit) between "
        "the tiled output and one whole-image pass; CCA pools over its whole input, so "
        "they can never be identical. Tiles overlap by at least `overlap` LR pixels, "
        "with linear-ramp blending across the overlap.",
        "",
        "`tiled`: images larger than one tile (the others are identical to the whole-image "
        "pass); min and mean are over those.",
        "",
        "| set | images | mean LR pixels | tile | overlap | tiled | min PSNR dB | mean PSNR dB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, n, px, c, k, lo, mean in rows:
        lines.append(f"| {name} | {n} | {px:,.0f} | {c[0]} | {c[1]} | {k} | {lo:.2f} | "
                     f"{mean:.2f} |")
    _write_report(args, lines, "tiling", f"Machine: {machine()}.")


def cmd_seams(args: argparse.Namespace) -> None:
    """Worst case for a seam: a strip exactly two tiles long, so the tiles overlap by
    exactly `overlap` (natural images mostly get wider overlaps from even spreading)."""
    from rdsrn.runtimes import Upscaler

    configs = [tuple(int(v) for v in c.split(":")) for c in args.configs.split(",")]
    whole = Upscaler(args.model, tile=0, threads=args.threads)
    files = []
    for name in args.sets.split(","):
        files += sorted((DATA / "test" / name).glob("*.png"))[:args.limit or None]
    rows = []
    for tile, overlap in configs:
        up = Upscaler(args.model, tile=tile, overlap=overlap, threads=args.threads)
        length = 2 * tile - overlap
        vals = []
        for f in files:
            img = read_rgb(f)
            for strip in (img[:args.width, :length], img[:length, :args.width]):
                if max(strip.shape[:2]) == length:
                    strip = np.ascontiguousarray(strip)
                    vals.append(psnr(up.upscale(strip), whole.upscale(strip)))
        rows.append((tile, overlap, length, len(vals), min(vals), statistics.mean(vals)))
        print(rows[-1], flush=True)
    lines = [
        "",
        "## Worst-case seams",
        "",
        f"Strips {args.width} px wide and exactly `2 * tile - overlap` long (two tiles, "
        "overlapping by exactly `overlap`), cut horizontally and vertically from "
        f"{len(files)} images of {args.sets} (first {args.limit or 'all'} per set); same "
        "model; PSNR of tiled vs one pass.",
        "",
        "| tile | overlap | strip length | strips | min PSNR dB | mean PSNR dB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for tile, overlap, length, n, lo, mean in rows:
        lines.append(f"| {tile} | {overlap} | {length} | {n} | {lo:.2f} | {mean:.2f} |")
    lines += ["", f"Command: `python -m rdsrn.benchmarks.runtime_layer seams {' '.join(sys.argv[2:])}`",
              ""]
    out = RESULTS / args.out
    with open(out, "a") as fh:
        fh.write("\n".join(lines))
    print(f"appended to {out}")


def _write_report(args: argparse.Namespace, lines: list[str], cmd: str, footer: str,
                  echo: bool = False) -> None:
    """RESULTS/args.out: `lines`, the --note, the command line and `footer` (the machine)."""
    if args.note:
        lines += ["", args.note]
    lines += ["", f"Command: `python -m rdsrn.benchmarks.runtime_layer {cmd} "
                  f"{' '.join(sys.argv[2:])}`", footer, ""]
    out = RESULTS / args.out
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)  # atomic: an interrupted write leaves the old report whole
    if echo:
        print("\n".join(lines))
    print(f"wrote {out}")


# -- overhead ----------------------------------------------------------------------------

def _raw_runner(up, img: np.ndarray):
    """The bare interpreter call on an already prepared tensor (what an app would do
    with no runtime layer), on the Upscaler's own session / interpreter so that both
    sides run on the same instance. Call after one `up.upscale(img)` (which allocates
    the interpreter for this shape). Returns a zero-argument callable."""
    b = up._backend
    x = (img.astype(np.float32) / 255.0)[None]
    t = b._to_model(x)
    if b.name == "onnxruntime":
        sess, name, out = b.session, b._in, b._out
        return lambda: sess.run([out], {name: t})
    interp = b.interpreter
    if b._in_q is not None:
        from rdsrn.runtimes.backends import quantize
        t = quantize(t, *b._in_q, b._in_dtype)
    assert b._shape == t.shape, "upscale once first"

    def call():
        interp.set_tensor(b._in_index, t)
        interp.invoke()
        return interp.get_tensor(b._out_index)

    return call


def _time(fn, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def cmd_overhead(args: argparse.Namespace) -> None:
    from rdsrn.runtimes import Upscaler

    src = read_rgb(DATA / "test" / "Set5" / "baby.png")
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.size]
    rows = []
    with training_paused():
        for model in args.model:
            for w, h in sizes:
                img = np.ascontiguousarray(src[:h, :w])
                layer = Upscaler(model, tile=0, threads=args.threads)
                layer.upscale(img)
                raw = _raw_runner(layer, img)
                tiled = Upscaler(model, threads=args.threads)
                fns = (raw, lambda: layer.upscale(img), lambda: tiled.upscale(img))
                times: list[list[float]] = [[], [], []]
                # Blocks of runs, blocks alternating: runtimes' worker threads spin for a
                # while after a call, so the first run of a block is discarded.
                for _ in range(args.rounds):
                    for k, fn in enumerate(fns):
                        fn()
                        times[k] += _time(fn, args.reps)
                t_raw, t_layer, t_tiled = times
                b_raw, b_layer, b_tiled = (min(t) for t in (t_raw, t_layer, t_tiled))
                m_raw, m_layer = statistics.median(t_raw), statistics.median(t_layer)
                rows.append((model_label(layer), f"{w}x{h}", b_raw, b_layer,
                             100 * (b_layer / b_raw - 1), 100 * (m_layer / m_raw - 1),
                             tiled.tile, tiled.overlap, b_tiled, layer.threads))
                print(rows[-1], flush=True)
    lines = [
        "# Runtime-layer overhead vs the bare interpreter call",
        "",
        "`raw`: the interpreter alone on a tensor prepared beforehand (ORT `session.run`; "
        "LiteRT `set_tensor` + `invoke` + `get_tensor`). `Upscaler`: "
        "`Upscaler(model, tile=0).upscale(uint8 RGB image)` on the same image, i.e. raw "
        "plus uint8 -> float, layout change, (de)quantization, clamp, rounding and the "
        "output copy; both on the same session / interpreter. Times are the best of "
        "alternating blocks of runs (first run of each block discarded), robust to other "
        "jobs on the machine; the median-based overhead is shown too. Training paused. "
        "Target: overhead <= 5 %. The last columns are the default tiled path on the "
        "same image (informational: tiles recompute their overlaps).",
        "",
        "| model | input (LR) | threads | raw ms | Upscaler ms | overhead % (best) | "
        "overhead % (median) | default tile/overlap | tiled ms |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for label, size, b_raw, b_layer, ovh, ovh_med, tile, ov, b_tiled, thr in rows:
        lines.append(f"| {label} | {size} | {thr} | {1000 * b_raw:.1f} | "
                     f"{1000 * b_layer:.1f} | {ovh:+.1f} | {ovh_med:+.1f} | {tile}/{ov} | "
                     f"{1000 * b_tiled:.1f} |")
    _write_report(args, lines, "overhead",
                  f"Runs: {args.rounds} rounds x {args.reps} per side. Machine: {machine()}.")


def cmd_ab(args: argparse.Namespace) -> None:
    from rdsrn.runtimes import Upscaler

    w, h = (int(v) for v in args.size.lower().split("x"))
    img = np.ascontiguousarray(read_rgb(DATA / "test" / "Set5" / "baby.png")[:h, :w])
    runners = []
    for model in args.model:
        up = Upscaler(model, tile=0, threads=args.threads)
        up.upscale(img)
        runners.append((model, model_label(up), up.threads, _raw_runner(up, img)))
    times: list[list[float]] = [[] for _ in runners]
    with training_paused():
        for _ in range(args.rounds):
            for k, (_, _, _, fn) in enumerate(runners):
                fn()  # worker threads spin after a call: the block's first run is dropped
                times[k] += _time(fn, args.reps)
    base = statistics.median(times[0])
    lines = [f"# Same-run A/B latency: {args.title or ', '.join(Path(m).name for m in args.model)}",
             "",
             "Bare interpreter calls (ORT `session.run`; LiteRT `set_tensor` + `invoke` + "
             "`get_tensor`) on one prepared tensor, LR " + f"{w}x{h}. {args.rounds} rounds; in "
             f"each, every file runs one untimed call and {args.reps} timed ones, files in turn, "
             "so drift of the machine's load hits every file alike. Training paused.",
             "",
             "| file | model | threads | median ms | best ms | p90 ms | vs first (median) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for (model, label, thr, _), t in zip(runners, times):
        med = statistics.median(t)
        p90 = sorted(t)[max(0, int(round(0.9 * len(t))) - 1)]
        lines.append(f"| {Path(model).name} | {label} | {thr} | {1000 * med:.1f} | "
                     f"{1000 * min(t):.1f} | {1000 * p90:.1f} | {100 * (med / base - 1):+.1f} % |")
    _write_report(args, lines, "ab", f"Machine: {machine()}.", echo=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tiling")
    t.add_argument("--model", required=True)
    t.add_argument("--sets", default="Set5,BSD68")
    t.add_argument("--configs", default="128:16,192:16,192:24,256:24,192:32",
                   help="tile:overlap,...")
    t.add_argument("--input-scale", type=int, default=1)
    t.add_argument("--limit", type=int, default=0, help="images per set (0 = all)")
    t.add_argument("--threads", type=int)
    t.add_argument("--weights-note", default="as in the file")
    t.add_argument("--out", default="runtime_tiling.md")
    t.add_argument("--note", default="", help="a line of context for the report")
    w = sub.add_parser("seams")
    w.add_argument("--model", required=True)
    w.add_argument("--sets", default="Set5,BSD68")
    w.add_argument("--configs", default="192:0,192:8,192:16,192:24,128:16")
    w.add_argument("--width", type=int, default=96)
    w.add_argument("--limit", type=int, default=4)
    w.add_argument("--threads", type=int)
    w.add_argument("--out", default="runtime_tiling.md", help="appended to")
    o = sub.add_parser("overhead")
    o.add_argument("--model", nargs="+", required=True)
    o.add_argument("--size", nargs="+", default=["128x128", "320x180"])
    o.add_argument("--threads", type=int)
    o.add_argument("--reps", type=int, default=3, help="timed runs per block")
    o.add_argument("--rounds", type=int, default=3, help="blocks per side")
    o.add_argument("--out", default="runtime_overhead.md")
    o.add_argument("--note", default="", help="a line of context for the report")
    a = sub.add_parser("ab")
    a.add_argument("--model", action="append", required=True, help="repeat: 2 or more files")
    a.add_argument("--size", default="320x180", help="LR input WxH")
    a.add_argument("--threads", type=int)
    a.add_argument("--reps", type=int, default=3, help="timed runs per block")
    a.add_argument("--rounds", type=int, default=10, help="blocks per file")
    a.add_argument("--title", default="")
    a.add_argument("--out", required=True)
    a.add_argument("--note", default="", help="a line of context for the report")
    args = p.parse_args(argv)
    if Path(args.out).name != args.out:  # checked before minutes of benchmarking, not after
        p.error(f"--out {args.out}: give a file name; reports are written to {RESULTS}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    {"tiling": cmd_tiling, "seams": cmd_seams,
     "overhead": cmd_overhead, "ab": cmd_ab}[args.cmd](args)


if __name__ == "__main__":
    main()
