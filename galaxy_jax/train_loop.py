"""The pieces every training loop shares: batch order, the non-finite guard, the
checkpoint-or-stop end of a step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from galaxy_jax import atomic, preemption
from galaxy_jax.errors import UserError


class BatchSampler:
    """Shuffled mini-batch indices that depend only on (seed, step), so a resumed run sees the
    same batches as an uninterrupted one. Epochs are concatenated: a batch may span two."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n <= 0:
            raise UserError("the dataset is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def __call__(self, step: int) -> np.ndarray:
        pos = step * self.batch_size + np.arange(self.batch_size)
        epochs, offsets = np.divmod(pos, self.n)
        return np.concatenate([self._perm(int(e))[offsets[epochs == e]] for e in np.unique(epochs)])


class NonFiniteError(UserError, FloatingPointError):
    """A loss, target or state went NaN/inf; the message names the phase and the step."""


@jax.jit
def _note_first_bad(first, value, loss, step):
    bad = (first < 0) & ~jnp.all(jnp.isfinite(loss))
    return jnp.where(bad, step, first), jnp.where(bad, jnp.asarray(loss, jnp.float32), value)


class FiniteGuard:
    """Watches a training loop's losses for NaN/inf without a host sync per step.

    `update(loss, step)` is a tiny jitted op that keeps, on device, the first step whose loss was
    not finite. `check()` syncs (call it where the loop syncs anyway: log steps, target updates,
    checkpoints) and raises NonFiniteError naming the phase and that first bad step. The training
    step itself is untouched, so results are bit-identical to an unguarded loop; the run goes on
    at most until the next check, and no checkpoint is written after a bad step.
    """

    def __init__(self, phase: str):
        self.phase = phase
        self._first, self._value = jnp.int32(-1), jnp.float32(0)

    def update(self, loss, step: int) -> None:
        self._first, self._value = _note_first_bad(self._first, self._value, loss, step)

    def check(self, at_step: int) -> None:
        first, value = (v.item() for v in jax.device_get((self._first, self._value)))
        if first >= 0:
            raise NonFiniteError(
                f"non-finite loss ({value}) in phase {self.phase} at step {first} (noticed at "
                f"step {at_step}; no checkpoint was written after step {first - 1}). Lower the "
                "learning rate, or check the input data for NaN/inf."
            )


def checkpoint_or_stop(step, total, state, *, every, ckpt, guard, hist_path, history, name):
    """The end of one training step: every `every` steps, at the last step, or when preemption
    was requested, check the loss guard and save the history then the checkpoint (history
    first: a kill between the two leaves it ahead of the checkpoint, never behind); on a
    preemption request, close the checkpointer and raise `preemption.Preempted`."""
    stop = preemption.requested()
    if step % every == 0 or step == total or stop:
        guard.check(step)
        atomic.write_json(hist_path, history)
        ckpt.save(step, state, wait=stop or step == total)
    if stop:
        ckpt.close()
        raise preemption.Preempted(f"{name} stopped at step {step}; checkpoint saved")
