"""The one training loop: `StepRunner` runs the steps of a phase (SAE layers and fine-tuning, DEC
segments between target updates, supervised ANN/CNN, SSL, the throughput benches), and what every
loop shares: batch order (BatchSampler) and the non-finite guard (FiniteGuard).

History format, every phase: {metric: [[step, value], ...]} (e.g. loss, top1, val_accuracy,
DEC's delta_label and acc), kept across resumes in <checkpoint dir>/history.json."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax.training import train_state
from tqdm.auto import tqdm

from galaxy_jax import atomic, preemption
from galaxy_jax.checkpoint import NonFiniteStateError
from galaxy_jax.errors import UserError


class State(train_state.TrainState):
    """The train state of the supervised and SSL models: batch_stats holds Xception's running
    batch-norm statistics (None for a model without batch norm, the MLP)."""

    batch_stats: Any = None


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


def compile_step(jitted, wall: dict, phase: str, *args):
    """jitted.lower(*args).compile(), timed into wall[phase + '/compile']. Calling the result
    with other shapes or shardings raises instead of recompiling."""
    t0 = time.time()
    compiled = jitted.lower(*args).compile()
    wall[f"{phase}/compile"] = time.time() - t0
    return compiled


def read_history(path: str, upto: int) -> dict:
    """{metric: [[step, value], ...]} from `path`, without the entries past step `upto` (written
    ahead of a checkpoint that was not restored). Missing: {}. Unreadable or not in this format:
    a warning, and {} (the entries are lost, nothing else)."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            saved = json.load(f)
        if not isinstance(saved, dict):
            raise ValueError(f"not {{metric: [[step, value], ...]}} but a {type(saved).__name__}")
        return {k: [[int(s), v] for s, v in pts if s <= upto] for k, pts in saved.items()}
    except (OSError, ValueError, TypeError) as e:  # written atomically: only outside damage
        logging.warning("%s is unreadable (%s); its entries are lost.", path, e)
        return {}


class StepRunner:
    """Runs the training steps of one phase; every training loop of the package is this one.

    The mode sets up the state, the jitted step (state, *batch) -> (state, out), with `out` the
    loss or a dict of scalars holding 'loss', and batch_fn(i) -> the device arrays of global
    batch i. The runner owns the rest:
      - compilation ahead of time, once per phase, on the first batch (wall[phase + '/compile']);
        a later call with other shapes or shardings raises instead of recompiling;
      - the NaN guard (FiniteGuard, on device; checked at log steps and before each checkpoint:
        the error names the first bad step, and nothing is saved after it);
      - the history {metric: [[step, value]]}: `out` at log steps (every `log_every` and the
        last step), `eval_fn(state)` every `eval_every` steps, anything the mode logs itself
        (`log`); read back tolerantly on resume (`read_history`);
      - checkpoints every `every` steps, at the phase's last step and on a preemption request:
        history.json first (a kill between the two leaves it ahead, trimmed on resume, never
        behind), then the state, refused (NonFiniteError) if it holds NaN/inf; on preemption,
        the checkpointer is closed and `preemption.Preempted` raised;
      - one tqdm bar per phase.

    `run` may be called several times (DEC: once per segment between target updates); the
    compiled step, the guard, the bar and the history carry over. ckpt=None (a benchmark):
    nothing is saved and preemption is not checked.
    """

    def __init__(
        self,
        phase: str,
        ckpt,
        *,
        total: int,
        start: int,
        every: int = 0,
        log_every: int = 0,
        wall: dict | None = None,
        eval_fn: Callable | None = None,
        eval_every: int = 0,
    ):
        self.phase, self.ckpt, self.total = phase, ckpt, int(total)
        self.every, self.log_every = int(every), int(log_every)
        self.wall = {} if wall is None else wall
        self.eval_fn, self.eval_every = eval_fn, int(eval_every or 0)
        self.guard = FiniteGuard(phase)
        self.history = read_history(self.history_path, int(start)) if ckpt is not None else {}
        self._compiled = self._bar = None

    @property
    def history_path(self) -> str:
        return os.path.join(self.ckpt.directory, "history.json")

    def run(self, state, step_fn, batch_fn, *, stop: int | None = None, extra_state=None):
        """Steps from state.step to `stop` (default: the phase's total); returns the state.

        extra_state: what the checkpoint holds besides the state, constant over this call
        (DEC's target); the checkpoint is then {'state': state, **extra_state}.
        """
        start, stop = int(state.step), self.total if stop is None else int(stop)
        if self._bar is None:
            self._bar = tqdm(
                total=self.total, initial=start, desc=self.phase, leave=False, disable=None
            )
        for i in range(start, stop):
            batch = batch_fn(i)
            if self._compiled is None:
                self._compiled = compile_step(step_fn, self.wall, self.phase, state, *batch)
            state, out = self._compiled(state, *batch)
            step = i + 1
            self.guard.update(out["loss"] if isinstance(out, dict) else out, step)  # no sync
            self._bar.update(1)
            if self.log_every and (step % self.log_every == 0 or step == self.total):
                self.guard.check(step)  # the host syncs of the loop: log steps
                out = jax.device_get(out)
                self.log(step, **(out if isinstance(out, dict) else {"loss": out}))
            if self.eval_fn is not None and self.eval_every and step % self.eval_every == 0:
                self.log(step, **self.eval_fn(state))
            if self.ckpt is None:
                continue
            stopping = preemption.requested()
            if (self.every and step % self.every == 0) or step == self.total or stopping:
                tree = state if extra_state is None else {"state": state, **extra_state}
                self.save(step, tree, wait=stopping or step == self.total)
            if stopping:
                self.ckpt.close()
                raise preemption.Preempted(f"{self.phase} stopped at step {step}; checkpoint saved")
        return state

    def log(self, step: int, **values) -> None:
        """Appends [step, value] to each metric's history (replacing any entry at or past
        `step`, so a step redone after a resume is never logged twice)."""
        for name, value in values.items():
            points = self.history.setdefault(name, [])
            while points and points[-1][0] >= step:
                points.pop()
            points.append([int(step), float(value)])
        if self._bar is not None:
            self._bar.set_postfix({k: f"{float(v):.4g}" for k, v in values.items()})

    def save(self, step: int, tree, *, wait: bool = False) -> None:
        """Checks the guard, writes history.json, then checkpoints `tree` at `step`, unless a
        loss since the last check or the tree itself is non-finite (NonFiniteError)."""
        self.guard.check(step)
        atomic.write_json(self.history_path, self.history)
        try:
            self.ckpt.save(step, tree, wait=wait)
        except NonFiniteStateError as e:
            raise NonFiniteError(
                f"non-finite state in phase {self.phase} after step {step}: {e}. Not "
                "checkpointed; lower the learning rate, or check the input data for NaN/inf."
            ) from None

    def close(self) -> None:
        """Closes the bar and the checkpointer (waiting for its last save)."""
        if self._bar is not None:
            self._bar.close()
        if self.ckpt is not None:
            self.ckpt.close()
