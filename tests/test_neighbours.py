"""Exact chunked k-nearest-neighbour search against a float64 brute force."""

import numpy as np
import pytest

from galaxy_jax import neighbours
from galaxy_jax.errors import UserError


def _brute(q, x, k, metric):
    q, x = q.astype(np.float64), x.astype(np.float64)
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        d = 1.0 - qn @ xn.T
    else:
        d = np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


@pytest.mark.parametrize("metric", neighbours.METRICS)
@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_search_equals_brute_force(metric, chunk):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(203, 16)).astype(np.float32)
    q = rng.normal(size=(11, 16)).astype(np.float32)
    d, i = neighbours.search(q, x, 5, metric, chunk=chunk)
    bd, bi = _brute(q, x, 5, metric)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, atol=2e-5)


def test_ties_go_to_the_lower_index():
    x = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # each direction 3 times
    _, i = neighbours.search(x[[4]], x, 3, "euclidean", chunk=5)
    np.testing.assert_array_equal(i, [[3, 4, 5]])


def test_database_streamed_from_disk(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    disk = np.load(tmp_path / "x.npy", mmap_mode="r")  # read chunk by chunk
    d, i = neighbours.search(x[:4], disk, 3, "euclidean", chunk=64)
    bd, bi = _brute(x[:4], x, 3, "euclidean")
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, atol=2e-5)


def test_mine_excludes_each_row_itself():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(57, 8)).astype(np.float32)
    d, i = neighbours.mine(x, 4, "cosine", chunk=16, query_chunk=10)
    _, bi = _brute(x, x, 5, "cosine")
    np.testing.assert_array_equal(i, bi[:, 1:])  # the nearest of each row is itself
    assert (i != np.arange(57)[:, None]).all()
    assert d.shape == (57, 4) and (np.diff(d, axis=1) >= 0).all()


def test_duplicates_still_exclude_only_self():
    x = np.zeros((5, 3), np.float32)  # all rows identical: distances all 0, self may sort anywhere
    _, i = neighbours.mine(x, 4, "euclidean")
    for r in range(5):
        assert sorted(i[r]) == [j for j in range(5) if j != r]


def test_compiles_once_whatever_the_database_size():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(3, 8)).astype(np.float32)
    neighbours._merge_chunk.clear_cache()
    for n in (50, 64, 130, 1000):
        neighbours.search(q, rng.normal(size=(n, 8)).astype(np.float32), 2, chunk=32)
    assert neighbours._merge_chunk._cache_size() == 1


def test_bad_arguments_are_user_errors():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(UserError, match="metric"):
        neighbours.search(x, x, 1, "manhattan")
    with pytest.raises(UserError, match="k must be"):
        neighbours.search(x, x, 5)
    with pytest.raises(UserError, match="same number of columns"):
        neighbours.search(np.ones((2, 2)), x, 1)


def test_euclidean_is_exact_far_from_the_origin_and_small_chunks_are_fine():
    rng = np.random.default_rng(4)
    x = (1000.0 + 0.01 * rng.normal(size=(500, 8))).astype(np.float32)  # large norms, tiny gaps
    d, i = neighbours.search(x[:5], x, 5, "euclidean", chunk=3)  # chunk < k: widened
    bd, bi = _brute(x[:5].astype(np.float64), x.astype(np.float64), 5, "euclidean")
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_allclose(d, bd, atol=1e-6)
