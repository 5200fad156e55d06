"""PyTorch RDSRN -> TFLite (FP32, FP16 weights, INT8 full-integer) via the TensorFlow
twin (export/tf_twin.py) and `tf.lite.TFLiteConverter`.

Graph: input "input" NHWC [1, H, W, 3] RGB (H, W dynamic — `resize_tensor_input` —
unless a fixed size is asked for), output NHWC [1, sH, sW, 3] clamped to [0, 1]; no
TRANSPOSE anywhere, PixelShuffle is one DEPTH_TO_SPACE, the recursive block's weights
are stored once.
- fp32: float32 I/O and weights.
- fp16: float16 weights (dequantized to float32 by the runtime, or run in fp16 by a GPU
  delegate), float32 I/O.
- int8: full-integer: int8 weights per output channel, int8 activations, uint8 (default)
  or int8 input/output. uint8 input has scale 1/255, zero point 0: the 8-bit pixel
  values themselves (the calibration set reaches 0 and 255; checked).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from rdsrn.runtimes.errors import UserError

from .calibration import CalibrationSet
from .common import ExportResult, StepLog, atomic_write_bytes, human_size
from .metadata import build_metadata, embed_tflite
from .parity import (DEFAULT_MAX_DROP, compare, gate_fp16, gate_fp32,
                     measure_int8_drop, tflite_runner, torch_runner)
from .source import ModelSource

INT8_IO = ("uint8", "int8")


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def tensor_groups(model_bytes: bytes) -> dict[str, str | None]:
    """Tensor name -> layer group for every tensor of a TFLite file (`tensor_group`; the
    graph output, which the converter names after the signature, is recon's)."""
    from ai_edge_litert.interpreter import Interpreter

    return _groups(Interpreter(model_content=model_bytes))


def _groups(it: Any) -> dict[str, str | None]:
    outs = tuple(d["name"] for d in it.get_output_details())  # + "1": its int8 twin
    return {d["name"]: "recon" if d["name"].startswith(outs) else tensor_group(d["name"])
            for d in it.get_tensor_details()}


def _op_outputs(it: Any) -> list[list[str]]:
    """The output tensor names of every op of an Interpreter, in graph order."""
    td = it.get_tensor_details()
    return [[td[i]["name"] for i in d["outputs"]] for d in it._get_ops_details()]


def tensor_group(name: str) -> str | None:
    """Layer group (rdsrn.quant.groups.GROUPS) of a tensor of the converted graph, from the
    twin's name scopes ("body/BiasAdd_3;body/Conv2D_3;..." -> "body"); None for a name
    outside every scope (graph input, converter-made tensors). TensorFlow numbers a scope
    entered again ("body_1", "cca_2": the later recursion passes)."""
    import re

    from rdsrn.quant.groups import GROUPS

    head = re.sub(r"_\d+$", "", name.split(";")[0].split("/")[0])
    return head if head in GROUPS else None


def convert(twin: Any, precision: str, *, input_size: tuple[int, int] | None = None,
            calib: CalibrationSet | None = None, int8_io: str = "uint8",
            keep_float: tuple[str, ...] = ()) -> bytes:
    """Convert the TF twin to TFLite bytes (no metadata yet). `keep_float` (int8): layer
    groups whose ops stay float32, with QUANTIZE/DEQUANTIZE at their borders."""
    import tensorflow as tf

    fn = twin.concrete_function(input_size)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], twin)
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if calib is None:
            raise ValueError("int8 conversion needs calibration data")
        patches = calib.patches

        def representative():
            for p in patches:
                yield [p[None].astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = {"uint8": tf.uint8, "int8": tf.int8}[int8_io]
        conv.inference_input_type = io
        conv.inference_output_type = io
        if keep_float:
            return _int8_keep_float(conv, keep_float, io)
    elif precision != "fp32":
        raise ValueError(f"tflite: unsupported precision {precision!r}")
    elif keep_float:
        raise ValueError("keep_float applies to int8 only")
    return bytes(conv.convert())


def _int8_keep_float(conv: Any, keep_float: tuple[str, ...], io: Any) -> bytes:
    """The converter's own full-integer path split in two, calibration then the MLIR
    quantizer, so that the quantizer can be given the ops to leave float (its
    `denylisted_nodes`, the mechanism behind tf.lite.experimental.QuantizationDebugger's
    selective quantization, which cannot set uint8 I/O itself).

    One limit of that quantizer: it keeps SPLIT int8 even when denylisted (by node or by
    op, with or without calibration statistics; tried), so with "body" kept float its 24
    channel splits still round to 8 bits between float convs."""
    from ai_edge_litert.interpreter import Interpreter
    from tensorflow.lite.python import convert as tfl_convert

    conv._experimental_calibrate_only = True  # no public switch; the debugger sets it too
    calibrated = conv.convert()
    it = Interpreter(model_content=calibrated)
    groups = _groups(it)
    deny = sorted(n for n, g in groups.items() if g in keep_float)
    # A multi-output op (SPLIT) is known to the quantizer by its outputs' names joined.
    deny += [";".join(names) for names in _op_outputs(it)
             if len(names) > 1 and groups[names[0]] in keep_float]
    missing = set(keep_float) - {groups[n] for n in deny if n in groups}
    if missing:
        raise RuntimeError(f"keep_float: no tensors of groups {sorted(missing)} in the "
                           "converted graph (twin name scopes changed?)")
    return bytes(tfl_convert.mlir_quantize(calibrated, disable_per_channel=False,
                                           input_data_type=io, output_data_type=io,
                                           denylisted_nodes=deny))


def inspect(model_bytes: bytes) -> dict[str, Any]:
    """Op histogram and I/O tensor details of a TFLite model (via the interpreter)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes)
    ops: dict[str, int] = {}
    for d in interp._get_ops_details():  # no public op list in the Interpreter API
        ops[d["op_name"]] = ops.get(d["op_name"], 0) + 1
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

    def io(d: dict) -> dict[str, Any]:
        scale, zp = d["quantization"]
        return {"name": d["name"], "dtype": np.dtype(d["dtype"]).name,
                "shape_signature": [int(v) for v in d["shape_signature"]],
                "scale": float(scale), "zero_point": int(zp)}

    tensors = interp.get_tensor_details()
    return {"ops": ops, "input": io(inp), "output": io(out),
            "tensor_dtypes": sorted({np.dtype(t["dtype"]).name for t in tensors})}


def check_structure(info: dict[str, Any], precision: str, int8_io: str,
                    keep_float: tuple[str, ...] = (), anchor: bool = False) -> None:
    """Invariants of an exported TFLite graph; RuntimeError (an exporter bug) if not.
    `anchor`: the model has the anchor skip (its upsampling is a second DEPTH_TO_SPACE)."""
    ops = info["ops"]
    if ops.get("DEPTH_TO_SPACE") != 1 + int(anchor):
        raise RuntimeError(f"expected one DEPTH_TO_SPACE, got ops {ops}")
    if "TRANSPOSE" in ops:
        raise RuntimeError("TFLite graph has a TRANSPOSE")
    if precision == "int8":
        i = info["input"]
        if i["dtype"] != int8_io:
            raise RuntimeError(f"input dtype {i['dtype']} != {int8_io}")
        if int8_io == "uint8" and (abs(i["scale"] * 255.0 - 1.0) > 1e-6 or i["zero_point"] != 0):
            raise RuntimeError(f"uint8 input quantization {i['scale']}, {i['zero_point']} "
                               "is not (1/255, 0): calibration did not reach 0 and 1")
        if "DEQUANTIZE" in ops and not keep_float:
            raise RuntimeError("INT8 graph has float islands (DEQUANTIZE)")
        if keep_float and "DEQUANTIZE" not in ops:
            raise RuntimeError(f"--keep-float {','.join(keep_float)}: no float island")


def export_tflite(src: ModelSource, out_path: str | Path, precision: str = "fp32", *,
                  calib: CalibrationSet | None = None,
                  input_size: tuple[int, int] | None = None,
                  parity_inputs: list[np.ndarray], eval_dir: str | Path | None = None,
                  max_drop: float = DEFAULT_MAX_DROP, int8_io: str = "uint8",
                  qat: bool = False, keep_float: tuple[str, ...] = (),
                  log: Any = print) -> ExportResult:
    """Export `src` to one .tflite file at `out_path`, gated by parity (see parity.py).

    `qat` (int8, uint8 I/O): the activation grids are the ones the weights' QAT learned
    (export/qat_tflite.py) instead of calibrated ones, and the file is also compared with
    the fake-quant PyTorch model. `keep_float` (int8): layer groups (rdsrn.quant.groups)
    left in float32, for runtimes that run mixed graphs (LiteRT CPU/XNNPACK do).

    `parity_inputs`: float32 NHWC [1, h, w, 3] real-image crops (of `input_size` when
    fixed). The file is written only after its gate passed.
    """
    _quiet_tf()
    from .tf_twin import twin_from_torch

    out_path = Path(out_path)
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"tflite: unsupported precision {precision!r}")
    qat_model = None
    if qat and precision == "int8":
        from .qat_ranges import qat_model_of

        qat_model = qat_model_of(src)
        keep_float = tuple(sorted(set(keep_float) | set(qat_model.float_groups)))
    label = (f"tflite {precision}" + (f" {int8_io} I/O" if precision == "int8" else "")
             + (f", float {','.join(keep_float)}" if keep_float else ""))
    steps = StepLog(label, log)
    model = src.model

    with steps.step("build TensorFlow twin") as s:
        twin = twin_from_torch(model, clamp=True, fused_clamp=precision == "int8")
        s["note"] = f"{len(twin.variables)} variables (R={model.recursions} shares one set)"
    with steps.step("convert (TFLiteConverter"
                    + (f", {calib.info['patches']} calibration patches" if calib and
                       precision == "int8" else "") + ")") as s:
        data = convert(twin, precision, input_size=input_size, calib=calib, int8_io=int8_io,
                       keep_float=keep_float)
        info = inspect(data)
        check_structure(info, precision, int8_io, keep_float, anchor=twin.anchor)
        s["size"] = len(data)
        s["note"] = (f"{sum(info['ops'].values())} ops, DEPTH_TO_SPACE, no TRANSPOSE, input "
                     f"{info['input']['dtype']} {info['input']['shape_signature']}")

    aligned = False
    if precision == "int8":
        from .tflite_output import align_output_clamp

        with steps.step("output clamp grid on the pixel values") as s:
            data, aligned = align_output_clamp(data)
            s["note"] = ("not needed (float reconstruction)" if not aligned else
                         "anchor ADD on 1/255 (its saturation clamps; the no-op clip removed)"
                         if twin.anchor else
                         "recon bias +1/255, ADD 0.5 - 0.5/255 (no half-level rounding bias)")
    applied = None
    if qat_model is not None:
        from .qat_tflite import apply_tflite_ranges

        with steps.step("QAT: learned activation grids into the INT8 graph") as s:
            data, applied = apply_tflite_ranges(data, qat_model, parity_inputs[0],
                                                keep_float=set(keep_float))
            s["note"] = (f"{applied['tensors']} tensors for {applied['points']} QAT points, "
                         f"{applied['biases']} int32 biases requantized")
    ref = torch_runner(model)
    run = tflite_runner(data)
    delta = None
    eval_info = None
    with steps.step("parity vs PyTorch (real-image crops)") as s:
        parity = compare(run, ref, parity_inputs)
        s["note"] = (f"max |diff| {parity['max_abs_diff']:.2e}, PSNR "
                     f"{parity['psnr_vs_torch']} dB")
    if precision == "fp32":
        gate_fp32(parity, str(out_path))
    elif precision == "fp16":
        gate_fp16(parity, str(out_path))
    quant: dict[str, Any] = {}
    if precision == "fp16":
        quant = {"method": "float16 weights (TFLiteConverter)", "activations": "float32"}
    elif precision == "int8":
        assert calib is not None
        fq_parity = None
        if qat_model is not None:
            from .qat_ranges import gate_fakequant

            fq_parity = gate_fakequant(steps, run, qat_model, parity_inputs, str(out_path))
        eval_info = measure_int8_drop(steps, run, ref, eval_dir, input_size,
                                      int(model.config["scale"]), max_drop, str(out_path))
        delta = eval_info["delta_psnr"]
        quant = {"method": ("TFLiteConverter full-integer post-training quantization, "
                            if not keep_float else "TFLiteConverter post-training "
                            "quantization, mixed (layer groups left float32), ")
                           + "min/max calibration",
                 "weights": "int8 symmetric, per output channel",
                 "activations": "int8 asymmetric, per tensor",
                 "float_ops": (f"layer groups {', '.join(keep_float)}" if keep_float
                               else "none"),
                 "input": {"dtype": info["input"]["dtype"], "scale": info["input"]["scale"],
                           "zero_point": info["input"]["zero_point"]},
                 "output": {"dtype": info["output"]["dtype"], "scale": info["output"]["scale"],
                            "zero_point": info["output"]["zero_point"]},
                 "calibration": calib.info}
        if qat_model is not None:
            quant["ranges"] = "learned by quantization-aware fine-tuning (QAT)"
            quant["parity_fakequant"] = fq_parity
        if aligned:
            quant["output_clamp"] = "grid on the pixel values (export/tflite_output.py)"

    io_dtype = info["input"]["dtype"]
    meta = build_metadata(src, fmt="tflite", precision=precision, io_dtype=io_dtype,
                          input_size=input_size, quantization=quant, parity=parity,
                          delta_psnr=delta, eval_info=eval_info,
                          input_name=info["input"]["name"], output_name=info["output"]["name"])
    with steps.step("embed metadata") as s:
        data = embed_tflite(data, meta)
        s["size"] = len(data)
    with steps.step(f"write {out_path}") as s:
        atomic_write_bytes(out_path, data)
        s["size"] = len(data)
    log(f"[{label}] done: {out_path} ({human_size(len(data))}) in {steps.elapsed():.1f} s")
    return ExportResult(out_path, "tflite", precision, len(data), steps.elapsed(), meta)
