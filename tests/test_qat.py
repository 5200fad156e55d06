"""Quantization-aware fine-tuning: the fake-quant model mirrors the exported INT8 graph,
QAT ranges travel into the ONNX QDQ file, training hooks, bad input."""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np
import pytest
import torch

from rdsrn.models.rdsrn import RDSRN
from rdsrn.quant.qat import (QATRDSRN, check_qat_init, is_tflite_only, point_names,
                             qat_from_metadata)
from rdsrn.runtimes.errors import UserError
from export_fixtures import SMALL, crop_inputs, small_source


def _calibrated(model: RDSRN, data_dir: Path, n: int = 4) -> tuple[QATRDSRN, object]:
    from rdsrn.export.calibration import make_calibration_set

    calib = make_calibration_set(data_dir / "train", int(model.config["scale"]), n,
                                 size=(24, 24))
    q = QATRDSRN(model).eval()
    q.calibrate(torch.from_numpy(calib.nchw()).split(2))
    return q, calib


def test_float_mode_is_the_float_model() -> None:
    torch.manual_seed(0)
    m = RDSRN(**SMALL).eval()
    q = QATRDSRN(m).eval()
    q.mode = "float"
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(q(x), m(x).clamp(0, 1))
        q.mode = "quant"
        y = q(x)
    assert not torch.equal(y, m(x).clamp(0, 1))
    assert torch.allclose(y * 255, (y * 255).round(), atol=1e-4)  # output on the 1/255 grid


