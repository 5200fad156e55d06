"""Image and video files: read (the one image reader of every command), write atomically.

Images here are OpenCV arrays: BGR / BGRA / gray, uint8 or uint16, exactly as decoded
(16-bit PNG stays uint16, alpha is kept). JPEG EXIF orientation is applied. Every error
is a UserError naming the file, so a batch can report it and go on; native libraries'
warnings (libpng, libjpeg, OpenCV, ffmpeg) are kept off the terminal (native_noise).

Size limit: an image or video frame larger than `max_pixels` (default DEFAULT_MAX_PIXELS,
environment variable RDSRN_MAX_PIXELS, `--max-pixels` on `rdsrn upscale`; 0 = no limit)
is refused before it is decoded: its size is read from the PNG, JPEG, WebP, BMP, TIFF,
GIF or PNM header, a video's from its container. Other formats are checked right after
decoding (OpenCV itself refuses images over 2**30 pixels before decoding).
"""

from __future__ import annotations

import os
import secrets
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .errors import UserError
from .native_noise import quiet_native

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm",
                  ".pgm", ".pnm")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")
_WRITE_PARAMS = {
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
    ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95],
}


# 8192 x 8192 = 67.1 Mpx: above every common camera (24-61 Mpx) and an 8K frame (33 Mpx).
# A x4 upscale of it is already a 1-gigapixel output (3 GB as 8-bit RGB; the 24 Mpx
# input of runtime_memory.md peaks at 1.9 GB RSS) and ~7 min of the INT8 model on 2 EPYC
# cores (0.15 Mpx/s, README table), ~30 min in FP32; a 1-gigapixel input would need
# ~48 GB and hours. A small file that decodes to more is a mistake or a decompression
# bomb. Raise it with --max-pixels / RDSRN_MAX_PIXELS (0 = no limit).
DEFAULT_MAX_PIXELS = 8192 * 8192
MAX_PIXELS_ENV = "RDSRN_MAX_PIXELS"


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit in force: `max_pixels` if given, else $RDSRN_MAX_PIXELS, else
    DEFAULT_MAX_PIXELS. 0 means no limit."""
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw)
        except ValueError:
            raise UserError(f"{MAX_PIXELS_ENV}={raw!r} is not a whole number") from None
    if max_pixels < 0:
        raise UserError(f"max pixels must be >= 0 (0 = no limit), got {max_pixels}")
    return int(max_pixels)


def check_pixels(path: Path, width: int, height: int, max_pixels: int,
                 what: str = "image") -> None:
    """Refuse (UserError naming the file and the limit) a width x height over the limit."""
    if max_pixels and width * height > max_pixels:
        raise UserError(
            f"{path}: {what} is {width}x{height} = {width * height / 1e6:.1f} Mpx, over the "
            f"limit of {max_pixels / 1e6:.1f} Mpx (raise it with --max-pixels or "
            f"{MAX_PIXELS_ENV}; 0 = no limit)")


def _u16(data: bytes, i: int, big: bool) -> int:
    return struct.unpack_from(">H" if big else "<H", data, i)[0]


def _u32(data: bytes, i: int, big: bool) -> int:
    return struct.unpack_from(">I" if big else "<I", data, i)[0]


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOFn segment (embedded thumbnails sit inside APPn
    segments, which are skipped by length)."""
    n, i = len(data), 2
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:
            i += 2
            continue
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                      0xCE, 0xCF):
            h, w = _u16(data, i + 5, True), _u16(data, i + 7, True)
            return (w, h) if h else None  # height 0: defined later by a DNL marker
        if marker == 0xDA:
            return None
        i += 2 + _u16(data, i + 2, True)
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the first page of a classic (not Big) TIFF."""
    big = data[:2] == b"MM"
    if _u16(data, 2, big) != 42:
        return None
    ifd = _u32(data, 4, big)
    if ifd + 2 > len(data):
        return None
    size: dict[int, int] = {}
    for k in range(_u16(data, ifd, big)):
        e = ifd + 2 + 12 * k
        if e + 12 > len(data):
            return None
        tag, typ = _u16(data, e, big), _u16(data, e + 2, big)
        if tag in (256, 257):
            size[tag] = _u16(data, e + 8, big) if typ == 3 else _u32(data, e + 8, big)
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    head = data[:4096]
    if head[:2] == b"P7":  # PAM: "WIDTH n" / "HEIGHT n" lines
        fields = dict(line.split()[:2] for line in head.split(b"\n")
                      if len(line.split()) >= 2)
        try:
            return int(fields[b"WIDTH"]), int(fields[b"HEIGHT"])
        except (KeyError, ValueError):
            return None
    tokens: list[bytes] = []
    for line in head.split(b"\n"):
        tokens += line.split(b"#")[0].split()
        if len(tokens) >= 3:
            try:
                return int(tokens[1]), int(tokens[2])
            except ValueError:
                return None
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the header of a PNG, JPEG, WebP, BMP, TIFF, GIF or
    PNM file without decoding it; None for other formats or an unreadable header."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return _u32(data, 16, True), _u32(data, 20, True)
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8 ":
                return _u16(data, 26, False) & 0x3FFF, _u16(data, 28, False) & 0x3FFF
            if kind == b"VP8L":
                bits = _u32(data, 21, False)
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if kind == b"VP8X":
                return (int.from_bytes(data[24:27], "little") + 1,
                        int.from_bytes(data[27:30], "little") + 1)
            return None
        if data[:2] == b"BM":
            if _u32(data, 14, False) == 12:  # OS/2 BITMAPCOREHEADER
                return _u16(data, 18, False), _u16(data, 20, False)
            w, h = struct.unpack_from("<ii", data, 18)
            return abs(w), abs(h)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _u16(data, 6, False), _u16(data, 8, False)
        if data[:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
            return _pnm_size(data)
    except (struct.error, IndexError):
        return None
    return None


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def cv_reason(exc: Exception) -> str:
    """One line from a cv2.error: its short message ("func != 0"), not the whole text."""
    text = str(getattr(exc, "err", "") or exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


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


# Header bytes read before the size check: a JPEG's SOF segment can follow EXIF and ICC
# APPn segments of up to 64 kB each.
_HEAD_BYTES = 1 << 20


def png_is_complete(data: bytes) -> bool:
    """Whether a PNG's chunks all fit in the file and reach IEND.

    A chunk length past the end of the file (truncated or corrupt) otherwise makes
    OpenCV spend seconds on a 2 GB chunk before giving up.
    """
    n, i = len(data), 8
    while i + 12 <= n:
        length = _u32(data, i, True)
        if length > 0x7FFFFFFF or i + 12 + length > n:
            return False
        if data[i + 4:i + 8] == b"IEND":
            return True
        i += 12 + length
    return False


def _check_header_size(path: Path, size: tuple[int, int], limit: int) -> None:
    if 0 in size:
        raise UserError(f"{path}: corrupt image header (size {size[0]}x{size[1]})")
    check_pixels(path, *size, limit)


def read_image(path: str | Path, *, max_pixels: int | None = None,
               allow_float: bool = False) -> np.ndarray:
    """Decode an image file: HxW gray, HxWx3 BGR or HxWx4 BGRA; uint8 or uint16
    (float32/float64 as stored, e.g. float TIFF, only with `allow_float`).

    Refuses, with a UserError naming the file: a missing, unreadable, empty or
    non-regular file (a FIFO or device would block or never end), a truncated JPEG, an
    image over `max_pixels` (see resolve_max_pixels; checked from the header before
    decoding where the format allows), anything OpenCV cannot decode.
    """
    path = Path(path)
    limit = resolve_max_pixels(max_pixels)
    try:
        if path.is_dir():
            raise UserError(f"{path}: is a folder, not an image")
        if path.exists() and not path.is_file():
            raise UserError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            data = f.read(_HEAD_BYTES)  # the size is checked before the rest is read
            if not data:
                raise UserError(f"{path}: empty file (0 bytes)")
            size = image_size(data)
            if size is not None:
                _check_header_size(path, size, limit)
            data += f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size is None:  # e.g. a TIFF whose directory sits at the end of the file
        size = image_size(data)
        if size is not None:
            _check_header_size(path, size, limit)
    is_jpeg = data[:2] == b"\xff\xd8"
    if is_jpeg and not jpeg_is_complete(data):
        raise UserError(f"{path}: truncated or corrupt JPEG")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and not png_is_complete(data):
        raise UserError(f"{path}: truncated or corrupt PNG")
    # JPEG: ANYCOLOR|ANYDEPTH applies EXIF orientation (JPEG has no alpha to lose);
    # others: UNCHANGED keeps alpha and 16 bits.
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if is_jpeg else cv2.IMREAD_UNCHANGED
    try:
        with quiet_native():
            img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:
        raise UserError(f"{path}: not a readable image (OpenCV: {cv_reason(exc)})") from None
    if img is None or img.size == 0:
        raise UserError(f"{path}: not a readable image (corrupt, truncated or unknown type)")
    allowed = (np.uint8, np.uint16) + ((np.float16, np.float32, np.float64)
                                       if allow_float else ())
    if img.dtype not in allowed:
        raise UserError(f"{path}: unsupported sample type {img.dtype} (8 or 16 bit only)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    check_pixels(path, img.shape[1], img.shape[0], limit)
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
        with quiet_native():
            ok, buf = cv2.imencode(path.suffix, img, params)
    except cv2.error as exc:
        raise UserError(f"{path}: cannot encode {path.suffix} ({cv_reason(exc)})") from None
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


def read_video(path: str | Path, *, max_pixels: int | None = None
               ) -> tuple[Iterator[np.ndarray], float, int]:
    """(BGR frame iterator, fps, frame count or 0 if unknown).

    The frame size comes from the container and is checked against `max_pixels` (see
    resolve_max_pixels) before any frame is decoded; a frame that turns out larger
    stops the iterator with a UserError.
    """
    path = Path(path)
    limit = resolve_max_pixels(max_pixels)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes)")
    try:
        with quiet_native():
            cap = cv2.VideoCapture(str(path))
            opened = cap.isOpened()
    except cv2.error as exc:
        raise UserError(f"{path}: not a readable video (OpenCV: {cv_reason(exc)})") from None
    if not opened:
        cap.release()
        raise UserError(f"{path}: not a readable video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    try:
        check_pixels(path, width, height, limit, "video frame")
    except UserError:
        cap.release()
        raise

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                try:
                    with quiet_native():
                        ok, frame = cap.read()
                except cv2.error as exc:
                    raise UserError(f"{path}: cannot decode a frame (OpenCV: "
                                    f"{cv_reason(exc)})") from None
                if not ok:
                    return
                check_pixels(path, frame.shape[1], frame.shape[0], limit, "video frame")
                yield frame
        finally:
            cap.release()

    return frames(), (fps if 0 < fps < 1000 else 25.0), count


def write_video(path: str | Path, frames: Iterator[np.ndarray], fps: float,
                transform: Callable[[np.ndarray], np.ndarray]) -> int:
    """Write transform(frame) for every frame to a video (no audio: see copy_audio),
    atomically.

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
                with quiet_native():
                    writer = cv2.VideoWriter(str(tmp), fourcc, fps,
                                             (out.shape[1], out.shape[0]))
                if not writer.isOpened():
                    raise UserError(f"{path}: cannot open a video encoder for {path.suffix}")
            writer.write(out)
            written += 1
        if writer is None:
            raise UserError(f"{path}: input video has no readable frames")
        with quiet_native():
            writer.release()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
    return written


