"""SCAN-style losses and steps (galaxy_jax/scan.py) on fixed features (the mode:
tests/test_scan_mode.py)."""

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
    pred = np.asarray(scan.predict(head.apply, state.params, x))[0].argmax(1)
    assert metrics.cluster_acc(v.y, pred) >= 0.95


def test_heads_are_independent_and_select_head_keeps_one():
    x = np.asarray(make_blobs(64, 8, 2, 0).x)
    for hidden in (0, 16):
        head = scan.ClusterHead(3, hidden=hidden, n_heads=4)
        params = head.init(jax.random.key(1), x[:2])["params"]
        logits = head.apply({"params": params}, x)
        assert logits.shape == (4, 64, 3)
        one = scan.ClusterHead(3, hidden=hidden)
        np.testing.assert_allclose(
            one.apply({"params": scan.select_head(params, 2, 3)}, x)[0], logits[2], rtol=1e-6
        )


def test_head_losses_match_the_training_loss_on_all_neighbours():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 30, 3)).astype(np.float32)
    nb = rng.integers(0, 30, (30, 4))
    q = np.asarray(jax.nn.softmax(logits))
    got = scan.head_losses(q, nb, 2.0, chunk=7)
    for h in range(2):
        a = np.repeat(logits[h], 4, axis=0)
        want, _ = scan.scan_loss(a, logits[h][nb.ravel()], 2.0)
        assert abs(got[h] - float(want)) < 1e-4


def test_perturbation_depends_only_on_the_key():
    x = jnp.ones((4, 100))
    a = scan.perturb(x, jax.random.key(3), 0.25, 0.1)
    b = scan.perturb(x, jax.random.key(3), 0.25, 0.1)
    c = scan.perturb(x, jax.random.key(4), 0.25, 0.1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    dropped = float(jnp.mean(scan.perturb(x, jax.random.key(3), 0.25, 0.0) == 0.0))
    assert 0.15 < dropped < 0.35


def test_selflabel_step_compiles_once_and_its_perturbation_follows_the_step():
    x = jnp.asarray(make_blobs(64, 16, 2, 0).x)
    head, tx = scan.ClusterHead(2), optax.adam(1e-2)  # one tx: it is part of the state's treedef

    def fresh():
        return scan.ScanState.create(
            apply_fn=head.apply,
            params=head.init(jax.random.key(0), x[:2])["params"],
            tx=tx,
            key=jax.random.PRNGKey(5),
        )

    step = scan.make_selflabel_step(0.0, 0.25, 0.1)  # threshold 0: every row a pseudo-label
    runs = []
    for _ in range(2):
        state, sizes = fresh(), []
        for _ in range(5):
            state, m = step(state, x)
            sizes.append(step._cache_size())
        runs.append(jax.device_get(state.params))
    assert sizes[1] == sizes[-1] <= 2 and float(m["confident"]) == 1.0
    jax.tree.map(np.testing.assert_array_equal, runs[0], runs[1])  # same (key, step): same run
