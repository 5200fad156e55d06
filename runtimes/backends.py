"""Inference backends: onnxruntime for `.onnx`, LiteRT for `.tflite`, OpenVINO for `.xml`
(OpenVINO IR, with its `.bin` beside it).

A backend wraps one model file and runs one batch-1 tensor:

    run(x) -> y    x: float32 (1, h, w, 3) NHWC, RGB, value range [0, 1]
                   y: float32 (1, h*scale, w*scale, 3) NHWC, nominally [0, 1], unclamped

It converts to and from the file's own tensor layout, value range and I/O dtype; for
quantized I/O it uses the scale and zero point the interpreter reports for the tensor
(`quantization_parameters`), quantizing with round-to-nearest and clamping.

The file's embedded metadata (runtimes.formats, key "rdsrn") is the only source of
configuration; it is cross-checked against the tensors the runtime reports. Runtimes are
imported when a backend is created, never at module import.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MissingExtraError, UserError
from .formats import FORMATS, METADATA_KEY
from .native_noise import quiet_native

BACKENDS = ("auto", "onnxruntime", "litert", "openvino")
# the runtime of each format (formats.FORMATS)
RUNTIME_OF = {"onnx": "onnxruntime", "tflite": "litert", "openvino": "openvino"}

_TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8


def detect_format(path: str | Path) -> str:
    """"onnx", "tflite" or "openvino", from the file's content (TFLite flatbuffers carry
    "TFL3"; OpenVINO IR is XML with a <net> root)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except FileNotFoundError:
        raise UserError(f"{path}: no such model file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read model ({exc.strerror or exc})") from None
    if len(head) < 8:
        raise UserError(f"{path}: not a model file (too short)")
    if head[4:8] == _TFLITE_IDENTIFIER:
        return "tflite"
    if head.lstrip().startswith(b"<?xml") or head.lstrip().startswith(b"<net"):
        return "openvino"
    return "onnx"


def _threads(threads: int | None) -> int:
    if threads is None:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    return int(threads)


def parse_metadata(raw: Any, path: Path, fmt: str) -> dict[str, Any]:
    """Validate the embedded metadata JSON (a str/bytes or an already-parsed dict)."""
    if raw is None:
        raise UserError(f"{path}: no '{METADATA_KEY}' metadata in the file; "
                        "export it with `rdsrn export`")
    try:
        meta = json.loads(raw) if isinstance(raw, (str, bytes, bytearray)) else dict(raw)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{path}: unreadable '{METADATA_KEY}' metadata ({exc})") from None
    missing = [k for k in ("scale", "layout", "precision") if k not in meta]
    if missing:
        raise UserError(f"{path}: metadata lacks {', '.join(missing)}")
    if meta.get("format", fmt) != fmt:
        raise UserError(f"{path}: metadata says format {meta['format']!r} but the file "
                        f"is {fmt}")
    if meta["layout"] not in ("NCHW", "NHWC"):
        raise UserError(f"{path}: unknown layout {meta['layout']!r} in metadata")
    if int(meta["scale"]) < 1:
        raise UserError(f"{path}: bad scale {meta['scale']!r} in metadata")
    meta.setdefault("value_range", [0, 1])
    meta.setdefault("color_order", "RGB")
    meta.setdefault("io_dtype", "float32")
    meta.setdefault("input_size", "dynamic")
    meta.setdefault("min_input", 1)
    return meta


