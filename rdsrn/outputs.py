"""Output locations checked before the expensive work, and OSErrors as one-line messages.

Torch-free and numpy-free: every command (train, eval, export, ship) calls these before
it loads data or models, so a folder that cannot be written fails in a second, not after
minutes of work. Nothing is created by the checks except a probe file that is removed.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from rdsrn.runtimes.errors import UserError


def os_error_text(exc: OSError) -> str:
    """The short reason of an OSError ("No space left on device"), without the path."""
    return exc.strerror or (errno.errorcode.get(exc.errno or 0) if exc.errno else "") or str(exc)


def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | Path, what: str) -> Path:
    """Check that folder `path` exists and is writable, or can be created (its nearest
    existing ancestor is a writable folder). `what` names the option in the message
    ("--out", "out_dir"). Returns the path; raises UserError with one line otherwise.

    Writability is probed by creating and removing a temporary file (os.access is
    meaningless for root and on read-only mounts).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path}: exists and is not a folder")
    base = _existing_ancestor(path.absolute())
    if not base.is_dir():
        raise UserError(f"{what} {path}: cannot create it, {base} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".rdsrn-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = "" if base == path.absolute() else f" ({base})"
        raise UserError(f"{what} {path}: folder not writable{where}: "
                        f"{os_error_text(exc)}") from None
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """Check that file `path` can be written: not a folder, its folder writable (see
    check_output_dir; the folder must already exist). Returns the path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"{what} {path}: is a folder, expected a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise UserError(f"{what} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is not a folder")
    check_output_dir(parent, what)
    return path


def write_error(path: str | Path, exc: OSError) -> UserError:
    """A UserError for a failed write of `path` (disk full, permissions, ...)."""
    return UserError(f"{path}: cannot write ({os_error_text(exc)})")
