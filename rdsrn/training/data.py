"""In-RAM training data: HR images mod-cropped, LR made once with MATLAB bicubic (cached),
random aligned LR/HR patches with flips and 90-degree rotations.

Sampling runs in the training process from uint8 arrays: a batch of 16 patches costs
well under a millisecond, so two cores stay on the model.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from typing import Callable

import numpy as np
import torch

from rdsrn.runtimes.errors import UserError

from ..data import IMAGE_SUFFIXES, write_bytes_atomic
from ..evaluate import READ_ERRORS, read_error_reason


def find_images(folders: list[str]) -> list[Path]:
    """All images below `folders` (recursive, sorted); an error if a folder is missing or empty."""
    files: list[Path] = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise UserError(f"training data folder not found: {root}")
        found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UserError(f"no images (png/jpg/webp/bmp/tif) in training folder {root}")
        files += found
    return files


def read_training_image(path: Path, read_image: Callable[[Path], np.ndarray]) -> np.ndarray:
    """`read_image(path)`, with any decoder failure (OpenCV assertion on a huge or
    malformed header, an I/O error) turned into a one-line UserError naming the file:
    training does not silently drop part of its data set."""
    try:
        return read_image(path)
    except UserError as exc:
        raise UserError(f"training image {exc}") from None
    except READ_ERRORS as exc:
        raise UserError(f"training image {path}: not readable "
                        f"({read_error_reason(exc)})") from None


def _cached_lr(hr: np.ndarray, scale: int, path: Path, cache_dir: Path) -> np.ndarray:
    from ..data import make_lr

    key = hashlib.sha1(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}:{scale}"
                       .encode()).hexdigest()[:16]
    cache = cache_dir / f"{path.stem}_{key}_x{scale}.npy"
    if cache.is_file():
        try:
            lr = np.load(cache)
        except (OSError, ValueError):  # a damaged cache entry is rebuilt, not fatal
            lr = None
        if lr is not None and lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3) \
                and lr.dtype == np.uint8:
            return lr
    lr = make_lr(hr, scale)
    cache_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, lr)
    # a temp file of its own: DDP ranks fill the same cache at the same time
    write_bytes_atomic(cache, buf.getvalue())
    return lr


class PatchSampler:
    """Random aligned (LR, HR) patch batches from images held in RAM.

    Batches are float tensors in [0, 1], NCHW: LR (B, 3, p, p), HR (B, 3, p*s, p*s).
    The sampler draws from its own numpy Generator, whose state is checkpointed.
    """

    def __init__(self, folders: list[str], scale: int, patch: int, cache_dir: str,
                 seed: int = 0, augment: bool = True, progress: bool = True) -> None:
        from ..data import mod_crop, read_image

        self.scale, self.patch, self.augment = scale, patch, augment
        self.hr: list[np.ndarray] = []
        self.lr: list[np.ndarray] = []
        files = find_images(folders)
        iterator = files
        if progress:
            from tqdm import tqdm

            iterator = tqdm(files, desc=f"loading HR + LR x{scale}", unit="img")
        for path in iterator:
            img = read_training_image(path, read_image)
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            hr = mod_crop(img, scale)
            if min(hr.shape[:2]) < patch * scale:
                continue  # too small for one patch
            self.hr.append(np.ascontiguousarray(hr))
            self.lr.append(_cached_lr(hr, scale, path, Path(cache_dir)))
        if not self.hr:
            raise UserError(f"no training image is at least {patch * scale}px on each side")
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.hr)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Float batches in [0, 1]: LR (B, 3, p, p), HR (B, 3, p*s, p*s)."""
        lr, hr = self.sample_uint8(batch)
        return lr.float().div_(255.0), hr.float().div_(255.0)

    def sample_uint8(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The same batches as `sample`, as uint8 0..255 NCHW views (cheap to move to a GPU)."""
        p, s = self.patch, self.scale
        lrs = np.empty((batch, p, p, 3), np.uint8)
        hrs = np.empty((batch, p * s, p * s, 3), np.uint8)
        for i in range(batch):
            k = int(self.rng.integers(len(self.hr)))
            lr_img, hr_img = self.lr[k], self.hr[k]
            y = int(self.rng.integers(lr_img.shape[0] - p + 1))
            x = int(self.rng.integers(lr_img.shape[1] - p + 1))
            lr_patch = lr_img[y:y + p, x:x + p]
            hr_patch = hr_img[y * s:(y + p) * s, x * s:(x + p) * s]
            if self.augment:
                flip, rot = self.rng.integers(2), int(self.rng.integers(4))
                if flip:
                    lr_patch, hr_patch = lr_patch[:, ::-1], hr_patch[:, ::-1]
                lr_patch, hr_patch = np.rot90(lr_patch, rot), np.rot90(hr_patch, rot)
            lrs[i], hrs[i] = lr_patch, hr_patch
        return torch.from_numpy(lrs).permute(0, 3, 1, 2), torch.from_numpy(hrs).permute(0, 3, 1, 2)
