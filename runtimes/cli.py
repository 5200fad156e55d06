"""`rdsrn upscale`: upscale image files, folders, globs or videos with an exported model.

With no --model the bundled default model is used (x4 unless --scale says otherwise).
Outputs are written atomically; inputs are never overwritten, existing outputs only with
--force. In a batch a bad file is reported and the rest goes on; the exit status is 1
if any file failed. Heavy imports (numpy, OpenCV, the runtime) happen inside run().
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
import warnings
from pathlib import Path

from .errors import UserError

_GLOB_CHARS = "*?["


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image or video files, folders, or glob patterns")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output folder (created if missing), or an output file path "
                             "when there is a single input file")
    parser.add_argument("--model", metavar="PATH|NAME",
                        help="model file (.onnx / .tflite) or bundled model name, e.g. "
                             "rdsrn_x4 or rdsrn_x4_int8.tflite (default: the bundled file "
                             "fastest and exact on this CPU; see `rdsrn bench --suite device`)")
    parser.add_argument("--scale", type=int, choices=(2, 3, 4),
                        help="upscaling factor: picks the bundled model; with --model it "
                             "must match the model")
    parser.add_argument("--tile", type=int, metavar="N",
                        help="LR tile side in pixels (default 192; 0 = whole image at once)")
    parser.add_argument("--overlap", type=int, metavar="N",
                        help="LR pixels shared by neighbouring tiles (default 16)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for the runtime (default: all cores)")
    parser.add_argument("--backend", choices=("auto", "onnxruntime", "litert"),
                        default="auto", help="inference runtime (default: by model file)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing output files (never an input)")
    parser.add_argument("--max-pixels", type=int, metavar="N",
                        help="refuse inputs (images, video frames) over N pixels, checked "
                             "from the file header before decoding (default: "
                             "$RDSRN_MAX_PIXELS or 67108864 = 8192x8192; 0 = no limit)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar or per-file lines; errors, notes about "
                             "lost audio and the summary only")


def expand_inputs(items: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files from file / folder / glob arguments (folders: images and videos directly
    inside, sorted). Returns (files, [(argument, problem)]) without duplicates."""
    from .io import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    known = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in known)
            if not found:
                problems.append((item, "folder holds no image or video files"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif any(c in item for c in _GLOB_CHARS):
            found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not found:
                problems.append((item, "no files match"))
            files.extend(found)
        else:
            problems.append((item, "no such file or folder"))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def plan_outputs(files: list[Path], output: Path, scale: int, force: bool,
                 single_file: bool) -> list[Path]:
    """Output path per input. Refuses (UserError) to overwrite an input, to write two
    inputs to one path, or to replace an existing output without `force`."""
    from .io import VIDEO_SUFFIXES, is_video, video_output_suffix

    if single_file:
        outs = [output]
    else:
        outs = []
        for f in files:
            suffix = video_output_suffix(f) if is_video(f) else f.suffix
            outs.append(output / f"{f.stem}_x{scale}{suffix}")
    inputs = {f.resolve() for f in files}
    seen: dict[Path, Path] = {}
    existing = []
    for f, out in zip(files, outs):
        key = out.resolve()
        if key in inputs:
            raise UserError(f"{out}: output would overwrite an input; choose another -o")
        if key in seen:
            raise UserError(f"{seen[key]} and {f} would both be written to {out}")
        seen[key] = f
        if out.exists() and not force:
            existing.append(out)
        if single_file and is_video(f) != (out.suffix.lower() in VIDEO_SUFFIXES):
            kind = "a video" if is_video(f) else "an image"
            raise UserError(f"{out}: {kind} input needs {kind} output file name")
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UserError(f"{existing[0]} exists{more}; use --force to overwrite")
    return outs


def run(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from .bundled import default_choice, resolve_model
    from .io import (IMAGE_SUFFIXES, VIDEO_SUFFIXES, copy_audio, cv_reason, is_video,
                     read_image, read_video, resolve_max_pixels, write_image, write_video)
    from .upscaler import InexactOnThisCPU, Upscaler

    max_pixels = resolve_max_pixels(getattr(args, "max_pixels", None))
    if args.model is None:
        model_path, kernel_path, why = default_choice(args.scale or 4)
        if kernel_path == "unknown":
            print(f"rdsrn upscale: note: {model_path.name}: {why}", file=sys.stderr)
    else:
        model_path = resolve_model(args.model, args.scale)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InexactOnThisCPU)
        upscaler = Upscaler(model_path, backend=args.backend, threads=args.threads,
                            tile=args.tile, overlap=args.overlap)
    for w in caught:  # one line each (warnings' default format takes two)
        print(f"rdsrn upscale: warning: {w.message}", file=sys.stderr)
    if args.scale is not None and args.scale != upscaler.scale:
        raise UserError(f"{model_path} is a x{upscaler.scale} model, not x{args.scale}")
    s = upscaler.scale

    files, problems = expand_inputs(args.inputs)
    for item, problem in problems:
        print(f"rdsrn upscale: {item}: {problem}", file=sys.stderr)
    if not files:
        raise UserError("no input files")
    output = Path(args.output).expanduser()
    single_file = (len(files) == 1 and len(args.inputs) == 1 and not output.is_dir()
                   and Path(args.inputs[0]).is_file()
                   and output.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if not single_file and output.exists() and not output.is_dir():
        raise UserError(f"{output} is a file; with several inputs -o must be a folder")
    outs = plan_outputs(files, output, s, args.force, single_file)
    (output.parent if single_file else output).mkdir(parents=True, exist_ok=True)

    quiet = args.quiet
    failed = len(problems)
    done = 0
    start = time.perf_counter()
    # disable=None: tqdm turns itself off when stderr is not a terminal.
    bar = tqdm(total=len(files), unit="file", disable=True if quiet or len(files) < 2 else None,
               file=sys.stderr, leave=False)
    for src, dst in zip(files, outs):
        try:
            if is_video(src):
                frames, fps, count = read_video(src, max_pixels=max_pixels)
                with tqdm(total=count or None, unit="frame", desc=src.name,
                          disable=True if quiet else None, file=sys.stderr,
                          leave=False) as fbar:
                    def step(frame, _bar=fbar):
                        out = upscaler.upscale_bgr(frame)
                        _bar.update(1)
                        return out
                    n = write_video(dst, frames, fps, step)
                note = copy_audio(src, dst)
                if note:  # shown even with -q: part of the input was not kept
                    bar.write(f"rdsrn upscale: {note}", file=sys.stderr)
                what = f"{n} frames"
            else:
                img = read_image(src, max_pixels=max_pixels)
                with tqdm(unit="tile", desc=src.name, disable=True if quiet else None,
                          file=sys.stderr, leave=False) as tbar:
                    def tile_done(done: int, total: int, _bar=tbar) -> None:
                        if _bar.total != total:  # known after the first tile
                            _bar.total = total
                            _bar.refresh()
                        _bar.update(done - _bar.n)
                    out = upscaler.upscale_bgr(img, progress=tile_done)
                write_image(dst, out)
                what = f"{img.shape[1]}x{img.shape[0]} -> {out.shape[1]}x{out.shape[0]}"
            done += 1
            if not quiet:
                bar.write(f"{src} -> {dst} ({what})", file=sys.stdout)
        except UserError as exc:
            failed += 1
            bar.write(f"rdsrn upscale: failed: {exc}", file=sys.stderr)
        except cv2.error as exc:
            failed += 1
            bar.write(f"rdsrn upscale: failed: {src}: OpenCV: {cv_reason(exc)}",
                      file=sys.stderr)
        except MemoryError:
            failed += 1
            bar.write(f"rdsrn upscale: failed: {src}: out of memory", file=sys.stderr)
        except (OSError, ValueError) as exc:
            failed += 1
            bar.write(f"rdsrn upscale: failed: {src}: {exc}", file=sys.stderr)
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    tail = f", {failed} failed" if failed else ""
    print(f"upscaled {done} of {done + failed} files x{s} with {model_path.name} "
          f"({upscaler.backend}) in {elapsed:.1f} s{tail}")
    return 1 if failed else 0
