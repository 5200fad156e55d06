"""INT8 exports that honour what QAT learned, and `--keep-float` layer groups (ONNX).

- `apply_onnx_ranges`: writes the activation scales / zero points a QAT model trained
  with (rdsrn.quant.qat.QATRDSRN) into an onnxruntime QDQ graph, in place of the
  calibrated ones, and requantizes the int32 conv biases (bias scale = input scale x
  weight scale). Each QDQ tensor is matched to its QAT point numerically: both models
  run in float on one real image crop and every quantized ONNX tensor is paired with
  the QAT point holding the same values (names differ; values do not). Channel splits and
  DepthToSpace keep their input's grid, input and output stay 1/255.
- `onnx_node_group`: the layer group (rdsrn.quant.qat.GROUPS) of an exported node, for
  `--keep-float` (those nodes stay float: onnxruntime's nodes_to_exclude).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rdsrn.runtimes.errors import UserError


# Ops whose output keeps its input's grid (onnxruntime runs them on the int8 codes).
_SAME_GRID = ("Split", "DepthToSpace", "Resize")


def onnx_node_group(name: str) -> str:
    """Layer group of a node of the traced FP32 graph (names like "/m/rb/cca/fc1/Conv")."""
    if name.startswith("/m/recon/") or not name.startswith("/m/") or name in (
            "/m/Resize", "/m/Constant", "/m/Add_1"):
        # the recon conv, the output clamp, the anchor skip's upsample (its scales
        # constant) + add
        return "recon"
    if name.startswith(("/m/shallow1/", "/m/shallow2/")) or name == "/m/LeakyRelu":
        return "shallow"
    if name.startswith("/m/rb"):
        return "cca" if "/cca" in name else "body"
    if name.startswith(("/m/fusion/", "/m/lr_conv/")) or name in (
            "/m/Concat", "/m/LeakyRelu_1", "/m/Add"):
        return "fusion"
    if name.startswith("/m/upconv/") or name == "/m/DepthToSpace":
        return "upsample"
    if name.startswith("/m/hfrrb"):
        return "hfrrb"
    raise RuntimeError(f"ONNX node {name!r} belongs to no layer group (exporter bug)")


def nodes_outside(model: Any, groups: set[str], inside: bool) -> list[str]:
    """Names of the nodes of `model` in (`inside`) / not in the layer `groups`."""
    return [n.name for n in model.graph.node if (onnx_node_group(n.name) in groups) == inside]


def point_values(qat: Any, x: np.ndarray, fake_quant: bool = False) -> dict[str, np.ndarray]:
    """Every activation point of the QAT model on NCHW `x`: float values, or
    (`fake_quant`) the quantized values the INT8 graphs hold."""
    import torch

    rec: dict[str, np.ndarray] = {}
    fq = qat._fq

    def record(name: str, t: torch.Tensor) -> torch.Tensor:
        out = fq(name, t) if fake_quant else t
        rec[name] = out.detach().float().numpy()
        return out

    mode = qat.mode
    qat.mode = "quant" if fake_quant else "float"
    qat._fq = record
    try:
        with torch.inference_mode():
            qat(torch.from_numpy(x))
    finally:
        qat._fq = fq
        qat.mode = mode
    return rec


def _onnx_values(fp32: Any, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """Intermediate tensors `names` of the FP32 graph on NCHW `x` (onnxruntime)."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(fp32)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = sess.run(names, {sess.get_inputs()[0].name: x})
    return dict(zip(names, outs))


