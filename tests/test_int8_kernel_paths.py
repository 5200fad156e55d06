"""INT8 on every CPU kernel path: pair-safe ONNX weights (checked by a numpy model of the
saturating x86 kernel, so on any host), the static bound the exporter gates on, CPU
feature detection, the per-CPU default file and the warning for a forced inexact file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rdsrn.runtimes import bundled
from rdsrn.runtimes.bundled import MODELS_DIR, default_choice
from rdsrn.runtimes.cpu import KERNEL_PATHS, cpu_features, kernel_path
from rdsrn.runtimes.errors import UserError

INT8_ONNX = sorted(MODELS_DIR.glob("*_int8*.onnx"))


def saturating_u8s8(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """What onnxruntime's U8S8 GEMM computes on x86 without VNNI: a (N, K) uint8 times
    w (K, M) int8, each pair of products along K (vpmaddubsw) clamped to int16, then the
    pairs summed in int32."""
    k = a.shape[1] + a.shape[1] % 2
    a = np.pad(a.astype(np.int32), ((0, 0), (0, k - a.shape[1])))
    w = np.pad(w.astype(np.int32), ((0, k - w.shape[0]), (0, 0)))
    pairs = a[:, 0::2, None] * w[None, 0::2] + a[:, 1::2, None] * w[None, 1::2]
    return np.clip(pairs, -32768, 32767).sum(axis=1)


def _int8_weights(w: torch.Tensor, rule: str) -> np.ndarray:
    from rdsrn.quant.qat import weight_scales

    s = weight_scales(w, rule)
    return torch.clamp(torch.round(w / s.view(-1, 1, 1, 1)), -127, 127).to(torch.int8).numpy()


def test_pair_safe_weights_never_saturate_the_int16_kernel() -> None:
    """max|w|/127 weights saturate the emulated kernel on bright inputs; pair-safe weights of
    the same convs compute the exact int32 result for every input, including all-255."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 16, 3, 3, generator=g)
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.integers(0, 256, (64, 144)), np.full((1, 144), 255)]).astype(np.uint8)
    results = {}
    for rule in ("max", "pair_safe"):
        q = _int8_weights(w, rule).reshape(32, -1).T  # (K, M), any K order
        exact = a.astype(np.int64) @ q.astype(np.int64)
        results[rule] = np.array_equal(saturating_u8s8(a, q), exact)
        if rule == "pair_safe":
            for perm in (rng.permutation(q.shape[0]) for _ in range(3)):  # any pairing
                assert np.array_equal(saturating_u8s8(a[:, perm], q[perm]), exact)
    assert results == {"max": False, "pair_safe": True}


def test_pair_safe_scales() -> None:
    from rdsrn.quant.qat import PAIR_SUM_LIMIT, fq_weight, weight_scales

    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    w[0] = 0.0
    w[0, 0, 0, 0] = 2.0  # one dominant weight: the plain grid is already safe
    plain, safe = weight_scales(w, "max"), weight_scales(w, "pair_safe")
    assert torch.all(safe >= plain) and safe[0] == pytest.approx(float(plain[0]))
    q = _int8_weights(w, "pair_safe").reshape(8, -1).astype(np.int64)
    top2 = lambda x: -np.sort(-x, axis=1)[:, :2].sum(axis=1)  # noqa: E731
    assert top2(np.maximum(q, 0)).max() <= PAIR_SUM_LIMIT
    assert top2(np.maximum(-q, 0)).max() <= PAIR_SUM_LIMIT
    assert torch.allclose(fq_weight(w, "pair_safe"),
                          torch.from_numpy(q.reshape(w.shape)).float()
                          * safe.view(-1, 1, 1, 1), atol=1e-6)
    with pytest.raises(ValueError, match="unknown weight rule"):
        weight_scales(w, "seven_bit")


@pytest.mark.parametrize("path", INT8_ONNX, ids=lambda p: p.name)
def test_bundled_int8_onnx_is_pair_safe(path: Path) -> None:
    """The static proof, from the file's own int8 weights, and the record in its metadata."""
    import onnx

    from rdsrn.export.saturation import pair_bound

    model = onnx.load(str(path))
    bound = pair_bound(model)
    assert bound["convs"] > 50 and bound["safe"], bound
    meta = json.loads({p.key: p.value for p in model.metadata_props}["rdsrn"])
    assert meta["quantization"]["pair_bound"]["safe"] is True


def test_pair_bound_catches_a_saturating_file() -> None:
    """A file whose weights can saturate is caught on any host, and the gate refuses it."""
    import onnx
    from onnx import numpy_helper

    from rdsrn.export.common import GateError
    from rdsrn.export.onnx_export import gate_pair_bound
    from rdsrn.export.saturation import pair_bound

    model = onnx.load(str(MODELS_DIR / "rdsrn_x4_int8.onnx"))
    w = next(i for i in model.graph.initializer if i.name.endswith(".weight_quantized"))
    arr = numpy_helper.to_array(w).copy()
    arr.flat[:2] = 100  # two weights of one sign in one channel: 255 * 200 > 32767
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    bound = pair_bound(model)
    assert not bound["safe"] and bound["worst_pair_sum"] == 255 * 200
    with pytest.raises(GateError, match="saturation gate failed"):
        gate_pair_bound(bound, "x.onnx")


