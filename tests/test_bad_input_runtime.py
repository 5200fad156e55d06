"""Issue 14, runtime layer and `rdsrn upscale`: bad input gets one clear line, never a
traceback, a hang, a lost file or native-library noise on stderr.

The models here are tiny ONNX graphs made with onnx.helper (nearest-neighbour Resize),
so these tests need neither torch nor the bundled artifacts (the LiteRT banner test
uses a bundled .tflite when one is present).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from rdsrn.runtimes import cli
from rdsrn.runtimes.errors import UserError
from rdsrn.runtimes.io import (DEFAULT_MAX_PIXELS, copy_audio, count_audio_streams,
                               image_size, read_image, read_video, resolve_max_pixels)
from rdsrn.runtimes.native_noise import filter_noise, quiet_native

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "runtimes" / "models"


# -- helpers ---------------------------------------------------------------------------

def nearest_onnx(path: Path, graph_scale: int, meta_scale: int) -> Path:
    """A dynamic-size NCHW float model that upscales by `graph_scale` (nearest
    neighbour) while its rdsrn metadata claims `meta_scale`."""
    import onnx
    from onnx import TensorProto, helper

    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4],
                                [1.0, 1.0, float(graph_scale), float(graph_scale)])
    node = helper.make_node("Resize", ["input", "", "scales"], ["output"], mode="nearest")
    graph = helper.make_graph(
        [node], "nearest",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H", "W"])],
        initializer=[scales])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = dict(format="onnx", scale=meta_scale, layout="NCHW", value_range=[0, 1],
                color_order="RGB", precision="fp32", io_dtype="float32", quantization={},
                input_size="dynamic", min_input=1, model=f"liar_x{meta_scale}")
    entry = model.metadata_props.add()
    entry.key, entry.value = "rdsrn", json.dumps(meta)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def x2_model(tmp_path_factory) -> Path:
    return nearest_onnx(tmp_path_factory.mktemp("m") / "nearest_x2.onnx", 2, 2)


def upscale_cli(argv: list[str]) -> int:
    """`rdsrn upscale ARGV` through rdsrn.cli.main (one-line errors, exit codes)."""
    from rdsrn.cli import main

    return main(["upscale", *argv])


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def fake_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (its pixel data is a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def bad_iccp_png(tmp_path: Path) -> Path:
    """A valid 8x8 PNG with a broken iCCP chunk (libpng warns about it on stderr)."""
    data = cv2.imencode(".png", np.full((8, 8, 3), 128, np.uint8))[1].tobytes()
    iccp = png_chunk(b"iCCP", b"bad\x00\x00" + zlib.compress(b"\x00" * 200))
    path = tmp_path / "iccp.png"
    path.write_bytes(data[:33] + iccp + data[33:])  # right after IHDR
    return path


def no_imdecode(monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("decoded although the header was over the limit")
    monkeypatch.setattr(cv2, "imdecode", refuse)


# -- pixel limit -----------------------------------------------------------------------

def test_header_sizes_of_every_probed_format(tmp_path: Path) -> None:
    img3 = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".webp", ".bmp", ".tif", ".ppm", ".gif"):
        assert image_size(cv2.imencode(ext, img3)[1].tobytes()) == (53, 37), ext
    lossless = cv2.imencode(".webp", np.zeros((37, 53, 4), np.uint8),
                            [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert lossless[12:16] == b"VP8L" and image_size(lossless) == (53, 37)
    assert image_size(cv2.imencode(".pgm", img3[:, :, 0])[1].tobytes()) == (53, 37)
    assert image_size(b"P5\n# comment\n53 37\n255\n" + bytes(53 * 37)) == (53, 37)
    assert image_size(b"P7\nWIDTH 53\nHEIGHT 37\nDEPTH 1\nMAXVAL 255\nENDHDR\n") == (53, 37)
    # big-endian TIFF, OS/2 BMP, lossy VP8 and extended VP8X WebP headers
    mm = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2) + \
        struct.pack(">HHII", 256, 4, 1, 53) + struct.pack(">HHIHH", 257, 3, 1, 37, 0) + \
        b"\x00" * 4
    assert image_size(mm) == (53, 37)
    os2 = b"BM" + bytes(12) + struct.pack("<IHHHH", 12, 53, 37, 1, 24)
    assert image_size(os2) == (53, 37)
    vp8 = b"RIFF" + bytes(4) + b"WEBPVP8 " + bytes(4) + bytes(3) + b"\x9d\x01\x2a" + \
        struct.pack("<HH", 53, 37)
    assert image_size(vp8) == (53, 37)
    vp8x = b"RIFF" + bytes(4) + b"WEBPVP8X" + bytes(8) + (52).to_bytes(3, "little") + \
        (36).to_bytes(3, "little")
    assert image_size(vp8x) == (53, 37)
    assert image_size(fake_png(40000, 30000)) == (40000, 30000)
    assert image_size(b"not an image") is None and image_size(b"\x89PNG") is None


def test_gigapixel_png_refused_from_its_header(tmp_path: Path, monkeypatch) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(fake_png(40000, 30000))  # 1.2 Gpx in 0.1 kB
    no_imdecode(monkeypatch)
    with pytest.raises(UserError) as err:
        read_image(bomb)
    msg = str(err.value)
    assert "bomb.png" in msg and "40000x30000" in msg and "67.1 Mpx" in msg
    assert "\n" not in msg


def test_limit_argument_env_and_zero(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), np.zeros((40, 50, 3), np.uint8))
    monkeypatch.delenv("RDSRN_MAX_PIXELS", raising=False)
    assert resolve_max_pixels() == DEFAULT_MAX_PIXELS == 8192 * 8192
    assert read_image(path, max_pixels=2000).shape == (40, 50, 3)
    monkeypatch.setenv("RDSRN_MAX_PIXELS", "1999")
    with pytest.raises(UserError, match="a.jpg: image is 50x40.*limit of 0.0 Mpx"):
        read_image(path)
    assert read_image(path, max_pixels=0).shape == (40, 50, 3)  # argument beats env
    monkeypatch.setenv("RDSRN_MAX_PIXELS", "lots")
    with pytest.raises(UserError, match="RDSRN_MAX_PIXELS='lots'"):
        read_image(path)
    with pytest.raises(UserError, match=">= 0"):
        resolve_max_pixels(-1)
    monkeypatch.setenv("RDSRN_MAX_PIXELS", "1999")
    no_imdecode(monkeypatch)  # the JPEG is refused from its SOF segment
    with pytest.raises(UserError, match="over the limit"):
        read_image(path)


def test_big_tiff_with_its_directory_at_the_end(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "big.tif"  # over 1 MB: its size is not in the first megabyte
    cv2.imwrite(str(path), (rng.random((700, 800, 3)) * 255).astype(np.uint8))
    data = path.read_bytes()
    assert len(data) > 1 << 20 and image_size(data[:1 << 20]) is None
    no_imdecode(monkeypatch)
    with pytest.raises(UserError, match="big.tif: image is 800x700"):
        read_image(path, max_pixels=800 * 700 - 1)


def test_limit_after_decoding_for_formats_without_a_probe(tmp_path: Path) -> None:
    path = tmp_path / "a.ras"  # Sun raster: no header probe, OpenCV decodes it
    assert cv2.imwrite(str(path), np.zeros((40, 50, 3), np.uint8))
    assert image_size(path.read_bytes()) is None
    with pytest.raises(UserError, match="a.ras: image is 50x40"):
        read_image(path, max_pixels=1999)


def test_training_reader_shares_the_limit(tmp_path: Path) -> None:
    from rdsrn.data import read_image as read_rgb

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(UserError, match="over the limit"):
        read_rgb(path, max_pixels=1999)


def test_video_frame_size_from_the_container(tmp_path: Path) -> None:
    path = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert w.isOpened()
    for i in range(3):
        w.write(np.full((24, 32, 3), 40 * i, np.uint8))
    w.release()
    with pytest.raises(UserError, match="v.avi: video frame is 32x24"):
        read_video(path, max_pixels=32 * 24 - 1)
    frames, _, _ = read_video(path, max_pixels=32 * 24)
    assert len(list(frames)) == 3


def test_cli_max_pixels(tmp_path: Path, x2_model: Path, capsys) -> None:
    src = tmp_path / "big.png"
    cv2.imwrite(str(src), np.zeros((40, 50, 3), np.uint8))
    out = tmp_path / "out"
    rc = upscale_cli([str(src), "-o", str(out), "--model", str(x2_model),
                      "--max-pixels", "1999"])
    err = capsys.readouterr().err
    assert rc == 1 and "big.png: image is 50x40" in err and "--max-pixels" in err
    assert "Traceback" not in err and not (out / "big_x2.png").exists()
    assert upscale_cli([str(src), "-o", str(out), "--model", str(x2_model),
                        "--max-pixels", "2000"]) == 0
    assert cv2.imread(str(out / "big_x2.png")).shape == (80, 100, 3)
    rc = upscale_cli([str(src), "-o", str(out), "--model", str(x2_model),
                      "--max-pixels", "-5"])
    assert rc == 2 and ">= 0" in capsys.readouterr().err


# -- unreadable files: one line, no hang, nothing lost ----------------------------------

def test_opencv_errors_become_one_line(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "odd.png"
    cv2.imwrite(str(path), np.zeros((4, 4), np.uint8))

    def assertion(*_a, **_k):
        cv2.resize(np.zeros((2, 2), np.float16), (4, 4))  # a real cv2.error
    monkeypatch.setattr(cv2, "imdecode", assertion)
    with pytest.raises(UserError) as err:
        read_image(path)
    assert str(err.value).startswith(f"{path}: not a readable image (OpenCV: ")
    assert "\n" not in str(err.value)


def test_png_chunk_running_past_the_end_is_refused_undecoded(tmp_path: Path,
                                                             monkeypatch) -> None:
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    assert data[37:41] == b"IDAT"
    data[33:37] = b"\x7f\xff\xff\xff"  # IDAT length 2 GB: OpenCV spent ~10 s on it
    (tmp_path / "long.png").write_bytes(bytes(data))
    (tmp_path / "cut.png").write_bytes(bytes(data[:50]))
    no_imdecode(monkeypatch)
    for name in ("long.png", "cut.png"):
        with pytest.raises(UserError, match=f"{name}: truncated or corrupt PNG"):
            read_image(tmp_path / name)


def test_corrupted_images_give_one_line_errors_only(tmp_path: Path, capfd) -> None:
    """Seeded random damage (cuts, flipped bytes, huge header fields) to small images of
    eight formats: each read either decodes or raises one UserError line naming the
    file, and nothing reaches stderr."""
    import random

    rng = random.Random(1)
    img = (np.random.default_rng(0).random((24, 30, 3)) * 255).astype(np.uint8)
    outcomes = {"ok": 0, "user": 0}
    for ext in (".png", ".jpg", ".webp", ".tif", ".bmp", ".ppm", ".gif", ".ras"):
        good = cv2.imencode(ext, img)[1].tobytes()
        for k in range(30):
            d = bytearray(good)
            if k % 4 == 0:
                d = d[:rng.randrange(1, len(d))]
            elif k % 4 == 1:
                for _ in range(rng.randrange(1, 10)):
                    d[rng.randrange(len(d))] = rng.randrange(256)
            else:
                i = rng.randrange(0, min(40, len(d)))
                d[i:i + 4] = b"\x7f\xff\xff\xff" if k % 4 == 3 else bytes(
                    rng.randrange(256) for _ in range(4))
            path = tmp_path / f"f{k}{ext}"
            path.write_bytes(bytes(d))
            try:
                read_image(path)
                outcomes["ok"] += 1
            except UserError as exc:
                assert "\n" not in str(exc) and str(path) in str(exc)
                outcomes["user"] += 1
    assert outcomes["user"] > 100 and outcomes["ok"] > 20, outcomes
    assert capfd.readouterr().err == ""


def test_fifo_and_folder_do_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(UserError, match="pipe.png: not a regular file"):
        read_image(fifo)
    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(UserError, match="pipe.mp4: not a regular file"):
        read_video(tmp_path / "pipe.mp4")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        read_image(tmp_path / "d.png")


def test_bad_input_never_replaces_an_existing_output(tmp_path: Path, x2_model: Path,
                                                     capsys) -> None:
    src = tmp_path / "a.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "a_x2.png"
    keep.write_bytes(b"precious")
    rc = upscale_cli([str(src), "-o", str(out), "--model", str(x2_model), "--force"])
    err = capsys.readouterr().err
    assert rc == 1 and keep.read_bytes() == b"precious"
    assert src.read_bytes() == b"\x89PNG\r\n\x1a\n garbage"
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png"]  # no temp file left
    assert err.count("\n") == 1 and "a.png" in err and "Traceback" not in err


# -- one image reader -------------------------------------------------------------------

def exif_jpeg(img: np.ndarray, orientation: int) -> bytes:
    """A JPEG of `img` with an APP1 EXIF segment holding the orientation tag."""
    jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + \
        struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    return jpg[:2] + segment + jpg[2:]


def test_every_command_reads_exif_orientation_alike(tmp_path: Path) -> None:
    from rdsrn.data import read_image as read_rgb

    img = np.zeros((16, 32, 3), np.uint8)
    img[:, :8] = (0, 0, 255)  # red band on the left (BGR)
    path = tmp_path / "rot.jpg"
    path.write_bytes(exif_jpeg(img, 6))  # 6: display rotated 90 degrees clockwise
    bgr = read_image(path)
    rgb = read_rgb(path)
    assert bgr.shape == (32, 16, 3) and rgb.shape == (32, 16, 3)
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])
    assert rgb[:8, :, 0].mean() > 200 and rgb[-8:, :, 0].mean() < 50  # band now on top


def test_training_reader_keeps_its_conventions(tmp_path: Path) -> None:
    from rdsrn.data import read_image as read_rgb

    f = np.linspace(0, 1, 4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    cv2.imwrite(str(tmp_path / "f.tif"), f)
    got = read_rgb(tmp_path / "f.tif")
    assert got.dtype == np.uint8 and got.shape == (4, 5, 3)
    np.testing.assert_array_equal(got, np.floor(f[:, :, ::-1] * 255 + 0.5).astype(np.uint8))
    f[1, 1, 1] = np.nan
    cv2.imwrite(str(tmp_path / "nan.tif"), f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserError, match="nan.tif: float image holds NaN"):
            read_rgb(tmp_path / "nan.tif")
    with pytest.raises(UserError, match="unsupported sample type float32"):
        read_image(tmp_path / "f.tif")  # `rdsrn upscale` takes 8/16-bit files only


# -- Upscaler input dtypes, NaN, lying metadata -------------------------------------------

def test_float_inputs_of_any_channel_count(x2_model: Path) -> None:
    from rdsrn.runtimes import Upscaler

    up = Upscaler(x2_model, threads=1)
    rng = np.random.default_rng(0)
    for dtype in (np.float16, np.float32, np.float64):
        for shape in ((5, 7), (5, 7, 1), (5, 7, 2), (5, 7, 3), (5, 7, 4)):
            img = rng.random(shape).astype(dtype)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                out = up.upscale(img)
            assert out.dtype == dtype and out.shape[:2] == (10, 14), (dtype, shape)
            assert out.shape[2:] == shape[2:]
            color = img if len(shape) == 2 or shape[2] in (1, 3) else img[:, :, :-1]
            got = out if len(shape) == 2 or shape[2] in (1, 3) else out[:, :, :-1]
            want = color.repeat(2, axis=0).repeat(2, axis=1)  # nearest x2
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                       atol=2e-3 if dtype == np.float16 else 1e-6)
            if len(shape) == 3 and shape[2] in (2, 4):
                alpha = cv2.resize(img[:, :, -1].astype(np.float32), (14, 10),
                                   interpolation=cv2.INTER_CUBIC)
                np.testing.assert_allclose(out[:, :, -1].astype(np.float32),
                                           np.clip(alpha, 0, 1), atol=2e-3)


def test_nan_inf_and_out_of_range_floats_are_refused(x2_model: Path, capfd) -> None:
    from rdsrn.runtimes import Upscaler

    up = Upscaler(x2_model, threads=1)
    for bad, text in ((np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                      (-np.inf, "NaN or infinite"), (255.0, r"in \[0, 1\]"),
                      (-0.5, r"in \[0, 1\]")):
        for dtype in (np.float16, np.float32, np.float64):
            img = np.full((4, 4, 4), 0.5, dtype)
            img[1, 2, 0] = bad
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                with pytest.raises(UserError, match=text):
                    up.upscale(img)
    assert capfd.readouterr().err == ""


def test_metadata_scale_that_lies_is_named(tmp_path: Path, capsys) -> None:
    from rdsrn.runtimes import Upscaler

    liar = nearest_onnx(tmp_path / "liar.onnx", graph_scale=2, meta_scale=4)
    up = Upscaler(liar, threads=1)
    with pytest.raises(UserError) as err:
        up.upscale(np.zeros((6, 6, 3), np.uint8))
    msg = str(err.value)
    assert "liar.onnx" in msg and "liar_x4" in msg and "x4" in msg and "\n" not in msg
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), np.zeros((6, 6, 3), np.uint8))
    rc = upscale_cli([str(src), "-o", str(tmp_path / "o"), "--model", str(liar)])
    err_text = capsys.readouterr().err
    assert rc == 1 and "liar.onnx" in err_text and "Traceback" not in err_text
    assert "broadcast" not in err_text


def test_corrupt_models_fail_in_one_line(tmp_path: Path, x2_model: Path, capfd,
                                         monkeypatch) -> None:
    from rdsrn.runtimes import Upscaler

    data = x2_model.read_bytes()
    i = data.index(b'"precision"')
    bad = tmp_path / "utf8.onnx"  # metadata that is not UTF-8: onnxruntime's load fails
    bad.write_bytes(data[:i] + b"\xff" + data[i + 1:])
    with pytest.raises(UserError, match="utf8.onnx: onnxruntime cannot load it"):
        Upscaler(bad)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # no "EP Error" banner

    model = BUNDLED / "rdsrn_x4_fp32.tflite"
    if not model.is_file():
        pytest.skip("no bundled .tflite in this checkout")
    pytest.importorskip("ai_edge_litert")
    up = Upscaler(model, threads=1)

    def broken(*_a):  # what a tensor with a corrupt scale does inside XNNPACK
        raise RuntimeError("unsupported scale value (-5.0) in channel 0 for INT8 tensor 147"
                           "\nfailed to create XNNPACK Value")
    monkeypatch.setattr(up._backend.interpreter, "allocate_tensors", broken)
    with pytest.raises(UserError) as err:
        up.upscale(np.zeros((6, 5, 3), np.uint8))
    assert str(err.value) == (f"{model}: LiteRT cannot run it (unsupported scale value "
                              "(-5.0) in channel 0 for INT8 tensor 147)")


# -- native noise on stderr --------------------------------------------------------------

def test_libpng_warning_stays_off_stderr(tmp_path: Path, capfd, x2_model: Path) -> None:
    path = bad_iccp_png(tmp_path)
    cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    assert "libpng warning" in capfd.readouterr().err  # the noise is real here
    assert read_image(path).shape == (8, 8, 3)
    assert capfd.readouterr().err == ""
    rc = upscale_cli([str(path), "-o", str(tmp_path / "o"), "--model", str(x2_model), "-q"])
    captured = capfd.readouterr()
    assert rc == 0 and captured.err == ""
    assert "upscaled 1 of 1" in captured.out


def test_opencv_error_log_stays_off_stderr(tmp_path: Path, capfd) -> None:
    data = bytearray(cv2.imencode(".gif", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    data[10] = 0x80  # GIF global colour table flag with a bogus size: an OpenCV assertion
    path = tmp_path / "bad.gif"
    path.write_bytes(bytes(data))
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED) is None
    assert "can't read header" in capfd.readouterr().err  # OpenCV logs it here
    with pytest.raises(UserError, match="bad.gif: not a readable image"):
        read_image(path)
    assert capfd.readouterr().err == ""


def test_ffmpeg_messages_stay_off_stderr(tmp_path: Path, x2_model: Path) -> None:
    import subprocess

    cut = tmp_path / "cut.mp4"  # an MP4 header and nothing else: ffmpeg complains
    cut.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    # Fresh processes, so no earlier test's OpenCV / ffmpeg log state matters.
    raw = subprocess.run([sys.executable, "-c", f"import cv2; cv2.VideoCapture({str(cut)!r})"],
                         capture_output=True, text=True, timeout=120)
    assert "moov atom not found" in raw.stderr  # ffmpeg's noise is real here
    ours = subprocess.run([sys.executable, "-m", "rdsrn.cli", "upscale", str(cut), "-o",
                           str(tmp_path / "o"), "--model", str(x2_model), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert ours.returncode == 1
    assert ours.stderr == f"rdsrn upscale: failed: {cut}: not a readable video\n"


def test_quiet_native_keeps_other_lines(capfd) -> None:
    with quiet_native():
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\n"
                    b"something real went wrong\n"
                    b"[ WARN:0@0.1] global loadsave.cpp noise\n"
                    b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55d0c0] stream 1: noise\n")
        print("our own line", file=sys.stderr, flush=True)
    # (under capfd sys.stderr is pytest's buffer, so only the set of lines is compared)
    lines = capfd.readouterr().err.splitlines()
    assert sorted(lines) == ["our own line", "something real went wrong"]
    assert filter_noise(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n") == b""


def test_quiet_native_leaves_fd2_alone_outside_the_main_thread() -> None:
    """Threads restoring fd 2 out of order would leave it on a deleted temp file."""
    import threading

    before = os.fstat(2)
    seen: list[tuple[int, int]] = []

    def worker() -> None:
        with quiet_native():
            st = os.fstat(2)
            seen.append((st.st_dev, st.st_ino))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == [(before.st_dev, before.st_ino)]
    with quiet_native():  # the main thread does redirect, and restores
        assert os.fstat(2).st_ino != before.st_ino
    assert os.fstat(2).st_ino == before.st_ino


def test_no_room_for_the_noise_file_does_not_fail_a_read(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((4, 5, 3), np.uint8))
    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    assert read_image(path).shape == (4, 5, 3)


def test_litert_banner_stays_off_stderr() -> None:
    model = BUNDLED / "rdsrn_x4_fp32.tflite"
    if not model.is_file():
        pytest.skip("no bundled .tflite in this checkout")
    pytest.importorskip("ai_edge_litert")
    import subprocess

    # A fresh process: once TensorFlow is loaded (other tests) LiteRT stops printing it.
    script = (
        "import os, numpy as np\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "from rdsrn.runtimes import Upscaler\n"
        f"raw = Interpreter(model_path={str(model)!r}, num_threads=1)\n"
        "raw.allocate_tensors()\n"
        "os.write(2, b'MARK\\n')\n"
        f"up = Upscaler({str(model)!r}, threads=1)\n"
        "assert up.upscale(np.zeros((6, 5, 3), np.uint8)).shape == (24, 20, 3)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = done.stderr.split("MARK\n")
    assert "XNNPACK" in before  # the banner is real here
    assert after == ""


# -- video audio -----------------------------------------------------------------------------

def tool(bin_dir: Path, name: str, script: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


@pytest.fixture()
def bin_dir(tmp_path: Path, monkeypatch) -> Path:
    """An otherwise empty PATH: only the fake tools a test puts there are found."""
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", str(d))
    return d


def test_audio_note_without_ffmpeg(tmp_path: Path, bin_dir: Path) -> None:
    src, video = tmp_path / "in.mp4", tmp_path / "out.mp4"
    src.write_bytes(b"input")
    video.write_bytes(b"video")
    assert count_audio_streams(src) is None
    note = copy_audio(src, video)
    assert note == (f"note: {src}: audio track, if any, not copied (OpenCV writes video "
                    "only; put ffmpeg on PATH to keep it)")
    tool(bin_dir, "ffprobe", "echo 1\n")
    assert copy_audio(src, video).startswith(f"note: {src}: audio track not copied")
    tool(bin_dir, "ffprobe", "true\n")  # no audio stream: nothing to say
    assert copy_audio(src, video) is None and video.read_bytes() == b"video"


def test_audio_copied_with_ffmpeg(tmp_path: Path, bin_dir: Path) -> None:
    src, video = tmp_path / "in.mp4", tmp_path / "out.mp4"
    src.write_bytes(b"input")
    video.write_bytes(b"video")
    log = tmp_path / "args.txt"
    # fake ffmpeg: record the arguments, write "muxed" to the last one (the output)
    tool(bin_dir, "ffmpeg", f'echo "$@" > {log}\nfor a; do out="$a"; done\n'
                            'printf muxed > "$out"\n')
    assert copy_audio(src, video) is None
    assert video.read_bytes() == b"muxed"
    args = log.read_text().split()
    assert args[args.index("-c") + 1] == "copy" and "1:a?" in args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["args.txt", "bin", "in.mp4",
                                                          "out.mp4"]
    tool(bin_dir, "ffmpeg", 'echo "Could not find tag for codec pcm_s16le" >&2\nexit 1\n')
    video.write_bytes(b"video")
    note = copy_audio(src, video)
    assert note == (f"note: {src}: audio track not copied (ffmpeg: Could not find tag for "
                    "codec pcm_s16le)")
    assert video.read_bytes() == b"video"  # the video without audio is kept


def test_cli_video_says_audio_is_not_kept(tmp_path: Path, x2_model: Path, bin_dir: Path,
                                          capsys) -> None:
    src = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16, 12))
    for i in range(2):
        w.write(np.full((12, 16, 3), 60 * i, np.uint8))
    w.release()
    rc = upscale_cli([str(src), "-o", str(tmp_path / "o"), "--model", str(x2_model), "-q"])
    captured = capsys.readouterr()
    assert rc == 0 and (tmp_path / "o" / "v_x2.avi").is_file()
    assert captured.err == (f"rdsrn upscale: note: {src}: audio track, if any, not copied "
                            "(OpenCV writes video only; put ffmpeg on PATH to keep it)\n")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg on PATH")
def test_real_ffmpeg_keeps_the_audio(tmp_path: Path, x2_model: Path, capsys) -> None:
    import subprocess

    ffmpeg = shutil.which("ffmpeg")
    src = tmp_path / "clip.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=32x24:rate=10", "-f", "lavfi", "-i",
                    "sine=sample_rate=16000", "-t", "1", "-c:v", "mpeg4", "-c:a", "aac",
                    str(src)], check=True)
    rc = upscale_cli([str(src), "-o", str(tmp_path / "o"), "--model", str(x2_model), "-q"])
    assert rc == 0 and capsys.readouterr().err == ""
    probe = subprocess.run([ffmpeg, "-hide_banner", "-i", str(tmp_path / "o" / "clip_x2.mp4")],
                           capture_output=True, text=True)
    streams = [ln for ln in probe.stderr.splitlines() if "Stream #" in ln]
    assert len(streams) == 2 and "64x48" in streams[0] and "Audio: aac" in streams[1]


# -- progress ------------------------------------------------------------------------------

def run_in_terminal(argv: list[str], cwd: Path) -> str:
    """Run `python -m rdsrn.cli ARGV` with stdout and stderr on a pseudo-terminal (where
    tqdm draws its bars); returns everything it wrote."""
    import pty
    import subprocess

    import fcntl
    import termios

    master, slave = pty.openpty()
    # 24 x 100 characters (a new pty is 0 x 0, where tqdm draws an empty bar)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "rdsrn.cli", *argv], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    import select

    while True:
        if not select.select([master], [], [], 300)[0]:  # a hung child fails, not hangs
            proc.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode("utf-8", "replace")


def test_tile_progress_on_a_terminal_only(tmp_path: Path, x2_model: Path) -> None:
    src = tmp_path / "big.png"
    cv2.imwrite(str(src), np.zeros((40, 40, 3), np.uint8))
    args = [str(src), "-o", str(tmp_path / "o"), "--model", str(x2_model),
            "--tile", "8", "--overlap", "2", "--force"]
    shown = run_in_terminal(["upscale", *args], tmp_path)
    from rdsrn.runtimes.tiling import tile_starts

    tiles = len(tile_starts(40, 8, 2)) ** 2
    assert "big.png:" in shown and f"0/{tiles} [" in shown  # a bar of tiles, total known
    quiet = run_in_terminal(["upscale", *args, "-q"], tmp_path)
    assert "tile" not in quiet and "upscaled 1 of 1" in quiet
