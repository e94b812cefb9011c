"""Many clusters, then merged: size-weighted Ward agglomeration of cluster centres (dec.merge_to).

A run with K clusters (e.g. 30) is merged into G < K groups without labels. Ward's criterion
merges the two groups a, b whose union raises the within-group sum of squares the least:

    cost(a, b) = n_a n_b / (n_a + n_b) |mu_a - mu_b|^2,

and depends on the groups only through their sizes n and means mu. So, with each centre weighted
by its cluster's size, agglomerating the centres is the Ward merge of the clusters themselves
(exactly when the centres are the clusters' means, as k-means' are; DEC's learned centres are
close to them). scipy's `linkage` takes no weights, hence this short O(K^3) version; with equal
sizes it is scipy's Ward on the centres (tests/test_merge.py).

Shapes: centres [K, d], sizes [K] (rows per cluster; an empty cluster has size 0 and merges at
no cost), assignments [N] in 0..K-1.
"""

from __future__ import annotations

import numpy as np


def ward_linkage(centres, sizes) -> np.ndarray:
    """[K-1, 4] linkage matrix in scipy's format: row i merges nodes Z[i,0] < Z[i,1] (leaves are
    0..K-1, the node made by row i is K+i) at height Z[i,2] = sqrt(2 cost), the distance scipy's
    Ward uses, into a node of Z[i,3] clusters (leaves; the node's rows are the sum of their
    sizes). Ties go to the first pair in (a, b) order. A valid scipy linkage (dendrogram,
    fcluster)."""
    mu = [np.asarray(c, np.float64) for c in np.asarray(centres, np.float64)]
    n = [float(s) for s in np.asarray(sizes, np.float64)]
    k = len(mu)
    if len(n) != k:
        raise ValueError(f"{k} centres but {len(n)} sizes")
    leaves = [1] * k
    alive = list(range(k))
    rows = []
    for _ in range(k - 1):
        best = None
        for i, a in enumerate(alive):
            for b in alive[i + 1 :]:
                c = _cost(n[a], n[b], mu[a], mu[b])
                if best is None or c < best[0]:
                    best = (c, a, b)
        cost, a, b = best
        total = n[a] + n[b]
        mu.append((n[a] * mu[a] + n[b] * mu[b]) / total if total else (mu[a] + mu[b]) / 2)
        n.append(total)
        leaves.append(leaves[a] + leaves[b])
        alive = [j for j in alive if j not in (a, b)] + [len(mu) - 1]
        rows.append([a, b, np.sqrt(2.0 * cost), leaves[-1]])
    return np.asarray(rows, np.float64).reshape(-1, 4)


def _cost(na, nb, ma, mb) -> float:
    total = na + nb
    return 0.0 if not total else na * nb / total * float(np.sum(np.square(ma - mb)))


def cut(linkage: np.ndarray, n_groups: int) -> np.ndarray:
    """[K] int32 group of every cluster after the first K - n_groups merges of `linkage`; groups
    are numbered in the order of their smallest cluster id."""
    k = len(linkage) + 1
    if not 1 <= n_groups <= k:
        raise ValueError(f"cannot cut {k} clusters into {n_groups} groups")
    members = {j: [j] for j in range(k)}
    for i, (a, b, _, _) in enumerate(linkage[: k - n_groups]):
        members[k + i] = members.pop(int(a)) + members.pop(int(b))
    group = np.empty(k, np.int32)
    for g, leaves in enumerate(sorted(members.values(), key=min)):
        group[leaves] = g
    return group


def merge_clusters(centres, assignments, n_groups: int) -> tuple[np.ndarray, dict]:
    """Merges the clusters of `assignments` [N] (centres [K, d]) into n_groups groups.

    Returns (merged assignments [N] int32, the record for results.json: {'to': n_groups,
    'group_of_cluster': [K], 'groups': [[cluster ids] per group], 'sizes': [K] rows per cluster,
    'linkage': the [K-1, 4] ward_linkage as lists}). Reads no labels."""
    centres = np.asarray(centres)
    k = len(centres)
    assignments = np.asarray(assignments)
    sizes = np.bincount(assignments, minlength=k)[:k]
    z = ward_linkage(centres, sizes)
    group = cut(z, n_groups)
    record = {
        "to": int(n_groups),
        "group_of_cluster": group.tolist(),
        "groups": [np.flatnonzero(group == g).tolist() for g in range(n_groups)],
        "sizes": sizes.tolist(),
        "linkage": z.tolist(),
    }
    return group[assignments].astype(np.int32), record
