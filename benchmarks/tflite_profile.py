"""Per-op time profile of a .tflite model with the LiteRT Python package only.

The Python Interpreter has no op profiler (benchmark_model's --enable_op_profiling is
C++), so each operator is cut out into a one-op model — same op, same options, same
weights and quantization, tensors fixed to the shapes they take at the requested input
size — and timed alone under the same interpreter settings (XNNPACK by default). Ops
the delegate does not take in the one-op model run on the builtin kernels, and the
whole model's delegation (which ops fall outside XNNPACK and split it into partitions)
is reported beside it.

    python -m rdsrn.benchmarks.tflite_profile model.tflite --input 320x180 --threads 2

Caveats, printed with the result: one-op timings miss the whole graph's cache reuse
and partition fusion and add an invoke's fixed cost per op, so their sum differs from
the whole-model time; it is the shares that tell which ops dominate.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import device_bench as db


def _litert():
    from ai_edge_litert import interpreter as interp
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    return interp, schema, fbu


def _op_names(schema: Any) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def concrete_shapes(model_bytes: bytes, input_hw: tuple[int, int]) -> dict[int, list[int]]:
    """Tensor index -> shape at `input_hw`, from an un-delegated interpreter (every node
    prepared by its builtin kernel, so every intermediate shape is resolved)."""
    interp, _, _ = _litert()
    it = interp.Interpreter(
        model_content=bytes(model_bytes),
        experimental_op_resolver_type=interp.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [1, input_hw[0], input_hw[1], int(inp["shape"][3])],
                           strict=False)
    it.allocate_tensors()
    return {d["index"]: [int(v) for v in d["shape"]] for d in it.get_tensor_details()}


def one_op_models(model_bytes: bytes, input_hw: tuple[int, int]) -> list[dict[str, Any]]:
    """[{"index", "op", "bytes", "inputs": [(shape, np dtype, quant)]}] one per operator
    of subgraph 0."""
    _, schema, fbu = _litert()
    names = _op_names(schema)
    shapes = concrete_shapes(model_bytes, input_hw)
    model = fbu.read_model_from_bytearray(bytearray(model_bytes))
    sub = model.subgraphs[0]
    dtype_of = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
                schema.TensorType.INT8: np.int8, schema.TensorType.UINT8: np.uint8,
                schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64,
                schema.TensorType.INT16: np.int16}
    out = []
    for i, op in enumerate(sub.operators):
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(fbu.get_builtin_code_from_operator_code(code), "CUSTOM")
        used = [t for t in list(op.inputs) + list(op.outputs) if t >= 0]
        order = list(dict.fromkeys(used))
        remap = {t: k for k, t in enumerate(order)}
        buffers = [schema.BufferT()]
        tensors = []
        graph_inputs = []
        feed = []
        for t in order:
            src = sub.tensors[t]
            ten = copy.copy(src)
            ten.shape = shapes.get(t, list(src.shape) if src.shape is not None else [])
            ten.shapeSignature = None
            buf = model.buffers[src.buffer] if src.buffer else None
            has_data = buf is not None and buf.data is not None and len(buf.data) > 0
            if has_data:
                ten.buffer = len(buffers)
                buffers.append(buf)
            else:
                ten.buffer = 0
                if t in op.inputs:
                    graph_inputs.append(remap[t])
                    feed.append((tuple(ten.shape), dtype_of.get(src.type, np.float32)))
            tensors.append(ten)
        new_op = copy.copy(op)
        new_op.inputs = [remap[t] if t >= 0 else -1 for t in op.inputs]
        new_op.outputs = [remap[t] for t in op.outputs]
        new_op.intermediates = None
        g = schema.SubGraphT()
        g.tensors, g.operators = tensors, [new_op]
        g.inputs, g.outputs = graph_inputs, [remap[t] for t in op.outputs]
        g.name = f"op{i}"
        m = schema.ModelT()
        m.version, m.description = model.version, f"op {i} {name}"
        m.operatorCodes, m.subgraphs, m.buffers = model.operatorCodes, [g], buffers
        out.append({"index": i, "op": name, "bytes": bytes(fbu.convert_object_to_bytearray(m)),
                    "inputs": feed})
    return out


def time_model(model_bytes: bytes, threads: int, delegate: str, runs: int, warmup: int,
               feed: list[tuple[tuple[int, ...], Any]] | None = None) -> dict[str, Any]:
    """Median ms of invoke() (inputs set once), and whether it was delegated."""
    interp, _, _ = _litert()
    kwargs: dict[str, Any] = {"model_content": bytes(model_bytes), "num_threads": threads}
    if delegate == "none":
        kwargs["experimental_op_resolver_type"] = \
            interp.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = interp.Interpreter(**kwargs)
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    for det in it.get_input_details():
        shape = tuple(int(v) for v in det["shape"])
        dt = np.dtype(det["dtype"])
        if dt.kind == "f":
            x = rng.random(shape, dtype=np.float32).astype(dt)
        else:
            info = np.iinfo(dt)
            x = rng.integers(max(info.min, -128), min(info.max, 255), size=shape,
                             endpoint=True).astype(dt)
        it.set_tensor(det["index"], x)
    for _ in range(warmup):
        it.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t) * 1e3)
    deleg = db.delegation_summary(it._get_ops_details())
    return {"ms": statistics.median(times), "delegated": deleg["delegated"] == deleg["nodes"]}


def profile(path: str, input_hw: tuple[int, int], threads: int = 1, runs: int = 10,
            warmup: int = 2, delegate: str = "xnnpack") -> dict[str, Any]:
    """Whole-model time, delegation, and the per-op / per-op-type breakdown."""
    data = Path(path).read_bytes()
    whole_runner = db.TFLiteRunner(path, threads, input_hw, delegate)
    whole = db.measure(whole_runner.run, warmup, runs)
    whole.pop("times_ms")
    deleg = whole_runner.delegation()
    ops = []
    for item in one_op_models(data, input_hw):
        try:
            t = time_model(item["bytes"], threads, delegate, runs, warmup)
            ops.append({"index": item["index"], "op": item["op"], **t})
        except Exception as exc:  # one op that cannot run alone
            ops.append({"index": item["index"], "op": item["op"], "ms": None,
                        "error": db.one_line(exc)})
    total = sum(o["ms"] for o in ops if o["ms"] is not None)
    by_type: dict[str, dict[str, Any]] = {}
    for o in ops:
        t = by_type.setdefault(o["op"], {"count": 0, "ms": 0.0, "not_delegated": 0})
        t["count"] += 1
        t["ms"] += o["ms"] or 0.0
        t["not_delegated"] += 0 if o.get("delegated") else 1
    for t in by_type.values():
        t["share"] = t["ms"] / total if total else None
    return {
        "model": str(path), "input": db.format_size(input_hw), "threads": threads,
        "delegate": delegate, "whole_model_p50_ms": whole["p50_ms"],
        "sum_of_ops_ms": total, "delegation": deleg,
        "by_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1]["ms"])),
        "ops": ops,
        "caveat": "one-op models: no cross-op cache reuse or partition fusion, plus a "
                  "fixed invoke cost per op; compare shares, not absolute sums",
    }


def markdown(prof: dict[str, Any], top: int = 12) -> str:
    d = prof.get("delegation") or {}
    lines = [f"### {Path(prof['model']).name} — {prof['input']}, {prof['threads']} thread(s), "
             f"{prof['delegate']}", "",
             f"Whole model p50 {prof['whole_model_p50_ms']:.1f} ms; sum of one-op times "
             f"{prof['sum_of_ops_ms']:.1f} ms. Delegation of the whole model: "
             f"{d.get('delegated', '?')}/{d.get('nodes', '?')} nodes in "
             f"{d.get('partitions', '?')} partition(s); outside the delegate: "
             + (", ".join(f"{k} x{v}" for k, v in d.get("outside", {}).items()) or "none"),
             "", "| op type | count | ms (one-op sum) | share | not delegated alone |",
             "|---|---|---|---|---|"]
    for name, t in list(prof["by_type"].items())[:top]:
        lines.append(f"| {name} | {t['count']} | {t['ms']:.2f} | "
                     f"{100 * (t['share'] or 0):.1f}% | {t['not_delegated']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rdsrn.benchmarks.tflite_profile")
    p.add_argument("model")
    p.add_argument("--input", default="320x180")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--delegate", choices=("xnnpack", "none"), default="xnnpack")
    p.add_argument("--json", help="write the full profile here")
    args = p.parse_args(argv)
    prof = profile(args.model, db.parse_size(args.input), args.threads, args.runs,
                   args.warmup, args.delegate)
    print(markdown(prof))
    if args.json:
        Path(args.json).write_text(json.dumps(prof, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
