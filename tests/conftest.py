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
