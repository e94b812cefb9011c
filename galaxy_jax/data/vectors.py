"""Vector datasets for the SAE and DEC: MNIST pixels, extracted features, and generated blobs.

Every loader returns `Vectors(x [N, D] float32, y [N] int32 or None, ids [N] str)`.

Extracted features are streamed: `x` is then a `DiskRows`, which reads the rows a batch or a
chunk needs from features.npy with pread (never memory-mapped, so the file's pages stay in the
page cache and out of the process's resident memory) and applies the normalisation on the fly.
Peak memory is then set by the batch and chunk sizes, not by N (bench/scaling.py measures it).
MNIST and the generated blobs are small and live in memory as plain arrays.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from galaxy_jax import atomic
from galaxy_jax.errors import UserError

DATASETS = ("mnist", "features", "blobs")
SCAN_CHUNK = 1024  # rows per block of the one pass over a features file (finite check, power)
FEATURE_NORMALIZE = ("unit_power", "sqrt_l2", "none")


def sqrt_l2_rows(x: np.ndarray) -> np.ndarray:
    """Each row's signed square root (power normalisation), then the row scaled to norm sqrt(D),
    so that mean |x|^2 / D = 1 as with 'unit_power'. In place on a float32 [n, D] block.

    Xception's pooled features are averages of ReLU outputs, a few channels large and most near
    zero; the square root evens them out and the L2 step removes each galaxy's overall
    brightness of response, leaving its direction (bench/feature_normalisation.py).
    """
    root = np.sqrt(np.abs(x))
    np.copysign(root, x, out=x)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x *= np.sqrt(x.shape[1]) / np.maximum(norm, np.finfo(np.float32).tiny)
    return x


class DiskRows:
    """The rows of a C-ordered [N, D] float32 .npy file, read on demand, through `rows_fn` (a
    row-wise normalisation, or None) and times `scale`.

    x[a:b] reads one contiguous block; x[idx] (an int array, any order, repeats allowed) reads
    each run of consecutive rows with one pread. Both return new float32 arrays in memory.
    np.asarray(x) reads the whole file (for the modes that need it all, e.g. the supervised ANN).
    """

    def __init__(self, path: str, scale: float = 1.0, rows_fn=None):
        self.path = path
        self.rows_fn = rows_fn  # applied to every block read, before `scale`
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            self._offset = f.tell()
        if len(shape) != 2 or fortran or np.dtype(dtype) != np.float32:
            raise UserError(
                f"{path} must be a C-ordered [N, D] float32 array, got {shape} {dtype}"
                f"{' (Fortran order)' if fortran else ''}"
            )
        self.shape = tuple(int(v) for v in shape)
        self._row_bytes = self.shape[1] * 4
        need = self._offset + self.shape[0] * self._row_bytes
        if os.path.getsize(path) < need:
            raise UserError(f"{path} is truncated ({os.path.getsize(path)} of {need} bytes)")
        self.scale = np.float32(scale)
        self._fd = os.open(path, os.O_RDONLY)

    dtype = np.dtype(np.float32)
    ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def with_scale(self, scale: float) -> DiskRows:
        return DiskRows(self.path, scale, self.rows_fn)

    def with_rows_fn(self, rows_fn) -> DiskRows:
        """The same rows, each block passed through rows_fn (in place, float32 [n, D])."""
        return DiskRows(self.path, self.scale, rows_fn)

    def __array__(self, dtype=None, copy=None):
        out = self[0 : len(self)]
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            lo, hi, step = key.indices(len(self))
            if step != 1:
                return self[np.arange(lo, hi, step)]
            out = np.empty((max(hi - lo, 0), self.shape[1]), np.float32)
            self._read(lo, out)
        else:
            idx = np.asarray(key)
            if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                raise TypeError(f"DiskRows takes a slice or a 1-D int array, not {key!r}")
            idx = np.where(idx < 0, idx + len(self), idx)
            if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
                raise IndexError(f"row index out of range for {len(self)} rows")
            out = np.empty((len(idx), self.shape[1]), np.float32)
            order = np.argsort(idx, kind="stable")
            sorted_idx = idx[order]
            block = np.empty_like(out)
            # Runs of consecutive rows (a repeat starts a new run): one read each.
            starts = np.flatnonzero(np.diff(sorted_idx, prepend=-2) != 1)
            ends = np.append(starts[1:], len(idx))
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                self._read(int(sorted_idx[a]), block[a:b])
            out[order] = block
        if self.rows_fn is not None:
            out = self.rows_fn(out)
        if self.scale != 1:
            out *= self.scale
        return out

    def _read(self, row: int, out: np.ndarray) -> None:
        if not out.size:
            return
        want = out.nbytes
        got = os.preadv(self._fd, [memoryview(out).cast("B")], self._offset + row * self._row_bytes)
        if got != want:
            raise UserError(f"{self.path}: short read at row {row} (file changed or truncated?)")


@dataclasses.dataclass
class Vectors:
    x: np.ndarray | DiskRows  # [N, D] float32, in memory or streamed from disk
    y: np.ndarray | None  # [N] int32 class labels, -1 unknown; None if unlabelled
    ids: np.ndarray  # [N] str


def load_vectors(data) -> Vectors:
    """data: the config's `data` section; dispatches on data.name."""
    if data.name == "mnist":
        return load_mnist(data.path, data.normalize)
    if data.name == "features":
        return load_features(data.path, data.normalize)
    if data.name == "blobs":
        return make_blobs(data.n, data.dim, data.n_clusters, data.seed, data.spread)
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
    when labelled, labels.npy. The features are streamed from disk (`DiskRows`).

    normalize: 'unit_power' scales by one global constant so that mean_i |x_i|^2 / d = 1, the
               DEC paper's normalisation (features of a randomly initialised Xception are ~1e-5,
               ImageNet ones ~1), computed in one chunked pass and applied as rows are read.
               'sqrt_l2': each row square-rooted (signed) and scaled to norm sqrt(D)
               (`sqrt_l2_rows`): on ImageNet features of the SDSS set, k-means with 2
               clusters goes from 0.648 to 0.840 (docs/results.md). 'none' reads them as written.
    """
    path = os.path.abspath(os.path.expanduser(path))
    fpath = os.path.join(path, "features.npy")
    if not os.path.isfile(fpath):
        raise UserError(
            f"No features.npy in {path}: run the extract mode with --workdir={path} "
            "first, or point data.path at its workdir."
        )
    x = DiskRows(fpath)
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
    if normalize not in FEATURE_NORMALIZE:
        raise UserError(
            f"data.normalize={normalize!r}: use one of {FEATURE_NORMALIZE} for features"
        )
    power = check_finite(x, fpath, ids)
    if normalize != "none" and power == 0.0:
        raise UserError("the features are all zero; nothing to cluster")
    if normalize == "unit_power":
        x = x.with_scale(1.0 / np.sqrt(power))
    elif normalize == "sqrt_l2":
        x = x.with_rows_fn(sqrt_l2_rows)
    return Vectors(x, y, ids)


def save_features(path: str, features: np.ndarray, ids, labels) -> None:
    """Writes the layout `load_features` reads, each file atomically: ids.npy ([N] str),
    labels.npy ([N] int32; removed when labels is None) and features.npy last. The caller then
    writes features_meta.json, whose hash marks the set complete."""
    atomic.save_npy(os.path.join(path, "ids.npy"), np.asarray(ids).astype(str))
    labels_path = os.path.join(path, "labels.npy")
    if labels is not None:
        atomic.save_npy(labels_path, np.asarray(labels, np.int32))
    elif os.path.exists(labels_path):
        os.remove(labels_path)
    atomic.save_npy(os.path.join(path, "features.npy"), features)


def check_finite(x, fpath: str, ids=None) -> float:
    """One chunked pass over x [N, D]: raises UserError naming the file, row and id of the first
    NaN/inf; returns the mean power sum(x^2) / x.size (float64 accumulation)."""
    sq, first, n_bad = 0.0, None, 0
    for lo in range(0, len(x), SCAN_CHUNK):
        block = np.asarray(x[lo : lo + SCAN_CHUNK])
        ok = np.isfinite(block)
        if ok.all():
            sq += float(np.square(block, dtype=np.float64).sum())
            continue
        if first is None:
            r, c = np.argwhere(~ok)[0]
            first = (lo + int(r), int(c), block[r, c])
        n_bad += int((~ok).sum())
    if first is not None:
        row, c, value = first
        name = f" (id {ids[row]})" if ids is not None else ""
        raise UserError(
            f"{fpath} row {row}{name} column {c} is {value}: the features hold {n_bad} "
            "non-finite values. Re-extract them, or drop those rows."
        )
    return sq / max(len(x) * x.shape[1], 1)


def make_blobs(n: int, dim: int, n_clusters: int, seed: int, spread: float = 1.0) -> Vectors:
    """Well-separated Gaussian clusters pushed through a fixed random nonlinearity (for tests)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4.0, (n_clusters, 8))
    y = rng.integers(0, n_clusters, n).astype(np.int32)
    latent = centres[y] + rng.normal(0, spread, (n, 8))
    proj = rng.normal(0, 1 / np.sqrt(8), (8, dim))
    x = np.tanh(latent @ proj).astype(np.float32)
    return Vectors(x, y, np.arange(n).astype(str))
