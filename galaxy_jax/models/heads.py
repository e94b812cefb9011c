"""Binary classification heads: an MLP on frozen features, and Xception with a sigmoid head.

Both return one logit per example; the sigmoid lives in the loss (`optax.sigmoid_binary_cross_
entropy`) and in `jax.nn.sigmoid` at prediction, which is numerically safer than a sigmoid layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from galaxy_jax.models.xception import Xception


class MLPHead(nn.Module):
    """[B, D] features -> [B] logits through fully connected ReLU layers.

    Attributes:
      hidden: widths of the hidden layers, e.g. (512, 128); () is logistic regression.
      dropout: dropout rate after each hidden layer (train only; needs a 'dropout' rng).
    """

    hidden: Sequence[int] = (512,)
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, name=f"dense_{i}")(x))
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(1, name="logit")(x)[..., 0]


class XceptionBinary(nn.Module):
    """[B, S, S, 3] images in [-1, 1] -> [B] logits: Xception (no top), average pool, Dense(1).

    The backbone's variables sit under 'backbone' (params and batch_stats), so ImageNet weights
    from `galaxy_jax.weights.load_weights(include_top=False)` drop in unchanged. `width` and
    `middle_blocks` are Xception's (defaults: Keras' Xception).
    """

    dtype: Any = jnp.float32
    width: float = 1.0
    middle_blocks: int = 8

    @nn.compact
    def __call__(self, x, train: bool = False):
        backbone = Xception(
            dtype=self.dtype, width=self.width, middle_blocks=self.middle_blocks, name="backbone"
        )
        _, out = backbone(x, train=train)
        return nn.Dense(1, name="head")(out["pooled"].astype(jnp.float32))[..., 0]
