"""ONNX export: structure (no control flow, DepthToSpace CRD, opset, weights once),
dynamic shapes, FP32 parity, INT8 QDQ, metadata inside the file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from rdsrn.export.calibration import make_calibration_set
from rdsrn.export.onnx_export import dedupe_initializers, export_onnx, initializer_bytes
from rdsrn.export.parity import onnx_runner, torch_runner
from rdsrn.runtimes.formats import METADATA_KEY

from export_fixtures import crop_inputs, full_source, small_source, tiny_eval_dir


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory, data_dir):
    src = full_source()
    out = tmp_path_factory.mktemp("onnx") / "rdsrn_x4_fp32.onnx"
    res = export_onnx(src, out, "fp32", parity_inputs=crop_inputs(data_dir, [(24, 24)]),
                      log=lambda s: None)
    return src, res


def test_onnx_fp32_structure(fp32_export):
    src, res = fp32_export
    m = onnx.load(str(res.path))
    ops = [n.op_type for n in m.graph.node]
    assert not {"Loop", "If", "Scan"} & set(ops)
    d2s = [n for n in m.graph.node if n.op_type == "DepthToSpace"]
    assert len(d2s) == 1
    attrs = {a.name: helper.get_attribute_value(a) for a in d2s[0].attribute}
    assert attrs["mode"] == b"CRD" and attrs["blocksize"] == 4
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # The recursive block runs 3 times but its weights are stored once.
    param_bytes = sum(p.numel() * 4 for p in src.model.parameters())
    assert 1.0 <= initializer_bytes(m) / param_bytes < 1.01
    convs = sum(op == "Conv" for op in ops)
    assert convs > len([k for k in src.model.state_dict() if k.endswith(".weight")])
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1] == 3 and isinstance(dims[2], str) and isinstance(dims[3], str)


def test_onnx_fp32_dynamic_parity(fp32_export, data_dir):
    src, res = fp32_export
    run, ref = onnx_runner(res.path.read_bytes()), torch_runner(src.model)
    for x in crop_inputs(data_dir, [(17, 23), (40, 64)]):
        y = run(x)
        assert y.shape == (1, x.shape[1] * 4, x.shape[2] * 4, 3)
        assert np.abs(y - ref(x)).max() <= 1e-4


def test_onnx_metadata_round_trip(fp32_export):
    src, res = fp32_export
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert meta == res.metadata
    for key in ("scale", "layout", "value_range", "color_order", "precision", "io_dtype",
                "quantization", "input_size", "min_input", "rdsrn_version",
                "weights_sha256", "parity"):
        assert key in meta
    assert meta["layout"] == "NCHW" and meta["scale"] == 4 and meta["input_size"] == "dynamic"
    assert meta["model"]["recursions"] == 3 and meta["model"]["csr"] == 0.5
    assert meta["parity"]["max_abs_diff"] <= 1e-4


def test_dedupe_initializers_merges_copies():
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w1")
    w2 = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w2")
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "w1"], ["a"]), helper.make_node("Add", ["a", "w2"], ["y"])],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])], [w, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    assert dedupe_initializers(m) == 1
    assert [i.name for i in m.graph.initializer] == ["w1"]
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x + 2 * np.arange(6).reshape(2, 3))


def test_onnx_fixed_size(tmp_path, data_dir):
    src = small_source()
    out = tmp_path / "fixed.onnx"
    res = export_onnx(src, out, "fp32", input_size=(24, 32),
                      parity_inputs=crop_inputs(data_dir, [(24, 32)]), log=lambda s: None)
    m = onnx.load(str(out))
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 24, 32] and res.metadata["input_size"] == [24, 32]


@pytest.mark.slow
def test_onnx_int8_qdq(tmp_path, data_dir, set5_dir):
    src = small_source()
    calib = make_calibration_set(data_dir / "train", 4, 6, size=(24, 24))
    out = tmp_path / "rdsrn_x4_int8.onnx"
    res = export_onnx(src, out, "int8", calib=calib,
                      parity_inputs=crop_inputs(data_dir, [(24, 24)]),
                      eval_dir=tiny_eval_dir(set5_dir, tmp_path / "eval"), max_drop=5.0,
                      log=lambda s: None)
    m = onnx.load(str(out))
    ops = [n.op_type for n in m.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert {o.domain for o in m.opset_import} <= {"", "ai.onnx"} and m.ir_version == 8
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    conv_w = [n.input[1] for n in m.graph.node if n.op_type == "Conv"]
    producers = {n.output[0]: n for n in m.graph.node}
    per_channel = 0
    for name in conv_w:  # each conv weight: int8 initializer -> DequantizeLinear(axis=0)
        dq = producers[name]
        assert dq.op_type == "DequantizeLinear"
        assert inits[dq.input[0]].dtype == np.int8
        per_channel += inits[dq.input[1]].size == inits[dq.input[0]].shape[0]
    assert per_channel == len(conv_w)
    zps = [inits[n.input[2]] for n in m.graph.node
           if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zps and all(z.dtype == np.uint8 for z in zps)  # U8S8
    meta = res.metadata
    assert meta["precision"] == "int8" and "delta_psnr" in meta
    assert meta["quantization"]["calibration"]["patches"] == calib.patches.shape[0]
    assert meta["delta_psnr"] == pytest.approx(meta["eval"]["psnr"] - meta["eval"]["psnr_fp32"],
                                               abs=1e-3)
    # INT8 output still follows the model closely on a real crop.
    x = crop_inputs(data_dir, [(24, 24)])[0]
    y = onnx_runner(out.read_bytes())(x)
    ref = torch_runner(src.model)(x)
    assert 10 * np.log10(1 / np.mean((y - ref) ** 2)) > 30
    torch.testing.assert_close(torch.from_numpy(y), torch.from_numpy(ref), atol=0.1, rtol=0)