@pytest.mark.parametrize("machine, flags, expected", [
    ("x86_64", {"avx2"}, "x86-avx2"),
    ("x86_64", {"avx2", "avx512f", "avx512bw"}, "x86-avx512"),
    ("x86_64", {"avx2", "avx512bw", "avx512_vnni"}, "x86-vnni"),
    ("x86_64", {"avx2", "avx_vnni"}, "x86-vnni"),
    ("x86_64", {"avx2", "avx512bw", "avx512_vnni", "amx_int8"}, "x86-amx"),
    ("x86_64", {"sse4_1"}, "x86-sse"),
    ("aarch64", {"asimd"}, "arm64-neon"),
    ("aarch64", {"asimd", "asimddp"}, "arm64-dotprod"),
    ("aarch64", {"asimd", "asimddp", "i8mm"}, "arm64-i8mm"),
    ("aarch64", {"asimd", "asimddp", "i8mm", "sve", "sve2"}, "arm64-sve"),
    ("riscv64", set(), "unknown"),
])
def test_kernel_path(machine: str, flags: set[str], expected: str) -> None:
    assert kernel_path(machine, flags) == expected and expected in KERNEL_PATHS


def test_cpu_features_agree_with_the_os() -> None:
    """On a real (not emulated) Linux host, what CPUID / getauxval report gives the same
    kernel path as the flags the kernel lists in /proc/cpuinfo."""
    from rdsrn.runtimes.cpu import _proc_cpuinfo_flags

    machine, features, source = cpu_features()
    os_flags = _proc_cpuinfo_flags()
    if not os_flags or machine not in ("x86_64", "aarch64"):
        pytest.skip("no /proc/cpuinfo flags on this platform")
    assert source in ("cpuid", "getauxval", "/proc/cpuinfo")
    assert kernel_path(machine, features) == kernel_path(machine, os_flags)


@pytest.mark.parametrize("kp, installed, expected", [
    ("x86-avx2", {"onnx", "tflite"}, "rdsrn_x4_int8.onnx"),
    ("x86-avx512", {"onnx", "tflite"}, "rdsrn_x4_int8.onnx"),
    ("x86-vnni", {"onnx", "tflite"}, "rdsrn_x4_int8.tflite"),
    ("x86-amx", {"onnx", "tflite"}, "rdsrn_x4_int8.tflite"),
    ("arm64-neon", {"onnx", "tflite"}, "rdsrn_x4_int8.tflite"),
    ("arm64-sve", {"onnx", "tflite"}, "rdsrn_x4_int8.tflite"),
    ("unknown", {"onnx", "tflite"}, "rdsrn_x4_int8.onnx"),
    ("x86-avx2", {"tflite"}, "rdsrn_x4_int8.tflite"),
    ("x86-amx", {"onnx"}, "rdsrn_x4_int8.onnx"),
])
def test_default_follows_the_cpu(monkeypatch, kp: str, installed: set[str],
                                 expected: str) -> None:
    monkeypatch.setattr(bundled, "runtime_available", lambda fmt: fmt in installed)
    monkeypatch.setenv("RDSRN_KERNEL_PATH", kp)
    path, got_kp, why = default_choice(4)
    assert (path.name, got_kp) == (expected, kp) and why and "\n" not in why
    assert bundled.resolve_model(None).name == expected
    if kp == "unknown":
        assert "conservative" in why


def test_kernel_path_override_is_checked(monkeypatch) -> None:
    monkeypatch.setenv("RDSRN_KERNEL_PATH", "x86-avx3")
    with pytest.raises(UserError, match="RDSRN_KERNEL_PATH='x86-avx3': not a kernel path"):
        default_choice(4)


@pytest.fixture(scope="module")
def not_pair_safe(tmp_path_factory) -> Path:
    """The bundled x4 INT8 ONNX with the pair-safe record removed from its metadata (as
    files exported before pair-safe weights carry none)."""
    import onnx

    model = onnx.load(str(MODELS_DIR / "rdsrn_x4_int8.onnx"))
    prop = next(p for p in model.metadata_props if p.key == "rdsrn")
    meta = json.loads(prop.value)
    del meta["quantization"]["pair_bound"]
    prop.value = json.dumps(meta)
    out = tmp_path_factory.mktemp("old") / "old_x4_int8.onnx"
    onnx.save(model, str(out))
    return out


