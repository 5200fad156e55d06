"""The model files bundled with the package (runtimes/models/) and the default choice.

Bundled files are named rdsrn_x{scale}_{precision}.{onnx,tflite}; the names are used only
to find a file here, never to configure it (its embedded metadata does that).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .errors import UserError
from .formats import FORMATS

MODELS_DIR = Path(__file__).resolve().parent / "models"

# The default file per CPU kernel path (runtimes.cpu.KERNEL_PATHS): the bundled
# (format, precision) pairs, fastest first, among files exact on that path. Exactness is
# from the INT8 kernel-path matrix (benchmarks/results/int8_paths.md: every bundled INT8
# file is within its target on every path; the ONNX files are pair-safe, so onnxruntime's
# saturating int16 kernels are exact on them too). Speed, 320x180 -> 1280x720, 2 threads
# (README "Which file runs by default"): on x86 with VNNI or AMX and on ARM, LiteRT's
# XNNPACK int8 kernels are the fastest (4-5.5x FP32 on VNNI/AMX); on x86 without VNNI
# XNNPACK widens int8 to 16 bits and runs near FP32 speed (1.10x on AMD Zen 3) while
# onnxruntime's int8 kernels run 1.6x TFLite FP32 there.
_FAST_INT8_TFLITE = (("tflite", "int8"), ("onnx", "int8"), ("tflite", "fp32"), ("onnx", "fp32"),
                     ("tflite", "fp16"))
_FAST_INT8_ONNX = (("onnx", "int8"), ("tflite", "int8"), ("tflite", "fp32"), ("onnx", "fp32"),
                   ("tflite", "fp16"))
_DOT_PRODUCT = "LiteRT INT8 is the fastest file on x86 with AMX or VNNI"
_NO_VNNI = ("no VNNI: onnxruntime's INT8 kernels beat LiteRT's 16-bit-widening ones (the "
            "pair-safe ONNX file is exact on their saturating int16 sums)")
# kernel path -> (order, why): the one table; why is the line `rdsrn bench --suite device`
# shows.
_DEFAULTS: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "x86-amx": (_FAST_INT8_TFLITE, _DOT_PRODUCT),
    "x86-vnni": (_FAST_INT8_TFLITE, _DOT_PRODUCT),
    "x86-avx512": (_FAST_INT8_ONNX, _NO_VNNI),
    "x86-avx2": (_FAST_INT8_ONNX, _NO_VNNI),
    "x86-sse": (_FAST_INT8_ONNX, "no AVX2: onnxruntime's INT8 file, as on AVX2 (exact: its "
                                 "SSE2 kernels widen to 16 bits; speed not measured)"),
    "arm64-neon": (_FAST_INT8_TFLITE, "LiteRT INT8 (XNNPACK NEON kernels), exact on this path"),
    "arm64-dotprod": (_FAST_INT8_TFLITE, "LiteRT INT8 (XNNPACK dot-product kernels), exact on "
                                         "this path"),
    "arm64-i8mm": (_FAST_INT8_TFLITE, "LiteRT INT8 (XNNPACK i8mm kernels), exact on this path"),
    "arm64-sve": (_FAST_INT8_TFLITE, "LiteRT INT8, exact on this path"),
    # Not characterised: the pair-safe INT8 ONNX file, whose exactness needs nothing of the
    # kernel but int16 or wider sums (a proof from its weights, not a measurement).
    "unknown": (_FAST_INT8_ONNX, "a CPU the INT8 matrix does not cover: the most conservative "
                                 "exact file, the pair-safe INT8 ONNX (exact on any kernel that "
                                 "sums in int16 or wider)"),
}
DEFAULT_ORDER = {kp: order for kp, (order, _) in _DEFAULTS.items()}
DEFAULT_WHY = {kp: why for kp, (_, why) in _DEFAULTS.items()}


def int8_exactness(meta: dict[str, Any], kernel_path: str) -> str | None:
    """None when a file with embedded metadata `meta` computes its exact integer result
    on `kernel_path`; else one line saying why not and what it costs."""
    if meta.get("precision") != "int8" or meta.get("format") != "onnx":
        return None
    bound = (meta.get("quantization") or {}).get("pair_bound") or {}
    if bound.get("safe"):
        return None
    if kernel_path in ("x86-avx2", "x86-avx512"):
        return ("its int8 weights are not pair-safe and onnxruntime adds uint8 x int8 pairs "
                "into a saturating int16 on x86 without VNNI: expect a loss of up to 0.8 dB "
                "(measured 0.4-0.8 dB on Set5 for such files)")
    if kernel_path == "unknown":
        return "its int8 weights are not pair-safe, and this CPU's int8 kernels are unknown"
    return None


def runtime_available(fmt: str) -> bool:
    """Whether a runtime for `fmt` ("onnx" / "tflite") is importable (nothing is imported)."""
    if fmt == "onnx":
        return importlib.util.find_spec("onnxruntime") is not None
    return any(importlib.util.find_spec(m) is not None
               for m in ("ai_edge_litert", "tflite_runtime", "tensorflow"))


def bundled_models() -> list[Path]:
    """All bundled model files, sorted by name."""
    if not MODELS_DIR.is_dir():
        return []
    suffixes = {f.suffix for f in FORMATS.values()}
    return sorted(p for p in MODELS_DIR.iterdir() if p.suffix in suffixes and p.is_file())


def default_model_path(scale: int = 4, format: str | None = None,
                       kernel_path: str | None = None) -> Path:
    """The bundled model to use for `scale` on this CPU: the first of
    DEFAULT_ORDER[kernel_path] (default: this CPU's, runtimes.cpu) that is bundled and
    whose runtime is installed (restricted to `format` when given).

    Raises UserError when no bundled model fits.
    """
    return default_choice(scale, format, kernel_path)[0]


def default_choice(scale: int = 4, format: str | None = None,
                   kernel_path: str | None = None) -> tuple[Path, str, str]:
    """(path, kernel path, why) of default_model_path: the file, the CPU's kernel path
    and one line on why this file."""
    from .cpu import this_kernel_path

    if format is not None and format not in FORMATS:
        raise UserError(f"unknown format {format!r}; choices: {', '.join(FORMATS)}")
    kp = kernel_path or this_kernel_path()
    order = DEFAULT_ORDER.get(kp, DEFAULT_ORDER["unknown"])
    candidates = [(f, p) for f, p in order if format in (None, f)]
    present = [(f, MODELS_DIR / f"rdsrn_x{scale}_{p}{FORMATS[f].suffix}")
               for f, p in candidates]
    present = [(f, path) for f, path in present if path.is_file()]
    if not present:
        kind = f" {format}" if format else ""
        raise UserError(f"no bundled{kind} x{scale} model; pass --model PATH "
                        "(make one with `rdsrn export`)")
    for i, (f, path) in enumerate(present):
        if runtime_available(f):
            why = DEFAULT_WHY.get(kp, DEFAULT_WHY["unknown"])
            if i:
                first = present[0]
                why += (f" (first choice {first[1].name}: pip install "
                        f"'rdsrn[{FORMATS[first[0]].runtime_extra}]')")
            return path, kp, why
    f = present[0][0]
    extra = FORMATS[f].runtime_extra
    raise UserError(f"the bundled x{scale} models need a runtime: pip install 'rdsrn[{extra}]'")


def resolve_model(name_or_path: str | None, scale: int | None = None) -> Path:
    """A model argument: an existing file path, or a bundled name such as "rdsrn_x4",
    "rdsrn_x4_int8" or "rdsrn_x4_int8.tflite"; None gives the default for `scale`."""
    if name_or_path is None:
        return default_model_path(scale or 4)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    bundled = bundled_models()
    by_name = {p.name: p for p in bundled}
    if name_or_path in by_name:
        return by_name[name_or_path]
    stem_matches = [p for p in bundled if p.stem == name_or_path]
    if stem_matches:
        ranked = sorted(stem_matches, key=lambda p: (not runtime_available(p.suffix[1:]),
                                                      p.suffix != ".tflite"))
        return ranked[0]
    prefix = name_or_path.rstrip("_")
    if prefix.startswith("rdsrn_x") and prefix[7:].isdigit():
        return default_model_path(int(prefix[7:]))
    names = sorted({p.stem for p in bundled} | {p.name for p in bundled})
    hint = f"; bundled: {', '.join(names)}" if names else ""
    raise UserError(f"{name_or_path}: no such model file or bundled model{hint}")
