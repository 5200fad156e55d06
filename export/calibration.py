"""INT8 calibration data: LR patches cut from real training photos (never test sets).

Each patch is the standard LR of a random HR crop (MATLAB bicubic downscale by the
model's scale, uint8), so calibration sees the inputs the model was trained and is
evaluated on. The set must reach both ends of [0, 1]: a calibrated input range that
tops out below 1 would clip every brighter pixel. Extra crops are drawn until a 0 and a
255 pixel appear; only if none does after that (a folder of low-contrast images) are one
black and one white pixel written into the first patch, and the info says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rdsrn.data import IMAGE_SUFFIXES
from rdsrn.runtimes.errors import UserError

DEFAULT_PATCHES = 100
DEFAULT_PATCH_LR = 64  # LR side of a calibration patch (dynamic-size exports)
_EXTRA_TRIES = 64  # extra crops drawn to reach 0 and 255


@dataclass
class CalibrationSet:
    """Patches as float32 NHWC [N, H, W, 3] RGB in [0, 1], plus how they were made."""

    patches: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def nchw(self) -> np.ndarray:
        return np.ascontiguousarray(self.patches.transpose(0, 3, 1, 2))


def find_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (recursive), sorted; UserError if none."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"--calib {folder}: no such folder")
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"--calib {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return files


def _lr_crop(path: Path, scale: int, size: tuple[int, int],
             rng: np.random.Generator) -> np.ndarray | None:
    """A random LR crop (uint8 HxWx3) of one image, None if the image is too small."""
    from rdsrn.data import make_lr
    from rdsrn.evaluate import read_hr

    img = read_hr(path)  # any decoder failure: a UserError naming the file
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    ph, pw = size[0] * scale, size[1] * scale
    h, w = img.shape[:2]
    if h < ph or w < pw:
        return None
    y = int(rng.integers(0, h - ph + 1))
    x = int(rng.integers(0, w - pw + 1))
    return make_lr(np.ascontiguousarray(img[y:y + ph, x:x + pw]), scale)


def make_calibration_set(folder: str | Path, scale: int, n: int = DEFAULT_PATCHES,
                         size: tuple[int, int] = (DEFAULT_PATCH_LR, DEFAULT_PATCH_LR),
                         seed: int = 0) -> CalibrationSet:
    """`n` LR patches of `size` (H, W) from the images under `folder`, one image after
    another in a seeded random order (cycling when n exceeds the image count)."""
    if n < 1:
        raise UserError(f"--calib-n {n}: need at least 1 calibration patch")
    files = find_images(folder)
    rng = np.random.default_rng(seed)
    order = [files[i] for i in rng.permutation(len(files))]
    patches: list[np.ndarray] = []
    used: set[Path] = set()
    too_small: set[Path] = set()
    i = 0
    while len(patches) < n and len(too_small) < len(order):
        path = order[i % len(order)]
        i += 1
        if path in too_small:
            continue
        crop = _lr_crop(path, scale, size, rng)
        if crop is None:
            too_small.add(path)
            continue
        patches.append(crop)
        used.add(path)
    if not patches:
        raise UserError(f"--calib {folder}: no image is large enough for a "
                        f"{size[0] * scale}x{size[1] * scale} crop")
    stack = np.stack(patches)
    extra = 0
    while (stack.min() > 0 or stack.max() < 255) and extra < _EXTRA_TRIES:
        path = order[(i + extra) % len(order)]
        extra += 1
        crop = None if path in too_small else _lr_crop(path, scale, size, rng)
        if crop is None:
            continue
        if (stack.min() > 0 and crop.min() == 0) or (stack.max() < 255 and crop.max() == 255):
            stack = np.concatenate([stack, crop[None]])
            used.add(path)
    forced = False
    if stack.min() > 0 or stack.max() < 255:
        stack[0, 0, 0] = 0
        stack[0, 0, 1] = 255
        forced = True
    info = {
        "source": str(Path(folder)),
        "images": len(used),
        "patches": int(stack.shape[0]),
        "patch_lr": [int(size[0]), int(size[1])],
        "seed": seed,
        "lr_from": f"bicubic x{scale} downscale of HR crops",
        "range_forced": forced,
    }
    return CalibrationSet(stack.astype(np.float32) / 255.0, info)