@pytest.mark.parametrize("anchor", [False, True])
def test_points_match_the_onnx_qdq_graph(data_dir: Path, anchor: bool) -> None:
    """Every activation QDQ of the onnxruntime INT8 file is one QAT point (plus the fixed
    input/output and the grid-sharing splits/DepthToSpace/Resize), and the file computes
    on the QAT grids after apply_onnx_ranges; with and without the anchor skip."""
    from onnx import numpy_helper

    from rdsrn.export.calibration import make_calibration_set  # noqa: F401
    from rdsrn.export.onnx_export import build_fp32, quantize_int8
    from rdsrn.export.parity import compare, onnx_runner, torch_runner
    from rdsrn.export.qat_ranges import apply_onnx_ranges

    src = small_source(anchor=anchor)
    q, calib = _calibrated(src.model, data_dir)
    q.weight_rule = "pair_safe"  # the ONNX file's weight grids
    with torch.no_grad():  # move the ranges away from what onnxruntime calibrates
        q.act_log_scale.add_(math.log(3.0))
    fp32 = build_fp32(src.model)
    qdq, _ = quantize_int8(fp32, calib)
    inits = {i.name: i for i in qdq.graph.initializer}
    prod = {o: n for n in qdq.graph.node for o in n.output}
    acts = [n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    shared = [n for n in acts if n.input[0] in prod
              and prod[n.input[0]].op_type in ("Split", "DepthToSpace", "Resize")]
    assert anchor == any(prod[n.input[0]].op_type == "Resize" for n in shared)
    onnx_points = [n for n in point_names(SMALL["recursions"], anchor)
                   if not is_tflite_only(n)]
    assert len(acts) - len(shared) - 2 == len(onnx_points)
    before = onnx_runner(qdq.SerializeToString())
    crops = crop_inputs(data_dir, [(20, 20), (17, 23)])
    info = apply_onnx_ranges(qdq, fp32, q, crops[0])
    assert info["tensors"] == len(acts) and info["max_match_error"] < 1e-3
    scale_of = {n.input[0]: float(numpy_helper.to_array(inits[n.input[1]])) for n in acts}
    direct = sorted(v for t, v in scale_of.items()
                    if not any(t == n.input[0] for n in shared) and abs(v - 1 / 255) > 1e-9)
    assert np.allclose(direct, sorted(r["scale"] for n, r in q.ranges().items()
                                      if not is_tflite_only(n)), rtol=1e-5)
    for n in shared:  # a split / DepthToSpace output keeps its input's grid
        t = prod[n.input[0]].input[0]  # DQ output <- Q <- the input tensor
        t = prod[prod[t].input[0]].input[0]
        assert scale_of[n.input[0]] == scale_of[t]
    after = onnx_runner(qdq.SerializeToString())
    ref = torch_runner(src.model)
    p_fq, p_after, p_before = (compare(r, ref, crops)["psnr_vs_torch"]
                               for r in (torch_runner(q), after, before))
    # The file now has the (3x coarser) QAT grids: as far from FP32 as the fake-quant
    # model, not as close as the calibrated file. (Not bit-exact: integer requantization
    # rounds differently and 1-LSB flips propagate.)
    assert abs(p_after - p_fq) < 1.5 and p_before - p_after > 3


def test_widen_keeps_the_range() -> None:
    from rdsrn.quant.qat import widen

    s, z = 0.02, 77
    s16, z16 = widen(s, z)
    assert z16 == 77 * 257 and math.isclose(-z16 * s16, -z * s)
    assert math.isclose((65535 - z16) * s16, (255 - z) * s)


def test_a16_streams_onnx_file(data_dir: Path) -> None:
    """--a16-streams: the stream points' tensors get uint16 Q/DQ (com.microsoft, same
    range), every other activation stays uint8, and the file computes what the wide
    fake-quant model does: much closer to float than the all-8-bit file."""
    from onnx import numpy_helper

    from rdsrn.export.onnx_export import build_fp32, quantize_int8
    from rdsrn.export.parity import compare, onnx_runner, torch_runner
    from rdsrn.export.qat_ranges import apply_onnx_ranges
    from rdsrn.quant.qat import stream_point_names

    src = small_source()
    q, calib = _calibrated(src.model, data_dir)
    fp32 = build_fp32(src.model)
    crops = crop_inputs(data_dir, [(20, 20), (17, 23)])
    narrow, _ = quantize_int8(fp32, calib)
    apply_onnx_ranges(narrow, fp32, q, crops[0])
    wide_q = QATRDSRN(src.model, weight_rule="pair_safe").eval()  # the ONNX weight grids
    wide_q.load_ranges(q.ranges())
    wide_q.wide = frozenset(stream_point_names(SMALL["recursions"]))
    qdq, _ = quantize_int8(fp32, calib)
    info = apply_onnx_ranges(qdq, fp32, wide_q, crops[0])
    # every stream point, plus DepthToSpace's output (it keeps upconv's grid)
    assert info["wide"] == len(wide_q.wide) + 1
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    qs = [n for n in qdq.graph.node  # activation Q/DQ (weights are stored quantized)
          if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[0] not in inits]
    u16 = [n for n in qs if inits[n.input[2]].dtype == np.uint16]
    assert {n.domain for n in u16} == {"com.microsoft"}
    assert len([n for n in u16 if n.op_type == "QuantizeLinear"]) == info["wide"]
    assert all(n.domain == "" for n in qs if inits[n.input[2]].dtype == np.uint8)
    ref = torch_runner(src.model)
    run = onnx_runner(qdq.SerializeToString())
    p_wide, p_narrow, p_fq = (compare(r, ref, crops)["psnr_vs_torch"]
                              for r in (run, onnx_runner(narrow.SerializeToString()),
                                        torch_runner(wide_q)))
    assert abs(p_wide - p_fq) < 1.5 and p_wide - p_narrow > 3
    assert compare(run, torch_runner(wide_q), crops)["psnr_vs_torch"] > 40


def test_export_onnx_a16_streams_file(data_dir: Path, set5_dir: Path, tmp_path: Path) -> None:
    """export_onnx(a16_streams=True) writes a gated file whose metadata says which tensors
    are 16-bit: over the QAT grids, or over min/max grids for FP32-only weights."""
    from rdsrn.export.cli import artifact_name
    from rdsrn.export.onnx_export import export_onnx
    from rdsrn.quant.qat import qat_metadata
    from export_fixtures import tiny_eval_dir

    src = small_source()
    q, calib = _calibrated(src.model, data_dir)
    src.qat = qat_metadata(q)
    name = artifact_name("m", "onnx", "int8", None, a16_streams=True)
    assert name == "m_int8_a16-streams.onnx"
    common = dict(calib=calib, parity_inputs=crop_inputs(data_dir, [(24, 24)]),
                  eval_dir=tiny_eval_dir(set5_dir, tmp_path / "eval"), max_drop=5.0,
                  log=lambda s: None)
    res = export_onnx(src, tmp_path / name, "int8", qat=True, a16_streams=True, **common)
    quant = res.metadata["quantization"]
    assert res.path.is_file() and quant["a16_streams"] is True
    assert "uint16" in quant["activations"]
    assert quant["parity_fakequant"]["psnr_vs_torch"] > 40
    # FP32-only weights: min/max grids, widened the same way
    src.qat = None
    ptq = export_onnx(src, tmp_path / "ptq.onnx", "int8", a16_streams=True, **common)
    assert ptq.metadata["quantization"]["a16_streams"] is True
    assert "min/max" in ptq.metadata["quantization"]["ranges"]
    assert ptq.metadata["quantization"]["parity_fakequant"]["psnr_vs_torch"] > 40
    with pytest.raises(ValueError, match="a16_streams"):
        export_onnx(src, tmp_path / "x.onnx", "fp32", a16_streams=True,
                    **{**common, "calib": None})
    assert not (tmp_path / "x.onnx").exists()


def test_metadata_round_trip_and_fp32_only_weights(data_dir: Path, tmp_path: Path) -> None:
    from rdsrn.training.qat import weights_view
    from rdsrn.weights import load_state, save_weights

    src = small_source()
    q, _ = _calibrated(src.model, data_dir)
    model, meta = weights_view(q, {"model": "rdsrn_x4", "config": dict(src.model.config)})
    assert model is src.model and len(meta["qat"]["ranges"]) == len(q.points)
    save_weights(tmp_path / "w.safetensors", model, meta)
    state, meta2 = load_state(tmp_path / "w.safetensors")
    assert set(state) == set(src.model.state_dict())  # a plain RDSRN state dict
    q2 = qat_from_metadata(src.model, meta2, "w")
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(q(x), q2(x))
    with pytest.raises(UserError, match="FP32-only weights"):
        qat_from_metadata(src.model, {"model": "rdsrn_x4"}, "w")
    old = {"qat": {**meta2["qat"], "format": "rdsrn-qat-1"}}  # before tied ranges
    with pytest.raises(UserError, match="format 'rdsrn-qat-1'"):
        qat_from_metadata(src.model, old, "w")


def test_qat_init_refuses_other_scale_or_architecture(tmp_path: Path) -> None:
    from rdsrn.weights import save_weights

    other = RDSRN(**{**SMALL, "scale": 2})
    save_weights(tmp_path / "x2.safetensors", other, {})
    with pytest.raises(UserError, match="QAT needs FP32 weights of this architecture"):
        check_qat_init(RDSRN(**SMALL), str(tmp_path / "x2.safetensors"))
    save_weights(tmp_path / "x4.safetensors", RDSRN(**SMALL), {})
    check_qat_init(RDSRN(**SMALL), str(tmp_path / "x4.safetensors"))  # fits: no error


TINY = dict(channels=8, hr_channels=4, wide=1)


def _tiny_qat_setup(tmp_path: Path, images: int, side: int) -> tuple[Path, list[str]]:
    """A folder of `images` random side x side training PNGs and tiny FP32 x4 weights to
    start QAT from; returns (folder, the `--set` overrides every tiny QAT run shares)."""
    import cv2

    from rdsrn.weights import save_weights

    torch.set_num_threads(1)
    data = tmp_path / "train"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(images):
        img = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (side, side))
        cv2.imwrite(str(data / f"i{i}.png"), img)
    init = tmp_path / "fp32.safetensors"
    torch.manual_seed(0)
    save_weights(init, RDSRN(scale=4, **TINY), {})
    return data, [f"train_dirs=[{data}]", f"cache_dir={tmp_path / 'cache'}",
                  f"init_from={init}", "model_args={channels: 8, hr_channels: 4, wide: 1}",
                  "patch_size=8", "batch_size=2", "threads=1", "max_minutes=0"]