class Backend:
    """Common part: metadata, layout and value-range conversion."""

    name = "base"

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.metadata = meta
        self.scale = int(meta["scale"])
        self.layout = str(meta["layout"])
        lo, hi = (float(v) for v in meta["value_range"])
        self._lo, self._span = lo, hi - lo
        self._bgr = str(meta["color_order"]).upper() == "BGR"
        self.input_size: tuple[int, int] | None = None  # fixed (h, w), set by subclass

    def _check_shape(self, shape: list[int] | tuple[int, ...], what: str) -> None:
        """The tensor's channel axis must match the metadata layout (3 channels)."""
        if len(shape) != 4:
            raise UserError(f"{self.path}: {what} tensor has rank {len(shape)}, expected 4")
        c = shape[1] if self.layout == "NCHW" else shape[3]
        if c != 3:  # every RDSRN artifact has a concrete 3-channel axis
            raise UserError(f"{self.path}: {what} tensor shape {list(shape)} does not "
                            f"match layout {self.layout} with 3 channels")

    def _fixed_size(self, shape: list[Any]) -> tuple[int, int] | None:
        hw = shape[2:4] if self.layout == "NCHW" else shape[1:3]
        if all(isinstance(v, (int, np.integer)) and v > 0 for v in hw):
            return int(hw[0]), int(hw[1])
        return None

    def _reconcile_size(self, tensor_size: tuple[int, int] | None) -> None:
        declared = self.metadata["input_size"]
        if declared == "dynamic" or declared is None:
            if tensor_size is not None:
                raise UserError(f"{self.path}: metadata says dynamic input size but the "
                                f"model input is fixed at {tensor_size}")
            self.input_size = None
        else:
            size = (int(declared[0]), int(declared[1]))
            if tensor_size is not None and tensor_size != size:
                raise UserError(f"{self.path}: metadata input_size {list(size)} differs "
                                f"from the model input {list(tensor_size)}")
            self.input_size = size

    def _to_model(self, x: np.ndarray) -> np.ndarray:
        if self._bgr:
            x = x[..., ::-1]
        if self._lo != 0.0 or self._span != 1.0:
            x = x * np.float32(self._span) + np.float32(self._lo)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _from_model(self, y: np.ndarray) -> np.ndarray:
        if self.layout == "NCHW":
            y = y.transpose(0, 2, 3, 1)
        if self._lo != 0.0 or self._span != 1.0:
            y = (y - np.float32(self._lo)) / np.float32(self._span)
        if self._bgr:
            y = y[..., ::-1]
        return y

    def _check_output(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The model's real output must be the metadata's scale times its input (NHWC,
        3 channels); a file whose metadata lies is named here, not in a numpy error."""
        n, h, w, _ = x.shape
        want = (n, h * self.scale, w * self.scale, 3)
        if tuple(y.shape) != want:
            name = self.metadata.get("model", "?")
            raise UserError(
                f"{self.path}: model {name} returned {list(y.shape)} for input "
                f"{list(x.shape)} (NHWC), but its metadata says x{self.scale}, i.e. "
                f"{list(want)}; the file's metadata does not match its graph")
        return y

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """A runtime's exception as one short line (they can be pages long)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Real values -> integer tensor: round to nearest, then clamp to the dtype range."""
    info = np.iinfo(dtype)
    q = np.rint(x / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class OnnxBackend(Backend):
    """onnxruntime, CPU execution provider; FP32 and INT8 (QDQ) models with float I/O."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            ort = importlib.import_module("onnxruntime")
        except ImportError:
            raise MissingExtraError("onnxruntime", FORMATS["onnx"].runtime_extra) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = _threads(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            # On a failed load onnxruntime print()s an "EP Error ... Falling back to
            # CPUExecutionProvider" banner to stdout and retries the same CPU provider;
            # the error itself is reported below in one line.
            with redirect_stdout(StringIO()):
                self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
                raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"{path}: onnxruntime cannot load it ({_first_line(exc)})") from None
        super().__init__(path, parse_metadata(raw, path, "onnx"))
        self.threads = opts.intra_op_num_threads
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{path}: expected one input and one output tensor")
        self._in, self._out = inputs[0].name, outputs[0].name
        if inputs[0].type != "tensor(float)":
            raise UserError(f"{path}: input type {inputs[0].type} not supported "
                            "(ONNX artifacts use float I/O)")
        self._check_shape(inputs[0].shape, "input")
        self._check_shape(outputs[0].shape, "output")
        self._reconcile_size(self._fixed_size(list(inputs[0].shape)))

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            y = self.session.run([self._out], {self._in: self._to_model(x)})[0]
        except Exception as exc:  # onnxruntime's own exception types (a corrupt graph)
            raise UserError(f"{self.path}: onnxruntime cannot run it "
                            f"({_first_line(exc)})") from None
        return self._check_output(x, self._from_model(y))


def _import_litert() -> tuple[type, str]:
    """The LiteRT Interpreter class: ai_edge_litert, then tflite_runtime, then (last
    resort, heavy) tensorflow.lite."""
    for module, label in (("ai_edge_litert.interpreter", "ai_edge_litert"),
                          ("tflite_runtime.interpreter", "tflite_runtime")):
        try:
            return importlib.import_module(module).Interpreter, label
        except ImportError:
            continue
    if importlib.util.find_spec("tensorflow") is not None:
        try:
            return importlib.import_module("tensorflow").lite.Interpreter, "tensorflow.lite"
        except (ImportError, AttributeError):
            pass
    raise MissingExtraError("ai_edge_litert", FORMATS["tflite"].runtime_extra)


def _read_tflite_meta(path: Path) -> Any:
    from .tflite_meta import read_tflite_metadata  # pure Python flatbuffer reader

    try:
        found = read_tflite_metadata(str(path))
    except Exception as exc:  # a corrupt file: report it in one line
        raise UserError(f"{path}: cannot read TFLite metadata ({exc})") from None
    # Accept either the rdsrn dict itself or a {name: payload} map of metadata buffers.
    if isinstance(found, dict) and METADATA_KEY in found and "scale" not in found:
        return found[METADATA_KEY]
    return found or None


class LiteRTBackend(Backend):
    """LiteRT (TFLite) Interpreter; FP32, FP16 and INT8 models, float or integer I/O."""

    name = "litert"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        interpreter_cls, self.runtime = _import_litert()
        super().__init__(path, parse_metadata(_read_tflite_meta(path), path, "tflite"))
        self.threads = _threads(threads)
        try:
            with quiet_native():  # LiteRT prints banners to fd 2 from C++
                self.interpreter = interpreter_cls(model_path=str(path),
                                                   num_threads=self.threads)
        except (ValueError, RuntimeError) as exc:
            raise UserError(f"{path}: LiteRT cannot load it ({exc})") from None
        ins = self.interpreter.get_input_details()
        outs = self.interpreter.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise UserError(f"{path}: expected one input and one output tensor")
        self._in_index, self._out_index = ins[0]["index"], outs[0]["index"]
        signature = [int(v) for v in ins[0].get("shape_signature", ins[0]["shape"])]
        self._check_shape(signature, "input")
        self._check_shape(list(outs[0]["shape"]), "output")
        self._reconcile_size(self._fixed_size(signature))
        self._in_dtype = np.dtype(ins[0]["dtype"])
        self._out_dtype = np.dtype(outs[0]["dtype"])
        self._in_q = self._quant(ins[0], "input")
        self._out_q = self._quant(outs[0], "output")
        self._shape: tuple[int, ...] | None = tuple(int(v) for v in ins[0]["shape"])
        self._allocated = False

    def _quant(self, detail: dict[str, Any], what: str) -> tuple[float, int] | None:
        """(scale, zero_point) for integer I/O, from the tensor itself."""
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            return None
        params = detail.get("quantization_parameters", {})
        scales, zps = params.get("scales", []), params.get("zero_points", [])
        if len(scales) != 1 or len(zps) != 1:
            raise UserError(f"{self.path}: {what} tensor is {dtype} without one per-tensor "
                            "scale/zero point")
        return float(scales[0]), int(zps[0])

    def run(self, x: np.ndarray) -> np.ndarray:
        t = self._to_model(x)
        if self._in_q is not None:
            t = quantize(t, *self._in_q, self._in_dtype)
        elif t.dtype != self._in_dtype:
            t = t.astype(self._in_dtype)
        try:
            if t.shape != self._shape or not self._allocated:
                self._allocated = False
                if t.shape != self._shape:
                    self.interpreter.resize_tensor_input(self._in_index, list(t.shape),
                                                         strict=False)
                    self._shape = t.shape
                with quiet_native():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
                    self.interpreter.allocate_tensors()
                self._allocated = True
            self.interpreter.set_tensor(self._in_index, t)
            self.interpreter.invoke()
        except (RuntimeError, ValueError) as exc:  # e.g. a corrupt tensor in the file
            raise UserError(f"{self.path}: LiteRT cannot run it ({_first_line(exc)})") from None
        y = self.interpreter.get_tensor(self._out_index)
        y = dequantize(y, *self._out_q) if self._out_q is not None else y.astype(np.float32)
        return self._check_output(x, self._from_model(y))


def openvino_metadata(model: Any) -> str | None:
    """The metadata JSON an OpenVINO model (ov.Model) carries in its rt_info, or None."""
    return model.get_rt_info([METADATA_KEY]).astype(str) \
        if model.has_rt_info([METADATA_KEY]) else None


class OpenVINOBackend(Backend):
    """OpenVINO Runtime on the CPU device: an IR model (.xml + .bin), FP32 or INT8
    (the QDQ graph of the INT8 ONNX file, run with OpenVINO's int8 kernels), float I/O.
    FP32 models run in f32 (OpenVINO would otherwise pick bf16 on CPUs that have it)."""

    name = "openvino"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            ov = importlib.import_module("openvino")
        except ImportError:
            raise MissingExtraError("openvino", FORMATS["openvino"].runtime_extra) from None
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise UserError(f"{path}: its weights file {weights.name} is missing (an "
                            "OpenVINO model is the .xml and the .bin beside it)")
        self.threads = _threads(threads)
        try:
            core = ov.Core()
            model = core.read_model(str(path), str(weights))
            raw = openvino_metadata(model)
            config = {"INFERENCE_NUM_THREADS": self.threads,
                      "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError for most load failures
            raise UserError(f"{path}: OpenVINO cannot load it ({_first_line(exc)})") from None
        super().__init__(path, parse_metadata(raw, path, "openvino"))
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise UserError(f"{path}: expected one input and one output tensor")
        shape = [d.get_length() if d.is_static else -1 for d in model.input(0).get_partial_shape()]
        out_shape = [d.get_length() if d.is_static else -1
                     for d in model.output(0).get_partial_shape()]
        self._check_shape(shape, "input")
        self._check_shape(out_shape, "output")
        self._reconcile_size(self._fixed_size(shape))
        self.request = self.compiled.create_infer_request()

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            y = self.request.infer({0: self._to_model(x)})[self.compiled.output(0)]
        except Exception as exc:
            raise UserError(f"{self.path}: OpenVINO cannot run it ({_first_line(exc)})") \
                from None
        return self._check_output(x, self._from_model(np.asarray(y, dtype=np.float32)))


def load_backend(path: str | Path, backend: str = "auto",
                 threads: int | None = None) -> Backend:
    """Open `path` with the runtime for its format ("auto") or the one named."""
    path = Path(path)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choices: {', '.join(BACKENDS)}")
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    fmt = detect_format(path)
    wanted = RUNTIME_OF[fmt]
    if backend not in ("auto", wanted):
        raise UserError(f"{path}: a {fmt} model cannot run on backend {backend!r}; it runs "
                        f"on {wanted}")
    cls = {"onnx": OnnxBackend, "tflite": LiteRTBackend, "openvino": OpenVINOBackend}[fmt]
    return cls(path, threads)
