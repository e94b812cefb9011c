"""Deep Embedding Clustering (Xie, Girshick & Farhadi, ICML 2016): the maths and the train step.

Shapes: z [B, D] embeddings, centres [K, D], q and p [B, K] (rows sum to 1).
Gradients come from jax.grad of `kl_divergence`; tests/test_dec.py checks them against the
paper's closed form. Optional terms of the same step (`dec_loss`): IDEC's reconstruction loss
(dec.gamma) and a semi-supervised cross-entropy on the visible labels (dec.supervised_weight).
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


def supervised_term(q: jnp.ndarray, allowed: jnp.ndarray) -> jnp.ndarray:
    """Semi-supervised cross-entropy of the labelled rows of a batch.

    q: [B, K] soft assignments. allowed: [B, K] float32, row i = 1 on the clusters that row i's
    visible class maps to, all 0 for a row whose label is hidden (or unknown). The term is
    -mean over labelled rows of log(sum_j allowed_ij q_ij): with one cluster per class, the
    cross-entropy of q against the class's cluster; 0 for a batch without labelled rows.
    """
    labelled = jnp.sum(allowed, axis=-1) > 0
    mass = jnp.sum(q * allowed, axis=-1)
    nll = -jnp.log(jnp.where(labelled, mass, 1.0))
    return jnp.sum(jnp.where(labelled, nll, 0.0)) / jnp.maximum(jnp.sum(labelled), 1)


def dec_loss(params, x, p, allowed=None, *, encode, alpha, reconstruct=None, gamma=0.0, sup=0.0):
    """KL(P||Q) [+ gamma * MSE reconstruction (IDEC)] [+ sup * supervised_term].

    The optional terms are compiled in only when their weight is non-zero, so plain DEC
    (gamma = sup = 0) is exactly the original computation. reconstruct: (variables, x) ->
    (z, x_hat), the whole autoencoder; needed when gamma > 0.
    """
    if gamma:
        z, x_hat = reconstruct({"params": params["ae"]}, x)
    else:
        z = encode({"params": params["ae"]}, x)
    q = soft_assignment(z, params["centres"], alpha)
    loss = kl_divergence(p, q)
    if gamma:
        loss = loss + gamma * jnp.mean(jnp.square(x_hat - x))
    if sup:
        loss = loss + sup * supervised_term(q, allowed)
    return loss


def train_step(state: DECState, x, p, allowed=None, **loss_kw):
    """One step on dec_loss for a batch; P (and `allowed`) are constant inputs.

    Returns (state, loss)."""
    loss, grads = jax.value_and_grad(dec_loss)(state.params, x, p, allowed, **loss_kw)
    return state.apply_gradients(grads=grads), loss


def make_train_step(encode, alpha: float, *, reconstruct=None, gamma=0.0, supervised_weight=0.0):
    """Jitted once, state donated. encode: (variables, x) -> z; reconstruct: (variables, x) ->
    (z, x_hat), for gamma > 0 (IDEC). With supervised_weight > 0 the step takes a fourth
    argument, allowed [B, K] (see supervised_term)."""
    if gamma and reconstruct is None:
        raise ValueError("gamma > 0 (IDEC) needs `reconstruct`")
    kw = dict(encode=encode, alpha=alpha)
    if gamma:
        kw.update(reconstruct=reconstruct, gamma=float(gamma))
    if supervised_weight:
        kw.update(sup=float(supervised_weight))
    return jax.jit(functools.partial(train_step, **kw), donate_argnums=0)


def make_optimizer(name: str, lr: float, momentum: float = 0.9) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.sgd(lr, momentum=momentum or None)
    if name == "adam":
        return optax.adam(lr)
    raise ValueError(f"unknown optimizer {name!r} (use 'sgd' or 'adam')")
