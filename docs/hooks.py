"""MkDocs hook: the Results page is generated at build time from the project's own
records, never copied by hand:

- every bundled model file's embedded metadata (runtimes/models/: scale, precision,
  size, parity, Set5 ΔPSNR, pair-safe proof);
- every `rdsrn bench` result in benchmarks/results/<device>/*.json that has latency rows
  (machine, ISA flags, date, command, p50/p90, PSNR).

The page source docs/results.md holds the marker `<!-- generated -->`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- generated -->"


def _embedded(path: Path) -> dict[str, Any]:
    """A bundled file's rdsrn metadata (TFLite: pure-Python reader; ONNX: onnx)."""
    if path.suffix == ".tflite":
        from rdsrn.runtimes.tflite_meta import read_tflite_metadata

        meta = read_tflite_metadata(str(path))
        return meta.get("rdsrn", meta) if "scale" not in meta else meta
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    raw = {p.key: p.value for p in proto.metadata_props}.get("rdsrn")
    return json.loads(raw) if raw else {}


def bundled_table() -> list[str]:
    lines = ["| file | scale | precision | size | parity vs PyTorch | Set5 Δ at export (vs the FP32 it came from) | pair-safe (ONNX) |",
             "|---|---|---|---|---|---|---|"]
    for path in sorted((REPO / "runtimes" / "models").glob("*.*")):
        if path.suffix not in (".onnx", ".tflite"):
            continue
        m = _embedded(path)
        parity = m.get("parity") or {}
        par = (f"max \\|diff\\| {parity['max_abs_diff']:.1e}" if "max_abs_diff" in parity
               else f"{parity.get('psnr_vs_torch', '–')} dB")
        delta = m.get("delta_psnr")
        bound = (m.get("quantization") or {}).get("pair_bound") or {}
        lines.append(f"| `{path.name}` | x{m.get('scale')} | {m.get('precision')} | "
                     f"{path.stat().st_size / 2**20:.2f} MiB | {par} | "
                     f"{'–' if delta is None else f'{delta:+.3f} dB'} | "
                     f"{'yes' if bound.get('safe') else ('–' if not bound else 'no')} |")
    return lines


def bench_tables() -> list[str]:
    out: list[str] = []
    for path in sorted((REPO / "benchmarks" / "results").glob("*/*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or "machine" not in doc:
            continue
        rows = [r for r in doc.get("rows", []) if isinstance(r, dict) and r.get("p50_ms")]
        if not rows:
            continue
        mach = doc["machine"]
        simd = " ".join(f for f in mach.get("flags", []) if any(
            f.startswith(p) for p in ("avx", "amx", "fma", "sse4", "asimd", "sve", "i8mm")))
        out += [f"### {path.parent.name} / {path.stem}", "",
                f"- Machine: {mach.get('cpu')} ({mach.get('arch')}), {mach.get('cores')} "
                f"core(s); ISA: {simd or '–'}",
                f"- Date (UTC): {doc.get('date')}; command: `{doc.get('command')}`",
                f"- Source: `benchmarks/results/{path.parent.name}/{path.name}`", "",
                "| model | format | precision | threads | input | p50 ms | p90 ms | PSNR |",
                "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            psnr = r.get("psnr")
            out.append(f"| {r.get('model')} | {r.get('format')} | {r.get('precision')} | "
                       f"{r.get('threads')} | {r.get('input')} | {r['p50_ms']:.1f} | "
                       f"{(r.get('p90_ms') or 0):.1f} | "
                       f"{'–' if psnr is None else f'{psnr:.2f}'} |")
        out.append("")
    return out


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    generated = ["## Bundled model files", "", *bundled_table(), "",
                 "## Benchmark results", "", *bench_tables()]
    return markdown.replace(MARKER, "\n".join(generated))
