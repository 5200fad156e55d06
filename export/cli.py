"""`rdsrn export`: weights -> ONNX / TFLite files that reproduce the PyTorch model.

Every export runs its parity gate (FP32: max |diff| <= 1e-4 vs PyTorch; FP16: PSNR vs
PyTorch >= 50 dB; INT8: Set5 ΔPSNR vs FP32 <= --max-drop) and writes its file only
when the gate passes. Heavy imports (torch, tensorflow, onnx) happen inside `run`.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import Any

from rdsrn.runtimes.errors import MissingExtraError, UserError
from rdsrn.runtimes.formats import FORMATS, PRECISIONS

from .calibration import DEFAULT_PATCHES
from rdsrn.outputs import check_output_dir

from rdsrn.network_spec import add_network_arguments, parse_model_args

from .common import data_dir, human_size, parse_input_size

FORMAT_CHOICES = (*FORMATS, "all")
# pip module needed per format (import name, distribution shown in the error).
NEEDS = {"onnx": ("onnx", "onnxsim", "onnxruntime"), "tflite": ("tensorflow", "ai_edge_litert"),
         "openvino": ("onnx", "onnxsim", "onnxruntime", "openvino")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="rdsrn_x4", metavar="NAME|FILE|FILE.py:Class",
                        help="registry name (its shipped weights, or --weights), a "
                             ".safetensors file of ours, or a network of your own "
                             "(path/to/file.py:Class or package.module:Class, with --scale "
                             "and --weights) (default: rdsrn_x4)")
    add_network_arguments(parser)
    parser.add_argument("--format", default="all", metavar="|".join(FORMAT_CHOICES),
                        help="output format (default: all)")
    parser.add_argument("--precision", default="fp32", metavar="|".join(PRECISIONS),
                        help="fp32, fp16 (tflite only) or int8 (needs --calib); default fp32")
    parser.add_argument("--calib", default=None, metavar="DIR",
                        help="INT8 calibration images (training photos, never test sets), "
                             "e.g. ../shared/data/train")
    parser.add_argument("--calib-n", type=int, default=None, metavar="N",
                        help=f"int8: calibration patches (default {DEFAULT_PATCHES})")
    parser.add_argument("--input-size", default="dynamic", metavar="HxW|dynamic",
                        help="LR input size the file accepts (default: dynamic)")
    parser.add_argument("--out", default="exported", metavar="DIR",
                        help="output folder, created if needed (default: ./exported, in "
                             "the current directory); checked for writing before any work")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow / LiteRT log output (hidden by default)")
    parser.add_argument("--int8-io", default=None, metavar="uint8|int8",
                        help="tflite int8: dtype of input/output (default uint8, input scale "
                             "1/255)")
    parser.add_argument("--int8-act", default=None, metavar="uint8|int8",
                        help="onnx int8: activation type (default uint8: U8S8, measured "
                             "faster than S8S8 on x86)")
    parser.add_argument("--calib-method", default=None, metavar="minmax|percentile|entropy",
                        help="onnx int8: activation range calibration (default minmax)")
    parser.add_argument("--max-drop", type=float, default=None, metavar="DB",
                        help="int8: largest allowed Set5 Y-PSNR drop vs FP32 (default 0.3)")
    parser.add_argument("--eval-dir", default=None, metavar="DIR",
                        help="HR images for the INT8 ΔPSNR gate (default: "
                             "$RDSRN_DATA/test/Set5, else ../shared/data/test/Set5)")
    parser.add_argument("--parity-dir", default=None, metavar="DIR",
                        help="images whose crops feed the parity check (default: --calib, "
                             "else ../shared/data/train, else the eval folder)")
    parser.add_argument("--qat", action="store_true",
                        help="int8: use the activation ranges learned by quantization-aware "
                             "fine-tuning (stored in the weights' metadata) instead of "
                             "calibrated ones")
    parser.add_argument("--equalize", action="store_true",
                        help="int8 (calibrated, not --qat): first rescale RDSRN's feature "
                             "streams per channel (cross-layer equalization; the float "
                             "function is unchanged) so the per-tensor grids fit")
    parser.add_argument("--keep-float", default=None, metavar="GROUP[,GROUP]",
                        help="int8: layer groups left in float32, a mixed-precision file "
                             "named ..._int8_float-GROUPS (shallow, body, cca, fusion, "
                             "upsample, hfrrb, recon)")
    parser.add_argument("--a16-streams", action="store_true",
                        help="onnx int8: 16-bit activations (uint16 over the QAT-learned "
                             "or min/max 8-bit ranges) on the four streams that carry the "
                             "image, 8-bit elsewhere (W8A16 there; for NPUs that run 16-bit "
                             "activations). File named ..._int8_a16-streams.onnx")
    parser.add_argument("--random-weights", type=int, default=None, metavar="SEED",
                        help="development only: export a registry model with seeded random "
                             "weights when no shipped weights exist")


def _choice(kind: str, value: str, choices: tuple[str, ...] | list[str]) -> str:
    from rdsrn.models import unknown_name_message

    v = value.strip().lower()
    if v not in choices:
        raise UserError(unknown_name_message(kind, value, list(choices)))
    return v


def _need(modules: tuple[str, ...], extra: str = "export") -> None:
    for mod in modules:
        if importlib.util.find_spec(mod) is None:
            raise MissingExtraError(mod, extra if mod == "openvino" else "export")


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the options (before any heavy work); returns the resolved plan."""
    fmt = _choice("format", args.format, FORMAT_CHOICES)
    precision = _choice("precision", args.precision, PRECISIONS)
    formats = list(FORMATS) if fmt == "all" else [fmt]
    skipped = [f for f in formats if precision not in FORMATS[f].precisions]
    formats = [f for f in formats if precision in FORMATS[f].precisions]
    if not formats:
        takes = ", ".join(FORMATS[fmt].precisions)
        raise UserError(f"--format {fmt} does not take --precision {precision} "
                        f"({fmt}: {takes})")
    for opt, value, fmt_needed in (("--int8-io", args.int8_io, "tflite"),
                                   ("--int8-act", args.int8_act, "onnx"),
                                   ("--calib-method", args.calib_method, "onnx")):
        if value is None:
            continue
        if precision != "int8":
            raise UserError(f"{opt} applies to --precision int8 only")
        takes = {fmt_needed, "openvino"} if fmt_needed == "onnx" else {fmt_needed}
        if not takes & set(formats):  # an OpenVINO file is built from the ONNX one
            raise UserError(f"{opt} applies to --format {' / '.join(sorted(takes))} only")
    from .onnx_export import ACT_TYPES, CALIB_METHODS
    from .tflite_export import INT8_IO

    int8_io = _choice("--int8-io", args.int8_io or "uint8", INT8_IO)
    int8_act = _choice("--int8-act", args.int8_act or "uint8", ACT_TYPES)
    calib_method = _choice("--calib-method", args.calib_method or "minmax", CALIB_METHODS)
    if args.max_drop is not None and precision != "int8":
        raise UserError("--max-drop applies to --precision int8 only")
    max_drop = 0.3 if args.max_drop is None else args.max_drop
    if max_drop < 0:
        raise UserError(f"--max-drop {max_drop}: must be >= 0 dB")
    input_size = parse_input_size(args.input_size)
    calib = None
    if precision == "int8":
        if not args.calib:
            raise UserError("--precision int8 needs calibration images: --calib DIR "
                            "(training photos, e.g. ../shared/data/train; never test sets)")
        calib = Path(args.calib).expanduser()
        if not calib.is_dir():
            raise UserError(f"--calib {calib}: no such folder")
        if args.calib_n is not None and args.calib_n < 1:
            raise UserError(f"--calib-n {args.calib_n}: need at least 1 patch")
    elif args.calib or args.calib_n is not None:
        raise UserError("--calib / --calib-n apply to --precision int8 only")
    eval_dir = Path(args.eval_dir).expanduser() if args.eval_dir else \
        data_dir() / "test" / "Set5"
    if precision == "int8" and not eval_dir.is_dir():
        raise UserError(f"INT8 ΔPSNR gate: evaluation folder {eval_dir} not found "
                        "(--eval-dir DIR of HR test images, or set RDSRN_DATA to the "
                        "folder holding test/Set5)")
    if args.parity_dir:
        parity_dir = Path(args.parity_dir).expanduser()
    elif calib is not None:
        parity_dir = calib
    elif (data_dir() / "train").is_dir():
        parity_dir = data_dir() / "train"
    else:
        parity_dir = eval_dir
    if not parity_dir.is_dir():
        raise UserError(f"no images for the parity check: {parity_dir} not found "
                        "(--parity-dir DIR, or set RDSRN_DATA to the folder holding "
                        "train/ and test/)")
    # Relative to the working directory (./exported by default), never the package.
    out = check_output_dir(Path(args.out).expanduser(), "--out")
    if fmt == "all" and "openvino" in formats and importlib.util.find_spec("openvino") is None:
        formats.remove("openvino")  # optional: said in one line, never silently
        print("[export] skipping openvino: not installed (pip install 'rdsrn[openvino]')",
              flush=True)
    for f in formats:
        _need(NEEDS[f], FORMATS[f].export_extra)
    _need(("torch", "safetensors"))
    keep_float: tuple[str, ...] = ()
    if args.qat and precision != "int8":
        raise UserError("--qat applies to --precision int8 only")
    if args.qat and "tflite" in formats and int8_io != "uint8":
        raise UserError("--qat: QAT ranges are uint8 grids; drop --int8-io int8")
    if args.equalize and precision != "int8":
        raise UserError("--equalize applies to --precision int8 only")
    if args.equalize and args.qat:
        raise UserError("--equalize: QAT weights carry grids for their own channel scales "
                        "(equalize in training: qat: {equalize: true}); drop --equalize")
    a16 = bool(args.a16_streams)
    if a16 and precision != "int8":
        raise UserError("--a16-streams applies to --precision int8 only")
    if a16 and not args.qat and calib_method != "minmax":
        raise UserError("--a16-streams without --qat widens min/max grids; drop "
                        "--calib-method")
    if a16 and int8_act != "uint8":
        raise UserError("--a16-streams widens uint8 grids; drop --int8-act int8")
    if a16 and set(formats) - {"onnx"}:
        raise UserError("--a16-streams: ONNX only (TFLite has no mixed 8/16-bit "
                        "activations; its 16x8 mode is whole-model); use --format onnx")
    if args.keep_float is not None:
        from rdsrn.quant.groups import check_groups

        if precision != "int8":
            raise UserError("--keep-float applies to --precision int8 only")
        keep_float = tuple(check_groups(args.keep_float.split(",")))
    model_args = parse_model_args(getattr(args, "model_args", None))
    return dict(formats=formats, all_formats=fmt == "all", skipped=skipped,
                model_args=model_args, precision=precision, int8_io=int8_io,
                qat=bool(args.qat), keep_float=keep_float, equalize=bool(args.equalize),
                a16_streams=a16,
                int8_act=int8_act, calib_method=calib_method, max_drop=max_drop,
                input_size=input_size, calib=calib, eval_dir=eval_dir, parity_dir=parity_dir,
                out=out)


