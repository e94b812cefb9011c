"""The one place that talks to Orbax.

Each training phase owns one directory and one `Checkpointer` on it. State is a pytree of arrays
(numpy or jax); restoring needs a template of the same structure (usually the freshly initialised
state) so shapes and dtypes are checked. A checkpoint that fails to restore (truncated, garbage)
is skipped with a warning naming it, and the next older one is tried.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from galaxy_jax.errors import UserError


class Checkpointer:
    """Saves and restores the state of one phase under `directory`."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state, *, wait: bool = False) -> None:
        """Saves `state` at `step` asynchronously (the arrays are copied before returning)."""
        if int(step) in self._mngr.all_steps():  # e.g. a finished phase re-saved with done=1
            self._mngr.delete(int(step))
        self._mngr.save(int(step), args=ocp.args.StandardSave(state), force=True)
        if wait:
            self._mngr.wait_until_finished()

    def restore(self, template):
        """Returns (step, state) from the newest checkpoint that restores, or (None, template).

        template: a pytree with the structure, shapes and dtypes of the saved state.
        """
        steps = sorted(self._mngr.all_steps(), reverse=True)
        abstract = jax.tree.map(_abstract, template)
        for step in steps:
            try:
                state = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
                logging.warning(
                    "Checkpoint %s/%d is unreadable (%s: %s); trying an older one.",
                    self.directory,
                    step,
                    type(e).__name__,
                    e,
                )
                continue
            return step, jax.tree.map(np.asarray, state)
        if steps:
            raise UserError(
                f"No checkpoint under {self.directory} could be restored (steps {steps}). "
                f"Delete that directory to restart this phase from scratch."
            )
        return None, template

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


def _abstract(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    return jax.ShapeDtypeStruct(x.shape, x.dtype)
