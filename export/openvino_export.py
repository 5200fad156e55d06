"""PyTorch network -> OpenVINO IR (FILE.xml + FILE.bin), FP32 or INT8.

The IR is converted from the ONNX file this exporter writes (`onnx_export.export_onnx`,
with its own gates): FP32 as it is, INT8 from the QDQ graph (pair-safe weights, the same
grids), which OpenVINO runs with its int8 kernels. Weights stay FP32 in the .bin
(`compress_to_fp16=False`). The metadata is the ONNX file's with format "openvino", in
the IR's rt_info under METADATA_KEY. Gates, on OpenVINO's own output (f32 inference
precision): FP32 max |diff| vs PyTorch <= 1e-4; INT8 Set5 ΔPSNR vs the FP32 PyTorch
model >= -max_drop. Both files are written only after the gates passed.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rdsrn.runtimes.formats import METADATA_KEY

from .common import ExportResult, StepLog, human_size
from .parity import compare, gate_fp32, measure_int8_drop, torch_runner
from .source import ModelSource


def openvino_runner(model: Any, threads: int | None = None) -> Any:
    """An OpenVINO model (an ov.Model, or an IR file path) run on the CPU in f32
    precision, as a parity Runner."""
    import openvino as ov

    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if not isinstance(model, ov.Model):
        model = core.read_model(str(model))
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        y = request.infer({0: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
        return np.asarray(y[compiled.output(0)], dtype=np.float32).transpose(0, 2, 3, 1)

    return run


def export_openvino(src: ModelSource, out_path: str | Path, precision: str = "fp32", *,
                    parity_inputs: list[np.ndarray], log: Any = print,
                    **onnx_options: Any) -> ExportResult:
    """Export `src` to `out_path` (.xml, with the .bin beside it); `onnx_options` are
    those of `export_onnx` (calib, input_size, eval_dir, max_drop, act_type, ...)."""
    import openvino as ov

    from .onnx_export import export_onnx

    out_path = Path(out_path)
    if out_path.suffix != ".xml":
        raise ValueError(f"{out_path}: an OpenVINO IR file name ends in .xml")
    steps = StepLog(f"openvino {precision}", log)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rdsrn-ov-", dir=out_path.parent) as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        res = export_onnx(src, onnx_file, precision, parity_inputs=parity_inputs,
                          log=log, **onnx_options)
        meta = {**res.metadata, "format": "openvino", "converted_from": "onnx"}
        with steps.step("convert ONNX -> OpenVINO model"):
            model = ov.convert_model(str(onnx_file))
        run = openvino_runner(model)  # gated in memory; written once, after its gate
        ref = torch_runner(src.model)
        if precision == "fp32":
            with steps.step("parity vs PyTorch (real-image crops), OpenVINO f32") as s:
                parity = compare(run, ref, parity_inputs)
                s["note"] = f"max |diff| {parity['max_abs_diff']:.2e}"
            gate_fp32(parity, str(out_path))
            meta["parity"] = parity
        else:
            info = measure_int8_drop(steps, run, ref, onnx_options.get("eval_dir"),
                                     onnx_options.get("input_size"),
                                     int(src.config["scale"]),
                                     float(onnx_options.get("max_drop", 0.3)), str(out_path))
            meta["delta_psnr"] = round(float(info["delta_psnr"]), 4)
            meta["eval"] = info
        model.set_rt_info(json.dumps(meta, sort_keys=True), [METADATA_KEY])
        xml, binf = Path(tmp) / "model.xml", Path(tmp) / "model.bin"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        with steps.step(f"write {out_path} (+ .bin)") as s:
            # the .bin first: a reader never finds an .xml without its weights
            os.replace(binf, out_path.with_suffix(".bin"))
            os.replace(xml, out_path)
            s["size"] = out_path.with_suffix(".bin").stat().st_size
    size = out_path.stat().st_size + out_path.with_suffix(".bin").stat().st_size
    log(f"[openvino {precision}] done: {out_path} ({human_size(size)}) in "
        f"{steps.elapsed():.1f} s")
    return ExportResult(out_path, "openvino", precision, size, steps.elapsed(), meta)
