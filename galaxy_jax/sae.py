"""Stacked denoising autoencoder training steps: greedy layer-wise pretraining, then fine-tuning.

Both losses are the mean squared reconstruction error (mean over features and batch), as in the
public DEC-keras reimplementation. Steps are pure, jitted once, with the state donated; dropout
randomness is `fold_in(key, step)`. `pretrain` runs the phases (one checkpoint directory each)
with the step runner of galaxy_jax/train_loop.py.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
from flax.training import train_state

from galaxy_jax import parallel
from galaxy_jax.checkpoint import Checkpointer
from galaxy_jax.errors import UserError
from galaxy_jax.models.autoencoder import Autoencoder
from galaxy_jax.optim import make_optimizer
from galaxy_jax.train_loop import BatchSampler, StepRunner


class SAEState(train_state.TrainState):
    key: jax.Array  # root dropout key of this phase


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


def phases(config) -> list:
    """[(name, layer pair or None for fine-tuning, steps)] of config.sae, in training order."""
    n = len(config.sae.dims)
    layers = [(f"layer_{i}", i, config.sae.layerwise_steps) for i in range(n)]
    return [p for p in layers if p[2] > 0] + [("finetune", None, config.sae.finetune_steps)]


def pretrain(config, x, directory: str, wall: dict, history: dict, finished_only: bool = False):
    """Greedy layer-wise denoising pretraining, then end-to-end fine-tuning, of the autoencoder
    (x.shape[1], *config.sae.dims) on the rows of x; returns (model, params).

    Each phase checkpoints under directory/<phase> and resumes from its latest checkpoint, else
    from the final params of the phase before it; a finished phase is restored, never redone.
    wall['sae/<phase>'] and history['sae/<phase>'] ({'loss': [[step, loss]]}) are filled in.
    finished_only: read the checkpoints of another run (config `sae_from`): every phase must be
    finished there, and nothing is trained or written.
    """
    s = config.sae
    model = Autoencoder((x.shape[1], *s.dims))
    root = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    params = None
    for k, (name, layer, total) in enumerate(phases(config)):
        if total == 0:
            continue
        t0 = time.time()
        state = create_state(model, make_optimizer(s), jax.random.fold_in(root, k), params)
        ckpt = Checkpointer(os.path.join(directory, name))
        _, state = ckpt.restore(state)
        start = int(state.step)
        if finished_only:
            ckpt.close()
            if start < total:
                raise UserError(
                    f"sae_from: phase {name} in {directory} is at step {start} of {total}; "
                    "finish that run's autoencoder first (run it again with its --workdir)."
                )
            params = parallel.replicate(state).params
            continue
        runner = StepRunner(
            f"sae/{name}",
            ckpt,
            total=total,
            start=start,
            every=config.checkpoint_every,
            log_every=config.log_every,
            wall=wall,
        )
        state = parallel.replicate(state)
        if start < total:
            step_fn = (
                make_finetune_step(model)
                if layer is None
                else make_layer_step(model, layer, s.dropout)
            )
            sampler = BatchSampler(len(x), s.batch_size, seed=config.seed * 1000 + k)
            mine = parallel.local_rows(s.batch_size)
            state = runner.run(
                state,
                step_fn,
                lambda i, sampler=sampler, mine=mine: parallel.batch(
                    x[sampler(i)[mine]], global_rows=s.batch_size
                ),
            )
        runner.close()
        params = state.params
        wall[f"sae/{name}"] = time.time() - t0
        history[f"sae/{name}"] = runner.history
    return model, params
