"""Modes on vector data (MNIST pixels or extracted features): kmeans, pretrain and dec.

The training is in the library: galaxy_jax/sae.py (`pretrain`) and galaxy_jax/dec.py (`train`,
the target update, the whole-dataset passes), both on the step runner of train_loop.py; this
module wires a config to them and to the workdir:
  sae/layer_<i>/, sae/finetune/   Orbax checkpoints of the autoencoder phases
  dec/                            Orbax checkpoints of DEC; dec/init.npz holds the k-means init
  results.json, assignments.npy, q.npy [N, K], embedding.npy [N, d], centres.npy [K, d],
  ids.npy [N]                     written at the end (atomically); results.json's history is
                                  {phase: {metric: [[step, value]]}}: 'sae/<phase>': loss,
                                  'dec': delta_label, acc (labelled data), loss
  assignments_merged.npy          with dec.merge_to > 0: the clusters merged into merge_to groups
                                  (size-weighted Ward on the centres, galaxy_jax/merge.py; no
                                  labels read), results.json's 'merge' the tree and the metrics
                                  '<section>_merged' (dec_merged, kmeans_input_merged, ...)

Scale (docs/scale.md): the inputs may be a disk reader (galaxy_jax/data/vectors.DiskRows);
training reads only the rows of each batch, and whole-dataset passes go in chunks of
dec.PREDICT_CHUNK rows. What is kept in memory per row is small: the embedding [N, d], the soft
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

import os
import time

import numpy as np
from absl import logging

from galaxy_jax import atomic, dec, dec_init, merge, metrics, parallel, sae, validate
from galaxy_jax.data.vectors import load_vectors
from galaxy_jax.errors import UserError
from galaxy_jax.workdir import (
    RUN_CONFIG,
    check_run_config,
    check_workdir_writable,
    prepare_workdir,
    write_results_primary,
)

# What each phase directory's checkpoints depend on (checked by check_run_config on resume).
PHASE_FIELDS = {
    "sae": ("seed", "data", "sae"),
    "dec": ("seed", "data", "sae", "sae_from", "dec"),
}


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
        if phase == "sae" and config.sae_from:
            source = os.path.join(os.path.abspath(os.path.expanduser(config.sae_from)), "sae")
            if not os.path.isfile(os.path.join(source, RUN_CONFIG)):
                raise UserError(
                    f"sae_from={config.sae_from!r}: no autoencoder there ({source} has no "
                    f"{RUN_CONFIG}); run mode pretrain or dec with that --workdir first."
                )
            check_run_config(source, config, PHASE_FIELDS[phase])
            continue
        check_run_config(os.path.join(workdir, phase), config, PHASE_FIELDS[phase])
    return data, workdir


# ----------------------------------------------------------------------------------- k-means


def _kmeans_assign(config, x, y, workdir, name, section, method="kmeans") -> tuple[dict, dict]:
    """Clustering `method` (dec_init.INITS: k-means by default; dec.n_clusters, dec.kmeans_n_init
    restarts, seeded) of x [N, D], fitted on at most dec.init_sample rows; writes assignments.npy
    (and, with dec.merge_to, the merge of the clusters by their centres in x). Returns ({section:
    metrics against y ({} when unlabelled), section_merged: those of the merge, with labels},
    {'merge': the merge record} or {})."""
    d = config.dec
    centres, y_pred = dec_init.init_centres(
        method,
        x,
        d.n_clusters,
        config.seed,
        d.kmeans_n_init,
        _visible(config, y),
        max_points=_init_sample(config),
        umap_neighbors=d.umap_neighbors,
        spectral_neighbors=d.spectral_neighbors,
    )
    m = {section: metrics.all_metrics(y, y_pred) if y is not None else {}}
    if parallel.is_primary():
        atomic.save_npy(os.path.join(workdir, "assignments.npy"), y_pred.astype(np.int32))
    metrics.log_metrics(name, m[section])
    return m, _merge(config, centres, y_pred, y, workdir, section, m)


def _merge(config, centres, y_pred, y, workdir, section, results_metrics) -> dict:
    """dec.merge_to > 0: merges the clusters (galaxy_jax/merge.py, no labels read), writes
    assignments_merged.npy, adds the metrics `<section>_merged` to results_metrics (with labels)
    and returns {'merge': the record for results.json}; {} without a merge."""
    if not config.dec.merge_to:
        return {}
    merged, record = merge.merge_clusters(centres, y_pred, config.dec.merge_to)
    if parallel.is_primary():
        atomic.save_npy(os.path.join(workdir, "assignments_merged.npy"), merged)
    if y is not None:
        results_metrics[f"{section}_merged"] = metrics.all_metrics(y, merged)
        metrics.log_metrics(
            f"{section} merged into {record['to']}", results_metrics[f"{section}_merged"]
        )
    return {"merge": record}


def run_kmeans(config, workdir):
    """Baseline: the clustering dec.init (k-means by default) straight on the input vectors
    (pixels or features); metrics in section kmeans_input whatever the method."""
    t0 = time.time()
    data, workdir = setup(config, workdir)
    init = config.dec.init
    m, merged = _kmeans_assign(
        config, data.x, data.y, workdir, f"{init} on inputs", "kmeans_input", method=init
    )
    return write_results_primary(
        workdir,
        config,
        mode="kmeans",
        metrics=m,
        wall_s={"kmeans": time.time() - t0},
        **merged,
    )


# ------------------------------------------------------------------------------ autoencoder


def run_pretrain(config, workdir):
    """Pretrains the SAE only (or reads another run's, `sae_from`), and clusters its embedding
    with dec.init: k-means by default; 'umap' is N2D (UMAP, then a Gaussian mixture)."""
    t_start = time.time()
    data, workdir = setup(config, workdir, phases=("sae",))
    wall, history = {}, {}
    model, params = _pretrain(config, data.x, workdir, wall, history)
    z = dec.embed(model, params, data.x)
    t0 = time.time()
    name = f"{config.dec.init} on SAE embedding"
    m, merged = _kmeans_assign(
        config, z, data.y, workdir, name, "kmeans_embedding", method=config.dec.init
    )
    wall["kmeans"] = time.time() - t0
    wall["total"] = time.time() - t_start
    return write_results_primary(
        workdir,
        config,
        mode="pretrain",
        metrics=m,
        wall_s=wall,
        history=history,
        **merged,
    )


def _pretrain(config, x, workdir, wall, history):
    """sae.pretrain in workdir/sae, or, with `sae_from`, the finished autoencoder of that run
    (checked to be of the same seed, data and sae settings; read, never trained further)."""
    if not config.sae_from:
        return sae.pretrain(config, x, os.path.join(workdir, "sae"), wall, history)
    source = os.path.join(os.path.abspath(os.path.expanduser(config.sae_from)), "sae")
    t0 = time.time()
    model, params = sae.pretrain(config, x, source, {}, {}, finished_only=True)
    wall["sae/shared"] = time.time() - t0
    return model, params


def _init_sample(config) -> int:
    return config.dec.init_sample


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
        d.init,
        z,
        d.n_clusters,
        config.seed,
        d.kmeans_n_init,
        y_vis,
        max_points=_init_sample(config),
        umap_neighbors=d.umap_neighbors,
        spectral_neighbors=d.spectral_neighbors,
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
    fraction = config.dec.label_fraction
    if y is None or not fraction:
        return None
    return dec_init.visible_labels(y, fraction, config.seed)


def run_dec(config, workdir):
    """SAE pretraining (or its checkpoints), k-means initialisation, then DEC."""
    t_start = time.time()
    data, workdir = setup(config, workdir, phases=("sae", "dec"))
    x, y = data.x, data.y
    wall, history = {}, {}
    model, ae_params = _pretrain(config, x, workdir, wall, history)

    t0 = time.time()
    z = dec.embed(model, ae_params, x)
    # Training reads labels only through y_vis; y itself is for the metrics.
    y_vis = _visible(config, y)
    centres, y_init = _init(config, z, y_vis, workdir)
    wall["kmeans_init"] = time.time() - t0
    results_metrics = {}
    if y is not None:
        # Named kmeans_embedding whatever dec.init is, so reports compare across variants.
        results_metrics["kmeans_embedding"] = metrics.all_metrics(y, y_init)
        metrics.log_metrics(
            f"{config.dec.init} init on SAE embedding",
            results_metrics["kmeans_embedding"],
        )

    t0 = time.time()
    dec_dir = os.path.join(workdir, "dec")
    state, hist = dec.train(config, model, ae_params, centres, y_init, x, y, dec_dir, wall, y_vis)
    wall["dec"] = time.time() - t0
    history["dec"] = hist

    q = dec.predict_q(model, state.params, x, config.dec.alpha)
    y_pred = q.argmax(1).astype(np.int32)
    # For the report (embedding map) and the export (distances to the centres).
    z = dec.embed(model, state.params["ae"], x)
    centres = np.asarray(state.params["centres"])
    if parallel.is_primary():
        atomic.save_npy(os.path.join(workdir, "assignments.npy"), y_pred)
        atomic.save_npy(os.path.join(workdir, "q.npy"), q.astype(np.float32))
        atomic.save_npy(os.path.join(workdir, "embedding.npy"), z)
        atomic.save_npy(os.path.join(workdir, "centres.npy"), centres)
        atomic.save_npy(os.path.join(workdir, "ids.npy"), np.asarray(data.ids).astype(str))
    if y is not None:
        results_metrics["dec"] = metrics.all_metrics(y, y_pred)
        metrics.log_metrics("DEC", results_metrics["dec"])
        if y_vis is not None:  # the honest score of a run that saw labels: unseen rows only
            hidden = y_vis < 0
            results_metrics["dec_hidden"] = metrics.all_metrics(y[hidden], y_pred[hidden])
            metrics.log_metrics("DEC, rows with hidden labels", results_metrics["dec_hidden"])
    # Merged in the embedding, where DEC's centres live.
    merged = _merge(config, centres, y_pred, y, workdir, "dec", results_metrics)
    wall["total"] = time.time() - t_start
    return write_results_primary(
        workdir,
        config,
        mode="dec",
        metrics=results_metrics,
        wall_s=wall,
        history=history,
        dec_steps=int(state.step),
        **merged,
    )
