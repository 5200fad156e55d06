"""Keep native libraries' chatter off the terminal, without losing anything else.

libpng ("libpng warning: iCCP: known incorrect sRGB profile"), libjpeg ("Corrupt JPEG
data: ..."), OpenCV's own log ("[ WARN:0@0.1] ...") and ffmpeg write to file descriptor
2 from C code, and LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for
CPU." when it first allocates tensors. Python's sys.stderr cannot intercept those, and
they land beside our one-line errors and break the progress bar.

`quiet_native()` points fd 2 at a temporary file while a native call runs, then writes
back every captured line that is not known noise (so an unexpected message, or a line
another thread printed meanwhile, still appears, only later), and lowers OpenCV's log
level for that time. Both are process-wide, so they are set only around the call and
always restored.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import IO, Callable, Iterator

# Lines known to be noise: warnings about files we either read fine or reject with our
# own one-line error, and the LiteRT delegate banner.
NOISE = re.compile(
    rb"^(libpng (warning|error):"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|\[ ?(WARN|INFO|DEBUG|ERROR):"  # OpenCV log lines
    rb"|\[[\w ,.-]+ @ (0x)?[0-9a-fA-F]+\]"  # ffmpeg: "[mov,mp4,m4a @ 0x55d0...] ..."
    rb"|Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters"
    rb"|Warning: unknown JFIF revision|Inconsistent progression sequence"
    rb"|imdecode_?\(|imread_?\("  # OpenCV's "imdecode_('...'): can't read header: ..."
    rb"|TIFF\w*: |\w+: Warning, )"
)


def filter_noise(captured: bytes) -> bytes:
    """The lines of `captured` that are not known native-library noise (a noise line's
    continuation lines, blank or starting with ">" as in OpenCV's messages, go too)."""
    keep, dropping = [], False
    for line in captured.splitlines(keepends=True):
        text = line.strip()
        if NOISE.match(text) or (dropping and (not text or text.startswith(b">"))):
            dropping = True
            continue
        dropping = False
        keep.append(line)
    return b"".join(keep)


def _set_cv_log_level(level: int | None) -> int | None:
    """Set OpenCV's log level if OpenCV is loaded; returns the previous level."""
    cv2 = sys.modules.get("cv2")
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None or level is None:
        return None
    previous = int(logging.getLogLevel())
    logging.setLogLevel(level)
    return previous


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


@contextmanager
def filtered_fd2(keep: Callable[[bytes], bytes]) -> Iterator[None]:
    """Point fd 2 at a temporary file while the block runs, then write back
    `keep(captured bytes)` to the real fd 2 (also when the block raises).

    Only in the main thread: fd 2 is process-wide, and two threads saving and restoring
    it out of order would leave it pointing at a deleted temporary file, losing every
    later error message. Elsewhere (or without an fd 2) the block runs as it is.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    capture = _open_capture()
    if capture is None:
        yield
        return
    tmp, saved = capture
    try:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:  # Python-level writes of the block belong to the capture
                sys.stderr.flush()
            except (AttributeError, OSError, ValueError):
                pass
            os.dup2(saved, 2)
            tmp.seek(0)
            _write_all(2, keep(tmp.read()))
    finally:
        os.close(saved)
        tmp.close()


def _open_capture() -> tuple[IO[bytes], int] | None:
    """(temporary file, duplicate of fd 2) for filtered_fd2, or None to leave fd 2 as
    it is: outside the main thread, without an fd 2 (a detached process), or when no
    temporary file can be made (full or unwritable TMPDIR: then the noise shows, but
    the work itself never fails over it)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        tmp = tempfile.TemporaryFile()
    except OSError:
        return None
    try:
        return tmp, os.dup(2)
    except OSError:
        tmp.close()
        return None


@contextmanager
def quiet_native() -> Iterator[None]:
    """Run the block with native noise on fd 2 (and OpenCV warnings) suppressed."""
    cv2 = sys.modules.get("cv2")
    # silent: every failure of ours becomes a one-line UserError of our own
    silent = getattr(getattr(getattr(cv2, "utils", None), "logging", None),
                     "LOG_LEVEL_SILENT", None)
    previous = _set_cv_log_level(silent)
    try:
        with filtered_fd2(filter_noise):
            yield
    finally:
        _set_cv_log_level(previous)
