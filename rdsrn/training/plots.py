"""Training curves (loss, lr, validation PSNR) from log.jsonl to a PNG; also a CSV."""

from __future__ import annotations

import json
import os
from pathlib import Path


def plot_curves(log_path: Path, png_path: Path) -> None:
    """Write `png_path` (and a CSV beside it) from the JSONL training log."""
    if not log_path.is_file():
        return
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    keys = ["iteration", "loss", "lr", "it_per_s", "elapsed_s", "val_psnr", "val_ssim", "val_psnr_raw"]
    csv_tmp = png_path.with_suffix(".csv.tmp")
    with open(csv_tmp, "w") as f:
        f.write(",".join(keys) + "\n")
        for r in rows:
            f.write(",".join("" if r.get(k) is None else str(r[k]) for k in keys) + "\n")
    os.replace(csv_tmp, png_path.with_suffix(".csv"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_psnr" in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if train:
        axes[0].plot([r["iteration"] for r in train], [r["loss"] for r in train])
        axes[1].plot([r["iteration"] for r in train], [r["lr"] for r in train])
    if val:
        axes[2].plot([r["iteration"] for r in val], [r["val_psnr"] for r in val], "o-", label="EMA")
        raw = [r for r in val if "val_psnr_raw" in r]
        if raw:
            axes[2].plot([r["iteration"] for r in raw], [r["val_psnr_raw"] for r in raw], "s--", label="raw")
        axes[2].legend()
    for ax, title in zip(axes, ["L1 loss", "learning rate", "validation Y-PSNR (dB)"]):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png_path)
