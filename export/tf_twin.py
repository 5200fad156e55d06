"""A pure TensorFlow twin of RDSRN, built from the PyTorch weights, for TFLite export.

Why a twin and not a converter (onnx2tf, litert-torch): see issue 4 — those pin old
dependencies, rewrite files in place, lower PixelShuffle to 6-D transposes or keep float
I/O. The twin is a `tf.Module` of plain `tf.nn` ops whose `tf.function` takes NHWC
float32 RGB in [0, 1] with shape [1, None, None, 3], so one TFLite file serves any
size. It mirrors `rdsrn.models.rdsrn.RDSRN.forward` op for op:

- conv weights OIHW (PyTorch) -> HWIO (TensorFlow); 3x3 convs with padding 1 == "SAME";
- the recursive block's variables are created once and called R times, so the
  converter stores them once;
- PixelShuffle: PyTorch orders the up-sampling conv's output channels c*s*s + i*s + j
  (CRD), `tf.nn.depth_to_space` expects (i*s + j)*C + c (DCR); permuting that conv's
  output channels once makes one native DEPTH_TO_SPACE exact;
- optional clamp of the output to [0, 1] (the exported graphs clamp; see export/parity.py);
- the anchor skip (RDSRN(anchor=True)): nearest upsampling written as DEPTH_TO_SPACE of
  s*s copies of the input concatenated (DCR takes channel (i*s + j)*3 + c = c), two ops
  that XNNPACK runs in int8 on the input's grid, where RESIZE_NEAREST_NEIGHBOR is not
  delegated everywhere.

tests/test_export_tflite.py keeps the twin and the PyTorch model from drifting apart.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from rdsrn.models.rdsrn import LRELU_SLOPE, split_channels

# The eps inside the CCA's sqrt; must equal CCALayer.contrast's.
CCA_EPS = 1e-8


def crd_to_dcr(n_out: int, scale: int) -> np.ndarray:
    """Index array p with dcr_weights = crd_weights[p] (along the output channels).

    DCR channel (i*s + j)*C + c takes CRD channel c*s*s + i*s + j.
    """
    s2 = scale * scale
    c_out = n_out // s2
    dcr = np.arange(n_out)
    ij, c = dcr // c_out, dcr % c_out
    return c * s2 + ij


class _Conv(tf.Module):
    """A conv2d + bias from a PyTorch Conv2d's (OIHW weight, bias); stride 1, SAME."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, name: str) -> None:
        super().__init__(name=name.replace(".", "_"))
        self.w = tf.Variable(np.ascontiguousarray(weight.transpose(2, 3, 1, 0)),
                             trainable=False, name="w")
        self.b = tf.Variable(np.asarray(bias), trainable=False, name="b")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.nn.conv2d(x, self.w, strides=1, padding="SAME")
        return tf.nn.bias_add(y, self.b)


def _split2(x: tf.Tensor, a: int, b: int) -> list[tf.Tensor]:
    """Channel split into (a, b). Equal halves (every split at CSR 0.5) become TFLite SPLIT,
    which XNNPACK delegates; unequal sizes need SPLIT_V, which it does not, and each
    undelegated op cuts the delegated graph into more partitions."""
    if a == b:
        return tf.split(x, 2, axis=-1)
    return tf.split(x, [a, b], axis=-1)


