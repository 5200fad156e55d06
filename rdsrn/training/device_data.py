"""Device-resident training data: the whole uint8 training set on the training device
(a GPU), random aligned LR/HR crops, flips and 90-degree rotations drawn and cut there.

Per step the host only enqueues ~15 kernels: no numpy work, no host-to-device copy, no
host sync. All HR images live in one flat (pixels, 3) uint8 tensor, all LR images in
another; a batch is one gather from each with per-sample index grids. The set of
`../shared/data/train` is ~0.56 GB of HR plus 0.04-0.14 GB of LR per scale.

`prepare_lr_cache` makes the MATLAB-bicubic LR images of several scales once, in a
process pool, into the same cache files `PatchSampler` reads (rdsrn.training.data).
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .data import PatchSampler, _cached_lr, find_images


def _lr_job(args: tuple[str, tuple[int, ...], str]) -> int:
    from ..data import mod_crop, read_image

    path, scales, cache_dir = args
    img = read_image(path)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    for s in scales:
        _cached_lr(mod_crop(img, s), s, Path(path), Path(cache_dir))
    return len(scales)


def prepare_lr_cache(folders: list[str], scales: list[int], cache_dir: str,
                     workers: int = 0) -> int:
    """Write the LR cache (MATLAB bicubic, uint8 .npy) of every image of `folders` at
    every scale; files already cached are kept. Returns the number of images.

    workers: processes (0: one per CPU core).
    """
    files = [str(p) for p in find_images(folders)]
    jobs = [(f, tuple(scales), cache_dir) for f in files]
    n = workers or len(os.sched_getaffinity(0)) or 1
    if n <= 1:
        for job in jobs:
            _lr_job(job)
    else:
        with ProcessPoolExecutor(max_workers=n) as pool:
            list(pool.map(_lr_job, jobs, chunksize=1))
    return len(files)


def _flat(images: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pixels (N, 3) uint8, row offsets (K,), heights (K,), widths (K,)) on `device`."""
    sizes = [im.shape[0] * im.shape[1] for im in images]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    pixels = torch.empty((sum(sizes), 3), dtype=torch.uint8, device=device)
    for off, size, im in zip(offsets, sizes, images):  # one image at a time: no 2x host peak
        pixels[off:off + size].copy_(torch.from_numpy(np.ascontiguousarray(im).reshape(-1, 3)))
    hw = np.array([im.shape[:2] for im in images], np.int64)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    return pixels, as_t(offsets), as_t(hw[:, 0]), as_t(hw[:, 1])


class DeviceSampler:
    """Random aligned (LR, HR) patch batches cut on `device` from uint8 images held there.

    Same distribution as PatchSampler: an image uniformly at random, a uniform LR patch
    position, then one of the 8 flips/rotations (if augment). Batches are NCHW views in
    channels_last memory: uint8 0..255 from `sample_uint8`, float [0, 1] from `sample`.
    Randomness comes from a torch.Generator on `device` (its state is checkpointed).
    """

    def __init__(self, hr: list[np.ndarray], lr: list[np.ndarray], scale: int, patch: int,
                 device: torch.device | str, seed: int = 0, augment: bool = True) -> None:
        if not hr or len(hr) != len(lr):
            raise ValueError("DeviceSampler needs as many LR as HR images (at least one)")
        self.scale, self.patch, self.augment = scale, patch, augment
        self.device = torch.device(device)
        self.hr_pixels, self.hr_off, _, self.hr_w = _flat(hr, self.device)
        self.lr_pixels, self.lr_off, lr_h, self.lr_w = _flat(lr, self.device)
        self.y_max = lr_h - patch  # last valid LR patch row, per image
        self.x_max = self.lr_w - patch
        if int(self.y_max.min()) < 0 or int(self.x_max.min()) < 0:
            raise ValueError(f"an LR image is smaller than the patch ({patch}px)")
        self.count = len(hr)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    @classmethod
    def from_host(cls, host: PatchSampler, device: torch.device | str, seed: int = 0) -> "DeviceSampler":
        """The images of a loaded PatchSampler (mod-cropped HR, cached LR), moved to `device`."""
        return cls(host.hr, host.lr, host.scale, host.patch, device, seed, host.augment)

    def __len__(self) -> int:
        return self.count

    def nbytes(self) -> int:
        """Bytes of image data held on the device."""
        return self.hr_pixels.numel() + self.lr_pixels.numel()

    def get_rng_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_rng_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def draw(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Random parameters of a batch: image k, LR corner (y, x), transpose, row flip,
        column flip; int64 tensors of length `batch` on the device."""
        g, dev = self.generator, self.device
        k = torch.randint(0, self.count, (batch,), generator=g, device=dev)
        ry = torch.rand(batch, generator=g, device=dev, dtype=torch.float64)
        rx = torch.rand(batch, generator=g, device=dev, dtype=torch.float64)
        ym, xm = self.y_max[k], self.x_max[k]
        y = torch.minimum((ry * (ym + 1)).long(), ym)
        x = torch.minimum((rx * (xm + 1)).long(), xm)
        if self.augment:
            t = torch.randint(0, 8, (batch,), generator=g, device=dev)
        else:
            t = torch.zeros(batch, dtype=torch.long, device=dev)
        return k, y, x, t & 1, (t >> 1) & 1, (t >> 2) & 1

    @staticmethod
    def _cut(pixels: torch.Tensor, off: torch.Tensor, width: torch.Tensor, k: torch.Tensor,
             y: torch.Tensor, x: torch.Tensor, size: int, transpose: torch.Tensor,
             flip_r: torch.Tensor, flip_c: torch.Tensor) -> torch.Tensor:
        """Patches (B, size, size, 3): out[b, i, j] = image[y + u, x + v], where (u, v) is
        (i, j) transposed and/or mirrored per sample (the 8 symmetries of the square)."""
        ar = torch.arange(size, device=pixels.device)
        i, j = ar.view(1, size, 1), ar.view(1, 1, size)
        tr = transpose.view(-1, 1, 1).bool()
        a, b = torch.where(tr, j, i), torch.where(tr, i, j)
        u = torch.where(flip_r.view(-1, 1, 1).bool(), size - 1 - a, a)
        v = torch.where(flip_c.view(-1, 1, 1).bool(), size - 1 - b, b)
        w = width[k].view(-1, 1, 1)
        idx = off[k].view(-1, 1, 1) + (y.view(-1, 1, 1) + u) * w + x.view(-1, 1, 1) + v
        return pixels[idx]

    def sample_uint8(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batches: LR (B, 3, p, p), HR (B, 3, p*s, p*s), channels_last memory."""
        k, y, x, tr, fr, fc = self.draw(batch)
        p, s = self.patch, self.scale
        lr = self._cut(self.lr_pixels, self.lr_off, self.lr_w, k, y, x, p, tr, fr, fc)
        hr = self._cut(self.hr_pixels, self.hr_off, self.hr_w, k, y * s, x * s, p * s, tr, fr, fc)
        return lr.permute(0, 3, 1, 2), hr.permute(0, 3, 1, 2)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Float batches in [0, 1]: LR (B, 3, p, p), HR (B, 3, p*s, p*s)."""
        lr, hr = self.sample_uint8(batch)
        return lr.float().div_(255.0), hr.float().div_(255.0)