def apply_onnx_ranges(qdq: Any, fp32: Any, qat: Any, sample: np.ndarray) -> dict[str, Any]:
    """Overwrite the activation Q/DQ grids of `qdq` (in place) by the QAT model's.

    `fp32`: the FP32 graph `qdq` was quantized from; `qat`: the QATRDSRN with the learned
    ranges; `sample`: one real LR crop, float32 NHWC [1, h, w, 3] in [0, 1] (h, w >= 8).
    The tensors of the points in `qat.wide` get uint16 grids over the same range
    (com.microsoft QuantizeLinear / DequantizeLinear: opset 17 has no 16-bit ones).
    Returns {"tensors": how many grids were set (all), "wide": how many of them are
    uint16, "max_match_error": float}.
    """
    from onnx import numpy_helper

    from rdsrn.quant.qat import widen

    inits = {i.name: i for i in qdq.graph.initializer}
    prod = {o: n for n in qdq.graph.node for o in n.output}
    graph_in = {i.name for i in qdq.graph.input}
    acts = [n for n in qdq.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    x = np.ascontiguousarray(sample.transpose(0, 3, 1, 2)).astype(np.float32)
    ranges = qat.ranges()
    # The clamped output's Q/DQ pair (its DQ feeds the graph output) stays 1/255.
    graph_out = {o.name for o in qdq.graph.output}
    dq_of = {n.input[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    fixed = graph_in | {q.input[0] for q in acts
                        if q.output[0] in dq_of and dq_of[q.output[0]].output[0] in graph_out}
    float_names = {o for n in fp32.graph.node for o in n.output}
    direct = [q for q in acts if q.input[0] not in fixed
              and prod[q.input[0]].op_type not in _SAME_GRID]
    lost = [q.input[0] for q in direct if q.input[0] not in float_names]
    if lost:
        raise RuntimeError(f"QAT ranges: quantized tensor {lost[0]} is not in the FP32 graph")
    # A Split / DepthToSpace / Resize whose input is float (a --keep-float group before it) is
    # quantized at its output: it takes the grid of the point its input holds.
    copies = {q.input[0]: prod[q.input[0]].input[0] for q in acts
              if q.input[0] not in fixed and prod[q.input[0]].op_type in _SAME_GRID
              and prod[q.input[0]].input[0] in float_names}
    onnx_vals = _onnx_values(fp32, sorted({q.input[0] for q in direct} | set(copies.values())), x)
    point_vals = point_values(qat, x)
    grid: dict[str, tuple[float, int]] = {}
    wide: set[str] = set()  # tensors on uint16 grids
    worst = 0.0
    for t in [q.input[0] for q in direct] + sorted(copies):
        v = onnx_vals[copies.get(t, t)]
        best, err = None, np.inf
        for p, pv in point_vals.items():
            if pv.shape != v.shape:
                continue
            e = float(np.abs(pv - v).max()) / (float(np.abs(v).max()) + 1e-6)
            if e < err:
                best, err = p, e
        if best is None or err > 1e-3:
            raise RuntimeError(f"QAT ranges: no QAT point matches ONNX tensor {t} "
                               f"(best {best}, rel. error {err:.2g}): graphs differ")
        worst = max(worst, err)
        r = ranges[best]
        grid[t] = (float(r["scale"]), int(r["zero_point"]))
        if best in qat.wide:
            wide.add(t)
    for t in fixed:  # graph input, the clamped output: the 8-bit pixel grid
        grid[t] = (1.0 / 255.0, 0)
    # Split / DepthToSpace / Resize outputs: their input's grid (what onnxruntime
    # requires to run them on int8 data; the anchor's Resize reads the graph input).
    for q in acts:
        t = q.input[0]
        if t in grid or t in fixed:
            continue
        p = prod[t]
        src = p.input[0]  # the DequantizeLinear output; walk back DQ <- Q <- tensor
        while src in prod and prod[src].op_type in ("DequantizeLinear", "QuantizeLinear"):
            src = prod[src].input[0]
        if p.op_type in _SAME_GRID and src in grid:
            grid[t] = grid[src]
            if src in wide:
                wide.add(t)
    n_set = 0
    for q in acts:
        t = q.input[0]
        if t not in grid:
            raise RuntimeError(f"QAT ranges: no grid for quantized tensor {t}")
        s, z = grid[t]
        sc, zp = inits[q.input[1]], inits[q.input[2]]
        zdtype = numpy_helper.to_array(zp).dtype
        if zdtype != np.uint8:
            raise UserError("QAT ranges are uint8 grids: export with --int8-act uint8")
        if t in wide:
            (s, z), zdtype = widen(s, z), np.dtype(np.uint16)
            _to_contrib(qdq, q)
        sc.CopyFrom(numpy_helper.from_array(np.array(s, np.float32), sc.name))
        zp.CopyFrom(numpy_helper.from_array(np.array(z, zdtype), zp.name))
        n_set += 1
    requantize_biases(qdq, inits, prod)
    return {"tensors": n_set, "wide": len(wide), "max_match_error": float(f"{worst:.3g}")}


def _to_contrib(qdq: Any, q: Any) -> None:
    """Move QuantizeLinear `q` and the DequantizeLinear nodes reading it (they share its
    scale / zero point) to the com.microsoft domain, whose Q/DQ take uint16."""
    import onnx

    for n in [q] + [n for n in qdq.graph.node
                    if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]]:
        n.domain = "com.microsoft"
    if not any(o.domain == "com.microsoft" for o in qdq.opset_import):
        qdq.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))


