"""INT8 ONNX weights that no CPU kernel can saturate, and the static proof of it.

onnxruntime's U8S8 convolution kernels on x86 CPUs without VNNI (AVX2, AVX-512BW) multiply
uint8 activations by int8 weights with `vpmaddubsw`, which adds each pair of products into
a *saturating* int16 before widening to int32. A pair overflows when
255 * (|w_a| + |w_b|) > 32767 for two weights of one sign, i.e. |w_a| + |w_b| > 128:
with the usual max|w|/127 scales nearly every output channel can, and the bundled files
then lost 0.4-0.8 dB on such CPUs and nothing on VNNI, AMX or ARM ones.

`make_pair_safe` requantizes every convolution weight of a QDQ graph with the "pair_safe"
scales of `rdsrn.quant.qat.weight_scales` (the same rule QAT can train under) and
`pair_bound` proves, from the int8 weights alone, that no pair of products of any uint8
input can leave int16, whichever two weights of a channel a kernel pairs. The proof
holds on every host, so the exporter's gate and the tests catch saturation on a VNNI or
ARM machine too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

INT16_MAX = 32767
UINT8_MAX = 255


def _conv_weights(qdq: Any) -> list[tuple[Any, Any, Any]]:
    """(conv node, weight DequantizeLinear node, activation DequantizeLinear node or None)
    of every convolution whose weights are int8 initializers."""
    inits = {i.name for i in qdq.graph.initializer}
    prod = {o: n for n in qdq.graph.node for o in n.output}
    out = []
    for conv in (n for n in qdq.graph.node if n.op_type == "Conv"):
        dq_w = prod.get(conv.input[1])
        if dq_w is None or dq_w.op_type != "DequantizeLinear" or dq_w.input[0] not in inits:
            continue  # a float conv (--keep-float)
        dq_x = prod.get(conv.input[0])
        out.append((conv, dq_w, dq_x if dq_x is not None and
                    dq_x.op_type == "DequantizeLinear" else None))
    return out


def pair_bound(qdq: Any) -> dict[str, Any]:
    """The largest |a_0 w_0 + a_1 w_1| any conv of `qdq` can form from two of its int8
    weights of one output channel and uint8 inputs a in [0, 255] (the int8 code range for
    int8 inputs), over all convs. Returns {"convs", "channels", "worst_pair_sum",
    "limit": 32767, "safe": worst <= limit, "worst_conv"}."""
    from onnx import numpy_helper

    inits = {i.name: i for i in qdq.graph.initializer}
    worst, worst_conv, channels = 0, None, 0
    convs = _conv_weights(qdq)
    for conv, dq_w, dq_x in convs:
        w = numpy_helper.to_array(inits[dq_w.input[0]]).astype(np.int64)
        flat = w.reshape(w.shape[0], -1)
        k = min(2, flat.shape[1])
        top_pos = -np.sort(-np.maximum(flat, 0), axis=1)[:, :k].sum(axis=1)
        top_neg = -np.sort(-np.maximum(-flat, 0), axis=1)[:, :k].sum(axis=1)
        act_max = UINT8_MAX  # uint8 codes; int8 ones are at most 128 in magnitude
        if dq_x is not None and len(dq_x.input) > 2 and dq_x.input[2] in inits:
            if numpy_helper.to_array(inits[dq_x.input[2]]).dtype == np.int8:
                act_max = 128
        bound = int(np.maximum(top_pos, top_neg).max()) * act_max
        channels += flat.shape[0]
        if bound > worst:
            worst, worst_conv = bound, conv.name
    return {"convs": len(convs), "channels": channels, "worst_pair_sum": worst,
            "limit": INT16_MAX, "safe": worst <= INT16_MAX, "worst_conv": worst_conv}


def make_pair_safe(qdq: Any, fp32: Any) -> dict[str, Any]:
    """Requantize (in place) the int8 weights of every quantized conv of `qdq` from the
    float weights of `fp32` (the graph it was quantized from) with the "pair_safe" scales,
    then the int32 biases at the new scales. Returns pair_bound(qdq) and how many output
    channels got a coarser grid than max|w|/127."""
    import torch
    from onnx import numpy_helper

    from rdsrn.quant.qat import weight_scales

    from .qat_ranges import requantize_biases

    float_w = {i.name: i for i in fp32.graph.initializer}
    inits = {i.name: i for i in qdq.graph.initializer}
    coarser = 0
    for conv, dq_w, _ in _conv_weights(qdq):
        q_name, s_name = dq_w.input[0], dq_w.input[1]
        src = q_name[:-len("_quantized")] if q_name.endswith("_quantized") else None
        if src not in float_w:
            raise RuntimeError(f"pair_safe: no float weights for {conv.name} ({q_name})")
        w = numpy_helper.to_array(float_w[src]).astype(np.float32)
        scale = weight_scales(torch.from_numpy(w), "pair_safe").numpy()
        plain = np.maximum(np.abs(w.reshape(w.shape[0], -1)).max(axis=1) / 127.0, 1e-12)
        coarser += int((scale > plain * (1 + 1e-6)).sum())
        q = np.clip(np.rint(w / scale.reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
        inits[q_name].CopyFrom(numpy_helper.from_array(q, q_name))
        inits[s_name].CopyFrom(numpy_helper.from_array(scale.astype(np.float32), s_name))
    prod = {o: n for n in qdq.graph.node for o in n.output}
    requantize_biases(qdq, inits, prod)
    return {**pair_bound(qdq), "coarser_channels": coarser}
