"""Read the metadata an exported .tflite carries, in pure Python (no TensorFlow, no
flatbuffers package): the JSON object stored under the named metadata buffer
`runtimes.formats.METADATA_KEY` ("rdsrn").

The TFLite file is a FlatBuffer (schema: tensorflow/lite/schema/schema.fbs). Only the
few tables on the path root Model -> metadata[] (Metadata: name, buffer index) ->
buffers[] (Buffer: data, offset, size) are walked; field ids follow the schema:
Model.buffers = 4, Model.metadata = 6; Metadata.name = 0, .buffer = 1;
Buffer.data = 0, .offset = 1, .size = 2 (offset/size: data stored after the FlatBuffer,
used by models over 2 GB).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from .formats import METADATA_KEY

_FILE_ID = b"TFL3"


class _Reader:
    """Minimal FlatBuffer table access over a bytes object (little-endian)."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def u16(self, pos: int) -> int:
        return struct.unpack_from("<H", self.buf, pos)[0]

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.buf, pos)[0]

    def i32(self, pos: int) -> int:
        return struct.unpack_from("<i", self.buf, pos)[0]

    def u64(self, pos: int) -> int:
        return struct.unpack_from("<Q", self.buf, pos)[0]

    def field(self, table: int, field_id: int) -> int | None:
        """Absolute position of a table field's value, or None when it is absent."""
        vtable = table - self.i32(table)
        vt_size = self.u16(vtable)
        entry = 4 + 2 * field_id
        if entry + 2 > vt_size:
            return None
        off = self.u16(vtable + entry)
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, field_id: int) -> tuple[int, int]:
        """(start of elements, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, field_id)
        if pos is None:
            return 0, 0
        vec = self.deref(pos)
        return vec + 4, self.u32(vec)

    def table_at(self, elem_pos: int) -> int:
        return self.deref(elem_pos)

    def string(self, table: int, field_id: int) -> str | None:
        pos = self.field(table, field_id)
        if pos is None:
            return None
        s = self.deref(pos)
        n = self.u32(s)
        return self.buf[s + 4:s + 4 + n].decode("utf-8")


def tflite_metadata_buffers(data: bytes) -> dict[str, bytes]:
    """All named metadata buffers of a TFLite model: name -> raw bytes."""
    if len(data) < 8 or data[4:8] != _FILE_ID:
        raise ValueError("not a TFLite model (missing the 'TFL3' identifier)")
    r = _Reader(data)
    try:
        model = r.deref(0)
        buf_start, n_buf = r.vector(model, 4)
        meta_start, n_meta = r.vector(model, 6)
        out: dict[str, bytes] = {}
        for i in range(n_meta):
            meta = r.table_at(meta_start + 4 * i)
            name = r.string(meta, 0)
            idx_pos = r.field(meta, 1)
            idx = r.u32(idx_pos) if idx_pos is not None else 0
            if name is None or idx >= n_buf:
                continue
            buffer = r.table_at(buf_start + 4 * idx)
            d_start, d_len = r.vector(buffer, 0)
            if d_len:
                out[name] = bytes(data[d_start:d_start + d_len])
                continue
            off_pos, size_pos = r.field(buffer, 1), r.field(buffer, 2)
            if off_pos is not None and size_pos is not None:
                off, size = r.u64(off_pos), r.u64(size_pos)
                out[name] = bytes(data[off:off + size])
            else:
                out[name] = b""
        return out
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt TFLite model ({exc})") from None


def read_tflite_metadata(path_or_bytes: str | Path | bytes | bytearray) -> dict[str, Any]:
    """The RDSRN metadata (a dict) of a .tflite file or its bytes; {} if it has none.

    Raises ValueError for data that is not a TFLite model or a malformed entry.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        data = Path(path_or_bytes).read_bytes()
    raw = tflite_metadata_buffers(data).get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"TFLite metadata {METADATA_KEY!r} is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"TFLite metadata {METADATA_KEY!r} is not a JSON object")
    return meta
