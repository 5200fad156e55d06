"""The docs site builds with --strict (broken links, missing pages, API references to
objects that do not exist fail), and the README stays a short front page."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the guides go in docs/"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs not installed (pip install 'rdsrn[docs]')")
def test_docs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                        "-f", str(REPO / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                       capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    results = (tmp_path / "site" / "results" / "index.html").read_text()
    # generated from the bundled files' metadata and the bench JSON records
    assert "rdsrn_x4_int8.onnx" in results and "runtimes_networks" in results
