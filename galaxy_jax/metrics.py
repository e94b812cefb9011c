"""Clustering metrics against true labels.

`cluster_acc` is the unsupervised accuracy of the DEC paper: the best one-to-one map of clusters
to classes (Hungarian algorithm). `dominant_label_acc` is the seed paper's per-cluster majority
label, which stays valid when there are more clusters than classes. Labels < 0 (unknown) are
ignored by every metric here.
"""

from __future__ import annotations

import numpy as np
from absl import logging
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm


def _known(y_true, y_pred):
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    keep = y_true >= 0
    return y_true[keep], y_pred[keep]


def contingency(y_true, y_pred) -> np.ndarray:
    """[n_clusters, n_classes] counts: row = predicted cluster, column = true class."""
    y_true, y_pred = _known(y_true, y_pred)
    table = np.zeros((y_pred.max(initial=0) + 1, y_true.max(initial=0) + 1), np.int64)
    np.add.at(table, (y_pred, y_true), 1)
    return table


def cluster_acc(y_true, y_pred) -> float:
    """Accuracy under the best one-to-one cluster -> class map (Hungarian)."""
    table = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / max(table.sum(), 1))


def dominant_label_acc(y_true, y_pred) -> float:
    """Accuracy when each cluster predicts its own majority class (many-to-one)."""
    table = contingency(y_true, y_pred)
    return float(table.max(axis=1).sum() / max(table.sum(), 1))


def dominant_label_map(y_true, y_pred) -> np.ndarray:
    """[n_clusters] majority class of each cluster (-1 for an empty cluster)."""
    table = contingency(y_true, y_pred)
    return np.where(table.sum(1) > 0, table.argmax(1), -1)


def all_metrics(y_true, y_pred) -> dict:
    """acc (Hungarian), acc_dominant, nmi, ari, balanced_acc_dominant and the contingency table."""
    yt, yp = _known(y_true, y_pred)
    mapped = dominant_label_map(yt, yp)[yp]
    return {
        "acc": cluster_acc(yt, yp),
        "acc_dominant": dominant_label_acc(yt, yp),
        "balanced_acc_dominant": float(skm.balanced_accuracy_score(yt, mapped)),
        "nmi": float(skm.normalized_mutual_info_score(yt, yp)),
        "ari": float(skm.adjusted_rand_score(yt, yp)),
        "n": int(len(yt)),
        "contingency": contingency(yt, yp).tolist(),
    }


def log_metrics(name: str, m: dict) -> None:
    """Logs and prints acc, acc_dominant, NMI and ARI of `m` (all_metrics); nothing when empty."""
    if m:
        logging.info(
            "%s: acc %.4f  acc_dominant %.4f  nmi %.4f  ari %.4f",
            name,
            m["acc"],
            m["acc_dominant"],
            m["nmi"],
            m["ari"],
        )
        print(
            f"{name}: acc={m['acc']:.4f} acc_dominant={m['acc_dominant']:.4f} "
            f"nmi={m['nmi']:.4f} ari={m['ari']:.4f}"
        )
