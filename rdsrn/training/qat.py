"""The training side of quantization-aware fine-tuning: the `qat` config section.

`qat: {calib_patches: 32}` in a config (rdsrn/configs/rdsrn_x4_qat.yaml) makes the
Trainer wrap its model in `rdsrn.quant.qat.QATRDSRN` after loading `init_from` (which
must be FP32 weights of exactly this architecture and scale), calibrate the activation
ranges by min/max on LR patches (64x64, as the exporters) of the training images, and then fine-tune weights and
ranges together. Validation runs the fake-quant model; the saved .safetensors hold the
plain RDSRN weights with the learned ranges under the metadata key "qat".

`qat: {distill: true}` trains against the FP32 start model's output instead of the HR
patch (`teacher`): at the start the loss is then the quantization error alone, so
the fine-tuning moves the weights only to absorb it instead of also drifting on noisy small-batch HR
targets (what cost the x2 float forward 0.12 dB; benchmarks/results/qat.md).

`qat: {equalize: true}` first rescales the FP32 weights' feature streams channel by
channel (cross-layer equalization, `rdsrn.quant.equalize`; the float function is
unchanged) so that their per-tensor 8-bit grids fit every channel, and then calibrates.
The saved weights are the equalized ones: a plain RDSRN like any other.

`quant_noise: s` (a top-level config key, FP32 training, bf16 allowed) wraps the model in
the same `QATRDSRN` in mode "noise": every activation point gets uniform noise s 8-bit
steps wide, the step being that tensor's per-batch (max - min) / 255, so training learns
to absorb the rounding noise that min/max 8-bit grids will add. Unlike QAT it runs at
bf16 speed with a full learning rate and batch, so a long fine-tune can reshape the
streams; validation and the saved weights are the plain float model (QAT follows, as
for any FP32 weights).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from rdsrn.runtimes.errors import UserError

CALIB_PATCH_LR = 64  # LR side of a calibration patch, as the INT8 exporters use
QAT_KEYS = {"calib_patches": int, "float_groups": list, "learn_ranges": bool,
            "range_lr": float, "zp_lr": float, "distill": bool, "equalize": bool,
            "weight_rule": str, "init_ranges": bool}
# With learn_ranges: Adam steps of the log-scales (relative range change per step) and of
# the zero points (uint8 codes per step), before the schedule's warm-up/decay factor.
DEFAULT_RANGE_LR = 1e-3
DEFAULT_ZP_LR = 0.05


def check_section(section: dict[str, Any]) -> dict[str, Any]:
    """Validate a config's `qat` mapping (unknown keys and wrong types are errors)."""
    from rdsrn.quant.groups import check_groups

    for key, value in section.items():
        if key not in QAT_KEYS:
            raise UserError(f"config key 'qat.{key}': unknown (qat keys: {', '.join(QAT_KEYS)})")
        if QAT_KEYS[key] is float and isinstance(value, int) and not isinstance(value, bool):
            value = section[key] = float(value)
        if not isinstance(value, QAT_KEYS[key]) or (isinstance(value, bool)
                                                      and QAT_KEYS[key] is not bool):
            raise UserError(f"config key 'qat.{key}': expected {QAT_KEYS[key].__name__}, "
                            f"got {type(value).__name__}")
    if section.get("calib_patches", 1) < 1:
        raise UserError("config key 'qat.calib_patches': must be >= 1")
    for key in ("range_lr", "zp_lr"):
        if not 0.0 <= section.get(key, 0.0) <= 1.0:
            raise UserError(f"config key 'qat.{key}': must be in [0, 1]")
    check_groups(section.get("float_groups", []), "qat.float_groups")
    from rdsrn.quant.qat import WEIGHT_RULES

    if section.get("weight_rule", "max") not in WEIGHT_RULES:
        raise UserError(f"config key 'qat.weight_rule': one of {', '.join(WEIGHT_RULES)}")
    if section.get("init_ranges") and section.get("equalize"):
        raise UserError("config keys 'qat.init_ranges' and 'qat.equalize' exclude each other "
                        "(equalizing changes the streams the learned ranges belong to)")
    return section


