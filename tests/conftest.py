"""Shared fixtures. Tests may read the read-only data in ../shared/data (RDSRN_DATA
overrides the location)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("RDSRN_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"shared data not found at {DATA} (set RDSRN_DATA)")
    return DATA


@pytest.fixture(scope="session")
def set5_dir(data_dir: Path) -> Path:
    return data_dir / "test" / "Set5"


@pytest.fixture(scope="session")
def make_tiny_images():
    """Factory `make(root, n) -> root`: n smooth synthetic 64x72 RGB PNGs (8x9 seeded noise
    enlarged by bicubic) written into `root`, for tiny training runs."""
    import cv2
    import numpy as np

    def make(root: Path, n: int) -> Path:
        rng = np.random.default_rng(0)
        for i in range(n):
            small = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
            img = cv2.resize(small, (72, 64), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / f"img{i}.png"), img)
        return root

    return make
