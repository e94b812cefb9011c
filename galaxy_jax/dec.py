"""Deep Embedding Clustering (Xie, Girshick & Farhadi, ICML 2016): the maths, the train step, the
target update between training segments, and the whole-dataset passes (embedding, q).

Shapes: z [B, D] embeddings, centres [K, D], q and p [B, K] (rows sum to 1).
Gradients come from jax.grad of `kl_divergence`; tests/test_dec.py checks them against the
paper's closed form. Optional terms of the same step (`dec_loss`): IDEC's reconstruction loss
(dec.gamma) and a semi-supervised cross-entropy on the visible labels (dec.supervised_weight).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax.training import train_state

from galaxy_jax import dec_init, metrics, parallel
from galaxy_jax.checkpoint import Checkpointer
from galaxy_jax.models.autoencoder import Autoencoder
from galaxy_jax.optim import make_optimizer
from galaxy_jax.train_loop import BatchSampler, NonFiniteError, StepRunner

PREDICT_CHUNK = 8192  # rows per jitted forward pass over the whole dataset


def soft_assignment(z: jnp.ndarray, centres: jnp.ndarray, alpha: float = 1.0) -> jnp.ndarray:
    """Student-t kernel q_ij = (1 + |z_i - mu_j|^2/a)^(-(a+1)/2), normalised over j."""
    d2 = jnp.sum(jnp.square(z[:, None, :] - centres[None, :, :]), axis=-1)
    # log-domain normalisation: stable for large distances and any alpha.
    logits = -(alpha + 1.0) / 2.0 * jnp.log1p(d2 / alpha)
    return jax.nn.softmax(logits, axis=-1)


def target_distribution(
    q: jnp.ndarray, f: jnp.ndarray | None = None, power: float = 1.0
) -> jnp.ndarray:
    """p_ij = (q_ij^2 / f_j^b) / sum_j' (q_ij'^2 / f_j'^b), f_j = sum_i q_ij over the WHOLE set.

    q: [N, K]. f: [K] soft cluster frequencies; defaults to q.sum(0), which is only right when q
    holds every row of the dataset (pass f when q is a chunk).

    power b (dec.target_power): how strongly the target favours small clusters. b = 1 is the DEC
    paper: dividing by f_j counts every cluster as if it were the same size, so the rows between
    two clusters are pulled towards the smaller one, and with a trainable encoder DEC drifts
    towards equal clusters (on a 75/25 mixture it ends near 60/40; tests/test_imbalance.py).
    b = 0 keeps no frequency normalisation: P is Q sharpened row by row (q^2) and cluster sizes
    follow the data (that test: the 75/25 split is kept). Values in between soften the prior.
    """
    f = jnp.sum(q, axis=0) if f is None else f
    w = jnp.square(q) / (f if power == 1.0 else jnp.power(f, power))
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


class Target(NamedTuple):
    """One target update: p [N, K] the new target, y_pred [N] the assignments (argmax q),
    delta_label the fraction of rows whose assignment changed since the last update, empty the
    clusters that hold no row."""

    p: np.ndarray
    y_pred: np.ndarray
    delta_label: float
    empty: list


def update_target(q: np.ndarray, y_last: np.ndarray, step: int, power: float = 1.0) -> Target:
    """The target P (frequency power `power`, see target_distribution) of soft assignments q
    [N, K] of the WHOLE dataset, and what changed since the assignments y_last [N]. Raises
    NonFiniteError (naming `step`) if q or P is not finite."""
    p = np.asarray(target_distribution(jnp.asarray(q), power=power))
    if not (np.isfinite(q).all() and np.isfinite(p).all()):
        raise NonFiniteError(
            f"non-finite soft assignments or target distribution in phase dec at step {step} "
            "(an empty cluster, or NaN/inf in the data or the parameters)."
        )
    y_pred = q.argmax(1).astype(np.int32)
    empty = np.flatnonzero(np.bincount(y_pred, minlength=q.shape[1]) == 0).tolist()
    return Target(p, y_pred, float(np.mean(y_pred != y_last)), empty)


def warn_collapsing(target: Target, step: int) -> bool:
    """Logs a warning if a cluster holds no row; returns whether it did."""
    if target.empty:
        logging.warning(
            "DEC step %d: cluster(s) %s hold no point: DEC is collapsing (often a too large "
            "dec.lr; see docs/modes.md, the paper's variants).",
            step,
            target.empty,
        )
    return bool(target.empty)


def converged(step: int, delta_label: float, tol: float) -> bool:
    """DEC's stopping rule: after the first update, fewer than `tol` of the rows changed."""
    if step > 0 and delta_label < tol:
        logging.info("DEC converged at step %d: %.5f < tol %.5f changed", step, delta_label, tol)
        return True
    return False


@functools.cache
def _row_fns(model: Autoencoder, alpha: float):
    """Jitted whole-dataset passes (replicated outputs, see parallel.map_rows), built once per
    model so that repeated passes never recompile: (encode, soft assignment q)."""

    def encode(params, xb):
        return model.apply({"params": params}, xb, method=Autoencoder.encode)

    def q(params, xb):
        return soft_assignment(encode(params["ae"], xb), params["centres"], alpha)

    return parallel.jit_rows(encode), parallel.jit_rows(q)


