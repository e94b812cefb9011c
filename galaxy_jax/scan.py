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
The head is a linear layer on L2-normalised features (optionally with a hidden layer).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

EPS = 1e-8


class ClusterHead(nn.Module):
    n_clusters: int
    hidden: int = 0  # 0: linear head

    @nn.compact
    def __call__(self, x):
        x = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + EPS)
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.n_clusters)(x)


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
    def loss_fn(params):
        la = state.apply_fn({"params": params}, anchors)
        lb = state.apply_fn({"params": params}, positives)
        return scan_loss(la, lb, entropy_weight)

    (loss, (consistency, h)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = {"loss": loss, "consistency": consistency, "entropy": h}
    return state.apply_gradients(grads=grads), metrics


def selflabel_step(state, weak, strong, *, threshold: float):
    def loss_fn(params):
        lw = state.apply_fn({"params": params}, weak)
        ls = state.apply_fn({"params": params}, strong)
        return selflabel_loss(lw, ls, threshold)

    (loss, confident), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads), {"loss": loss, "confident": confident}


def make_scan_step(entropy_weight: float):
    return jax.jit(functools.partial(scan_step, entropy_weight=float(entropy_weight)))


def make_selflabel_step(threshold: float):
    return jax.jit(functools.partial(selflabel_step, threshold=float(threshold)))


def predict(apply_fn, params, x) -> jnp.ndarray:
    return jax.nn.softmax(apply_fn({"params": params}, x))
