"""PSNR / SSIM under the standard SR protocol (MATLAB / BasicSR conventions).

Images are on the 0..255 scale (uint8, or float holding 0..255 values), HxW or HxWxC,
RGB channel order. With `test_y_channel` colour images are compared on the BT.601 luma
Y as MATLAB's rgb2ycbcr computes it (16..235); gray images are compared as they are.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["rgb_to_y", "calc_psnr", "calc_ssim"]


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma Y of an RGB image, as float64 on the 16..235 scale.

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B on 0..255 (MATLAB's
    rgb2ycbcr formula for [0, 1] input, times 255). For uint8 input the result is rounded
    (half away from zero), because MATLAB's rgb2ycbcr returns uint8 for uint8 input.
    Float input (0..255 scale) is not rounded. A gray image (HxW or HxWx1) is returned
    as its single channel, as float64.
    """
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects HxW or HxWx3, got shape {img.shape}")
    x = img.astype(np.float64)
    y = 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0
    if img.dtype == np.uint8:
        y = np.floor(y + 0.5)
    return y


def _prepare(img1: np.ndarray, img2: np.ndarray, crop_border: int,
             test_y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    img1, img2 = np.asarray(img1), np.asarray(img2)
    if img1.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img1.shape} vs {img2.shape}")
    if test_y_channel:
        a, b = rgb_to_y(img1), rgb_to_y(img2)
    else:
        a, b = img1.astype(np.float64), img2.astype(np.float64)
    if crop_border > 0:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    if a.size == 0:
        raise ValueError(f"image {img1.shape} is empty after cropping {crop_border} border pixels")
    return a, b


def calc_psnr(img1: np.ndarray, img2: np.ndarray, crop_border: int,
              test_y_channel: bool = True) -> float:
    """PSNR in dB with peak 255, after cropping `crop_border` pixels on each side.

    Identical images give inf. With test_y_channel=False all channels are used.
    """
    a, b = _prepare(img1, img2, crop_border, test_y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(255.0 ** 2 / mse))


def _ssim_2d(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two single-channel 0..255 images: 11x11 Gaussian window (sigma 1.5),
    'valid' positions only (as MATLAB's filter2 'valid' in Wang et al.'s ssim_index)."""
    if min(a.shape) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels, got {a.shape}")
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(k, k)

    def filt(x: np.ndarray) -> np.ndarray:
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = filt(a * a) - mu1_sq
    sigma2_sq = filt(b * b) - mu2_sq
    sigma12 = filt(a * b) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / \
               ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def calc_ssim(img1: np.ndarray, img2: np.ndarray, crop_border: int,
              test_y_channel: bool = True) -> float:
    """SSIM (0..1) after cropping `crop_border` pixels on each side; for several
    channels (test_y_channel=False) the mean of the per-channel SSIMs."""
    a, b = _prepare(img1, img2, crop_border, test_y_channel)
    if a.ndim == 2:
        return _ssim_2d(a, b)
    return float(np.mean([_ssim_2d(a[..., c], b[..., c]) for c in range(a.shape[2])]))
