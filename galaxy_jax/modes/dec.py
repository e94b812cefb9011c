"""Modes on vector data (MNIST pixels or extracted features): kmeans, pretrain and dec.

Workdir layout:
  sae/layer_<i>/, sae/finetune/   Orbax checkpoints of the autoencoder phases
  dec/                            Orbax checkpoints of DEC; dec/init.npz holds the k-means init
  results.json, assignments.npy, q.npy [N, K], embedding.npy [N, d], centres.npy [K, d],
  ids.npy [N]                     written at the end (atomically)

Scale (README, "Scale"): the inputs may be a disk reader (galaxy_jax/data/vectors.DiskRows);
training reads only the rows of each batch, and whole-dataset passes go in chunks of
PREDICT_CHUNK rows. What is kept in memory per row is small: the embedding [N, d], the soft
assignments q and the target P [N, K]. DEC's target is computed in one pass: the pass keeps q for
every row (K floats), sums f_j = sum_i q_ij on the way, and P follows from q and f without
re-reading the inputs. The clustering used for the initialisation is fitted on at most
dec.init_sample rows (seeded draw) and then assigns every row.

Devices and processes (galaxy_jax/parallel.py): every train step runs data-parallel over all
devices of all processes, batches sharded and parameters replicated; each process reads its own
rows of every batch and chunk. Every step function is compiled ahead of time once per phase
(its time is reported as wall_s['<phase>/compile']), so a step can never recompile.

Resume order of every phase: this phase's own latest checkpoint, else the final params of the
phase before it, else a fresh initialisation. A finished phase is restored, never redone.

Reliability (tests/test_reliability.py): the config and the data are checked before the workdir
is created; history.json is written before each checkpoint (so it is never behind one, and the
entries past the restored step are dropped); a FiniteGuard stops a phase whose loss goes NaN/inf,
naming the first bad step, and a non-finite state is never checkpointed.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from galaxy_jax import atomic, dec, dec_init, metrics, parallel, preemption, sae, validate
from galaxy_jax.checkpoint import Checkpointer, NonFiniteStateError
from galaxy_jax.data.vectors import load_vectors
from galaxy_jax.models.autoencoder import Autoencoder
from galaxy_jax.train_loop import BatchSampler, FiniteGuard, NonFiniteError
from galaxy_jax.workdir import (
    check_run_config,
    check_workdir_writable,
    prepare_workdir,
    write_results,
)

PREDICT_CHUNK = 8192  # rows per jitted forward pass over the whole dataset


# What each phase directory's checkpoints depend on (checked by check_run_config on resume).
PHASE_FIELDS = {"sae": ("seed", "data", "sae"), "dec": ("seed", "data", "sae", "dec")}


def setup(config, workdir, phases=()):
    """Validates config and data before creating anything, then checks that the checkpoints of
    `phases` (keys of PHASE_FIELDS) in workdir were written by this config.

    Returns (data, absolute workdir).
    """
    validate.config_fields(config)
    check_workdir_writable(workdir)
    data = load_vectors(config.data)
    validate.vectors(config, data.x)
    validate.labels(config, data.y)
    parallel.check_batch_size("sae.batch_size", config.sae.batch_size)
    parallel.check_batch_size("dec.batch_size", config.dec.batch_size)
    workdir = prepare_workdir(workdir)
    for phase in phases:
        check_run_config(os.path.join(workdir, phase), config, PHASE_FIELDS[phase])
    return data, workdir


def _save(ckpt, step, state, phase, guard, wait=False):
    """Checkpoints `state` unless a loss since the last check or the state itself is non-finite."""
    guard.check(step)
    try:
        ckpt.save(step, state, wait=wait)
    except NonFiniteStateError as e:
        raise NonFiniteError(
            f"non-finite state in phase {phase} after step {step}: {e}. Not checkpointed; lower "
            "the learning rate, or check the input data for NaN/inf."
        ) from None


# ----------------------------------------------------------------------------------- k-means


def _kmeans_assign(config, x, y, workdir, name) -> dict:
    """k-means (dec.n_clusters, dec.kmeans_n_init restarts, seeded) on x [N, D], fitted on at most
    dec.init_sample rows; writes assignments.npy and returns the metrics against y ({} when
    unlabelled)."""
    d = config.dec
    _, y_pred = dec_init.init_centres(
        "kmeans", x, d.n_clusters, config.seed, d.kmeans_n_init, max_points=_init_sample(config)
    )
    m = metrics.all_metrics(y, y_pred) if y is not None else {}
    if parallel.is_primary():
        atomic.save_npy(os.path.join(workdir, "assignments.npy"), y_pred.astype(np.int32))
    _log_metrics(name, m)
    return m


def run_kmeans(config, workdir):
    """Baseline: k-means straight on the input vectors (pixels or features)."""
    t0 = time.time()
    data, workdir = setup(config, workdir)
    m = _kmeans_assign(config, data.x, data.y, workdir, "k-means on inputs")
    return _write_results(
        workdir,
        config,
        mode="kmeans",
        metrics={"kmeans_input": m},
        wall_s={"kmeans": time.time() - t0},
    )


# ------------------------------------------------------------------------------ autoencoder


def _sae_phases(config):
    n = len(config.sae.dims)
    phases = [(f"layer_{i}", i, config.sae.layerwise_steps) for i in range(n)]
    return [p for p in phases if p[2] > 0] + [("finetune", None, config.sae.finetune_steps)]


def pretrain_sae(config, x: np.ndarray, workdir: str, wall: dict, history: dict):
    """Greedy layer-wise denoising pretraining, then end-to-end fine-tuning; returns params."""
    s = config.sae
    model = Autoencoder((x.shape[1], *s.dims))
    root = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    params = None
    for k, (name, layer, total) in enumerate(_sae_phases(config)):
        if total == 0:
            continue
        t0 = time.time()
        tx = sae.make_optimizer(s.optimizer, s.lr, s.momentum, s.lr_decay_every, s.lr_decay)
        state = sae.create_state(model, tx, jax.random.fold_in(root, k), params)
        ckpt = Checkpointer(os.path.join(workdir, "sae", name))
        _, state = ckpt.restore(state)
        state = parallel.replicate(state)
        if layer is None:
            make_step = lambda: sae.make_finetune_step(model)  # noqa: E731
        else:
            make_step = lambda layer=layer: sae.make_layer_step(model, layer, s.dropout)  # noqa: E731
        sampler = BatchSampler(len(x), s.batch_size, seed=config.seed * 1000 + k)
        mine = parallel.local_rows(s.batch_size)
        state, hist = _train_loop(
            f"sae/{name}",
            state,
            make_step,
            lambda i, sampler=sampler, mine=mine: (x[sampler(i)[mine]],),
            s.batch_size,
            total,
            ckpt,
            config,
            wall,
        )
        ckpt.close()
        params = state.params
        wall[f"sae/{name}"] = time.time() - t0
        history[f"sae/{name}"] = hist
    return model, params


def _train_loop(phase, state, make_step, batch_fn, global_batch, total, ckpt, config, wall):
    """Runs make_step()'s step from state.step to `total`, checkpointing, honouring preemption.

    batch_fn(i) -> this process's rows of global batch i (a tuple of arrays). The step is
    compiled once, ahead of time, on the first batch (wall[phase + '/compile']).
    Returns (state, history) where history is [[step, loss], ...] at log steps, kept across
    resumes in <phase dir>/history.json.
    """
    hist_path = os.path.join(ckpt.directory, "history.json")
    start = int(state.step)
    history = [h for h in _read_json(hist_path, []) if h[0] <= start]
    if start >= total:
        return state, history
    step_fn = None
    guard = FiniteGuard(phase)
    bar = tqdm(
        range(start, total), initial=start, total=total, desc=phase, leave=False, disable=None
    )
    for i in bar:
        batch = parallel.batch(*batch_fn(i), global_rows=global_batch)
        if step_fn is None:
            step_fn = compile_step(make_step(), wall, phase, state, *batch)
        state, loss = step_fn(state, *batch)
        step = i + 1
        guard.update(loss, step)  # on device: no host sync
        if step % config.log_every == 0 or step == total:  # the only host syncs of the loop
            guard.check(step)
            history.append([step, float(loss)])
            bar.set_postfix(loss=f"{history[-1][1]:.4g}")
        stop = preemption.requested()
        if step % config.checkpoint_every == 0 or step == total or stop:
            # history first: a kill between the two leaves it ahead of the checkpoint (trimmed
            # on resume), never behind it (entries lost).
            atomic.write_json(hist_path, history)
            _save(ckpt, step, state, phase, guard, wait=stop or step == total)
        if stop:
            raise preemption.Preempted(f"{phase} stopped at step {step}; checkpoint saved")
    return state, history


def compile_step(jitted, wall, phase, *args):
    """jitted.lower(*args).compile(), timed into wall[phase + '/compile']. Calling the result
    with other shapes or shardings raises instead of recompiling."""
    t0 = time.time()
    compiled = jitted.lower(*args).compile()
    wall[f"{phase}/compile"] = time.time() - t0
    return compiled


def _read_json(path, default):
    import json

    if not os.path.isfile(path):
        return default
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:  # written atomically, so only outside damage gets here
        logging.warning("%s is unreadable (%s); its entries are lost.", path, e)
        return default


def run_pretrain(config, workdir):
    """Pretrains the SAE only, and reports k-means on its embedding."""
    data, workdir = setup(config, workdir, phases=("sae",))
    wall, history = {}, {}
    model, params = pretrain_sae(config, data.x, workdir, wall, history)
    z = embed(model, params, data.x)
    t0 = time.time()
    m = _kmeans_assign(config, z, data.y, workdir, "k-means on SAE embedding")
    wall["kmeans"] = time.time() - t0
    return _write_results(
        workdir,
        config,
        mode="pretrain",
        metrics={"kmeans_embedding": m},
        wall_s=wall,
        history=history,
    )


def _write_results(workdir, config, **fields) -> dict:
    """results.json from the primary process only (every process computes the same results)."""
    if parallel.is_primary():
        return write_results(workdir, config, **fields)
    return fields


def _init_sample(config) -> int:
    return config.dec.get("init_sample", dec_init.DEFAULT_INIT_SAMPLE)


@functools.cache
def _row_fns(model: Autoencoder, alpha: float):
    """Jitted whole-dataset passes (replicated outputs, see parallel.map_rows), built once per
    model so that repeated passes never recompile: (encode, soft assignment q)."""

    def encode(params, xb):
        return model.apply({"params": params}, xb, method=Autoencoder.encode)

    def q(params, xb):
        return dec.soft_assignment(encode(params["ae"], xb), params["centres"], alpha)

    return parallel.jit_rows(encode), parallel.jit_rows(q)


def embed(model: Autoencoder, params, x) -> np.ndarray:
    """[N, D] inputs -> [N, d] embeddings, in chunks of PREDICT_CHUNK rows (one compiled
    shape)."""
    return parallel.map_rows(_row_fns(model, 1.0)[0], params, x, PREDICT_CHUNK)


# ---------------------------------------------------------------------------------------- DEC


def _init(config, z, y_vis, workdir):
    """Initial centres and assignments (dec.init), cached in dec/init.npz so that a resumed run
    reuses them exactly. y_vis: [N] visible labels (-1 hidden), read only by init 'labels'."""
    path = os.path.join(workdir, "dec", "init.npz")
    if os.path.isfile(path):
        try:
            with np.load(path) as f:
                return f["centres"], f["labels"]
        except (OSError, ValueError, KeyError) as e:  # every init is seeded: recomputing is exact
            logging.warning("%s is unreadable (%s); recomputing the initialisation.", path, e)
    d = config.dec
    centres, labels = dec_init.init_centres(
        d.get("init", "kmeans"),
        z,
        d.n_clusters,
        config.seed,
        d.kmeans_n_init,
        y_vis,
        max_points=_init_sample(config),
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    import io

    buf = io.BytesIO()
    np.savez(buf, centres=centres, labels=labels)
    atomic.write_bytes(path, buf.getvalue())
    return centres, labels


def _visible(config, y):
    """The labels training may read: dec.label_fraction of the rows (seeded), -1 elsewhere.
    None when the data are unlabelled or no label is visible."""
    fraction = config.dec.get("label_fraction", 0.0)
    if y is None or not fraction:
        return None
    return dec_init.visible_labels(y, fraction, config.seed)


def run_dec(config, workdir):
    """SAE pretraining (or its checkpoints), k-means initialisation, then DEC."""
    t_start = time.time()
    data, workdir = setup(config, workdir, phases=("sae", "dec"))
    x, y = data.x, data.y
    wall, history = {}, {}
    model, ae_params = pretrain_sae(config, x, workdir, wall, history)

    t0 = time.time()
    z = embed(model, ae_params, x)
    # Training reads labels only through y_vis; y itself is for the metrics.
    y_vis = _visible(config, y)
    centres, y_init = _init(config, z, y_vis, workdir)
    wall["kmeans_init"] = time.time() - t0
    results_metrics = {}
    if y is not None:
        # Named kmeans_embedding whatever dec.init is, so reports compare across variants.
        results_metrics["kmeans_embedding"] = metrics.all_metrics(y, y_init)
        _log_metrics(
            f"{config.dec.get('init', 'kmeans')} init on SAE embedding",
            results_metrics["kmeans_embedding"],
        )

    t0 = time.time()
    state, p, y_last, hist = _dec_loop(
        config, model, ae_params, centres, y_init, x, y, workdir, wall, y_vis
    )
    wall["dec"] = time.time() - t0
    history["dec"] = hist

    q = predict_q(model, state.params, x, config.dec.alpha)
    y_pred = q.argmax(1).astype(np.int32)
    # For the report (embedding map) and the export (distances to the centres).
    z = embed(model, state.params["ae"], x)
    if parallel.is_primary():
        atomic.save_npy(os.path.join(workdir, "assignments.npy"), y_pred)
        atomic.save_npy(os.path.join(workdir, "q.npy"), q.astype(np.float32))
        atomic.save_npy(os.path.join(workdir, "embedding.npy"), z)
        centres = np.asarray(state.params["centres"])
        atomic.save_npy(os.path.join(workdir, "centres.npy"), centres)
        atomic.save_npy(os.path.join(workdir, "ids.npy"), np.asarray(data.ids).astype(str))
    if y is not None:
        results_metrics["dec"] = metrics.all_metrics(y, y_pred)
        _log_metrics("DEC", results_metrics["dec"])
        if y_vis is not None:  # the honest score of a run that saw labels: unseen rows only
            hidden = y_vis < 0
            results_metrics["dec_hidden"] = metrics.all_metrics(y[hidden], y_pred[hidden])
            _log_metrics("DEC, rows with hidden labels", results_metrics["dec_hidden"])
    wall["total"] = time.time() - t_start
    return _write_results(
        workdir,
        config,
        mode="dec",
        metrics=results_metrics,
        wall_s=wall,
        history=history,
        dec_steps=int(state.step),
    )


def predict_q(model, params, x, alpha) -> np.ndarray:
    """Soft assignments [N, K] of the whole dataset, in chunks of PREDICT_CHUNK rows."""
    return parallel.map_rows(_row_fns(model, float(alpha))[1], params, x, PREDICT_CHUNK)


def _dec_loop(config, model, ae_params, centres, y_init, x, y, workdir, wall, y_vis=None):
    """DEC iterations with the target P recomputed on the whole dataset every update_interval.

    Optional terms (galaxy_jax/dec.py): dec.gamma > 0 adds the reconstruction loss (IDEC);
    dec.supervised_weight > 0 adds the semi-supervised term on the rows of y_vis >= 0, whose
    classes map to clusters by dec_init.cluster_classes. y is read for logged accuracy only.

    Checkpointed state: DEC train state, P, the assignments at the last target update (y_last),
    the step at which P was computed (p_step) and whether the phase has finished (done).
    """
    d = config.dec
    n = len(x)
    tx = dec.make_optimizer(d.optimizer, d.lr, d.momentum)
    encode = lambda v, xb: model.apply(v, xb, method=Autoencoder.encode)  # noqa: E731
    state = dec.DECState.create(
        apply_fn=model.apply, tx=tx, params={"ae": ae_params, "centres": jnp.asarray(centres)}
    )
    ckpt = Checkpointer(os.path.join(workdir, "dec"))
    template = {
        "state": state,
        "p": np.zeros((n, d.n_clusters), np.float32),
        "y_last": y_init.astype(np.int32),
        "p_step": np.int32(-1),
        "done": np.int32(0),
    }
    _, saved = ckpt.restore(template)
    state, p, y_last = parallel.replicate(saved["state"]), saved["p"], saved["y_last"]
    p_step, done = int(saved["p_step"]), bool(saved["done"])
    hist_path = os.path.join(ckpt.directory, "history.json")
    start = int(state.step)
    history = [h for h in _read_json(hist_path, []) if h["step"] <= start]
    if done:
        ckpt.close()
        return state, p, y_last, history

    gamma, sup = d.get("gamma", 0.0), d.get("supervised_weight", 0.0)
    step_fn = dec.make_train_step(
        encode,
        d.alpha,
        reconstruct=lambda v, xb: model.apply(v, xb),
        gamma=gamma,
        supervised_weight=sup,
    )
    allowed = None
    if sup:
        if y_vis is None:
            y_vis = np.full(n, -1, np.int32)  # no visible label: the term is 0
        classes_of = dec_init.cluster_classes(d.get("init", "kmeans"), y_init, y_vis, d.n_clusters)
        allowed = dec_init.allowed_clusters(y_vis, classes_of)
    sampler = BatchSampler(n, d.batch_size, seed=config.seed * 1000 + 999)
    mine = parallel.local_rows(d.batch_size)
    q_fn = lambda params: predict_q(model, params, x, d.alpha)  # noqa: E731

    guard = FiniteGuard("dec")

    def save(step, wait=False, finished=False):
        atomic.write_json(hist_path, history)  # first: see _train_loop
        _save(
            ckpt,
            step,
            {
                "state": state,
                "p": p,
                "y_last": y_last,
                "p_step": np.int32(p_step),
                "done": np.int32(finished),
            },
            "dec",
            guard,
            wait=wait,
        )

    bar = tqdm(total=d.maxiter, initial=start, desc="dec", leave=False, disable=None)
    step, loss, last_saved, compiled = start, None, start, None
    warned_empty = False
    while step < d.maxiter:
        if step % d.update_interval == 0 and p_step != step:
            guard.check(step)
            q = q_fn(state.params)
            p = np.asarray(dec.target_distribution(jnp.asarray(q)))
            if not (np.isfinite(q).all() and np.isfinite(p).all()):
                raise NonFiniteError(
                    f"non-finite soft assignments or target distribution in phase dec at step "
                    f"{step} (an empty cluster, or NaN/inf in the data or the parameters)."
                )
            y_pred = q.argmax(1).astype(np.int32)
            empty = np.flatnonzero(np.bincount(y_pred, minlength=d.n_clusters) == 0)
            if len(empty) and not warned_empty:
                warned_empty = True
                logging.warning(
                    "DEC step %d: cluster(s) %s hold no point: DEC is collapsing (often a too "
                    "large dec.lr; see README, Galaxy DEC).",
                    step,
                    empty.tolist(),
                )
            delta = float(np.mean(y_pred != y_last))
            y_last, p_step = y_pred, step
            entry = {
                "step": step,
                "delta_label": delta,
                "loss": None if loss is None else float(loss),
            }
            if y is not None:
                entry["acc"] = metrics.cluster_acc(y, y_pred)
            history.append(entry)
            bar.set_postfix(delta=f"{delta:.4f}", acc=f"{entry.get('acc', float('nan')):.4f}")
            if step > 0 and delta < d.tol:
                logging.info(
                    "DEC converged at step %d: %.5f < tol %.5f changed", step, delta, d.tol
                )
                break
            if step - last_saved >= config.checkpoint_every:
                save(step)
                last_saved = step
        idx = sampler(step)[mine]
        batch = (x[idx], p[idx]) if allowed is None else (x[idx], p[idx], allowed[idx])
        batch = parallel.batch(*batch, global_rows=d.batch_size)
        if compiled is None:
            compiled = compile_step(step_fn, wall, "dec", state, *batch)
        state, loss = compiled(state, *batch)
        step += 1
        guard.update(loss, step)  # on device; checked at the next target update or save
        bar.update(1)
        if preemption.requested():
            save(step, wait=True)
            ckpt.close()
            raise preemption.Preempted(f"dec stopped at step {step}; checkpoint saved")
    bar.close()
    save(step, wait=True, finished=True)
    ckpt.close()
    return state, p, y_last, history


def _log_metrics(name, m):
    if m:
        logging.info(
            "%s: acc %.4f  acc_dominant %.4f  nmi %.4f  ari %.4f",
            name,
            m["acc"],
            m["acc_dominant"],
            m["nmi"],
            m["ari"],
        )
        print(
            f"{name}: acc={m['acc']:.4f} acc_dominant={m['acc_dominant']:.4f} "
            f"nmi={m['nmi']:.4f} ari={m['ari']:.4f}"
        )
