"""DEC's starting point and the labels it may see: centre initialisation (k-means, Gaussian
mixture, agglomerative Ward, or class means of labelled points), the seeded draw of visible
labels, and the cluster -> class map of the semi-supervised term.

Shapes: z [N, d] embeddings, centres [K, d], labels [N] int32 with -1 = unknown or hidden.

Which labels a run sees: `visible_labels` draws round(fraction * N) row indices (seeded, from
the row count only) and reads the labels at those indices and nowhere else; every other row is
-1. The training code gets only that masked array (tests/test_variants.py poisons the hidden
labels and checks that nothing changes).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from galaxy_jax import neighbours, preemption
from galaxy_jax.errors import UserError

INITS = ("kmeans", "gmm", "ward", "umap", "spectral", "labels")
WARD_MAX_N = 30000  # Ward's linkage holds O(N^2) distances
# Rows the initial clustering is fitted on (dec.init_sample); every row is then assigned.
DEFAULT_INIT_SAMPLE = 100_000
ASSIGN_CHUNK = 65536  # rows per nearest-centre block


def visible_labels(y, fraction: float, seed: int) -> np.ndarray:
    """[N] int32: y at a seeded random round(fraction * N) rows, -1 elsewhere.

    The draw depends on (seed, N) only, never on label values, and y is indexed at the drawn
    rows only (y may be any object with len() and integer-array indexing).
    """
    n = len(y)
    out = np.full(n, -1, np.int32)
    k = int(round(fraction * n))
    if k:
        idx = np.sort(np.random.default_rng([seed, 4242]).permutation(n)[:k])
        out[idx] = np.asarray(y[idx], np.int32)
    return out


def init_centres(
    method: str,
    z,
    k: int,
    seed: int,
    n_init: int,
    y_vis=None,
    max_points: int = 0,
    umap_neighbors: int = 20,
    spectral_neighbors: int = 10,
):
    """(centres [K, d] float32, labels [N] int32) of initialisation `method` (INITS).

    kmeans: scikit-learn k-means, n_init restarts (the DEC paper). gmm: full-covariance
    Gaussian mixture, n_init restarts; centres are its means. ward: agglomerative clustering
    with Ward linkage; centres are the cluster means. umap (N2D, McConville et al. 2020): UMAP
    of z to K dimensions (umap_neighbors neighbours, min_dist 0, seeded), then a full-covariance
    Gaussian mixture there (n_init restarts); centres are the means of z over each component's
    rows, so DEC starts from them in z's space. spectral (Ng, Jordan & Weiss 2002; Shi & Malik
    2000): the graph joining every row to its spectral_neighbors nearest rows (Euclidean, exact,
    `neighbours.mine`; each row also to itself, symmetrised: scikit-learn's
    affinity='nearest_neighbors' with n_neighbors = spectral_neighbors + 1), its K leading
    normalised-Laplacian eigenvectors (LOBPCG, seeded), k-means there; centres are the cluster
    means in z. labels: the means of the visible labelled points of each class (y_vis, -1 =
    hidden), class c -> cluster c; needs K == number of classes and at least one visible point
    per class.

    z: [N, d], an array or anything with len() and row reads (a DiskRows). With 0 < max_points
    < N, every method but labels is fitted on a seeded draw of max_points rows, and every row
    is then assigned (nearest centre; the mixture's most probable component), in blocks of rows.
    """
    if method == "labels":
        z = np.asarray(z, np.float32)
        if y_vis is None or not (y_vis >= 0).any():
            raise UserError("config.dec.init='labels' needs visible labels: set dec.label_fraction")
        missing = [c for c in range(k) if not (y_vis == c).any()]
        if missing:
            raise UserError(
                f"config.dec.init='labels': no visible labelled point of class(es) {missing}; "
                f"raise dec.label_fraction or use dec.n_clusters = the number of classes"
            )
        centres = _means(z, y_vis, k)
        return centres, nearest(z, centres)
    if method not in INITS:
        raise UserError(f"config.dec.init: must be one of {INITS}, got {method!r}")
    with preemption.stop_at_once(f"the {method} initialisation"):  # minutes, no checkpoint
        return _fit_centres(
            method, z, k, seed, n_init, max_points, umap_neighbors, spectral_neighbors
        )


def _fit_centres(method, z, k, seed, n_init, max_points, umap_neighbors, spectral_neighbors):
    n = len(z)
    sample = None
    if 0 < max_points < n:
        sample = np.sort(np.random.default_rng([seed, 777]).choice(n, max_points, replace=False))
    fit = np.asarray(z[sample] if sample is not None else z[0:n], np.float32)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        km = KMeans(k, n_init=n_init, random_state=seed).fit(fit)
        centres, labels = km.cluster_centers_.astype(np.float32), km.labels_.astype(np.int32)
    elif method == "gmm":
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(k, n_init=n_init, random_state=seed, reg_covar=1e-4).fit(fit)
        centres = gm.means_.astype(np.float32)
        if sample is None:
            return centres, gm.predict(fit).astype(np.int32)
        return centres, _blocks(z, lambda b: gm.predict(b).astype(np.int32))
    elif method == "umap":
        labels = _umap_gmm(fit, k, seed, n_init, umap_neighbors)
        centres = _means(fit, labels, k)
    elif method == "spectral":
        labels = spectral_labels(fit, k, seed, spectral_neighbors)
        centres = _means(fit, labels, k)
    else:  # ward
        from sklearn.cluster import AgglomerativeClustering

        labels = AgglomerativeClustering(k, linkage="ward").fit_predict(fit).astype(np.int32)
        centres = _means(fit, labels, k)
    if sample is None:
        return centres, labels
    return centres, nearest(z, centres)


def _umap_gmm(x: np.ndarray, k: int, seed: int, n_init: int, n_neighbors: int) -> np.ndarray:
    """[N] int32 labels of a Gaussian mixture fitted on the UMAP of x to k dimensions. Every
    component keeps at least one row (an empty one takes the row farthest from its own)."""
    try:
        import umap
    except ImportError as e:  # a core dependency; only a broken install lacks it
        raise UserError("config.dec.init='umap' needs umap-learn: pip install umap-learn") from e
    from sklearn.mixture import GaussianMixture

    n_neighbors = min(int(n_neighbors), len(x) - 1)
    reducer = umap.UMAP(
        n_components=k, n_neighbors=n_neighbors, min_dist=0.0, random_state=seed, n_jobs=1
    )
    e = reducer.fit_transform(x).astype(np.float64)
    gm = GaussianMixture(k, n_init=n_init, random_state=seed, reg_covar=1e-4).fit(e)
    labels = gm.predict(e).astype(np.int32)
    empty = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
    if len(empty):  # the rows least sure of their own component seed the empty ones
        own = gm.predict_proba(e)[np.arange(len(e)), labels]
        labels[np.argsort(own, kind="stable")[: len(empty)]] = empty
    return labels


def spectral_labels(x: np.ndarray, k: int, seed: int, n_neighbors: int) -> np.ndarray:
    """[N] int32 labels of spectral clustering on the symmetrised n_neighbors-nearest-neighbour
    graph of x [N, d] (self-loops included), as in init_centres."""
    from scipy import sparse
    from sklearn.cluster import spectral_clustering

    n = len(x)
    n_neighbors = min(int(n_neighbors), n - 1)
    _, idx = neighbours.mine(x, n_neighbors, metric="euclidean")
    rows = np.repeat(np.arange(n), n_neighbors + 1)
    cols = np.concatenate([np.arange(n)[:, None], idx], axis=1).ravel()
    graph = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    affinity = 0.5 * (graph + graph.T)
    # LOBPCG: ARPACK's shift-invert factorises the Laplacian, minutes and GBs at 70,000 rows
    labels = spectral_clustering(affinity, n_clusters=k, random_state=seed, eigen_solver="lobpcg")
    return labels.astype(np.int32)


def nearest(z, centres: np.ndarray) -> np.ndarray:
    """[N] int32 index of the nearest centre of every row of z, in blocks of rows."""
    c = centres.astype(np.float64)
    c2 = (c * c).sum(1)

    def block(b):
        b = b.astype(np.float64)
        return ((b * b).sum(1)[:, None] - 2 * b @ c.T + c2[None]).argmin(1).astype(np.int32)

    return _blocks(z, block)


def _blocks(z, fn) -> np.ndarray:
    n = len(z)
    step = ASSIGN_CHUNK
    out = [fn(np.asarray(z[lo : lo + step], np.float32)) for lo in range(0, n, step)]
    return np.concatenate(out) if out else np.zeros(0, np.int32)


def _means(z, labels, k) -> np.ndarray:
    return np.stack([z[labels == c].mean(0) for c in range(k)]).astype(np.float32)


def cluster_classes(method: str, y_init: np.ndarray, y_vis: np.ndarray, k: int) -> np.ndarray:
    """[K] int32: the class each cluster stands for in the semi-supervised term (-1: none).

    labels init: cluster c is class c. Otherwise from the initial assignments of the visible
    labelled points: with as many clusters as visible classes, the Hungarian one-to-one map of
    their contingency table; with more clusters, each cluster's dominant visible label (a
    cluster holding no visible labelled point gets -1 and is never a target).
    """
    if method == "labels":
        return np.arange(k, dtype=np.int32)
    seen = y_vis >= 0
    classes = np.unique(y_vis[seen])
    out = np.full(k, -1, np.int32)
    if not len(classes):
        return out
    table = np.zeros((k, len(classes)), np.int64)
    np.add.at(table, (y_init[seen], np.searchsorted(classes, y_vis[seen])), 1)
    if k == len(classes):
        rows, cols = linear_sum_assignment(-table)
        out[rows] = classes[cols]
    else:
        has = table.sum(1) > 0
        out[has] = classes[table[has].argmax(1)]
    return out


def allowed_clusters(y_vis: np.ndarray, classes_of: np.ndarray) -> np.ndarray:
    """[N, K] float32: row i is 1 on the clusters of row i's visible class, 0 if hidden."""
    a = (classes_of[None, :] == y_vis[:, None]) & (y_vis[:, None] >= 0)
    return a.astype(np.float32)
