"""Exact k-nearest-neighbour search, streamed over the database in fixed-size chunks on device.

`search(queries, database, k)` returns, for every query row, the k closest database rows and
their distances. Every database row is compared with every query, in
chunks of `chunk` rows (one compiled shape; the last chunk is padded and its padding masked), and
a running top-k is merged after each chunk. The database may be any array-like that slices rows
(a NumPy array, a memory map, `galaxy_jax.data.vectors.DiskRows`), so it never has to fit in
memory at once: memory is O(chunk * d + queries * (chunk + k)).

Metrics:
  'cosine'     1 - cos(q, x); rows are L2-normalised first (a zero row stays zero: distance 1).
  'euclidean'  ||q - x||: rows are ranked by ||q||^2 - 2 q.x + ||x||^2 in float32 (products at
               HIGHEST precision) after shifting queries and rows by the queries' mean (distances
               do not change, and the cancellation of large norms goes), then the best 2k
               candidates are re-ranked by their distances computed directly in float64.

Ties are broken by the lower database index, so results are deterministic.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from galaxy_jax.errors import UserError

METRICS = ("cosine", "euclidean")


def _check(metric: str, k: int, n_database: int) -> None:
    if metric not in METRICS:
        raise UserError(f"neighbour metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not 1 <= k <= n_database:
        raise UserError(f"k must be in 1..{n_database} (the database size), got {k}")


def _normalise(x):
    norm = jnp.linalg.norm(x, axis=1, keepdims=True)
    return x / jnp.where(norm > 0, norm, 1.0)


@functools.partial(jax.jit, static_argnames=("k", "metric"))
def _merge_chunk(best_d, best_i, q, chunk, n_valid, offset, shift, *, k, metric):
    """Running top-k [Q, k] updated with one database chunk [C, D] (rows >= n_valid padding);
    `shift` [D] is subtracted from the chunk (euclidean; the queries come shifted)."""
    chunk = chunk.astype(jnp.float32) - shift
    if metric == "cosine":
        chunk = _normalise(chunk)
    prod = jnp.matmul(q, chunk.T, precision=jax.lax.Precision.HIGHEST)  # [Q, C]
    if metric == "cosine":
        d = 1.0 - prod
    else:
        sq = jnp.sum(q * q, axis=1, keepdims=True) - 2.0 * prod + jnp.sum(chunk * chunk, axis=1)
        d = jnp.maximum(sq, 0.0)  # squared until the end (monotone)
    rows = jnp.arange(chunk.shape[0])
    d = jnp.where(rows[None, :] < n_valid, d, jnp.inf)
    # top_k keeps the lower position first among equal values: within the chunk that is the
    # lower row, and the running best (all from earlier chunks, lower rows) goes first.
    neg, pos = jax.lax.top_k(-d, k)
    all_d = jnp.concatenate([best_d, -neg], axis=1)
    all_i = jnp.concatenate([best_i, offset + pos.astype(jnp.int32)], axis=1)
    neg, pos = jax.lax.top_k(-all_d, k)
    return -neg, jnp.take_along_axis(all_i, pos, 1)


def _exact_euclidean(queries, database, idx):
    """||q - x|| in float64 for the chosen rows idx [Q, k], re-sorted (lower index on ties)."""
    dist = np.empty(idx.shape, np.float64)
    for lo in range(0, len(idx), 256):  # [256, k, D] float64 at a time
        block = idx[lo : lo + 256]
        rows, inverse = np.unique(block, return_inverse=True)
        x = np.asarray(database[rows], np.float64)[inverse.reshape(block.shape)]
        q = queries[lo : lo + 256, None, :].astype(np.float64)
        dist[lo : lo + 256] = np.sqrt(((q - x) ** 2).sum(-1))
    order = np.lexsort((idx, dist), axis=1)
    idx[:] = np.take_along_axis(idx, order, 1)
    return np.take_along_axis(dist, order, 1)


def search(
    queries,
    database,
    k: int,
    metric: str = "cosine",
    chunk: int = 65536,
    self_offset: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest database rows of every query row, exactly.

    Args:
      queries: [Q, D] array.
      database: [N, D] array-like that slices rows (streamed in chunks of `chunk` rows).
      k: neighbours per query.
      metric: 'cosine' or 'euclidean' (module docstring).
      chunk: database rows per device step; one compiled shape whatever N is.
      self_offset: the queries ARE database rows self_offset.. self_offset+Q-1 (mining within
        one set): query i never returns row self_offset + i. k must then be < N.
      progress: a progress bar over the database chunks.
    Returns:
      (distances [Q, k] float32, indices [Q, k] int64), nearest first.
    """
    queries = np.asarray(queries, np.float32)
    n = len(database)
    if queries.ndim != 2 or len(database.shape) != 2 or queries.shape[1] != database.shape[1]:
        raise UserError(
            f"queries {queries.shape} and database {tuple(database.shape)} must be 2-D with the "
            "same number of columns"
        )
    kk = k + int(self_offset is not None)
    _check(metric, kk, n)
    # Euclidean: the best 2k by the float32 expansion, re-ranked in float64 below.
    cand = kk if metric == "cosine" else min(n, 2 * kk)
    shift = np.zeros(queries.shape[1], np.float32)
    if metric == "euclidean":
        shift = queries.astype(np.float64).mean(0).astype(np.float32)
    q = jnp.asarray(queries - shift)
    if metric == "cosine":
        q = _normalise(q)
    chunk = max(1, min(max(int(chunk), cand), n))
    best_d = jnp.full((len(q), cand), jnp.inf, jnp.float32)
    best_i = jnp.full((len(q), cand), np.iinfo(np.int32).max, jnp.int32)
    bar = tqdm(range(0, n, chunk), desc="neighbours", leave=False, disable=not progress or None)
    for lo in bar:
        rows = np.asarray(database[lo : lo + chunk], np.float32)
        valid = len(rows)
        if valid < chunk:
            rows = np.concatenate([rows, np.zeros((chunk - valid, rows.shape[1]), np.float32)])
        best_d, best_i = _merge_chunk(
            best_d, best_i, q, jnp.asarray(rows), valid, lo, shift, k=cand, metric=metric
        )
    dist, idx = np.asarray(best_d), np.asarray(best_i).astype(np.int64)
    if metric == "euclidean":  # exact distances of the candidates, free of the cancellation
        dist = _exact_euclidean(queries, database, idx)
        dist, idx = dist[:, :kk], idx[:, :kk]
    if self_offset is not None:  # drop each query's own row, or the (k+1)-th if it was not found
        keep = idx != (self_offset + np.arange(len(idx)))[:, None]
        keep[keep.all(axis=1), -1] = False
        dist, idx = dist[keep].reshape(len(idx), k), idx[keep].reshape(len(idx), k)
    return dist.astype(np.float32), idx


def mine(x, k: int, metric: str = "cosine", chunk: int = 65536, query_chunk: int = 4096):
    """The k nearest OTHER rows of every row of x [N, D] (SCAN's neighbour mining), exactly, the
    queries in blocks of `query_chunk` rows. Returns (distances [N, k], indices [N, k])."""
    out = [
        search(x[lo : lo + query_chunk], x, k, metric, chunk, self_offset=lo, progress=False)
        for lo in tqdm(range(0, len(x), query_chunk), desc="mine neighbours", disable=None)
    ]
    return np.concatenate([d for d, _ in out]), np.concatenate([i for _, i in out])
