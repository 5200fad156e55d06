"""LiteRT GPU delegate compatibility of .tflite files, per op type.

    python -m rdsrn.export.gpu_compat FILE.tflite... [-o REPORT.md] [--no-analyzer]

Two sources, both reported:
- TensorFlow's model analyzer, `tf.lite.experimental.Analyzer.analyze(model_path=...,
  gpu_compatibility=True)`: prints "GPU COMPATIBILITY WARNING: <reason>" under each op
  the delegate rejects. Its output is parsed (parse_analyzer).
- `rule_check`: the same per-op checks, ported from TensorFlow's
  tensorflow/lite/tools/versioning/gpu_compatibility.cc (the code the analyzer and the
  delegate's own op filter call) for the ops these models use, plus the list of op
  types that file accepts at all. Needed because the analyzer in the pip builds of
  TensorFlow 2.21 / ai-edge-litert 2.3 never warns: its GPU check is compiled out (the
  warning strings are absent from the shared library, and a model with TOPK_V2 and
  ARG_MAX, which the check rejects, "looks compatible"). `analyzer_is_effective()`
  finds this out with such a canary model, so a no-op check is never shown as a pass.

Model-level notes (not per-op, and not in the analyzer): a dynamic input shape (the
delegate compiles its GPU program for the shapes in place when it is applied, and again
after every resize) and full-integer files (the delegate accepts them, quantized
inference being on by default, but computes in floating point on dequantized weights).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rdsrn.runtimes.errors import MissingExtraError, UserError

# Op types CheckGpuDelegateCompatibility (gpu_compatibility.cc) accepts at all; every
# other builtin gets "Not supported op X".
GPU_OPS = frozenset("""
ADD ADD_N AVERAGE_POOL_2D BATCH_MATMUL CAST CONCATENATION CONV_2D CUMSUM DENSIFY
DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP DYNAMIC_UPDATE_SLICE
FULLY_CONNECTED GATHER HARD_SWISH LSTM MAX_POOL_2D MEAN MUL PACK ONE_HOT QUANTIZE
RELU_N1_TO_1 PRELU RESHAPE SELECT SELECT_V2 SLICE SOFTMAX SPACE_TO_DEPTH SPLIT SPLIT_V
STRIDED_SLICE TILE TRANSPOSE TRANSPOSE_CONV RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RELU
RELU6 LEAKY_RELU REDUCE_MAX REDUCE_MIN REDUCE_PROD SUM PAD PADV2 MIRROR_PAD
ABS CEIL COS ELU EXP FLOOR GELU LOG LOGISTIC NEG RSQRT SIGN SIN SQRT SQUARE TANH
ATAN2 DIV EQUAL FLOOR_DIV FLOOR_MOD GREATER GREATER_EQUAL LOGICAL_AND LESS LESS_EQUAL
MAXIMUM MINIMUM NOT_EQUAL POW SQUARED_DIFFERENCE SUB STABLEHLO_CLAMP
""".split())
UNARY = frozenset("ABS CEIL COS ELU EXP FLOOR GELU LOG LOGISTIC NEG RSQRT SIGN SIN SQRT "
                  "SQUARE TANH".split())
BINARY = frozenset("ATAN2 DIV EQUAL FLOOR_DIV FLOOR_MOD GREATER GREATER_EQUAL LOGICAL_AND "
                   "LESS LESS_EQUAL MAXIMUM MINIMUM NOT_EQUAL POW SQUARED_DIFFERENCE "
                   "SUB".split())
ALWAYS_OK = frozenset("CONCATENATION PACK RELU_N1_TO_1 PRELU SPLIT SPLIT_V RELU RELU6 "
                      "LEAKY_RELU".split())
# Ops whose detailed conditions in gpu_compatibility.cc are checked here.
PORTED = ALWAYS_OK | UNARY | BINARY | frozenset(
    "ADD MUL CONV_2D DEPTH_TO_SPACE MEAN SUM REDUCE_MAX REDUCE_MIN "
    "REDUCE_PROD QUANTIZE DEQUANTIZE RESHAPE CAST".split())
# TfLiteFusedActivation values IsActivationSupported accepts: NONE RELU RELU_N1_TO_1
# RELU6 TANH SIGMOID (schema enum 0..4 and 6; 5 is SIGN_BIT).
_OK_ACTIVATIONS = {0, 1, 2, 3, 4, 6}

Log = Callable[[str], None]


@dataclass
class Node:
    """One operator of subgraph 0 with what the checks need."""

    index: int
    op: str
    inputs: list[dict[str, Any]]   # see read_nodes.tensor (optional inputs, -1, skipped)
    outputs: list[dict[str, Any]]
    options: dict[str, Any]
    version: int = 1  # operator version (the delegate caps these per op at run time)


@dataclass
class OpCompat:
    """Verdict for one op type: compatible unless some node of it is rejected."""

    op: str
    count: int
    compatible: bool
    reasons: list[str] = field(default_factory=list)  # distinct, "analyzer: ..." / "rules: ..."
    nodes: list[int] = field(default_factory=list)    # rejected node indices
    detail_checked: bool = True  # False: op type accepted, its conditions not ported here
    version: int = 1


@dataclass
class GpuReport:
    path: str
    precision: str            # fp32 | fp16 | int8 (from the tensor types)
    input_shape: list[int]    # shape signature, -1 = dynamic
    io_dtype: str
    ops: list[OpCompat]
    analyzer: dict[str, Any]  # ran, effective, verdict, version, warnings {node: reason}
    notes: list[str]

    @property
    def static(self) -> bool:
        return all(d > 0 for d in self.input_shape)

    @property
    def compatible(self) -> bool:
        return all(o.compatible for o in self.ops)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "precision": self.precision,
                "input_shape": self.input_shape, "io_dtype": self.io_dtype,
                "static": self.static, "compatible": self.compatible,
                "ops": [vars(o) for o in self.ops], "analyzer": self.analyzer,
                "notes": self.notes}


# ------------------------------------------------------------------------ the analyzer


def run_analyzer(model_path: str | Path | None = None, model_content: bytes | None = None
                 ) -> str:
    """The analyzer's text report (it prints to stdout; captured here)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        raise MissingExtraError("the GPU analyzer needs TensorFlow: pip install "
                                "'rdsrn[export]'") from None
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if model_path is not None:
            tf.lite.experimental.Analyzer.analyze(model_path=str(model_path),
                                                  gpu_compatibility=True)
        else:
            tf.lite.experimental.Analyzer.analyze(model_content=model_content,
                                                  gpu_compatibility=True)
    return buf.getvalue()