_TOOL_TIMEOUT_S = 600  # ffprobe / ffmpeg stream copy: never wait forever on them


def _last_line(text: bytes) -> str:
    lines = [ln for ln in text.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no message"


def count_audio_streams(path: str | Path) -> int | None:
    """Audio streams in a media file by ffprobe; None when ffprobe is not on PATH or
    cannot tell."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    try:
        done = subprocess.run(
            [ffprobe, "-v", "error", "-select_streams", "a", "-show_entries",
             "stream=index", "-of", "csv=p=0", os.path.abspath(path)],
            capture_output=True, timeout=_TOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return len([ln for ln in done.stdout.splitlines() if ln.strip()])


def copy_audio(source: str | Path, video: str | Path) -> str | None:
    """Put the audio of `source` into `video` (written by write_video, which has none).

    OpenCV writes pictures only; an `ffmpeg` binary on PATH, if there is one, copies
    the audio streams unchanged (no re-encoding) into a temporary file that then
    atomically replaces `video`. Returns None when there was nothing to do or the audio
    was copied, else a one-line note saying that the audio was not kept and why.
    """
    source, video = Path(source), Path(video)
    streams = count_audio_streams(source)
    if streams == 0:
        return None
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        what = "audio track not copied" if streams else "audio track, if any, not copied"
        return f"note: {source}: {what} (OpenCV writes video only; put ffmpeg on PATH to keep it)"
    tmp = _temp_path(video)
    try:
        done = subprocess.run(
            [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", os.path.abspath(video),
             "-i", os.path.abspath(source),
             "-map", "0:v:0", "-map", "1:a?", "-c", "copy", os.path.abspath(tmp)],
            capture_output=True, timeout=_TOOL_TIMEOUT_S, check=False)
        if done.returncode != 0:
            return (f"note: {source}: audio track not copied (ffmpeg: "
                    f"{_last_line(done.stderr)})")
        if tmp.stat().st_size == 0:
            return f"note: {source}: audio track not copied (ffmpeg wrote nothing)"
        os.replace(tmp, video)
    except subprocess.TimeoutExpired:
        return f"note: {source}: audio track not copied (ffmpeg ran over {_TOOL_TIMEOUT_S} s)"
    except OSError as exc:
        return f"note: {source}: audio track not copied ({exc.strerror or exc})"
    finally:
        tmp.unlink(missing_ok=True)
    return None
