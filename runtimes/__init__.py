"""RDSRN runtime layer: upscale images with an exported model using numpy, OpenCV and
one inference runtime (onnxruntime or LiteRT) — never torch or tensorflow.

    from rdsrn.runtimes import Upscaler
    up = Upscaler("rdsrn_x4_int8.tflite", threads=4)
    sr = up.upscale(rgb)          # HxWx3 uint8 RGB -> (4H)x(4W)x3 uint8 RGB
    sr_bgr = up.upscale_bgr(bgr)  # the same for OpenCV's BGR order

Names are loaded lazily so that `import rdsrn.runtimes` (for its errors, by the CLI) is cheap.
"""

from __future__ import annotations

from typing import Any

from .errors import MissingExtraError, UserError

__all__ = ["Upscaler", "InexactOnThisCPU", "default_model_path", "default_choice",
           "bundled_models", "resolve_model", "UserError", "MissingExtraError"]

_LAZY = {
    "Upscaler": ("upscaler", "Upscaler"),
    "InexactOnThisCPU": ("upscaler", "InexactOnThisCPU"),
    "default_choice": ("bundled", "default_choice"),
    "default_model_path": ("bundled", "default_model_path"),
    "bundled_models": ("bundled", "bundled_models"),
    "resolve_model": ("bundled", "resolve_model"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