_OP_LINE = re.compile(r"^\s*Op#(\d+) ([A-Za-z0-9_]+)\(")
_SUBGRAPH = re.compile(r"^Subgraph#(\d+) ")
_WARN = re.compile(r"^\s*GPU COMPATIBILITY WARNING: (.*)$")
_SUMMARY = re.compile(r"Subgraph#(\d+) has GPU delegate compatibility issues at nodes "
                      r"([\d, ]+) with TFLite runtime version (\S+)")


def parse_analyzer(text: str) -> dict[str, Any]:
    """Parse the analyzer's report.

    Returns {"ops": [(subgraph, node, op)], "warnings": {(subgraph, node): reason},
    "issue_nodes": {subgraph: [node, ...]} (its closing per-subgraph line),
    "verdict": "compatible" | "issues" | None, "version": runtime version or ""}.
    A warning line belongs to the op line above it."""
    ops: list[tuple[int, int, str]] = []
    warnings: dict[tuple[int, int], str] = {}
    issue_nodes: dict[int, list[int]] = {}
    version = ""
    sg = 0
    last: tuple[int, int] | None = None
    for line in text.splitlines():
        m = _SUBGRAPH.match(line)
        if m:
            sg, last = int(m.group(1)), None
            continue
        m = _OP_LINE.match(line)
        if m:
            last = (sg, int(m.group(1)))
            ops.append((sg, last[1], m.group(2)))
            continue
        m = _WARN.match(line)
        if not m:
            continue
        s = _SUMMARY.search(m.group(1))
        if s:
            issue_nodes[int(s.group(1))] = [int(v) for v in s.group(2).split(",") if v.strip()]
            version = s.group(3)
        elif last is not None:
            prev = warnings.get(last)
            warnings[last] = f"{prev}; {m.group(1).strip()}" if prev else m.group(1).strip()
    v = re.search(r"looks compatible with GPU delegate on TFLite runtime version (\S+?)\.?$",
                  text, re.MULTILINE)
    verdict = "issues" if (warnings or issue_nodes) else ("compatible" if v else None)
    return {"ops": ops, "warnings": warnings, "issue_nodes": issue_nodes,
            "verdict": verdict, "version": version or (v.group(1) if v else "")}


