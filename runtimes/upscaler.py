"""`Upscaler`: an exported RDSRN model as an image -> image function (numpy only).

Images are numpy arrays HxW (gray) or HxWxC with C = 1 (gray), 2 (gray + alpha),
3 (RGB) or 4 (RGBA); dtype uint8 (0..255) or uint16 (0..65535), or float32/float64 in
[0, 1]. The result has the same dtype, channel count and colour order, and is `scale`
times larger. Colour goes through the model (gray is replicated to RGB and averaged
back); alpha is resized with bicubic interpolation (cv2.INTER_CUBIC).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .backends import load_backend
from .errors import UserError
from .tiling import balanced_tile, pad_to, run_tiled

# Defaults chosen by measurement (benchmarks/results/runtime_tiling.md): tiled output
# stays >= 45 dB PSNR from whole-image output on Set5 and BSD68 with these.
DEFAULT_TILE = 192
DEFAULT_OVERLAP = 16

_EMIT_CHUNK = 64  # output rows converted at a time

_MAXVAL = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


class Upscaler:
    """Super-resolve images with an exported model file (.onnx or .tflite).

    Args:
        model_path: the model file. Its embedded metadata sets everything: scale, tensor
            layout, fixed or dynamic input size, value range, precision, I/O dtype.
        backend: "auto" (by file content), "onnxruntime" or "litert".
        threads: CPU threads for the runtime (default: all available cores).
        tile: largest LR tile side in pixels (default DEFAULT_TILE); tiles are shrunk
            to the smallest size that needs no more tiles. 0 runs the whole image in one
            pass (dynamic-size models only). A model with a fixed input size always uses
            its own size.
        overlap: LR pixels shared by neighbouring tiles (default DEFAULT_OVERLAP).

    Attributes: scale, precision, layout, format, io_dtype, input_size ((h, w) or None
    when dynamic), min_input, tile, overlap, threads, backend (runtime name), metadata.
    """

    def __init__(self, model_path: str | Path, *, backend: str = "auto",
                 threads: int | None = None, tile: int | None = None,
                 overlap: int | None = None) -> None:
        self.model_path = Path(model_path)
        self._backend = load_backend(self.model_path, backend, threads)
        meta = self._backend.metadata
        self.metadata: dict[str, Any] = meta
        self.scale: int = self._backend.scale
        self.layout: str = self._backend.layout
        self.precision: str = str(meta["precision"])
        self.format: str = str(meta.get("format", ""))
        self.io_dtype: str = str(meta["io_dtype"])
        self.input_size: tuple[int, int] | None = self._backend.input_size
        self.min_input: int = max(1, int(meta.get("min_input") or 1))
        self.threads: int = self._backend.threads
        self.backend: str = self._backend.name
        if tile is not None and tile < 0:
            raise UserError(f"tile must be >= 0, got {tile}")
        if self.input_size is not None:
            if tile not in (None, 0) and (tile, tile) != self.input_size:
                raise UserError(f"{self.model_path} has a fixed input size "
                                f"{self.input_size[0]}x{self.input_size[1]}; leave tile unset")
            self.tile = max(self.input_size)
        else:
            self.tile = DEFAULT_TILE if tile is None else int(tile)
            if 0 < self.tile < self.min_input:
                raise UserError(f"tile must be >= the model's min_input {self.min_input}, "
                                f"got {self.tile}")
        limit = max(0, (min(self.input_size) if self.input_size else self.tile) // 2 - 1)
        self.overlap = min(DEFAULT_OVERLAP, limit) if overlap is None else int(overlap)
        if self.tile and not 0 <= self.overlap <= limit:
            raise UserError(f"overlap must be in [0, {limit}] for tile {self.tile}, "
                            f"got {self.overlap}")

    def __repr__(self) -> str:
        size = "dynamic" if self.input_size is None else f"{self.input_size}"
        return (f"Upscaler({str(self.model_path)!r}, x{self.scale}, {self.format} "
                f"{self.precision}, {self.backend}, input {size}, tile {self.tile}, "
                f"overlap {self.overlap}, threads {self.threads})")

    def run_tensor(self, x: np.ndarray) -> np.ndarray:
        """One raw model call: float32 (1, h, w, 3) RGB [0, 1] -> (1, h*s, w*s, 3),
        unclamped. No tiling, padding or size checks."""
        return self._backend.run(x)

    def upscale(self, image: np.ndarray) -> np.ndarray:
        """Upscale an RGB(A) or gray image; see the module docstring for accepted
        shapes and dtypes. Returns an array of the same dtype and channel layout."""
        image = np.asarray(image)
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
            raise UserError(f"expected an HxW or HxWxC image with C in 1..4, got shape "
                            f"{image.shape}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise UserError(f"empty image, shape {image.shape}")
        dtype = image.dtype
        if dtype in _MAXVAL:
            maxval = _MAXVAL[dtype]
        elif dtype.kind == "f":
            maxval = 1.0
        else:
            raise UserError(f"unsupported image dtype {dtype} (use uint8, uint16 or float)")
        if image.ndim == 2:
            return self._color(image[:, :, None], maxval, gray=True)[:, :, 0]
        c = image.shape[2]
        if c in (1, 3):
            return self._color(image, maxval, gray=c == 1)
        color = self._color(image[:, :, :c - 1], maxval, gray=c == 2)
        alpha = self._resize_alpha(image[:, :, c - 1])
        return np.concatenate([color, alpha[:, :, None]], axis=2)

    def upscale_bgr(self, image: np.ndarray) -> np.ndarray:
        """`upscale` for OpenCV's BGR / BGRA order (gray passes through unchanged)."""
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] in (3, 4):
            order = [2, 1, 0] + ([3] if image.shape[2] == 4 else [])
            return self.upscale(image[:, :, order])[:, :, order]
        return self.upscale(image)

    # -- internals -----------------------------------------------------------------

    def _resize_alpha(self, alpha: np.ndarray) -> np.ndarray:
        import cv2  # a dependency of the package; needed only for alpha

        h, w = alpha.shape
        src = alpha if alpha.dtype != np.float64 else alpha.astype(np.float32)
        out = cv2.resize(src, (w * self.scale, h * self.scale), interpolation=cv2.INTER_CUBIC)
        if out.dtype.kind == "f":
            out = np.clip(out, 0.0, 1.0)
        return out.astype(alpha.dtype, copy=False)

    def _color(self, image: np.ndarray, maxval: float, gray: bool) -> np.ndarray:
        """HxWx3 (or HxWx1 gray) through the model, tile by tile."""
        h, w = image.shape[:2]
        s = self.scale
        need_h = need_w = self.min_input
        if self.input_size is not None:
            need_h, need_w = max(need_h, self.input_size[0]), max(need_w, self.input_size[1])
        src = pad_to(image, need_h, need_w)
        ph, pw = src.shape[:2]
        if self.input_size is not None:
            tile = self.input_size
        elif self.tile == 0:
            tile = (ph, pw)
        else:  # dynamic size: no more work than the tile count requires
            tile = (max(self.min_input, balanced_tile(ph, self.tile, self.overlap)),
                    max(self.min_input, balanced_tile(pw, self.tile, self.overlap)))
        out = np.empty((h * s, w * s, image.shape[2]), dtype=image.dtype)
        inv = np.float32(1.0 / maxval)

        def read_tile(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            t = src[y0:y1, x0:x1].astype(np.float32) * inv
            return np.repeat(t, 3, axis=2) if gray else t

        def emit(row0: int, rows: np.ndarray) -> None:
            rows = rows[:max(0, h * s - row0), :w * s]  # drop padding
            for r in range(0, rows.shape[0], _EMIT_CHUNK):  # bounded temporaries
                chunk = rows[r:r + _EMIT_CHUNK]
                if gray:
                    chunk = chunk.mean(axis=2, keepdims=True)
                if image.dtype.kind == "f":
                    chunk = np.clip(chunk, 0.0, 1.0)
                else:
                    chunk = chunk * np.float32(maxval)
                    np.rint(chunk, out=chunk)
                    np.clip(chunk, 0.0, maxval, out=chunk)
                out[row0 + r:row0 + r + chunk.shape[0]] = chunk

        run_tiled(read_tile, ph, pw, self._backend.run, s, tile, self.overlap, emit)
        return out
