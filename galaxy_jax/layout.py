"""The 2-D map of a run's embedding, computed once and saved with the run (map_2d.npz).

The report's scatter plots, the export's map_x / map_y columns and the interactive map all read
the same coordinates. UMAP (umap-learn) lays out the points when it is installed, else t-SNE
(scikit-learn). Large runs are laid out on a seeded subsample of at most `max_points` rows
(`rows` says which); the other rows have no coordinates.
"""

from __future__ import annotations

import json
import os

import numpy as np

from galaxy_jax import atomic
from galaxy_jax.errors import UserError

FILE = "map_2d.npz"


def method() -> str:
    try:
        import umap  # noqa: F401

        return "umap"
    except ImportError:
        return "tsne"


def _fit(z: np.ndarray, how: str, seed: int, iters: int) -> np.ndarray:
    if how == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(z)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3.0)))
    # Exact t-SNE is faster than Barnes-Hut below ~1000 points (whose threads also spin on a
    # busy CPU); 250 iterations is sklearn's minimum.
    return TSNE(
        2,
        perplexity=perplexity,
        init="pca",
        random_state=seed,
        method="exact" if len(z) <= 1000 else "barnes_hut",
        max_iter=max(250, int(iters)),
    ).fit_transform(z)


def fingerprint(z) -> str:
    """A hash of the embedding's shape and of its first and last rows: a re-extraction or a
    re-run with other numbers gets a new layout, not the old one's."""
    import hashlib

    n = len(z)
    h = hashlib.sha256(str(tuple(z.shape)).encode())
    for rows in (z[: min(n, 64)], z[max(0, n - 64) :]):
        h.update(np.ascontiguousarray(np.asarray(rows, np.float32)).tobytes())
    return h.hexdigest()[:16]


def layout(run_dir: str, z, max_points: int, seed: int, iters: int = 1000, how: str = ""):
    """(rows [M] int, xy [M, 2] float32, method) of the embedding z [N, d] of the run in run_dir;
    read from run_dir/map_2d.npz when it was made with the same settings, else computed and
    saved there (atomically; a read-only run directory just recomputes)."""
    how = how or method()
    n = len(z)
    params = {"n": n, "max_points": int(max_points), "seed": int(seed), "iters": int(iters)}
    params.update(method=how, data=fingerprint(z))
    path = os.path.join(run_dir, FILE)
    if os.path.isfile(path):
        try:
            with np.load(path) as f:
                if json.loads(str(f["params"])) == params:
                    return f["rows"], f["xy"], how
        except (OSError, ValueError, KeyError):
            pass  # damaged or older: recompute
    rows = np.sort(np.random.default_rng(seed).permutation(n)[: min(n, max_points)])
    xy = _fit(np.asarray(z[rows], np.float32), how, seed, iters).astype(np.float32)
    import io

    buf = io.BytesIO()
    np.savez(buf, rows=rows, xy=xy, params=json.dumps(params, sort_keys=True))
    try:
        atomic.write_bytes(path, buf.getvalue())
    except UserError:  # a read-only or full run directory: the map is still returned
        pass
    return rows, xy, how


def coordinates(run_dir: str, n: int) -> np.ndarray | None:
    """[n, 2] map coordinates of every row (NaN where the map sampled it out), from the run's
    saved map_2d.npz; None when it has none."""
    path = os.path.join(run_dir, FILE)
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path) as f:
            rows, xy = f["rows"], f["xy"]
    except (OSError, ValueError, KeyError):
        return None
    out = np.full((n, 2), np.nan, np.float32)
    if len(rows) and rows.max() < n:
        out[rows] = xy
    return out