def canary_model() -> bytes:
    """A tiny float model whose TOPK_V2 and ARG_MAX every GPU check rejects."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32)])
    def f(x):
        v, _ = tf.math.top_k(x, k=2)
        return v + tf.cast(tf.argmax(x, axis=3), tf.float32)[..., None]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    return bytes(conv.convert())


def analyzer_is_effective() -> bool:
    """Whether this TensorFlow's analyzer really checks GPU compatibility: it must warn
    about the canary model."""
    return parse_analyzer(run_analyzer(model_content=canary_model()))["verdict"] == "issues"


# ----------------------------------------------------------------------------- rules


def _enum_names(enum: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def read_nodes(model_bytes: bytes) -> tuple[list[Node], dict[str, Any]]:
    """Operators of subgraph 0 and the model input/output tensor info, from the
    FlatBuffer (LiteRT's generated schema; no TensorFlow)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise MissingExtraError("reading .tflite graphs needs ai-edge-litert: pip install "
                                "'rdsrn[tflite]'") from None
    try:
        model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    except Exception as e:  # flatbuffers raises assorted errors on garbage
        raise UserError(f"not a TFLite model ({type(e).__name__})") from None
    ops_names = _enum_names(schema.BuiltinOperator)
    dtypes = _enum_names(schema.TensorType)
    sg = model.subgraphs[0]

    def is_const(i: int) -> bool:
        t = sg.tensors[i]
        buf = model.buffers[t.buffer] if 0 < t.buffer < len(model.buffers) else None
        data = getattr(buf, "data", None) if buf is not None else None
        return data is not None and len(data) > 0

    # The delegate's FP16GraphPartitionHelper remaps consumers of DEQUANTIZE(fp16
    # constant) to the constant itself, so their outputs count as constants.
    fp16_consts = set()
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = ops_names.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)))
        if name == "DEQUANTIZE" and len(op.inputs) == 1 and is_const(op.inputs[0]) \
                and dtypes.get(sg.tensors[op.inputs[0]].type) == "FLOAT16":
            fp16_consts.add(int(op.outputs[0]))

    def tensor(i: int) -> dict[str, Any]:
        t = sg.tensors[i]
        sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) \
            else t.shape
        # "dims": the stored shape, what the offline check (op_signature.cc) uses;
        # "signature": with -1 for dynamic dimensions.
        return {"dims": [int(d) for d in (t.shape if t.shape is not None else [])],
                "signature": [int(d) for d in (sig if sig is not None else [])],
                "dtype": dtypes.get(t.type, str(t.type)),
                "const": is_const(i) or i in fp16_consts, "fp16_folded": i in fp16_consts}

    nodes = []
    for idx, op in enumerate(sg.operators):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        name = ops_names.get(builtin, str(builtin))
        if name == "CUSTOM":
            name = (code.customCode or b"CUSTOM").decode()
        opts = vars(op.builtinOptions) if op.builtinOptions is not None else {}
        nodes.append(Node(idx, name, [tensor(i) for i in op.inputs if i >= 0],
                          [tensor(i) for i in op.outputs if i >= 0], dict(opts),
                          int(code.version or 1)))
    io_info = {"input": tensor(sg.inputs[0]), "output": tensor(sg.outputs[0])}
    return nodes, io_info


def _runtime(ins: list[dict[str, Any]]) -> int:
    return sum(1 for t in ins if not t["const"])


