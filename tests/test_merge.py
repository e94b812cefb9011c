"""dec.merge_to: the size-weighted Ward merge (galaxy_jax/merge.py) against scipy and by hand,
and the modes' merged assignments on blobs with more clusters than blobs."""

import json
import os

import numpy as np
import pytest
from scipy.cluster.hierarchy import cut_tree, is_valid_linkage, linkage

from configs import mnist_dec, mnist_kmeans
from galaxy_jax import merge
from galaxy_jax.errors import UserError
from galaxy_jax.modes import dec as dec_mode


@pytest.mark.parametrize("seed", range(4))
def test_equal_sizes_is_scipy_ward_on_the_centres(seed):
    c = np.random.default_rng(seed).normal(size=(12, 3))
    np.testing.assert_allclose(merge.ward_linkage(c, np.ones(12)), linkage(c, "ward"), rtol=1e-9)
    # Equal sizes m: the same merges (and leaf counts), heights sqrt(m) times larger.
    z = merge.ward_linkage(c, np.full(12, 5))
    np.testing.assert_array_equal(z[:, [0, 1, 3]], linkage(c, "ward")[:, [0, 1, 3]])
    np.testing.assert_allclose(z[:, 2], np.sqrt(5) * linkage(c, "ward")[:, 2], rtol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_unequal_sizes_are_ward_on_the_clusters_points(seed):
    """Cluster j as sizes[j] copies of its centre: scipy's Ward on those points first merges the
    copies (height 0), then makes exactly the weighted merges of the centres."""
    rng = np.random.default_rng(seed)
    c, sizes = rng.normal(size=(7, 2)) * 3, rng.integers(1, 9, 7)
    points = np.repeat(c, sizes, axis=0)
    full = linkage(points, "ward")[len(points) - len(c) :]
    z = merge.ward_linkage(c, sizes)
    assert is_valid_linkage(z)
    np.testing.assert_allclose(z[:, 2], full[:, 2], rtol=1e-9)
    for g in range(1, len(c) + 1):  # the same groups at every cut
        ours = merge.cut(z, g)[np.repeat(np.arange(len(c)), sizes)]
        theirs = cut_tree(linkage(points, "ward"), n_clusters=g)[:, 0]
        np.testing.assert_array_equal(ours[:, None] == ours, theirs[:, None] == theirs)


def test_sizes_change_the_merge_by_hand():
    """Centres 0, 2, 5 on a line. Unweighted, 0 and 2 are closest; with sizes 100, 100, 1 the
    single row at 5 joins 2 first: cost 100*1/101*3^2 = 8.9 against 100*100/200*2^2 = 200."""
    c, sizes = np.array([[0.0], [2.0], [5.0]]), np.array([100, 100, 1])
    assert linkage(c, "ward")[0, :2].tolist() == [0, 1]
    z = merge.ward_linkage(c, sizes)
    assert z[0].tolist() == pytest.approx([1, 2, np.sqrt(2 * 900 / 101), 2])
    mu = (200 + 5) / 101
    assert z[1].tolist() == pytest.approx([0, 3, np.sqrt(2 * 100 * 101 / 201 * mu**2), 3])
    merged, record = merge.merge_clusters(c, np.repeat([0, 1, 2], sizes), 2)
    assert record["groups"] == [[0], [1, 2]] and record["group_of_cluster"] == [0, 1, 1]
    assert np.bincount(merged).tolist() == [100, 101] and record["sizes"] == [100, 100, 1]


def test_empty_cluster_merges_at_no_cost():
    c = np.array([[0.0], [10.0], [3.0]])
    z = merge.ward_linkage(c, [5, 5, 0])
    assert z[0].tolist() == [0, 2, 0.0, 2]  # cluster 2 (empty) joins the first one at no cost
    assert merge.cut(z, 3).tolist() == [0, 1, 2]


def _read(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def _merged_run_checks(workdir, section, k):
    r = _read(workdir)
    m = r["metrics"]
    assert m[f"{section}_merged"]["acc"] >= 0.95, m[f"{section}_merged"]
    assert m[section]["acc"] < 0.9  # the k clusters themselves split the 4 blobs
    rec = r["merge"]
    assert rec["to"] == 4 and sorted(sum(rec["groups"], [])) == list(range(k))
    assert len(rec["linkage"]) == k - 1 and sum(rec["sizes"]) == 600
    assigned = np.load(os.path.join(workdir, "assignments.npy"))
    merged = np.load(os.path.join(workdir, "assignments_merged.npy"))
    np.testing.assert_array_equal(merged, np.asarray(rec["group_of_cluster"])[assigned])


@pytest.mark.parametrize("k", [8, 30])
def test_kmeans_mode_merges_many_clusters_back_to_the_blobs(tmp_path, k):
    config = mnist_kmeans.get_config("smoke")  # 600 rows, 4 blobs
    config.dec.n_clusters, config.dec.merge_to = k, 4
    dec_mode.run_kmeans(config, str(tmp_path))
    _merged_run_checks(str(tmp_path), "kmeans_input", k)


def test_dec_mode_merges_8_clusters_back_to_4_blobs(tmp_path):
    config = mnist_dec.get_config("smoke")
    config.dec.n_clusters, config.dec.merge_to = 8, 4
    dec_mode.run_dec(config, str(tmp_path))
    _merged_run_checks(str(tmp_path), "dec", 8)
    centres = np.load(os.path.join(tmp_path, "centres.npy"))
    assert centres.shape[0] == 8  # merged in the embedding, where DEC's centres live


@pytest.mark.parametrize("value", [1, 8, -1])
def test_merge_to_out_of_range_is_rejected(tmp_path, value):
    config = mnist_kmeans.get_config("smoke")
    config.dec.n_clusters, config.dec.merge_to = 8, value
    with pytest.raises(UserError, match="config.dec.merge_to"):
        dec_mode.run_kmeans(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")
