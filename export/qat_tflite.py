"""INT8 TFLite files that honour what QAT learned: the activation grids of a converted
full-integer graph replaced by the QAT model's, int32 conv biases requantized.

The TFLite converter only calibrates (min/max over the representative data); FakeQuant
ops in the TF twin gave a file 18 dB off (they fight the converter's own same-scale rules
at concatenations). So the file is converted as usual and then edited:

1. Each int8 activation tensor is paired with its QAT point: the tensors and points of one
   op kind and shape are paired in forward order (names differ). After the edit, every
   pair is confirmed by value: the new file runs once on a real LR crop with every tensor
   kept, and each tensor must agree with its point of the fake-quant model to INT8
   kernel noise. Every point gets exactly one tensor.
2. The matched tensors take the QAT grid (uint8 zero point - 128: TFLite's int8 codes are
   the same grid shifted). SPLIT and DEPTH_TO_SPACE outputs take their input's grid;
   concatenations need one grid for inputs and output, which the QAT model ties
   (rdsrn.quant.qat.tied_points) -- checked, not assumed.
3. Conv biases are int32 at scale (input scale x weight scale per channel): requantized
   for the new input grids (a bias shared by convs that now need different scales is
   duplicated). Weights are untouched: the converter's per-channel max|w|/127 scales are
   the ones QAT trained with.
The graph input and the fused output clamp (2z - 1, 0.5 x + 0.5) keep the 1/255 pixel grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Op kind a QAT point is the output of, by the last part of its name.
_KIND = {"conv1": "CONV_2D", "conv2": "CONV_2D", "conv3": "CONV_2D", "fuse": "CONV_2D",
         "shallow1": "CONV_2D", "shallow2": "CONV_2D", "fc1": "CONV_2D", "fc2": "CONV_2D",
         "fusion": "CONV_2D", "lr_conv": "CONV_2D", "upconv": "CONV_2D", "recon": "CONV_2D",
         "conv0": "CONV_2D", "lrelu": "LEAKY_RELU", "lrelu0": "LEAKY_RELU",
         "lrelu1": "LEAKY_RELU", "lrelu2": "LEAKY_RELU", "lrelu3": "LEAKY_RELU",
         "cat": "CONCATENATION", "add": "ADD", "lr_add": "ADD", "var_eps": "ADD",
         "contrast": "ADD", "mean": "MEAN", "var": "MEAN", "sub": "SUB", "sq": "MUL",
         "mul": "MUL", "std": "SQRT", "sigmoid": "LOGISTIC"}
# A tensor of the edited INT8 file vs its point of the fake-quant model: Pearson
# correlation. Kernel rounding differences (1 LSB) spread through the layers and grow to a
# few LSB, which lowers it only a little; another point of the same kind and shape (the
# next recursion pass, a neighbouring unit) correlates far less.
MIN_CORRELATION = 0.5


def point_kind(name: str) -> str:
    """TFLite op type whose output is QAT point `name` ("r0.cca.std" -> "SQRT")."""
    last = name.rsplit(".", 1)[-1]
    if name.startswith("hfrrb.conv"):
        return "CONV_2D"
    return _KIND[last]


def _op_names(model: Any) -> list[str]:
    from tensorflow.lite.python import schema_py_generated as fb

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        out.append(names[max(code.builtinCode, code.deprecatedBuiltinCode)])
    return out


def _int8_values(data: bytes, sample: np.ndarray) -> dict[int, np.ndarray]:
    """Every int8 tensor of the file, dequantized, after one run on `sample` (float32
    NHWC [1, h, w, 3] in [0, 1])."""
    from ai_edge_litert import interpreter as interp

    # Without XNNPACK: delegated tensors are not kept.
    it = interp.Interpreter(
        model_content=data, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=interp.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], list(sample.shape))
    it.allocate_tensors()
    if np.dtype(inp["dtype"]) == np.uint8:
        x = np.clip(np.round(sample * 255.0), 0, 255).astype(np.uint8)
    else:
        x = (np.clip(np.round(sample * 255.0), 0, 255).astype(np.int16) - 128).astype(np.int8)
    it.set_tensor(inp["index"], x)
    it.invoke()
    out: dict[int, np.ndarray] = {}
    for d in it.get_tensor_details():
        if np.dtype(d["dtype"]) != np.int8 or not d["quantization"][0]:
            continue
        try:
            v = it.get_tensor(d["index"])
        except ValueError:  # constants and tensors the runtime did not keep
            continue
        s, z = d["quantization"]
        out[d["index"]] = (v.astype(np.float32) - z) * s
    return out


def apply_tflite_ranges(data: bytes, qat: Any, sample: np.ndarray,
                        keep_float: set[str] | frozenset[str] = frozenset()
                        ) -> tuple[bytes, dict[str, Any]]:
    """The INT8 TFLite file `data` with the QAT model's activation grids (see the module
    docstring). `sample`: one real LR crop, float32 NHWC [1, h, w, 3] in [0, 1].
    `keep_float`: the layer groups `data` holds in float32 (their points have no int8
    tensor; the QUANTIZE at a float island's exit takes the grid of the point it carries,
    found by value, or keeps its calibrated grid when no point has its shape).
    Returns (new file bytes, {"tensors", "points", "min_correlation", "biases",
    "calibrated"}); RuntimeError if the graph and the QAT model do not correspond one to one."""
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    from rdsrn.quant.qat import point_group

    model = fbu.convert_bytearray_to_object(bytearray(data))
    graph = model.subgraphs[0]
    kinds = _op_names(model)
    before = _int8_values(data, sample)
    shapes = {t: v.shape for t, v in before.items()}
    x = np.ascontiguousarray(sample.transpose(0, 3, 1, 2)).astype(np.float32)
    points = _nhwc_points(qat, x)
    ranges = qat.ranges()
    grid: dict[int, tuple[float, int]] = {}
    # Pair tensors and points of one (op kind, shape) in order: the converter keeps the
    # forward order of the twin. The edited file's values confirm every pair (below).
    tensors: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for op, kind in zip(graph.operators, kinds):
        t = int(op.outputs[0])
        # Not paired: copies, and the anchor skip's CONCATENATION of s*s copies of the
        # input (on the input's grid; no QAT point).
        anchor_copy = kind == "CONCATENATION" and len({int(i) for i in op.inputs}) == 1
        if t in shapes and kind not in ("SPLIT", "DEPTH_TO_SPACE", "QUANTIZE") \
                and not anchor_copy:
            tensors.setdefault((kind, shapes[t]), []).append(t)
    by_key: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    kept = [n for n in qat.points if point_group(n) in keep_float]
    for name in qat.points:
        if name in kept:
            continue
        by_key.setdefault((point_kind(name), points[name].shape), []).append(name)
    pairs: list[tuple[str, int]] = []
    for key, names in by_key.items():
        ts = tensors.get(key, [])
        if len(ts) != len(names):
            raise RuntimeError(f"QAT ranges: {len(names)} QAT points but {len(ts)} TFLite "
                               f"tensors of kind {key[0]} shape {list(key[1])}: graphs differ")
        for name, t in zip(names, ts):
            pairs.append((name, t))
            r = ranges[name]
            grid[t] = (float(r["scale"]), int(r["zero_point"]) - 128)
    calibrated = 0
    views = {n: points[n] for n in kept}
    if "upconv" in views:  # kept float, its island ends after DEPTH_TO_SPACE (moves values)
        views["upconv"] = _depth_to_space(views["upconv"], qat.scale)
    for op, kind in zip(graph.operators, kinds):  # exits of float islands
        t = int(op.outputs[0])
        if kind != "QUANTIZE" or t not in shapes or graph.tensors[int(op.inputs[0])].type != 0:
            continue  # 0: FLOAT32 in the schema; uint8 -> int8 input requantization skipped
        cands = [n for n in kept if views[n].shape == shapes[t]]
        if not cands:
            calibrated += 1
            continue
        name = max(cands, key=lambda n: _correlation(views[n], before[t]))
        if _correlation(views[name], before[t]) < MIN_CORRELATION:
            raise RuntimeError(f"QAT ranges: the float island exit {t} matches no QAT point "
                               "of the kept groups: graphs differ")
        r = ranges[name]
        grid[t] = (float(r["scale"]), int(r["zero_point"]) - 128)
    for op, kind in zip(graph.operators, kinds):  # copies keep their input's grid
        if kind in ("SPLIT", "DEPTH_TO_SPACE"):
            src = int(op.inputs[-1] if kind == "SPLIT" else op.inputs[0])
            if src in grid:
                for t in op.outputs:
                    grid[int(t)] = grid[src]
    for op, kind in zip(graph.operators, kinds):
        if kind == "CONCATENATION":
            tied = {grid.get(int(t)) for t in list(op.inputs) + list(op.outputs)}
            if len(tied) != 1:
                raise RuntimeError("QAT ranges: a CONCATENATION's inputs and output got "
                                   f"different grids {sorted(map(str, tied))}")
    old_scale = {i: np.asarray(t.quantization.scale, np.float64).copy()
                 for i, t in enumerate(graph.tensors) if t.quantization is not None
                 and t.quantization.scale is not None}
    for t, (s, z) in grid.items():
        q = graph.tensors[t].quantization
        q.scale = np.array([s], np.float32)
        q.zeroPoint = np.array([z], np.int64)
        q.min = q.max = None
    biases = _requantize_biases(model, kinds, old_scale)
    out = bytes(fbu.convert_object_to_bytearray(model))
    # The edited file now computes on the QAT grids: each tensor must agree with its
    # point of the fake-quant model to INT8 noise (a wrong pairing is far off).
    vals = _int8_values(out, sample)
    fq = _nhwc_points(qat, x, fake_quant=True)
    worst = 1.0
    for name, t in pairs:
        pv, v = fq[name], vals[t]
        corr = _correlation(pv, v)
        if corr < MIN_CORRELATION:
            raise RuntimeError(f"QAT ranges: TFLite tensor {t} ({kinds_of(graph, kinds)[t]}) "
                               f"does not hold QAT point {name} (correlation {corr:.2f}): "
                               "graphs differ")
        worst = min(worst, corr)
    return out, {"tensors": len(grid), "points": len(qat.points) - len(kept),
                 "min_correlation": float(f"{worst:.4g}"), "biases": biases,
                 "calibrated": calibrated}


def _depth_to_space(x: np.ndarray, s: int) -> np.ndarray:
    """TFLite DEPTH_TO_SPACE (DCR) of NHWC `x`."""
    n, h, w, c = x.shape
    y = x.reshape(n, h, w, s, s, c // (s * s)).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, h * s, w * s, c // (s * s))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float(np.array_equal(a, b))


def kinds_of(graph: Any, kinds: list[str]) -> dict[int, str]:
    """Output tensor index -> op type."""
    return {int(t): k for op, k in zip(graph.operators, kinds) for t in op.outputs}


def _nhwc_points(qat: Any, x: np.ndarray, fake_quant: bool = False) -> dict[str, np.ndarray]:
    """The QAT model's activation points on NCHW `x`, as NHWC arrays in the twin's channel
    order: float values, or (`fake_quant`) the quantized values the INT8 graph holds."""
    from .qat_ranges import point_values
    from .tf_twin import crd_to_dcr

    raw = point_values(qat, x, fake_quant)
    points = {n: v.transpose(0, 2, 3, 1) for n, v in raw.items()}
    # The twin permutes the up-sampling conv's channels (PixelShuffle CRD -> DCR).
    points["upconv"] = points["upconv"][..., crd_to_dcr(points["upconv"].shape[-1], qat.scale)]
    return points


def _requantize_biases(model: Any, kinds: list[str], old_scale: dict[int, np.ndarray]) -> int:
    """int32 conv biases again at (input scale x weight scale); returns how many changed."""
    import copy

    graph = model.subgraphs[0]
    need: dict[int, list[tuple[Any, np.ndarray]]] = {}
    for op, kind in zip(graph.operators, kinds):
        if kind != "CONV_2D" or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        x, w, b = (int(i) for i in op.inputs[:3])
        qx = graph.tensors[x].quantization
        if b not in old_scale or qx is None or qx.scale is None or len(qx.scale) == 0:
            continue  # a float conv (a --keep-float group)
        s_x = float(graph.tensors[x].quantization.scale[0])
        s_w = np.asarray(graph.tensors[w].quantization.scale, np.float64)
        need.setdefault(b, []).append((op, s_x * s_w))
    changed = 0
    for b, uses in need.items():
        tensor = graph.tensors[b]
        raw = np.frombuffer(bytes(model.buffers[tensor.buffer].data), np.int32)
        value = raw.astype(np.float64) * old_scale[b]
        first = True
        for op, s_new in uses:
            if not first and np.array_equal(s_new, np.asarray(tensor.quantization.scale,
                                                                np.float64)):
                continue
            q = np.clip(np.round(value / s_new), -2**31, 2**31 - 1).astype(np.int32)
            if first:
                target = tensor
            else:  # a bias shared by convs whose inputs now differ: give this one a copy
                target = copy.deepcopy(tensor)
                buf = copy.deepcopy(model.buffers[tensor.buffer])
                model.buffers.append(buf)
                target.buffer = len(model.buffers) - 1
                graph.tensors.append(target)
                op.inputs[2] = len(graph.tensors) - 1
            model.buffers[target.buffer].data = np.frombuffer(q.tobytes(), np.uint8)
            target.quantization.scale = s_new.astype(np.float32)
            target.quantization.zeroPoint = np.zeros(len(s_new), np.int64)
            changed += 1
            first = False
    return changed
