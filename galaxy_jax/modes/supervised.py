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

Both split the labelled rows (label >= 0; the labels must be 0/1) into train / val / test,
stratified by class, with `split.seed` (fixed across training seeds, so seeds vary only the
training). With `split.csv` set, the test rows are instead those that the CSV puts in split
`split.csv_test` (e.g. the real sample's own train/validation folders, in its labels.csv), and
val is `split.val_fraction` of the other rows of each class. Workdir:
  ckpt/            Orbax checkpoints (resume: this run's checkpoint, then the pretrained
                   weights, then a fresh initialisation); ckpt/history.json the logged losses
  results.json     metrics.{val,test}: accuracy, roc_auc, confusion [[TN, FN], [FP, TP]]
                   (rows predicted 0/1, columns true 0/1), n; history; split sizes
  predictions.npz  probabilities and labels of the val and test rows, with their ids
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax.training import train_state
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from sklearn import metrics as skm
from tqdm.auto import tqdm

from galaxy_jax import atomic, parallel, weights
from galaxy_jax.checkpoint import Checkpointer
from galaxy_jax.data.loader import image_batches
from galaxy_jax.data.preprocess import augment, preprocess
from galaxy_jax.errors import UserError
from galaxy_jax.models.heads import MLPHead, XceptionBinary
from galaxy_jax.models.xception import MIN_SIZE, Xception, init_variables
from galaxy_jax.train_loop import BatchSampler, FiniteGuard, checkpoint_or_stop
from galaxy_jax.workdir import check_run_config, prepare_workdir, write_results

SPLITS = ("train", "val", "test")
# What the checkpoints depend on (checked by check_run_config on resume).
RUN_FIELDS = ("seed", "data", "split", "model", "optim", "weights", "augment")


class State(train_state.TrainState):
    batch_stats: Any = None  # Xception's running statistics; None for the MLP


# ------------------------------------------------------------------------- data and metrics


def split_indices(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict:
    """{'train', 'val', 'test'}: sorted row indices of the labelled rows (y >= 0), stratified.

    y: [N] int labels, -1 unknown (left out of every split).
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(
            f"split fractions val={val_fraction}, test={test_fraction} must be in [0, 1) with "
            "a sum below 1"
        )
    rng = np.random.default_rng([int(seed), 20260])
    parts = {s: [] for s in SPLITS}
    for c in np.unique(y[y >= 0]):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    out = {
        s: np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64)
        for s, p in parts.items()
    }
    if len(out["train"]) == 0:
        raise UserError("no labelled training rows: the supervised modes need labels")
    return out


def split_indices_from_csv(
    ids, y: np.ndarray, csv_path: str, *, id_column, split_column, test_split, val_fraction, seed
) -> dict:
    """{'train', 'val', 'test'} as `split_indices`, the test rows given by a CSV.

    ids: [N] str; y: [N] int, -1 unknown (left out). test = the labelled rows whose row in the
    CSV has `split_column` == `test_split`; val = round(val_fraction * n) of the remaining n rows
    of each class (seeded by `seed`); train = the rest. Every labelled id needs a CSV row.
    """
    from galaxy_jax.data.bad_input import read_csv

    if not 0 <= val_fraction < 1:
        raise UserError(f"config.split.val_fraction must be in [0, 1), got {val_fraction}")
    header, rows = read_csv(os.path.expanduser(csv_path), (id_column, split_column), "split")
    i_id, i_split = header.index(id_column), header.index(split_column)
    split_of = {r[i_id].strip(): r[i_split].strip() for r in rows if len(r) == len(header)}
    labelled = np.flatnonzero(y >= 0)
    missing = [str(ids[i]) for i in labelled if str(ids[i]) not in split_of]
    if missing:
        raise UserError(
            f"config.split.csv {csv_path}: no row for {len(missing)} ids, e.g. {missing[:3]}"
        )
    is_test = np.zeros(len(y), bool)
    is_test[labelled] = [split_of[str(ids[i])] == test_split for i in labelled]
    if not is_test.any():
        found = sorted({split_of[str(ids[i])] for i in labelled})
        raise UserError(
            f"config.split.csv_test={test_split!r}: no row of {csv_path} is in that split; "
            f"the splits are {found}"
        )
    rng = np.random.default_rng([int(seed), 20260])
    parts = {"train": [], "val": [], "test": [np.flatnonzero(is_test)]}
    for c in np.unique(y[labelled]):
        idx = rng.permutation(np.flatnonzero((y == c) & ~is_test))
        n_val = int(round(len(idx) * val_fraction))
        parts["val"].append(idx[:n_val])
        parts["train"].append(idx[n_val:])
    out = {s: np.sort(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}
    if len(out["train"]) == 0:
        raise UserError("no labelled training rows: the supervised modes need labels")
    return out


def make_splits(config, ids, y: np.ndarray) -> dict:
    """The train / val / test rows of config.split: from `split.csv` if set, else fractions."""
    sp = config.split
    if sp.get("csv", ""):
        return split_indices_from_csv(
            ids,
            y,
            sp.csv,
            id_column=sp.csv_id_column,
            split_column=sp.csv_split_column,
            test_split=sp.csv_test,
            val_fraction=sp.val_fraction,
            seed=sp.seed,
        )
    return split_indices(y, sp.val_fraction, sp.test_fraction, sp.seed)


def check_binary(y, what: str) -> np.ndarray:
    if y is None:
        raise UserError(f"{what} has no labels; the supervised modes need labels 0/1")
    y = np.asarray(y, np.int32)
    known = np.unique(y[y >= 0])
    if not set(known.tolist()) <= {0, 1}:
        raise UserError(f"{what}: labels {known.tolist()}; the supervised heads are binary (0/1)")
    return y


def binary_metrics(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
    """accuracy, ROC AUC (None with one class present), confusion [pred][true], n."""
    y = np.asarray(y, np.int64)
    pred = (np.asarray(prob) >= threshold).astype(np.int64)
    confusion = np.zeros((2, 2), np.int64)
    np.add.at(confusion, (pred, y), 1)
    auc = float(skm.roc_auc_score(y, prob)) if len(np.unique(y)) == 2 else None
    return {
        "accuracy": float((pred == y).mean()) if len(y) else None,
        "roc_auc": auc,
        "confusion": confusion.tolist(),
        "n": int(len(y)),
        "threshold": threshold,
    }


SCHEDULES = ("constant", "cosine")


def make_optimizer(optim) -> optax.GradientTransformation:
    """Adam at `optim.lr`: constant, or with `optim.schedule='cosine'` decayed to 0 at
    `optim.steps` (a from-scratch run then ends on a settled network, not mid-oscillation)."""
    schedule = optim.get("schedule", "constant")
    if schedule not in SCHEDULES:
        raise UserError(f"config.optim.schedule: must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "cosine":
        return optax.adam(optax.cosine_decay_schedule(optim.lr, max(int(optim.steps), 1)))
    return optax.adam(optim.lr)


def _bce(logits, y):
    return optax.sigmoid_binary_cross_entropy(logits, y.astype(jnp.float32)).mean()


# ------------------------------------------------------------------------------------- steps


def ann_train_step(state: State, x, y, key, *, model: MLPHead):
    """One Adam step of BCE on x: [B, D] float32, y: [B] int 0/1. Returns (state, loss)."""
    rngs = {"dropout": jax.random.fold_in(key, state.step)}

    def loss_fn(params):
        return _bce(model.apply({"params": params}, x, train=True, rngs=rngs), y)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def cnn_train_step(state: State, images, y, key, *, model, crop_size, image_size, aug):
    """One step on images: [B, H, W, 3] uint8 (preprocessed and augmented here), y: [B] 0/1.

    Batch norm runs in training mode, and its updated running statistics go into the state.
    """
    x = preprocess(images, crop_size=crop_size, image_size=image_size)
    x = augment(jax.random.fold_in(key, state.step), x, **aug)

    def loss_fn(params):
        logits, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return _bce(logits, y), updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads).replace(batch_stats=batch_stats), loss


def cnn_predict(variables, images, *, model, crop_size, image_size):
    """[B] sigmoid probabilities; batch norm uses the running statistics (eval mode)."""
    x = preprocess(images, crop_size=crop_size, image_size=image_size)
    return jax.nn.sigmoid(model.apply(variables, x, train=False))


# ---------------------------------------------------------------------------- training loop


def _fit(config, state, step_fn, batch_fn, ckpt, eval_fn=None):
    """Trains state.step -> config.optim.steps; returns (state, history).

    history: {'train_loss': [[step, loss]], 'val_accuracy': [[step, acc]]}, kept across resumes
    in ckpt/history.json (written before each checkpoint, trimmed to the restored step).
    """
    total = int(config.optim.steps)
    hist_path = os.path.join(ckpt.directory, "history.json")
    start = int(state.step)
    history = {"train_loss": [], "val_accuracy": []}
    if os.path.isfile(hist_path):
        with open(hist_path) as f:
            saved = json.load(f)
        history = {k: [h for h in saved.get(k, []) if h[0] <= start] for k in history}
    guard = FiniteGuard(config.mode)
    bar = tqdm(range(start, total), initial=start, total=total, desc=config.mode, disable=None)
    for i in bar:
        state, loss = step_fn(state, *batch_fn(i))
        step = i + 1
        guard.update(loss, step)
        if step % config.log_every == 0 or step == total:  # the only host syncs of the loop
            guard.check(step)
            history["train_loss"].append([step, float(loss)])
            bar.set_postfix(loss=f"{history['train_loss'][-1][1]:.4g}")
        if eval_fn is not None and config.eval_every and step % config.eval_every == 0:
            history["val_accuracy"].append([step, eval_fn(state)["accuracy"]])
        checkpoint_or_stop(
            step,
            total,
            state,
            every=config.checkpoint_every,
            ckpt=ckpt,
            guard=guard,
            hist_path=hist_path,
            history=history,
            name=config.mode,
        )
    bar.close()
    return state, history


def _finish(config, workdir, mode, ids, y, splits, predict, history, wall, t0):
    """Evaluates val and test, writes predictions.npz and results.json."""
    metrics, arrays = {}, {}
    for s in ("val", "test"):
        idx = splits[s]
        if len(idx) == 0:
            continue
        prob = predict(idx)
        metrics[s] = binary_metrics(y[idx], prob)
        arrays.update({f"{s}_ids": np.asarray(ids)[idx], f"{s}_prob": prob, f"{s}_y": y[idx]})
        m = metrics[s]
        print(f"{mode} {s}: accuracy={m['accuracy']:.4f} roc_auc={m['roc_auc']} n={m['n']}")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic.write_bytes(os.path.join(workdir, "predictions.npz"), buf.getvalue())
    wall["total"] = time.time() - t0
    return write_results(
        workdir,
        config,
        mode=mode,
        metrics=metrics,
        history=history,
        split_sizes={s: int(len(v)) for s, v in splits.items()},
        wall_s=wall,
    )


def _chunks(idx: np.ndarray, size: int):
    """Fixed-size chunks of idx, the last padded by repeating its last row: (chunk, n valid)."""
    for lo in range(0, len(idx), size):
        part = idx[lo : lo + size]
        n = len(part)
        yield np.concatenate([part, np.full(size - n, part[-1])]), n


# -------------------------------------------------------------------------------------- ANN


def run_ann(config, workdir: str) -> dict:
    """MLP on frozen features; see the module docstring."""
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

    def predict_params(params, idx):
        out = [np.asarray(logits_fn(params, x[c]))[:n] for c, n in _chunks(idx, 4096)]
        return np.concatenate(out)

    def eval_fn(state):
        return binary_metrics(y[splits["val"]], predict_params(state.params, splits["val"]))

    wall = {}
    t1 = time.time()
    state, history = _fit(
        config, state, step_fn, batch_fn, ckpt, eval_fn if len(splits["val"]) else None
    )
    ckpt.close()
    wall["train"] = time.time() - t1
    return _finish(
        config,
        workdir,
        "supervised_ann",
        data.ids,
        y,
        splits,
        lambda idx: predict_params(state.params, idx),
        history,
        wall,
        t0,
    )


# -------------------------------------------------------------------------------------- CNN


def cnn_architecture(config) -> dict:
    """{'width', 'middle_blocks'} of the CNN's backbone; reads no weights and creates nothing.

    weights='random': config.model.width and config.model.middle_blocks. A weights file fixes the
    architecture: Keras' Xception for 'imagenet' and .h5, the JSON beside an .npz (an `ssl`
    encoder; Keras' without one). The config's fields must then be the defaults or the same.
    """
    m = config.model
    width, blocks = m.get("width", 1.0), m.get("middle_blocks", 8)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise UserError(f"config.model.width: must be a number > 0, got {width!r}")
    if isinstance(blocks, bool) or not isinstance(blocks, int) or not 0 <= blocks <= 8:
        raise UserError(f"config.model.middle_blocks: must be an integer in [0, 8], got {blocks!r}")
    arch = {"width": float(width), "middle_blocks": int(blocks)}
    w = config.weights
    if w == "random":
        return arch
    if isinstance(w, str) and w.endswith(".npz") and os.path.exists(w):
        held, what = weights.read_architecture(w)[0], f"{w} (its JSON, or Keras' without one)"
    else:  # imagenet, .h5, or a file load_weights will report as missing or unknown
        held, what = dict(weights.DEFAULT_ARCHITECTURE), f"{w!r} (Keras' Xception)"
    if arch == held or arch == weights.DEFAULT_ARCHITECTURE:
        return held
    raise UserError(
        f"config.model.width={arch['width']:g} and config.model.middle_blocks="
        f"{arch['middle_blocks']} do not match config.weights={what}, which holds width "
        f"{held['width']:g}, middle_blocks {held['middle_blocks']}. Train that architecture "
        "from scratch with --config.weights=random, or leave model.width and "
        "model.middle_blocks at their defaults (1.0, 8) to use the weights' own."
    )


def _cnn_variables(config, model: XceptionBinary, image_size):
    """{'params', 'batch_stats'}: the backbone from config.weights (a seeded random network of
    the model's architecture for 'random'), a fresh head (numpy)."""
    arch = {"width": model.width, "middle_blocks": model.middle_blocks}
    if config.weights == "random":
        backbone = init_variables(Xception(**arch), config.seed)
        logging.warning(
            "Xception weights are RANDOM (seed %d), width %g, %d middle blocks.",
            config.seed,
            model.width,
            model.middle_blocks,
        )
        description = f"random (seed {config.seed})"
        if arch != weights.DEFAULT_ARCHITECTURE:
            description += f", width {model.width:g}, middle_blocks {model.middle_blocks}"
    else:
        loaded = weights.from_config(config, include_top=False)
        if loaded.architecture != arch:  # cnn_architecture read the same file a moment ago
            raise UserError(
                f"config.weights={config.weights!r} holds an Xception of {loaded.architecture}, "
                f"not the model's {arch}"
            )
        backbone, description = loaded.variables, loaded.description
    feature_dim = Xception(**arch).feature_dim
    rng = np.random.default_rng([config.seed, 1])
    limit = np.sqrt(6.0 / (feature_dim + 1))  # Glorot uniform, as Keras' Dense
    variables = {
        "params": {
            "backbone": backbone["params"],
            "head": {
                "kernel": rng.uniform(-limit, limit, (feature_dim, 1)).astype(np.float32),
                "bias": np.zeros((1,), np.float32),
            },
        },
        "batch_stats": {"backbone": backbone["batch_stats"]},
    }
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    template = weights.flatten(jax.eval_shape(model.init, jax.random.key(0), x))
    weights.check_flat(weights.flatten(variables), template, what="of the CNN")
    return variables, description


def run_cnn(config, workdir: str) -> dict:
    """Xception fine-tuned end to end; see the module docstring."""
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
    variables, description = _cnn_variables(config, model, d.image_size)
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
    # Steps state.step.. in order, as _fit asks for them; batch i+1 is decoded during step i.
    steps = range(int(state.step), int(config.optim.steps))
    batches = image_batches(source, (train_idx[sampler(i)] for i in steps), y, sharding=sharded)

    def batch_fn(i):
        return (*next(batches), key)

    def predict(state, idx):
        v = {"params": state.params, "batch_stats": state.batch_stats}
        out = []
        for chunk, n in _chunks(idx, eval_batch):
            images = jax.device_put(np.asarray(source.get(chunk)), sharded)
            out.append(np.asarray(predict_fn(v, images))[:n])
        return np.concatenate(out)

    def eval_fn(state):
        return binary_metrics(y[splits["val"]], predict(state, splits["val"]))

    wall = {}
    t1 = time.time()
    with contextlib.closing(batches):
        state, history = _fit(
            config, state, step_fn, batch_fn, ckpt, eval_fn if len(splits["val"]) else None
        )
    ckpt.close()
    wall["train"] = time.time() - t1
    return _finish(
        config,
        workdir,
        "supervised_cnn",
        source.ids,
        y,
        splits,
        lambda idx: predict(state, idx),
        history,
        wall,
        t0,
    )
