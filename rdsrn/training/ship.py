"""Ship a trained run: evaluate its best weights (EMA or raw, whichever validated better)
on Set5/Set14/BSD68 at the model's scale and write them, with the results in their
metadata, to rdsrn/weights/<name>.safetensors.

    python -m rdsrn.training.ship --run runs/rdsrn_x4 --name rdsrn_x4 [--weights best]

Also writes benchmarks/results/weights/<name>.json (the figures in the README table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..evaluate import evaluate_dataset, torch_upscale_fn
from ..models import create_model
from ..weights import load_into, read_metadata, save_weights, weights_path

REPO = Path(__file__).resolve().parents[2]
TEST_SETS = ("Set5", "Set14", "BSD68")


def ship(run: Path, name: str, which: str, data: Path, command: str, trained_on: str = "") -> dict:
    src = run / f"{which}.safetensors"
    meta = read_metadata(src)
    model = create_model(meta["model"], **meta["config"])
    load_into(model, src)
    fn = torch_upscale_fn(model)
    results = {}
    for ds in TEST_SETS:
        r = evaluate_dataset(fn, data / "test" / ds, model.scale)
        results[ds] = {"images": r["images"], "psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4)}
        print(f"{name} {ds} x{model.scale}: PSNR {r['psnr']:.3f} dB  SSIM {r['ssim']:.4f}", flush=True)
    meta["eval"] = {"protocol": "Y channel BT.601, crop=scale, MATLAB bicubic LR", **results}
    meta["recipe"]["command"] = command
    if trained_on:  # the run's last session (e.g. a CPU re-validation) may not be where it trained
        meta["recipe"]["machine"] = {"trained_on": trained_on,
                                     "last_session": meta["recipe"].get("machine")}
    dst = weights_path(name)
    save_weights(dst, model, meta)
    out = REPO / "benchmarks" / "results" / "weights"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{name}.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, out / f"{name}.json")
    print(f"wrote {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="training output folder")
    p.add_argument("--name", required=True, help="registry name to ship as, e.g. rdsrn_x4")
    p.add_argument("--weights", default="best", choices=["best", "last"])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--command", default="", help="the training command, recorded in metadata")
    p.add_argument("--trained-on", default="",
                   help="where the training ran, when not the machine of the run's last session")
    args = p.parse_args(argv)
    ship(Path(args.run), args.name, args.weights, Path(args.data), args.command, args.trained_on)
    return 0


if __name__ == "__main__":
    sys.exit(main())
