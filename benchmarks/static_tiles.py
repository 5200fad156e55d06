"""Static-shape tile models vs the dynamic model on the whole image -> results/static_tiles.md

    python -m rdsrn.benchmarks.static_tiles --dynamic D.tflite [D2.onnx ...] \
        --static S_128x128.tflite [S2 ...] [--image 320x180] [--runs 10] [--threads 2]

Each static file (`rdsrn export --input-size HxW`) is paired with the dynamic file of the
same format and precision. Latency: `Upscaler.upscale` of one W x H uint8 RGB crop of a
BSD68 photo: the dynamic model in one call (tile=0) against each static file (tiled with
its fixed size, edge tiles and small images padded), interleaved run by run in the same
process (A/B under the same load), one warm-up call each, p50 and min over `--runs`.
Outputs: PSNR (float [0, 1] input and output, no 8-bit rounding) of the static tiled
result against the dynamic whole-image result. Only numpy, OpenCV and the runtime.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from rdsrn.benchmarks.runtime_layer import machine
from rdsrn.runtimes import Upscaler
from rdsrn.runtimes.tiling import tile_starts

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("RDSRN_DATA", REPO.parent / "shared" / "data"))


def crop(w: int, h: int) -> np.ndarray:
    """An h x w x 3 uint8 RGB crop of a BSD68 photo (resized up if the photo is smaller)."""
    import cv2

    img = cv2.cvtColor(cv2.imread(str(DATA / "test" / "BSD68" / "108005.png")),
                       cv2.COLOR_BGR2RGB)
    if img.shape[0] < h or img.shape[1] < w:
        f = max(h / img.shape[0], w / img.shape[1])
        img = cv2.resize(img, (math.ceil(img.shape[1] * f), math.ceil(img.shape[0] * f)),
                         interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(img[:h, :w])


def psnr01(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dynamic", nargs="+", required=True)
    p.add_argument("--static", nargs="+", required=True)
    p.add_argument("--image", default="320x180", help="LR W x H")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="static_tiles.md")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.image.lower().split("x"))
    img = crop(w, h)
    img_f = img.astype(np.float32) / 255.0
    dyn = {}
    for path in args.dynamic:
        up = Upscaler(path, threads=args.threads, tile=0)
        dyn[(up.format, up.precision)] = up
    groups: dict[tuple[str, str], list[Upscaler]] = {}
    for path in args.static:
        up = Upscaler(path, threads=args.threads)
        if up.input_size is None:
            raise SystemExit(f"{path}: not a static-shape file")
        if (up.format, up.precision) not in dyn:
            raise SystemExit(f"{path}: no dynamic {up.format} {up.precision} file given")
        groups.setdefault((up.format, up.precision), []).append(up)
    load0 = os.getloadavg()
    rows = []
    for key, statics in groups.items():
        d = dyn[key]
        ups = [d] + statics
        ref = d.upscale(img_f)
        quality = [psnr01(s.upscale(img_f), ref) for s in statics]
        for u in ups:  # warm-up: allocates each interpreter for its shape
            u.upscale(img)
        times: list[list[float]] = [[] for _ in ups]
        for _ in range(args.runs):
            for i, u in enumerate(ups):
                times[i].append(timed(lambda u=u: u.upscale(img)))
        p50d = statistics.median(times[0])
        print(f"{key} dynamic whole image: p50 {p50d * 1e3:.0f} ms", flush=True)
        rows.append((key, d, None, times[0], p50d, None, 1))
        for s, t, q in zip(statics, times[1:], quality):
            n = len(tile_starts(max(h, s.input_size[0]), s.input_size[0], s.overlap)) * \
                len(tile_starts(max(w, s.input_size[1]), s.input_size[1], s.overlap))
            print(f"{key} {s.input_size}: p50 {statistics.median(t) * 1e3:.0f} ms, "
                  f"{n} tiles, PSNR {q:.2f} dB", flush=True)
            rows.append((key, s, q, t, p50d, n, n))
    load1 = os.getloadavg()
    lines = [
        f"# Static-shape tile models vs one dynamic whole-image call ({w}x{h} -> "
        f"{w * ups[0].scale}x{h * ups[0].scale})",
        "",
        f"`Upscaler.upscale` of one {w}x{h} uint8 RGB crop of BSD68 108005, "
        f"{args.threads} threads, p50 / min over {args.runs} runs, every model of a "
        "format/precision interleaved run by run in one process (same-run A/B), one "
        "warm-up call each. Static files are tiled with exactly their input size "
        "(overlap: the runtime default, min(16, tile/2 - 1)); tiles are spread evenly "
        "so that every call has the static shape, images smaller than a tile are "
        "padded (reflect). PSNR: static tiled output vs the dynamic whole-image output "
        "(float input, no 8-bit rounding).",
        "",
        "| format | precision | model input | tiles | overlap | p50 ms | min ms | vs whole image "
        "| PSNR vs whole image dB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (fmt, prec), u, q, t, p50d, n, _ in rows:
        p50 = statistics.median(t)
        size = "dynamic (whole image)" if q is None else \
            f"{u.input_size[0]}x{u.input_size[1]} static"
        ratio = "1.00" if q is None else f"{p50 / p50d:.2f}"
        psnr = "—" if q is None else ("inf (identical)" if math.isinf(q) else f"{q:.1f}")
        lines.append(f"| {fmt} | {prec} | {size} | {n or 1} | "
                     f"{'—' if q is None else u.overlap} | {p50 * 1e3:.0f} | "
                     f"{min(t) * 1e3:.0f} | {ratio} | {psnr} |")
    if args.note:
        lines += ["", args.note]
    lines += ["", "Command: `python -m rdsrn.benchmarks.static_tiles "
              f"{' '.join(sys.argv[1:])}`",
              f"Machine: {machine()}; Python {platform.python_version()}, numpy "
              f"{np.__version__}, {runtime_versions()}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Load average "
              f"(1 min) {load0[0]:.1f} at the start, {load1[0]:.1f} at the end: other jobs "
              "shared the 2 cores, so absolute times are inflated; the interleaved A/B "
              "ratios are what to read.", ""]
    out = RESULTS / args.out
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def runtime_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in ("onnxruntime", "ai-edge-litert"):
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


if __name__ == "__main__":
    main()
