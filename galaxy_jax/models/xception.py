"""Xception (Chollet 2017) in Flax Linen, layer for layer as `keras.applications.Xception`.

Layer names follow Keras (`block1_conv1`, `block4_sepconv2_bn`, ...), so the converted ImageNet
weights map one to one (galaxy_jax/weights.py). The four residual 1x1 stride-2 convolutions,
which Keras leaves to auto-generated names, are `block{2,3,4,13}_residual` and
`block{2,3,4,13}_residual_bn` here.

Parameters (trainable and batch statistics together): 20,861,480 without the top, 22,910,480
with it, as in Keras.

Two fields make smaller networks of the same design for self-supervised training on a CPU
(galaxy_jax/simclr.py): `width` multiplies every channel count (rounded to a multiple of 8) and
`middle_blocks` sets the number of middle-flow blocks. Their defaults (1.0, 8) are Keras'
Xception, unchanged: same variables, names and numbers.

The arithmetic is written for speed on XLA:CPU, where the textbook formulation runs about 10x
slower than TensorFlow: a depthwise 3x3 convolution as a grouped `conv_general_dilated` runs at
under 1 GFLOP/s there, and 1x1 convolutions are 2-3x slower than the same contraction as a
matrix product. So the depthwise 3x3 is nine shifted multiply-adds on a padded tensor (one XLA
loop fusion), every 1x1 is a `dot_general`, the two dense 3x3 stem convolutions are one matrix
product over the nine shifted views (im2col: XLA:CPU's convolution ran the 32->64 one at ~30
GFLOP/s, a quarter of the time at 299x299), the global average pool is a product with a
constant vector (XLA:CPU's reduction took 3% of the time), and the 3x3 max pool is separable
(rows, then columns; `reduce_window` took 3-4%). The results are the same convolutions
up to float rounding; the parity test against Keras (tests/test_weights.py) holds for this
implementation, which is the only one.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

MIN_SIZE = 71  # smallest input side that keeps every feature map at least 1x1 (as in Keras)
FEATURE_DIM = 2048
NUM_CLASSES = 1000
# Xception.__call__'s parts of the network: entry + rest = all, and rest = middle + exit.
STAGES = ("all", "entry", "rest", "middle", "exit")
BN_EPSILON = 1e-3  # Keras' BatchNormalization default, not Flax's 1e-5
BN_MOMENTUM = 0.99  # Keras' default

# Keras initialises its kernels with Glorot uniform; the fans are those of Keras' kernel shapes.
_dense_init = nn.initializers.glorot_uniform()
_conv_init = nn.initializers.glorot_uniform(in_axis=(0, 1, 2), out_axis=3)


def scaled_channels(channels: int, width: float) -> int:
    """Keras' channel count `channels` times `width`, rounded to a multiple of 8 (at least 8);
    exactly `channels` for width 1."""
    if width == 1.0:
        return channels
    return max(8, int(round(channels * width / 8.0)) * 8)


def _depthwise_init(key, shape, dtype=jnp.float32):
    # Keras' depthwise kernel is [3, 3, C, 1]: fan_in = 9 * C, fan_out = 9.
    return nn.initializers.glorot_uniform(in_axis=(0, 1, 2), out_axis=3)(key, (*shape, 1), dtype)[
        ..., 0
    ]


def depthwise3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 depthwise convolution, stride 1, SAME padding.

    x: [B, H, W, C]; kernel: [3, 3, C]. Nine shifted multiply-adds of the zero-padded input,
    which XLA fuses into one elementwise loop.
    """
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = None
    for i in range(3):
        for j in range(3):
            term = xp[:, i : i + h, j : j + w, :] * kernel[i, j]
            out = term if out is None else out + term
    return out


def pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """1x1 convolution as a matrix product. x: [B, H, W, C]; kernel: [C, D] -> [B, H, W, D]."""
    return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def global_average_pool(x: jax.Array) -> jax.Array:
    """[B, H, W, C] -> [B, C] float32 spatial mean, as a matrix product with a 1/(HW) vector: on
    XLA:CPU the reduction `jnp.mean` runs ~100x slower than memory speed here (3-4% of the whole
    network at 299x299)."""
    b, h, w, c = x.shape
    weights = jnp.full((h * w,), 1.0 / (h * w), jnp.float32)
    flat = x.astype(jnp.float32).reshape(b, h * w, c)
    return lax.dot_general(weights, flat, (((0,), (1,)), ((), ())), precision=lax.Precision.HIGHEST)


def max_pool3x3_s2(x: jax.Array) -> jax.Array:
    """3x3 max pooling, stride 2, SAME padding (TensorFlow's split: extra pad at the end).

    Separable: the maximum over 3 rows (stride 2), then over 3 columns (stride 2), each a fused
    elementwise loop; XLA:CPU's `reduce_window` took 3-4% of the whole network at 299x299, and
    the network is ~2.5% faster this way. Max is exact: the result is `nn.max_pool`'s bit for bit.
    """

    def pool_axis(x, axis):
        n = x.shape[axis]
        out = -(-n // 2)
        pad = max((out - 1) * 2 + 3 - n, 0)
        widths = [(0, 0)] * x.ndim
        widths[axis] = (pad // 2, pad - pad // 2)
        xp = jnp.pad(x, widths, constant_values=-jnp.inf)
        taps = [lax.slice_in_dim(xp, i, i + 2 * out - 1, stride=2, axis=axis) for i in range(3)]
        return jnp.maximum(jnp.maximum(taps[0], taps[1]), taps[2])

    return pool_axis(pool_axis(x, 1), 2)


def conv3x3_valid(x: jax.Array, kernel: jax.Array, strides: int = 1) -> jax.Array:
    """Dense 3x3 convolution, VALID padding, as one matrix product over the nine shifted
    (strided) views of the input concatenated on channels (im2col).

    x: [B, H, W, C]; kernel: [3, 3, C, D] -> [B, (H - 3) // s + 1, (W - 3) // s + 1, D].
    XLA:CPU runs the 3x3 convolution from 32 to 64 channels of the stem at about 30 GFLOP/s, a
    quarter of the whole network's time at 299x299; as a product it runs several times faster.
    """
    s = strides
    h, w = (x.shape[1] - 3) // s + 1, (x.shape[2] - 3) // s + 1
    cols = jnp.concatenate(
        [
            x[:, i : i + s * (h - 1) + 1 : s, j : j + s * (w - 1) + 1 : s, :]
            for i in range(3)
            for j in range(3)
        ],
        axis=-1,
    )  # [B, h, w, 9C], (row, column, channel) order = kernel.reshape's
    return pointwise(cols, kernel.reshape(9 * x.shape[-1], kernel.shape[-1]))


class Conv3x3(nn.Module):
    """Dense 3x3 convolution, VALID padding, no bias (the two stem convolutions)."""

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", _conv_init, (3, 3, x.shape[-1], self.features))
        return conv3x3_valid(x.astype(self.dtype), kernel.astype(self.dtype), self.strides)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D(features, 3x3, padding='same', use_bias=False).

    Params: depthwise_kernel [3, 3, C], pointwise_kernel [C, features].
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        dw = self.param("depthwise_kernel", _depthwise_init, (3, 3, c))
        pw = self.param("pointwise_kernel", _dense_init, (c, self.features))
        x = x.astype(self.dtype)
        return pointwise(depthwise3x3(x, dw.astype(self.dtype)), pw.astype(self.dtype))


class Residual(nn.Module):
    """Keras Conv2D(features, 1x1, strides=2, padding='same', use_bias=False).

    With a 1x1 kernel and stride 2, SAME padding adds nothing: the output is the product at every
    second pixel, ceil(H/2) x ceil(W/2). Params: kernel [C, features].
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", _dense_init, (x.shape[-1], self.features))
        return pointwise(x[:, ::2, ::2, :].astype(self.dtype), kernel.astype(self.dtype))


class Xception(nn.Module):
    """Xception; `__call__(x, train=False, stage="all") -> (logits or None, intermediates)`.

    x: [B, H, W, 3] images scaled to [-1, 1] (Keras' `xception.preprocess_input`), H, W >= 71.
    `stage` runs a part of the network: "entry" is the stem and blocks 2-3 (intermediates up to
    'block3'; logits None), "rest" takes block 3's output as x and runs block 4 to the end;
    "entry" then "rest" is "all", op for op. The split lets inference run the large early
    feature maps on fewer images per step than the rest (galaxy_jax/features.py). "rest" splits
    again into "middle" (block 4 and the middle flow; intermediates up to the last middle block,
    logits None) and "exit" (the middle flow's output as x, blocks 13-14 and the pool), which
    lets galaxy_jax/adapt.py train the exit flow alone on cached middle-flow activations
    (intermediates 'middle': the middle flow's output, [B, h, w, 728]).
    Intermediates (a dict): 'stem' [B, H', W', 64], 'block2' ... 'block14' (block outputs,
    'block14' after its final ReLU, [B, h, w, 2048]), 'pooled' [B, 2048] (the global average,
    Keras' `pooling='avg'` feature) and 'logits' [B, 1000] when include_top. Logits are pre-softmax.
    With `width` != 1 every channel count (64, 2048, ...) is `scaled_channels(c, width)`; with
    `middle_blocks` = m the middle flow is 'block5' ... f'block{4 + m}' (exit blocks keep the
    names 'block13' and 'block14').

    Attributes:
      include_top: add the 1000-way ImageNet classifier `predictions`.
      num_classes: classifier width.
      dtype: computation dtype (float32, or bfloat16 on accelerators); params stay float32.
      width: channel multiplier; 1.0 is Keras' Xception (0.25: 16x fewer FLOPs in the 1x1s).
      middle_blocks: number of middle-flow blocks, 0-8; 8 is Keras' Xception.
    """

    include_top: bool = False
    num_classes: int = NUM_CLASSES
    dtype: Any = jnp.float32
    width: float = 1.0
    middle_blocks: int = 8

    @property
    def feature_dim(self) -> int:
        """Width of the pooled feature: 2048 for Keras' Xception."""
        return scaled_channels(FEATURE_DIM, self.width)

    @nn.compact
    def __call__(self, x, train: bool = False, stage: str = "all"):
        if stage not in STAGES:
            raise ValueError(f"Xception stage must be one of {STAGES}, got {stage!r}")
        if stage in ("all", "entry") and (x.shape[1] < MIN_SIZE or x.shape[2] < MIN_SIZE):
            raise ValueError(
                f"Xception needs inputs of at least {MIN_SIZE}x{MIN_SIZE}, got {x.shape}"
            )
        if not self.width > 0 or not 0 <= self.middle_blocks <= 8:  # block13 follows block12
            raise ValueError(
                f"Xception width must be > 0 and middle_blocks in [0, 8], got {self.width}, "
                f"{self.middle_blocks}"
            )
        dt = self.dtype
        ch = lambda c: scaled_channels(c, self.width)

        def bn(name):
            return nn.BatchNorm(
                use_running_average=not train,
                momentum=BN_MOMENTUM,
                epsilon=BN_EPSILON,
                dtype=dt,
                name=name,
            )

        def sep(features, name):
            return lambda y: bn(f"{name}_bn")(SeparableConv(features, dt, name=name)(y))

        out = {}
        x = x.astype(dt)
        if stage in ("all", "entry"):
            # Entry flow: stem (VALID convolutions).
            x = nn.relu(bn("block1_conv1_bn")(Conv3x3(ch(32), 2, dt, name="block1_conv1")(x)))
            x = nn.relu(bn("block1_conv2_bn")(Conv3x3(ch(64), 1, dt, name="block1_conv2")(x)))
            out["stem"] = x
        # Blocks 2-4 and 13: separable pair + max pool, plus a strided 1x1 residual.
        # Block 2 starts without a ReLU (its input already went through one).
        down = {2: (128, 128), 3: (256, 256), 4: (728, 728)}
        down_blocks = {"all": (2, 3, 4), "entry": (2, 3), "rest": (4,), "middle": (4,), "exit": ()}
        for block in down_blocks[stage]:
            f1, f2 = down[block]
            x = self._down_block(x, block, ch(f1), ch(f2), bn, sep, lead_relu=block != 2)
            out[f"block{block}"] = x
        if stage == "entry":
            return None, out
        # Middle flow: 8 blocks (Keras) of 3 separable convolutions with an identity residual.
        for block in range(5, 5 + self.middle_blocks) if stage != "exit" else ():
            residual = x
            for k in (1, 2, 3):
                x = sep(ch(728), f"block{block}_sepconv{k}")(nn.relu(x))
            x = x + residual
            out[f"block{block}"] = x
        out["middle"] = x  # the exit flow's input
        if stage == "middle":
            return None, out
        # Exit flow.
        x = self._down_block(x, 13, ch(728), ch(1024), bn, sep, lead_relu=True)
        out["block13"] = x
        # Block 14: ReLU after batch norm, no residual.
        x = nn.relu(sep(ch(1536), "block14_sepconv1")(x))
        x = nn.relu(sep(ch(2048), "block14_sepconv2")(x))
        out["block14"] = x
        pooled = global_average_pool(x)
        out["pooled"] = pooled
        logits = None
        if self.include_top:
            logits = nn.Dense(
                self.num_classes, kernel_init=_dense_init, dtype=dt, name="predictions"
            )(pooled)
            logits = logits.astype(jnp.float32)
            out["logits"] = logits
        return logits, out

    def _down_block(self, x, block, f1, f2, bn, sep, lead_relu):
        residual = bn(f"block{block}_residual_bn")(
            Residual(f2, self.dtype, name=f"block{block}_residual")(x)
        )
        if lead_relu:
            x = nn.relu(x)
        x = sep(f1, f"block{block}_sepconv1")(x)
        x = sep(f2, f"block{block}_sepconv2")(nn.relu(x))
        return max_pool3x3_s2(x) + residual


def variable_shapes(model: Xception):
    """{'params', 'batch_stats'} as jax.ShapeDtypeStruct leaves (nothing is computed)."""
    x = jax.ShapeDtypeStruct((1, MIN_SIZE, MIN_SIZE, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x)


def init_variables(model: Xception, seed: int = 0):
    """{'params', 'batch_stats'} of a freshly initialised model, as NumPy float32 arrays.

    Keras' initialisation (Glorot uniform kernels over Keras' fans, zero biases, identity batch
    norm), drawn with NumPy: `jax.jit(model.init)` compiles a threefry graph for 20M numbers,
    which takes about 15 s on a 2-core CPU, against well under a second here.
    """
    shapes = variable_shapes(model)
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = path[-1].key
        if name in ("scale", "var"):
            return np.ones(s.shape, np.float32)
        if name in ("bias", "mean"):
            return np.zeros(s.shape, np.float32)
        if name == "depthwise_kernel":  # Keras [3, 3, C, 1]
            fan_in, fan_out = 9 * s.shape[2], 9
        elif len(s.shape) == 4:  # [3, 3, Cin, Cout]
            fan_in, fan_out = 9 * s.shape[2], 9 * s.shape[3]
        else:  # [Cin, Cout]: pointwise, residual, dense
            fan_in, fan_out = s.shape
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, s.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def count_params(variables) -> int:
    """Number of scalars in all collections (Keras' count_params includes BN moving stats)."""
    return sum(int(v.size) for v in jax.tree.leaves(variables))
