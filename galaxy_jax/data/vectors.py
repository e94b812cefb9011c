"""Vector datasets for the SAE and DEC: MNIST pixels, extracted features, and generated blobs.

Every loader returns `Vectors(x [N, D] float32, y [N] int32 or None, ids [N] str)`.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from galaxy_jax.errors import UserError

DATASETS = ("mnist", "features", "blobs")


@dataclasses.dataclass
class Vectors:
    x: np.ndarray  # [N, D] float32 (possibly a read-only memory map)
    y: np.ndarray | None  # [N] int32 class labels, -1 unknown; None if unlabelled
    ids: np.ndarray  # [N] str


def load_vectors(data) -> Vectors:
    """data: the config's `data` section; dispatches on data.name."""
    if data.name == "mnist":
        return load_mnist(data.path, data.get("normalize", "unit_power"))
    if data.name == "features":
        return load_features(data.path, data.get("normalize", "unit_power"))
    if data.name == "blobs":
        return make_blobs(data.n, data.dim, data.n_clusters, data.seed, data.get("spread", 1.0))
    raise UserError(f"data.name={data.name!r} is not a vector dataset; known: {DATASETS}")


def load_mnist(path: str, normalize: str = "unit_power") -> Vectors:
    """All 70,000 MNIST digits (train then test) from a Keras-format mnist.npz, as [N, 784].

    normalize: 'unit_power' scales so that mean_i |x_i|^2 / d = 1 (the DEC paper, section 4.1);
               'scale01' divides by 255 (the DEC-keras reimplementation).
    """
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(path):
        raise UserError(
            f"MNIST file not found: {path}. Set --config.data.path to a Keras-format mnist.npz "
            "(keys x_train, y_train, x_test, y_test)."
        )
    with np.load(path) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise UserError(f"{path} is not a Keras mnist.npz: missing keys {sorted(missing)}")
        x = np.concatenate([f["x_train"], f["x_test"]]).reshape(-1, 784).astype(np.float32)
        y = np.concatenate([f["y_train"], f["y_test"]]).astype(np.int32)
    x /= 255.0
    if normalize == "unit_power":
        x *= np.float32(1.0 / np.sqrt(np.mean(np.sum(x * x, axis=1)) / x.shape[1]))
    elif normalize != "scale01":
        raise UserError(f"data.normalize={normalize!r}: use 'unit_power' or 'scale01'")
    return Vectors(x, y, np.arange(len(x)).astype(str))


def load_features(path: str, normalize: str = "unit_power") -> Vectors:
    """Features written by the `extract` mode: a directory with features.npy [N, D], ids.npy and,
    when labelled, labels.npy.

    normalize: 'unit_power' scales by one global constant so that mean_i |x_i|^2 / d = 1, the
               DEC paper's normalisation (features of a randomly initialised Xception are ~1e-5,
               ImageNet ones ~1); this loads the features into memory. 'none' keeps them as a
               read-only memory map.
    """
    path = os.path.abspath(os.path.expanduser(path))
    fpath = os.path.join(path, "features.npy")
    if not os.path.isfile(fpath):
        raise UserError(
            f"No features.npy in {path}: run the extract mode with --workdir={path} "
            "first, or point data.path at its workdir."
        )
    x = np.load(fpath, mmap_mode="r")
    if x.ndim != 2 or x.dtype != np.float32:
        raise UserError(f"{fpath} must be a [N, D] float32 array, got {x.shape} {x.dtype}")
    ids_path, labels_path = os.path.join(path, "ids.npy"), os.path.join(path, "labels.npy")
    ids = np.load(ids_path) if os.path.isfile(ids_path) else np.arange(len(x)).astype(str)
    y = np.load(labels_path).astype(np.int32) if os.path.isfile(labels_path) else None
    for name, arr in (("ids.npy", ids), ("labels.npy", y)):
        if arr is not None and len(arr) != len(x):
            raise UserError(f"{path}/{name} has {len(arr)} rows but features.npy has {len(x)}")
    if len(x) == 0 or x.shape[1] == 0:
        raise UserError(f"{fpath} is empty (shape {x.shape}); re-run the extract mode")
    meta = os.path.join(path, "features_meta.json")
    if os.path.isfile(meta):
        with open(meta) as f:
            json.load(f)  # a truncated metadata file means a broken extraction: fail loudly
    check_finite(x, fpath, ids)
    if normalize == "unit_power":
        x = _unit_power(x)
    elif normalize != "none":
        raise UserError(f"data.normalize={normalize!r}: use 'unit_power' or 'none' for features")
    return Vectors(x, y, ids)


def _unit_power(x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """x * c with c chosen so that mean_i |x_i|^2 / d = 1 (computed in row chunks, float64)."""
    sq = sum(
        float(np.square(x[lo : lo + chunk], dtype=np.float64).sum())
        for lo in range(0, len(x), chunk)
    )
    power = sq / x.size
    if power == 0.0:
        raise UserError("the features are all zero; nothing to cluster")
    return np.asarray(x, np.float32) * np.float32(1.0 / np.sqrt(power))


def check_finite(x: np.ndarray, fpath: str, ids=None, chunk: int = 4096) -> None:
    """Raises UserError naming the file, row and id of the first NaN/inf in x [N, D].

    Reads in row chunks, so a memory-mapped file is scanned without loading it whole.
    """
    for lo in range(0, len(x), chunk):
        ok = np.isfinite(x[lo : lo + chunk])
        if not ok.all():
            r, c = np.argwhere(~ok)[0]
            row = lo + int(r)
            name = f" (id {ids[row]})" if ids is not None else ""
            raise UserError(
                f"{fpath} row {row}{name} column {int(c)} is {x[row, c]}: the features hold "
                f"{_count_bad(x, chunk)} non-finite values. Re-extract them, or drop those rows."
            )


def _count_bad(x, chunk):
    return sum(int((~np.isfinite(x[lo : lo + chunk])).sum()) for lo in range(0, len(x), chunk))


def make_blobs(n: int, dim: int, n_clusters: int, seed: int, spread: float = 1.0) -> Vectors:
    """Well-separated Gaussian clusters pushed through a fixed random nonlinearity (for tests)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4.0, (n_clusters, 8))
    y = rng.integers(0, n_clusters, n).astype(np.int32)
    latent = centres[y] + rng.normal(0, spread, (n, 8))
    proj = rng.normal(0, 1 / np.sqrt(8), (8, dim))
    x = np.tanh(latent @ proj).astype(np.float32)
    return Vectors(x, y, np.arange(n).astype(str))