def test_forced_inexact_file_runs_with_one_warning(monkeypatch, not_pair_safe: Path) -> None:
    from rdsrn.runtimes import InexactOnThisCPU, Upscaler

    monkeypatch.setenv("RDSRN_KERNEL_PATH", "x86-avx2")
    with pytest.warns(InexactOnThisCPU, match=r"not exact on this CPU \(x86-avx2\).*0\.8 dB.*"
                                              r"the exact default here is rdsrn_x4_int8"):
        up = Upscaler(not_pair_safe, threads=1)
    assert up.upscale(np.zeros((8, 8, 3), np.uint8)).shape == (32, 32, 3)  # it still runs
    monkeypatch.setenv("RDSRN_KERNEL_PATH", "x86-vnni")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactOnThisCPU)
        Upscaler(not_pair_safe, threads=1)  # exact there: no warning
        monkeypatch.setenv("RDSRN_KERNEL_PATH", "x86-sse")
        Upscaler(not_pair_safe, threads=1)  # SSE2 kernels: int16 x int16 pairs in int32
        monkeypatch.setenv("RDSRN_KERNEL_PATH", "x86-avx2")
        Upscaler("rdsrn_x4_int8.onnx", threads=1)  # pair-safe: exact everywhere


def test_upscale_cli_says_it_in_one_line(monkeypatch, capsys, tmp_path: Path,
                                         not_pair_safe: Path) -> None:
    import cv2

    from test_upscale_cli import upscale_main

    img = tmp_path / "in.png"
    cv2.imwrite(str(img), np.full((12, 10, 3), 90, np.uint8))
    monkeypatch.setenv("RDSRN_KERNEL_PATH", "x86-avx2")
    assert upscale_main([str(img), "-o", str(tmp_path / "a"), "--model", str(not_pair_safe),
                         "-q"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rdsrn upscale: warning: old_x4_int8.onnx is "
                                               "not exact on this CPU (x86-avx2)")
    monkeypatch.setenv("RDSRN_KERNEL_PATH", "unknown")
    monkeypatch.setattr(bundled, "runtime_available", lambda fmt: fmt == "onnx")
    assert upscale_main([str(img), "-o", str(tmp_path / "b"), "-q"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rdsrn upscale: note: rdsrn_x4_int8.onnx: " + bundled.DEFAULT_WHY["unknown"]]


def test_matrix_verdicts(tmp_path: Path) -> None:
    """int8_paths.summarize: the native run covers every image and is gated; an emulated
    subset is ok by being bit-identical to it, or (est.) by differing by rounding only
    (<= 0.05 dB an image) with the native margin left; a saturating loss (0.48 dB) or a
    failed runner is not ok."""
    from rdsrn.benchmarks.int8_paths import summarize

    ref = {"Set5/a": 30.0, "Set5/b": 32.0, "BSD68/c": 28.0}
    seen = {"kernel_path": "x86-avx2", "features": ["avx2"], "versions": {}}
    img = np.full((4, 4, 3), 100, np.uint8)

    def row(psnr, sha, shift=0):
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.npz"
        np.savez(out, **{k: img + np.uint8(shift) for k in psnr})
        return {"status": "ok", "scale": 4, "seen": seen, "psnr": psnr, "sr_sha256": sha,
                "outputs": str(out)}

    native = row({"Set5/a": 29.99, "Set5/b": 31.98, "BSD68/c": 27.99},
                 {"Set5/a": "1", "Set5/b": "2", "BSD68/c": "3"})
    results = {"native": {"f.onnx": native},
               "qemu-avx2": {"f.onnx": row({"Set5/a": 29.99}, {"Set5/a": "1"})},
               "qemu-a72": {"f.onnx": row({"Set5/a": 29.98}, {"Set5/a": "8"}, shift=7)},
               "qemu-a76": {"f.onnx": row({"Set5/b": 31.5}, {"Set5/b": "9"}, shift=59)},
               "qemu-a53": {"f.onnx": {"status": "failed", "error": "no CPU"}}}
    rows = {r["runner"]: r for r in summarize(results, {4: {"psnr": ref}}, {4: 0.05})}
    assert rows["native"]["ok"] and rows["native"]["Set5"]["delta"] == -0.015
    assert rows["qemu-avx2"]["same_as_native"] and rows["qemu-avx2"]["ok"]
    assert rows["qemu-a72"]["max_diff_vs_native"] == 7 and rows["qemu-a72"]["estimated"]
    assert rows["qemu-a72"]["ok"]  # -0.015 native, -0.01 vs native: within 0.05
    assert rows["qemu-a76"]["max_diff_vs_native"] == 59 and not rows["qemu-a76"]["ok"]
    assert rows["qemu-a76"]["delta_vs_native"] == -0.48
    assert not rows["qemu-a53"]["ok"]
    tight = {r["runner"]: r for r in summarize(results, {4: {"psnr": ref}}, {4: 0.02})}
    assert tight["native"]["ok"] and not tight["qemu-a72"]["ok"]  # -0.015 - 0.01 < -0.02
