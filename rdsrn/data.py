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

from .imresize import imresize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # 0..65535 -> 0..255 (65535 / 255 = 257 exactly), rounded.
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):  # float TIFF: assumed 0..1
        return np.floor(np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise UserError(f"unsupported image sample type {img.dtype}")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB HxWx3, or HxW for a gray image.

    Alpha is dropped; 16-bit and float images are scaled to 0..255. Raises UserError
    with a one-line message naming the file when it is missing, empty or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    try:
        raw = np.fromfile(str(path), dtype=np.uint8)  # imdecode copes with any path text
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw.size == 0:
        raise UserError(f"{path}: empty file (0 bytes), not an image")
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise UserError(f"{path}: not a readable image")
    try:
        img = _to_uint8(img)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 1:
            img = img[:, :, 0]
        elif channels == 2:  # gray + alpha
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
