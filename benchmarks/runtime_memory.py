"""Peak memory of one large upscale, each in a fresh process -> results/runtime_memory.md

    python -m rdsrn.benchmarks.runtime_memory --model runtimes/models/rdsrn_x4_int8.tflite \
        --size 2000x1500 [--old-src DIR] [--assembly-size 8000x6000]

Per input size (W x H, LR), a child process makes the input (a BSD68 photo resized),
builds the Upscaler, then calls `upscale_bgr` once; its peak RSS is VmHWM from
/proc/self/status. The model's working set is the peak RSS of the same child on one
image of exactly one tile of the size the large image is cut into (imports, interpreter
and its arena). The ratio (peak - working set) / output bytes is what holding and
assembling the result costs per output byte.

--old-src DIR: a folder holding an older copy of runtimes/ as the package `oldrt`
(e.g. `git show HEAD:runtimes/X.py` for each file), measured in the same run (A/B).
--assembly-size: also run that size with the model replaced by nearest-neighbour
upscaling (memory of the assembly alone, minutes instead of hours on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from rdsrn.benchmarks.runtime_layer import machine
from rdsrn.runtimes.tiling import balanced_tile
from rdsrn.runtimes.upscaler import DEFAULT_OVERLAP, DEFAULT_TILE

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("RDSRN_DATA", REPO.parent / "shared" / "data"))

_CHILD = r"""
import json, sys, time
import numpy as np, cv2
model, w, h, impl, fake, threads = sys.argv[1:7]
if impl == "new":
    from rdsrn.runtimes import Upscaler
else:
    sys.path.insert(0, impl)
    from oldrt.upscaler import Upscaler

def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

src = cv2.imread(sys.argv[7], cv2.IMREAD_COLOR)
img = cv2.resize(src, (int(w), int(h)), interpolation=cv2.INTER_CUBIC)
del src
up = Upscaler(model, threads=int(threads))
if fake == "nearest":
    class Nearest:
        def run(self, x, s=up.scale):
            return np.repeat(np.repeat(x, s, axis=1), s, axis=2)
    up._backend = Nearest()
before = hwm_kib()
t = time.perf_counter()
out = up.upscale_bgr(img)
dt = time.perf_counter() - t
print(json.dumps(dict(before_kib=before, peak_kib=hwm_kib(), seconds=dt,
                      out_shape=list(out.shape), in_bytes=img.nbytes, out_bytes=out.nbytes,
                      tile=up.tile, overlap=up.overlap,
                      label=f"{up.model_path.name} ({up.format} {up.precision}, {up.backend})")))
"""


def child(model: str, size: tuple[int, int], impl: str, fake: str, threads: int) -> dict:
    seed = DATA / "test" / "BSD68" / "108005.png"
    cmd = [sys.executable, "-c", _CHILD, model, str(size[0]), str(size[1]), impl, fake,
           str(threads), str(seed)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--size", nargs="*", default=["2000x1500"], help="LR W x H")
    p.add_argument("--old-src", default=None, help="folder with the package oldrt (A/B)")
    p.add_argument("--assembly-size", nargs="*", default=[], help="LR W x H, model faked")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="runtime_memory.md")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    impls = [("this version", "new")] + ([("before (HEAD)", args.old_src)] if args.old_src else [])
    rows = []
    for fake, sizes in (("model", args.size), ("nearest", args.assembly_size)):
        for size in sizes:
            w, h = (int(v) for v in size.lower().split("x"))
            for name, impl in impls:
                # one tile of the size this image is cut into
                tile = (balanced_tile(w, DEFAULT_TILE, DEFAULT_OVERLAP),
                        balanced_tile(h, DEFAULT_TILE, DEFAULT_OVERLAP))
                ws = child(args.model, tile, impl, fake, args.threads)["peak_kib"]
                t = time.time()
                r = child(args.model, (w, h), impl, fake, args.threads)
                r.update(size=(w, h), impl=name, fake=fake, wall=time.time() - t, ws_kib=ws)
                rows.append(r)
                print(name, fake, r, flush=True)
    mib = 1024.0
    r0 = rows[0]
    lines = [
        "# Peak memory of one large upscale (runtime layer)",
        "",
        f"Model: {r0['label']}; default tiling (tile {r0['tile']}, overlap {r0['overlap']}), "
        f"{args.threads} threads. Each row is a fresh process: it reads a photo, resizes it "
        "to the input size, builds the Upscaler, then calls `Upscaler.upscale_bgr` once. "
        "Peak RSS is VmHWM. The model working set is the peak RSS of the same process on "
        "an image of exactly one tile of the size the large image is cut into (imports, "
        "interpreter and its arena, one tile's temporaries; with the nearest-neighbour "
        "stand-in there is no arena). "
        "ratio = (peak RSS - working set) / output bytes: what holding and assembling the "
        "result costs per output byte (the output itself is 1.0; the input array is "
        "1/scale^2 of it).",
        "",
        "| code | model | input (LR) | output | output MiB | working set MiB | peak RSS MiB "
        "| ratio | time s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        w, h = r["size"]
        oh, ow = r["out_shape"][:2]
        out_mib = r["out_bytes"] / 2**20
        ratio = (r["peak_kib"] - r["ws_kib"]) / mib / out_mib
        model = "the model" if r["fake"] == "model" else "nearest-neighbour stand-in"
        lines.append(f"| {r['impl']} | {model} | {w}x{h} | {ow}x{oh} | {out_mib:.0f} | "
                     f"{r['ws_kib'] / mib:.0f} | {r['peak_kib'] / mib:.0f} | {ratio:.2f} | "
                     f"{r['seconds']:.0f} |")
    if args.note:
        lines += ["", args.note]
    lines += ["", "Command: `python -m rdsrn.benchmarks.runtime_memory "
              f"{' '.join(sys.argv[1:])}`",
              f"Machine: {machine()}; Python {platform.python_version()}; "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Memory, not time, is "
              "measured: other jobs shared the 2 cores, so times are indicative only.", ""]
    out = RESULTS / args.out
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
