"""Stacked denoising autoencoder training steps: greedy layer-wise pretraining, then fine-tuning.

Both losses are the mean squared reconstruction error (mean over features and batch), as in the
public DEC-keras reimplementation. Steps are pure, jitted once, with the state donated; dropout
randomness is `fold_in(key, step)`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from galaxy_jax.models.autoencoder import Autoencoder


class SAEState(train_state.TrainState):
    key: jax.Array  # root dropout key of this phase


def make_optimizer(name: str, lr: float, momentum: float, decay_every: int, decay: float):
    """SGD(momentum) or Adam; lr multiplied by `decay` every `decay_every` steps (0 = constant)."""
    schedule = (
        optax.exponential_decay(lr, decay_every, decay, staircase=True) if decay_every else lr
    )
    if name == "sgd":
        return optax.sgd(schedule, momentum=momentum or None)
    if name == "adam":
        return optax.adam(schedule)
    raise ValueError(f"unknown optimizer {name!r} (use 'sgd' or 'adam')")


def create_state(model: Autoencoder, tx, key: jax.Array, params=None) -> SAEState:
    init_key, dropout_key = jax.random.split(key)
    if params is None:
        params = model.init(init_key, jnp.zeros((1, model.dims[0]), jnp.float32))["params"]
    return SAEState.create(apply_fn=model.apply, params=params, tx=tx, key=dropout_key)


def layer_loss(params, x, key, *, model: Autoencoder, layer: int, rate: float):
    """Denoising loss of layer pair `layer` on the clean output of the layers below it."""
    h = jax.lax.stop_gradient(model.apply({"params": params}, x, layer, method=Autoencoder.encode))
    y = model.apply(
        {"params": params},
        h,
        layer,
        rate,
        True,
        method=Autoencoder.layer_pair,
        rngs={"dropout": key},
    )
    return jnp.mean(jnp.square(y - h))


def finetune_loss(params, x, *, model: Autoencoder):
    _, x_hat = model.apply({"params": params}, x)
    return jnp.mean(jnp.square(x_hat - x))


def layer_step(state: SAEState, x, *, model: Autoencoder, layer: int, rate: float):
    """Only pair `layer` gets a gradient: lower layers are behind stop_gradient, upper unused."""
    key = jax.random.fold_in(state.key, state.step)
    loss, grads = jax.value_and_grad(layer_loss)(
        state.params, x, key, model=model, layer=layer, rate=rate
    )
    return state.apply_gradients(grads=grads), loss


def finetune_step(state: SAEState, x, *, model: Autoencoder):
    loss, grads = jax.value_and_grad(finetune_loss)(state.params, x, model=model)
    return state.apply_gradients(grads=grads), loss


def make_layer_step(model, layer, rate):
    return jax.jit(
        functools.partial(layer_step, model=model, layer=layer, rate=rate), donate_argnums=0
    )


def make_finetune_step(model):
    return jax.jit(functools.partial(finetune_step, model=model), donate_argnums=0)