def _broadcast_ok(a: list[int], b: list[int]) -> bool:
    """Enhanced broadcast (what offline checks assume): numpy rules over the stored
    shapes; only checked between tensors of different rank, as the C++ does."""
    if len(a) <= 1 or len(b) <= 1 or len(a) == len(b):
        return True
    for x, y in zip(reversed(a), reversed(b)):
        if x != y and 1 not in (x, y):
            return False
    return True


def check_node(n: Node) -> str | None:
    """gpu_compatibility.cc's verdict for one node: None = accepted, else the reason
    (its wording)."""
    op, ins = n.op, n.inputs
    if op not in GPU_OPS:
        return f"Not supported op {op}"
    act = n.options.get("fusedActivationFunction", 0)
    if op in ("ADD", "MUL"):
        if len(ins) != 2:
            return f"{op} requires two input tensors."
        a, b = ins[0]["dims"], ins[1]["dims"]
        if op == "MUL" and len(a) == len(b) and any(x < y for x, y in zip(a, b)) \
                and any(y < x for x, y in zip(a, b)):
            return "MUL requires one tensor that not less than second in all dimensions."
        if not _broadcast_ok(a, b):
            return (f"Doesn't support broadcasting - input0: [{','.join(map(str, a))}], "
                    f"input1: [{','.join(map(str, b))}]")
        if op == "MUL" and act not in _OK_ACTIVATIONS:
            return f"Unsupported fused activation {act}"
        return None
    if op == "CONV_2D":
        if _runtime(ins) > 2:
            return f"Expected 1 or 2 input tensor(s), but node has {_runtime(ins)} runtime inputs."
        if len(n.outputs) != 1:
            return f"Expected 1 output tensor(s), but node has {len(n.outputs)} output(s)."
        for k in ("strideH", "strideW", "dilationHFactor", "dilationWFactor"):
            if int(n.options.get(k, 1)) < 1:
                return f"Incorrect {k} value {n.options.get(k)}"
        return None if act in _OK_ACTIVATIONS else f"Unsupported fused activation {act}"
    if op == "DEPTH_TO_SPACE":
        bs = int(n.options.get("blockSize", 0))
        if bs == 1:
            return "DEPTH_TO_SPACE block_size = 1 is a no-op."
        return None if bs > 1 else "DEPTH_TO_SPACE block_size must be > 1."
    if op in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
        if _runtime(ins) != 1 or len(ins) != 2:
            return (f"Expected 1 runtime input tensor(s), but node has {_runtime(ins)} "
                    "runtime input(s).")
        if not ins[1]["const"] or ins[1]["dtype"] != "INT32":
            return "Axes must be an int32 constant."
        return None
    if op in ("QUANTIZE", "RESHAPE"):
        if _runtime(ins) != 1 or len(n.outputs) != 1:
            return (f"Expected 1 runtime input tensor(s), but node has {_runtime(ins)} "
                    "runtime input(s).")
        return None
    if op == "DEQUANTIZE":
        if len(ins) != 1 or len(n.outputs) != 1:
            return "Expected 1 input & output each from Dequantize"
        return "Unsupported dequantization type." if ins[0]["dtype"] == "INT16" else None
    if op == "CAST":
        if _runtime(ins) != 1 or len(n.outputs) != 1:
            return (f"Expected 1 runtime input tensor(s), but node has {_runtime(ins)} "
                    "runtime input(s).")
        a, b = ins[0]["dtype"], n.outputs[0]["dtype"]
        flt = ("FLOAT16", "FLOAT32")
        if (a == "BOOL" and b in flt) or (a in flt and b == "BOOL") or \
                (a in ("FLOAT32", "INT32") and b in ("FLOAT32", "INT32")):
            return None
        return f"Not supported Cast case. Input type: {a} and output type: {b}"
    if op in UNARY:
        if _runtime(ins) != 1 or len(ins) != 1:
            return (f"Expected 1 runtime input tensor(s) and 0 constant(s), but node has "
                    f"{_runtime(ins)} and {len(ins) - _runtime(ins)}.")
        return None
    if op in BINARY:
        rt = _runtime(ins)
        if not (len(ins) == 2 and rt in (1, 2)):
            return "Op can only handle 1 or 2 operand(s)."
        return None if act in _OK_ACTIVATIONS else f"Unsupported fused activation {act}"
    return None  # ALWAYS_OK, or accepted op type whose conditions are not ported


