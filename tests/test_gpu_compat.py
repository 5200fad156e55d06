"""GPU delegate compatibility report (export/gpu_compat.py).

The analyzer texts below are hand-written in the format TensorFlow's model analyzer
prints (tensorflow/lite/python/analyzer_wrapper/model_analyzer.cc: "GPU COMPATIBILITY
WARNING: <reason>" under the op line, a closing per-subgraph line) with reasons worded
as in gpu_compatibility.cc and as quoted in public bug reports; the TensorFlow 2.21
analyzer installed here prints no warnings at all (see the module docstring), so they
cannot be recorded from it. The rule checks run on small graphs built here with
LiteRT's FlatBuffer schema and on the bundled models.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rdsrn.export import gpu_compat as gc
from rdsrn.export.bundle import INT8_FROM

pytest.importorskip("ai_edge_litert")

MODELS = Path(__file__).resolve().parents[1] / "runtimes" / "models"

ANALYZER_WITH_ISSUES = """\
=== /tmp/model.tflite ===

Your TFLite model has '2' subgraph(s). In the subgraph description below,
T# represents the Tensor numbers. For example, in Subgraph#0, the EXPAND_DIMS op takes
tensor #0 and tensor #13 as input and produces tensor #15 as output.

Subgraph#0 main(T#0) -> [T#31]
  Op#0 EXPAND_DIMS(T#0, T#13[1]) -> [T#15]
GPU COMPATIBILITY WARNING: Not supported op EXPAND_DIMS
  Op#1 TILE(T#15, T#7[1, 4, 1]) -> [T#16]
  Op#2 CONV_2D(T#16, T#3, T#4[0, 1, 2, 3, 4, ...]) -> [T#17]
  Op#3 TOPK_V2(T#17, T#6[4]) -> [T#28, T#29]
GPU COMPATIBILITY WARNING: Not supported op TOPK_V2
  Op#4 CAST(T#29) -> [T#30]
GPU COMPATIBILITY WARNING: Not supported Cast case. Input type: INT32 and output type: INT64

GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 0, 3, 4 with TFLite runtime version 2.13.0

Tensors of Subgraph#0
  T#0(x) shape:[1, 8], type:FLOAT32

Subgraph#1 cond(T#1_0) -> [T#1_2]
  Op#0 LESS(T#1_0, T#1_1[4]) -> [T#1_2]

Model size:       2696 bytes
"""

ANALYZER_CLEAN = """\
=== /work/main/runtimes/models/rdsrn_x4_int8.tflite ===

Subgraph#0 main(T#0) -> [T#311]
  Op#0 QUANTIZE(T#0) -> [T#97]
  Op#1 CONV_2D(T#97, T#96, T#95[8348, -29512, 4854, 23153, 17047, ...]) -> [T#98]

Tensors of Subgraph#0
  T#0(serving_default_input:0) shape_signature:[1, -1, -1, 3], type:UINT8


Your model looks compatible with GPU delegate on TFLite runtime version 2.21.0.
This does not guarantee that your model will work well with GPU delegate because there could still be runtime incompatibililties.
"""


def test_parse_analyzer_warnings_attach_to_their_ops():
    p = gc.parse_analyzer(ANALYZER_WITH_ISSUES)
    assert p["verdict"] == "issues"
    assert p["version"] == "2.13.0"
    assert p["issue_nodes"] == {0: [0, 3, 4]}
    assert p["warnings"] == {
        (0, 0): "Not supported op EXPAND_DIMS",
        (0, 3): "Not supported op TOPK_V2",
        (0, 4): "Not supported Cast case. Input type: INT32 and output type: INT64"}
    assert (0, 2, "CONV_2D") in p["ops"] and (1, 0, "LESS") in p["ops"]


def test_parse_analyzer_clean_and_empty():
    p = gc.parse_analyzer(ANALYZER_CLEAN)
    assert p["verdict"] == "compatible" and p["version"] == "2.21.0" and not p["warnings"]
    assert [op for _, _, op in p["ops"]] == ["QUANTIZE", "CONV_2D"]
    assert gc.parse_analyzer("Failed to mmap model x")["verdict"] is None


# ------------------------------------------------------------------ built graphs


def _tflite(ops: list[tuple[str, list[int], list[int], object]],
            tensors: list[tuple[list[int], str, np.ndarray | None]],
            inputs: list[int], outputs: list[int]) -> bytes:
    """A one-subgraph .tflite from (op name, inputs, outputs, options) and
    (shape, dtype name, constant data or None)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT()
    m.version = 3
    m.buffers = [s.BufferT()]
    sg = s.SubGraphT()
    sg.tensors = []
    for i, (shape, dtype, data) in enumerate(tensors):
        t = s.TensorT()
        t.shape = np.array(shape, np.int32)
        t.type = getattr(s.TensorType, dtype)
        t.name = f"t{i}".encode()
        t.buffer = 0
        if data is not None:
            b = s.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            m.buffers.append(b)
            t.buffer = len(m.buffers) - 1
        sg.tensors.append(t)
    codes: list[str] = []
    sg.operators = []
    for name, ins, outs, opts in ops:
        if name not in codes:
            codes.append(name)
        o = s.OperatorT()
        o.opcodeIndex = codes.index(name)
        o.inputs = np.array(ins, np.int32)
        o.outputs = np.array(outs, np.int32)
        if opts is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, type(opts).__name__[:-1])
            o.builtinOptions = opts
        sg.operators.append(o)
    sg.inputs = np.array(inputs, np.int32)
    sg.outputs = np.array(outputs, np.int32)
    m.subgraphs = [sg]
    m.operatorCodes = []
    for name in codes:
        c = s.OperatorCodeT()
        c.builtinCode = getattr(s.BuiltinOperator, name)
        c.deprecatedBuiltinCode = min(c.builtinCode, 127)
        c.version = 1
        m.operatorCodes.append(c)
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _report(tmp_path: Path, data: bytes) -> gc.GpuReport:
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    return gc.gpu_report(path, use_analyzer=False)


