"""Parity gates: an exported artifact against the PyTorch model it came from.

The exported graphs clamp their output to [0, 1] (helps INT8: the output range is the
pixel range), the PyTorch model does not; every comparison here is against the
*clamped* PyTorch output, which is what any caller of the PyTorch model uses.

- FP32: max |artifact - torch| over real-image crops, in [0, 1] units (gate 1e-4).
- FP16: PSNR of the artifact output vs the torch output over those crops (gate 50 dB).
- INT8: Y-PSNR on Set5 at the model's scale (standard protocol, rdsrn.evaluate) of the
  artifact and of the FP32 PyTorch model; ΔPSNR = artifact - FP32, negative when the
  artifact is worse (gate: ΔPSNR >= -max_drop). Fixed-size artifacts are run tile by tile, and so is the torch model
  they are compared with, on the same tiles.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .calibration import find_images
from .common import GateError

FP32_MAX_ABS_DIFF = 1e-4
FP16_MIN_PSNR = 50.0
DEFAULT_MAX_DROP = 0.3

# float32 NHWC [1, H, W, 3] in [0, 1] -> float32 NHWC [1, sH, sW, 3] in [0, 1]
Runner = Callable[[np.ndarray], np.ndarray]


def torch_runner(model: Any) -> Runner:
    """The clamped PyTorch model as a Runner (float32, CPU)."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        with torch.inference_mode():
            y = model(t).clamp(0.0, 1.0)
        return y.numpy().transpose(0, 2, 3, 1)

    return run


def onnx_runner(model_bytes: bytes, threads: int | None = None) -> Runner:
    """An ONNX model (NCHW float I/O) run by onnxruntime on CPU, as a Runner."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        y = sess.run(None, {name: np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
        return y.transpose(0, 2, 3, 1)

    return run


def tflite_runner(model_bytes: bytes, threads: int | None = None) -> Runner:
    """A TFLite model (NHWC; float, uint8 or int8 I/O) run by ai-edge-litert, as a Runner.

    Quantized input: q = round(x / scale) + zero_point (for uint8 with scale 1/255 and
    zero point 0 that is the 8-bit pixel value itself); output dequantized to float.
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model_bytes, num_threads=threads)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    state: dict[str, Any] = {"shape": None}

    def run(x: np.ndarray) -> np.ndarray:
        if state["shape"] != x.shape:
            if tuple(x.shape) != tuple(interp.get_input_details()[0]["shape"]):
                # strict: only the dynamic (-1) dims may change; fixed-size files refuse
                interp.resize_tensor_input(inp["index"], list(x.shape), strict=True)
            interp.allocate_tensors()
            state["shape"] = x.shape
        dtype = inp["dtype"]
        if dtype == np.float32:
            xin = x.astype(np.float32)
        else:
            scale, zp = inp["quantization"]
            info = np.iinfo(dtype)
            xin = np.clip(np.round(x / scale) + zp, info.min, info.max).astype(dtype)
        interp.set_tensor(inp["index"], xin)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zp = out["quantization"]
            y = (y.astype(np.float32) - zp) * scale
        return y

    return run


def tiled(run: Runner, size: tuple[int, int]) -> Runner:
    """Run a fixed-input-size Runner over an image of any size: tiles of `size`, the
    last row/column of tiles shifted inward to fit, images smaller than a tile padded by
    edge replication (and the output cropped)."""

    def starts(n: int, t: int) -> list[int]:
        s = list(range(0, n - t + 1, t))
        if s[-1] + t < n:
            s.append(n - t)
        return s

    def run_tiled(x: np.ndarray) -> np.ndarray:
        _, h, w, _ = x.shape
        th, tw = size
        ph, pw = max(h, th), max(w, tw)
        xp = np.pad(x, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        out = None
        for y0 in starts(ph, th):
            for x0 in starts(pw, tw):
                y = run(np.ascontiguousarray(xp[:, y0:y0 + th, x0:x0 + tw]))
                s = y.shape[1] // th
                if out is None:
                    out = np.zeros((1, ph * s, pw * s, y.shape[3]), np.float32)
                out[:, y0 * s:(y0 + th) * s, x0 * s:(x0 + tw) * s] = y
        assert out is not None
        s = out.shape[1] // ph
        return out[:, :h * s, :w * s]

    return run_tiled


def parity_inputs(folder: str | Path, sizes: list[tuple[int, int]],
                  seed: int = 1) -> list[np.ndarray]:
    """Real-image LR crops, one per size: float32 NHWC [1, h, w, 3] in [0, 1]."""
    from rdsrn.evaluate import read_hr

    files = find_images(folder)
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w) in enumerate(sizes):
        for _ in range(len(files)):
            img = read_hr(files[int(rng.integers(len(files)))])
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            if img.shape[0] >= h and img.shape[1] >= w:
                break
        else:
            raise GateError(f"{folder}: no image is at least {h}x{w} for the parity check")
        y = int(rng.integers(0, img.shape[0] - h + 1))
        x = int(rng.integers(0, img.shape[1] - w + 1))
        out.append(img[None, y:y + h, x:x + w].astype(np.float32) / 255.0)
    return out


