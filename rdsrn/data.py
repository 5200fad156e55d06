"""Image I/O and the standard LR generation used by training and evaluation.

Images are numpy arrays: uint8, value range 0..255, RGB channel order, HxWx3 (or HxW
for gray). Readers never return BGR.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from rdsrn.runtimes.errors import UserError
from rdsrn.runtimes.io import IMAGE_SUFFIXES  # the one list of image suffixes

from .imresize import imresize


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # 0..65535 -> 0..255 (65535 / 255 = 257 exactly), rounded.
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):  # float TIFF: assumed 0..1
        if not np.isfinite(img.min()) or not np.isfinite(img.max()):
            raise UserError("float image holds NaN or infinite values")
        return np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise UserError(f"unsupported image sample type {img.dtype}")


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB HxWx3, or HxW for a gray image.

    Decoding is rdsrn.runtimes.io.read_image, the reader `rdsrn upscale` uses: JPEG EXIF
    orientation is applied, images over `max_pixels` (default: $RDSRN_MAX_PIXELS or
    8192x8192 = 67.1 Mpx; 0 = no limit) are refused before decoding, native warnings
    stay off the terminal. Alpha is dropped; 16-bit and float (0..1) images are scaled to 0..255.
    Raises UserError with a one-line message naming the file when it is missing,
    empty, too large or not an image.
    """
    from rdsrn.runtimes.io import read_image as decode

    path = Path(path)
    img = decode(path, max_pixels=max_pixels, allow_float=True)  # BGR(A) or gray
    try:
        img = _to_uint8(img)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 2:  # gray + alpha
            img = img[:, :, 0]
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif channels == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            raise UserError(f"{path}: unsupported number of channels ({channels})")
    return np.ascontiguousarray(img)


def list_images(folder: str | Path) -> list[Path]:
    """Image files (png/jpg/jpeg/webp/bmp/tif) directly in `folder`, sorted by name.

    Raises UserError when the folder is missing or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder")
    return files


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop height and width down to multiples of `scale` (bottom/right rows dropped)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """The standard LR image: MATLAB bicubic (antialiased) downscale by 1/scale of a
    uint8 HR image, rounded to uint8. HR should be mod-cropped to `scale` first."""
    if hr.dtype != np.uint8:
        raise ValueError(f"make_lr expects a uint8 image, got {hr.dtype}")
    return imresize(hr, 1.0 / scale)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write a uint8 RGB (HxWx3) or gray (HxW) image; the format follows the suffix.

    Atomic: written to a temporary file in the same folder, then renamed over `path`.
    """
    path = Path(path)
    if img.dtype != np.uint8:
        raise ValueError(f"write_image expects uint8, got {img.dtype}")
    data = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(path.suffix.lower() or ".png", data)
    if not ok:
        raise UserError(f"{path}: cannot encode image as {path.suffix or '(no suffix)'}")
    write_bytes_atomic(path, buf.tobytes())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically: a temporary file in the same folder, renamed
    over `path`, with the normal (umask) permissions; nothing is left on failure."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                               dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give normal permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