def test_qat_training_run_saves_plain_weights_with_ranges(tmp_path: Path) -> None:
    """Two QAT steps through the Trainer: ranges calibrated, weights move, the saved
    .safetensors is a plain RDSRN state dict plus the "qat" metadata; resumable."""
    from rdsrn.training.config import load_config
    from rdsrn.training.trainer import Trainer
    from rdsrn.weights import load_state

    data, common = _tiny_qat_setup(tmp_path, images=3, side=280)
    sets = [common[0], f"out_dir={tmp_path / 'run'}", *common[1:], f"val_dir={data}",
            "iterations=2", "val_every=2", "ckpt_every=1", "qat={calib_patches: 2}"]
    cfg = load_config("rdsrn_x4_qat", sets)
    t = Trainer(cfg, progress=False)
    assert isinstance(t.model, QATRDSRN)
    t.fit()
    state, meta = load_state(tmp_path / "run" / "best.safetensors")
    assert "qat" in meta and len(meta["qat"]["ranges"]) == len(point_names(3))
    assert set(state) == set(RDSRN(scale=4, **TINY).state_dict())
    resumed = Trainer(load_config("rdsrn_x4_qat", sets + ["iterations=3"]), resume=True,
                      progress=False)
    assert resumed.iteration == 2 and isinstance(resumed.model, QATRDSRN)
    assert torch.equal(resumed.model.act_log_scale, t.model.act_log_scale)
    with pytest.raises(UserError, match="qat.bogus"):
        Trainer(load_config("rdsrn_x4_qat", sets[:1] + [f"out_dir={tmp_path / 'r2'}"]
                            + sets[2:] + ["qat={bogus: 1}"]), progress=False)


