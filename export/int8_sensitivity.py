"""Per-layer-group INT8 sensitivity: where the INT8 error of RDSRN comes from.

    python -m rdsrn.export.int8_sensitivity --model rdsrn_x4 --datasets Set5,BSD68 \
        --out benchmarks/results/int8_sensitivity_x4.md [--onnx]

Default (fast, PyTorch): the fake-quant model (rdsrn.quant.qat.QATRDSRN, the same
quantization points and grids as the ONNX QDQ file) with min/max ranges calibrated on
the exporter's calibration set (100 LR patches 64x64 of ../shared/data/train), evaluated
(Y-PSNR, standard protocol) with every group quantized, with only the weights or only the
activations quantized (PyTorch only), with the stream points on 16-bit grids (as
`rdsrn export --a16-streams` writes them), with one group quantized alone and with one
group kept float. `--onnx`: the same table from real onnxruntime INT8 files
(`quantize_int8(keep_float=...)`), slower. Weights with QAT ranges (`--qat`) are run
with their learned grids instead of calibrated ones. Writes only the report (+ .json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rdsrn.quant.groups import GROUPS

from .common import data_dir


# Variants that quantize only one kind of tensor: label -> (quant_weights, quant_acts).
# PyTorch fake-quant only (an onnxruntime QDQ file quantizes both).
SPLITS = {"weights INT8, activations float": (True, False),
          "activations INT8, weights float": (False, True)}


# The stream points on 16-bit grids over their 8-bit ranges, the rest INT8
# (`rdsrn export --a16-streams`; QATRDSRN.wide).
WIDE = "streams 16-bit, rest INT8"


def _variants() -> list[tuple[str, tuple[str, ...]]]:
    """(label, groups kept float): all INT8, weights / activations alone, the streams
    16-bit, each group alone, each group kept float."""
    out: list[tuple[str, tuple[str, ...]]] = [("all INT8", ())]
    out += [(label, ()) for label in SPLITS]
    out.append((WIDE, ()))
    for g in GROUPS:
        out.append((f"only {g} INT8", tuple(x for x in GROUPS if x != g)))
    for g in GROUPS:
        out.append((f"{g} kept float", (g,)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rdsrn.export.int8_sensitivity")
    ap.add_argument("--model", default="rdsrn_x4")
    ap.add_argument("--datasets", default="Set5")
    ap.add_argument("--calib-n", type=int, default=100)
    ap.add_argument("--onnx", action="store_true", help="real onnxruntime INT8 files")
    ap.add_argument("--qat", action="store_true", help="use the weights' QAT ranges")
    ap.add_argument("--only", default=None, help="comma list of variant labels to run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch

    from rdsrn.evaluate import evaluate_dataset
    from rdsrn.quant.qat import QATRDSRN, qat_from_metadata

    from .calibration import make_calibration_set
    from .parity import _upscale_fn, onnx_runner, torch_runner
    from .source import load_source

    torch.set_num_threads(args.threads)
    src = load_source(args.model)
    scale = int(src.config["scale"])
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    calib = make_calibration_set(data_dir() / "train", scale, args.calib_n)
    if args.qat:
        base = qat_from_metadata(src.model, {"qat": src.qat} if src.qat else {}, args.model)
    else:
        base = QATRDSRN(src.model).eval()
        x = torch.from_numpy(calib.nchw())
        base.calibrate(x.split(10))
    fp32_onnx = None
    if args.onnx:
        from .onnx_export import build_fp32

        fp32_onnx = build_fp32(src.model)

    def psnr_of(run: Any) -> dict[str, float]:
        return {d: round(evaluate_dataset(_upscale_fn(run), data_dir() / "test" / d,
                                          scale)["psnr"], 4) for d in datasets}

    t0 = time.perf_counter()
    rows = []
    ref = psnr_of(torch_runner(src.model))
    print(f"FP32 {ref}", flush=True)
    wanted = set(args.only.split(";")) if args.only else None
    for label, keep in _variants():
        if (wanted and label not in wanted) or (args.onnx and label in SPLITS):
            continue
        t = time.perf_counter()
        model = QATRDSRN(src.model, keep).eval()
        model.load_state_dict(base.state_dict())
        model.quant_weights, model.quant_acts = SPLITS.get(label, (True, True))
        if label == WIDE:
            model.widen_streams()
        if args.onnx:
            from .onnx_export import quantize_int8
            from .qat_ranges import apply_onnx_ranges

            q, _ = quantize_int8(fp32_onnx, calib, keep_float=keep)
            if args.qat or label == WIDE:  # the wide grids are the 8-bit ones, widened
                apply_onnx_ranges(q, fp32_onnx, model, calib.patches[:1])
            run = onnx_runner(q.SerializeToString(), threads=args.threads)
        else:
            run = torch_runner(model)
        res = psnr_of(run)
        row = {"variant": label, "float": list(keep),
               **{f"{d}_delta": round(res[d] - ref[d], 4) for d in datasets},
               **{f"{d}_psnr": res[d] for d in datasets}}
        rows.append(row)
        print(f"{label}: {row} ({time.perf_counter() - t:.0f} s)", flush=True)
    report = {"model": args.model, "weights_sha256": src.weights_sha256[:16],
              "engine": "onnxruntime QDQ U8S8" if args.onnx else "PyTorch fake-quant",
              "ranges": "QAT" if args.qat else f"min/max, {calib.info['patches']} patches",
              "fp32": ref, "rows": rows, "seconds": round(time.perf_counter() - t0, 1),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "torch": torch.__version__}
    out = Path(args.out)
    lines = [f"# INT8 sensitivity per layer group: {args.model} ({report['engine']})", "",
             f"Ranges: {report['ranges']}. FP32 Y-PSNR: " +
             ", ".join(f"{d} {v:.3f} dB" for d, v in ref.items()) +
             f". {report['date']}, torch {report['torch']}. ΔPSNR = INT8 - FP32 (dB; negative = INT8 worse).", "",
             "| variant | " + " | ".join(f"{d} Δ" for d in datasets) + " |",
             "|---|" + "---|" * len(datasets)]
    for r in rows:
        lines.append(f"| {r['variant']} | " +
                     " | ".join(f"{r[f'{d}_delta']:+.3f}" for d in datasets) + " |")
    from rdsrn.data import write_bytes_atomic

    write_bytes_atomic(out, ("\n".join(lines) + "\n").encode())
    write_bytes_atomic(out.with_suffix(".json"), json.dumps(report, indent=1).encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
