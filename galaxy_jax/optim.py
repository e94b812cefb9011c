"""The one optimiser factory: an optax chain from a config section.

The section's own fields say which (all as in configs/):
  optimizer ('sgd' | 'adam'), lr, momentum, lr_decay_every, lr_decay   config.sae, config.dec:
      SGD(momentum) or Adam; lr times lr_decay every lr_decay_every steps (0: constant)
  lr, steps, warmup_steps, weight_decay                                   config.optim of `ssl`:
      AdamW, linear warmup from 0 to lr, then cosine decay to 0 at `steps`
  lr, steps, schedule ('constant' | 'cosine')                             config.optim of the
      supervised modes: Adam at lr, constant or cosine-decayed to 0 at `steps`

Every optimiser is cached by its settings: the optimiser is part of a train state's tree
structure, so an equal but new one would miss a jitted step's cache and compile it again (a second
run in one process, a test, a sweep).
"""

from __future__ import annotations

import functools

import optax

from galaxy_jax.errors import UserError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine")


def make_optimizer(section) -> optax.GradientTransformation:
    """The optimiser of a config section (a ConfigDict or a dict); see the module docstring."""
    if "optimizer" in section:
        return _sgd_or_adam(
            str(section["optimizer"]),
            float(section["lr"]),
            float(section["momentum"]),
            int(section["lr_decay_every"]),
            float(section["lr_decay"]),
        )
    if "warmup_steps" in section:
        return _adamw(
            float(section["lr"]),
            int(section["warmup_steps"]),
            int(section["steps"]),
            float(section["weight_decay"]),
        )
    schedule = section["schedule"]
    if schedule not in SCHEDULES:
        raise UserError(f"config.optim.schedule: must be one of {SCHEDULES}, got {schedule!r}")
    return _adam(float(section["lr"]), schedule, int(section["steps"]))


@functools.lru_cache(maxsize=32)
def _sgd_or_adam(name: str, lr: float, momentum: float, decay_every: int, decay: float):
    schedule = (
        optax.exponential_decay(lr, decay_every, decay, staircase=True) if decay_every else lr
    )
    if name == "sgd":
        return optax.sgd(schedule, momentum=momentum or None)
    if name == "adam":
        return optax.adam(schedule)
    raise ValueError(f"unknown optimizer {name!r} (use one of {OPTIMIZERS})")


@functools.lru_cache(maxsize=32)
def _adamw(lr: float, warmup: int, steps: int, weight_decay: float):
    warmup = max(min(warmup, steps - 1), 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1))
    return optax.adamw(schedule, weight_decay=weight_decay)


@functools.lru_cache(maxsize=32)
def _adam(lr: float, schedule: str, steps: int):
    # cosine: a from-scratch run then ends on a settled network, not mid-oscillation.
    if schedule == "cosine":
        return optax.adam(optax.cosine_decay_schedule(lr, max(steps, 1)))
    return optax.adam(lr)