def _lrelu(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.leaky_relu(x, alpha=LRELU_SLOPE)


class TFRDSRN(tf.Module):
    """RDSRN forward pass in TensorFlow (NHWC), from a PyTorch state dict.

    Args:
        state: parameter name -> numpy array, as `RDSRN.state_dict()` names them.
        config: `RDSRN.config` (scale, recursions, csr, channels, hr_channels, wide,
            in_channels).
        clamp: clamp the output to [0, 1] inside the graph.
        fused_clamp: write the clamp as 0.5 * clip(2z - 1, -1, 1) + 0.5 with the factor 2 and
            the -1 folded into the reconstruction conv — the same function, but TFLite fuses
            clip(-1, 1) into the conv (RELU_N1_TO_1) and XNNPACK runs the MUL/ADD, where the
            plain clip(0, 1) becomes RELU + MINIMUM that its INT8 path leaves to slow
            reference kernels (11 ms at 1280x720 here). Used for INT8.
    """

    def __init__(self, state: Mapping[str, np.ndarray], config: Mapping[str, Any],
                 clamp: bool = True, fused_clamp: bool = False) -> None:
        super().__init__(name="rdsrn")
        self.scale = int(config["scale"])
        self.recursions = int(config["recursions"])
        self.clamp = clamp
        self.anchor = bool(config.get("anchor", False))
        self.fused_clamp = clamp and fused_clamp and not self.anchor
        channels, csr, wide = int(config["channels"]), float(config["csr"]), int(config["wide"])
        d, r = split_channels(channels, csr)
        dw, rw = split_channels(channels * wide, csr)
        self.splits = (d, r, dw, rw)
        state = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}

        def conv(name: str, perm: np.ndarray | None = None) -> _Conv:
            w, b = state[f"{name}.weight"], state[f"{name}.bias"]
            if perm is not None:
                w, b = w[perm], b[perm]
            return _Conv(w, b, name)

        self.shallow1 = conv("shallow1")
        self.shallow2 = conv("shallow2")
        self.rb = {}
        for blk in ("dwcb1", "dwcb2"):
            for unit in ("unit1", "unit2"):
                for c in ("conv1", "conv2", "conv3", "fuse"):
                    key = f"rb.{blk}.{unit}.{c}"
                    self.rb[key] = conv(key)
        self.rb["rb.cca.fc1"] = conv("rb.cca.fc1")
        self.rb["rb.cca.fc2"] = conv("rb.cca.fc2")
        self.fusion = conv("fusion")
        self.lr_conv = conv("lr_conv")
        n_up = state["upconv.weight"].shape[0]
        self.upconv = conv("upconv", crd_to_dcr(n_up, self.scale))
        self.hfrrb = [conv(f"hfrrb.convs.{i}") for i in range(4)]
        if self.fused_clamp:  # recon computes 2z - 1 (see the class docstring)
            w, b = state["recon.weight"], state["recon.bias"]
            self.recon = _Conv(2.0 * w, 2.0 * b - 1.0, "recon")
        else:
            self.recon = conv("recon")

    def _unit(self, prefix: str, x: tf.Tensor) -> tf.Tensor:
        d, r, dw, rw = self.splits
        y1 = _lrelu(self.rb[f"{prefix}.conv1"](x))
        d1, r1 = _split2(y1, d, r)
        y2 = _lrelu(self.rb[f"{prefix}.conv2"](r1))
        d2, r2 = _split2(y2, dw, rw)
        d3 = _lrelu(self.rb[f"{prefix}.conv3"](r2))
        return self.rb[f"{prefix}.fuse"](tf.concat([d1, d2, d3], axis=-1)) + x

    def _cca(self, x: tf.Tensor) -> tf.Tensor:
        # "cca" in the op names: lets quantization debugging tools pick these ops out.
        with tf.name_scope("cca"):
            mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            diff = x - mean
            var = tf.reduce_mean(diff * diff, axis=[1, 2], keepdims=True)
            contrast = mean + tf.sqrt(var + CCA_EPS)
            w = tf.sigmoid(self.rb["rb.cca.fc2"](tf.nn.relu(self.rb["rb.cca.fc1"](contrast))))
            return x * w

    def _rb(self, x: tf.Tensor) -> tf.Tensor:
        with tf.name_scope("body"):
            h = x
            for blk in ("dwcb1", "dwcb2"):
                for unit in ("unit1", "unit2"):
                    h = self._unit(f"rb.{blk}.{unit}", h)
        h = self._cca(h)
        with tf.name_scope("body"):
            return h + x

    def forward(self, x: tf.Tensor) -> tf.Tensor:
        """x: [N, H, W, 3] float32 RGB in [0, 1] -> [N, sH, sW, 3] (clamped if `clamp`)."""
        # Name scopes = the layer groups of rdsrn.quant.groups: they end up in the TFLite
        # tensor names, which is how `--keep-float` finds a group's ops
        # (tflite_export.tensor_group).
        with tf.name_scope("shallow"):
            shallow = self.shallow2(_lrelu(self.shallow1(x)))
        feats = []
        h = shallow
        for _ in range(self.recursions):
            h = self._rb(h)
            feats.append(h)
        with tf.name_scope("fusion"):
            fused = _lrelu(self.fusion(tf.concat(feats, axis=-1)))
            lr = self.lr_conv(fused) + shallow
        with tf.name_scope("upsample"):
            hr = tf.nn.depth_to_space(self.upconv(lr), self.scale)
        with tf.name_scope("hfrrb"):
            y = hr
            for i, c in enumerate(self.hfrrb):
                y = c(y)
                if i < len(self.hfrrb) - 1:
                    y = _lrelu(y)
            y = hr + y
        with tf.name_scope("recon"):
            if self.fused_clamp:
                return 0.5 * tf.clip_by_value(self.recon(y), -1.0, 1.0) + 0.5
            out = self.recon(y)
            if self.anchor:
                s2 = self.scale * self.scale
                out = out + tf.nn.depth_to_space(tf.concat([x] * s2, axis=-1), self.scale)
            if self.clamp:
                out = tf.clip_by_value(out, 0.0, 1.0)
            return out

    def concrete_function(self, input_size: tuple[int, int] | None = None):
        """The traced forward pass: input [1, H, W, 3] (None, None for dynamic H/W)."""
        h, w = input_size if input_size is not None else (None, None)
        spec = tf.TensorSpec([1, h, w, 3], tf.float32, name="input")
        fn = tf.function(lambda x: {"output": self.forward(x)}, input_signature=[spec],
                         autograph=False)
        return fn.get_concrete_function()


def twin_from_torch(model: Any, clamp: bool = True, fused_clamp: bool = False) -> TFRDSRN:
    """Build the TensorFlow twin of a PyTorch RDSRN (weights copied, model untouched)."""
    state = {k: v.detach().cpu().float().numpy() for k, v in model.state_dict().items()}
    return TFRDSRN(state, model.config, clamp=clamp, fused_clamp=fused_clamp)
