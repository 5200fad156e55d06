"""PyTorch RDSRN -> ONNX (FP32, or INT8 QDQ by onnxruntime static quantization).

Graph: input "input" float32 NCHW [N, 3, H, W] RGB in [0, 1] (N, H, W dynamic unless a
fixed size is asked for), output "output" [N, 3, sH, sW] clamped to [0, 1]. Opset 17;
the recursion is unrolled by tracing (no Loop/If/Scan) and the shared block's weights
are one set of initializers used R times; PixelShuffle is DepthToSpace (mode CRD);
simplified by onnxsim. INT8: QDQ, per-channel int8 weights, activations uint8 (U8S8) by
default — measured faster than S8S8 with onnxruntime on x86 (see
benchmarks/results/export_int8.md); float I/O stays (Q/DQ at the ends).
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import CalibrationSet
from .common import ExportResult, StepLog, atomic_write_bytes, human_size
from .metadata import build_metadata, embed_onnx
from .parity import (DEFAULT_MAX_DROP, compare, gate_fp32, measure_int8_drop,
                     onnx_runner, torch_runner)
from .source import ModelSource

OPSET = 17
# IR 8 is what opset 17 needs; newer onnx would stamp a newer IR that older
# onnxruntime builds (1.17 reads up to IR 9) refuse.
IR_VERSION = 8
FORBIDDEN_OPS = ("Loop", "If", "Scan")
ACT_TYPES = ("uint8", "int8")
CALIB_METHODS = ("minmax", "percentile", "entropy")


class _Clamped:
    """torch wrapper: the model's output clamped to [0, 1] (built lazily, torch import)."""

    @staticmethod
    def wrap(model: Any) -> Any:
        import torch

        class Clamped(torch.nn.Module):
            def __init__(self, m: Any) -> None:
                super().__init__()
                self.m = m

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.m(x).clamp(0.0, 1.0)

        return Clamped(model).eval()


def torch_to_onnx(model: Any, input_size: tuple[int, int] | None = None) -> Any:
    """Trace `model` to an onnx.ModelProto (opset 17, clamped output), not simplified."""
    import onnx
    import torch

    h, w = input_size or (32, 32)
    x = torch.rand(1, int(model.config["in_channels"]), h, w)
    dyn = None
    if input_size is None:
        dyn = {"input": {0: "batch", 2: "height", 3: "width"},
               "output": {0: "batch", 2: "out_height", 3: "out_width"}}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(_Clamped.wrap(model), (x,), buf, input_names=["input"],
                          output_names=["output"], opset_version=OPSET,
                          dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def simplify(proto: Any, param_bytes: int | None = None) -> tuple[Any, dict[str, Any], int]:
    """onnxsim + initializer dedupe + IR pin + structure check:
    (model, structure info, duplicates merged)."""
    import onnxsim

    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    removed = dedupe_initializers(simplified)
    simplified.ir_version = IR_VERSION
    return simplified, check_structure(simplified, param_bytes), removed


def build_fp32(model: Any, input_size: tuple[int, int] | None = None) -> Any:
    """The simplified, checked FP32 onnx.ModelProto of `model` (no metadata)."""
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return simplify(torch_to_onnx(model, input_size), param_bytes)[0]


def dedupe_initializers(model: Any) -> int:
    """Merge byte-identical initializers (same dtype, shape, data) in place; returns
    how many were removed. The tracer already shares the recursive block's weights;
    this guards against a simplifier that would copy folded constants per use."""
    from onnx import numpy_helper

    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    keep = []
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        key = (arr.dtype.str, arr.shape, hashlib.sha256(arr.tobytes()).hexdigest())
        if key in first:
            rename[init.name] = first[key]
        else:
            first[key] = init.name
            keep.append(init)
    if rename:
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name in rename:
                    node.input[i] = rename[name]
    return len(rename)


def copy_io_dim_names(src: Any, dst: Any) -> int:
    """Give `dst`'s graph inputs/outputs the symbolic dimension names of `src` (same
    I/O). Quantization's symbolic shape inference renames them (the INT8 output became
    [DepthToSpace_184_o0__d0, 3, ..._d2, ..._d3]); every file must read [batch, 3,
    out_height, out_width]. The renaming is applied to every value_info too, so the graph
    stays consistent. Returns how many names changed."""
    rename: dict[str, str] = {}
    for a, b in zip(list(src.graph.input) + list(src.graph.output),
                    list(dst.graph.input) + list(dst.graph.output)):
        for da, db in zip(a.type.tensor_type.shape.dim, b.type.tensor_type.shape.dim):
            if da.dim_param and db.dim_param and da.dim_param != db.dim_param:
                rename[db.dim_param] = da.dim_param
    if not rename:
        return 0
    values = (list(dst.graph.input) + list(dst.graph.output) + list(dst.graph.value_info))
    for v in values:
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param in rename:
                d.dim_param = rename[d.dim_param]
    return len(rename)


def prune_opset_imports(model: Any) -> None:
    """Drop opset imports of domains no node uses (the quantization pre-processing
    declares a dozen; older onnxruntime builds reject some of their versions)."""
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def initializer_bytes(model: Any) -> int:
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)


