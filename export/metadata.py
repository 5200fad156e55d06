"""Artifact metadata: one JSON object under runtimes.formats.METADATA_KEY, embedded in
the file (ONNX `metadata_props`; a named TFLite metadata buffer). Fields: see
runtimes/formats.py; additions here: `output_clamped`, `input_name`, `output_name`,
`eval` (Set5 figures behind `delta_psnr`)."""

from __future__ import annotations

import json
from typing import Any

from rdsrn.runtimes.formats import FORMATS, METADATA_KEY

from .common import MIN_INPUT
from .source import ModelSource


def build_metadata(src: ModelSource, *, fmt: str, precision: str, io_dtype: str,
                   input_size: tuple[int, int] | None, quantization: dict[str, Any],
                   parity: dict[str, Any], delta_psnr: float | None = None,
                   eval_info: dict[str, Any] | None = None,
                   input_name: str = "input", output_name: str = "output") -> dict[str, Any]:
    """The metadata dict of one artifact (JSON-serialisable)."""
    from rdsrn import __version__

    cfg = src.config
    meta: dict[str, Any] = {
        "format": fmt,
        "scale": int(cfg["scale"]),
        "layout": FORMATS[fmt].layout,
        "value_range": [0, 1],
        "color_order": "RGB",
        "precision": precision,
        "io_dtype": io_dtype,
        "quantization": quantization,
        "input_size": "dynamic" if input_size is None else [int(input_size[0]), int(input_size[1])],
        "min_input": max(MIN_INPUT, int(getattr(src.model, "min_size", 0))),
        # The graph clamps its output to [0, 1]; the PyTorch model does not.
        "output_clamped": True,
        "input_name": input_name,
        "output_name": output_name,
        "model": model_record(src),
        "rdsrn_version": __version__,
        "weights_sha256": src.weights_sha256,
        "parity": parity,
    }
    if delta_psnr is not None:
        meta["delta_psnr"] = round(float(delta_psnr), 4)
    if eval_info:
        meta["eval"] = eval_info
    return meta


def model_record(src: ModelSource) -> dict[str, Any]:
    """What the metadata says about the network: name, architecture (class), its
    constructor arguments, and RDSRN's recursions / csr where it has them."""
    cfg = src.config
    rec: dict[str, Any] = {"name": src.name, "arch": type(src.model).__name__, "config": cfg}
    if "recursions" in cfg:
        rec.update(recursions=int(cfg["recursions"]), csr=float(cfg["csr"]))
    return rec


def to_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True, separators=(",", ":"))


def embed_onnx(model_proto: Any, meta: dict[str, Any]) -> None:
    """Set (replace) the metadata entry of an onnx.ModelProto in place."""
    keep = [p for p in model_proto.metadata_props if p.key != METADATA_KEY]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    entry = model_proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = to_json(meta)


def _aligned_builder(size: int):
    """A FlatBuffers builder that 16-byte-aligns byte vectors (weight buffers), as the
    TFLite converter does; the stock builder would align them to 1 byte."""
    import flatbuffers

    class AlignedBuilder(flatbuffers.Builder):
        def CreateNumpyVector(self, x):  # noqa: N802 (flatbuffers' name)
            if x.dtype.itemsize == 1 and x.ndim == 1:
                self.StartVector(1, x.size, 16)
                payload = x.tobytes()
                self.head = self.head - len(payload)
                self.Bytes[self.head:self.head + len(payload)] = payload
                self.vectorNumElems = x.size
                return self.EndVector()
            return super().CreateNumpyVector(x)

    return AlignedBuilder(size)


def embed_tflite(model_bytes: bytes, meta: dict[str, Any]) -> bytes:
    """A copy of a TFLite model with `meta` as the named metadata buffer METADATA_KEY
    (an existing entry of that name is replaced)."""
    import numpy as np
    from tensorflow.lite.python import schema_py_generated as fb
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    data = np.frombuffer(to_json(meta).encode("utf-8"), dtype=np.uint8)
    def name_of(m: Any) -> str:
        return m.name.decode("utf-8") if isinstance(m.name, bytes) else str(m.name)

    model.metadata = [m for m in (model.metadata or []) if name_of(m) != METADATA_KEY]
    buf = fb.BufferT()
    buf.data = data
    model.buffers.append(buf)
    entry = fb.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = _aligned_builder(len(model_bytes) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
