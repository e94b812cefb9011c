"""Mode `extract` (images -> features); `convert_weights` is in galaxy_jax/modes/convert_weights.py.

Feature sources (`config.model`):
  xception   [N, 2048] pooled Xception features (ImageNet, random or a weights file)
  pixels     [N, S*S] (grayscale) or [N, S*S*3] (RGB) flattened preprocessed images: the same
             crop, resize and [-1, 1] scaling as the Xception input, so that `kmeans` and `dec`
             on them are the "on pixels" baselines. No network, no weights. `standardize`
             z-scores each image (its brightness and contrast no longer count).
With `tta` both average over the 8 rotations/flips of each image; for pixels that average is
itself invariant to them (a rotation-symmetrised image).

Workdir of `extract` (the clustering modes read the first four):
  features.npy          [N, D] float32 features (D as above), written once complete
  ids.npy               [N] str image ids
  labels.npy            [N] int32, -1 where unknown; absent for an unlabelled dataset
  features_meta.json    feature_source, config, weights hash, input size, crop, TTA, dtype,
                        versions
  feature_shards/       resumable partial results (deleted once features.npy is written)

Interruptions (see `extract_features`): each shard is written atomically, its SHA-256 beside it
first, so after a kill -9 a re-run keeps every complete shard and rebuilds, with a warning naming
it, any shard that is missing, truncated, garbled or without its digest. SIGTERM/SIGINT stop at
the next batch: the finished batches of the current shard are saved as a partial shard, and
`preemption.Preempted` is raised (main.py exits 75); the re-run continues from that batch.

Extraction is data-parallel over all devices through `jax.sharding`: the batch is split along
mesh axis 'data', the weights are replicated, and one jitted function serves every batch (the
last batch is padded to full size, so it compiles once per input shape).
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import io
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from galaxy_jax import atomic, preemption, validate, weights
from galaxy_jax.data.image_source import ImageSource
from galaxy_jax.data.preprocess import preprocess
from galaxy_jax.errors import UserError
from galaxy_jax.models.xception import MIN_SIZE, Xception, scaled_channels
from galaxy_jax.workdir import prepare_workdir, versions

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
SHARD_DIR = "feature_shards"
FEATURE_SOURCES = ("xception", "pixels")
XCEPTION_DIM = 2048


# ---------------------------------------------------------------------------------------------
# Feature extraction library


def _dihedral_batch(x, k):
    """View k in [0, 8) of square images x: [B, S, S, C]: rotation by k*90 deg, flipped if k>=4."""

    def branch(i):
        return lambda y: jnp.rot90(y if i < 4 else y[:, :, ::-1], k=i % 4, axes=(1, 2))

    return jax.lax.switch(k, [branch(i) for i in range(8)], x)


def pooled_features(
    model: Xception, variables, x, *, micro_batch: int | tuple[int, int] = 0, num_shards: int = 1
):
    """[B, S, S, 3] images in [-1, 1] -> [B, 2048] float32 average-pooled features.

    micro_batch: images per shard per network pass, each pass a step of a `lax.map` loop, so
    that on CPU the activations of one step stay in cache (`cpu_micro_batches`); an int for the
    whole network, or a pair (entry, rest): the stem and blocks 2-3 (the large feature maps) on
    `entry` images per step, block 4 to the pooled feature on `rest`. Each count is lowered to a
    divisor of the images per shard; 0 (or the whole shard) is one pass. The result is the same.
    num_shards: the number of devices the batch axis is split over (rows are device-major).
    """
    entry, rest = (micro_batch, micro_batch) if isinstance(micro_batch, int) else micro_batch
    per = x.shape[0] // num_shards
    entry, rest = _divisor_at_most(entry, per), _divisor_at_most(rest, per)
    pooled = lambda y, stage: model.apply(variables, y, stage=stage)[1]["pooled"]  # noqa: E731
    if entry == rest:
        out = _map_steps(lambda y: pooled(y, "all"), x, entry, num_shards)
    else:
        h = _map_steps(
            lambda y: model.apply(variables, y, stage="entry")[1]["block3"], x, entry, num_shards
        )
        out = _map_steps(lambda y: pooled(y, "rest"), h, rest, num_shards)
    return out.astype(jnp.float32)


def _divisor_at_most(n: int, per: int) -> int:
    """The largest divisor of `per` that is at most n; `per` itself for n <= 0 (one pass)."""
    if n <= 0:
        return per
    return max(d for d in range(1, min(n, per) + 1) if per % d == 0)


def _map_steps(fn, x, mb: int, num_shards: int):
    """fn over `mb` rows per shard at a time (a `lax.map` loop), rows in x's order."""
    b = x.shape[0]
    per = b // num_shards
    if mb == per:
        return fn(x)
    # Row d * per + s * mb + j goes to step s, shard d: each step keeps the batch sharding.
    xs = x.reshape(num_shards, per // mb, mb, *x.shape[1:]).swapaxes(0, 1)
    out = jax.lax.map(lambda xi: fn(xi.reshape(num_shards * mb, *x.shape[1:])), xs)
    out = out.reshape(per // mb, num_shards, mb, *out.shape[2:]).swapaxes(0, 1)
    return out.reshape(b, *out.shape[3:])


# Per-step activation budgets of `cpu_micro_batches`, about this CPU's 2 MiB L2 per core.
ENTRY_STEP_BYTES = 2 << 20
REST_STEP_BYTES = 5 << 19  # 2.5 MiB


def cpu_micro_batches(model: Xception, image_size: int) -> tuple[int, int]:
    """(entry, rest) images per step for CPU inference at `image_size`: as many as keep the
    stem's output under ENTRY_STEP_BYTES and the middle flow's activation under REST_STEP_BYTES
    (at least 1). 299 px: (1, 2); 224: (1, 4); 128: (2, 14, run as 8 of a shard of 32).

    Chosen by interleaved whole-network timings on a 2-core AVX-512 CPU whose DRAM moves only
    ~5 GB/s (read + write; ~85 GB/s within its 32 MiB L3): against 4 images per step for the
    whole network, 0.90x the time at 128 and 0.95x at 224; at 299 no change (1, 2 or 4 images
    per step time the same within +-2%).
    """
    itemsize = jnp.dtype(model.dtype).itemsize
    ch = lambda c: scaled_channels(c, model.width)  # noqa: E731
    stem = max(1, (image_size - 3) // 2 + 1 - 2)  # two VALID 3x3 convolutions, one stride 2
    middle = stem
    for _ in range(3):  # blocks 2-4 halve (SAME pooling: ceil)
        middle = -(-middle // 2)
    entry = ENTRY_STEP_BYTES // (stem * stem * ch(64) * itemsize)
    rest = REST_STEP_BYTES // (middle * middle * ch(728) * itemsize)
    return max(1, int(entry)), max(1, int(rest))


def pixel_features(x, *, grayscale: bool):
    """[B, S, S, 3] preprocessed images in [-1, 1] -> [B, S*S] (mean of R, G, B) if grayscale,
    else [B, S*S*3] (row-major, channels last), float32."""
    if grayscale:
        x = x.mean(axis=-1)
    return x.reshape(x.shape[0], -1).astype(jnp.float32)


def standardize_rows(f):
    """[B, D] -> each row minus its mean, over its standard deviation (eps 1e-6): an image's
    overall brightness and contrast no longer count, only its shape."""
    f = f - f.mean(axis=1, keepdims=True)
    return f / (f.std(axis=1, keepdims=True) + 1e-6)


def feature_dim(model: str, image_size: int, grayscale: bool, architecture: tuple = ()) -> int:
    """Width D of the features of feature source `model` (see FEATURE_SOURCES); architecture:
    the Xception constructor fields of an `ssl` encoder as sorted (name, value) pairs."""
    if model == "xception":
        return Xception(**dict(architecture)).feature_dim if architecture else XCEPTION_DIM
    return int(image_size) ** 2 * (1 if grayscale else 3)


@functools.lru_cache(maxsize=8)
def make_feature_fn(
    mesh: Mesh,
    *,
    dtype: str,
    crop_size: int,
    image_size: int,
    tta: bool,
    micro_batch: int | tuple[int, int] = 0,
    model: str = "xception",
    grayscale: bool = False,
    standardize: bool = False,
    architecture: tuple = (),
):
    """jit(variables, images [B, H, W, 3] uint8) -> [B, D] float32 features.

    model 'xception': D = 2048 pooled features; 'pixels': the preprocessed image, flattened
    (`pixel_features`; `variables` is then an empty dict). B must be a multiple of the mesh size.
    With `tta`, the features are averaged over the 8 rotations and flips of each image (galaxies
    have no preferred orientation). `standardize` (pixels): `standardize_rows` after the TTA
    average. Cached, so repeated extractions with the same settings reuse one compilation.
    """
    data = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    dim = feature_dim(model, image_size, grayscale, architecture)
    if model == "xception":
        features_of = functools.partial(
            pooled_features,
            Xception(dtype=DTYPES[dtype], **dict(architecture)),
            micro_batch=micro_batch,
            num_shards=mesh.devices.size,
        )
    else:
        features_of = lambda variables, x: pixel_features(x, grayscale=grayscale)  # noqa: E731

    def fn(variables, images):
        x = preprocess(images, crop_size=crop_size or None, image_size=image_size)
        x = jax.lax.with_sharding_constraint(x, data)
        if not tta:
            f = features_of(variables, x)
        else:
            # A loop, not 8 copies of the network in the graph: compile time stays that of one.
            acc = jax.lax.fori_loop(
                0,
                8,
                lambda k, acc: acc + features_of(variables, _dihedral_batch(x, k)),
                jnp.zeros((x.shape[0], dim), jnp.float32),
            )
            f = acc / 8.0
        return standardize_rows(f) if standardize else f

    return jax.jit(fn, in_shardings=(replicated, data), out_shardings=data)


def data_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def _shard_ranges(n: int, shard_size: int):
    return [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


def extract_features(
    source: ImageSource,
    variables,
    *,
    image_size: int,
    crop_size: int = 0,
    batch_size: int = 32,
    tta: bool = False,
    dtype: str = "float32",
    shard_dir: str | None = None,
    shard_size: int = 4096,
    meta_hash: str = "",
    mesh: Mesh | None = None,
    micro_batch: int | tuple[int, int] = 0,
    progress: bool = True,
    model: str = "xception",
    grayscale: bool = False,
    standardize: bool = False,
    architecture: tuple = (),
):
    """[N, D] float32 features of every image of `source` (D: `feature_dim`).

    Args:
      source: the images; all of shape source.image_shape.
      variables: Xception {'params', 'batch_stats'} without the top; {} for model 'pixels'.
      batch_size: global batch, rounded up to a multiple of the number of devices.
      shard_dir: if set, each `shard_size` images are saved there as they finish, and shards
        already there (under the same `meta_hash`, with a matching SHA-256) are reused, so an
        interrupted run resumes. A stop request (galaxy_jax.preemption) is then honoured after
        the current batch: the batches done of the current shard are saved as a partial shard
        and Preempted is raised.
      meta_hash: identifies everything the features depend on; a shard_dir written under another
        hash is deleted and rebuilt, never reused.
      micro_batch: images per device per network pass inside a batch, or a pair (entry, rest)
        (see `pooled_features`); 0 runs the whole batch at once.
      model: feature source, 'xception' or 'pixels' (FEATURE_SOURCES).
      grayscale: pixels only: one channel, the mean of R, G and B.
      standardize: pixels only: each image's values to mean 0, standard deviation 1.
      architecture: Xception constructor fields of an `ssl` encoder, sorted (name, value) pairs
        (weights.LoadedWeights.architecture); () is Keras' Xception.
    Returns:
      (features [N, D] float32, the jitted function, for inspection by tests).
    """
    if model not in FEATURE_SOURCES:
        raise UserError(f"model must be one of {FEATURE_SOURCES}, got {model!r}")
    if model == "xception" and image_size < MIN_SIZE:
        raise UserError(f"image_size must be at least {MIN_SIZE}, got {image_size}")
    if image_size < 1:
        raise UserError(f"image_size must be at least 1, got {image_size}")
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    mesh = mesh or data_mesh()
    n_dev = mesh.devices.size
    batch_size = -(-int(batch_size) // n_dev) * n_dev
    fn = make_feature_fn(
        mesh,
        dtype=dtype,
        crop_size=int(crop_size),
        image_size=int(image_size),
        tta=bool(tta),
        micro_batch=micro_batch if isinstance(micro_batch, int) else tuple(micro_batch),
        model=model,
        grayscale=bool(grayscale) and model == "pixels",
        standardize=bool(standardize) and model == "pixels",
        architecture=tuple(architecture),
    )
    dim = feature_dim(model, image_size, grayscale, tuple(architecture))
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    batch_sharding = NamedSharding(mesh, P("data"))

    n = len(source)
    shards = _shard_ranges(n, shard_size)
    done, partial = (
        _open_shard_dir(shard_dir, meta_hash, n, shard_size, dim) if shard_dir else (set(), {})
    )
    todo = [(i, s, e) for i, (s, e) in enumerate(shards) if i not in done]
    if done or partial:
        logging.info(
            "Resuming: %d of %d feature shards already written, %d partly.",
            len(done),
            len(shards),
            len(partial),
        )
    # A partial shard holds whole batches from the shard's start, so the batch grid (and with it
    # every padded batch the network sees) is that of an uninterrupted run.
    begin = {i: s + (len(partial[i]) if i in partial else 0) for i, s, _ in todo}
    batches = [
        (i, b, min(e, b + batch_size)) for i, s, e in todo for b in range(begin[i], e, batch_size)
    ]
    results: dict[int, list] = {i: [partial[i]] if i in partial else [] for i, _, _ in todo}
    bar = tqdm(total=sum(e - begin[i] for i, _, e in todo), unit="img", disable=not progress)

    def fetch(b, e):
        idx = np.arange(b, b + batch_size)
        idx[e - b :] = e - 1  # pad the last batch by repeating its last image
        images = np.asarray(source.get(idx))
        if images.dtype != np.uint8:
            raise UserError(f"ImageSource.get returned {images.dtype}, expected uint8")
        return images

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # decodes batch k+1 during batch k
        future = pool.submit(fetch, *batches[0][1:]) if batches else None
        for k, (i, b, e) in enumerate(batches):
            images = future.result()
            if k + 1 < len(batches):
                future = pool.submit(fetch, *batches[k + 1][1:])
            feats = fn(variables, jax.device_put(images, batch_sharding))
            results[i].append(np.asarray(feats)[: e - b])
            bar.update(e - b)
            if e == shards[i][1]:  # shard complete
                shard = np.concatenate(results.pop(i))
                if shard_dir:
                    path = _shard_path(shard_dir, i, len(shards))
                    _save_shard(path, shard)
                    _remove_shard(_partial_path(path))
                else:
                    results[i] = [shard]
            if shard_dir and preemption.requested() and k + 1 < len(batches):
                if e < shards[i][1]:
                    _save_shard(
                        _partial_path(_shard_path(shard_dir, i, len(shards))),
                        np.concatenate(results[i]),
                    )
                bar.close()
                raise preemption.Preempted(
                    f"extract stopped after image {e} of {n}; the finished batches are saved "
                    f"under {shard_dir}"
                )
    bar.close()

    if shard_dir:
        parts = [np.load(_shard_path(shard_dir, i, len(shards))) for i in range(len(shards))]
    else:
        parts = [results[i][0] for i in range(len(shards))]
    features = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return features.astype(np.float32), fn


def _shard_path(shard_dir, i, total):
    return os.path.join(shard_dir, f"shard_{i:05d}_of_{total:05d}.npy")


def _partial_path(shard_path: str) -> str:
    """Where the first batches of an unfinished shard go on a stop request."""
    return shard_path[: -len(".npy")] + ".partial.npy"


def _digest_path(path: str) -> str:
    return path + ".sha256"


def _save_shard(path: str, array: np.ndarray) -> None:
    """Writes the SHA-256 of the .npy bytes, then the .npy (both atomically): a complete shard
    always has its digest, and a shard that does not match it is never loaded."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, np.float32))
    data = buf.getvalue()
    atomic.write_bytes(_digest_path(path), hashlib.sha256(data).hexdigest().encode())
    atomic.write_bytes(path, data)


def _remove_shard(path: str) -> None:
    for p in (path, _digest_path(path)):
        if os.path.exists(p):
            os.remove(p)


def _load_shard(path: str, rows, dim: int = XCEPTION_DIM) -> np.ndarray | None:
    """The [r, dim] float32 array in `path` if it matches its digest and r is in `rows`; else
    None, with a warning naming the file (it is then rebuilt)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with open(_digest_path(path)) as f:
            expected = f.read().strip()
    except OSError as e:
        logging.warning("Ignoring feature shard %s (%s); rebuilding it.", path, e)
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        logging.warning(
            "Ignoring feature shard %s: its bytes do not match the SHA-256 in %s (truncated or "
            "garbled); rebuilding it.",
            path,
            _digest_path(path),
        )
        return None
    array = np.load(io.BytesIO(data))
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[1] != dim:
        logging.warning("Ignoring misshaped feature shard %s %s; rebuilding it.", path, array.shape)
        return None
    if array.shape[0] not in rows:
        logging.warning("Ignoring feature shard %s of %d rows; rebuilding it.", path, len(array))
        return None
    return array


def _remove_temporaries(directory: str, names=None) -> None:
    """Deletes `io`'s temporaries (.tmp-*) left by a write that a kill -9 cut short."""
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        if name.startswith(".tmp-") and (names is None or any(name.endswith(m) for m in names)):
            path = os.path.join(directory, name)
            logging.warning("Removing %s: a file whose write was interrupted (never loaded).", path)
            os.remove(path)


def _open_shard_dir(
    shard_dir: str, meta_hash: str, n: int, shard_size: int, dim: int = XCEPTION_DIM
):
    """Shards already in `shard_dir`: (indices of the complete ones, {index: partial array}).

    Clears the directory if it was written under another hash (or its meta.json is unreadable).
    """
    meta_path = os.path.join(shard_dir, "meta.json")
    if os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                old = json.load(f).get("meta_hash")
        except (OSError, ValueError, AttributeError):
            old = "unreadable"
        if old != meta_hash:
            logging.warning(
                "%s holds features of another config or weights (hash %s, now %s); rebuilding.",
                shard_dir,
                old,
                meta_hash,
            )
            shutil.rmtree(shard_dir)
    elif os.path.isdir(shard_dir):
        shutil.rmtree(shard_dir)  # no metadata: unknown origin, never reuse
    if not os.path.exists(meta_path):
        atomic.write_json(meta_path, {"meta_hash": meta_hash})
    _remove_temporaries(shard_dir)
    shards = _shard_ranges(n, shard_size)
    done, partial = set(), {}
    for i, (s, e) in enumerate(shards):
        path = _shard_path(shard_dir, i, len(shards))
        if os.path.exists(path):
            if _load_shard(path, (e - s,), dim) is not None:
                done.add(i)
                _remove_shard(_partial_path(path))
                continue
            _remove_shard(path)
        part = _partial_path(path)
        if os.path.exists(part):
            array = _load_shard(part, range(1, e - s), dim)
            if array is None:
                _remove_shard(part)
            else:
                partial[i] = array
    return done, partial


# ---------------------------------------------------------------------------------------------
# extract mode


def _micro_batch(config, model: str, architecture: tuple) -> int | tuple[int, int]:
    if config.micro_batch >= 0:
        return int(config.micro_batch)
    if jax.default_backend() != "cpu" or model != "xception":
        return 0  # auto on accelerators (and for pixels, no network): the whole batch per pass
    model = Xception(dtype=DTYPES[config.dtype], **dict(architecture))
    return cpu_micro_batches(model, int(config.data.image_size))


def _ids_sha256(ids) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


OUTPUTS = ("features.npy", "ids.npy", "labels.npy", "features_meta.json")


def _file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _up_to_date(meta_path: str, feat_path: str, meta_hash: str) -> np.ndarray | None:
    """features.npy if features_meta.json says it was made under `meta_hash` and its bytes match
    the SHA-256 recorded there; None (with a warning saying why) if it must be extracted again."""
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        logging.warning("%s is unreadable (%s); extracting again.", meta_path, e)
        return None
    if meta.get("meta_hash") != meta_hash:
        logging.warning("%s came from another config or weights; extracting again.", feat_path)
        return None
    expected = meta.get("features_sha256")
    if expected is not None and _file_sha256(feat_path) != expected:
        logging.warning(
            "%s does not match the SHA-256 in %s (truncated or garbled); extracting again.",
            feat_path,
            meta_path,
        )
        return None
    return np.load(feat_path)


def run_extract(config, workdir: str) -> np.ndarray:
    """Writes features.npy, ids.npy, labels.npy and features_meta.json in `workdir`.

    A re-run with the same config, weights and images returns at once; an interrupted run
    resumes from workdir/feature_shards/.
    """
    from galaxy_jax.data.from_config import make_image_source

    validate.extract(config)
    model = config.source
    grayscale = config.grayscale and model == "pixels"
    standardize = config.standardize and model == "pixels"
    workdir = prepare_workdir(workdir)
    d = config.data
    source = make_image_source(d, report_path=os.path.join(workdir, "bad_input_report.json"))
    if model == "xception":
        loaded = weights.from_config(config, include_top=False)
        variables, description = loaded.variables, loaded.description
        weights_sha256, weights_source_sha256 = loaded.sha256, loaded.source_sha256
        weights_record = loaded.record()  # weights_kind: official, wheel, keras-file, ssl, ...
        # An `ssl` encoder (weights=<workdir>/encoder.npz + encoder.json) may be narrower.
        architecture = (
            ()
            if loaded.architecture == weights.DEFAULT_ARCHITECTURE
            else tuple(sorted(loaded.architecture.items()))
        )
        trained = loaded.info.get("image_size") if loaded.info else None
        if trained and int(trained) != int(d.image_size):
            logging.warning(
                "The encoder was trained at %s px; extracting at data.image_size=%s.",
                trained,
                d.image_size,
            )
    else:  # pixels need no network: nothing is loaded or downloaded
        variables, description = {}, "none (pixels)"
        weights_sha256 = weights_source_sha256 = None
        weights_record = {"weights_kind": "none"}
        architecture = ()
    # Everything the numbers depend on (not batch size, device count or shard layout).
    identity = {
        "weights_sha256": weights_sha256,
        "ids_sha256": _ids_sha256(source.ids),
        "num_images": len(source),
        "source_image_shape": list(source.image_shape),
        "image_size": int(d.image_size),
        "crop_size": int(d.crop_size),
        "tta": bool(config.tta),
        "dtype": config.dtype,
    }
    if model != "xception":  # added only here, so that Xception hashes of older runs still match
        identity.update(feature_source=model, grayscale=grayscale, standardize=standardize)
    if architecture:
        identity["architecture"] = dict(architecture)
    meta_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    meta_path = os.path.join(workdir, "features_meta.json")
    feat_path = os.path.join(workdir, "features.npy")
    _remove_temporaries(workdir, OUTPUTS)
    if os.path.exists(meta_path) and os.path.exists(feat_path):
        features = _up_to_date(meta_path, feat_path, meta_hash)
        if features is not None:
            logging.info("%s is up to date; nothing to do.", feat_path)
            return features

    start = time.time()
    features, _ = extract_features(
        source,
        variables,
        image_size=d.image_size,
        crop_size=d.crop_size,
        batch_size=config.batch_size,
        tta=config.tta,
        dtype=config.dtype,
        shard_dir=os.path.join(workdir, SHARD_DIR),
        shard_size=config.shard_size,
        meta_hash=meta_hash,
        micro_batch=_micro_batch(config, model, architecture),
        model=model,
        grayscale=grayscale,
        standardize=standardize,
        architecture=architecture,
    )
    seconds = time.time() - start
    if not np.all(np.isfinite(features)):
        bad = np.flatnonzero(~np.all(np.isfinite(features), axis=1))
        raise UserError(
            f"Non-finite features for {len(bad)} images, e.g. ids {source.ids[bad[:5]]}"
        )

    atomic.save_npy(os.path.join(workdir, "ids.npy"), np.asarray(source.ids).astype(str))
    labels_path = os.path.join(workdir, "labels.npy")
    if source.labels is not None:
        atomic.save_npy(labels_path, np.asarray(source.labels, np.int32))
    elif os.path.exists(labels_path):
        os.remove(labels_path)
    # features.npy last but one, the metadata last: its hash marks the set complete.
    atomic.save_npy(feat_path, features)
    atomic.write_json(
        meta_path,
        {
            **identity,
            "feature_source": model,
            "grayscale": grayscale,
            "standardize": standardize,
            "meta_hash": meta_hash,
            "features_sha256": _file_sha256(feat_path),
            "weights": description,
            "weights_source_sha256": weights_source_sha256,
            **weights_record,
            "class_names": list(source.class_names),
            "feature_dim": int(features.shape[1]),
            "num_devices": jax.device_count(),
            "backend": jax.default_backend(),
            "seconds": round(seconds, 2),
            "images_per_second": round(
                len(source) * (8 if config.tta else 1) / max(seconds, 1e-9), 2
            ),
            "config": config.to_dict(),
            "versions": versions(),
        },
    )
    shutil.rmtree(os.path.join(workdir, SHARD_DIR), ignore_errors=True)
    print(f"Wrote {features.shape} {model} features of {len(source)} images to {feat_path}")
    return features
