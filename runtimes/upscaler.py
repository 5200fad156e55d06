"""`Upscaler`: an exported RDSRN model as an image -> image function (numpy only).

Images are numpy arrays HxW (gray) or HxWxC with C = 1 (gray), 2 (gray + alpha),
3 (RGB) or 4 (RGBA); dtype uint8 (0..255) or uint16 (0..65535), or float16/float32/
float64 with every value in [0, 1] (NaN, infinity or values outside [0, 1] are refused
with a UserError, never clipped silently). The result has the same dtype, channel count
and colour order, and is `scale` times larger. Colour goes through the model (gray is
replicated to RGB and averaged back); alpha is resized with bicubic interpolation
(cv2.INTER_CUBIC).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .backends import load_backend
from .errors import UserError
from .tiling import balanced_tile, pad_to, run_tiled

# Defaults chosen by measurement (benchmarks/results/runtime_tiling.md): tiled output
# stays >= 45 dB PSNR from whole-image output on Set5 and BSD68 with these.
DEFAULT_TILE = 192
DEFAULT_OVERLAP = 16

_ALPHA_ROWS = 256  # LR rows of alpha resized at a time
_ALPHA_MARGIN = 3  # extra LR rows each side of a strip (bicubic reads 2)

_MAXVAL = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def _check_float_range(image: np.ndarray) -> None:
    """Float images must be finite and within [0, 1] (UserError otherwise)."""
    lo, hi = float(image.min()), float(image.max())  # NaN propagates, without a warning
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise UserError(f"float image holds NaN or infinite values (dtype {image.dtype})")
    if lo < 0.0 or hi > 1.0:
        raise UserError(f"float image values must be in [0, 1], found {lo:g} .. {hi:g} "
                        "(divide 8-bit data by 255, or clip)")


class InexactOnThisCPU(UserWarning):
    """A model file runs on a CPU whose int8 kernels do not compute it exactly."""


class Upscaler:
    """Super-resolve images with an exported model file (.onnx or .tflite).

    Args:
        model_path: the model file, or a bundled model's name ("rdsrn_x4_int8.tflite",
            "rdsrn_x4_int8", "rdsrn_x4": see runtimes.bundled); None: the bundled file
            that is fastest and exact on this CPU (runtimes.bundled.default_choice). Its
            embedded metadata sets everything: scale, tensor layout, fixed or dynamic
            input size, value range, precision, I/O dtype.
        scale: with no model_path, the scale of the default file (2, 3 or 4; default
            4); with one, it must be the file's scale.
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

    def __init__(self, model_path: str | Path | None = None, *, scale: int | None = None,
                 backend: str = "auto", threads: int | None = None, tile: int | None = None,
                 overlap: int | None = None) -> None:
        from .bundled import resolve_model  # a file path, or a bundled name

        self.model_path = resolve_model(None if model_path is None else str(model_path),
                                        scale)
        self._backend = load_backend(self.model_path, backend, threads)
        meta = self._backend.metadata
        if scale is not None and int(meta["scale"]) != scale:
            raise UserError(f"{self.model_path} is a x{meta['scale']} model, not x{scale}")
        self._warn_if_inexact(meta)
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

    def _warn_if_inexact(self, meta: dict[str, Any]) -> None:
        """An INT8 file that is not exact on this CPU's kernel path runs, with one
        InexactOnThisCPU warning naming the expected loss and the exact default here."""
        from .bundled import default_model_path, int8_exactness
        from .cpu import this_kernel_path

        kp = this_kernel_path()
        reason = int8_exactness(meta, kp)
        if reason is None:
            return
        try:
            better = f"; the exact default here is {default_model_path(int(meta['scale'])).name}"
        except UserError:
            better = ""
        warnings.warn(InexactOnThisCPU(f"{self.model_path.name} is not exact on this CPU "
                                       f"({kp}): {reason}{better}"), stacklevel=3)

    def __repr__(self) -> str:
        size = "dynamic" if self.input_size is None else f"{self.input_size}"
        return (f"Upscaler({str(self.model_path)!r}, x{self.scale}, {self.format} "
                f"{self.precision}, {self.backend}, input {size}, tile {self.tile}, "
                f"overlap {self.overlap}, threads {self.threads})")

    def run_tensor(self, x: np.ndarray) -> np.ndarray:
        """One raw model call: float32 (1, h, w, 3) RGB [0, 1] -> (1, h*s, w*s, 3),
        unclamped. No tiling, padding or size checks."""
        return self._backend.run(x)

    def upscale(self, image: np.ndarray,
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Upscale an RGB(A) or gray image; see the module docstring for accepted
        shapes and dtypes. Returns an array of the same dtype and channel layout.

        progress(done, total), if given, is called after each model call (tiles done,
        tiles in the image). The result is written once, into one preallocated array;
        the float working memory is one tile plus the rows shared by two rows of tiles.
        """
        return self._upscale(image, bgr=False, progress=progress)

    def upscale_bgr(self, image: np.ndarray,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """`upscale` for OpenCV's BGR / BGRA order (gray passes through unchanged). The
        channel order is swapped per tile, on the way in and out: no copy of the image
        or of the result is made."""
        return self._upscale(image, bgr=True, progress=progress)

    # -- internals -----------------------------------------------------------------

    def _upscale(self, image: np.ndarray, bgr: bool,
                 progress: Callable[[int, int], None] | None) -> np.ndarray:
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
            _check_float_range(image)
        else:
            raise UserError(f"unsupported image dtype {dtype} (use uint8, uint16 or float)")
        img3 = image[:, :, None] if image.ndim == 2 else image
        h, w, c = img3.shape
        s = self.scale
        out = np.empty((h * s, w * s, c), dtype=dtype)  # the only full-size allocation
        n_color = c if c in (1, 3) else c - 1
        self._color(img3[:, :, :n_color], maxval, out[:, :, :n_color],
                    swap=bgr and n_color == 3, progress=progress)
        if n_color < c:
            self._resize_alpha(img3[:, :, c - 1], out[:, :, c - 1])
        return out[:, :, 0] if image.ndim == 2 else out

    def _resize_alpha(self, alpha: np.ndarray, out: np.ndarray) -> None:
        """Bicubic (cv2.INTER_CUBIC) resize of an h x w alpha plane into `out` (h*s x
        w*s), a strip of rows at a time; each strip is resized with a margin of source
        rows, so it matches one whole-plane resize (within 1 unit for 8/16-bit data)."""
        import cv2  # a dependency of the package; needed only for alpha

        h, w = alpha.shape
        s = self.scale
        for r0 in range(0, h, _ALPHA_ROWS):
            r1 = min(h, r0 + _ALPHA_ROWS)
            a0, a1 = max(0, r0 - _ALPHA_MARGIN), min(h, r1 + _ALPHA_MARGIN)
            # OpenCV resizes float32 but not float16 (and float64 needs no more precision)
            src = alpha[a0:a1]
            src = src.astype(np.float32) if src.dtype.kind == "f" else np.ascontiguousarray(src)
            res = cv2.resize(src, (w * s, (a1 - a0) * s), interpolation=cv2.INTER_CUBIC)
            res = res[(r0 - a0) * s:(r1 - a0) * s]
            if res.dtype.kind == "f":
                res = np.clip(res, 0.0, 1.0)
            out[r0 * s:r1 * s] = res

    def _color(self, image: np.ndarray, maxval: float, out: np.ndarray, swap: bool,
               progress: Callable[[int, int], None] | None) -> None:
        """HxWx3 (or HxWx1 gray) through the model, tile by tile, into `out` (a view of
        the result, h*s x w*s x 3 or 1). swap: the image is BGR (reversed per tile)."""
        h, w = image.shape[:2]
        s = self.scale
        gray = image.shape[2] == 1
        need_h = need_w = self.min_input
        if self.input_size is not None:
            need_h, need_w = max(need_h, self.input_size[0]), max(need_w, self.input_size[1])
        src = pad_to(image, need_h, need_w)
        ph, pw = src.shape[:2]
        if self.input_size is not None:
            tile = self.input_size  # every model call gets exactly the fixed shape
        elif self.tile == 0:
            tile = (ph, pw)
        else:  # dynamic size: no more work than the tile count requires
            tile = (max(self.min_input, balanced_tile(ph, self.tile, self.overlap)),
                    max(self.min_input, balanced_tile(pw, self.tile, self.overlap)))
        inv = np.float32(1.0 / maxval)
        order = slice(None, None, -1) if swap else slice(None)

        def read_tile(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            t = src[y0:y1, x0:x1, order].astype(np.float32) * inv
            return np.repeat(t, 3, axis=2) if gray else t

        def emit(y0: int, x0: int, block: np.ndarray) -> None:
            block = block[:max(0, h * s - y0), :max(0, w * s - x0)]  # drop padding
            if block.size == 0:
                return
            if gray:
                block = block.mean(axis=2, keepdims=True)
            if out.dtype.kind == "f":
                np.clip(block, 0.0, 1.0, out=block)
            else:
                block *= np.float32(maxval)
                np.rint(block, out=block)
                np.clip(block, 0.0, maxval, out=block)
            out[y0:y0 + block.shape[0], x0:x0 + block.shape[1]] = block[:, :, order]

        run_tiled(read_tile, ph, pw, self._backend.run, s, tile, self.overlap, emit,
                  progress=progress)
