"""Mode `scan`: SCAN-style clustering (galaxy_jax/scan.py) on cached vectors (configs/scan.py).

Phases, each resumable like DEC's (a finished phase is restored, never redone), in the workdir:
  neighbours.npz   the scan.k_neighbours nearest other rows of every row, mined once, exactly
                   (galaxy_jax/neighbours.py: chunked device matmuls); keyed by a digest of the
                   data, k and the metric: mined again when they differ or the file is unreadable
  scan/            heads trained so that a row and one of its neighbours agree, with an entropy
                   term against collapse (Orbax checkpoints, history.json, run_config.json)
  selflabel/       the head of lowest SCAN loss over all neighbours (scan.head_losses), trained on
                   its own confident pseudo-labels through a perturbed view (class-balanced CE)
  results.json, assignments.npy, q.npy [N, K], ids.npy   written at the end (atomically);
                   metrics 'scan' (the kept head) and 'selflabel' when the data are labelled

Every random choice is a pure function of (seed, step): the batch rows (BatchSampler), which
neighbour is each anchor's positive (NumPy, seeded by (seed, step)), the perturbation
(fold_in(key, step) inside the step). So a resumed run is bit-identical to an uninterrupted one.
Each step is compiled ahead of time once per phase by the step runner (wall_s['<phase>/compile']).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import time
import zipfile

import jax
import numpy as np
from absl import logging

from galaxy_jax import atomic, metrics, neighbours, parallel, scan, validate
from galaxy_jax.checkpoint import Checkpointer
from galaxy_jax.data.vectors import load_vectors
from galaxy_jax.optim import make_optimizer
from galaxy_jax.train_loop import BatchSampler, StepRunner
from galaxy_jax.workdir import (
    check_run_config,
    check_workdir_writable,
    prepare_workdir,
    write_results_primary,
)

# What each phase directory's checkpoints depend on (checked by check_run_config on resume).
PHASE_FIELDS = {
    "scan": ("seed", "data", "scan"),
    "selflabel": ("seed", "data", "scan", "selflabel"),
}
PREDICT_CHUNK = 8192  # rows per jitted forward pass over the whole dataset
DIGEST_CHUNK = 65536  # rows per read of the data digest


def setup(config, workdir):
    """Validates config and data before creating anything, then checks that each phase's
    checkpoints in workdir were written by this config. Returns (data, absolute workdir)."""
    validate.scan(config)
    check_workdir_writable(workdir)
    data = load_vectors(config.data)
    validate.scan_vectors(config, data.x)
    parallel.check_batch_size("scan.batch_size", config.scan.batch_size)
    parallel.check_batch_size("selflabel.batch_size", config.selflabel.batch_size)
    workdir = prepare_workdir(workdir)
    for phase, fields in PHASE_FIELDS.items():
        check_run_config(os.path.join(workdir, phase), config, fields)
    return data, workdir


def data_digest(x) -> str:
    """SHA-256 of the shape and float32 rows of x (streamed in blocks)."""
    h = hashlib.sha256(f"{tuple(x.shape)}".encode())
    for lo in range(0, len(x), DIGEST_CHUNK):
        h.update(np.ascontiguousarray(x[lo : lo + DIGEST_CHUNK], np.float32).tobytes())
    return h.hexdigest()


def mine_neighbours(config, x, workdir) -> np.ndarray:
    """[N, k] neighbours of every row, from workdir/neighbours.npz when it was mined from these
    data with this k and metric, else mined (exactly, so mining again gives the same) and saved."""
    s = config.scan
    key = f"{data_digest(x)} k={s.k_neighbours} metric={s.metric}"
    path = os.path.join(workdir, "neighbours.npz")
    if os.path.isfile(path):
        try:
            with np.load(path) as f:
                if str(f["key"]) == key:
                    return f["idx"].astype(np.int64)
            logging.info("%s was mined from other data or settings; mining again.", path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            logging.warning("%s is unreadable (%s); mining the neighbours again.", path, e)
    _, idx = neighbours.mine(x, s.k_neighbours, s.metric)
    if parallel.is_primary():
        buf = io.BytesIO()
        np.savez(buf, idx=idx.astype(np.int32), key=np.asarray(key))
        atomic.write_bytes(path, buf.getvalue())
    return idx


@functools.cache
def _probs_fn(head: scan.ClusterHead):
    """Jitted [B, D] -> [B, H, K] probabilities (replicated), built once per head."""
    return parallel.jit_rows(lambda params, xb: scan.predict(head.apply, params, xb).swapaxes(0, 1))


def probabilities(head, params, x) -> np.ndarray:
    """[H, N, K] probabilities of every head for every row, in chunks of PREDICT_CHUNK rows."""
    return parallel.map_rows(_probs_fn(head), params, x, PREDICT_CHUNK).swapaxes(0, 1)


def _scan_batch(x, nb, sampler, seed, rows, i):
    """Global batch i of the scan phase: anchors and one neighbour of each, drawn from (seed, i)."""
    idx = sampler(i)
    pick = np.random.default_rng([seed, 2, i]).integers(0, nb.shape[1], len(idx))
    mine = parallel.local_rows(rows)
    return parallel.batch(x[idx[mine]], x[nb[idx, pick][mine]], global_rows=rows)


def _rows_batch(x, sampler, rows, i):
    return parallel.batch(x[sampler(i)[parallel.local_rows(rows)]], global_rows=rows)


def run_phase(name, config, workdir, state, step_fn, batch_fn, total, wall, history):
    """One phase on the step runner, checkpointed in workdir/name: resumes from its latest
    checkpoint; a finished phase is restored, never redone. Returns the final state."""
    t0 = time.time()
    ckpt = Checkpointer(os.path.join(workdir, name))
    _, state = ckpt.restore(state)
    runner = StepRunner(
        name,
        ckpt,
        total=total,
        start=int(state.step),
        every=config.checkpoint_every,
        log_every=config.log_every,
        wall=wall,
    )
    state = parallel.replicate(state)
    if int(state.step) < total:
        state = runner.run(state, step_fn, batch_fn)
    runner.close()
    wall[name] = time.time() - t0
    history[name] = runner.history
    return state


def _score(out, name, y, y_pred, what):
    if y is not None:
        out[name] = metrics.all_metrics(y, y_pred)
        metrics.log_metrics(what, out[name])


def run_scan(config, workdir):
    """Neighbours (mined or cached), the scan phase, the best head, then self-labelling."""
    t_start = time.time()
    data, workdir = setup(config, workdir)
    x, y, s, sl = data.x, data.y, config.scan, config.selflabel
    wall, history, scores = {}, {}, {}
    t0 = time.time()
    nb = mine_neighbours(config, x, workdir)
    wall["neighbours"] = time.time() - t0

    root = jax.random.PRNGKey(config.seed)
    head = scan.ClusterHead(s.n_clusters, s.hidden, s.n_heads)
    params = head.init(jax.random.fold_in(root, 0), np.asarray(x[0:1], np.float32))["params"]
    state = scan.ScanState.create(
        apply_fn=head.apply, params=params, tx=make_optimizer(s), key=jax.random.fold_in(root, 1)
    )
    sampler = BatchSampler(len(x), s.batch_size, seed=config.seed * 1000 + 11)
    batch_fn = functools.partial(_scan_batch, x, nb, sampler, config.seed, s.batch_size)
    step_fn = scan.make_scan_step(s.entropy_weight)
    state = run_phase("scan", config, workdir, state, step_fn, batch_fn, s.steps, wall, history)
    steps = {"scan": int(state.step)}

    t0 = time.time()
    head_losses = scan.head_losses(probabilities(head, state.params, x), nb, s.entropy_weight)
    best = int(np.argmin(head_losses))
    one = scan.ClusterHead(s.n_clusters, s.hidden)
    # replicated like the trained params, so the whole-set pass compiles once for this head
    params = parallel.replicate(scan.select_head(jax.device_get(state.params), best, s.n_clusters))
    q = probabilities(one, params, x)[0]
    wall["select_head"] = time.time() - t0
    confident = float(
        np.mean(q.max(1) > sl.threshold)
    )  # the pseudo-labels self-labelling starts from
    _score(scores, "scan", y, q.argmax(1), f"SCAN (head {best} of {s.n_heads})")

    if sl.steps:
        state = scan.ScanState.create(
            apply_fn=one.apply,
            params=params,
            tx=make_optimizer(sl),
            key=jax.random.fold_in(root, 2),
        )
        sampler = BatchSampler(len(x), sl.batch_size, seed=config.seed * 1000 + 12)
        batch_fn = functools.partial(_rows_batch, x, sampler, sl.batch_size)
        step_fn = scan.make_selflabel_step(sl.threshold, sl.dropout, sl.noise)
        args = ("selflabel", config, workdir, state, step_fn, batch_fn, sl.steps, wall, history)
        state = run_phase(*args)
        steps["selflabel"] = int(state.step)
        q = probabilities(one, state.params, x)[0]
        _score(scores, "selflabel", y, q.argmax(1), "SCAN + self-labelling")

    y_pred = q.argmax(1).astype(np.int32)
    if parallel.is_primary():
        atomic.save_npy(os.path.join(workdir, "assignments.npy"), y_pred)
        atomic.save_npy(os.path.join(workdir, "q.npy"), q.astype(np.float32))
        atomic.save_npy(os.path.join(workdir, "ids.npy"), np.asarray(data.ids).astype(str))
    wall["total"] = time.time() - t_start
    return write_results_primary(
        workdir,
        config,
        mode="scan",
        metrics=scores,
        wall_s=wall,
        history=history,
        steps=steps,
        scan_head=best,
        scan_head_losses=[float(v) for v in head_losses],
        confident_after_scan=confident,
    )
