"""The model files bundled with the package (runtimes/models/) and the default choice.

Bundled files are named rdsrn_x{scale}_{precision}.{onnx,tflite}; the names are used only
to find a file here, never to configure it (its embedded metadata does that).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import UserError
from .formats import FORMATS

MODELS_DIR = Path(__file__).resolve().parent / "models"

# Preference for the default model, best first (format, precision): the fastest bundled
# file first. Speed measured on 2 x86 cores (benchmarks/results/runtime_overhead.md,
# 320x180 -> 1280x720): TFLite INT8 0.39 s, ONNX INT8 0.57 s, TFLite FP32 1.52 s, ONNX
# FP32 1.60 s. INT8 may lead because the exporter writes an INT8 file only within its
# Set5 PSNR-drop gate (0.3 dB, recorded in the file as `delta_psnr`; checked for every
# bundled file by tests/test_wheel_install.py), so with only onnxruntime installed the
# default is the INT8 ONNX file, with only LiteRT the INT8 TFLite file.
PREFERENCE: tuple[tuple[str, str], ...] = (
    ("tflite", "int8"), ("onnx", "int8"), ("tflite", "fp32"), ("onnx", "fp32"),
    ("tflite", "fp16"),
)


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


def default_model_path(scale: int = 4, format: str | None = None) -> Path:
    """The bundled model to use for `scale`: the first of PREFERENCE that is bundled and
    whose runtime is installed (restricted to `format` when given).

    Raises UserError when no bundled model fits.
    """
    if format is not None and format not in FORMATS:
        raise UserError(f"unknown format {format!r}; choices: {', '.join(FORMATS)}")
    candidates = [(f, p) for f, p in PREFERENCE if format in (None, f)]
    present = [(f, MODELS_DIR / f"rdsrn_x{scale}_{p}{FORMATS[f].suffix}")
               for f, p in candidates]
    present = [(f, path) for f, path in present if path.is_file()]
    if not present:
        kind = f" {format}" if format else ""
        raise UserError(f"no bundled{kind} x{scale} model; pass --model PATH "
                        "(make one with `rdsrn export`)")
    for f, path in present:
        if runtime_available(f):
            return path
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
