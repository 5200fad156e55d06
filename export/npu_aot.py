"""Ahead-of-time NPU compilation of a .tflite with LiteRT's AOT API, and what happened.

    python -m rdsrn.export.npu_aot MODEL.tflite [--target qualcomm:SM8650 ...]
                                   [--out DIR] [-o REPORT.md]

`ai_edge_litert.aot.aot_compile` runs the vendor compiler plugin shipped in the
ai-edge-litert wheel (libLiteRtCompilerPlugin_<Vendor>.so, through its
tools/apply_plugin_main) on the model; the plugin partitions the graph (the ops it puts
on the NPU) and compiles those partitions with the vendor SDK. The SDKs come from the
`ai-edge-litert-sdk-<vendor>` packages, which are source distributions that download
the SDK from the vendor's server while they build (Qualcomm QAIRT, MediaTek
NeuroPilot); without it the plugin cannot load (Qualcomm: libQnnHtp.so) or cannot
partition (MediaTek: NeuronAdapter). compile_npu() reports either the partition
statistics ("selected N ops, from a total of M ops") or the decisive lines of the
plugin's log. Results of this machine: benchmarks/results/npu_aot.md.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, Sequence

from rdsrn.runtimes.errors import MissingExtraError, UserError

VENDORS = ("qualcomm", "mediatek")
DEFAULT_TARGETS = ("qualcomm:SM8650", "mediatek:MT6989")

_PARTITION = re.compile(r"Partitioned subgraph<(\d+)>, selected (\d+) ops, from a total of "
                        r"(\d+) ops\. resulted in (\d+) partitions\.")


def explain_failure(log: str) -> str:
    """The one-line cause in an apply_plugin log (what is missing, else the last
    ERROR line)."""
    m = re.search(r"(lib[\w.+-]+\.so[\w.]*): cannot open shared object file", log)
    if m:
        return f"compiler plugin cannot load: vendor SDK library {m.group(1)} not found"
    if "Failed to load NeuronAdapter" in log:
        return ("plugin loaded but cannot partition or compile: MediaTek NeuronAdapter "
                "(NeuroPilot SDK) not found" + (" (libneuron_sys_util.mtk.so)"
                                                if "libneuron_sys_util" in log else ""))
    errors = [ln.strip() for ln in log.splitlines() if "ERROR" in ln]
    if errors:
        return errors[-1][:300]
    return (log.strip().splitlines() or ["no output"])[-1][:300]


def parse_partitions(log: str) -> list[dict[str, int]]:
    """Partition statistics lines of apply_plugin's log."""
    return [{"subgraph": int(a), "npu_ops": int(b), "total_ops": int(c),
             "partitions": int(d)} for a, b, c, d in _PARTITION.findall(log)]


def sdk_status(vendor: str) -> str:
    """Whether the vendor SDK package is installed and holds the SDK files."""
    mod = f"ai_edge_litert_sdk_{vendor}"
    try:
        import importlib

        sdk = importlib.import_module(mod)
    except ImportError:
        return f"{mod.replace('_', '-')} not installed"
    data = Path(sdk.__file__).parent / "data"
    if not data.is_dir() or not any(data.iterdir()):
        return (f"{mod.replace('_', '-')} installed without its SDK files ({data} "
                "missing: the download at build time failed)")
    return f"SDK files in {data}"


def _target(vendor: str, soc: str) -> Any:
    try:
        if vendor == "qualcomm":
            from ai_edge_litert.aot.vendors.qualcomm import target as t
        elif vendor == "mediatek":
            from ai_edge_litert.aot.vendors.mediatek import target as t
        else:
            raise UserError(f"unknown NPU vendor {vendor!r}; choices: {', '.join(VENDORS)}")
    except ImportError:
        raise MissingExtraError("NPU AOT needs ai-edge-litert with its aot module: pip "
                                "install 'rdsrn[tflite]'") from None
    try:
        return t.Target(t.SocModel(soc.upper()))
    except ValueError:
        raise UserError(f"{vendor}: unknown SoC {soc!r}; choices: "
                        f"{', '.join(s.value for s in t.SocModel if s.value != 'ALL')}"
                        ) from None


