"""Keep TensorFlow's and LiteRT's start-up and converter chatter off the export output.

TensorFlow 2.16+ logs through absl from C++ straight to file descriptor 2
("WARNING: All log messages before absl::InitializeLog() ...", "I0000 ... port.cc:153]
oneDNN custom operations are on ..."); TF_CPP_MIN_LOG_LEVEL no longer silences those.
The MLIR converter prints its settings ("fully_quantize: 0, inference_type: 6 ...") and
LiteRT its delegate banner the same way. `quiet_tf()` points fd 2 at a temporary file
while the export runs, then writes back every line that is not such known chatter, so an
unexpected message (a Python warning, a TF error) still appears, only later.
`rdsrn export --verbose` (or --debug) leaves everything as it is.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Iterator

from rdsrn.runtimes.native_noise import filtered_fd2

# absl/glog info and warning lines (E/F lines are kept), and the known banners.
TF_NOISE = re.compile(
    rb"^([IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IW] "  # older TF C++ log format
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|fully_quantize: \d"
    rb"|Estimated count of arithmetic ops"
    rb"|(WARNING|INFO):absl:"
    rb"|WARNING:tensorflow:"
    rb"|To enable the following instructions: |This TensorFlow binary is optimized"
    rb"|oneDNN custom operations are on)"
)


def filter_tf_noise(captured: bytes) -> bytes:
    """The lines of `captured` that are not known TensorFlow / LiteRT chatter."""
    return b"".join(line for line in captured.splitlines(keepends=True)
                    if not TF_NOISE.match(line.lstrip()))


@contextmanager
def quiet_tf(enabled: bool = True) -> Iterator[None]:
    """Run the block with TF/LiteRT chatter on fd 2 dropped (see the module docstring).

    Process-wide while it runs (fd 2 is shared), so it wraps only the export itself.
    """
    if not enabled:
        yield
        return
    key = "TF_CPP_MIN_LOG_LEVEL"  # what the variable still covers (read at TF import)
    before = os.environ.get(key)
    os.environ.setdefault(key, "2")
    try:
        with filtered_fd2(filter_tf_noise):
            yield
    finally:  # no process-wide setting outlives the export
        if before is None:
            os.environ.pop(key, None)