def test_distill_targets_the_fp32_start_model(tmp_path: Path) -> None:
    """qat.distill: the loss is against the frozen FP32 start model, so with every layer
    group kept float the first loss is ~0 (HR targets give a clear loss); the teacher
    stays frozen while the student trains; a non-bool value is a one-line error."""
    from rdsrn.quant.groups import GROUPS
    from rdsrn.training.config import load_config
    from rdsrn.training.trainer import Trainer

    _, common = _tiny_qat_setup(tmp_path, images=2, side=264)
    base = [*common, "iterations=3", "val_every=0"]
    groups = ", ".join(GROUPS)

    def trainer(name: str, qat: str) -> Trainer:
        cfg = load_config("rdsrn_x4_qat", base + [f"out_dir={tmp_path / name}", f"qat={qat}"])
        return Trainer(cfg, progress=False)

    floating = trainer("f", f"{{calib_patches: 2, float_groups: [{groups}], distill: true}}")
    assert floating.teacher is not None
    assert float(floating.train_step()) < 1e-5
    hr_target = trainer("h", f"{{calib_patches: 2, float_groups: [{groups}]}}")
    assert hr_target.teacher is None and float(hr_target.train_step()) > 1e-3

    quant = trainer("q", "{calib_patches: 2, distill: true}")
    before = {k: v.clone() for k, v in quant.teacher.state_dict().items()}
    start = quant.model.m.shallow1.weight.detach().clone()
    assert float(quant.train_step()) > 0
    quant.train_step()
    assert all(torch.equal(v, quant.teacher.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(start, quant.model.m.shallow1.weight)
    with pytest.raises(UserError, match="qat.distill"):
        trainer("bad", "{distill: 1}")


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    from rdsrn.cli import main as cli_main

    code = cli_main(["export", "--format", "onnx", "--precision", "int8", "--calib",
                     str(tmp_path), "--keep-float", "hfrrb,nonsense", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown layer group 'nonsense'" in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())
    # --qat from FP32-only weights (the shipped rdsrn_x2 has no QAT ranges)
    from rdsrn.weights import weights_path

    if weights_path("rdsrn_x2").is_file():
        calib = tmp_path / "calib"
        calib.mkdir()
        code = cli_main(["export", "--model", "rdsrn_x2", "--format", "onnx", "--precision",
                         "int8", "--calib", str(calib), "--qat", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("anchor", [False, True])
def test_tflite_file_takes_the_qat_grids(data_dir: Path, anchor: bool) -> None:
    """apply_tflite_ranges writes every QAT point's grid into the converted INT8 TFLite
    graph (TFLite int8 = uint8 zero point - 128), keeps concatenations on one grid and
    the sigmoid at 1/256, requantizes the biases, and the file then computes as coarsely
    as the fake-quant model instead of as the calibrated file. With the anchor skip the
    residual has its QAT grid and the output ADD saturates on the pixel grid."""
    from rdsrn.export.tflite_output import align_output_clamp
    from rdsrn.export.parity import compare, tflite_runner, torch_runner
    from rdsrn.export.qat_tflite import _int8_values, _op_names, apply_tflite_ranges
    from rdsrn.export.tf_twin import twin_from_torch
    from rdsrn.export.tflite_export import convert
    from tensorflow.lite.tools import flatbuffer_utils as fbu

    src = small_source(anchor=anchor)
    q, calib = _calibrated(src.model, data_dir)
    with torch.no_grad():  # move the ranges away from what the converter calibrates
        q.act_log_scale.add_(math.log(3.0))
    data = convert(twin_from_torch(src.model, clamp=True, fused_clamp=True), "int8", calib=calib)
    if anchor:
        data, aligned = align_output_clamp(data)
        assert aligned
    crops = crop_inputs(data_dir, [(20, 20), (17, 23)])
    new, info = apply_tflite_ranges(data, q, crops[0])
    assert info["points"] == len(point_names(SMALL["recursions"], anchor)) and info["biases"] > 0
    model = fbu.convert_bytearray_to_object(bytearray(new))
    graph, kinds = model.subgraphs[0], _op_names(model)
    quant = lambda t: (float(graph.tensors[t].quantization.scale[0]),  # noqa: E731
                       int(graph.tensors[t].quantization.zeroPoint[0]))
    scales = {round(r["scale"], 9) for r in q.ranges().values()}
    live = _int8_values(new, crops[0])
    for op, kind in zip(graph.operators, kinds):
        out = int(op.outputs[0])
        if kind == "CONCATENATION":
            assert {quant(int(t)) for t in list(op.inputs) + [out]} == {quant(out)}
            copies = len({int(t) for t in op.inputs}) == 1  # the anchor's upsampling
            assert round(quant(out)[0], 9) in scales or (anchor and copies
                                                        and math.isclose(quant(out)[0], 1 / 255, rel_tol=1e-6)
                                                        and quant(out)[1] == -128)
        if kind == "LOGISTIC":
            assert quant(out) == (1 / 256, -128)
        if kind == "CONV_2D" and out in live and graph.tensors[out].shape[-1] != 3:
            x, w, b = (int(i) for i in op.inputs[:3])
            want = quant(x)[0] * np.asarray(graph.tensors[w].quantization.scale, np.float64)
            assert np.allclose(graph.tensors[b].quantization.scale, want, rtol=1e-6)
            assert round(quant(out)[0], 9) in scales
    ref = torch_runner(src.model)
    p_fq, p_after, p_before = (compare(r, ref, crops)["psnr_vs_torch"]
                               for r in (torch_runner(q), tflite_runner(new), tflite_runner(data)))
    assert abs(p_after - p_fq) < 1.5 and p_before - p_after > 3


def test_learned_ranges_train_and_tie(data_dir: Path) -> None:
    """With learn_ranges the log-scales and zero points get their own Adam groups and
    move; tied points (a concatenation and its inputs) keep one range; the sigmoid grid
    stays fixed."""
    from rdsrn.quant.qat import tied_points

    src = small_source()
    q, calib = _calibrated(src.model, data_dir)
    q.train()
    groups = q.optimizer_groups(1e-4, 1e-2, 0.5)
    assert [g["lr"] for g in groups] == [1e-4, 1e-2, 0.5]
    opt = torch.optim.Adam(groups)
    before = q.act_log_scale.detach().clone()
    x = torch.from_numpy(calib.nchw()[:2])
    for _ in range(2):
        opt.zero_grad()
        q(x).sub(torch.nn.functional.interpolate(x, scale_factor=4)).abs().mean().backward()
        opt.step()
    assert not torch.equal(before, q.act_log_scale.detach())
    r = q.ranges()
    for group in tied_points(SMALL["recursions"]):
        assert len({(r[n]["scale"], r[n]["zero_point"]) for n in group}) == 1
    assert r["r1.cca.sigmoid"] == {"scale": 1 / 256, "zero_point": 0}
    frozen = QATRDSRN(src.model, learn_ranges=False)
    assert len(frozen.optimizer_groups(1e-4, 1e-2, 0.5)) == 1


def test_ship_keeps_qat_and_fp32_weights_apart(data_dir: Path, tmp_path: Path) -> None:
    """QAT weights ship only as <model>_qat and FP32 weights never under that name: a
    one-line error before any evaluation, nothing written."""
    from rdsrn.quant.qat import qat_metadata
    from rdsrn.training.ship import ship
    from rdsrn.weights import WEIGHTS_DIR, save_weights

    torch.manual_seed(0)
    m = RDSRN(**SMALL)
    q = QATRDSRN(m).eval()
    before = sorted(p.name for p in WEIGHTS_DIR.iterdir())
    for sub, meta in (("qat", {"qat": qat_metadata(q)}), ("fp32", {})):
        run = tmp_path / sub
        run.mkdir()
        save_weights(run / "best.safetensors", m,
                     {"model": "rdsrn_x4", "config": m.config, "recipe": {}, **meta})
        wrong = "rdsrn_x4" if sub == "qat" else "rdsrn_x4_qat"
        with pytest.raises(UserError, match=f"--name {wrong}"):
            ship(run, wrong, "best", data_dir, "")
    assert sorted(p.name for p in WEIGHTS_DIR.iterdir()) == before


def test_weights_only_and_activations_only_switches(data_dir: Path, tmp_path: Path) -> None:
    """int8_sensitivity's split rows: quantizing only weights or only activations each
    changes the output, both off is the float model (up to the fixed output grid), and
    the CLI writes the two rows."""
    import json

    from rdsrn.export import int8_sensitivity

    torch.manual_seed(0)
    q, calib = _calibrated(RDSRN(**SMALL), data_dir)
    x = torch.from_numpy(calib.nchw()[:2])
    with torch.no_grad():
        full = q(x)
        q.quant_acts = False
        w_only = q(x)
        q.quant_acts, q.quant_weights = True, False
        a_only = q(x)
        q.quant_acts = False
        neither = q(x)
        q.mode = "float"
        ref = q(x).clamp(0, 1)
    assert not torch.equal(w_only, full) and not torch.equal(a_only, full)
    assert not torch.equal(w_only, a_only)
    assert (neither - ref).abs().max() <= 0.5 / 255 + 1e-6

    out = tmp_path / "sens.md"
    labels = ";".join([*int8_sensitivity.SPLITS, int8_sensitivity.WIDE])
    assert int8_sensitivity.main(["--model", "rdsrn_x4", "--datasets", "Set5", "--calib-n", "2",
                                  "--threads", "1", "--only", f"all INT8;{labels}",
                                  "--out", str(out)]) == 0
    rows = {r["variant"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert set(rows) == {"all INT8", *int8_sensitivity.SPLITS, int8_sensitivity.WIDE}
    assert all(r["Set5_delta"] < 0 for r in rows.values())
    assert rows["all INT8"]["Set5_delta"] < rows["weights INT8, activations float"]["Set5_delta"]
    assert rows["all INT8"]["Set5_delta"] < rows[int8_sensitivity.WIDE]["Set5_delta"]


def test_pair_safe_qat_from_qat_weights(tmp_path: Path) -> None:
    """qat.weight_rule: pair_safe trains on the ONNX files' weight grids and is recorded in
    the metadata; qat.init_ranges starts from the init weights' learned ranges instead of
    calibrating; both are checked."""
    from rdsrn.quant.qat import QATRDSRN, qat_from_metadata, qat_metadata
    from rdsrn.training.config import load_config
    from rdsrn.training.trainer import Trainer
    from rdsrn.weights import save_weights

    _, common = _tiny_qat_setup(tmp_path, images=2, side=264)
    m = RDSRN(scale=4, **TINY)
    q = QATRDSRN(m)
    with torch.no_grad():
        q.act_log_scale.fill_(math.log(0.02))
    init = tmp_path / "qat.safetensors"
    save_weights(init, m, {"qat": qat_metadata(q)})
    sets = [*common, f"init_from={init}", "iterations=1", "val_every=0"]
    t = Trainer(load_config("rdsrn_x4_qat", sets + [f"out_dir={tmp_path / 'a'}",
                "qat={weight_rule: pair_safe, init_ranges: true}"]), progress=False)
    assert t.model.weight_rule == "pair_safe"
    got, want = t.model.ranges(), q.ranges()
    assert got.keys() == want.keys() and all(
        got[k]["zero_point"] == want[k]["zero_point"]
        and math.isclose(got[k]["scale"], want[k]["scale"], rel_tol=1e-6) for k in got)
    meta = qat_metadata(t.model)
    assert meta["weight_rule"] == "pair_safe"
    assert qat_from_metadata(RDSRN(scale=4, **TINY), {"qat": meta}, "x").weight_rule == "pair_safe"
    for bad, match in (("{weight_rule: seven_bit}", "qat.weight_rule"),
                       ("{init_ranges: true, equalize: true}", "exclude each other")):
        with pytest.raises(UserError, match=match):
            Trainer(load_config("rdsrn_x4_qat", sets + [f"out_dir={tmp_path / 'b'}",
                                                        f"qat={bad}"]), progress=False)
