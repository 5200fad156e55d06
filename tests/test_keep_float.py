"""`--keep-float` (mixed-precision INT8): the named layer groups stay float32 in the
TFLite and ONNX files, everything else stays 8-bit, with QAT grids too; the file name
says it is not the all-INT8 file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from export_fixtures import crop_inputs, small_source, tiny_eval_dir

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def setup(data_dir):
    from rdsrn.export.calibration import make_calibration_set

    src = small_source()
    calib = make_calibration_set(data_dir / "train", 4, 6, size=(24, 24))
    return src, calib


def _ops(data: bytes) -> list[tuple[str, str, type]]:
    """(op name, its first output's tensor name, dtype) in graph order."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    td = it.get_tensor_details()
    return [(d["op_name"], td[d["outputs"][0]]["name"], td[d["outputs"][0]]["dtype"])
            for d in it._get_ops_details()]


@pytest.mark.parametrize("groups", [("shallow",), ("body", "cca", "upsample", "recon")])
def test_tflite_kept_groups_are_float_the_rest_int8(setup, groups):
    from rdsrn.export.tf_twin import twin_from_torch
    from rdsrn.export.tflite_export import check_structure, convert, inspect, tensor_groups

    src, calib = setup
    data = convert(twin_from_torch(src.model, clamp=True, fused_clamp=True), "int8",
                   calib=calib, keep_float=groups)
    info = inspect(data)
    check_structure(info, "int8", "uint8", groups)
    assert info["input"]["dtype"] == info["output"]["dtype"] == "uint8"
    seen = set()
    group_of = tensor_groups(data)
    for op, name, dtype in _ops(data):
        if op in ("QUANTIZE", "DEQUANTIZE"):
            continue
        g = group_of[name]
        if op == "SPLIT":  # the TFLite quantizer keeps these int8 (_int8_keep_float)
            assert g == "body" and dtype == np.int8
            seen.add(g)
            continue
        assert g is not None, name  # every compute op sits in a group's name scope
        seen.add(g)
        assert (dtype == np.float32) == (g in groups), (op, name, dtype)
    assert seen == {"shallow", "body", "cca", "fusion", "upsample", "hfrrb", "recon"}
    with pytest.raises(RuntimeError, match="float islands"):
        check_structure(info, "int8", "uint8")


def _qat_model(src, calib):
    from rdsrn.quant.qat import QATRDSRN

    q = QATRDSRN(src.model).eval()
    q.calibrate(torch.from_numpy(calib.nchw()).split(2))
    with torch.no_grad():  # move the ranges away from what the converters calibrate
        q.act_log_scale.add_(math.log(3.0))
    return q


@pytest.mark.parametrize("group", ["shallow", "upsample"])
def test_tflite_keep_float_with_qat_grids(setup, data_dir, group):
    """QAT + keep-float: every int8 tensor outside the kept group takes its QAT grid,
    the exit of the float island takes the grid of the point it carries (for upsample:
    after DEPTH_TO_SPACE), and the file still computes like the fake-quant model."""
    from rdsrn.export.parity import compare, tflite_runner, torch_runner
    from rdsrn.export.qat_tflite import apply_tflite_ranges
    from rdsrn.export.tf_twin import twin_from_torch
    from rdsrn.export.tflite_export import convert
    from rdsrn.quant.qat import point_group

    src, calib = setup
    q = _qat_model(src, calib)
    data = convert(twin_from_torch(src.model, clamp=True, fused_clamp=True), "int8",
                   calib=calib, keep_float=(group,))
    crops = crop_inputs(data_dir, [(20, 20), (17, 23)])
    new, info = apply_tflite_ranges(data, q, crops[0], keep_float={group})
    n_kept = sum(point_group(n) == group for n in q.points)
    assert info["points"] == len(q.points) - n_kept and info["calibrated"] == 0
    ref = torch_runner(src.model)
    p_fq, p_new, p_before = (compare(r, ref, crops)["psnr_vs_torch"]
                             for r in (torch_runner(q), tflite_runner(new), tflite_runner(data)))
    assert p_before - p_new > 3 and abs(p_new - p_fq) < 3
    with pytest.raises(RuntimeError, match="graphs differ"):  # kept groups must be named
        apply_tflite_ranges(data, q, crops[0])


def test_onnx_keep_float_upsample_with_qat_grids(setup, data_dir):
    """ONNX QAT + keep-float upsample: the DepthToSpace output, quantized for the HR
    convs although its input is float, takes the up-sampling conv's QAT grid."""
    from onnx import numpy_helper

    from rdsrn.export.onnx_export import build_fp32, quantize_int8
    from rdsrn.export.parity import compare, onnx_runner, torch_runner
    from rdsrn.export.qat_ranges import apply_onnx_ranges

    src, calib = setup
    q = _qat_model(src, calib)
    q.weight_rule = "pair_safe"  # the ONNX file's weight grids
    fp32 = build_fp32(src.model)
    qdq, _ = quantize_int8(fp32, calib, keep_float=("upsample",))
    crops = crop_inputs(data_dir, [(20, 20), (17, 23)])
    apply_onnx_ranges(qdq, fp32, q, crops[0])
    inits = {i.name: i for i in qdq.graph.initializer}
    d2s = [n for n in qdq.graph.node if n.op_type == "QuantizeLinear"
           and n.input[0] == "/m/DepthToSpace_output_0"]
    assert len(d2s) == 1
    scale = float(numpy_helper.to_array(inits[d2s[0].input[1]]))
    assert scale == pytest.approx(q.ranges()["upconv"]["scale"], rel=1e-6)
    ref = torch_runner(src.model)
    p_fq, p_file = (compare(r, ref, crops)["psnr_vs_torch"]
                    for r in (torch_runner(q), onnx_runner(qdq.SerializeToString())))
    assert abs(p_file - p_fq) < 3


@pytest.mark.slow
def test_export_keep_float_names_and_records_the_mixed_file(setup, data_dir, set5_dir,
                                                            tmp_path):
    from rdsrn.export.cli import artifact_name
    from rdsrn.export.onnx_export import export_onnx
    from rdsrn.export.tflite_export import export_tflite

    src, calib = setup
    eval_dir = tiny_eval_dir(set5_dir, tmp_path / "eval")
    common = dict(calib=calib, parity_inputs=crop_inputs(data_dir, [(24, 24)]),
                  eval_dir=eval_dir, max_drop=5.0, keep_float=("shallow",), log=lambda s: None)
    names = {f: artifact_name("m", f, "int8", None, keep_float=("shallow",))
             for f in ("onnx", "tflite")}
    assert names == {"onnx": "m_int8_float-shallow.onnx",
                     "tflite": "m_int8_float-shallow.tflite"}
    t = export_tflite(src, tmp_path / names["tflite"], "int8", **common)
    o = export_onnx(src, tmp_path / names["onnx"], "int8", **common)
    for res in (t, o):
        assert res.metadata["quantization"]["float_ops"] == "layer groups shallow"
        assert res.path.is_file()
    import onnx

    proto = onnx.load(str(o.path))
    prod = {out: n for n in proto.graph.node for out in n.output}
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        weight_from_dq = node.input[1] in prod and prod[node.input[1]].op_type == "DequantizeLinear"
        assert weight_from_dq == ("/shallow" not in node.name), node.name


def test_cli_keep_float_needs_int8(tmp_path, capsys):
    from rdsrn.cli import main as cli_main

    code = cli_main(["export", "--format", "tflite", "--precision", "fp32", "--keep-float",
                     "shallow", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--keep-float applies to --precision int8" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