def calibration_batches(folders: list[str], scale: int, patch: int, n: int,
                        seed: int) -> list[torch.Tensor]:
    """`n` LR patches (side `patch`) of random HR crops of the training images, in
    batches of <= 8: float NCHW in [0, 1]."""
    from ..data import make_lr, read_image
    from .data import find_images, read_training_image

    files = find_images(folders)
    rng = np.random.default_rng(seed)
    side = patch * scale
    patches: list[np.ndarray] = []
    for i in rng.permutation(len(files)):
        img = read_training_image(files[int(i)], read_image)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        h, w = img.shape[:2]
        if h < side or w < side:
            continue
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        patches.append(make_lr(np.ascontiguousarray(img[y:y + side, x:x + side]), scale))
        if len(patches) == n:
            break
    if not patches:
        raise UserError(f"QAT calibration: no training image is at least {side}px on each side")
    arr = torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).float().div(255.0)
    return list(arr.split(8))


def prepare(model: nn.Module, cfg: Any, calibrate: bool,
            log: Callable[[str], None]) -> nn.Module:
    """The QAT model of `model` (already holding `cfg.init_from`), ranges calibrated
    unless `calibrate` is False (a resumed run loads them from its checkpoint)."""
    from rdsrn.models.rdsrn import RDSRN
    from rdsrn.quant.qat import QATRDSRN, check_qat_init

    section = check_section(dict(cfg.qat))
    if not cfg.init_from:
        raise UserError("qat: needs init_from (the FP32 weights to fine-tune; rdsrn train "
                        "--weights FILE)")
    if cfg.precision != "fp32":
        raise UserError(f"qat: precision must be fp32, not {cfg.precision!r} (bf16 cannot "
                        "hold the 256 levels of an 8-bit grid exactly)")
    if not isinstance(model, RDSRN):
        return _prepare_generic(model, cfg, section, calibrate, log)
    check_qat_init(model, cfg.init_from)
    equalize = section.get("equalize", False)
    batches: list[torch.Tensor] = []
    if (calibrate and not section.get("init_ranges")) or equalize:  # resume: checkpoint ranges
        device = next(model.parameters()).device
        batches = [b.to(device) for b in calibration_batches(
            cfg.train_dirs, model.scale, CALIB_PATCH_LR, section.get("calib_patches", 32),
            cfg.seed + 7)]
    q = QATRDSRN(model, section.get("float_groups", []), section.get("learn_ranges", True),
                 weight_rule=section.get("weight_rule", "max"))
    if equalize:
        # Also on resume (the checkpoint's weights replace these): the same data and
        # seed give the same record for the metadata.
        from rdsrn.quant.equalize import equalize as equalize_model, summary

        q.equalization = equalize_model(model, batches)
        log(f"qat: {summary(q.equalization)}")
    if calibrate and section.get("init_ranges"):
        from rdsrn.weights import load_state

        _, meta = load_state(cfg.init_from)
        if not isinstance(meta.get("qat"), dict):
            raise UserError(f"qat.init_ranges: {cfg.init_from} holds no QAT ranges")
        q.load_ranges(meta["qat"]["ranges"])
        log(f"qat: {len(q.points)} activation ranges from {cfg.init_from}")
    elif calibrate:
        seen = q.calibrate(batches)
        log(f"qat: {len(q.points)} activation ranges calibrated (min/max) on {seen} patches")
    return q


GENERIC_KEYS = ("calib_patches", "distill", "weight_rule")