def precision_of(nodes: list[Node], io_info: dict[str, Any]) -> str:
    """fp32 | fp16 | int8 from the tensor types (int8 = int8 conv weights)."""
    kinds = {t["dtype"] for n in nodes for t in n.inputs + n.outputs}
    if any(n.op == "CONV_2D" and n.inputs[1]["dtype"] == "INT8" for n in nodes):
        return "int8"
    return "fp16" if "FLOAT16" in kinds else "fp32"


def model_notes(nodes: list[Node], io_info: dict[str, Any], precision: str) -> list[str]:
    """Runtime caveats that are not per-op verdicts (see the module docstring)."""
    notes = []
    dims = io_info["input"]["signature"]
    if any(d < 0 for d in dims):
        notes.append(
            f"dynamic input {dims}: the delegate compiles its GPU program for the shapes in "
            "place when it is applied, so the input must be resized first "
            "(benchmark_model --input_layer_shape=1,H,W,3) and every new size re-applies "
            "the delegate (a new shader compile); a static tile file (rdsrn export "
            "--input-size HxW) avoids both")
    if precision == "int8":
        qd = sum(1 for n in nodes if n.op in ("QUANTIZE", "DEQUANTIZE"))
        notes.append(
            f"full-integer file ({io_info['input']['dtype'].lower()} I/O): the delegate "
            "accepts it (quantized inference is on by default, "
            "TFLITE_GPU_EXPERIMENTAL_FLAGS_ENABLE_QUANT) but computes in fp16/fp32 on "
            "dequantized weights, emulating the int8 activation rounding; no int8 "
            f"arithmetic on the GPU, so expect FP16-file speed at best ({qd} "
            "QUANTIZE/DEQUANTIZE node(s) at the boundary)")
    if precision == "fp16":
        dq = sum(1 for n in nodes if n.op == "DEQUANTIZE")
        notes.append(f"fp16 weights: {dq} DEQUANTIZE node(s) (fp16 constant -> fp32); the "
                     "delegate's FP16GraphPartitionHelper hands their consumers the fp16 "
                     "constants directly, so CONV_2D sees constant weights (an offline "
                     "check that ignored this would count 3 runtime inputs and reject every "
                     "CONV_2D); with precision loss allowed (the default) it computes in fp16")
    return notes


