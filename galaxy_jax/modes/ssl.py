"""Mode `ssl`: self-supervised (SimCLR) pretraining of Xception on unlabelled galaxy images.

Galaxy features without ImageNet: the backbone (Keras' Xception, or a narrower, shallower one
through `model.width` and `model.middle_blocks`) learns from two random views of each galaxy
(galaxy_jax/simclr.py). Labels, where the dataset has them, are never read. Data-parallel over all
devices: the batch is sharded along mesh axis 'data', the state is replicated (batch norm then
normalises over the global batch, as SimCLR's does).

Workdir:
  ckpt/            Orbax checkpoints (resume: this run's checkpoint, else the start: by default
                   a fresh seeded initialisation, no ImageNet; `weights='imagenet'` (or a
                   weights file) starts the backbone from those weights instead: domain
                   adaptation, for Keras' architecture only; the head is always fresh);
                   ckpt/history.json the logged curves
  encoder.npz      the backbone's params and batch statistics, flat (galaxy_jax.weights format)
  encoder.json     its architecture (width, middle_blocks), feature_dim and input size:
                   `weights.load_weights('<workdir>/encoder.npz')` + `weights.model_for(loaded)`
                   rebuild it, e.g. for the extract mode
  results.json     history {'ssl': {'loss': [[step, value]], 'top1': [[step, value]]}} (top1:
                   how often a view's nearest neighbour is its partner), wall time, images per
                   second, the encoder's description
"""

from __future__ import annotations

import contextlib
import os
import time

import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from galaxy_jax import parallel, simclr, validate, weights
from galaxy_jax.checkpoint import Checkpointer
from galaxy_jax.data.loader import image_batches
from galaxy_jax.errors import UserError
from galaxy_jax.optim import make_optimizer
from galaxy_jax.train_loop import BatchSampler, State, StepRunner
from galaxy_jax.workdir import check_run_config, prepare_workdir, write_results

# What the checkpoints depend on (checked by check_run_config on resume).
RUN_FIELDS = (
    "seed",
    "data",
    "model",
    "optim",
    "augment",
    "temperature",
    "dtype",
    "weights",
    "weights_path",
)
ENCODER = "encoder.npz"


def run_ssl(config, workdir: str) -> dict:
    """SimCLR pretraining; writes encoder.npz, encoder.json and results.json (module docstring).

    A re-run of a finished run restores its last checkpoint and only rewrites the outputs.
    """
    from galaxy_jax.data.from_config import make_image_source
    from galaxy_jax.features import DTYPES

    t0 = time.time()
    validate.ssl(config)
    d, m = config.data, config.model
    workdir = prepare_workdir(workdir)
    source = make_image_source(d, report_path=os.path.join(workdir, "bad_input_report.json"))
    ckpt_dir = os.path.join(workdir, "ckpt")
    check_run_config(ckpt_dir, config, RUN_FIELDS)

    mesh = parallel.mesh()
    n_dev = mesh.devices.size
    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    batch_size = -(-int(config.optim.batch_size) // n_dev) * n_dev
    model = simclr.SSLModel(
        width=float(m.width),
        middle_blocks=int(m.middle_blocks),
        proj_hidden=int(m.proj_hidden),
        proj_dim=int(m.proj_dim),
        dtype=DTYPES[config.dtype],
    )
    variables = simclr.init_variables(model, config.seed)
    if config.weights != "random":  # a pretrained backbone (ImageNet): adaptation, not scratch
        loaded = weights.from_config(config, include_top=False)
        arch = {"width": model.width, "middle_blocks": model.middle_blocks}
        if loaded.architecture != arch:
            raise UserError(
                f"config.weights={config.weights!r} holds an Xception {loaded.architecture}, "
                f"but config.model asks for {arch}: set model.width and model.middle_blocks to "
                "match (Keras' Xception: 1.0 and 8)"
            )
        variables["params"]["backbone"] = loaded.variables["params"]
        variables["batch_stats"]["backbone"] = loaded.variables["batch_stats"]
        logging.info("SSL starts its backbone from %s", loaded.description)
    # apply_fn is left out: the step calls `model` itself, and a bound method of a new model
    # object would make an equal state a new pytree structure (a recompile per run).
    state = State.create(
        apply_fn=None,
        params=variables["params"],
        tx=make_optimizer(config.optim),
        batch_stats=variables["batch_stats"],
    )
    # A restored step is an int32 array; a fresh one is too, so both compile the same step.
    state = state.replace(step=np.int32(0))
    ckpt = Checkpointer(ckpt_dir)
    # Resume order: this run's checkpoint, else the fresh seeded initialisation above.
    step, state = ckpt.restore(state)
    if step is not None:
        logging.info("SSL resumes from step %d", step)
    state = jax.device_put(state, replicated)

    step_fn = simclr.make_train_step(
        model,
        int(d.crop_size) or None,
        int(d.image_size),
        tuple(sorted((k, float(v)) for k, v in config.augment.items())),
        float(config.temperature),
    )
    key = jax.device_put(jax.random.fold_in(jax.random.PRNGKey(config.seed), 3), replicated)
    sampler = BatchSampler(len(source), batch_size, seed=config.seed)
    # Steps state.step.. in order, as the step runner asks for them; batch i+1 decodes during i.
    steps = range(int(state.step), int(config.optim.steps))
    batches = image_batches(source, (sampler(i) for i in steps), sharding=sharded)

    def batch_fn(i):
        return (*next(batches), key)

    t1 = time.time()
    start, wall = int(state.step), {}
    runner = StepRunner(
        "ssl",
        ckpt,
        total=int(config.optim.steps),
        start=start,
        every=config.checkpoint_every,
        log_every=config.log_every,
        wall=wall,
    )
    with contextlib.closing(batches):
        state = runner.run(state, step_fn, batch_fn)
    runner.close()
    history, train_s = runner.history, time.time() - t1

    encoder_path = os.path.join(workdir, ENCODER)
    meta = weights.save_encoder(
        encoder_path,
        simclr.encoder_variables(state),
        {"width": model.width, "middle_blocks": model.middle_blocks},
        image_size=int(d.image_size),
        crop_size=int(d.crop_size),
        trained_by="ssl (SimCLR NT-Xent)",
        started_from=config.weights,
        steps=int(config.optim.steps),
        data=d.name,
        num_images=len(source),
        config=config.to_dict(),
    )
    trained = int(config.optim.steps) - start
    final = history["loss"][-1][1] if history.get("loss") else None
    print(
        f"ssl: {len(source)} images, loss {final}, encoder ({meta['feature_dim']}-d features, "
        f"{meta['num_parameters']:,} parameters) -> {encoder_path}"
    )
    return write_results(
        workdir,
        config,
        mode="ssl",
        metrics={
            "final_loss": final,
            "final_top1": history["top1"][-1][1] if history.get("top1") else None,
        },
        history={"ssl": history},
        encoder={k: meta[k] for k in ("architecture", "feature_dim", "num_parameters")}
        | {"path": encoder_path, "variables_sha256": meta["variables_sha256"]},
        num_images=len(source),
        wall_s={**wall, "train": train_s, "total": time.time() - t0},
        images_per_second=round(trained * batch_size / max(train_s, 1e-9), 2),
    )
