"""The stacked denoising autoencoder: shapes, activations, layer-wise isolation, compile-once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from galaxy_jax import sae
from galaxy_jax.models.autoencoder import Autoencoder
from galaxy_jax.optim import make_optimizer

DIMS = (12, 8, 8, 16, 3)


def _state(opt="adam"):
    model = Autoencoder(DIMS)
    tx = make_optimizer(
        {"optimizer": opt, "lr": 1e-2, "momentum": 0.9, "lr_decay_every": 0, "lr_decay": 0.1}
    )
    return model, sae.create_state(model, tx, jax.random.PRNGKey(0))


def test_shapes_and_linear_embedding_and_reconstruction():
    model, state = _state()
    x = jax.random.normal(jax.random.PRNGKey(1), (5, DIMS[0]))
    z, x_hat = model.apply({"params": state.params}, x)
    assert z.shape == (5, 3) and x_hat.shape == (5, 12)
    # Embedding and reconstruction are linear (can be negative); hidden layers are ReLU.
    assert float(z.min()) < 0 and float(x_hat.min()) < 0
    h = model.apply({"params": state.params}, x, 2, method=Autoencoder.encode)
    assert float(h.min()) >= 0
    names = set(state.params)
    assert names == {f"enc_{i}" for i in range(4)} | {f"dec_{i}" for i in range(4)}


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_layer_step_trains_only_its_pair(opt):
    model, state = _state(opt)
    before = jax.tree.map(np.array, state.params)
    step = sae.make_layer_step(model, 1, 0.2)
    x = jax.random.normal(jax.random.PRNGKey(2), (32, DIMS[0]))
    losses = []
    for _ in range(30):
        state, loss = step(state, x)
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    for name, p in state.params.items():
        changed = not np.array_equal(p["kernel"], before[name]["kernel"])
        assert changed == (name in ("enc_1", "dec_1")), name


def test_steps_trace_once_per_shape():
    model, state = _state()
    counted_layer = chex.assert_max_traces(sae.layer_step, n=1)
    counted_ft = chex.assert_max_traces(sae.finetune_step, n=1)
    import functools

    layer = jax.jit(
        functools.partial(counted_layer, model=model, layer=0, rate=0.2), donate_argnums=0
    )
    ft = jax.jit(functools.partial(counted_ft, model=model), donate_argnums=0)
    x = jnp.ones((16, DIMS[0]))
    for _ in range(3):
        state, _ = layer(state, x)
    for _ in range(3):
        state, _ = ft(state, x)


def test_dropout_is_a_function_of_the_step():
    """Same state and batch give the same denoising loss: no hidden global RNG."""
    model, state = _state()
    x = jnp.ones((16, DIMS[0]))
    loss = lambda s: sae.layer_loss(  # noqa: E731
        s.params, x, jax.random.fold_in(s.key, s.step), model=model, layer=0, rate=0.5
    )
    assert float(loss(state)) == float(loss(state))
    clean = sae.layer_loss(state.params, x, state.key, model=model, layer=0, rate=0.0)
    assert float(clean) != float(loss(state))
