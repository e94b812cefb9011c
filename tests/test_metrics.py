import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from galaxy_jax import metrics


def test_known_values():
    y = np.array([0, 0, 0, 1, 1, 1])
    assert metrics.cluster_acc(y, [1, 1, 1, 0, 0, 0]) == 1.0
    assert metrics.cluster_acc(y, [0, 0, 1, 1, 1, 1]) == pytest.approx(5 / 6)
    # 3 clusters for 2 classes: Hungarian maps only two of them, dominant label maps all.
    assert metrics.cluster_acc(y, [0, 0, 2, 1, 1, 1]) == pytest.approx(5 / 6)
    assert metrics.dominant_label_acc(y, [0, 0, 2, 1, 1, 1]) == 1.0
    m = metrics.all_metrics(y, [0, 0, 0, 1, 1, 1])
    assert m["nmi"] == pytest.approx(1.0) and m["ari"] == pytest.approx(1.0)
    assert m["contingency"] == [[3, 0], [0, 3]]


def test_unknown_labels_are_ignored():
    assert metrics.cluster_acc([0, 1, -1, -1], [0, 1, 0, 1]) == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metrics.cluster_acc([0, 1], [0, 1, 1])


labelings = st.integers(1, 200).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 4), min_size=n, max_size=n),
        st.lists(st.integers(0, 6), min_size=n, max_size=n),
        st.permutations(range(7)),
    )
)


@settings(max_examples=100, deadline=None)
@given(labelings)
def test_permutation_invariance_and_ordering(args):
    y_true, y_pred, perm = map(np.asarray, args)
    acc = metrics.cluster_acc(y_true, y_pred)
    assert metrics.cluster_acc(y_true, perm[y_pred]) == pytest.approx(acc)
    assert metrics.dominant_label_acc(y_true, perm[y_pred]) == pytest.approx(
        metrics.dominant_label_acc(y_true, y_pred)
    )
    assert acc <= metrics.dominant_label_acc(y_true, y_pred) + 1e-12
    assert 0.0 <= acc <= 1.0
