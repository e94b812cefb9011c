"""Up-front checks of a config, one validator per mode, before any heavy work.

`for_mode(config)` runs the validator of config.mode (VALIDATORS): each reads only the config
and the file system (it creates nothing), so a bad value fails in well under a second and leaves
no workdir behind. Every message starts with the field's name, `config.<section>.<field>`. The
configs declare every field a mode reads (configs/common.py, configs/dec_base.py), so the
validators read them directly, with no defaults of their own.

Clustering (kmeans, pretrain, dec): `clustering` (= `config_fields`); `vectors` and `labels`
check what needs the loaded data itself.
"""

from __future__ import annotations

import math
import os

from galaxy_jax.data.vectors import DATASETS, FEATURE_NORMALIZE
from galaxy_jax.dec_init import INITS, WARD_MAX_N, visible_labels
from galaxy_jax.errors import UserError
from galaxy_jax.models.xception import MIN_SIZE

OPTIMIZERS = ("sgd", "adam")
NORMALIZE = ("unit_power", "scale01")
FEATURE_SOURCES = ("xception", "pixels")  # extract's `source`
TTA_POOLS = ("mean", "max")  # extract's `tta_pool` (galaxy_jax.features.TTA_POOLS)
DTYPES = ("float32", "bfloat16")
SCHEDULES = ("constant", "cosine")  # supervised optim.schedule