def gpu_report(path: str | Path, *, use_analyzer: bool = True,
               analyzer_effective: bool | None = None) -> GpuReport:
    """Per-op-type GPU delegate verdict for one .tflite file.

    `analyzer_effective`: result of analyzer_is_effective() when the caller has it
    (it costs a conversion); None = find out here."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: {e.strerror or e}") from None
    nodes, io_info = read_nodes(data)
    an: dict[str, Any] = {"ran": False, "effective": None, "verdict": None, "version": "",
                          "warnings": {}}
    if use_analyzer:
        parsed = parse_analyzer(run_analyzer(model_path=path))
        if analyzer_effective is None:
            analyzer_effective = analyzer_is_effective()
        an = {"ran": True, "effective": analyzer_effective, "verdict": parsed["verdict"],
              "version": parsed["version"],
              "warnings": {n: r for (sg, n), r in parsed["warnings"].items() if sg == 0}}
    by_op: dict[str, OpCompat] = {}
    for n in nodes:
        oc = by_op.setdefault(n.op, OpCompat(n.op, 0, True,
                                             detail_checked=n.op in PORTED
                                             or n.op not in GPU_OPS, version=n.version))
        oc.count += 1
        reasons = []
        rule = check_node(n)
        if rule:
            reasons.append(f"rules: {rule}")
        if n.index in an["warnings"]:
            reasons.append(f"analyzer: {an['warnings'][n.index]}")
        if reasons:
            oc.compatible = False
            oc.nodes.append(n.index)
            oc.reasons += [r for r in reasons if r not in oc.reasons]
    precision = precision_of(nodes, io_info)
    return GpuReport(str(path), precision, io_info["input"]["signature"],
                     io_info["input"]["dtype"].lower(),
                     sorted(by_op.values(), key=lambda o: (o.compatible, -o.count)),
                     an, model_notes(nodes, io_info, precision))


# ------------------------------------------------------------------ a real GPU run


def gpu_run_check(path: str | Path, image: "Any | None" = None) -> dict[str, Any]:
    """Compile `path` (a static-shape file) for LiteRT's GPU accelerator alone, run it
    once on `image` (uint8 HxWx3 RGB of the model's input size; default a seeded
    random one) and compare with LiteRT's CPU interpreter.

    Needs a GPU LiteRT can reach: the wheel's WebGPU accelerator runs on Vulkan, and on
    a machine without a GPU Mesa's lavapipe (a Vulkan driver on the CPU) serves. Returns
    {"fully_accelerated": bool, "ran": True, "max_abs_diff": float (output in [0, 1]
    units), "psnr_vs_cpu": dB}; "readback_error" instead of the comparison when the
    output buffer cannot be read on the host; "error" (one line) when there is no GPU
    or compiling / running fails."""
    import numpy as np
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.interpreter import Interpreter

    path = str(path)
    cpu = Interpreter(model_path=path)
    cpu.allocate_tensors()
    i, o = cpu.get_input_details()[0], cpu.get_output_details()[0]
    shape = [int(v) for v in i["shape_signature"]]
    if any(d < 0 for d in shape):
        return {"error": "dynamic input shape: export a static tile (--input-size HxW)"}
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, shape[1:], dtype=np.uint8)
    x = image[None]
    if np.dtype(i["dtype"]).kind == "f":
        x = x.astype(np.float32) / 255.0
    x = x.astype(i["dtype"])
    cpu.set_tensor(i["index"], x)
    cpu.invoke()
    ref = cpu.get_tensor(o["index"])

    def unit(y: Any) -> Any:  # output in [0, 1]
        scale, zp = o["quantization"]
        y = y.astype(np.float32)
        return (y - zp) * scale if np.dtype(o["dtype"]).kind in "iu" and scale else y

    def err(e: Exception) -> str:
        return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1][:160]}"

    out: dict[str, Any] = {}
    try:
        gpu = CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.GPU)
        out["fully_accelerated"] = bool(gpu.is_fully_accelerated())
        ins, outs = gpu.create_input_buffers(0), gpu.create_output_buffers(0)
        ins[0].write(x)
        gpu.run_by_index(0, ins, outs)
        out["ran"] = True
    except Exception as e:  # no adapter, compile or invoke failure: one line
        out["error"] = err(e)
        return out
    try:
        got = outs[0].read(ref.size, ref.dtype).reshape(ref.shape)
    except Exception as e:  # ai-edge-litert 2.3 cannot map WebGPU output buffers
        out["readback_error"] = err(e)
        return out
    diff = np.abs(unit(got) - unit(ref))
    mse = float(np.mean(diff ** 2))
    out.update(max_abs_diff=float(diff.max()),
               psnr_vs_cpu=round(10 * np.log10(1.0 / mse), 2) if mse > 0 else float("inf"))
    return out


# --------------------------------------------------------------------------- output


def summary_line(r: GpuReport) -> str:
    """One line for `rdsrn export` output."""
    n = sum(o.count for o in r.ops)
    bad = [o for o in r.ops if not o.compatible]
    shape = "static" if r.static else "dynamic"
    if r.analyzer["ran"] and not r.analyzer["effective"]:
        src = "rules (this TensorFlow's analyzer has no GPU check)"
    elif r.analyzer["ran"]:
        src = f"analyzer {r.analyzer['version']} + rules"
    else:
        src = "rules"
    if not bad:
        head = f"all {n} ops in {len(r.ops)} op types GPU-delegate compatible"
    else:
        head = (f"{sum(o.count for o in bad)} of {n} ops NOT GPU-delegate compatible: "
                + ", ".join(f"{o.op} x{len(o.nodes)}" for o in bad))
    return f"GPU delegate: {head} ({src}; {shape} input {r.input_shape})"


def markdown(reports: Sequence[GpuReport]) -> str:
    """Per-file sections: the op table, analyzer status, notes."""
    out = []
    for r in reports:
        out.append(f"### {Path(r.path).name}\n")
        out.append(f"{r.precision}, input {r.io_dtype} {r.input_shape} "
                   f"({'static' if r.static else 'dynamic'}); {summary_line(r)}\n")
        a = r.analyzer
        if a["ran"]:
            eff = ("checks GPU compatibility" if a["effective"] else
                   "**does not check GPU compatibility** (canary model with TOPK_V2/ARG_MAX "
                   "not flagged): its verdict is not evidence")
            out.append(f"Analyzer (TFLite runtime {a['version'] or '?'}): verdict "
                       f"`{a['verdict']}`, {len(a['warnings'])} warning(s); this build {eff}.\n")
        out.append("| op (version) | count | GPU compatible | reason |")
        out.append("|---|---:|---|---|")
        for o in r.ops:
            why = "; ".join(o.reasons) if o.reasons else (
                "" if o.detail_checked else "op type accepted; its conditions not ported")
            nodes = f" (nodes {', '.join(map(str, o.nodes[:8]))}" \
                    f"{'...' if len(o.nodes) > 8 else ''})" if o.nodes else ""
            out.append(f"| {o.op} (v{o.version}) | {o.count} | "
                       f"{'yes' if o.compatible else 'NO'}{nodes} "
                       f"| {why} |")
        if r.notes:
            out.append("\nNotes:\n")
            out += [f"- {n}" for n in r.notes]
        out.append("")
    return "\n".join(out)


def report_for_export(path: str | Path, log: Log = print) -> GpuReport | None:
    """`rdsrn export` hook: write PATH.gpu.md beside the .tflite and log one line.
    A failing check is logged (one line) and does not fail the export."""
    from .common import atomic_write_bytes

    path = Path(path)
    try:
        r = gpu_report(path)
        side = path.with_name(path.name + ".gpu.md")
        atomic_write_bytes(side, (f"# GPU delegate compatibility\n\n{markdown([r])}")
                           .encode())
    except Exception as e:  # the artifact is written and valid: report, don't fail it
        log(f"[gpu] check of {path.name} failed: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        return None
    log(f"[gpu] {summary_line(r)} -> {side.name}")
    return r


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rdsrn.export.gpu_compat",
                                 description="LiteRT GPU delegate compatibility report")
    ap.add_argument("files", nargs="+", metavar="FILE.tflite")
    ap.add_argument("-o", "--out", help="write the markdown here (default: stdout)")
    ap.add_argument("--no-analyzer", action="store_true",
                    help="rules only (no TensorFlow needed)")
    ap.add_argument("--run", action="store_true", help="also compile and run each static "
                    "file on LiteRT's GPU accelerator (WebGPU on Vulkan) vs its CPU")
    args = ap.parse_args(argv)
    eff = None if args.no_analyzer else analyzer_is_effective()
    reports = []
    failed = 0
    for f in args.files:
        try:
            reports.append(gpu_report(f, use_analyzer=not args.no_analyzer,
                                      analyzer_effective=eff))
        except UserError as e:
            print(f"gpu_compat: error: {f}: {e}", flush=True)
            failed += 1
    text = markdown(reports)
    if args.run:
        rows = ["", "### LiteRT GPU accelerator run (one inference vs the CPU interpreter)", "",
                "| file | fully accelerated | ran | max abs diff | PSNR vs CPU dB | error |",
                "|---|---|---|---:|---:|---|"]
        for r in reports:
            g = gpu_run_check(r.path)
            rows.append(f"| {Path(r.path).name} | {g.get('fully_accelerated', '-')} | "
                        f"{g.get('ran', False)} | {g.get('max_abs_diff', '-')} | "
                        f"{g.get('psnr_vs_cpu', '-')} | "
                        f"{g.get('error', g.get('readback_error', ''))} |")
        text += "\n".join(rows) + "\n"
    if args.out:
        from .common import atomic_write_bytes

        atomic_write_bytes(Path(args.out), text.encode())
        for r in reports:
            print(f"{Path(r.path).name}: {summary_line(r)}")
    else:
        print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