def test_rules_reject_unsupported_ops_and_bad_options(tmp_path):
    from ai_edge_litert import schema_py_generated as s

    d2s = s.DepthToSpaceOptionsT()
    d2s.blockSize = 1
    tensors = [([1, 4, 4, 8], "FLOAT32", None),            # 0 input
               ([1, 4, 4, 8], "FLOAT32", None),            # 1
               ([1, 4, 4], "INT64", None),                 # 2
               ([], "INT32", np.array(3, np.int32)),       # 3 axis
               ([1, 4, 4], "FLOAT32", None),               # 4
               ([1, 5, 1, 8], "FLOAT32", None),            # 5
               ([3], "FLOAT32", None)]                     # 6
    data = _tflite([("DEPTH_TO_SPACE", [0], [1], d2s),
                    ("ARG_MAX", [1, 3], [2], None),
                    ("CAST", [2], [4], None),
                    ("ADD", [0, 6], [5], None)],            # [1,4,4,8] + [3]: rank 1, ok
                   tensors, [0], [4])
    r = _report(tmp_path, data)
    bad = {o.op: o for o in r.ops if not o.compatible}
    assert set(bad) == {"DEPTH_TO_SPACE", "ARG_MAX", "CAST"}
    assert bad["DEPTH_TO_SPACE"].reasons == ["rules: DEPTH_TO_SPACE block_size = 1 is a no-op."]
    assert bad["ARG_MAX"].reasons == ["rules: Not supported op ARG_MAX"]
    assert "INT64" in bad["CAST"].reasons[0] and bad["CAST"].nodes == [2]
    assert not r.compatible and r.static
    assert "3 of 4 ops NOT GPU-delegate compatible" in gc.summary_line(r)
    md = gc.markdown([r])
    assert "| ARG_MAX (v1) | 1 | NO (nodes 1) | rules: Not supported op ARG_MAX |" in md


def test_broadcast_rule(tmp_path):
    tensors = [([1, 4, 4, 8], "FLOAT32", None), ([4, 3], "FLOAT32", None),
               ([1, 4, 4, 8], "FLOAT32", None)]
    r = _report(tmp_path, _tflite([("MUL", [0, 1], [2], None)], tensors, [0, 1], [2]))
    (o,) = r.ops
    assert not o.compatible and "Doesn't support broadcasting" in o.reasons[0]


def test_fp16_dequantized_weights_count_as_constants(tmp_path):
    from ai_edge_litert import schema_py_generated as s

    conv = s.Conv2DOptionsT()
    conv.strideH = conv.strideW = conv.dilationHFactor = conv.dilationWFactor = 1
    tensors = [([1, 8, 8, 3], "FLOAT32", None),                       # 0 input
               ([4, 3, 3, 3], "FLOAT16", np.ones((4, 3, 3, 3), np.float16)),
               ([4, 3, 3, 3], "FLOAT32", None),                       # 2 dequantized
               ([4], "FLOAT32", np.zeros(4, np.float32)),             # 3 bias
               ([1, 8, 8, 4], "FLOAT32", None),                       # 4 output
               ([1, 8, 8, 3], "FLOAT32", None)]                       # 5 runtime "weights"
    ok = _tflite([("DEQUANTIZE", [1], [2], None), ("CONV_2D", [0, 2, 3], [4], conv)],
                 tensors, [0], [4])
    r = _report(tmp_path, ok)
    assert r.compatible and r.precision == "fp16"
    assert any("FP16GraphPartitionHelper" in n for n in r.notes)
    # the same CONV_2D with 3 runtime inputs (no fp16 constant behind them) is rejected
    bad = _tflite([("CONV_2D", [0, 5, 4], [2], conv)], tensors, [0, 5, 4], [2])
    (o,) = _report(tmp_path, bad).ops
    assert not o.compatible and "3 runtime inputs" in o.reasons[0]


