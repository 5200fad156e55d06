"""Helpers for benchmarks/qemu_aarch64_wheel.sh: a deterministic LR test image and a
pixel-for-pixel comparison of two output images (e.g. x86 vs aarch64 `rdsrn upscale`).

Needs only numpy and OpenCV (the package's runtime dependencies); run as a script:

    python qemu_check.py make-input OUT.png WxH [--seed N]
    python qemu_check.py compare A.png B.png      # one JSON line on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def synthetic_lr(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic natural-ish LR test image, uint8 BGR (OpenCV order), HxWx3 in 0..255:
    smooth colour gradients, a few hard-edged shapes (what an SR net sharpens) and mild
    seeded noise, so every INT8 activation range is exercised, not just flat areas."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack([255.0 * x / max(width - 1, 1),
                    255.0 * y / max(height - 1, 1),
                    127.5 + 127.5 * np.sin(x / 5.0) * np.cos(y / 7.0)], axis=-1)
    for _ in range(6):  # rectangles and discs with random colours
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(2, max(3, min(width, height) // 3)))
        colour = rng.integers(0, 256, size=3).astype(np.float64)
        if rng.random() < 0.5:
            mask = (np.abs(x - cx) <= r) & (np.abs(y - cy) <= r // 2)
        else:
            mask = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
        img[mask] = colour
    img += rng.normal(0.0, 4.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def compare_images(a: Path, b: Path) -> dict[str, Any]:
    """Compare two image files pixel for pixel (decoded with OpenCV, unchanged depth and
    channels). Returns {"bit_exact", "max_abs_diff" (None if shapes differ), "diff_pixels"
    (values that differ, of "values"), "shape_a", "shape_b", "same_bytes" (files equal)}.

    Raises ValueError when a file cannot be decoded as an image."""
    import cv2

    arrays = []
    for path in (a, b):
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{path}: not a readable image")
        arrays.append(img)
    x, y = arrays
    same_shape = x.shape == y.shape and x.dtype == y.dtype
    diff = np.abs(x.astype(np.int64) - y.astype(np.int64)) if same_shape else None
    return {
        "bit_exact": bool(same_shape and not diff.any()),
        "max_abs_diff": int(diff.max()) if diff is not None else None,
        "diff_pixels": int(np.count_nonzero(diff)) if diff is not None else None,
        "values": int(x.size),
        "shape_a": list(x.shape), "shape_b": list(y.shape),
        "same_bytes": Path(a).read_bytes() == Path(b).read_bytes(),
    }


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height), both >= 1."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like 64x48, got {text!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"size must be positive, got {text!r}")
    return w, h


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="qemu_check.py", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-input", help="write the synthetic LR test image (PNG)")
    m.add_argument("out", type=Path)
    m.add_argument("size", help="WxH, e.g. 64x48")
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare", help="compare two images; one JSON line on stdout")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "make-input":
            import cv2

            w, h = parse_size(args.size)
            if args.out.exists():
                raise ValueError(f"{args.out}: exists, not overwritten")
            ok, png = cv2.imencode(".png", synthetic_lr(w, h, args.seed))
            if not ok:
                raise ValueError("PNG encoding failed")
            tmp = args.out.with_name(args.out.name + ".tmp")
            tmp.write_bytes(png.tobytes())
            os.replace(tmp, args.out)  # atomic: never a half-written input
        else:
            print(json.dumps(compare_images(args.a, args.b)))
    except ValueError as exc:
        print(f"qemu_check.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
