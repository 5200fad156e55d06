"""Rebuild the artifacts bundled with the package from the shipped weights:

    python -m rdsrn.export.bundle                    # every model of BUNDLES
    python -m rdsrn.export.bundle --model rdsrn_x2   # one of them

x4, x3 and x2 are bundled in all four (format, precision) pairs (x2 INT8 since its QAT
weights were equalized first: Set5 -0.25 dB, within the 0.3 dB gate; benchmarks/results/qat.md;
x2 and x3 INT8 now from the anchored models, INT8_FROM);
x4 and x3 also as mixed-precision INT8 files (MIXED: `rdsrn_x{4,3}_int8_float-shallow-fusion.*`). The
FP32 files come from rdsrn/weights/<model>.safetensors; the INT8 files from the
quantization-aware fine-tuned rdsrn/weights/<model or INT8_FROM[model]>_qat.safetensors
with the ranges QAT
learned (`rdsrn export --qat`; made by `rdsrn train --config <model>_qat` and
`python -m rdsrn.training.ship`), or, where no QAT weights are shipped, from the FP32
weights by min/max calibration (PTQ). Run it
again whenever a weights file changes; every file passes its export gate (FP32 parity,
INT8 ΔPSNR on Set5 <= --max-drop, QAT files also vs the fake-quant model) or is not
written, and carries its weights' sha256 (tests/test_export_bundle.py checks it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rdsrn.runtimes.errors import UserError

from .common import REPO, data_dir

OUT_DIR = REPO / "runtimes" / "models"
# (format, precision, layer groups kept float32).
Entry = tuple[str, str, tuple[str, ...]]
BUNDLED: tuple[Entry, ...] = (("onnx", "fp32", ()), ("onnx", "int8", ()), ("tflite", "fp32", ()),
                              ("tflite", "int8", ()))
# Mixed precision: the LR convs at either end of the recursion and the global residual in
# float32, the rest INT8 -- within 0.05 dB (x4) and 0.10 dB (x3) of FP32 on Set5 and BSD68,
# which the all-INT8 files are not (benchmarks/results/keep_float_x4_qat.md, qat.md), for
# runtimes that run mixed graphs.
MIXED_GROUPS = ("shallow", "fusion")
MIXED: tuple[Entry, ...] = (("onnx", "int8", MIXED_GROUPS), ("tflite", "int8", MIXED_GROUPS))
BUNDLES: dict[str, tuple[Entry, ...]] = {
    "rdsrn_x4": BUNDLED + MIXED, "rdsrn_x2": BUNDLED, "rdsrn_x3": BUNDLED + MIXED}
# Models whose INT8 files come from another model's QAT weights: x2 and x3 INT8 from the
# anchored models (rdsrn_x{2,3}_anchor_qat), whose INT8 loses less than the plain models' on
# Set5 and BSD68 (benchmarks/results/anchor.md); their FP32 files stay the plain models.
INT8_FROM: dict[str, str] = {"rdsrn_x2": "rdsrn_x2_anchor", "rdsrn_x3": "rdsrn_x3_anchor",
                             "rdsrn_x4": "rdsrn_x4_anchor"}
# The bundled INT8 files' accuracy targets: largest Set5 and BSD68 Y-PSNR loss against the
# bundled FP32 file of the same scale, dB, on every CPU kernel path
# (benchmarks/int8_paths.py checks them).
INT8_TARGET_DROP: dict[int, float] = {2: 0.10, 3: 0.10, 4: 0.05}
# INT8 settings of the bundled files (see benchmarks/results/export_int8.md).
CALIB_N = 100  # more patches widened the min/max ranges and lost accuracy (export_int8.md)


def bundle(model: str = "rdsrn_x4", out_dir: Path = OUT_DIR, calib_dir: Path | None = None,
           calib_n: int = CALIB_N, max_drop: float = 0.3, random_seed: int | None = None,
           only: tuple[Entry, ...] = BUNDLED, log: Any = print) -> list[Any]:
    """Export the `only` entries (format, precision, kept-float groups) of `model` into
    `out_dir`; returns results."""
    from .calibration import make_calibration_set
    from .cli import artifact_name, parity_sizes
    from .onnx_export import export_onnx
    from .parity import parity_inputs
    from .source import load_source
    from .tflite_export import export_tflite

    calib_dir = calib_dir or data_dir() / "train"
    eval_dir = data_dir() / "test" / "Set5"
    src = load_source(model, random_seed=random_seed)
    scale = int(src.config["scale"])
    log(f"[bundle] {src.name}: weights {src.weights_file or src.weights_sha256} "
        f"sha256 {src.weights_sha256}")
    inputs = parity_inputs(calib_dir, parity_sizes(None))
    calib = None
    if any(precision == "int8" for _, precision, _ in only):
        calib = make_calibration_set(calib_dir, scale, calib_n)
    qat_file = qat_weights(model)
    qat_src = None
    if qat_file is not None and random_seed is None:
        qat_src = load_source(str(qat_file))
        int8_name = INT8_FROM.get(src.name, src.name)
        if qat_src.name != int8_name or not qat_src.qat:
            raise UserError(f"{qat_file}: not QAT weights of {int8_name}")
        log(f"[bundle] INT8 from QAT weights {qat_file} sha256 {qat_src.weights_sha256}")
    results = []
    for fmt, precision, keep in only:
        out = Path(out_dir) / artifact_name(src.name, fmt, precision, None, keep_float=keep)
        use_qat = precision == "int8" and qat_src is not None
        kw = dict(calib=calib if precision == "int8" else None, parity_inputs=inputs,
                  eval_dir=eval_dir, max_drop=max_drop, log=log, qat=use_qat,
                  keep_float=keep)
        exporter = export_onnx if fmt == "onnx" else export_tflite
        results.append(exporter(qat_src if use_qat else src, out, precision, **kw))
    return results


def qat_weights(model: str) -> Path | None:
    """The shipped QAT weights the INT8 files of `model` come from
    (rdsrn/weights/<model or INT8_FROM[model]>_qat.safetensors), if any."""
    from rdsrn.weights import weights_path

    path = weights_path(f"{INT8_FROM.get(model, model)}_qat")
    return path if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rdsrn.export.bundle", description=__doc__)
    parser.add_argument("--model", choices=sorted(BUNDLES), action="append",
                        help="model to bundle (repeatable; default: all of BUNDLES)")
    parser.add_argument("--out", default=str(OUT_DIR))
    parser.add_argument("--calib", default=None, help="default ../shared/data/train")
    parser.add_argument("--calib-n", type=int, default=CALIB_N)
    parser.add_argument("--max-drop", type=float, default=0.3)
    parser.add_argument("--mixed-only", action="store_true",
                        help="only the mixed-precision (--keep-float) files of the models")
    parser.add_argument("--random-weights", type=int, default=None, metavar="SEED",
                        help="development only (no shipped weights yet)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        results = []
        for model in args.model or list(BUNDLES):
            results += bundle(model, Path(args.out), Path(args.calib) if args.calib else None,
                              args.calib_n, args.max_drop, args.random_weights,
                              only=tuple(e for e in BUNDLES[model]
                                         if not args.mixed_only or e[2]))
    except UserError as exc:
        print(f"export.bundle: error: {exc}", file=sys.stderr)
        return 2
    from .cli import summary

    print(summary(results, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