def test_bundled_models_are_compatible_with_notes():
    for name in ("rdsrn_x4_int8.tflite", "rdsrn_x2_fp32.tflite"):
        r = gc.gpu_report(MODELS / name, use_analyzer=False)
        assert r.compatible, gc.markdown([r])
        assert not r.static and r.input_shape[-1] == 3
        assert any(n.startswith("dynamic input") for n in r.notes)
        ops = {o.op: o.count for o in r.ops}
        # The x4 INT8 file comes from the anchored x4 (export/bundle.py INT8_FROM): the
        # anchor's nearest upsampling is a second DEPTH_TO_SPACE.
        anchored = "int8" in name and "rdsrn_x4" in INT8_FROM
        assert ops["DEPTH_TO_SPACE"] == 1 + anchored and ops["CONV_2D"] > 10
    r = gc.gpu_report(MODELS / "rdsrn_x4_int8.tflite", use_analyzer=False)
    assert r.precision == "int8" and r.io_dtype == "uint8"
    assert any("full-integer" in n for n in r.notes)


def test_cli_reports_each_file_and_bad_input(tmp_path, capsys):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    out = tmp_path / "gpu.md"
    rc = gc.main(["--no-analyzer", str(junk), str(MODELS / "rdsrn_x4_int8.tflite"),
                  str(tmp_path / "missing.tflite"), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 1
    assert "gpu_compat: error:" in text and "not a TFLite model" in text
    assert "missing.tflite" in text
    assert "### rdsrn_x4_int8.tflite" in out.read_text()


def test_analyzer_and_export_hook(tmp_path):
    pytest.importorskip("tensorflow")
    model = tmp_path / "x4_int8.tflite"
    shutil.copy(MODELS / "rdsrn_x4_int8.tflite", model)
    lines: list[str] = []
    r = gc.report_for_export(model, log=lines.append)
    assert r is not None and r.analyzer["ran"] and r.analyzer["verdict"] == "compatible"
    assert isinstance(r.analyzer["effective"], bool)
    if not r.analyzer["effective"]:  # TF 2.21's analyzer: GPU check compiled out
        assert "has no GPU check" in lines[-1]
    side = tmp_path / "x4_int8.tflite.gpu.md"
    assert side.is_file() and "| CONV_2D (v3) | 64 | yes" in side.read_text()
    n = sum(o.count for o in r.ops)
    assert n > 150 and lines[-1].startswith(f"[gpu] GPU delegate: all {n} ops")


def test_export_command_writes_the_gpu_report(tmp_path, monkeypatch, capsys):
    """`rdsrn export --format tflite --precision fp16 --input-size HxW` (static tile of
    a narrow model): the .gpu.md sidecar and the one-line summary."""
    pytest.importorskip("tensorflow")
    import torch

    from rdsrn import cli
    from rdsrn.models.rdsrn import RDSRN
    from rdsrn.weights import save_weights
    from export_fixtures import SMALL

    torch.manual_seed(0)
    net = RDSRN(**SMALL)
    weights = tmp_path / "small.safetensors"
    save_weights(weights, net, {"model": "rdsrn_x4", "config": dict(net.config)})
    monkeypatch.setattr(cli, "COMMANDS", {"export": cli.COMMANDS["export"]})
    out = tmp_path / "out"
    rc = cli.main(["export", "--model", str(weights), "--format", "tflite", "--precision",
                   "fp16", "--input-size", "24x24", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["rdsrn_x4_fp16_24x24.tflite", "rdsrn_x4_fp16_24x24.tflite.gpu.md"]
    line = next(ln for ln in text.splitlines() if ln.startswith("[gpu] "))
    assert "GPU-delegate compatible" in line and "static input [1, 24, 24, 3]" in line
    assert "fp16 weights" in (out / names[1]).read_text()


def test_gpu_run_check_needs_a_static_file():
    r = gc.gpu_run_check(MODELS / "rdsrn_x4_int8.tflite")
    assert set(r) == {"error"} and "static tile" in r["error"]