def psnr01(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two float arrays in [0, 1] over all values (inf if identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def compare(run: Runner, ref: Runner, inputs: list[np.ndarray]) -> dict[str, Any]:
    """max |diff| and PSNR of `run` vs `ref` over `inputs` (float [0, 1] units)."""
    max_diff = 0.0
    sq, count = 0.0, 0
    for x in inputs:
        a, b = run(x), ref(x)
        if a.shape != b.shape:
            raise RuntimeError(f"artifact output {a.shape} != torch output {b.shape}")
        d = a.astype(np.float64) - b.astype(np.float64)
        max_diff = max(max_diff, float(np.abs(d).max()))
        sq += float(np.sum(d * d))
        count += d.size
    mse = sq / max(count, 1)
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    return {"max_abs_diff": float(f"{max_diff:.3g}"),
            "psnr_vs_torch": None if math.isinf(psnr) else round(psnr, 2),
            "inputs": [list(x.shape[1:3]) for x in inputs]}


def gate_fp32(parity: dict[str, Any], what: str) -> None:
    if parity["max_abs_diff"] > FP32_MAX_ABS_DIFF:
        raise GateError(f"{what}: FP32 parity gate failed: max |diff| vs PyTorch "
                        f"{parity['max_abs_diff']:.3g} > {FP32_MAX_ABS_DIFF:g}; no file written")


def gate_fp16(parity: dict[str, Any], what: str) -> None:
    psnr = parity["psnr_vs_torch"]
    if psnr is not None and psnr < FP16_MIN_PSNR:
        raise GateError(f"{what}: FP16 parity gate failed: PSNR vs PyTorch {psnr:.2f} dB "
                        f"< {FP16_MIN_PSNR:g} dB; no file written")


def _upscale_fn(run: Runner) -> Callable[[np.ndarray], np.ndarray]:
    """Runner -> rdsrn.evaluate upscale_fn (LR uint8 HxWx3 -> SR uint8)."""

    def upscale(lr: np.ndarray) -> np.ndarray:
        y = run(lr[None].astype(np.float32) / 255.0)[0]
        return np.floor(np.clip(y, 0.0, 1.0).astype(np.float64) * 255.0 + 0.5).astype(np.uint8)

    return upscale


def delta_psnr(run: Runner, ref: Runner, eval_dir: str | Path, scale: int) -> dict[str, Any]:
    """Y-PSNR on `eval_dir` (standard protocol) of the artifact and the FP32 reference.

    Returns {"dataset", "images", "psnr_fp32", "psnr", "delta_psnr"} (dB, 4 decimals);
    delta_psnr = psnr - psnr_fp32: negative when the artifact is worse than FP32 (the
    sign used everywhere: exporter output, metadata, README and benchmark tables).
    """
    from rdsrn.evaluate import evaluate_dataset

    r_ref = evaluate_dataset(_upscale_fn(ref), eval_dir, scale)
    r_art = evaluate_dataset(_upscale_fn(run), eval_dir, scale)
    return {"dataset": r_ref["dataset"], "images": r_ref["images"],
            "psnr_fp32": round(r_ref["psnr"], 4), "psnr": round(r_art["psnr"], 4),
            "ssim_fp32": round(r_ref["ssim"], 5), "ssim": round(r_art["ssim"], 5),
            "delta_psnr": round(r_art["psnr"] - r_ref["psnr"], 4)}


def gate_int8(result: dict[str, Any], max_drop: float, what: str) -> None:
    """Fail when the artifact loses more than `max_drop` dB (delta_psnr < -max_drop)."""
    if -result["delta_psnr"] > max_drop:
        raise GateError(f"{what}: INT8 accuracy gate failed: {result['dataset']} Y-PSNR "
                        f"{result['psnr']:.2f} dB vs FP32 {result['psnr_fp32']:.2f} dB, "
                        f"Δ {result['delta_psnr']:+.3f} dB, a drop beyond --max-drop "
                        f"{max_drop:g}; no file written")


def measure_int8_drop(steps: Any, run: Runner, ref: Runner, eval_dir: str | Path | None,
                      input_size: tuple[int, int] | None, scale: int, max_drop: float,
                      what: str) -> dict[str, Any]:
    """The INT8 step of every exporter: ΔPSNR (Y, `eval_dir`) of `run` vs the FP32 `ref`,
    logged as one step and gated by `max_drop` dB. Fixed-size models run tiled."""
    if eval_dir is None:
        raise ValueError("int8 export needs an evaluation folder (Set5)")
    with steps.step(f"ΔPSNR on {Path(eval_dir).name} vs FP32") as s:
        r_run, r_ref = (run, ref) if input_size is None else \
            (tiled(run, input_size), tiled(ref, input_size))
        eval_info = delta_psnr(r_run, r_ref, eval_dir, scale)
        s["note"] = (f"{eval_info['psnr']:.3f} dB vs {eval_info['psnr_fp32']:.3f} dB, "
                     f"Δ {eval_info['delta_psnr']:+.3f} dB")
    gate_int8(eval_info, max_drop, what)
    return eval_info
