"""Neighbour-consistency clustering on fixed features (SCAN, Van Gansbeke et al., ECCV 2020).

Two stages, both on cached feature vectors (no image is read):
  1. clustering: a head maps a feature to K cluster probabilities; each galaxy and one of its
     positives (a mined nearest neighbour in the feature space, or another of its own dihedral
     views when the features of the 8 rotations/flips are kept) should agree:
       loss = -mean_i log <p(x_i), p(x_j)>  -  entropy_weight * H(mean_i p(x_i)),
     the entropy term keeping the clusters from collapsing into one;
  2. self-labelling: the confident galaxies (max p > threshold, under the current head) become
     pseudo-labels, and the head is trained on them with a cross-entropy weighted by inverse
     class frequency, through a perturbed view (another dihedral view, or feature dropout).
The head is a linear layer on L2-normalised features (optionally with a hidden layer), with
n_heads independent outputs trained at once (SCAN keeps the head of lowest loss: `head_losses`).
Logits are [H, B, K]; the losses below take one head's [B, K] and the steps map them over heads.
Every step is jitted once with the state donated; the perturbation of the self-labelling step
draws from fold_in(state.key, state.step), so a resumed run is bit-identical.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state

EPS = 1e-8


class ClusterHead(nn.Module):
    """[B, D] features -> [H, B, K] logits of n_heads heads (a hidden layer, if any, shared)."""

    n_clusters: int
    hidden: int = 0  # 0: linear head
    n_heads: int = 1

    @nn.compact
    def __call__(self, x):
        x = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + EPS)
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden)(x))
        logits = nn.Dense(self.n_heads * self.n_clusters)(x)
        return jnp.moveaxis(logits.reshape(x.shape[0], self.n_heads, self.n_clusters), 1, 0)


class ScanState(train_state.TrainState):
    key: jax.Array  # root key of the phase's perturbations (fold_in with the step)


def select_head(params, head: int, n_clusters: int):
    """The params of a one-head ClusterHead holding head `head` of a multi-head one."""
    out = jax.tree.map(lambda a: a, params)
    last = f"Dense_{len(params) - 1}"
    cols = slice(head * n_clusters, (head + 1) * n_clusters)
    out[last] = {"kernel": params[last]["kernel"][:, cols], "bias": params[last]["bias"][cols]}
    return out


def entropy(p: jnp.ndarray) -> jnp.ndarray:
    return -jnp.sum(p * jnp.log(p + EPS), axis=-1)


def scan_loss(logits_a, logits_b, entropy_weight: float):
    """(loss, (consistency, entropy of the mean assignment)) of anchors a and positives b."""
    pa, pb = jax.nn.softmax(logits_a), jax.nn.softmax(logits_b)
    consistency = -jnp.mean(jnp.log(jnp.sum(pa * pb, axis=-1) + EPS))
    h = entropy(jnp.mean(pa, axis=0))
    return consistency - entropy_weight * h, (consistency, h)


def selflabel_loss(logits_weak, logits_strong, threshold: float):
    """Cross-entropy of the strong view against the weak view's confident argmax, weighted by
    inverse frequency of the pseudo-labels among the confident rows (SCAN's balancing)."""
    p = jax.nn.softmax(jax.lax.stop_gradient(logits_weak))
    conf, target = jnp.max(p, axis=-1), jnp.argmax(p, axis=-1)
    mask = (conf > threshold).astype(jnp.float32)
    k = logits_weak.shape[-1]
    counts = jnp.sum(jax.nn.one_hot(target, k) * mask[:, None], axis=0)
    weight = jnp.where(counts > 0, jnp.sum(mask) / (k * jnp.maximum(counts, 1.0)), 0.0)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits_strong), target[:, None], 1)[:, 0]
    w = mask * weight[target]
    return jnp.sum(w * nll) / jnp.maximum(jnp.sum(w), EPS), jnp.mean(mask)


def scan_step(state, anchors, positives, *, entropy_weight: float):
    """One step on the sum over heads of scan_loss; metrics are means over heads."""

    def loss_fn(params):
        la = state.apply_fn({"params": params}, anchors)
        lb = state.apply_fn({"params": params}, positives)
        loss, aux = jax.vmap(lambda a, b: scan_loss(a, b, entropy_weight))(la, lb)
        return jnp.sum(loss), (loss, aux)

    (_, (loss, (consistency, h))), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": jnp.mean(loss), "consistency": jnp.mean(consistency), "entropy": jnp.mean(h)}
    return state.apply_gradients(grads=grads), metrics


def perturb(x, key, dropout: float, noise: float):
    """The strong view of features x [B, D]: each feature zeroed with probability `dropout`
    (survivors scaled by 1/(1-dropout)), plus Gaussian noise of std `noise` times the row's RMS."""
    k_drop, k_noise = jax.random.split(key)
    if dropout:
        keep = jax.random.bernoulli(k_drop, 1.0 - dropout, x.shape)
        x = jnp.where(keep, x / (1.0 - dropout), 0.0)
    if noise:
        rms = jnp.sqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True))
        x = x + noise * rms * jax.random.normal(k_noise, x.shape, x.dtype)
    return x


def selflabel_step(state, weak, strong=None, *, threshold: float, dropout=0.0, noise=0.0):
    """One step of self-labelling of head 0. strong=None: the strong view is perturb(weak) with
    the key fold_in(state.key, state.step)."""
    if strong is None:
        strong = perturb(weak, jax.random.fold_in(state.key, state.step), dropout, noise)

    def loss_fn(params):
        lw = state.apply_fn({"params": params}, weak)[0]
        ls = state.apply_fn({"params": params}, strong)[0]
        return selflabel_loss(lw, ls, threshold)

    (loss, confident), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss, "confident": confident}


def make_scan_step(entropy_weight: float):
    step = functools.partial(scan_step, entropy_weight=float(entropy_weight))
    return jax.jit(step, donate_argnums=0)


def make_selflabel_step(threshold: float, dropout: float = 0.0, noise: float = 0.0):
    kw = dict(threshold=float(threshold), dropout=float(dropout), noise=float(noise))
    return jax.jit(functools.partial(selflabel_step, **kw), donate_argnums=0)


def predict(apply_fn, params, x) -> jnp.ndarray:
    """[H, B, K] probabilities of every head."""
    return jax.nn.softmax(apply_fn({"params": params}, x))


def head_losses(q: np.ndarray, nb: np.ndarray, entropy_weight: float, chunk=4096) -> np.ndarray:
    """[H] SCAN loss of each head over the whole dataset: q [H, N, K] probabilities, nb [N, k]
    neighbours (every neighbour of every row, no sampling: deterministic)."""
    q = np.asarray(q, np.float64)
    agree = np.zeros(q.shape[0])
    for lo in range(0, q.shape[1], chunk):
        a, b = q[:, lo : lo + chunk, None, :], q[:, nb[lo : lo + chunk]]  # [H, C, 1|k, K]
        agree -= np.log(np.sum(a * b, axis=-1) + EPS).sum(axis=(1, 2))
    mean = q.mean(axis=1)
    h = -np.sum(mean * np.log(mean + EPS), axis=-1)
    return agree / (nb.shape[0] * nb.shape[1]) - entropy_weight * h
