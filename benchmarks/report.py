"""Benchmark output: the printed table and the files in the results folder
(./rdsrn-bench/<device>/ by default: <name>.json, .csv, .md and a latency-vs-PSNR .png).
Pure Python + matplotlib (lazy).

Sign convention: delta_psnr / ΔPSNR = PSNR of the row - PSNR of the FP32 PyTorch model
with the same weights, in dB; negative means the row is less accurate (INT8 < 0)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

# Keys every JSON row carries (issue 6), in this order first in the CSV.
REQUIRED_KEYS = ("model", "format", "precision", "threads", "input", "output", "p50_ms",
                 "p90_ms", "macs", "gmacs_per_s", "peak_fraction", "psnr", "delta_psnr",
                 "size_mb", "status")

EXTRA_CSV_KEYS = ("target", "weights", "params", "runtime", "runtime_version", "init_ms",
                  "first_inference_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "runs",
                  "fps", "peak_rss_mb", "ssim", "peak_gmacs", "background_paused",
                  "background_cpu_before", "other_cpu_during", "interference", "notes",
                  "error", "artifact", "delegate", "ops_delegated")

# A timed row counts as disturbed when other processes (or the hypervisor: steal time)
# kept more than BUSY_LOAD of all CPUs busy while it ran, or - for rows of at least
# SPREAD_MIN_MS - its p90 exceeds its p50 by more than BUSY_SPREAD (on this idle 2-core
# VM p90/p50 was <= 1.06 for every row of the full suite above 1 ms but one, 1.10).
BUSY_LOAD = 0.10
BUSY_SPREAD = 1.10
SPREAD_MIN_MS = 10.0
BUSY_MARK = "!"

# (header, key, format) of the printed / Markdown table.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "s"), ("format", "format", "s"), ("prec", "precision", "s"),
    ("thr", "threads", "d"), ("input", "input", "s"), ("MB", "size_mb", ".2f"),
    ("params", "params", "M"), ("GMAC", "macs", "G"), ("PSNR", "psnr", ".2f"),
    ("ΔPSNR", "delta_psnr", "+.3f"), ("p50 ms", "p50_ms", ".1f"), ("p90 ms", "p90_ms", ".1f"),
    ("mean±std ms", "_mean_std", "s"), ("FPS", "fps", ".2f"), ("GMAC/s", "gmacs_per_s", ".0f"),
    ("%peak", "peak_fraction", "%"), ("RSS MB", "peak_rss_mb", ".0f"),
    ("other CPU", "other_cpu_during", "%"), ("status", "_status", "s"),
)


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    if key == "_mean_std":
        m, s = row.get("mean_ms"), row.get("std_ms")
        return f"{m:.1f}±{s:.1f}" if m is not None and s is not None else "-"
    if key == "_status":
        if row.get("status") == "ok":
            return f"ok {BUSY_MARK}" if row.get("interference") else "ok"
        return f"error: {row.get('error') or ''}"
    v = row.get(key)
    if v is None or v == "":
        return "-"
    try:
        if fmt == "M":
            return f"{v / 1e6:.3f}M"
        if fmt == "G":
            return f"{v / 1e9:.1f}"
        if fmt == "%":
            return f"{100 * v:.0f}%"
        if fmt == "d":
            return str(int(v))
        if fmt.startswith("+") and float(format(v, fmt[1:])) == 0.0:
            return format(0.0, fmt[1:])  # "0.000", not "-0.000" or "+0.000"
        if fmt == "s":
            return str(v)
        return format(v, fmt)
    except (TypeError, ValueError):
        return str(v)


# Shown before "status" when a row says how much of the graph a delegate took (adb).
DELEGATE_COLUMNS = (("delegate", "delegate", "s"), ("ops delegated", "ops_delegated", "s"))


def table_lines(rows: Sequence[dict[str, Any]], markdown: bool = False) -> list[str]:
    """The comparison table, aligned text or Markdown."""
    cols = COLUMNS
    if any(r.get("ops_delegated") for r in rows):
        cols = COLUMNS[:-1] + DELEGATE_COLUMNS + COLUMNS[-1:]
    headers = [c[0] for c in cols]
    cells = [[_cell(r, key, fmt) for _, key, fmt in cols] for r in rows]
    if markdown:
        out = ["| " + " | ".join(headers) + " |",
               "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in cells]
        return out
    widths = [max(len(h), *(len(line[i]) for line in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    widths[-1] = len(headers[-1])  # the status column is last: no padding
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers).rstrip()]
    out += [fmt.format(*line).rstrip() for line in cells]
    return out


def interference(row: dict[str, Any]) -> list[str]:
    """Why a timed row may have been disturbed by other work (empty: no sign of it)."""
    reasons = []
    # "before": sampled with --pause-pid, whose wait gives up above its 15 % threshold
    for key, what, limit in (("other_cpu_during", "during", BUSY_LOAD),
                             ("background_cpu_before", "before", 0.15)):
        load = row.get(key)
        if isinstance(load, (int, float)) and load > limit:
            reasons.append(f"other CPU load {100 * load:.0f}% {what} the row")
    p50, p90 = row.get("p50_ms"), row.get("p90_ms")
    if p50 and p90 and p50 >= SPREAD_MIN_MS and p90 / p50 > BUSY_SPREAD:
        reasons.append(f"p90/p50 = {p90 / p50:.2f}")
    return reasons


def flag_interference(rows: Sequence[dict[str, Any]]) -> int:
    """Set each ok row's "interference" (reasons, or None); returns how many are flagged."""
    flagged = 0
    for r in rows:
        reasons = interference(r) if r.get("status") == "ok" else []
        r["interference"] = "; ".join(reasons) or None
        flagged += bool(reasons)
    return flagged


