"""TFLite export: the TensorFlow twin against PyTorch, FP32 / FP16 / INT8 conversions
(native DEPTH_TO_SPACE, no TRANSPOSE, NHWC, dynamic H/W, integer I/O), metadata."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from rdsrn.export.calibration import make_calibration_set  # noqa: E402
from rdsrn.export.parity import psnr01, tflite_runner, torch_runner  # noqa: E402
from rdsrn.export.tflite_export import export_tflite, inspect  # noqa: E402
from rdsrn.runtimes.tflite_meta import read_tflite_metadata, tflite_metadata_buffers  # noqa: E402

from export_fixtures import crop_inputs, full_source, small_source, tiny_eval_dir  # noqa: E402

tf = pytest.importorskip("tensorflow")
from rdsrn.export.tf_twin import crd_to_dcr, twin_from_torch  # noqa: E402


def _unclamped_torch(model, x):
    with torch.inference_mode():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("overrides", [dict(), dict(recursions=2, csr=0.25),
                                       dict(recursions=1, csr=0.75, scale=3),
                                       dict(anchor=True), dict(anchor=True, scale=3)])
def test_twin_matches_torch(overrides):
    from rdsrn.models import create_model

    torch.manual_seed(3)
    model = create_model("rdsrn_x4", **overrides).eval()
    twin = twin_from_torch(model, clamp=False)
    x = np.random.default_rng(0).random((1, 19, 27, 3), dtype=np.float32)
    ref = _unclamped_torch(model, x)
    out = twin.forward(tf.constant(x)).numpy()
    assert out.shape == ref.shape
    # Relative to the output's spread, so a near-constant random model cannot hide a bug.
    assert np.abs(out - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    assert ref.std() > 1e-3


def test_fused_clamp_is_the_same_function_as_clip():
    """0.5 * clip(2z - 1, -1, 1) + 0.5 (INT8 graphs) == clip(z, 0, 1), over- and undershoot
    included."""
    from rdsrn.models import create_model

    torch.manual_seed(5)
    model = create_model("rdsrn_x4", channels=16, hr_channels=8, wide=2).eval()
    with torch.no_grad():  # push outputs well outside [0, 1] so both clamp sides are hit
        model.recon.bias.copy_(torch.tensor([-0.8, 0.5, 1.6]))
    x = tf.constant(np.random.default_rng(2).random((1, 13, 17, 3), dtype=np.float32))
    plain = twin_from_torch(model).forward(x).numpy()
    fused = twin_from_torch(model, fused_clamp=True).forward(x).numpy()
    assert (plain == 0).any() and (plain == 1).any()
    assert np.abs(plain - fused).max() <= 1e-6


def test_crd_to_dcr_makes_depth_to_space_exact():
    s, c = 3, 5
    x = np.random.default_rng(1).random((1, c * s * s, 4, 6), dtype=np.float32)
    ref = F.pixel_shuffle(torch.from_numpy(x), s).numpy().transpose(0, 2, 3, 1)
    perm = crd_to_dcr(c * s * s, s)
    out = tf.nn.depth_to_space(x[:, perm].transpose(0, 2, 3, 1), s).numpy()
    np.testing.assert_array_equal(out, ref)


@pytest.fixture(scope="module")
def fp32_export(tmp_path_factory, data_dir):
    src = full_source()
    out = tmp_path_factory.mktemp("tfl") / "rdsrn_x4_fp32.tflite"
    res = export_tflite(src, out, "fp32", parity_inputs=crop_inputs(data_dir, [(24, 24)]),
                        log=lambda s: None)
    return src, res


def test_tflite_fp32_structure(fp32_export):
    src, res = fp32_export
    data = res.path.read_bytes()
    info = inspect(data)
    assert info["ops"]["DEPTH_TO_SPACE"] == 1
    assert "TRANSPOSE" not in info["ops"]
    # CSR 0.5 splits channels in equal halves: SPLIT (XNNPACK-delegated), never SPLIT_V.
    assert info["ops"].get("SPLIT", 0) > 0 and "SPLIT_V" not in info["ops"]
    assert info["input"]["shape_signature"] == [1, -1, -1, 3]
    assert info["input"]["dtype"] == info["output"]["dtype"] == "float32"
    # Weights stored once although the recursive block runs R = 3 times.
    param_bytes = sum(p.numel() * 4 for p in src.model.parameters())
    assert 1.0 <= len(data) / param_bytes < 1.05


def test_tflite_fp32_dynamic_parity(fp32_export, data_dir):
    src, res = fp32_export
    run, ref = tflite_runner(res.path.read_bytes()), torch_runner(src.model)
    for x in crop_inputs(data_dir, [(17, 23), (40, 64)]):
        y = run(x)
        assert y.shape == (1, x.shape[1] * 4, x.shape[2] * 4, 3)
        assert np.abs(y - ref(x)).max() <= 1e-4


def test_tflite_metadata_round_trip(fp32_export):
    _, res = fp32_export
    meta = read_tflite_metadata(res.path)
    assert meta == res.metadata
    assert meta["format"] == "tflite" and meta["layout"] == "NHWC"
    assert meta["weights_sha256"] == "random-seed-0"
    assert read_tflite_metadata(res.path.read_bytes()) == meta


def test_tflite_meta_reader_rejects_non_tflite(tmp_path):
    with pytest.raises(ValueError, match="not a TFLite"):
        read_tflite_metadata(b"\x00" * 64)
    # A TFLite file without our entry reads as {}.
    twin = twin_from_torch(small_source().model)
    from rdsrn.export.tflite_export import convert

    plain = convert(twin, "fp32")
    assert "rdsrn" not in tflite_metadata_buffers(plain)
    assert read_tflite_metadata(plain) == {}


def test_tflite_fp16(tmp_path, data_dir):
    src = small_source()
    out = tmp_path / "m_fp16.tflite"
    res = export_tflite(src, out, "fp16", parity_inputs=crop_inputs(data_dir, [(24, 24)]),
                        log=lambda s: None)
    info = inspect(out.read_bytes())
    assert "float16" in info["tensor_dtypes"]
    assert info["input"]["dtype"] == "float32"
    assert res.metadata["parity"]["psnr_vs_torch"] >= 50


def test_tflite_fixed_size(tmp_path, data_dir):
    src = small_source()
    out = tmp_path / "m_fixed.tflite"
    export_tflite(src, out, "fp32", input_size=(24, 32),
                  parity_inputs=crop_inputs(data_dir, [(24, 32)]), log=lambda s: None)
    info = inspect(out.read_bytes())
    assert info["input"]["shape_signature"] == [1, 24, 32, 3]
    assert read_tflite_metadata(out)["input_size"] == [24, 32]


@pytest.fixture(scope="module")
def int8_setup(tmp_path_factory, data_dir, set5_dir):
    src = small_source()
    calib = make_calibration_set(data_dir / "train", 4, 6, size=(24, 24))
    eval_dir = tiny_eval_dir(set5_dir, tmp_path_factory.mktemp("eval"))
    return src, calib, eval_dir


@pytest.mark.slow
@pytest.mark.parametrize("io", ["uint8", "int8"])
def test_tflite_int8_full_integer(tmp_path, data_dir, int8_setup, io):
    from ai_edge_litert.interpreter import Interpreter

    src, calib, eval_dir = int8_setup
    out = tmp_path / f"m_int8_{io}.tflite"
    res = export_tflite(src, out, "int8", calib=calib, int8_io=io,
                        parity_inputs=crop_inputs(data_dir, [(24, 24)]), eval_dir=eval_dir,
                        max_drop=5.0, log=lambda s: None)
    data = out.read_bytes()
    info = inspect(data)
    assert info["ops"]["DEPTH_TO_SPACE"] == 1 and info["ops"]["SQRT"] == 3
    assert "TRANSPOSE" not in info["ops"] and "DEQUANTIZE" not in info["ops"]
    # The output clamp is fused into the reconstruction conv (no reference-kernel RELU/MINIMUM).
    assert "RELU" not in info["ops"] and "MINIMUM" not in info["ops"]
    assert info["input"]["dtype"] == info["output"]["dtype"] == io
    assert info["input"]["shape_signature"] == [1, -1, -1, 3]
    if io == "uint8":
        assert info["input"]["scale"] == pytest.approx(1 / 255, rel=1e-6)
        assert info["input"]["zero_point"] == 0
    interp = Interpreter(model_content=data)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    conv_weights = 0
    for op in interp._get_ops_details():
        if op["op_name"] != "CONV_2D":
            continue
        for idx in op["outputs"]:  # activations int8
            assert tensors[idx]["dtype"] == np.int8
        w = tensors[op["inputs"][1]]
        assert w["dtype"] == np.int8
        q = w["quantization_parameters"]
        assert len(q["scales"]) == w["shape"][0] and q["quantized_dimension"] == 0
        conv_weights += 1
    assert conv_weights == 64
    meta = res.metadata
    assert meta["io_dtype"] == io and meta["quantization"]["input"]["dtype"] == io
    assert "delta_psnr" in meta and meta["eval"]["images"] == 2
    # Still the model: close to PyTorch on a real crop, at two sizes.
    run, ref = tflite_runner(data), torch_runner(src.model)
    for x in crop_inputs(data_dir, [(20, 28), (32, 32)]):
        assert psnr01(run(x), ref(x)) > 30


@pytest.mark.slow
def test_int8_output_has_no_half_level_bias(data_dir, set5_dir):
    """The fused output clamp's grid sits on the pixel values. Without the fix every output
    pixel of an INT8 file rounded half a level up against the fake-quant model it was
    trained as (export/tflite_output.py); with it, no bias is left."""
    from rdsrn.export.qat_ranges import qat_model_of
    from rdsrn.export.qat_tflite import apply_tflite_ranges
    from rdsrn.export.source import load_source
    from rdsrn.export.tf_twin import twin_from_torch
    from rdsrn.export.tflite_export import convert
    from rdsrn.export.tflite_output import align_output_clamp
    from rdsrn.weights import weights_path

    if not weights_path("rdsrn_x4_qat").is_file():
        pytest.skip("no shipped rdsrn_x4_qat weights")
    src = load_source(str(weights_path("rdsrn_x4_qat")))
    q = qat_model_of(src).eval()
    calib = make_calibration_set(data_dir / "train", 4, 6, size=(32, 32))
    data = convert(twin_from_torch(src.model, clamp=True, fused_clamp=True), "int8",
                   calib=calib)
    crops = crop_inputs(data_dir, [(48, 48), (40, 56)])
    fixed, aligned = align_output_clamp(data)
    assert aligned and align_output_clamp(fixed)[1] is False  # applied once
    assert align_output_clamp(convert(twin_from_torch(src.model), "fp32"))[1] is False
    ref = torch_runner(q)

    def bias(model: bytes) -> float:
        run = tflite_runner(apply_tflite_ranges(model, q, crops[0])[0])
        return float(np.mean([np.mean(np.round(run(x) * 255) - np.round(ref(x) * 255))
                              for x in crops]))

    assert bias(data) > 0.3 and abs(bias(fixed)) < 0.15
