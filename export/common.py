"""Shared pieces of the exporters: step logging, results, atomic writes, data folders.

Torch/TF-free, so the CLI can import it at start-up.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from rdsrn.runtimes.errors import UserError

REPO = Path(__file__).resolve().parents[1]

# Smallest LR side an artifact accepts. The convs would run on 1 px, but the CCA's
# mean/std over the image degenerate on tiny inputs; tilers must not go below this.
MIN_INPUT = 8

Log = Callable[[str], None]


class GateError(UserError):
    """An export failed its parity / accuracy gate; no artifact was written."""


def data_dir() -> Path:
    """The shared data folder: $RDSRN_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("RDSRN_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def human_size(n: int) -> str:
    """Bytes as a short human string (KiB / MiB)."""
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    return f"{n / 1024:.1f} KiB"


@dataclass
class ExportResult:
    """One written artifact."""

    path: Path
    format: str
    precision: str
    size_bytes: int
    seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)


class StepLog:
    """Prints each export step with its duration (and artifact size when known)."""

    def __init__(self, prefix: str, log: Log = print) -> None:
        self.prefix = prefix
        self.log = log
        self.t0 = time.perf_counter()

    @contextmanager
    def step(self, what: str) -> Iterator[dict[str, Any]]:
        """Context for one step; set info["size"] (bytes) / info["note"] inside it."""
        info: dict[str, Any] = {}
        t = time.perf_counter()
        yield info
        dt = time.perf_counter() - t
        extra = ""
        if "size" in info:
            extra += f", {human_size(int(info['size']))}"
        if info.get("note"):
            extra += f", {info['note']}"
        self.log(f"[{self.prefix}] {what}: {dt:.1f} s{extra}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file + rename), creating the folder; an
    OSError is a one-line UserError and leaves no partial file."""
    from rdsrn.data import write_bytes_atomic
    from rdsrn.outputs import write_error

    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
    except OSError as exc:  # disk full, folder removed or made read-only meanwhile
        raise write_error(path, exc) from None


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    """'dynamic' / None -> None; 'HxW' -> (H, W) with both >= MIN_INPUT."""
    if text is None or text.strip().lower() == "dynamic":
        return None
    parts = text.lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"--input-size {text!r}: expected HxW (e.g. 180x320) "
                        "or 'dynamic'") from None
    if min(h, w) < MIN_INPUT:
        raise UserError(f"--input-size {text}: below the model's minimum LR side {MIN_INPUT}")
    return h, w