def _prepare_generic(model: nn.Module, cfg: Any, section: dict[str, Any], calibrate: bool,
                     log: Callable[[str], None]) -> nn.Module:
    """Any other network: `rdsrn.quant.generic.FakeQuantNet` (pair-safe weights unless
    qat.weight_rule says otherwise; min/max activation grids, fixed)."""
    from rdsrn.quant.generic import FakeQuantNet

    extra = sorted(set(section) - set(GENERIC_KEYS))
    if extra:
        raise UserError(f"config key 'qat.{extra[0]}': RDSRN only; for {cfg.model} the qat "
                        f"keys are {', '.join(GENERIC_KEYS)}")
    try:
        q = FakeQuantNet(model, section.get("weight_rule", "pair_safe"))
    except ValueError as exc:
        raise UserError(f"qat: {exc}") from None
    if calibrate:
        device = next(model.parameters()).device
        seen = q.calibrate(b.to(device) for b in calibration_batches(
            cfg.train_dirs, model.scale, CALIB_PATCH_LR, section.get("calib_patches", 32),
            cfg.seed + 7))
        info = q.summary()
        log(f"qat: {info['int8_convs']} int8 convs ({info['weight_rule']} weights), "
            f"{info['activation_grids']} uint8 activation grids calibrated (min/max) on "
            f"{seen} patches")
    return q


def noise_model(model: nn.Module, cfg: Any) -> nn.Module:
    """`model` (an RDSRN) wrapped for `cfg.quant_noise` (see the module docstring)."""
    from rdsrn.quant.qat import QATRDSRN

    q = QATRDSRN(model, learn_ranges=False)
    q.mode = "noise"
    q.noise_scale = float(cfg.quant_noise)
    return q


def float_view(model: nn.Module) -> nn.Module:
    """The model validation judges: a quant-noise model's inner float RDSRN (what is
    saved), anything else unchanged."""
    from rdsrn.quant.qat import QATRDSRN

    return model.m if isinstance(model, QATRDSRN) and model.mode == "noise" else model


def teacher(model: nn.Module, cfg: Any) -> nn.Module | None:
    """A frozen FP32 copy of `model` (the `init_from` weights, before the QAT wrapper)
    when the config asks for `qat.distill`, else None."""
    import copy

    if not cfg.qat or not dict(cfg.qat).get("distill", False):
        return None
    t = copy.deepcopy(model).float().eval()
    t.requires_grad_(False)
    return t


@torch.no_grad()
def teacher_target(t: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    """The teacher's SR of `lr` (NCHW float in [0, 1]), clamped to [0, 1] as the
    fake-quant model's output is (not rounded: the student's output grid is 1/255)."""
    return t(lr).clamp_(0.0, 1.0)


def optimizer_groups(model: nn.Module, cfg: Any) -> list[dict[str, Any]] | list[nn.Parameter]:
    """Adam's parameter groups: a QAT model's ranges get their own learning rates
    (`qat.range_lr`, `qat.zp_lr`); any other model one group at `cfg.lr`."""
    from rdsrn.quant.qat import QATRDSRN

    if not isinstance(model, QATRDSRN):
        return list(model.parameters())
    section = dict(cfg.qat or {})
    return model.optimizer_groups(cfg.lr, section.get("range_lr", DEFAULT_RANGE_LR),
                                  section.get("zp_lr", DEFAULT_ZP_LR))


def weights_view(model: nn.Module, meta: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """(module to save, metadata): a QAT model saves its inner RDSRN with the learned
    ranges in meta["qat"]; any other model is returned unchanged."""
    from rdsrn.quant.generic import FakeQuantNet
    from rdsrn.quant.qat import QATRDSRN, qat_metadata

    if isinstance(model, FakeQuantNet):  # float weights; the exporter recalibrates grids
        meta = dict(meta)
        meta["recipe"] = {**meta.get("recipe", {}), "qat_weights": model.summary()}
        return model.m, meta
    if not isinstance(model, QATRDSRN):
        return model, meta
    meta = dict(meta)
    if model.mode == "noise":  # quant_noise: FP32 weights, no ranges
        meta["recipe"] = {**meta.get("recipe", {}), "quant_noise": model.noise_scale}
        return model.m, meta
    recipe: dict[str, Any] = {"from": meta.get("recipe", {}).get("init_from")}
    if model.equalization is not None:
        recipe["equalization"] = model.equalization
    meta["qat"] = qat_metadata(model, recipe)
    return model.m, meta
