"""Deep Embedding Clustering (Xie, Girshick & Farhadi, ICML 2016): the maths and the train step.

Shapes: z [B, D] embeddings, centres [K, D], q and p [B, K] (rows sum to 1).
Gradients come from jax.grad of `kl_divergence`; tests/test_dec.py checks them against the
paper's closed form.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


def soft_assignment(z: jnp.ndarray, centres: jnp.ndarray, alpha: float = 1.0) -> jnp.ndarray:
    """Student-t kernel q_ij = (1 + |z_i - mu_j|^2/a)^(-(a+1)/2), normalised over j."""
    d2 = jnp.sum(jnp.square(z[:, None, :] - centres[None, :, :]), axis=-1)
    # log-domain normalisation: stable for large distances and any alpha.
    logits = -(alpha + 1.0) / 2.0 * jnp.log1p(d2 / alpha)
    return jax.nn.softmax(logits, axis=-1)


def target_distribution(q: jnp.ndarray, f: jnp.ndarray | None = None) -> jnp.ndarray:
    """p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j'), with f_j = sum_i q_ij over the WHOLE set.

    q: [N, K]. f: [K] soft cluster frequencies; defaults to q.sum(0), which is only right when q
    holds every row of the dataset (pass f when q is a chunk).
    """
    f = jnp.sum(q, axis=0) if f is None else f
    w = jnp.square(q) / f
    return w / jnp.sum(w, axis=1, keepdims=True)


def kl_divergence(p: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
    """KL(P||Q) summed over clusters and averaged over the rows of the batch."""
    return jnp.mean(jnp.sum(jax.scipy.special.xlogy(p, p) - p * jnp.log(q), axis=-1))


class DECState(train_state.TrainState):
    """params = {'ae': autoencoder params, 'centres': [K, D]}."""


def dec_loss(params, x, p, *, encode, alpha):
    z = encode({"params": params["ae"]}, x)
    return kl_divergence(p, soft_assignment(z, params["centres"], alpha))


def train_step(state: DECState, x, p, *, encode, alpha):
    """One SGD step on KL(P||Q) for a batch; P is a constant input. Returns (state, loss)."""
    loss, grads = jax.value_and_grad(dec_loss)(state.params, x, p, encode=encode, alpha=alpha)
    return state.apply_gradients(grads=grads), loss


def make_train_step(encode, alpha: float):
    """Jitted once, state donated. encode: (variables, x) -> z."""
    return jax.jit(functools.partial(train_step, encode=encode, alpha=alpha), donate_argnums=0)


def make_optimizer(name: str, lr: float, momentum: float = 0.9) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.sgd(lr, momentum=momentum or None)
    if name == "adam":
        return optax.adam(lr)
    raise ValueError(f"unknown optimizer {name!r} (use 'sgd' or 'adam')")
