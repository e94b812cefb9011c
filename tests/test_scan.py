"""SCAN-style losses and steps (galaxy_jax/scan.py) on fixed features. Not yet a mode."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from galaxy_jax import metrics, neighbours, scan
from galaxy_jax.data.vectors import make_blobs


def test_consistency_is_lowest_when_neighbours_agree_and_entropy_rewards_balance():
    agree = jnp.asarray([[9.0, 0.0], [0.0, 9.0]])
    disagree = agree[::-1]
    la, _ = scan.scan_loss(agree, agree, 0.0)
    ld, _ = scan.scan_loss(agree, disagree, 0.0)
    assert float(la) < 0.01 < float(ld)
    collapsed = jnp.asarray([[9.0, 0.0], [9.0, 0.0]])
    _, (_, h_bal) = scan.scan_loss(agree, agree, 1.0)
    _, (_, h_col) = scan.scan_loss(collapsed, collapsed, 1.0)
    assert float(h_bal) > float(h_col)  # the entropy term is what keeps clusters apart


def test_selflabel_uses_only_confident_rows():
    weak = jnp.asarray([[9.0, 0.0], [0.1, 0.0]])  # row 1 is not confident
    strong = jnp.asarray([[0.0, 9.0], [0.0, 9.0]])
    loss, frac = scan.selflabel_loss(weak, strong, 0.99)
    assert float(frac) == 0.5 and float(loss) > 5.0  # row 0's pseudo-label 0, strong says 1
    loss0, frac0 = scan.selflabel_loss(weak, strong, 0.99999999)
    assert float(frac0) == 0.0 and float(loss0) == 0.0


def test_neighbour_consistency_separates_blobs_and_compiles_once():
    v = make_blobs(1000, 16, 4, 0)
    x = np.asarray(v.x, np.float32)
    _, nb = neighbours.mine(x, 8, "cosine")
    head = scan.ClusterHead(4)
    state = train_state.TrainState.create(
        apply_fn=head.apply,
        params=head.init(jax.random.key(0), x[:2])["params"],
        tx=optax.adam(1e-3),
    )
    step = scan.make_scan_step(5.0)
    rng = np.random.default_rng(0)
    sizes = []
    for _ in range(400):
        idx = rng.integers(0, len(x), 128)
        state, m = step(state, x[idx], x[nb[idx, rng.integers(0, 8, 128)]])
        sizes.append(step._cache_size())
    # Flax's TrainState.create starts at a Python int step: one more trace for the first call.
    assert sizes[1] == sizes[-1] <= 2
    pred = np.asarray(scan.predict(head.apply, state.params, x)).argmax(1)
    assert metrics.cluster_acc(v.y, pred) >= 0.95