def compile_npu(model: str | Path, vendor: str, soc: str, out_dir: str | Path
                ) -> dict[str, Any]:
    """AOT-compile `model` for one SoC into `out_dir` (never over the input).

    Returns {"vendor", "soc", "sdk", "status": "ok"|"error", "partitions": [...],
    "output": path} or {..., "reason": one line, "log_tail": [lines]}."""
    model, out_dir = Path(model), Path(out_dir)
    if not model.is_file():
        raise UserError(f"{model}: no such file")
    if out_dir.resolve() == model.parent.resolve():
        raise UserError("--out must not be the model's own folder")
    target = _target(vendor, soc)
    from ai_edge_litert.aot import aot_compile as aot

    res: dict[str, Any] = {"vendor": vendor, "soc": soc.upper(), "sdk": sdk_status(vendor),
                           "partitions": []}
    result = aot.aot_compile(str(model), output_dir=str(out_dir), target=target,
                             keep_going=True)
    if result.models_with_backend:
        backend, compiled = result.models_with_backend[0]
        stats = getattr(compiled, "partition_stats", None)
        res["partitions"] = [{"subgraph": s.subgraph_index, "npu_ops": s.num_ops_offloaded,
                              "total_ops": s.num_total_ops,
                              "partitions": s.num_partitions_offloaded}
                             for s in getattr(stats, "subgraph_stats", []) or []]
        name = f"{model.stem}{backend.target_id_suffix}.tflite"
        result.export(out_dir, model_name=model.stem)
        res.update(status="ok", output=str(out_dir / name))
        return res
    msg = result.failed_backends[0][1] if result.failed_backends else "no result"
    log = ""
    m = re.search(r"See (\S+\.error) for details", msg)
    if m and Path(m.group(1)).is_file():
        log = Path(m.group(1)).read_text(errors="replace")
        Path(m.group(1)).unlink()  # aot_compile's temp file; its text is returned
    res.update(status="error", reason=explain_failure(log) if log else msg,
               partitions=parse_partitions(log), message=msg,
               log_tail=[ln for ln in log.splitlines()
                         if re.search(r"ERROR|cannot open|not found|Loaded \d+ plugins", ln)
                         ][-6:])
    return res


def markdown(model: str | Path, results: Sequence[dict[str, Any]]) -> str:
    lines = [f"### {Path(model).name}\n", "| target | SDK | status | NPU ops | detail |",
             "|---|---|---|---|---|"]
    for r in results:
        ops = "; ".join(f"{p['npu_ops']}/{p['total_ops']} in {p['partitions']} partition(s)"
                        for p in r["partitions"]) or "-"
        detail = r.get("output") if r["status"] == "ok" else r.get("reason")
        lines.append(f"| {r['vendor']} {r['soc']} | {r['sdk']} | {r['status']} | {ops} | "
                     f"{detail} |")
    for r in results:
        if r.get("log_tail"):
            lines += ["", f"{r['vendor']} {r['soc']} log (decisive lines):", "",
                      "```", *r["log_tail"], "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rdsrn.export.npu_aot",
                                 description="LiteRT AOT NPU compilation attempt")
    ap.add_argument("model", metavar="MODEL.tflite")
    ap.add_argument("--target", action="append", metavar="VENDOR:SOC",
                    help=f"repeatable (default: {', '.join(DEFAULT_TARGETS)})")
    ap.add_argument("--out", help="folder for compiled models (default: MODEL_npu/)")
    ap.add_argument("-o", "--report", help="write the markdown here (default: stdout)")
    args = ap.parse_args(argv)
    model = Path(args.model)
    out = Path(args.out) if args.out else model.with_name(model.stem + "_npu")
    results = []
    for t in args.target or DEFAULT_TARGETS:
        vendor, _, soc = t.partition(":")
        if not soc:
            raise UserError(f"--target must be VENDOR:SOC, got {t!r}")
        results.append(compile_npu(model, vendor.lower(), soc, out / vendor.lower()))
    text = markdown(model, results)
    if args.report:
        from .common import atomic_write_bytes

        atomic_write_bytes(Path(args.report), text.encode())
    print(text)
    return 0 if any(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