def check_structure(model: Any, param_bytes: int | None = None) -> dict[str, Any]:
    """Structural invariants of an exported FP32 graph; RuntimeError (an exporter bug)
    when one fails. Returns the op histogram and the weight byte ratio."""
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    bad = [op for op in FORBIDDEN_OPS if op in ops]
    if bad:
        raise RuntimeError(f"ONNX graph has control flow {bad}: recursion not unrolled")
    d2s = [n for n in model.graph.node if n.op_type == "DepthToSpace"]
    modes = {a.s.decode() for n in d2s for a in n.attribute if a.name == "mode"}
    if modes - {"CRD"}:  # PixelShuffle is DepthToSpace CRD; DCR would permute channels
        raise RuntimeError(f"DepthToSpace modes {sorted(modes)}: expected CRD only")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    if opset < OPSET:
        raise RuntimeError(f"opset {opset} < {OPSET}")
    info: dict[str, Any] = {"ops": ops, "opset": opset}
    if param_bytes:
        ratio = initializer_bytes(model) / param_bytes
        # Shape/split constants add a few bytes; a copy per recursion would be ~2x.
        if ratio > 1.05:
            raise RuntimeError(f"initializer bytes {ratio:.2f}x the parameter bytes: "
                               "shared weights stored more than once")
        info["weight_bytes_ratio"] = round(ratio, 4)
    return info


class _Reader:
    """onnxruntime CalibrationDataReader over NCHW patches (built lazily), with the
    range protocol of the "CalibStridedMinMax" option: onnxruntime then collects
    statistics chunk by chunk, so histogram methods (percentile, entropy) do not hold
    every activation of every patch in memory at once (tens of GB at 100 64x64 patches)."""

    @staticmethod
    def make(patches: np.ndarray, name: str = "input") -> Any:
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.set_range(0, len(patches))

            def __len__(self) -> int:
                return len(patches)

            def set_range(self, start_index: int, end_index: int) -> None:
                self.it = iter(patches[start_index:end_index])

            def get_next(self) -> dict[str, np.ndarray] | None:
                x = next(self.it, None)
                return None if x is None else {name: x[None]}

        return Reader()


def _chunk(n: int, most: int = 8) -> int:
    """The largest divisor of n that is <= most (onnxruntime needs n % chunk == 0)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def quantize_int8(fp32: Any, calib: CalibrationSet, *, act_type: str = "uint8",
                  method: str = "minmax", exclude_cca: bool = False,
                  percentile: float = 99.999,
                  keep_float: tuple[str, ...] = (),
                  float_nodes: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """Static QDQ quantization of an FP32 onnx.ModelProto; returns (model, info).

    Weights int8 per output channel (symmetric, pair-safe scales: export.saturation);
    activations `act_type` (asymmetric),
    ranges from `calib` by `method`. `exclude_cca` keeps the channel attention's ops
    (mean/std/MLP/sigmoid/mul) in float; `keep_float` names layer groups
    (rdsrn.quant.qat.GROUPS) whose nodes stay float; `float_nodes` names further nodes
    of `fp32` that stay float (any network).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[act_type]
    nodes_to_exclude = []
    if exclude_cca:
        nodes_to_exclude = [n.name for n in fp32.graph.node if "/cca/" in n.name]
    if keep_float:
        from .qat_ranges import nodes_outside

        nodes_to_exclude += nodes_outside(fp32, set(keep_float), inside=True)
    nodes_to_exclude += list(float_nodes)
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True,
                             "CalibStridedMinMax": _chunk(len(calib.patches))}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    with tempfile.TemporaryDirectory(prefix="rdsrn-onnx-q-") as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(fp32, str(src))
        # The anchor skip's nearest Resize gives floor(s*H) where DepthToSpace gives s*H:
        # the symbolic shape inference must be allowed to merge the two names for one size.
        anchor = any(n.op_type == "Resize" for n in fp32.graph.node)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False, auto_merge=anchor)
        quantize_static(str(pre), str(dst), _Reader.make(calib.nchw()),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=qtype, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method], nodes_to_exclude=nodes_to_exclude,
                        extra_options=extra)
        q = onnx.load(str(dst))
    prune_opset_imports(q)
    copy_io_dim_names(fp32, q)
    from .saturation import make_pair_safe

    bound = make_pair_safe(q, fp32)
    info = {"method": f"onnxruntime static QDQ, {method} calibration"
                      + (f" ({percentile} percentile)" if method == "percentile" else ""),
            "weights": "int8 symmetric per output channel, pair-safe scales (any two weights "
                       "of a channel sum to at most 128: exact on saturating int16 kernels)",
            "pair_bound": bound,
            "activations": f"{act_type} asymmetric, per tensor",
            "io": "float32 (QuantizeLinear/DequantizeLinear inside the graph)",
            "float_ops": "channel attention (CCA)" if exclude_cca else
                         (f"layer groups {', '.join(keep_float)}" if keep_float else
                          "none beyond ORT's unquantized op types"),
            "calibration": calib.info}
    return q, info


