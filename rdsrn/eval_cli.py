"""`rdsrn eval`: PSNR / SSIM (Y channel) of a model on standard SR test sets.

--model accepts `bicubic` (the baseline), a registry name (its shipped weights, or
--weights FILE: ours, the user's or the network's official checkpoint), a network of
the user's own (`file.py:Class` with --scale and --weights), a .safetensors weights
file (architecture from its metadata), an exported .onnx / .tflite file or the name of
a bundled one (rdsrn_x4_int8; run by runtimes.Upscaler).
Heavy imports happen inside `run`. bicubic and artifacts need only numpy, OpenCV and
one runtime (no torch); registry names and .safetensors need torch (rdsrn[train]).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

from rdsrn.network_spec import add_network_arguments, is_user_spec, parse_model_args
from rdsrn.runtimes.errors import MissingExtraError, UserError
from rdsrn.runtimes.formats import FORMATS

REPO = Path(__file__).resolve().parents[1]
EXPORT_SUFFIXES = tuple(f.suffix for f in FORMATS.values())  # .onnx, .tflite, .xml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="NAME|FILE",
                        help="required: 'bicubic' (with --scale), a registry name (e.g. "
                             "rdsrn_x4: its shipped PyTorch weights, or --weights; needs "
                             "torch), a network of your own (FILE.py:Class), a .safetensors "
                             "weights file, an exported .onnx/.tflite/.xml file or a bundled "
                             "one by name (e.g. rdsrn_x4_int8; no torch needed)")
    parser.add_argument("--data", default="Set5", metavar="DIR[,DIR...]",
                        help="comma-separated folders of HR images, or names of test sets "
                             "(Set5, Set14, BSD68) looked up in $RDSRN_DATA/test, else in "
                             "../shared/data/test beside the source checkout; default: Set5")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4), default=None,
                        help="upscaling factor (default: the model's; required for bicubic "
                             "and for a network of your own, --model file.py:Class)")
    add_network_arguments(parser, scale=False)
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the results as a JSON list to FILE")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable / non-image files (listed) instead of failing")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for the model (default: the library's choice)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no per-image progress bar (it is shown on stderr only when "
                             "stderr is a terminal)")


def data_root() -> Path:
    """Where named test sets live: $RDSRN_DATA/test, else ../shared/data/test."""
    env = os.environ.get("RDSRN_DATA")
    return (Path(env) if env else REPO.parent / "shared" / "data") / "test"


def _not_found(item: str, root: Path) -> UserError:
    """The error for a --data item that is neither a folder nor a known test set: it
    lists every place looked in and how to point RDSRN_DATA at the data."""
    looked = [str(Path(item).expanduser().absolute())]
    if "/" not in item and os.sep not in item:
        looked.append(str(root / item))
    known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    hint = f"; known test sets: {', '.join(known)}" if known else ""
    env = os.environ.get("RDSRN_DATA")
    how = (f"RDSRN_DATA={env}" if env else
           "RDSRN_DATA is not set: set it to the folder that holds test/Set5, test/Set14, ...")
    return UserError(f"{item}: no such folder or test set (looked in: {', '.join(looked)}"
                     f"{hint}; {how})")


def resolve_datasets(spec: str) -> list[Path]:
    """Folders for a comma-separated list of folders and/or test-set names."""
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UserError("--data is empty")
    root = data_root()
    folders = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            folders.append(path)
            continue
        named = root / item
        if "/" not in item and os.sep not in item and named.is_dir():
            folders.append(named)
            continue
        raise _not_found(item, root)
    return folders


def _set_torch_threads(threads: int | None) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


def _torch_model_fn(model: Any, threads: int | None) -> tuple[Callable, int]:
    from .evaluate import torch_upscale_fn

    _set_torch_threads(threads)
    return torch_upscale_fn(model), int(model.scale)


def _bundled_artifact(name: str) -> Path | None:
    """The bundled model file (runtimes/models/) named exactly `name` (file name or
    stem, e.g. rdsrn_x4_int8.tflite / rdsrn_x4_int8), else None. Registry names such
    as rdsrn_x4 are not bundled names: they mean the PyTorch weights."""
    from rdsrn.runtimes.bundled import bundled_models, resolve_model

    if "/" in name or os.sep in name:
        return None
    if any(name in (p.name, p.stem) for p in bundled_models()):
        return resolve_model(name)
    return None


def _need_torch(model_spec: str, what: str) -> None:
    """MissingExtraError (one line, names the extra) when torch is not installed."""
    try:
        if importlib.util.find_spec("torch") is not None:
            return
    except (ImportError, ValueError):  # a broken or blocked torch counts as missing
        pass
    err = MissingExtraError("torch", "train")
    err.args = (f"--model {model_spec}: {what} runs in PyTorch, and torch is not installed: "
                "pip install 'rdsrn[train]' (exported models need no torch: --model "
                "FILE.onnx|FILE.tflite, or a bundled one such as rdsrn_x4_int8)",)
    raise err


def build_upscaler(model_spec: str, scale: int | None, threads: int | None = None,
                   weights: str | None = None,
                   model_args: dict[str, Any] | None = None) -> tuple[Callable, int]:
    """(upscale_fn, scale) for a --model value (and --weights / --model-args for a
    PyTorch network); UserError if --scale disagrees."""
    if model_spec == "bicubic":
        if scale is None:
            raise UserError("--scale is required with --model bicubic")
        if weights or model_args:
            raise UserError("--weights / --model-args do not apply to --model bicubic")
        from .evaluate import bicubic_upscale_fn
        return bicubic_upscale_fn(scale), scale

    lower = model_spec.lower()
    # A bundled model by name ("rdsrn_x4_int8", "rdsrn_x4_fp32.onnx") unless a file of
    # that name is here.
    bundled = None if lower.endswith(".safetensors") or Path(model_spec).exists() \
        or is_user_spec(model_spec) else _bundled_artifact(model_spec)
    if lower.endswith(EXPORT_SUFFIXES) or bundled is not None:
        if weights or model_args:
            raise UserError(f"--model {model_spec}: an exported file carries its weights; "
                            "drop --weights / --model-args")
        path = bundled or Path(model_spec)
        if not path.is_file():
            raise UserError(f"{model_spec}: model file not found")
        from rdsrn.runtimes import Upscaler

        # tile=0: whole-image passes like the torch path (fixed-size models still tile).
        upscaler = Upscaler(path, threads=threads, tile=0)
        fn, model_scale = upscaler.upscale, int(upscaler.scale)
    else:
        if Path(model_spec).exists() and not lower.endswith(".safetensors") \
                and not is_user_spec(model_spec):
            raise UserError(f"{model_spec}: unknown model file type (expected .safetensors, "
                            ".onnx, .tflite or FILE.py:Class)")
        _need_torch(model_spec, "a PyTorch network")
        from .models import load_network

        model = load_network(model_spec, weights=weights, scale=scale, model_args=model_args)
        fn, model_scale = _torch_model_fn(model, threads)

    if scale is not None and scale != model_scale:
        raise UserError(f"--scale {scale} disagrees with the model {model_spec} "
                        f"(x{model_scale})")
    return fn, model_scale


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write `obj` as JSON atomically; an OSError (disk full, ...) is a one-line UserError."""
    from .data import write_bytes_atomic
    from .outputs import write_error

    try:
        write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())
    except OSError as exc:
        raise write_error(path, exc) from None


