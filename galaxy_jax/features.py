"""Feature extraction: images -> [N, D] float32 feature vectors, resumable, data-parallel.

Feature sources (`FeatureSpec.model`):
  xception   [N, 2048] pooled Xception features (ImageNet, random or a weights file)
  pixels     [N, S*S] (grayscale) or [N, S*S*3] (RGB) flattened preprocessed images: the same
             crop, resize and [-1, 1] scaling as the Xception input, so that `kmeans` and `dec`
             on them are the "on pixels" baselines. No network, no weights. `standardize`
             z-scores each image (its brightness and contrast no longer count).
With `tta` both average over the 8 rotations/flips of each image; for pixels that average is
itself invariant to them (a rotation-symmetrised image).

Interruptions (see `extract_features`): with a shard directory, each shard is written through
galaxy_jax.shards (atomically, its SHA-256 beside it first), so after a kill -9 a re-run keeps
every complete shard and rebuilds, with a warning naming it, any shard that is missing,
truncated, garbled or without its digest. SIGTERM/SIGINT stop at the next batch: the finished
batches of the current shard are saved as a partial shard, and `preemption.Preempted` is raised
(main.py exits 75); the re-run continues from that batch.

Extraction is data-parallel over all devices through `jax.sharding`: the batch is split along
mesh axis 'data' (galaxy_jax.parallel.mesh), the weights are replicated, and one jitted function
serves every batch (the last batch is padded to full size, so it compiles once per input shape).
Images come through galaxy_jax.data.loader, one batch read ahead while the devices work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from galaxy_jax import parallel, preemption, shards
from galaxy_jax.data.image_source import ImageSource
from galaxy_jax.data.loader import image_batches
from galaxy_jax.data.preprocess import preprocess
from galaxy_jax.errors import UserError
from galaxy_jax.models.xception import MIN_SIZE, Xception, scaled_channels

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
FEATURE_SOURCES = ("xception", "pixels")
TTA_POOLS = ("mean", "max")
XCEPTION_DIM = 2048


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """What the features are: everything the numbers depend on, but the weights and the images.

    model: feature source, 'xception' or 'pixels' (FEATURE_SOURCES).
    image_size, crop_size: the network input S, after a centre crop of crop_size (0: none).
    tta: pool over the 8 rotations and flips of each image (exactly invariant to them).
    tta_pool: how: 'mean' (the average) or 'max' (per feature, the largest over the views).
    dtype: the network's compute dtype (DTYPES).
    grayscale: pixels only: one channel, the mean of R, G and B.
    standardize: pixels only: each image's values to mean 0, standard deviation 1.
    architecture: Xception constructor fields of an `ssl` encoder, sorted (name, value) pairs
      (weights.LoadedWeights.architecture); () is Keras' Xception.
    micro_batch: images per device per network pass inside a batch, or a pair (entry, rest)
      (see `pooled_features`); 0 runs the whole batch at once. Changes speed, not the numbers.

    Validated and normalised on construction (UserError naming the field); hashable, so one
    jitted function serves every extraction of the same spec (`make_feature_fn`).
    """

    image_size: int
    crop_size: int = 0
    tta: bool = False
    tta_pool: str = "mean"
    dtype: str = "float32"
    model: str = "xception"
    grayscale: bool = False
    standardize: bool = False
    architecture: tuple = ()
    micro_batch: int | tuple[int, int] = 0

    def __post_init__(self):
        if self.model not in FEATURE_SOURCES:
            raise UserError(f"model must be one of {FEATURE_SOURCES}, got {self.model!r}")
        if self.model == "xception" and self.image_size < MIN_SIZE:
            raise UserError(f"image_size must be at least {MIN_SIZE}, got {self.image_size}")
        if self.image_size < 1:
            raise UserError(f"image_size must be at least 1, got {self.image_size}")
        if self.tta_pool not in TTA_POOLS:
            raise UserError(f"tta_pool must be one of {TTA_POOLS}, got {self.tta_pool!r}")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        mb = self.micro_batch
        pixels = self.model == "pixels"
        for name, value in (
            ("image_size", int(self.image_size)),
            ("crop_size", int(self.crop_size)),
            ("tta", bool(self.tta)),
            ("grayscale", bool(self.grayscale) and pixels),
            ("standardize", bool(self.standardize) and pixels),
            ("architecture", tuple(self.architecture)),
            ("micro_batch", int(mb) if isinstance(mb, (int, np.integer)) else tuple(mb)),
        ):
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        """Width D of the features."""
        return feature_dim(self.model, self.image_size, self.grayscale, self.architecture)

    def network(self) -> Xception:
        return Xception(dtype=DTYPES[self.dtype], **dict(self.architecture))


def auto_micro_batch(spec: FeatureSpec) -> int | tuple[int, int]:
    """The micro_batch for `spec` on this backend: `cpu_micro_batches` for Xception on CPU; 0 on
    accelerators (and for pixels, no network): the whole batch per pass."""
    if jax.default_backend() != "cpu" or spec.model != "xception":
        return 0
    return cpu_micro_batches(spec.network(), spec.image_size)


# ---------------------------------------------------------------------------------------------
# The network and the pixels


def dihedral_batch(x, k):
    """View k in [0, 8) of square images x: [B, S, S, C]: rotation by k*90 deg, flipped if k>=4."""

    def branch(i):
        return lambda y: jnp.rot90(y if i < 4 else y[:, :, ::-1], k=i % 4, axes=(1, 2))

    return jax.lax.switch(k, [branch(i) for i in range(8)], x)


def pooled_features(
    model: Xception,
    variables,
    x,
    *,
    micro_batch: int | tuple[int, int] = 0,
    num_shards: int = 1,
    output: str = "pooled",
):
    """[B, S, S, 3] images in [-1, 1] -> [B, 2048] float32 average-pooled features.

    output 'middle': the middle flow's output [B, h, w, 728] instead (the exit flow's input;
    the stage 'middle' in place of 'rest', galaxy_jax/adapt.py).

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
    pooled = lambda y, stage: model.apply(variables, y, stage=stage)[1][output]  # noqa: E731
    if output not in ("pooled", "middle"):
        raise ValueError(f"output must be 'pooled' or 'middle', got {output!r}")
    last = {"pooled": "rest", "middle": "middle"}[output]
    if entry == rest and output == "pooled":
        out = _map_steps(lambda y: pooled(y, "all"), x, entry, num_shards)
    else:
        h = _map_steps(
            lambda y: model.apply(variables, y, stage="entry")[1]["block3"], x, entry, num_shards
        )
        out = _map_steps(lambda y: pooled(y, last), h, rest, num_shards)
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
def make_feature_fn(mesh: Mesh, spec: FeatureSpec):
    """jit(variables, images [B, H, W, 3] uint8) -> [B, D] float32 features.

    model 'xception': D = 2048 pooled features; 'pixels': the preprocessed image, flattened
    (`pixel_features`; `variables` is then an empty dict). B must be a multiple of the mesh size.
    With `tta`, the features are averaged over the 8 rotations and flips of each image (galaxies
    have no preferred orientation). `standardize` (pixels): `standardize_rows` after the TTA
    average. Cached, so repeated extractions with the same settings reuse one compilation.
    """
    data = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    dim = spec.dim
    if spec.model == "xception":
        features_of = functools.partial(
            pooled_features,
            spec.network(),
            micro_batch=spec.micro_batch,
            num_shards=mesh.devices.size,
        )
    else:
        grayscale = spec.grayscale
        features_of = lambda variables, x: pixel_features(x, grayscale=grayscale)  # noqa: E731
    crop_size, image_size, tta, standardize = (
        spec.crop_size,
        spec.image_size,
        spec.tta,
        spec.standardize,
    )
    pool_max = spec.tta_pool == "max"

    def fn(variables, images):
        x = preprocess(images, crop_size=crop_size or None, image_size=image_size)
        x = jax.lax.with_sharding_constraint(x, data)
        if not tta:
            f = features_of(variables, x)
        else:
            # A loop, not 8 copies of the network in the graph: compile time stays that of one.
            combine = jnp.maximum if pool_max else jnp.add
            acc = jax.lax.fori_loop(
                0,
                8,
                lambda k, acc: combine(acc, features_of(variables, dihedral_batch(x, k))),
                jnp.full((x.shape[0], dim), -jnp.inf if pool_max else 0.0, jnp.float32),
            )
            f = acc if pool_max else acc / 8.0
        return standardize_rows(f) if standardize else f

    return jax.jit(fn, in_shardings=(replicated, data), out_shardings=data)


