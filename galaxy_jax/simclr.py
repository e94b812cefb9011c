"""Self-supervised contrastive pretraining (SimCLR, Chen et al. 2020) of the Flax Xception.

Two random views of each galaxy (galaxy_jax.data.preprocess.ssl_views: dihedral symmetry,
rotation, zoom and shift, PSF blur, flux scale, noise) go through the backbone and a projection
MLP; the NT-Xent loss pulls the two views of a galaxy together and pushes the other 2B - 2 views
of the batch away. No labels are used. What is kept afterwards is the backbone (the encoder,
with its batch-norm statistics); the projection head is thrown away, as in SimCLR, since the
features before it transfer better.

The mode galaxy_jax/modes/ssl.py wires a config to this module (the model, the loss and the
jitted step) and to the step runner (galaxy_jax/train_loop.py: the loop and checkpoints).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from galaxy_jax import weights
from galaxy_jax.data.preprocess import preprocess, ssl_views
from galaxy_jax.models import xception
from galaxy_jax.train_loop import State


class ProjectionHead(nn.Module):
    """[B, D] -> [B, out]: Dense -> ReLU -> Dense, SimCLR's projection g(h)."""

    hidden: int = 512
    out: int = 128

    @nn.compact
    def __call__(self, h):
        h = nn.relu(nn.Dense(self.hidden, name="dense_0")(h))
        return nn.Dense(self.out, name="dense_1")(h)


class SSLModel(nn.Module):
    """Xception (no top) + projection head: images [B, S, S, 3] in [-1, 1] ->
    (z [B, proj_dim] float32, pooled [B, feature_dim] float32).

    Variables: params {'backbone', 'projector'}, batch_stats {'backbone'}; the backbone's are
    exactly those of `Xception(width=..., middle_blocks=...)`, so they export as weights files.
    """

    width: float = 1.0
    middle_blocks: int = 8
    proj_hidden: int = 512
    proj_dim: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        _, out = xception.Xception(
            width=self.width, middle_blocks=self.middle_blocks, dtype=self.dtype, name="backbone"
        )(x, train=train)
        pooled = out["pooled"].astype(jnp.float32)
        z = ProjectionHead(self.proj_hidden, self.proj_dim, name="projector")(pooled)
        return z.astype(jnp.float32), pooled


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float):
    """SimCLR's NT-Xent loss of two views z1, z2: [B, D] (row i of each is the same image).

    Each of the 2B embeddings (L2-normalised) must pick its partner among the other 2B - 1 by
    cosine similarity / temperature (softmax cross-entropy), averaged over all 2B.
    Returns (loss, top1): top1 is the fraction whose nearest other embedding is the partner.
    """
    z = jnp.concatenate([z1, z2]).astype(jnp.float32)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    n = z.shape[0]
    b = n // 2
    logits = z @ z.T / temperature
    logits = jnp.where(jnp.eye(n, dtype=bool), -1e9, logits)  # never oneself
    partner = jnp.concatenate([jnp.arange(b, n), jnp.arange(0, b)])
    logp = jax.nn.log_softmax(logits, axis=1)
    loss = -jnp.mean(logp[jnp.arange(n), partner])
    top1 = jnp.mean(jnp.argmax(logits, axis=1) == partner)
    return loss, top1


def train_step(state: State, images, key, *, model: SSLModel, crop_size, image_size, aug, temp):
    """One optimiser step on images: [B, H, W, 3] uint8 -> (state, {'loss', 'top1'}).

    The two views of every image come from `fold_in(key, step)`, so a resumed run draws the
    same views. Batch norm runs in training mode over both views together (2B images), and its
    updated running statistics go into the state.
    """
    x = preprocess(images, crop_size=crop_size, image_size=image_size)
    b = x.shape[0]
    # Rows i and b + i are two independent views of image i (one key per row).
    views = ssl_views(jax.random.fold_in(key, state.step), jnp.concatenate([x, x]), **aug)

    def loss_fn(params):
        (z, _), updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            views,
            train=True,
            mutable=["batch_stats"],
        )
        loss, top1 = nt_xent(z[:b], z[b:], temp)
        return loss, (top1, updates["batch_stats"])

    (loss, (top1, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads).replace(batch_stats=batch_stats)
    return state, {"loss": loss, "top1": top1}


@functools.lru_cache(maxsize=8)
def make_train_step(model: SSLModel, crop_size, image_size, aug_items: tuple, temp: float):
    """`train_step` with its static settings bound, jitted once (donating the state) and cached,
    so repeated runs in one process (tests, sweeps) compile once. aug_items: sorted (name, value)
    pairs of `ssl_views` bounds."""
    fn = functools.partial(
        train_step,
        model=model,
        crop_size=crop_size,
        image_size=image_size,
        aug=dict(aug_items),
        temp=temp,
    )
    return jax.jit(fn, donate_argnums=(0,))


def init_variables(model: SSLModel, seed: int) -> dict:
    """{'params', 'batch_stats'} of a fresh model as NumPy float32: the backbone as
    `xception.init_variables` (Keras' initialisation), the head Glorot uniform with zero biases.
    Checked against the model's own variable shapes."""
    arch = dict(width=model.width, middle_blocks=model.middle_blocks)
    backbone = xception.init_variables(xception.Xception(**arch), seed)
    feature_dim = xception.scaled_channels(xception.FEATURE_DIM, model.width)
    head = init_head(feature_dim, model.proj_hidden, model.proj_dim, seed)
    variables = {
        "params": {"backbone": backbone["params"], "projector": head},
        "batch_stats": {"backbone": backbone["batch_stats"]},
    }
    x = jax.ShapeDtypeStruct((1, xception.MIN_SIZE, xception.MIN_SIZE, 3), jnp.float32)
    template = weights.flatten(jax.eval_shape(model.init, jax.random.key(0), x))
    weights.check_flat(weights.flatten(variables), template, what="of the SSL model")
    return variables


def init_head(feature_dim: int, hidden: int, out: int, seed: int) -> dict:
    """ProjectionHead params as NumPy float32: Glorot uniform kernels, zero biases."""
    rng = np.random.default_rng([seed, 7])
    dims = (feature_dim, hidden, out)
    head = {}
    for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        head[f"dense_{i}"] = {
            "kernel": rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32),
            "bias": np.zeros((fan_out,), np.float32),
        }
    return head


def encoder_variables(state: State) -> dict:
    """The backbone's {'params', 'batch_stats'} (projection head dropped), as NumPy arrays."""
    host = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    return {
        "params": host["params"]["backbone"],
        "batch_stats": host["batch_stats"]["backbone"],
    }
