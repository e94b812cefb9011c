"""Supervised references (seed paper, section 4.1): modes `supervised_ann` and `supervised_cnn`.

supervised_ann: an MLP (ReLU layers, sigmoid output, binary cross-entropy, Adam) on frozen
  feature vectors: the `extract` mode's output (data.name='features'), or any vector dataset.
supervised_cnn: Xception (ImageNet, random or a weights file) fine-tuned end to end with a
  sigmoid head, BCE, Adam (`optim.schedule`: constant lr, or cosine-decayed to 0 at the last
  step) and the training augmentations of galaxy_jax.data.preprocess. Batch norm statistics
  are updated in training (mutable batch_stats) and used frozen in evaluation.
  `model.width` and `model.middle_blocks` (galaxy_jax/models/xception.py; defaults 1.0 and 8 are
  Keras' Xception) give a smaller network of the same design, trained from weights='random'; a
  weights file fixes the architecture (Keras' for 'imagenet' and .h5, the JSON beside an `ssl`
  encoder's .npz), and other non-default fields are an error.
  Data-parallel over all devices: the batch is sharded along mesh axis 'data', the state is
  replicated.

The splits, metrics, steps and the CNN's variables are in galaxy_jax/supervised.py (split.seed
is fixed across training seeds, so seeds vary only the training); the loop is the step runner
(galaxy_jax/train_loop.py). Workdir:
  ckpt/            Orbax checkpoints (resume: this run's checkpoint, then the pretrained
                   weights, then a fresh initialisation); ckpt/history.json the logged curves
  results.json     metrics.{val,test}: accuracy, roc_auc, confusion [[TN, FN], [FP, TP]]
                   (rows predicted 0/1, columns true 0/1), n; split sizes; history
                   {mode: {'loss': [[step, value]], 'val_accuracy': [[step, value]]}}
  predictions.npz  probabilities and labels of the val and test rows, with their ids
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from galaxy_jax import atomic, parallel, validate
from galaxy_jax.checkpoint import Checkpointer
from galaxy_jax.data.loader import image_batches
from galaxy_jax.errors import UserError
from galaxy_jax.models.heads import MLPHead, XceptionBinary
from galaxy_jax.models.xception import MIN_SIZE
from galaxy_jax.optim import make_optimizer
from galaxy_jax.supervised import (
    ann_train_step,
    binary_metrics,
    check_binary,
    chunks,
    cnn_architecture,
    cnn_predict,
    cnn_train_step,
    cnn_variables,
    make_splits,
)
from galaxy_jax.train_loop import BatchSampler, State, StepRunner
from galaxy_jax.workdir import check_run_config, prepare_workdir, write_results

# What the checkpoints depend on (checked by check_run_config on resume).
RUN_FIELDS = ("seed", "data", "split", "model", "optim", "weights", "augment")


def _train(config, workdir, state, step_fn, batch_fn, ckpt, predict, ids, y, splits, t0, **extra):
    """Trains state.step -> config.optim.steps with the step runner (history: 'loss', and
    'val_accuracy' every config.eval_every steps), then evaluates val and test with
    predict(state, idx) -> probabilities, and writes predictions.npz and results.json (with
    `extra` fields, e.g. the CNN's weights)."""

    def eval_fn(state):
        prob = predict(state, splits["val"])
        return {"val_accuracy": binary_metrics(y[splits["val"]], prob)["accuracy"]}

    wall, t1 = {}, time.time()
    runner = StepRunner(
        config.mode,
        ckpt,
        total=int(config.optim.steps),
        start=int(state.step),
        every=config.checkpoint_every,
        log_every=config.log_every,
        wall=wall,
        eval_fn=eval_fn if len(splits["val"]) else None,
        eval_every=config.eval_every,
    )
    state = runner.run(state, step_fn, batch_fn)
    runner.close()
    wall["train"] = time.time() - t1
    metrics, arrays = {}, {}
    for s in ("val", "test"):
        idx = splits[s]
        if len(idx) == 0:
            continue
        prob = predict(state, idx)
        metrics[s] = m = binary_metrics(y[idx], prob)
        arrays.update({f"{s}_ids": np.asarray(ids)[idx], f"{s}_prob": prob, f"{s}_y": y[idx]})
        print(f"{config.mode} {s}: accuracy={m['accuracy']:.4f} roc_auc={m['roc_auc']} n={m['n']}")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic.write_bytes(os.path.join(workdir, "predictions.npz"), buf.getvalue())
    wall["total"] = time.time() - t0
    return write_results(
        workdir,
        config,
        mode=config.mode,
        metrics=metrics,
        history={config.mode: runner.history},
        split_sizes={s: int(len(v)) for s, v in splits.items()},
        wall_s=wall,
        **extra,
    )


# -------------------------------------------------------------------------------------- ANN


def run_ann(config, workdir: str) -> dict:
    """MLP on frozen features; see the module docstring."""
    validate.supervised_ann(config)
    from galaxy_jax.data.vectors import load_vectors

    t0 = time.time()
    data = load_vectors(config.data)
    y = check_binary(data.y, f"data {config.data.get('path', config.data.name)}")
    splits = make_splits(config, data.ids, y)
    workdir = prepare_workdir(workdir)
    check_run_config(os.path.join(workdir, "ckpt"), config, RUN_FIELDS)
    x = np.asarray(data.x, np.float32)
    if config.standardize:  # train-split statistics only: no information from val / test
        mu = x[splits["train"]].mean(0)
        sd = x[splits["train"]].std(0) + 1e-6
        x = (x - mu) / sd

    model = MLPHead(tuple(config.model.hidden), config.model.dropout)
    root = jax.random.PRNGKey(config.seed)
    init_key, dropout_key = jax.random.split(root)
    params = model.init(init_key, jnp.zeros((1, x.shape[1]), jnp.float32))["params"]
    tx = make_optimizer(config.optim)
    state = State.create(apply_fn=model.apply, params=params, tx=tx)
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"))
    _, state = ckpt.restore(state)  # this run's checkpoint, else the fresh initialisation
    # Data-parallel over every device (galaxy_jax/parallel.py): replicated state, sharded batch.
    state, dropout_key = parallel.replicate((state, dropout_key))

    step_fn = jax.jit(functools.partial(ann_train_step, model=model), donate_argnums=(0,))
    logits_fn = jax.jit(lambda p, xb: jax.nn.sigmoid(model.apply({"params": p}, xb)))
    train_idx = splits["train"]
    batch_size = int(config.optim.batch_size)
    parallel.check_batch_size("optim.batch_size", batch_size)
    sampler = BatchSampler(len(train_idx), batch_size, seed=config.seed)
    mine = parallel.local_rows(batch_size)

    def batch_fn(i):
        idx = train_idx[sampler(i)[mine]]
        return (*parallel.batch(x[idx], y[idx], global_rows=batch_size), dropout_key)

    def predict(state, idx):
        out = [np.asarray(logits_fn(state.params, x[c]))[:n] for c, n in chunks(idx, 4096)]
        return np.concatenate(out)

    return _train(config, workdir, state, step_fn, batch_fn, ckpt, predict, data.ids, y, splits, t0)


def run_cnn(config, workdir: str) -> dict:
    """Xception fine-tuned end to end; see the module docstring."""
    validate.supervised_cnn(config)
    from galaxy_jax.data.from_config import make_image_source
    from galaxy_jax.features import DTYPES

    t0 = time.time()
    d = config.data
    if d.image_size < MIN_SIZE:
        raise UserError(f"data.image_size must be at least {MIN_SIZE}, got {d.image_size}")
    arch = cnn_architecture(config)  # before anything is read, downloaded or created
    tx = make_optimizer(config.optim)
    workdir = prepare_workdir(workdir)
    source = make_image_source(d, report_path=os.path.join(workdir, "bad_input_report.json"))
    y = check_binary(source.labels, f"dataset {d.name}")
    splits = make_splits(config, source.ids, y)
    check_run_config(os.path.join(workdir, "ckpt"), config, RUN_FIELDS)

    mesh = parallel.mesh()
    n_dev = mesh.devices.size
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    batch_size = -(-int(config.optim.batch_size) // n_dev) * n_dev
    eval_batch = -(-int(config.eval_batch_size) // n_dev) * n_dev
    model = XceptionBinary(dtype=DTYPES[config.dtype], **arch)
    ckpt = Checkpointer(os.path.join(workdir, "ckpt"))
    # Resume order: this run's checkpoint, then the pretrained backbone (config.weights: imagenet,
    # a file, or random for a scratch run) with a fresh head.
    variables, description = cnn_variables(config, model, d.image_size)
    state = State.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables["batch_stats"],
    )
    step, state = ckpt.restore(state)
    if step is None:
        logging.info("CNN backbone from %s", description)
    state = jax.device_put(state, replicated)

    sizes = dict(crop_size=int(d.crop_size) or None, image_size=int(d.image_size))
    aug = {k: float(v) for k, v in config.augment.items()}
    step_fn = jax.jit(
        functools.partial(cnn_train_step, model=model, aug=aug, **sizes), donate_argnums=(0,)
    )
    predict_fn = jax.jit(functools.partial(cnn_predict, model=model, **sizes))
    key = jax.device_put(jax.random.fold_in(jax.random.PRNGKey(config.seed), 2), replicated)
    train_idx = splits["train"]
    sampler = BatchSampler(len(train_idx), batch_size, seed=config.seed)
    # Steps state.step.. in order, as the step runner asks for them; batch i+1 decodes during i.
    steps = range(int(state.step), int(config.optim.steps))
    batches = image_batches(source, (train_idx[sampler(i)] for i in steps), y, sharding=sharded)

    def batch_fn(i):
        return (*next(batches), key)

    def predict(state, idx):
        v = {"params": state.params, "batch_stats": state.batch_stats}
        out = []
        for chunk, n in chunks(idx, eval_batch):
            images = jax.device_put(np.asarray(source.get(chunk)), sharded)
            out.append(np.asarray(predict_fn(v, images))[:n])
        return np.concatenate(out)

    with contextlib.closing(batches):
        return _train(
            config,
            workdir,
            state,
            step_fn,
            batch_fn,
            ckpt,
            predict,
            source.ids,
            y,
            splits,
            t0,
            weights=description,  # which backbone weights the CNN started from
        )