def _check_json_target(path: str, model_spec: str, folders: list[Path]) -> None:
    """--json must be writable and must not be one of the inputs."""
    from .outputs import check_output_file

    target = check_output_file(path, "--json").resolve()
    images = {p.resolve() for f in folders for p in f.iterdir() if p.is_file()}
    if target == Path(model_spec).resolve() or target in images:
        raise UserError(f"--json {path}: would write over an input file")


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'dataset':<12} {'images':>6} {'PSNR':>8} {'SSIM':>7}"]
    for r in rows:
        lines.append(f"{r['dataset']:<12} {r['images']:>6} {r['psnr']:>8.2f} {r['ssim']:>7.4f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_dataset

    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be >= 1")
    if not args.model:
        raise UserError("--model is required: a registry name (rdsrn_x4, or rlfn_x4 --weights "
                        "FILE), an exported file (rdsrn_x4_int8.tflite, FILE.onnx, FILE.xml), "
                        "FILE.py:Class --scale N --weights FILE, or bicubic --scale N")
    folders = resolve_datasets(args.data)
    if args.json:
        _check_json_target(args.json, args.model, folders)
    fn, scale = build_upscaler(args.model, args.scale, args.threads,
                               getattr(args, "weights", None),
                               parse_model_args(getattr(args, "model_args", None)))

    progress = not getattr(args, "quiet", False) and sys.stderr.isatty()
    rows = []
    for folder in folders:
        result = evaluate_dataset(fn, folder, scale, skip_bad=args.skip_bad,
                                  progress=progress)
        for s in result["skipped"]:
            print(f"rdsrn eval: skipped {s['reason']}", file=sys.stderr)
        rows.append({"model": args.model, **({"weights": str(args.weights)}
                                             if getattr(args, "weights", None) else {}),
                     "dataset": result["dataset"], "scale": scale,
                     "images": result["images"], "psnr": round(result["psnr"], 4),
                     "ssim": round(result["ssim"], 6)})

    print(f"model {args.model}, x{scale}, PSNR/SSIM on Y, {scale}-pixel border cropped")
    print(format_table(rows))
    if args.json:
        write_json_atomic(args.json, rows)
    return 0