def _calibrated_grids(model: Any, calib: CalibrationSet, keep_float: tuple[str, ...]) -> Any:
    """The fake-quant model of FP32 `model` with min/max grids over `calib` (what
    onnxruntime's MinMax calibrator computes) and the stream points widened to 16 bits:
    the grids of a PTQ `--a16-streams` file."""
    import torch

    from rdsrn.quant.qat import QATRDSRN

    q = QATRDSRN(model, keep_float, learn_ranges=False).eval()
    q.calibrate(torch.from_numpy(calib.nchw()).split(10))
    q.widen_streams()
    return q


def gate_pair_bound(bound: dict[str, Any], what: str) -> None:
    """GateError unless no uint8 x int8 pair sum of the file can leave int16."""
    from .common import GateError

    if not bound["safe"]:
        raise GateError(f"{what}: saturation gate failed: {bound['worst_conv']} can form a "
                        f"pair sum of {bound['worst_pair_sum']} > {bound['limit']} (int16); "
                        "no file written")


def export_onnx(src: ModelSource, out_path: str | Path, precision: str = "fp32", *,
                calib: CalibrationSet | None = None, input_size: tuple[int, int] | None = None,
                parity_inputs: list[np.ndarray], eval_dir: str | Path | None = None,
                max_drop: float = DEFAULT_MAX_DROP, act_type: str = "uint8",
                calib_method: str = "minmax", exclude_cca: bool = False,
                qat: bool = False, keep_float: tuple[str, ...] = (),
                a16_streams: bool = False, log: Any = print) -> ExportResult:
    """Export `src` to one .onnx file at `out_path`, gated by parity (see parity.py).

    fp32: torch -> ONNX -> onnxsim; gate max |diff| vs torch <= 1e-4 on `parity_inputs`
    (float32 NHWC [1, h, w, 3] real-image crops). int8: the FP32 graph quantized with
    `calib`, ΔPSNR on `eval_dir` (Set5) vs the FP32 torch model gated by `max_drop`.
    `qat`: the activation grids are the ones the weights' QAT learned (their "qat"
    metadata) instead of calibrated ones, and the file is also compared with the
    fake-quant PyTorch model; `keep_float`: layer groups left in float; `a16_streams`:
    the tensors of the four image-carrying streams on uint16 grids over their 8-bit
    ranges (QAT-learned with `qat`, else min/max over `calib`): W8A16 there, uint8
    elsewhere; the file is also compared with that fake-quant model.
    The file is written only after its gate passed.
    """
    out_path = Path(out_path)
    if precision not in ("fp32", "int8"):
        raise ValueError(f"onnx: unsupported precision {precision!r}")
    qat_model = None
    if qat and precision == "int8":
        from .qat_ranges import qat_model_of

        qat_model = qat_model_of(src)
        keep_float = tuple(sorted(set(keep_float) | set(qat_model.float_groups)))
        if a16_streams:
            qat_model.widen_streams()
    elif a16_streams:
        if precision != "int8" or calib is None:
            raise ValueError("a16_streams needs precision int8 and calibration data")
        qat_model = _calibrated_grids(src.model, calib, keep_float)
    steps = StepLog(f"onnx {precision}", log)
    model = src.model
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    with steps.step("trace PyTorch -> ONNX (opset 17)") as s:
        proto = torch_to_onnx(model, input_size)
        s["size"] = proto.ByteSize()
    with steps.step("simplify (onnxsim)") as s:
        proto, structure, removed = simplify(proto, param_bytes)
        s["size"] = proto.ByteSize()
        s["note"] = (f"{sum(structure['ops'].values())} nodes, no Loop/If/Scan, DepthToSpace "
                     f"CRD, weights {structure['weight_bytes_ratio']:.3f}x params"
                     + (f", {removed} duplicate initializers merged" if removed else ""))

    ref = torch_runner(model)
    quant: dict[str, Any] = {}
    delta = None
    eval_info = None
    if precision == "fp32":
        with steps.step("parity vs PyTorch (real-image crops)") as s:
            run = onnx_runner(proto.SerializeToString())
            parity = compare(run, ref, parity_inputs)
            s["note"] = f"max |diff| {parity['max_abs_diff']:.2e}"
        gate_fp32(parity, str(out_path))
    else:
        if calib is None:
            raise ValueError("int8 export needs calibration data")
        with steps.step(f"quantize INT8 (QDQ, per-channel, {act_type} activations, "
                        f"{calib.info['patches']} patches)") as s:
            fp32_proto = proto
            proto, quant = quantize_int8(proto, calib, act_type=act_type, method=calib_method,
                                         exclude_cca=exclude_cca, keep_float=keep_float)
            proto.ir_version = max(proto.ir_version, IR_VERSION)
            s["size"] = proto.ByteSize()
            bound = quant["pair_bound"]
            s["note"] = (f"pair-safe weights: {bound['coarser_channels']} of "
                         f"{bound['channels']} channels on a coarser grid, worst uint8 x int8 "
                         f"pair sum {bound['worst_pair_sum']} <= {bound['limit']}")
        if qat_model is not None:
            qat_model.weight_rule = "pair_safe"  # the fake-quant model this file computes
            from .qat_ranges import apply_onnx_ranges

            what = "QAT: learned" if qat else "min/max (PyTorch observer)"
            with steps.step(f"{what} activation grids into the QDQ graph") as s:
                applied = apply_onnx_ranges(proto, fp32_proto, qat_model, parity_inputs[0])
                s["note"] = (f"{applied['tensors']} tensors"
                             + (f" ({applied['wide']} uint16)" if applied["wide"] else "")
                             + ", int32 biases requantized")
            quant["ranges"] = ("learned by quantization-aware fine-tuning (QAT)" if qat else
                               "min/max over the calibration patches (rdsrn.quant.qat "
                               "observer)")
            if applied["wide"]:
                quant["activations"] = (
                    f"uint8 asymmetric per tensor; uint16 (com.microsoft Q/DQ) on the "
                    f"{applied['wide']} tensors of the image-carrying streams, over their "
                    "8-bit ranges")
                quant["a16_streams"] = True
        run = onnx_runner(proto.SerializeToString())
        if qat_model is not None:  # QAT or widened grids: the file is that fake-quant model
            from .qat_ranges import gate_fakequant

            quant["parity_fakequant"] = gate_fakequant(steps, run, qat_model, parity_inputs,
                                                       str(out_path))
        with steps.step("parity vs PyTorch (real-image crops)") as s:
            parity = compare(run, ref, parity_inputs)
            s["note"] = f"PSNR vs torch {parity['psnr_vs_torch']} dB"
        eval_info = measure_int8_drop(steps, run, ref, eval_dir, input_size,
                                      int(model.config["scale"]), max_drop, str(out_path))
        delta = eval_info["delta_psnr"]
        from .saturation import pair_bound

        bound = pair_bound(proto)  # of the file as written, whatever changed its weights
        gate_pair_bound(bound, str(out_path))
        quant["pair_bound"] = {k: bound[k] for k in ("worst_pair_sum", "limit", "safe")}

    meta = build_metadata(src, fmt="onnx", precision=precision, io_dtype="float32",
                          input_size=input_size, quantization=quant, parity=parity,
                          delta_psnr=delta, eval_info=eval_info)
    embed_onnx(proto, meta)
    data = proto.SerializeToString()
    with steps.step(f"write {out_path}") as s:
        atomic_write_bytes(out_path, data)
        s["size"] = len(data)
    log(f"[onnx {precision}] done: {out_path} ({human_size(len(data))}) in "
        f"{steps.elapsed():.1f} s")
    return ExportResult(out_path, "onnx", precision, len(data), steps.elapsed(), meta)