def artifact_name(name: str, fmt: str, precision: str, input_size: tuple[int, int] | None,
                  int8_io: str = "uint8", keep_float: tuple[str, ...] = (),
                  a16_streams: bool = False) -> str:
    """File name: <model>_<precision>[_<H>x<W>][_int8io][_float-<groups>][_a16-streams]
    <suffix>; a mixed-precision file never takes the name of the all-INT8 one."""
    stem = f"{name}_{precision}"
    if input_size is not None:
        stem += f"_{input_size[0]}x{input_size[1]}"
    if fmt == "tflite" and precision == "int8" and int8_io == "int8":
        stem += "_int8io"
    if keep_float:
        stem += "_float-" + "-".join(keep_float)
    if a16_streams:
        stem += "_a16-streams"
    return stem + FORMATS[fmt].suffix


def parity_sizes(input_size: tuple[int, int] | None) -> list[tuple[int, int]]:
    """LR crop sizes for the parity check: two sizes (one odd) for dynamic files."""
    return [input_size] if input_size is not None else [(48, 48), (37, 53)]


def run(args: argparse.Namespace) -> int:
    """The export, with TensorFlow/LiteRT chatter filtered from stderr unless --verbose
    or --debug (export/quiet.py)."""
    import os

    from .quiet import quiet_tf

    verbose = (getattr(args, "verbose", False) or getattr(args, "debug", False)
               or os.environ.get("RDSRN_DEBUG") == "1")
    with quiet_tf(enabled=not verbose):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    p = plan(args)
    from .calibration import make_calibration_set
    from .parity import parity_inputs
    from .source import load_source

    t0 = time.perf_counter()
    src = load_source(args.model, weights=args.weights, scale=args.scale,
                      model_args=p["model_args"], random_seed=args.random_weights)
    scale = int(src.config["scale"])
    check_rdsrn_only(p, src)
    if p["qat"] and not src.qat:
        raise UserError(f"--qat: {src.weights_file or src.name} holds FP32-only weights, no "
                        "QAT ranges (train them with `rdsrn train --config rdsrn_x4_qat`)")
    weights = (f"{src.weights_file} (sha256 {src.weights_sha256[:12]})" if src.weights_file
               else f"{src.weights_sha256} (development only)")
    arch = (f" R={src.config['recursions']} CSR={src.config['csr']}"
            if "recursions" in src.config else f" ({type(src.model).__name__})")
    print(f"[export] model {src.name} x{scale}{arch}, weights {weights}", flush=True)
    for f in p["skipped"]:
        print(f"[export] skipping {f}: it does not take --precision {p['precision']} "
              f"({', '.join(FORMATS[f].precisions)})")
    inputs = parity_inputs(p["parity_dir"], parity_sizes(p["input_size"]))
    calib = None
    if p["precision"] == "int8":
        t = time.perf_counter()
        size = p["input_size"] or (64, 64)
        calib = make_calibration_set(p["calib"], scale, args.calib_n or DEFAULT_PATCHES,
                                     size=size)
        print(f"[export] calibration: {calib.info['patches']} LR patches "
              f"{size[0]}x{size[1]} from {calib.info['images']} images in {p['calib']} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
        if p["equalize"]:
            calib.info["equalization"] = equalize_source(src, calib)
    results = []
    for fmt in p["formats"]:
        out = p["out"] / artifact_name(src.name, fmt, p["precision"], p["input_size"],
                                       p["int8_io"], p["keep_float"], p["a16_streams"])
        if src.weights_file and out.resolve() == Path(src.weights_file).resolve():
            raise UserError(f"{out}: would overwrite the input weights")
        common = dict(calib=calib, input_size=p["input_size"], parity_inputs=inputs,
                      eval_dir=p["eval_dir"], max_drop=p["max_drop"],
                      log=lambda s: print(s, flush=True))
        if fmt in ("onnx", "openvino"):
            onnx_opts = dict(act_type=p["int8_act"], calib_method=p["calib_method"],
                             qat=p["qat"], keep_float=p["keep_float"],
                             a16_streams=p["a16_streams"], **common)
            if fmt == "onnx":
                from .onnx_export import export_onnx

                results.append(export_onnx(src, out, p["precision"], **onnx_opts))
            else:
                from .openvino_export import export_openvino

                results.append(export_openvino(src, out, p["precision"], **onnx_opts))
        else:
            from .tflite_export import export_tflite

            results.append(export_tflite(src, out, p["precision"], int8_io=p["int8_io"],
                                         qat=p["qat"], keep_float=p["keep_float"], **common))
            from .gpu_compat import report_for_export  # writes OUT.tflite.gpu.md

            report_for_export(out, log=common["log"])
    print(summary(results, time.perf_counter() - t0))
    return 0


def check_rdsrn_only(p: dict[str, Any], src: Any) -> None:
    """UserError for options that only RDSRN has (its fake-quant model, layer groups,
    TensorFlow twin) when the network is another one."""
    from rdsrn.models.rdsrn import RDSRN

    if isinstance(src.model, RDSRN):
        return
    what = type(src.model).__name__
    for flag, on in (("--qat", p["qat"]), ("--equalize", p["equalize"]),
                     ("--keep-float", bool(p["keep_float"])),
                     ("--a16-streams", p["a16_streams"])):
        if on:
            raise UserError(f"{flag}: RDSRN only ({src.name} is {what}); export it without "
                            f"{flag}")
    if "tflite" in p["formats"]:
        if not p["all_formats"]:  # asked for by name
            raise UserError(f"--format tflite: the TFLite converter covers RDSRN only; "
                            f"{src.name} ({what}) exports with --format onnx")
        p["formats"] = [f for f in p["formats"] if f != "tflite"]
        print(f"[export] skipping tflite: the TFLite converter covers RDSRN only "
              f"({src.name} is {what})", flush=True)


def equalize_source(src: Any, calib: Any) -> dict[str, Any]:
    """Cross-layer equalization of `src.model` in place (rdsrn.quant.equalize), ranges
    measured on the calibration patches; returns the record for the metadata."""
    import torch

    from rdsrn.quant.equalize import equalize, summary as equalize_summary

    record = equalize(src.model, list(torch.from_numpy(calib.nchw()).split(8)))
    print(f"[export] {equalize_summary(record)}", flush=True)
    return record


def summary(results: list[Any], seconds: float) -> str:
    """The closing table and the next commands to run."""
    lines = [f"\nexported {len(results)} file(s) in {seconds:.1f} s:"]
    for r in results:
        m = r.metadata
        if r.precision == "int8":
            e = m["eval"]
            gate = (f"{e['dataset']} {e['psnr']:.2f} dB, Δ {m['delta_psnr']:+.3f} dB vs FP32")
        elif r.precision == "fp16":
            gate = f"PSNR vs PyTorch {m['parity']['psnr_vs_torch']} dB"
        else:
            gate = f"max |diff| vs PyTorch {m['parity']['max_abs_diff']:.1e}"
        lines.append(f"  {str(r.path):<48} {human_size(r.size_bytes):>10}  "
                     f"{m['io_dtype']:<7} {gate}")
    lines.append("\nnext:")
    for r in results:
        lines.append(f"  rdsrn eval --model {r.path}")
    if results:
        lines.append(f"  rdsrn upscale INPUT -o OUT --model {results[0].path}")
    return "\n".join(lines)
