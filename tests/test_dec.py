"""DEC maths: autodiff against the paper's closed-form gradients, and properties of Q and P."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from galaxy_jax import dec


def closed_form_grads(z, mu, p, a):
    """DEC paper eq. (4)-(5) for L = sum_i KL(p_i || q_i):
    dL/dz_i  =  (a+1)/a sum_j (1+|z_i-mu_j|^2/a)^-1 (p_ij - q_ij)(z_i - mu_j)
    dL/dmu_j = -(a+1)/a sum_i (1+|z_i-mu_j|^2/a)^-1 (p_ij - q_ij)(z_i - mu_j)
    """
    diff = z[:, None, :] - mu[None, :, :]  # [N, K, D]
    kern = 1.0 / (1.0 + np.sum(diff**2, -1) / a)  # [N, K]
    d2 = np.sum(diff**2, -1)
    q = (1.0 + d2 / a) ** (-(a + 1) / 2)
    q /= q.sum(1, keepdims=True)
    w = ((a + 1) / a) * kern * (p - q)  # [N, K]
    dz = np.einsum("nk,nkd->nd", w, diff)
    dmu = -np.einsum("nk,nkd->kd", w, diff)
    return dz, dmu


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 10.0])
@pytest.mark.parametrize("shape", [(7, 3, 2), (32, 5, 10), (50, 10, 4)])
def test_autodiff_matches_closed_form(alpha, shape):
    n, k, d = shape
    rng = np.random.default_rng(hash((alpha, shape)) % 2**32)
    with jax.enable_x64(True):
        z = jnp.asarray(rng.normal(size=(n, d)))
        mu = jnp.asarray(rng.normal(size=(k, d)) * 2)
        # P held constant: computed once from the current Q, outside the differentiated function.
        p = dec.target_distribution(dec.soft_assignment(z, mu, alpha))

        def loss_sum(z, mu):  # the paper's L: sum over points
            return dec.kl_divergence(p, dec.soft_assignment(z, mu, alpha)) * n

        gz, gmu = jax.grad(loss_sum, argnums=(0, 1))(z, mu)
        assert gz.dtype == jnp.float64
        ez, emu = closed_form_grads(np.asarray(z), np.asarray(mu), np.asarray(p), alpha)
        np.testing.assert_allclose(gz, ez, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gmu, emu, rtol=1e-10, atol=1e-12)
        # The training loss is the batch mean: its gradient is the closed form / N.
        gz_mean = jax.grad(lambda z: dec.kl_divergence(p, dec.soft_assignment(z, mu, alpha)))(z)
        np.testing.assert_allclose(gz_mean, ez / n, rtol=1e-10, atol=1e-12)


def test_soft_assignment_matches_student_t_formula():
    rng = np.random.default_rng(0)
    z, mu, a = rng.normal(size=(9, 3)), rng.normal(size=(4, 3)), 1.7
    d2 = ((z[:, None] - mu[None]) ** 2).sum(-1)
    q = (1 + d2 / a) ** (-(a + 1) / 2)
    q /= q.sum(1, keepdims=True)
    np.testing.assert_allclose(
        dec.soft_assignment(jnp.asarray(z), jnp.asarray(mu), a), q, rtol=2e-5
    )


def test_target_distribution_with_global_frequencies_matches_full():
    """P of a chunk, given f over the whole set, equals the rows of P computed on the whole set."""
    q = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (40, 3)) * 3)
    full = dec.target_distribution(q)
    chunk = dec.target_distribution(q[10:25], f=q.sum(0))
    np.testing.assert_allclose(chunk, full[10:25], rtol=1e-6)


# Few distinct shapes (each new shape compiles), many values.
arrays = st.tuples(
    st.sampled_from([2, 7, 40]),
    st.sampled_from([2, 3, 8]),
    st.sampled_from([1, 3, 6]),
    st.integers(0, 2**31),
    st.sampled_from([0.5, 1.0, 2.0, 10.0]),
)


@settings(max_examples=40, deadline=None)
@given(arrays)
def test_q_and_p_properties(args):
    n, k, d, seed, alpha = args
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    mu = jnp.asarray(rng.normal(size=(k, d)) * 3, jnp.float32)
    q = dec.soft_assignment(z, mu, alpha)
    p = dec.target_distribution(q)
    np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert float(dec.kl_divergence(p, q)) >= -1e-6
    # P is sharper than Q. With unequal cluster frequencies the 1/f_j factor deliberately moves
    # mass towards small clusters, so sharpening is a per-row statement at equal frequencies:
    # every row's largest entry rises and its entropy falls.
    p_eq = dec.target_distribution(q, f=jnp.ones(k))
    ent = lambda r: -jnp.sum(jax.scipy.special.xlogy(r, r), axis=1)  # noqa: E731
    assert np.all(np.asarray(p_eq.max(1)) >= np.asarray(q.max(1)) - 1e-6)
    assert np.all(np.asarray(ent(p_eq)) <= np.asarray(ent(q)) + 1e-5)
    # ...and overall, P's mean confidence is at least Q's when clusters are balanced.
    assert float(p_eq.max(1).mean()) >= float(q.max(1).mean()) - 1e-6
    assert float(dec.kl_divergence(q, q)) == pytest.approx(0.0, abs=1e-6)


def test_train_step_traces_once_and_lowers_loss():
    import chex
    import optax

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)

    @chex.assert_max_traces(n=1)
    def encode(v, xb):
        return xb @ v["params"]["w"]

    mu = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    state = dec.DECState.create(
        apply_fn=None, tx=optax.sgd(0.05, momentum=0.9), params={"ae": {"w": w}, "centres": mu}
    )
    p = dec.target_distribution(dec.soft_assignment(x @ w, mu))
    step = dec.make_train_step(encode, 1.0)
    losses = []
    for _ in range(20):
        state, loss = step(state, x, p)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
