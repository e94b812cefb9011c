"""The supervised references (seed paper, section 4.1), as library pieces: train / val / test
splits, binary metrics, the ANN and CNN train steps and prediction, the CNN's architecture and
initial variables. The modes (galaxy_jax/modes/supervised.py) wire a config to these.

Splits: the labelled rows (label >= 0; the labels must be 0/1) go into train / val / test,
stratified by class, seeded by `split.seed`; or, with `split.csv`, the test rows are those the CSV
puts in split `split.csv_test` and val is `split.val_fraction` of the other rows of each class.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from sklearn import metrics as skm

from galaxy_jax import weights
from galaxy_jax.data.preprocess import augment, preprocess
from galaxy_jax.errors import UserError
from galaxy_jax.models.heads import MLPHead, XceptionBinary
from galaxy_jax.models.xception import Xception, init_variables
from galaxy_jax.train_loop import State

SPLITS = ("train", "val", "test")

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
    if sp.csv:
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


def chunks(idx: np.ndarray, size: int):
    """Fixed-size chunks of idx, the last padded by repeating its last row: (chunk, n valid)."""
    for lo in range(0, len(idx), size):
        part = idx[lo : lo + size]
        n = len(part)
        yield np.concatenate([part, np.full(size - n, part[-1])]), n


# -------------------------------------------------------------------------------------- CNN


def cnn_architecture(config) -> dict:
    """{'width', 'middle_blocks'} of the CNN's backbone; reads no weights and creates nothing.

    weights='random': config.model.width and config.model.middle_blocks. A weights file fixes the
    architecture: Keras' Xception for 'imagenet' and .h5, the JSON beside an .npz (an `ssl`
    encoder; Keras' without one). The config's fields must then be the defaults or the same.
    """
    m = config.model
    width, blocks = m.width, m.middle_blocks
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


def cnn_variables(config, model: XceptionBinary, image_size):
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