def legend_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The lines under the table: the ΔPSNR sign, and the busy-machine marker if used."""
    lines = []
    if any(r.get("delta_psnr") is not None for r in rows):
        lines.append("ΔPSNR: dB vs the FP32 PyTorch model with the same weights; "
                     "negative = less accurate.")
    busy = [r for r in rows if r.get("interference")]
    if busy:
        lines.append(f"{BUSY_MARK} = {len(busy)} of {len(rows)} row(s) possibly disturbed by "
                     f"other work (other processes above {100 * BUSY_LOAD:.0f}% of the CPUs, "
                     f"or p90/p50 above {BUSY_SPREAD:.2f}): their times are not reliable; "
                     "re-run on an idle machine.")
    return lines


def cpu_class(machine: dict[str, Any]) -> str:
    """The machine's int8 kernel path (rdsrn.runtimes.cpu.KERNEL_PATHS) from its CPU
    flags: what sets which INT8 file is fastest and exact there."""
    from rdsrn.runtimes.cpu import kernel_path

    return kernel_path(str(machine.get("arch") or "").lower(), set(machine.get("flags") or []))


def device_slug(machine: dict[str, Any]) -> str:
    """A folder name for a machine: arch-class-cpu-Ncores, the class being its int8
    kernel path (e.g. x86_64-vnni-amd-epyc-2c for a Zen 4, x86_64-avx2-amd-epyc-2c for a
    Zen 3: the vendor alone does not tell them apart)."""
    name = machine.get("board") or machine.get("cpu") or machine.get("model") or "unknown"
    name = re.sub(r"\((r|tm|c)\)", "", str(name).lower())  # Intel(R) Xeon(R) -> intel xeon
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:40] or "unknown"
    arch = machine.get("arch") or "unknown"
    cls = cpu_class(machine).split("-", 1)[-1]
    cores = machine.get("cores")
    return f"{arch}-{cls}-{slug}" + (f"-{cores}c" if cores else "")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    keys = list(REQUIRED_KEYS) + [k for k in EXTRA_CSV_KEYS if k not in REQUIRED_KEYS]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


def markdown_text(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [f"# Benchmark: {doc.get('name', 'bench')} on {device_slug(m)}", "",
             f"- Command: `{doc.get('command', '')}`",
             f"- Date (UTC): {doc.get('date', '')}",
             f"- CPU: {m.get('cpu', '')} ({m.get('arch', '')}), {m.get('cores')} usable "
             f"core(s), {m.get('mhz')} MHz ({m.get('mhz_source', '')})"
             + (", under a hypervisor" if m.get("hypervisor") else ""),
             f"- OS: {m.get('os', '')}, kernel {m.get('kernel', '')}, Python {m.get('python', '')}",
             "- Packages: " + ", ".join(f"{k} {v}" for k, v in sorted(m.get("packages", {}).items())),
             f"- SIMD flags: {' '.join(f for f in m.get('flags', []) if _simd(f))}"]
    for note in doc.get("notes", []):
        lines.append(f"- {note}")
    loads = [r["background_cpu_before"] for r in doc["rows"]
             if r.get("background_cpu_before") is not None]
    if loads:
        busy = sum(1 for v in loads if v > 0.15)
        lines.append(f"- Other CPU load just before each timed row (job paused): median "
                     f"{100 * sorted(loads)[len(loads) // 2]:.0f}%, max {100 * max(loads):.0f}%"
                     f"; {busy} of {len(loads)} row(s) above 15%.")
    peaks = doc.get("peaks", {})
    if peaks:
        lines += ["", "Peak multiply-add rates used for %peak (computed, not measured):", ""]
        lines += [f"- {k}: {v}" for k, v in peaks.items()]
    lines += ["", *table_lines(doc["rows"], markdown=True), ""]
    legend = legend_lines(doc["rows"])
    lines += [*legend, ""] if legend else []
    lines += ["Times are wall-clock per batch-1 inference of the raw runtime call (input "
              "already in the model's layout); `upscaler` rows time `runtimes.Upscaler."
              "upscale` on a uint8 image (pre/post-processing included). GMAC/s = MACs / "
              "p50. Rows with weights = random measure speed only.", ""]
    return "\n".join(lines)


def _simd(flag: str) -> bool:
    return bool(re.match(r"(avx|amx|fma|f16c|sse4|asimd|sve|i8mm|bf16|fphp|dotprod|vnni)",
                         flag))


def plot_png(rows: Sequence[dict[str, Any]], path: Path, title: str) -> bool:
    """Latency (p50, log scale) vs measured Y-PSNR, one point per measured row. A
    published figure is never placed on one of our rows: on a Set5 axis each network's
    published Set5 figure is a dashed horizontal line of its own, labelled as published
    (not drawn when PSNR was measured on other sets). False if nothing to draw or no
    matplotlib (an optional extra: rdsrn[bench])."""
    pts = []
    published: dict[str, float] = {}
    data = sorted({r.get("accuracy_data") for r in rows if r.get("accuracy_data")})
    for r in rows:
        # a published Set5 figure belongs on a Set5 axis only
        if r.get("psnr_published_set5") is not None and data in ([], ["Set5"]):
            published[str(r.get("arch") or r["model"])] = float(r["psnr_published_set5"])
        if r.get("status") != "ok" or not r.get("p50_ms") or r.get("psnr") is None:
            continue
        pts.append((r["p50_ms"], r["psnr"],
                    f"{r['model']} {r['format']} {r['precision']} t{r['threads']}"))
    if not pts or importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for x, y, label in pts:
        ax.scatter([x], [y], s=40, color="C0")
        ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    for i, (model, psnr) in enumerate(sorted(published.items())):
        ax.axhline(psnr, color=f"C{1 + i % 8}", linestyle="--", linewidth=0.8)
        ax.annotate(f"{model}: published {psnr:.2f} (Set5, not measured here)",
                    (0.01, psnr), xycoords=("axes fraction", "data"), fontsize=6,
                    xytext=(0, 2), textcoords="offset points", color=f"C{1 + i % 8}")
    ax.set_xscale("log")
    ax.set_xlabel("latency p50 (ms, log scale)")
    ax.set_ylabel(f"Y-PSNR (dB), measured on {', '.join(data) or 'the test set'}; "
                  "dashed: published", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def write_results(doc: dict[str, Any], out_dir: Path, name: str) -> dict[str, Path]:
    """Write <name>.json/.csv/.md (+ .png when there is something to plot)."""
    out_dir = Path(out_dir)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("json", "csv", "md", "png")}
    _atomic_write(paths["json"], json.dumps(doc, indent=1, default=str) + "\n")
    _atomic_write(paths["csv"], csv_text(doc["rows"]))
    _atomic_write(paths["md"], markdown_text(doc))
    title = f"{doc.get('name', name)} — {device_slug(doc['machine'])}"
    if not plot_png(doc["rows"], paths["png"], title):
        paths.pop("png")
    return paths
