"""The one table of export formats, read by the exporter, the runtime layer and the
benchmark. Pure Python: importing it loads no runtime.

Every artifact carries its metadata inside the file as one JSON object under the key
`METADATA_KEY` (ONNX: `metadata_props`; TFLite: a named metadata buffer; OpenVINO IR: the
model's rt_info). Its fields:

    format        "onnx" | "tflite" | "openvino"
    scale         int, upscaling factor
    layout        "NCHW" | "NHWC" (input and output)
    value_range   [0, 1] for float I/O; for quantized I/O the real range is still [0, 1]
    color_order   "RGB"
    precision     "fp32" | "fp16" | "int8"
    io_dtype      "float32" | "uint8" | "int8" (dtype of the input/output tensors)
    quantization  {} or details (method, calibration images/patches, per_channel, ...);
                  INT8 ONNX: pair_bound {worst_pair_sum, limit, safe}, the proof that no
                  uint8 x int8 pair sum leaves int16 (exact on x86 kernels without VNNI)
    input_size    "dynamic" or [H, W] (LR input size the file accepts)
    min_input     int, smallest LR side the model accepts
    model         name (e.g. "rdsrn_x4"), arch (class), config; RDSRN: recursions, csr
    rdsrn_version package version that wrote it
    weights_sha256 hash of the source weights
    parity        measured parity vs PyTorch: {"max_abs_diff": ..., "psnr_vs_torch": ...}
    delta_psnr    INT8 only: Set5 Y-PSNR minus that of the FP32 model, dB (negative: worse)
"""

from __future__ import annotations

from dataclasses import dataclass

METADATA_KEY = "rdsrn"


@dataclass(frozen=True)
class Format:
    name: str  # CLI name
    suffix: str  # file suffix
    precisions: tuple[str, ...]
    layout: str  # tensor layout of input and output
    export_extra: str  # pip extra that can write it (with rdsrn[export])
    runtime_extra: str  # pip extra that can run it


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", ".onnx", ("fp32", "int8"), "NCHW", "export", "onnx"),
    "tflite": Format("tflite", ".tflite", ("fp32", "fp16", "int8"), "NHWC", "export",
                     "litert"),
    # OpenVINO IR: FILE.xml with FILE.bin beside it; metadata in the IR's rt_info
    "openvino": Format("openvino", ".xml", ("fp32", "int8"), "NCHW", "openvino",
                       "openvino"),
}

PRECISIONS = ("fp32", "fp16", "int8")