def requantize_biases(qdq: Any, inits: dict[str, Any], prod: dict[str, Any]) -> None:
    """int32 conv biases again at scale (input scale x weight scale), after the
    activation grids changed."""
    from onnx import numpy_helper

    arr = lambda name: numpy_helper.to_array(inits[name])  # noqa: E731
    for conv in (n for n in qdq.graph.node if n.op_type == "Conv" and len(n.input) > 2):
        dq_x, dq_w, dq_b = (prod.get(i) for i in conv.input[:3])
        if dq_b is None or dq_b.op_type != "DequantizeLinear" or dq_b.input[0] not in inits:
            continue
        b = arr(dq_b.input[0]).astype(np.float64) * arr(dq_b.input[1]).astype(np.float64)
        s_new = (arr(dq_x.input[1]).astype(np.float64) * arr(dq_w.input[1]).astype(np.float64))
        q = np.clip(np.round(b / s_new), -2**31, 2**31 - 1).astype(np.int32)
        for name, value in ((dq_b.input[0], q), (dq_b.input[1], s_new.astype(np.float32))):
            inits[name].CopyFrom(numpy_helper.from_array(value, name))


# The INT8 file vs the fake-quant PyTorch model it was trained as: not bit-exact (integer
# requantization and lookup tables round differently, and a 1-LSB difference propagates
# through 60 layers), ~47 dB measured on x4; a wrong grid drops it far below this.
FAKEQUANT_MIN_PSNR = 40.0


def qat_model_of(src: Any) -> Any:
    """The fake-quant model of an export source whose weights carry QAT ranges
    (UserError for FP32-only weights)."""
    from rdsrn.quant.qat import qat_from_metadata

    what = src.weights_file or src.name
    return qat_from_metadata(src.model, {"qat": src.qat} if src.qat else {}, f"--qat: {what}")


def gate_fakequant(steps: Any, run: Any, qat_model: Any, inputs: list[np.ndarray],
                   what: str) -> dict[str, Any]:
    """PSNR of the INT8 artifact vs the fake-quant model on the parity crops, gated."""
    from .common import GateError
    from .parity import compare, torch_runner

    with steps.step("parity vs the fake-quant PyTorch model (same grids)") as s:
        parity = compare(run, torch_runner(qat_model), inputs)
        s["note"] = f"PSNR vs fake-quant {parity['psnr_vs_torch']} dB"
    psnr = parity["psnr_vs_torch"]
    if psnr is not None and psnr < FAKEQUANT_MIN_PSNR:
        raise GateError(f"{what}: fake-quant parity gate failed: PSNR vs the fake-quant model "
                        f"{psnr:.2f} dB < {FAKEQUANT_MIN_PSNR:g} dB; no file written")
    return parity