def embed(model: Autoencoder, params, x) -> np.ndarray:
    """[N, D] inputs -> [N, d] embeddings, in chunks of PREDICT_CHUNK rows (one compiled
    shape)."""
    return parallel.map_rows(_row_fns(model, 1.0)[0], params, x, PREDICT_CHUNK)


def predict_q(model: Autoencoder, params, x, alpha) -> np.ndarray:
    """Soft assignments [N, K] of the whole dataset, in chunks of PREDICT_CHUNK rows."""
    return parallel.map_rows(_row_fns(model, float(alpha))[1], params, x, PREDICT_CHUNK)


def train(config, model, ae_params, centres, y_init, x, y, directory, wall, y_vis=None):
    """DEC from the SAE params and the initial centres, checkpointed in `directory`; returns
    (state, history {'delta_label', 'acc' (with labels), 'loss': [[step, value]]}).

    Training runs in segments of dec.update_interval steps (the step runner); before each, the
    target P is recomputed on the whole dataset (dec.update_target; its frequency power is
    dec.target_power, 1 = the paper), logging delta_label (and
    acc, with labels y, read for that only), and DEC stops once fewer than dec.tol rows change.
    Optional terms (`dec_loss`): dec.gamma > 0 adds the reconstruction loss (IDEC);
    dec.supervised_weight > 0 the semi-supervised term on the rows of y_vis >= 0, whose classes
    map to clusters by dec_init.cluster_classes.

    Checkpointed state: DEC train state, P, the assignments at the last target update (y_last),
    the step at which P was computed (p_step) and whether DEC converged (done; a run at
    dec.maxiter is finished too).
    """
    d = config.dec
    params = {"ae": ae_params, "centres": jnp.asarray(centres)}
    state = DECState.create(apply_fn=model.apply, tx=make_optimizer(d), params=params)
    ckpt = Checkpointer(directory)
    template = {
        "state": state,
        "p": np.zeros((len(x), d.n_clusters), np.float32),
        "y_last": y_init.astype(np.int32),
        "p_step": np.int32(-1),
        "done": np.int32(0),
    }
    _, saved = ckpt.restore(template)
    state, p, y_last = parallel.replicate(saved["state"]), saved["p"], saved["y_last"]
    step, p_step = int(saved["state"].step), int(saved["p_step"])
    runner = StepRunner(
        "dec",
        ckpt,
        total=d.maxiter,
        start=step,
        every=config.checkpoint_every,
        log_every=d.update_interval,
        wall=wall,
    )
    if saved["done"] or step >= d.maxiter:  # a finished phase is restored, never redone
        runner.close()
        return state, runner.history
    step_fn = _dec_step(d, model)
    allowed = _allowed(d, y_init, y_vis, len(x))
    sampler = BatchSampler(len(x), d.batch_size, seed=config.seed * 1000 + 999)
    warned = False
    while step < d.maxiter:
        if step % d.update_interval == 0 and p_step != step:
            runner.guard.check(step)
            q = predict_q(model, state.params, x, d.alpha)
            target = update_target(q, y_last, step, d.target_power)
            p, y_last, p_step = target.p, target.y_pred, step
            warned = warned or warn_collapsing(target, step)
            acc = {} if y is None else {"acc": metrics.cluster_acc(y, y_last)}
            runner.log(step, delta_label=target.delta_label, **acc)
            if converged(step, target.delta_label, d.tol):
                runner.save(step, _dec_tree(state, p, y_last, p_step, done=True), wait=True)
                break
        stop = min(d.maxiter, (step // d.update_interval + 1) * d.update_interval)
        extra = _dec_tree(None, p, y_last, p_step, done=False)
        batch_fn = functools.partial(_dec_batch, x, p, allowed, sampler, d.batch_size)
        state = runner.run(state, step_fn, batch_fn, stop=stop, extra_state=extra)
        step = stop
    runner.close()
    return state, runner.history


def _dec_step(d, model):
    return make_train_step(
        lambda v, xb: model.apply(v, xb, method=Autoencoder.encode),
        d.alpha,
        reconstruct=lambda v, xb: model.apply(v, xb),
        gamma=d.gamma,
        supervised_weight=d.supervised_weight,
    )


def _allowed(d, y_init, y_vis, n):
    """[N, K] clusters each row's visible class maps to (dec.supervised_weight > 0), else None."""
    if not d.supervised_weight:
        return None
    if y_vis is None:
        y_vis = np.full(n, -1, np.int32)  # no visible label: the term is 0
    classes_of = dec_init.cluster_classes(d.init, y_init, y_vis, d.n_clusters)
    return dec_init.allowed_clusters(y_vis, classes_of)


def _dec_tree(state, p, y_last, p_step, done):
    """DEC's checkpoint (without 'state' when state is None: the step runner adds it)."""
    tree = {"p": p, "y_last": y_last, "p_step": np.int32(p_step), "done": np.int32(done)}
    return tree if state is None else {"state": state, **tree}


def _dec_batch(x, p, allowed, sampler, global_rows, i):
    """Global batch i of DEC: this process's rows of x, P (and allowed), sharded."""
    idx = sampler(i)[parallel.local_rows(global_rows)]
    rows = (x[idx], p[idx]) if allowed is None else (x[idx], p[idx], allowed[idx])
    return parallel.batch(*rows, global_rows=global_rows)
