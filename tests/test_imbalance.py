"""DEC on imbalanced classes (dec.target_power): the paper's target equalises a 75/25 split, the
target without frequency normalisation keeps it.

The real `dec.train` runs on a 2-d mixture of two overlapping Gaussians (75/25) through a
one-layer linear autoencoder initialised to the identity (a trainable encoder, as in DEC, with
nothing pretrained that could hide the target's effect), from the same k-means init for both.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dec_base, mnist_dec
from galaxy_jax import dec, dec_init
from galaxy_jax.errors import UserError
from galaxy_jax.models.autoencoder import Autoencoder
from galaxy_jax.modes import dec as dec_mode

N, D, SEP, MINORITY = 1000, 2, 3.0, 0.25


def _mixture(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(N) < MINORITY).astype(np.int32)
    centres = np.zeros((2, D))
    centres[1, 0] = SEP  # 3 standard deviations apart: the tails overlap
    return (centres[y] + rng.normal(size=(N, D))).astype(np.float32), y


def _config(power):
    c = dec_base.base_config(mnist_dec.get_config().data)
    d = c.dec
    d.n_clusters, d.batch_size, d.lr, d.momentum = 2, 100, 0.05, 0.9
    d.update_interval, d.maxiter, d.tol = 20, 400, 0.0
    d.target_power = power
    c.checkpoint_every = 1000
    return c


def _dec(x, power, tmp_path):
    """Final minority share and accuracy (one-to-one) of DEC from the seeded k-means init."""
    model = Autoencoder(dims=(D, D))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, D)))["params"]
    params["enc_0"] = {"kernel": jnp.eye(D), "bias": jnp.zeros(D)}  # the identity encoder
    centres, y_init = dec_init.init_centres("kmeans", x, 2, seed=0, n_init=4)
    config = _config(power)
    directory = str(tmp_path / f"power{power}")
    state, _ = dec.train(config, model, params, centres, y_init, x, None, directory, {})
    q = dec.predict_q(model, state.params, x, config.dec.alpha)
    pred = q.argmax(1)
    return np.bincount(pred, minlength=2).min() / N, pred, y_init


@pytest.mark.parametrize("seed", [0, 1])
def test_plain_dec_equalises_a_75_25_split_and_target_power_0_keeps_it(seed, tmp_path):
    x, y = _mixture(seed)
    truth = y.mean()  # the sample's minority share, ~0.25
    plain, pred_plain, y_init = _dec(x, 1.0, tmp_path)
    kept, pred_kept, _ = _dec(x, 0.0, tmp_path)
    init_share = np.bincount(y_init).min() / N
    # The paper's target moves the split further towards 50/50 than even the k-means init.
    assert plain > 0.35 and plain > init_share + 0.02, (plain, init_share, truth)
    # No frequency normalisation: the true split is recovered, and the clusters are better.
    assert abs(kept - truth) < 0.03, (kept, truth)

    def acc(p):
        return max(np.mean(p == y), np.mean(p != y))

    assert acc(pred_kept) > acc(pred_plain) + 0.05 and acc(pred_kept) > 0.92


def test_target_power_interpolates_and_1_is_the_paper():
    q = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(0), (50, 3)) * 2)
    f = q.sum(0)
    paper = (q**2 / f) / (q**2 / f).sum(1, keepdims=True)
    np.testing.assert_array_equal(dec.target_distribution(q), dec.target_distribution(q, f, 1.0))
    np.testing.assert_allclose(dec.target_distribution(q, power=1.0), paper, rtol=1e-6)
    sharpened = q**2 / (q**2).sum(1, keepdims=True)
    np.testing.assert_allclose(dec.target_distribution(q, power=0.0), sharpened, rtol=1e-6)
    # Lower powers give the big clusters more of the target's mass.
    big = int(jnp.argmax(f))
    mass = [float(dec.target_distribution(q, power=b)[:, big].sum()) for b in (0.0, 0.5, 1.0)]
    assert mass[0] > mass[1] > mass[2]


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_target_power_out_of_range_is_rejected(tmp_path, value):
    config = mnist_dec.get_config("smoke")
    config.dec.target_power = value
    with pytest.raises(UserError, match="config.dec.target_power"):
        dec_mode.run_dec(config, str(tmp_path / "w"))