def _need(ok: bool, field: str, msg: str) -> None:
    if not ok:
        raise UserError(f"config.{field}: {msg}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def config_fields(config) -> None:
    """Modes kmeans, pretrain and dec: raises UserError naming the first bad field."""
    s, d = config.sae, config.dec
    host_devices(config)
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
    """dec.init, dec.init_sample, dec.label_fraction, dec.supervised_weight, dec.gamma,
    dec.target_power, dec.merge_to."""
    init = d.init
    _need(init in INITS, "dec.init", f"must be one of {INITS}, got {init!r}")
    _need(
        isinstance(d.init_sample, int) and d.init_sample >= 0,
        "dec.init_sample",
        f"must be >= 0 (0 = every row), got {d.init_sample}",
    )
    fraction = d.label_fraction
    _need(
        _number(fraction) and 0.0 <= fraction <= 1.0,
        "dec.label_fraction",
        f"must be in [0, 1], got {fraction!r}",
    )
    for field in ("supervised_weight", "gamma"):
        v = d[field]
        _need(_number(v) and v >= 0, f"dec.{field}", f"must be a finite number >= 0, got {v!r}")
    for field, least in (("umap_neighbors", 2), ("spectral_neighbors", 1)):
        v = d[field]
        _need(
            isinstance(v, int) and not isinstance(v, bool) and v >= least,
            f"dec.{field}",
            f"must be an integer >= {least}, got {v!r}",
        )
    power = d.target_power
    _need(
        _number(power) and 0.0 <= power <= 1.0,
        "dec.target_power",
        f"must be in [0, 1] (1 = the DEC paper, 0 = no cluster-frequency normalisation), "
        f"got {power!r}",
    )
    merge_to = d.merge_to
    _need(
        isinstance(merge_to, int)
        and not isinstance(merge_to, bool)
        and (merge_to == 0 or 2 <= merge_to < d.n_clusters),
        "dec.merge_to",
        f"must be 0 (no merge) or an integer in [2, dec.n_clusters = {d.n_clusters}), "
        f"got {merge_to!r}",
    )
    if init == "labels" or d.supervised_weight:
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
        normalize = data.normalize
        _need(normalize in NORMALIZE, "data.normalize", f"must be one of {NORMALIZE}")
    elif data.name == "features":
        path = os.path.abspath(os.path.expanduser(data.path))
        _need(
            os.path.isfile(os.path.join(path, "features.npy")),
            "data.path",
            f"no features.npy in {path}: run the extract mode with --workdir={path} first, "
            "or point data.path at its workdir.",
        )
        normalize = data.normalize
        _need(
            normalize in FEATURE_NORMALIZE,
            "data.normalize",
            f"must be one of {FEATURE_NORMALIZE} for features, got {normalize!r}",
        )
    else:  # blobs
        for field in ("n", "dim", "n_clusters"):
            _need(data[field] > 0, f"data.{field}", f"must be > 0, got {data[field]}")
        spread = data.spread
        _need(_number(spread) and spread >= 0, "data.spread", f"must be >= 0, got {spread}")


def vectors(config, x) -> None:
    """Checks that need the loaded data x: [N, D]."""
    n, dim = x.shape
    k = config.dec.n_clusters
    _need(n >= k, "dec.n_clusters", f"{k} clusters need at least {k} examples; the data has {n}")
    _need(dim >= 1, "data", f"the vectors have no features (shape {x.shape})")
    sample = config.dec.init_sample
    _need(sample >= 0, "dec.init_sample", f"must be >= 0 (0 = every row), got {sample}")
    if config.dec.init == "ward":
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
    if not (d.init == "labels" or d.supervised_weight):
        return
    _need(y is not None, "dec.label_fraction", "the data are unlabelled; labels cannot be used")
    if d.init == "labels":
        y_vis = visible_labels(y, d.label_fraction, config.seed)
        seen = sorted(set(y_vis[y_vis >= 0].tolist()))
        _need(
            seen == list(range(d.n_clusters)),
            "dec.n_clusters",
            f"with dec.init='labels' cluster c starts at the mean of class c, so the visible "
            f"labels must be exactly the classes 0..{d.n_clusters - 1}; they are {seen} "
            "(change dec.n_clusters, or raise dec.label_fraction)",
        )


clustering = config_fields


# --------------------------------------------------------------------------- shared fields


def host_devices(config) -> None:
    """config.host_devices: -1 (one XLA device per CPU core) or >= 1 (configs/common.py)."""
    v = config.host_devices
    _need(
        isinstance(v, int) and not isinstance(v, bool) and (v == -1 or v >= 1),
        "host_devices",
        f"must be -1 (one per core) or >= 1, got {v!r}",
    )


def _positive(config, *fields: str) -> None:
    for field in fields:
        v = _get(config, field)
        _need(_number(v) and v > 0, field, f"must be > 0, got {v!r}")


def _at_least(config, lo, *fields: str) -> None:
    for field in fields:
        v = _get(config, field)
        _need(_number(v) and v >= lo, field, f"must be >= {lo}, got {v!r}")


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def _one_of(config, field: str, allowed: tuple) -> None:
    v = _get(config, field)
    _need(v in allowed, field, f"must be one of {allowed}, got {v!r}")


def cadence(config, eval_every: bool = False) -> None:
    """log_every and checkpoint_every > 0; eval_every >= 0 (0 = never) where the mode has it."""
    _positive(config, "log_every", "checkpoint_every")
    if eval_every:
        _at_least(config, 0, "eval_every")


def weights_fields(config) -> None:
    """weights (imagenet | random | a path), weights_path, cache_dir, download; files are checked
    where they are read (galaxy_jax.weights)."""
    w = config.weights
    _need(
        isinstance(w, str) and bool(w),
        "weights",
        f"must be 'imagenet', 'random' or a path to a .npz or .h5, got {w!r}",
    )
    for field in ("weights_path", "cache_dir"):
        _need(isinstance(config[field], str), field, f"must be a string, got {config[field]!r}")
    _need(isinstance(config.download, bool), "download", "must be True or False")


def image_size(config, minimum: int = MIN_SIZE) -> None:
    """data.image_size >= minimum (by default Xception's smallest input, 71); crop_size >= 0."""
    d = config.data
    _need(
        isinstance(d.image_size, int) and d.image_size >= minimum,
        "data.image_size",
        f"must be at least {minimum}, got {d.image_size}",
    )
    _need(d.crop_size >= 0, "data.crop_size", f"must be >= 0 (0 = no crop), got {d.crop_size}")


# ------------------------------------------------------------------------------ the modes


def extract(config) -> None:
    """Mode extract: source, the image sizes it needs, batch and shard sizes, dtype, weights."""
    host_devices(config)
    _one_of(config, "source", FEATURE_SOURCES)
    image_size(config, MIN_SIZE if config.source == "xception" else 1)
    _one_of(config, "dtype", DTYPES)
    _positive(config, "batch_size", "shard_size")
    _at_least(config, -1, "micro_batch")
    for field in ("grayscale", "standardize", "tta"):
        _need(
            isinstance(config[field], bool), field, f"must be True or False, got {config[field]!r}"
        )
    _one_of(config, "tta_pool", TTA_POOLS)
    if config.source == "xception":
        weights_fields(config)


def convert_weights(config) -> None:
    """Mode convert_weights."""
    host_devices(config)
    weights_fields(config)
    _need(
        isinstance(config.include_top, bool),
        "include_top",
        f"must be True or False, got {config.include_top!r}",
    )


def ssl(config) -> None:
    """Mode ssl (SimCLR): the checks of galaxy_jax.modes.ssl._check_config, same messages."""
    host_devices(config)
    d, m, o, a = config.data, config.model, config.optim, config.augment
    checks = [
        (d.image_size >= MIN_SIZE, "data.image_size", f"must be >= {MIN_SIZE}"),
        (m.width > 0, "model.width", "must be > 0"),
        (0 <= m.middle_blocks <= 8, "model.middle_blocks", "must be in [0, 8]"),
        (m.proj_hidden > 0 and m.proj_dim > 0, "model.proj_dim", "widths must be > 0"),
        (config.temperature > 0, "temperature", "must be > 0"),
        (o.lr > 0, "optim.lr", "must be > 0"),
        (o.batch_size >= 2, "optim.batch_size", "must be >= 2 (negatives come from the batch)"),
        (o.steps >= 1, "optim.steps", "must be >= 1"),
        (o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0"),
        (config.log_every > 0, "log_every", "must be > 0"),
        (config.checkpoint_every > 0, "checkpoint_every", "must be > 0"),
        (0 < a.min_zoom <= a.max_zoom, "augment.min_zoom", "must be in (0, max_zoom]"),
        (0 < a.min_flux <= a.max_flux, "augment.min_flux", "must be in (0, max_flux]"),
        (a.max_noise >= 0 and a.max_blur >= 0, "augment.max_noise", "and max_blur must be >= 0"),
        (config.dtype in DTYPES, "dtype", "must be float32 or bfloat16"),
    ]
    for ok, field, msg in checks:
        _need(ok, field, msg)
    weights_fields(config)


def adapt(config) -> None:
    """Mode adapt: the image size, the cache, the training and the weights' fields."""
    host_devices(config)
    image_size(config)
    weights_fields(config)
    cadence(config)
    _positive(config, "batch_size", "shard_size", "temperature", "optim.lr")
    _positive(config, "model.proj_hidden", "model.proj_dim")
    _at_least(config, -1, "micro_batch")
    _at_least(config, 0, "crop", "optim.steps", "optim.warmup_steps", "optim.weight_decay")
    _at_least(config, 2, "optim.batch_size")  # the negatives come from the batch
    _need(isinstance(config.views_from, str), "views_from", "must be a path or ''")
    if config.views_from:
        found = os.path.join(os.path.expanduser(config.views_from), "views", "views_meta.json")
        _need(
            os.path.isfile(found),
            "views_from",
            f"{config.views_from!r} holds no finished view cache (no {found}); run it first",
        )


def _split(config) -> None:
    sp = config.split
    for field in ("val_fraction", "test_fraction"):
        v = sp[field]
        _need(_number(v) and 0.0 <= v < 1.0, f"split.{field}", f"must be in [0, 1), got {v!r}")
    if not sp.csv:
        total = sp.val_fraction + sp.test_fraction
        _need(total < 1.0, "split.val_fraction", f"+ split.test_fraction must be < 1, got {total}")
    else:
        path = os.path.abspath(os.path.expanduser(sp.csv))
        _need(os.path.isfile(path), "split.csv", f"no such file {path}")


def _supervised(config) -> None:
    host_devices(config)
    cadence(config, eval_every=True)
    _split(config)
    _one_of(config, "optim.schedule", SCHEDULES)
    _positive(config, "optim.lr", "optim.batch_size", "optim.steps")


def supervised_ann(config) -> None:
    """Mode supervised_ann: a vector dataset (as the clustering modes'), split, MLP, Adam."""
    _supervised(config)
    data_fields(config.data)
    hidden = tuple(config.model.hidden)
    _need(
        all(isinstance(h, int) and h > 0 for h in hidden),
        "model.hidden",
        f"must be positive layer widths, e.g. (512, 128); got {hidden}",
    )
    v = config.model.dropout
    _need(_number(v) and 0.0 <= v < 1.0, "model.dropout", f"must be in [0, 1), got {v}")


def supervised_cnn(config) -> None:
    """Mode supervised_cnn. Whether model.width/middle_blocks fit `weights` needs the weights'
    JSON and stays in galaxy_jax.supervised.cnn_architecture."""
    _supervised(config)
    image_size(config)
    weights_fields(config)
    _one_of(config, "dtype", DTYPES)
    _positive(config, "eval_batch_size")
    m = config.model
    width, blocks = m.width, m.middle_blocks
    _need(_number(width) and width > 0, "model.width", f"must be a number > 0, got {width!r}")
    _need(
        isinstance(blocks, int) and not isinstance(blocks, bool) and 0 <= blocks <= 8,
        "model.middle_blocks",
        f"must be an integer in [0, 8], got {blocks!r}",
    )
    _at_least(config, 0, "augment.max_angle_deg", "augment.max_brightness")
    _at_least(config, 1, "augment.max_zoom")


def morphology(config) -> None:
    """Mode morphology (galaxy_jax/morphology.py measures)."""
    host_devices(config)
    _at_least(config, 0, "workers", "asinh_stretch")
    _positive(config, "chunk_size", "threshold_sigma", "min_pixels")
    _at_least(config, 1, "downsample")
    v = config.border
    _need(_number(v) and 0 < v < 0.5, "border", f"must be in (0, 0.5), got {v!r}")
    v = config.crop_fraction
    _need(_number(v) and 0 < v <= 1, "crop_fraction", f"must be in (0, 1], got {v!r}")
    _need(isinstance(config.tta, bool), "tta", f"must be True or False, got {config.tta!r}")


BUILDABLE = ("galaxy_zoo", "folder", "csv", "synthetic")


def build_dataset(config) -> None:
    """Mode build_dataset."""
    host_devices(config)
    _one_of(config, "data.name", BUILDABLE)


def report(config) -> None:
    """Mode report: a sweep file or run workdirs, and the figures' sizes."""
    host_devices(config)
    _need(
        bool(config.sweep) or bool(config.runs),
        "sweep",
        "set config.sweep (a sweep.jsonl) or config.runs (run workdirs)",
    )
    _positive(config, "tsne_max_points", "map_thumb")
    _at_least(config, 250, "tsne_iters")
    _at_least(config, 0, "montage_per_cluster")


def export(config) -> None:
    """Mode export."""
    host_devices(config)
    _need(bool(config.run), "run", "set config.run to the workdir of a finished DEC run")
    _need(
        bool(config.filename) and os.sep not in config.filename,
        "filename",
        f"must be a file name, got {config.filename!r}",
    )


def _seeds(config) -> None:
    seeds = tuple(config.seeds)
    _need(
        len(seeds) > 0 and all(isinstance(s, int) and s >= 0 for s in seeds),
        "seeds",
        f"must be integers >= 0, at least one; got {seeds}",
    )


def _config_dir(config) -> None:
    _need(
        os.path.isdir(os.path.expanduser(config.config_dir)),
        "config_dir",
        f"no such directory {config.config_dir!r}",
    )


def sweep(config) -> None:
    """Mode sweep: its own fields (each run's config is checked by its mode when it runs)."""
    host_devices(config)
    _need(bool(config.base), "base", "must name a config, e.g. 'galaxy_dec' or 'mnist_dec:smoke'")
    _seeds(config)
    _need(isinstance(config.common, str), "common", "must be 'FIELD=VALUE,...'")
    _config_dir(config)
    names = [dict(v).get("name") for v in config.variants]
    for name in names:
        _need(
            isinstance(name, str) and bool(name) and "/" not in name and names.count(name) == 1,
            "variants",
            f"each sweep variant needs a unique name without '/': {name!r}",
        )


def quickstart(config) -> None:
    """Mode quickstart: its weights choice, seeds, the extract stage and the report's sizes."""
    host_devices(config)
    _need(bool(config.weights), "weights", "must be auto, imagenet, random or a path to a .npz")
    _seeds(config)
    _config_dir(config)
    ex = config.extract.copy_and_resolve_references()
    with ex.unlocked():
        ex.weights = "random" if config.weights == "auto" else config.weights
    try:
        extract(ex)
    except UserError as e:  # name the field as the quick start's
        raise UserError(str(e).replace("config.", "config.extract.", 1)) from e
    _positive(config, "report.tsne_max_points")
    _at_least(config, 250, "report.tsne_iters")
    _at_least(config, 0, "report.montage_per_cluster")


def neighbours(config) -> None:
    """Mode neighbours: a space, queries, k, a metric."""
    from galaxy_jax.neighbours import METRICS

    host_devices(config)
    _need(bool(config.space), "space", "set it to an extract workdir or a DEC run workdir")
    _need(
        bool(str(config.query_ids).strip(",").strip() or str(config.query_images).strip()),
        "query_ids",
        "set config.query_ids (ids in the space) or config.query_images (image files)",
    )
    _positive(config, "k", "chunk")
    _one_of(config, "metric", METRICS)


def scan(config) -> None:
    """Mode scan: seed, data, cadence, the scan and selflabel sections (scan_vectors: the data)."""
    from galaxy_jax.neighbours import METRICS

    host_devices(config)
    _need(
        isinstance(config.seed, int) and config.seed >= 0,
        "seed",
        f"must be an integer >= 0, got {config.seed!r}",
    )
    data_fields(config.data)
    cadence(config)
    _need(
        config.scan.n_clusters >= 2,
        "scan.n_clusters",
        f"must be >= 2, got {config.scan.n_clusters}",
    )
    _positive(config, "scan.n_heads", "scan.k_neighbours", "scan.batch_size")
    _positive(config, "selflabel.batch_size", "scan.lr", "selflabel.lr")
    _positive(config, "scan.lr_decay", "selflabel.lr_decay")
    _at_least(config, 0, "scan.hidden", "scan.steps", "selflabel.steps", "scan.entropy_weight")
    _at_least(config, 0, "scan.lr_decay_every", "selflabel.lr_decay_every", "selflabel.noise")
    _one_of(config, "scan.metric", METRICS)
    for section in ("scan", "selflabel"):
        _one_of(config, f"{section}.optimizer", OPTIMIZERS)
        m = config[section].momentum
        _need(_number(m) and 0 <= m < 1, f"{section}.momentum", f"must be in [0, 1), got {m}")
    for field in ("threshold", "dropout"):
        v = config.selflabel[field]
        _need(_number(v) and 0 <= v < 1, f"selflabel.{field}", f"must be in [0, 1), got {v}")


def scan_vectors(config, x) -> None:
    """Checks of mode scan that need the loaded data x: [N, D]."""
    n, k = len(x), config.scan.k_neighbours
    _need(n > k, "scan.k_neighbours", f"must be < the number of rows ({n}), got {k}")
    c = config.scan.n_clusters
    _need(n >= c, "scan.n_clusters", f"{c} clusters need at least {c} rows; the data has {n}")


def map_(config) -> None:
    """Mode map: a run, and the page's sizes."""
    host_devices(config)
    _need(bool(config.run), "run", "set it to a finished run's workdir or an extract workdir")
    _positive(config, "max_points", "thumb")
    _at_least(config, 250, "layout_iters")
    _at_least(config, 0, "neighbours")


VALIDATORS = {
    "kmeans": clustering,
    "pretrain": clustering,
    "dec": clustering,
    "convert_weights": convert_weights,
    "extract": extract,
    "morphology": morphology,
    "build_dataset": build_dataset,
    "sweep": sweep,
    "report": report,
    "export": export,
    "supervised_ann": supervised_ann,
    "supervised_cnn": supervised_cnn,
    "quickstart": quickstart,
    "ssl": ssl,
    "neighbours": neighbours,
    "map": map_,
    "scan": scan,
    "adapt": adapt,
}


def for_mode(config) -> None:
    """Runs the validator of config.mode; raises UserError naming the first bad field."""
    _need(config.mode in VALIDATORS, "mode", f"must be one of {sorted(VALIDATORS)}")
    VALIDATORS[config.mode](config)
