"""LiteRT AOT NPU compilation report (export/npu_aot.py).

The two logs below are excerpts of real apply_plugin output recorded on the x86
development machine (ai-edge-litert 2.3.0, no vendor SDK); the partition line is the
format ai_edge_litert.aot.core.apply_plugin parses (_RE_PARTITION_STATS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdsrn.export import npu_aot
from rdsrn.runtimes.errors import UserError

QNN_LOG = """\
[LITERT_TOOLS:APPLY] Starting Load Plugins...
INFO: [compiler_plugin.cc:308] Attempting to load plugin at: /x/ai_edge_litert/vendors/qualcomm/compiler/libLiteRtCompilerPlugin_Qualcomm.so
WARNING: [compiler_plugin.cc:312] Failed to load plugin at: /x/libLiteRtCompilerPlugin_Qualcomm.so with error: ERROR: [litert/compiler/plugin/compiler_plugin.cc:259]
└ Could not load shared library /x/libLiteRtCompilerPlugin_Qualcomm.so: libQnnHtp.so: cannot open shared object file: No such file or directory.
[LITERT_TOOLS:APPLY] Found plugins
[LITERT_TOOLS:APPLY] Loaded 0 plugins
[LITERT_TOOLS:APPLY] Starting Select Plugin...
[LITERT_TOOLS:APPLY] \tFailed
"""

MTK_LOG = """\
[LITERT_TOOLS:APPLY] Selected plugin for: MediaTek
[LITERT_TOOLS:APPLY] Starting Applying plugin...
INFO: [neuron_adapter_api.cc:309] libneuron_sys_util.mtk.so not found
ERROR: [neuron_adapter_api.cc:65] Failed to load NeuronAdapter shared library: Failed to load NeuronAdapter shared library
INFO: [compiler_plugin.cc:704] SoC model mt6989 is supported
ERROR: [apply_plugin.cc:455] ERROR: [litert/compiler/plugin/compiler_plugin.cc:483]
"""


def test_explain_failure_names_the_missing_sdk():
    assert npu_aot.explain_failure(QNN_LOG) == (
        "compiler plugin cannot load: vendor SDK library libQnnHtp.so not found")
    why = npu_aot.explain_failure(MTK_LOG)
    assert "NeuronAdapter" in why and "libneuron_sys_util.mtk.so" in why
    assert npu_aot.explain_failure("x\nERROR: boom\ny") == "ERROR: boom"


def test_parse_partitions():
    log = ("Partitioned subgraph<0>, selected 187 ops, from a total of 191 ops. "
           "resulted in 2 partitions.\n")
    assert npu_aot.parse_partitions(log) == [
        {"subgraph": 0, "npu_ops": 187, "total_ops": 191, "partitions": 2}]
    assert npu_aot.parse_partitions(QNN_LOG) == []


def test_compile_attempt_reports_a_reason(tmp_path):
    pytest.importorskip("ai_edge_litert.aot.aot_compile")
    model = Path(__file__).resolve().parents[1] / "runtimes" / "models" / "rdsrn_x4_int8.tflite"
    with pytest.raises(UserError, match="unknown SoC"):
        npu_aot.compile_npu(model, "qualcomm", "SM0000", tmp_path)
    with pytest.raises(UserError, match="unknown NPU vendor"):
        npu_aot.compile_npu(model, "acme", "X1", tmp_path)
    r = npu_aot.compile_npu(model, "qualcomm", "SM8650", tmp_path / "q")
    assert r["status"] in ("ok", "error")
    if r["status"] == "error":  # no QAIRT SDK on this machine
        assert r["reason"] and ("not installed" in r["sdk"] or "SDK" in r["sdk"])
        md = npu_aot.markdown(model, [r])
        assert "| qualcomm SM8650 |" in md and r["reason"] in md
    else:
        assert Path(r["output"]).is_file() and r["partitions"]
