"""The standard SR evaluation protocol over a folder of HR images.

Per image: HR mod-cropped to the scale; LR = MATLAB bicubic downscale (uint8); SR =
upscale_fn(LR); PSNR and SSIM on the BT.601 Y channel with `scale` border pixels cropped.
A gray HR image is replicated to 3 channels (the models take RGB), so its Y is
computed like that of any RGB image (as BasicSR does when it reads it with OpenCV).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import numpy as np

from rdsrn.runtimes.errors import UserError

from .data import list_images, make_lr, mod_crop, read_image
from .imresize import imresize
from .metrics import calc_psnr, calc_ssim

# LR uint8 RGB HxWx3 -> SR uint8 RGB (scale*H)x(scale*W)x3
UpscaleFn = Callable[[np.ndarray], np.ndarray]


def bicubic_upscale_fn(scale: int) -> UpscaleFn:
    """The baseline: MATLAB bicubic upscale of the LR image by `scale` (uint8 out)."""
    def upscale(lr: np.ndarray) -> np.ndarray:
        return imresize(lr, scale)
    return upscale


def torch_upscale_fn(model: Any, device: str = "cpu") -> UpscaleFn:
    """Wrap a torch SR model (RGB float NCHW in [0, 1] -> unclamped output) as an
    upscale_fn: the output is clamped to [0, 1] and rounded to uint8."""
    import torch  # lazy: the evaluation core runs without torch

    model = model.to(device).eval()

    def upscale(lr: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).to(device)
        x = x.unsqueeze(0).float().div_(255.0)
        with torch.inference_mode():
            y = model(x).clamp_(0.0, 1.0)
        out = y[0].permute(1, 2, 0).cpu().double().numpy()
        return np.floor(out * 255.0 + 0.5).astype(np.uint8)

    return upscale


# What an image decoder can raise besides UserError: OpenCV assertions (a header claiming
# 10^10 pixels, a malformed file), I/O errors, an allocation that does not fit.
READ_ERRORS = (cv2.error, OSError, MemoryError)


def read_error_reason(exc: BaseException) -> str:
    """One short line for a decoder exception (OpenCV's 'file:line: error: (-215...)'
    prefix dropped)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, cv2.error) and "error: " in text:
        text = text.split("error: ", 1)[1]
    return text


def read_hr(path: Path) -> np.ndarray:
    """rdsrn.data.read_image, with every decoder failure a UserError naming the file
    (so --skip-bad can skip it)."""
    try:
        return read_image(path)
    except UserError:
        raise
    except READ_ERRORS as exc:
        raise UserError(f"{path}: not a readable image ({read_error_reason(exc)})") from None


def load_pair(path: Path, scale: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(HR, LR, gray) of one image by the protocol: HR read (a gray image replicated to
    3 channels), mod-cropped to `scale`; LR its MATLAB bicubic downscale (uint8).
    UserError for an unreadable image or one too small to score."""
    hr = read_hr(path)
    gray = hr.ndim == 2
    if gray:
        hr = np.repeat(hr[:, :, None], 3, axis=2)
    hr = mod_crop(hr, scale)
    min_side = 11 + 2 * scale  # SSIM window after the border crop
    if min(hr.shape[:2]) < min_side:
        raise UserError(f"{path}: image too small to evaluate at x{scale} "
                        f"(needs at least {min_side}x{min_side} pixels)")
    return hr, make_lr(hr, scale), gray


def score_pair(sr: np.ndarray, hr: np.ndarray, gray: bool, scale: int,
               ssim: bool = True) -> tuple[float, float | None]:
    """(Y-PSNR dB, SSIM or None) of SR uint8 against load_pair's HR, `scale` border cropped."""
    if gray:
        # Literature convention (the SR papers' MATLAB scripts): a gray image is scored on
        # its gray values, not on rgb2ycbcr's 16..235 Y of a 3-channel copy. The model sees
        # a 3-channel copy; its output is scored on the rounded mean of its channels.
        hr = hr[:, :, 0]
        sr = np.floor(sr.astype(np.float64).mean(axis=2) + 0.5).astype(np.uint8)
    return calc_psnr(sr, hr, scale), (calc_ssim(sr, hr, scale) if ssim else None)


def _evaluate_image(upscale_fn: UpscaleFn, path: Path, scale: int) -> tuple[float, float]:
    hr, lr, gray = load_pair(path, scale)
    sr = np.asarray(upscale_fn(lr))
    if sr.shape != hr.shape or sr.dtype != np.uint8:
        # ValueError, not UserError: a model fault is never skipped as a bad file.
        raise ValueError(f"{path}: the model returned {sr.dtype} {sr.shape}, expected "
                        f"uint8 {hr.shape} for LR {lr.shape[:2]} at x{scale}")
    psnr, ssim = score_pair(sr, hr, gray, scale)
    return psnr, float(ssim)


def evaluate_dataset(upscale_fn: UpscaleFn, folder: str | Path, scale: int, *,
                     skip_bad: bool = False, progress: bool = False) -> dict[str, Any]:
    """Evaluate `upscale_fn` on every image in `folder` at `scale`.

    Returns {"dataset": folder name, "folder", "scale", "images": number evaluated,
    "psnr": mean dB, "ssim": mean, "per_image": [{"name", "psnr", "ssim"}],
    "skipped": [{"file", "reason"}]}. An unreadable / non-image / too-small file raises
    UserError naming it, or with `skip_bad` is skipped and listed under "skipped".
    `progress` shows a per-image progress bar on stderr (tqdm).
    """
    folder = Path(folder)
    per_image: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    files: Iterable[Path] = list_images(folder)
    if progress:
        from tqdm import tqdm

        files = tqdm(files, desc=folder.name, unit="img", file=sys.stderr, leave=False)
    for path in files:
        try:
            psnr, ssim = _evaluate_image(upscale_fn, path, scale)
        except UserError as exc:
            if not skip_bad:
                raise
            skipped.append({"file": str(path), "reason": str(exc)})
            continue
        per_image.append({"name": path.name, "psnr": psnr, "ssim": ssim})
    if not per_image:
        raise UserError(f"{folder}: no readable images to evaluate "
                        f"({len(skipped)} skipped)")
    return {
        "dataset": folder.name,
        "folder": str(folder),
        "scale": scale,
        "images": len(per_image),
        "psnr": float(np.mean([r["psnr"] for r in per_image])),
        "ssim": float(np.mean([r["ssim"] for r in per_image])),
        "per_image": per_image,
        "skipped": skipped,
    }
