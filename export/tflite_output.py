"""INT8 TFLite: put the fused output clamp's grid on the pixel values, so the output is
not rounded up by half a pixel level.

The INT8 twin writes clip(z, 0, 1) as 0.5 * clip(u, -1, 1) + 0.5 with u = 2z - 1 computed
by the reconstruction conv (export/tf_twin.py: TFLite fuses clip(-1, 1) into the conv).
The converter gives u the int8 grid of [-1, 1]: scale 2/255, so its values are even
multiples of 1/255, while u of a pixel value k/255 is the odd multiple (2k - 255)/255.
0.5 * u + 0.5 then always lands exactly halfway between two output levels, and the
integer ADD rounds every such tie up: each output pixel came out +0.5 level too bright
(measured +0.49 on Set5 against the fake-quant model, x4 and x2; ONNX, which clamps on
the 1/255 grid directly, had no bias).

With the anchor skip (RDSRN(anchor=True)) the converter's graph ends ADD(recon conv,
upsampled input) -> MINIMUM -> RELU (the plain clip: the twin does not use the fused form
there), and gives the ADD's output the calibrated range, about [-0.1, 1.1], so the result
was rounded twice. `align_output_clamp` puts the ADD's output on the pixel grid (1/255,
-128): the ADD's int8 saturation is then the clamp and its rounding the only one, as in
the fake-quant model and the ONNX file, and the MINIMUM and RELU, no-ops on that grid,
are removed.

The fix moves u by one level: the conv's bias gets +1/255 (so u = 2z - 1 + 1/255, whose
grid points are the pixel values) and the ADD's constant becomes 0.5 - 0.5/255 (a copy:
the MUL shares the 0.5 constant). Then y = (q - zp + 127) / 255 exactly: the int8 code
of u is the pixel value. The clamp limits still map to 0 and 255.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PIXEL = 1.0 / 255.0


def _quant(t: Any) -> tuple[np.ndarray, np.ndarray] | None:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    return np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.int64)


def align_output_clamp(data: bytes) -> tuple[bytes, bool]:
    """`data` with the output clamp's grid aligned to the pixel values (module docstring);
    (data unchanged, False) when the graph does not end in the int8 conv -> MUL 0.5 ->
    ADD 0.5 pattern (a float recon group, an FP32 file)."""
    import copy

    from tensorflow.lite.tools import flatbuffer_utils as fbu

    from .qat_tflite import _op_names

    model = fbu.convert_bytearray_to_object(bytearray(data))
    graph = model.subgraphs[0]
    kinds = _op_names(model)
    producer = {int(t): (op, k) for op, k in zip(graph.operators, kinds) for t in op.outputs}
    out_t = int(graph.outputs[0])
    op, kind = producer.get(out_t, (None, None))
    if kind == "QUANTIZE":  # uint8 output: int8 -> uint8 requantization
        op, kind = producer.get(int(op.inputs[0]), (None, None))
    if kind in ("MINIMUM", "MAXIMUM", "RELU"):
        return _align_anchor_clip(data, model, graph, producer, op, kind)
    if kind != "ADD":
        return data, False
    add = op
    mul_t, add_c = (int(i) for i in add.inputs)
    mul, mul_kind = producer.get(mul_t, (None, None))
    if mul_kind != "MUL":
        return data, False
    clip_t, mul_c = (int(i) for i in mul.inputs)
    conv, conv_kind = producer.get(clip_t, (None, None))
    if conv_kind != "CONV_2D" or len(conv.inputs) < 3:
        return data, False
    tensors = graph.tensors
    clip_q = _quant(tensors[clip_t])
    if clip_q is None or tensors[clip_t].type != 9:  # 9: INT8 in the schema
        return data, False
    if not np.isclose(clip_q[0][0], 2 * PIXEL, rtol=1e-5):
        return data, False

    def const_value(t: int) -> float | None:
        q = _quant(tensors[t])
        buf = model.buffers[tensors[t].buffer].data
        if q is None or buf is None or len(buf) != 1:
            return None
        code = int(np.frombuffer(bytes(buf), np.int8)[0])
        return float((code - q[1][0]) * q[0][0])

    if not (np.isclose(const_value(add_c) or 0, 0.5) and np.isclose(const_value(mul_c) or 0, 0.5)):
        return data, False
    # 1. The conv computes u + 1/255: int32 bias codes at scale (input x weight scale).
    b = int(conv.inputs[2])
    b_scale = _quant(tensors[b])
    if b_scale is None:
        return data, False
    raw = np.frombuffer(bytes(model.buffers[tensors[b].buffer].data), np.int32).astype(np.int64)
    shifted = raw + np.round(PIXEL / b_scale[0]).astype(np.int64)
    model.buffers[tensors[b].buffer].data = np.frombuffer(
        np.clip(shifted, -2**31, 2**31 - 1).astype(np.int32).tobytes(), np.uint8)
    # 2. The ADD adds 0.5 - 0.5/255 (its own copy of the constant).
    target = 0.5 - 0.5 * PIXEL
    scale, zp = _quant(tensors[add_c])
    code = int(np.round(target / scale[0]) + zp[0])
    if not (-128 <= code <= 127) or abs((code - zp[0]) * scale[0] - target) > 1e-7:
        raise RuntimeError(f"output clamp: 0.5 - 0.5/255 is not on the constant's grid "
                           f"{scale[0]}, {zp[0]}")
    const = copy.deepcopy(tensors[add_c])
    model.buffers.append(copy.deepcopy(model.buffers[const.buffer]))
    const.buffer = len(model.buffers) - 1
    model.buffers[const.buffer].data = np.frombuffer(np.array([code], np.int8).tobytes(),
                                                     np.uint8)
    tensors.append(const)
    add.inputs[list(add.inputs).index(add_c)] = len(tensors) - 1
    return bytes(fbu.convert_object_to_bytearray(model)), True


def _align_anchor_clip(data: bytes, model: Any, graph: Any, producer: dict[int, tuple[Any, str]],
                       op: Any, kind: str) -> tuple[bytes, bool]:
    """The anchor skip's ADD -> MINIMUM/MAXIMUM/RELU chain on the pixel grid (module
    docstring); (unchanged, False) for any other graph."""
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    clip_ops, chain = [], []
    while kind in ("MINIMUM", "MAXIMUM", "RELU"):
        clip_ops.append(op)
        chain.append(int(op.outputs[0]))
        src = [int(i) for i in op.inputs if int(i) in producer]
        if len(src) != 1:
            return data, False
        op, kind = producer[src[0]]
    inputs = {producer.get(int(i), (None, None))[1] for i in op.inputs}
    if kind != "ADD" or inputs != {"CONV_2D", "DEPTH_TO_SPACE"}:
        return data, False
    add_out = int(op.outputs[0])
    chain.append(add_out)
    for t in chain:
        if graph.tensors[t].type != 9 or _quant(graph.tensors[t]) is None:  # 9: INT8
            return data, False
    q = graph.tensors[add_out].quantization
    q.scale = np.array([PIXEL], np.float32)
    q.zeroPoint = np.array([-128], np.int64)
    q.min = q.max = None
    # On that grid the clip ops are exact no-ops, and XNNPACK leaves int8 MINIMUM / RELU
    # to slow reference kernels (+8 % x3 latency, anchor_x3_int8_latency_ab_tflite.md):
    # drop them, the clip's readers read the ADD.
    last = chain[0]
    for reader in graph.operators:
        reader.inputs = [add_out if int(i) == last else int(i) for i in reader.inputs]
    graph.outputs = [add_out if int(t) == last else int(t) for t in graph.outputs]
    dropped = {id(c) for c in clip_ops}
    graph.operators = [o for o in graph.operators if id(o) not in dropped]
    return bytes(fbu.convert_object_to_bytearray(model)), True
