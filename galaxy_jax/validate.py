"""Up-front checks of a clustering config (modes kmeans, pretrain, dec), before any heavy work.

`config_fields` reads only the config and the file system (it creates nothing), so a bad value
fails in well under a second and leaves no workdir behind. `vectors` checks what needs the data
itself. Every message starts with the field's name, `config.<section>.<field>`.
"""

from __future__ import annotations

import math
import os

from galaxy_jax.data.vectors import DATASETS
from galaxy_jax.dec_init import DEFAULT_INIT_SAMPLE, INITS, WARD_MAX_N, visible_labels
from galaxy_jax.errors import UserError

OPTIMIZERS = ("sgd", "adam")
NORMALIZE = ("unit_power", "scale01")


def _need(ok: bool, field: str, msg: str) -> None:
    if not ok:
        raise UserError(f"config.{field}: {msg}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def config_fields(config) -> None:
    """Raises UserError naming the first bad field of the clustering config."""
    s, d = config.sae, config.dec
    _need(
        isinstance(config.seed, int) and config.seed >= 0,
        "seed",
        f"must be an integer >= 0, got {config.seed!r}",
    )
    data_fields(config.data)
    _need(d.n_clusters >= 2, "dec.n_clusters", f"must be >= 2, got {d.n_clusters}")
    _need(
        len(s.dims) >= 1 and all(isinstance(h, int) and h > 0 for h in s.dims),
        "sae.dims",
        f"must be positive layer widths, e.g. (500, 500, 2000, 10); got {tuple(s.dims)}",
    )
    for field, v, lo, hi in (  # fractions: [lo, hi)
        ("sae.dropout", s.dropout, 0.0, 1.0),
        ("sae.momentum", s.momentum, 0.0, 1.0),
        ("dec.momentum", d.momentum, 0.0, 1.0),
    ):
        _need(_number(v) and lo <= v < hi, field, f"must be in [{lo}, {hi}), got {v}")
    _need(_number(d.tol) and 0.0 <= d.tol <= 1.0, "dec.tol", f"must be in [0, 1], got {d.tol}")
    for field, v in (
        ("sae.lr", s.lr),
        ("dec.lr", d.lr),
        ("dec.alpha", d.alpha),
        ("sae.lr_decay", s.lr_decay),
    ):
        _need(_number(v) and v > 0, field, f"must be a finite number > 0, got {v}")
    for field, v in (
        ("sae.batch_size", s.batch_size),
        ("dec.batch_size", d.batch_size),
        ("dec.update_interval", d.update_interval),
        ("checkpoint_every", config.checkpoint_every),
        ("log_every", config.log_every),
        ("dec.kmeans_n_init", d.kmeans_n_init),
    ):
        _need(v > 0, field, f"must be > 0, got {v}")
    for field, v in (
        ("sae.layerwise_steps", s.layerwise_steps),
        ("sae.finetune_steps", s.finetune_steps),
        ("sae.lr_decay_every", s.lr_decay_every),
        ("dec.maxiter", d.maxiter),
    ):
        _need(v >= 0, field, f"must be >= 0, got {v}")
    for field, v in (("sae.optimizer", s.optimizer), ("dec.optimizer", d.optimizer)):
        _need(v in OPTIMIZERS, field, f"must be one of {OPTIMIZERS}, got {v!r}")
    dec_variant_fields(d)


def dec_variant_fields(d) -> None:
    """dec.init, dec.label_fraction, dec.supervised_weight, dec.gamma (absent = the paper's)."""
    init = d.get("init", "kmeans")
    _need(init in INITS, "dec.init", f"must be one of {INITS}, got {init!r}")
    fraction = d.get("label_fraction", 0.0)
    _need(
        _number(fraction) and 0.0 <= fraction <= 1.0,
        "dec.label_fraction",
        f"must be in [0, 1], got {fraction!r}",
    )
    for field in ("supervised_weight", "gamma"):
        v = d.get(field, 0.0)
        _need(_number(v) and v >= 0, f"dec.{field}", f"must be a finite number >= 0, got {v!r}")
    if init == "labels" or d.get("supervised_weight", 0.0):
        what = "init='labels'" if init == "labels" else "supervised_weight > 0"
        _need(fraction > 0, "dec.label_fraction", f"must be > 0 with dec.{what}, got {fraction}")


def data_fields(data) -> None:
    """The `data` section of a clustering config: a known vector dataset whose files exist."""
    _need(data.name in DATASETS, "data.name", f"must be one of {DATASETS}, got {data.name!r}")
    if data.name == "mnist":
        path = os.path.abspath(os.path.expanduser(data.path))
        if not os.path.isfile(path):  # names the field through the flag that sets it
            raise UserError(
                f"MNIST file not found: {path}. Set --config.data.path to a Keras-format "
                "mnist.npz (keys x_train, y_train, x_test, y_test)."
            )
        normalize = data.get("normalize", "unit_power")
        _need(normalize in NORMALIZE, "data.normalize", f"must be one of {NORMALIZE}")
    elif data.name == "features":
        path = os.path.abspath(os.path.expanduser(data.path))
        _need(
            os.path.isfile(os.path.join(path, "features.npy")),
            "data.path",
            f"no features.npy in {path}: run the extract mode with --workdir={path} first, "
            "or point data.path at its workdir.",
        )
        normalize = data.get("normalize", "unit_power")
        _need(
            normalize in ("unit_power", "none"),
            "data.normalize",
            f"must be 'unit_power' or 'none' for features, got {normalize!r}",
        )
    else:  # blobs
        for field in ("n", "dim", "n_clusters"):
            _need(data[field] > 0, f"data.{field}", f"must be > 0, got {data[field]}")
        spread = data.get("spread", 1.0)
        _need(_number(spread) and spread >= 0, "data.spread", f"must be >= 0, got {spread}")


def vectors(config, x) -> None:
    """Checks that need the loaded data x: [N, D]."""
    n, dim = x.shape
    k = config.dec.n_clusters
    _need(n >= k, "dec.n_clusters", f"{k} clusters need at least {k} examples; the data has {n}")
    _need(dim >= 1, "data", f"the vectors have no features (shape {x.shape})")
    sample = config.dec.get("init_sample", DEFAULT_INIT_SAMPLE)
    _need(sample >= 0, "dec.init_sample", f"must be >= 0 (0 = every row), got {sample}")
    if config.dec.get("init", "kmeans") == "ward":
        fitted = min(n, sample) if sample else n
        _need(
            fitted <= WARD_MAX_N,
            "dec.init",
            f"'ward' holds O(N^2) distances: at most {WARD_MAX_N} rows, and it would fit "
            f"{fitted}; set dec.init_sample <= {WARD_MAX_N}",
        )


def labels(config, y) -> None:
    """Checks of the labels a label-using DEC variant needs (y: [N] int32, -1 unknown, or None).

    Reads only the visible labels (dec_init.visible_labels), as training does."""
    d = config.dec
    if not (d.get("init", "kmeans") == "labels" or d.get("supervised_weight", 0.0)):
        return
    _need(y is not None, "dec.label_fraction", "the data are unlabelled; labels cannot be used")
    if d.get("init", "kmeans") == "labels":
        y_vis = visible_labels(y, d.label_fraction, config.seed)
        seen = sorted(set(y_vis[y_vis >= 0].tolist()))
        _need(
            seen == list(range(d.n_clusters)),
            "dec.n_clusters",
            f"with dec.init='labels' cluster c starts at the mean of class c, so the visible "
            f"labels must be exactly the classes 0..{d.n_clusters - 1}; they are {seen} "
            "(change dec.n_clusters, or raise dec.label_fraction)",
        )
