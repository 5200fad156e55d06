"""Named sets of benchmark cases (`rdsrn bench --suite NAME`). Pure Python.

formats  RDSRN x4 in every format and precision (PyTorch fp32/bf16, ONNX Runtime
         fp32/int8, TFLite fp32/fp16/int8 on XNNPACK), the bicubic floor, and the
         runtime layer end to end (Upscaler rows) to measure its overhead; 1 thread
         and all cores; 320x180 -> 1280x720.
table1   The paper's Table I settings (R = 1/3/9 at CSR 0.5; CSR 0.25/0.75 at R = 3):
         PyTorch fp32, TFLite fp32 and int8, all cores.
table2   The paper's Table II networks (SRCNN, CARN, IMDN, RDN, RDSRN): PyTorch fp32,
         ONNX Runtime fp32 and int8 (+ TFLite for RDSRN), all cores.
full     formats + table1 + table2 (what `rdsrn bench --suite full` runs).
quick    A smoke run: RDSRN PyTorch fp32, ONNX fp32 and bicubic on 80x45, few runs.
device   The bundled x4 model files (runtimes/models/) that an installed runtime can run,
         and bicubic; 1 thread and all cores. Needs no torch: what a device measures.
"""

from __future__ import annotations

from .harness import Case

SUITES = ("quick", "formats", "table1", "table2", "full", "device")
PAPER_INPUT = (180, 320)  # LR (H, W): 320x180 -> 1280x720 at x4

TABLE1_SETTINGS: tuple[tuple[int, float], ...] = (
    (1, 0.5), (3, 0.5), (9, 0.5), (3, 0.25), (3, 0.75))
TABLE2_MODELS = ("srcnn_x4", "carn_x4", "imdn_x4", "rdn_x4", "rdsrn_x4")


def _thread_list(cores: int) -> list[int]:
    return sorted({1, max(1, cores)})


def formats_cases(cores: int, input_hw=PAPER_INPUT) -> list[Case]:
    cases = []
    for threads in _thread_list(cores):
        for fmt, prec in (("pytorch", "fp32"), ("pytorch", "bf16"), ("onnx", "fp32"),
                          ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "fp16"),
                          ("tflite", "int8")):
            cases.append(Case("rdsrn_x4", fmt, prec, threads, input_hw))
        for prec in ("fp32", "int8"):
            cases.append(Case("rdsrn_x4", "upscaler", prec, threads, input_hw,
                              label="rdsrn_x4 (Upscaler)", via="tflite"))
        cases.append(Case("bicubic", "bicubic", "uint8", threads, input_hw))
    return cases


def table1_cases(cores: int, input_hw=PAPER_INPUT) -> list[Case]:
    cases = []
    for r, csr in TABLE1_SETTINGS:
        label = f"rdsrn_x4 R={r} CSR={csr}"
        overrides = {} if (r, csr) == (3, 0.5) else {"recursions": r, "csr": csr}
        for fmt, prec in (("pytorch", "fp32"), ("tflite", "fp32"), ("tflite", "int8")):
            cases.append(Case("rdsrn_x4", fmt, prec, cores, input_hw, overrides, label=label))
    return cases


def table2_cases(cores: int, input_hw=PAPER_INPUT) -> list[Case]:
    cases = []
    for name in TABLE2_MODELS:
        combos = [("pytorch", "fp32"), ("onnx", "fp32"), ("onnx", "int8")]
        if name.startswith("rdsrn"):
            combos += [("tflite", "fp32"), ("tflite", "int8")]
        for fmt, prec in combos:
            cases.append(Case(name, fmt, prec, cores, input_hw))
    cases.append(Case("bicubic", "bicubic", "uint8", cores, input_hw))
    return cases


def quick_cases(cores: int) -> list[Case]:
    hw = (45, 80)
    return [Case("rdsrn_x4", "pytorch", "fp32", cores, hw),
            Case("rdsrn_x4", "onnx", "fp32", cores, hw),
            Case("bicubic", "bicubic", "uint8", cores, hw)]


def device_artifacts(scale: int = 4) -> list:
    """The bundled x`scale` model files whose runtime is installed (paths, by name)."""
    from rdsrn.runtimes.bundled import bundled_models, runtime_available

    return [p for p in bundled_models() if p.name.startswith(f"rdsrn_x{scale}_")
            and runtime_available(p.suffix[1:])]


def device_cases(cores: int, input_hw=PAPER_INPUT) -> list[Case]:
    """The device suite by file name (rdsrn_x4_{precision}[_float-GROUPS].{onnx,tflite}:
    a mixed file counts as int8, its label tells it apart); `rdsrn bench` builds the same
    rows from each file's embedded metadata instead."""
    cases = []
    for threads in _thread_list(cores):
        for path in device_artifacts():
            precision = path.stem.split("_")[2]
            cases.append(Case("rdsrn_x4", path.suffix[1:], precision,
                              threads, input_hw, artifact=str(path), label=path.name))
        cases.append(Case("bicubic", "bicubic", "uint8", threads, input_hw))
    return cases


def _dedupe(cases: list[Case]) -> list[Case]:
    seen, out = set(), []
    for c in cases:
        key = (c.model, tuple(sorted(c.overrides.items())), c.format, c.precision,
               c.threads, c.input_hw, c.via if c.format == "upscaler" else "")
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def suite_cases(name: str, cores: int) -> list[Case]:
    if name == "quick":
        return quick_cases(cores)
    if name == "formats":
        return formats_cases(cores)
    if name == "table1":
        return table1_cases(cores)
    if name == "table2":
        return table2_cases(cores)
    if name == "full":
        return _dedupe(formats_cases(cores) + table1_cases(cores) + table2_cases(cores))
    if name == "device":
        return device_cases(cores)
    raise ValueError(f"unknown suite {name!r}; choices: {', '.join(SUITES)}")
