"""Image and video files for `rdsrn upscale`: read, and write atomically.

Images here are OpenCV arrays: BGR / BGRA / gray, uint8 or uint16, exactly as decoded
(16-bit PNG stays uint16, alpha is kept). JPEG EXIF orientation is applied. Every error
is a UserError naming the file, so a batch can report it and go on.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm",
                  ".pgm", ".pnm")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")
_WRITE_PARAMS = {
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95],
}


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG stream reaches its end-of-image marker.

    libjpeg decodes a truncated file with only a warning (the missing part comes out
    grey), so this walks the marker segments and the entropy-coded scans up to EOI.
    Embedded thumbnails sit inside APPn segments and are skipped by length; data after
    EOI (camera trailers) is ignored.
    """
    n, i = len(data), 2
    while i + 1 < n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            i += 2
            continue
        if i + 4 > n:
            return False
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # scan data: skip to the next real marker
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return False
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed byte or restart marker
                    i = j + 2
                elif nxt == 0xFF:
                    i = j + 1
                else:
                    i = j
                    break
    return False


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file: HxW gray, HxWx3 BGR or HxWx4 BGRA; uint8 or uint16."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise UserError(f"{path}: empty file (0 bytes)")
    is_jpeg = data[:2] == b"\xff\xd8"
    if is_jpeg and not jpeg_is_complete(data):
        raise UserError(f"{path}: truncated or corrupt JPEG")
    # JPEG: ANYCOLOR|ANYDEPTH applies EXIF orientation (JPEG has no alpha to lose);
    # others: UNCHANGED keeps alpha and 16 bits.
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if is_jpeg else cv2.IMREAD_UNCHANGED
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if img is None or img.size == 0:
        raise UserError(f"{path}: not a readable image (corrupt, truncated or unknown type)")
    if img.dtype not in (np.uint8, np.uint16):
        raise UserError(f"{path}: unsupported sample type {img.dtype} (8 or 16 bit only)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return img


def _temp_path(final: Path) -> Path:
    """A fresh hidden file beside `final` (same suffix), created with the permissions a
    normal file gets (0o666 minus the umask; mkstemp's 0o600 would stick to the output)."""
    for _ in range(100):
        tmp = final.parent / f".{final.stem}.{secrets.token_hex(4)}.tmp{final.suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise UserError(f"{final.parent}: cannot create a temporary file")


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Encode by suffix and write atomically (temporary file, then os.replace)."""
    path = Path(path)
    params = _WRITE_PARAMS.get(path.suffix.lower(), [])
    try:
        ok, buf = cv2.imencode(path.suffix, img, params)
    except cv2.error as exc:
        raise UserError(f"{path}: cannot encode {path.suffix} ({exc.err})") from None
    if not ok:
        raise UserError(f"{path}: cannot encode {path.suffix}")
    tmp = _temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def video_output_suffix(path: str | Path) -> str:
    """Container for an upscaled video: AVI stays AVI (MJPG), anything else is MP4."""
    return ".avi" if Path(path).suffix.lower() == ".avi" else ".mp4"


def read_video(path: str | Path) -> tuple[Iterator[np.ndarray], float, int]:
    """(BGR frame iterator, fps, frame count or 0 if unknown)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise UserError(f"{path}: not a readable video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
        finally:
            cap.release()

    return frames(), (fps if 0 < fps < 1000 else 25.0), count


def write_video(path: str | Path, frames: Iterator[np.ndarray], fps: float,
                transform: Callable[[np.ndarray], np.ndarray]) -> int:
    """Write transform(frame) for every frame to a video (no audio), atomically.

    Returns the number of frames written; raises UserError if there were none or the
    encoder cannot be opened.
    """
    path = Path(path)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    tmp = _temp_path(path)
    writer = None
    written = 0
    try:
        for frame in frames:
            out = transform(frame)
            if out.ndim == 2:
                out = cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
            if writer is None:
                writer = cv2.VideoWriter(str(tmp), fourcc, fps, (out.shape[1], out.shape[0]))
                if not writer.isOpened():
                    raise UserError(f"{path}: cannot open a video encoder for {path.suffix}")
            writer.write(out)
            written += 1
        if writer is None:
            raise UserError(f"{path}: input video has no readable frames")
        writer.release()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return written