# ---------------------------------------------------------------------------------------------
# Extraction


def extract_features(
    source: ImageSource,
    variables,
    spec: FeatureSpec,
    *,
    batch_size: int = 32,
    mesh: Mesh | None = None,
    shard_dir: str | None = None,
    shard_size: int = 4096,
    meta_hash: str = "",
    progress: bool = True,
    feature_fn=None,
    dim: int = 0,
    store_dtype=np.float32,
    out_path: str | None = None,
):
    """[N, D] float32 features of every image of `source` (D: `spec.dim`).

    Args:
      source: the images; all of shape source.image_shape.
      variables: Xception {'params', 'batch_stats'} without the top; {} for model 'pixels'.
      spec: what the features are (FeatureSpec).
      batch_size: global batch, rounded up to a multiple of the number of devices.
      mesh: the devices (default galaxy_jax.parallel.mesh(): all of them).
      shard_dir: if set, each `shard_size` images are saved there as they finish, and shards
        already there (under the same `meta_hash`, with a matching SHA-256) are reused, so an
        interrupted run resumes. A stop request (galaxy_jax.preemption) is then honoured after
        the current batch: the batches done of the current shard are saved as a partial shard
        and Preempted is raised.
      meta_hash: identifies everything the features depend on; a shard_dir written under another
        hash is deleted and rebuilt, never reused.
      feature_fn, dim, store_dtype: another per-image output in place of `make_feature_fn(mesh,
        spec)`: a jitted fn(variables, images) -> [B, dim], kept as store_dtype (in memory and in
        the shards; galaxy_jax/adapt.py caches float16 middle-flow activations this way).
      out_path: with shard_dir, the finished shards are copied one at a time into this .npy
        (then renamed into place), and a read-only memmap of it is returned: for outputs larger
        than memory.
    Returns:
      (features [N, D] store_dtype, the jitted function, for inspection by tests).
    """
    mesh = mesh or parallel.mesh()
    n_dev = mesh.devices.size
    batch_size = -(-int(batch_size) // n_dev) * n_dev
    fn = feature_fn or make_feature_fn(mesh, spec)
    dim = int(dim) or spec.dim
    store_dtype = np.dtype(store_dtype)
    variables = jax.device_put(variables, NamedSharding(mesh, P()))

    n = len(source)
    ranges = shards.ranges(n, shard_size)
    done, partial = (
        _open_shard_dir(shard_dir, meta_hash, ranges, dim, store_dtype)
        if shard_dir
        else (set(), {})
    )
    todo = [(i, s, e) for i, (s, e) in enumerate(ranges) if i not in done]
    if done or partial:
        logging.info(
            "Resuming: %d of %d feature shards already written, %d partly.",
            len(done),
            len(ranges),
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

    def indices(b, e):
        idx = np.arange(b, b + batch_size)
        idx[e - b :] = e - 1  # pad the last batch by repeating its last image
        return idx

    loader = image_batches(
        source, (indices(b, e) for _, b, e in batches), sharding=NamedSharding(mesh, P("data"))
    )
    with contextlib.closing(loader):
        for k, ((i, b, e), (images,)) in enumerate(zip(batches, loader, strict=True)):
            feats = fn(variables, images)
            results[i].append(np.asarray(feats)[: e - b].astype(store_dtype, copy=False))
            bar.update(e - b)
            if e == ranges[i][1]:  # shard complete
                shard = np.concatenate(results.pop(i))
                if shard_dir:
                    path = shards.shard_path(shard_dir, i, len(ranges))
                    shards.save_npy(path, shard)
                    shards.remove(shards.partial_path(path))
                else:
                    results[i] = [shard]
            if shard_dir and preemption.requested() and k + 1 < len(batches):
                if e < ranges[i][1]:
                    shards.save_npy(
                        shards.partial_path(shards.shard_path(shard_dir, i, len(ranges))),
                        np.concatenate(results[i]),
                    )
                bar.close()
                raise preemption.Preempted(
                    f"extract stopped after image {e} of {n}; the finished batches are saved "
                    f"under {shard_dir}"
                )
    bar.close()

    if shard_dir and out_path:  # shard by shard into the file: never the whole array in memory
        tmp = f"{out_path}.tmp-{os.getpid()}"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=store_dtype, shape=(n, dim))
        for i, (s, e) in enumerate(ranges):
            out[s:e] = np.load(shards.shard_path(shard_dir, i, len(ranges)))
        out.flush()
        del out
        os.replace(tmp, out_path)
        return np.load(out_path, mmap_mode="r"), fn
    if shard_dir:
        parts = [np.load(shards.shard_path(shard_dir, i, len(ranges))) for i in range(len(ranges))]
    else:
        parts = [results[i][0] for i in range(len(ranges))]
    features = np.concatenate(parts) if parts else np.zeros((0, dim), store_dtype)
    return features, fn


def _load_feature_shard(path: str, rows, dim: int, dtype=np.float32) -> np.ndarray | None:
    """The [r, dim] `dtype` array in `path` if it matches its digest and r is in `rows`; else
    None, with a warning naming the file (it is then rebuilt)."""
    array = shards.load_npy(path, "feature shard")
    if array is None:
        return None
    if array.dtype != dtype or array.ndim != 2 or array.shape[1] != dim:
        logging.warning("Ignoring misshaped feature shard %s %s; rebuilding it.", path, array.shape)
        return None
    if array.shape[0] not in rows:
        logging.warning("Ignoring feature shard %s of %d rows; rebuilding it.", path, len(array))
        return None
    return array


def _open_shard_dir(shard_dir: str, meta_hash: str, ranges, dim: int, dtype=np.float32):
    """Shards already in `shard_dir`: (indices of the complete ones, {index: partial array}).

    Clears the directory if it was written under another hash (shards.open_dir).
    """
    shards.open_dir(shard_dir, meta_hash, "features")
    done, partial = set(), {}
    for i, (s, e) in enumerate(ranges):
        path = shards.shard_path(shard_dir, i, len(ranges))
        if os.path.exists(path):
            if _load_feature_shard(path, (e - s,), dim, dtype) is not None:
                done.add(i)
                shards.remove(shards.partial_path(path))
                continue
            shards.remove(path)
        part = shards.partial_path(path)
        if os.path.exists(part):
            array = _load_feature_shard(part, range(1, e - s), dim, dtype)
            if array is None:
                shards.remove(part)
            else:
                partial[i] = array
    return done, partial


def features_of_files(paths, features_dir: str) -> tuple[np.ndarray, list]:
    """Features of image files that are not in a features dir, made exactly as that dir's were:
    the same weights, preprocessing, tta and feature source (from its features_meta.json). Each
    file (jpg, png, fits, npy) is read as the dataset reads its own, resized to the dataset's
    image shape (so the crop covers the same fraction), then goes through the same network.

    Returns (features [len(paths), D] float32, the [H, W, 3] uint8 images as read)."""
    import json
    import os

    import ml_collections

    from galaxy_jax import parallel, weights
    from galaxy_jax.data import fits
    from galaxy_jax.data.folder import read_image_file
    from galaxy_jax.errors import UserError

    meta_path = os.path.join(features_dir, "features_meta.json")
    if not os.path.isfile(meta_path):
        raise UserError(f"no features_meta.json in {features_dir}: not an extract workdir")
    with open(meta_path) as f:
        meta = json.load(f)
    config = ml_collections.ConfigDict(meta["config"])
    h, w, _ = meta["source_image_shape"]
    model = meta.get("feature_source", "xception")
    variables, architecture = {}, ()
    if model == "xception":
        loaded = weights.from_config(config, include_top=False)
        if loaded.sha256 != meta.get("weights_sha256"):
            raise UserError(
                f"the weights named in {meta_path} ({loaded.description}) are not the ones the "
                "features were made with (sha256 differs): the query would not be comparable"
            )
        variables = loaded.variables
        if loaded.architecture != weights.DEFAULT_ARCHITECTURE:
            architecture = tuple(sorted(loaded.architecture.items()))
    spec = FeatureSpec(
        image_size=meta["image_size"],
        crop_size=meta["crop_size"],
        tta=meta["tta"],
        tta_pool=meta.get("tta_pool", "mean"),  # features written before tta_pool: the mean
        dtype=meta["dtype"],
        model=model,
        grayscale=meta.get("grayscale", False),
        standardize=meta.get("standardize", False),
        architecture=architecture,
    )
    reader = fits.FitsReader(fits.FitsOptions.from_config(config.data))
    images = []
    for p in paths:
        if not os.path.isfile(p):
            raise UserError(f"query image not found: {p}")
        img = read_image_file(p, 0, reader)
        if img.shape[:2] != (h, w):
            from PIL import Image

            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        images.append(img)
    mesh = parallel.mesh()
    n_dev = mesh.devices.size
    batch = np.stack(images)
    pad = (-len(batch)) % n_dev
    if pad:
        batch = np.concatenate([batch, np.repeat(batch[-1:], pad, 0)])
    feats = np.asarray(make_feature_fn(mesh, spec)(variables, batch))[: len(images)]
    return feats.astype(np.float32), images
