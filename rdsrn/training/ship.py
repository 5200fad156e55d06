"""Ship a trained run: evaluate its best weights (EMA or raw, whichever validated better)
on Set5/Set14/BSD68 at the model's scale and write them, with the results in their
metadata, to rdsrn/weights/<name>.safetensors.

    python -m rdsrn.training.ship --run runs/rdsrn_x4 --name rdsrn_x4 [--weights best]

Also writes benchmarks/results/weights/<name>.json (the figures in the README table).

QAT weights (their metadata holds the learned "qat" ranges) ship as <model>_qat, e.g.
`--run runs/rdsrn_x4_qat --name rdsrn_x4_qat`, never over the FP32 weights; their
figures are those of the fake-quant model (what the INT8 files compute), with the plain
FP32 forward pass of the same weights beside them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rdsrn.runtimes.errors import MissingExtraError, UserError

REPO = Path(__file__).resolve().parents[2]
TEST_SETS = ("Set5", "Set14", "BSD68")


def ship(run: Path, name: str, which: str, data: Path, command: str, trained_on: str = "") -> dict:
    from ..evaluate import evaluate_dataset, torch_upscale_fn
    from ..models import create_model
    from ..data import write_bytes_atomic
    from ..outputs import check_output_dir, write_error
    from ..weights import WEIGHTS_DIR, load_into, read_metadata, save_weights, weights_path

    src = run / f"{which}.safetensors"
    if not src.is_file():
        raise UserError(f"--run {run}: no {src.name} (is it a training output folder?)")
    for ds in TEST_SETS:
        if not (data / "test" / ds).is_dir():
            raise UserError(f"--data {data}: no test/{ds} folder")
    out = REPO / "benchmarks" / "results" / "weights"
    # Both destinations are checked before the minutes of evaluation.
    check_output_dir(WEIGHTS_DIR, "weights folder")
    check_output_dir(out, "results folder")
    try:
        meta = read_metadata(src)
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise UserError(f"{src}: not a readable safetensors weights file ({exc})") from None
    if "model" not in meta or "config" not in meta:
        raise UserError(f"{src}: weights metadata lacks 'model'/'config'")
    is_qat = "qat" in meta
    if is_qat != (name == f"{meta['model']}_qat"):
        raise UserError(f"--name {name}: " + (f"QAT weights ship as {meta['model']}_qat"
                                               if is_qat else "these are FP32 weights "
                                               f"(no QAT ranges); ship them as {meta['model']}"))
    model = create_model(meta["model"], **meta["config"])
    load_into(model, src)
    runs = [("", model)]
    if is_qat:
        from ..quant.qat import qat_from_metadata

        runs = [("", qat_from_metadata(model, meta, str(src))), ("fp32_forward", model)]
    results: dict = {}
    for key, m in runs:
        fn = torch_upscale_fn(m)
        part = results.setdefault(key, {}) if key else results
        for ds in TEST_SETS:
            r = evaluate_dataset(fn, data / "test" / ds, model.scale)
            part[ds] = {"images": r["images"], "psnr": round(r["psnr"], 3),
                        "ssim": round(r["ssim"], 4)}
            print(f"{name}{' ' + key if key else ''} {ds} x{model.scale}: PSNR {r['psnr']:.3f} dB"
                  f"  SSIM {r['ssim']:.4f}", flush=True)
    meta["eval"] = {"protocol": "Y channel BT.601, crop=scale, MATLAB bicubic LR", **results}
    if is_qat:
        meta["eval"]["model"] = ("fake-quant INT8 simulation (rdsrn.quant.qat); fp32_forward: "
                                 "the same weights in float")
    meta["recipe"]["command"] = command
    if trained_on:  # the run's last session (e.g. a CPU re-validation) may not be where it trained
        meta["recipe"]["machine"] = {"trained_on": trained_on,
                                     "last_session": meta["recipe"].get("machine")}
    dst = weights_path(name)
    save_weights(dst, model, meta)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out / f"{name}.json",  # no temp file left on failure
                           json.dumps(meta, indent=2, sort_keys=True).encode())
    except OSError as exc:
        raise write_error(out / f"{name}.json", exc) from None
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
    try:
        try:
            import safetensors  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError(exc.name or "torch", "train") from None
        ship(Path(args.run), args.name, args.weights, Path(args.data), args.command,
             args.trained_on)
    except UserError as exc:
        print(f"rdsrn.training.ship: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
