"""The one place that talks to Orbax.

Each training phase owns one directory and one `Checkpointer` on it. State is a pytree of arrays
(numpy or jax); restoring needs a template of the same structure (usually the freshly initialised
state) so shapes and dtypes are checked.

What can be on disk after a crash, and what happens to it:
  - `<step>.orbax-checkpoint-tmp*`: a save killed half-way (Orbax renames the finished directory
    into place, so a bare `<step>/` is complete). Removed on open, with a warning naming it.
  - a `<step>/` that fails to restore, or whose arrays do not match the SHA-256 recorded in
    `digests.json` when it was saved (Orbax reads some garbled data files without error): skipped
    with a warning naming it, and the next older one is tried. Once an older one restores, the bad
    ones are moved to `unreadable/` so they are neither retried nor counted by max_to_keep.
  - none restores: a UserError that names the directory to delete.
Checkpoints written before digests.json existed restore unverified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from galaxy_jax import atomic
from galaxy_jax.errors import UserError

TMP_MARKER = ".orbax-checkpoint-tmp"  # in the name of every directory Orbax has not finished
DIGESTS = "digests.json"  # {step: sha256 of the saved arrays}, written before each save
UNREADABLE = "unreadable"  # where checkpoints that failed to restore are moved


class NonFiniteStateError(ValueError):
    """save() refused a state holding NaN or inf; the message names the first such array."""


class Checkpointer:
    """Saves and restores the state of one phase under `directory`."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            err = atomic.storage_error(e, self.directory)
            if err is None:
                raise
            raise err from e
        _remove_partial_saves(self.directory)
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )
        self._digests = self._read_digests()

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state, *, wait: bool = False) -> None:
        """Saves `state` at `step` asynchronously (the arrays are copied before returning).

        Raises NonFiniteStateError, writing nothing, if a floating-point array holds NaN or inf:
        a bad state must never replace the last good checkpoint.
        """
        step = int(step)
        host = jax.device_get(state)
        _check_finite(host)
        try:
            # An earlier asynchronous save (perhaps of this very step, e.g. a finished phase
            # re-saved with done=1 at its last cadence step) must be complete before anything is
            # deleted; Orbax would wait for it inside save() anyway.
            self._mngr.wait_until_finished()
            if step in self._mngr.all_steps():
                self._mngr.delete(step)
            # The digest goes to disk first, so every complete checkpoint has one.
            self._digests = {
                k: v for k, v in self._digests.items() if int(k) in self._mngr.all_steps()
            }
            self._digests[str(step)] = digest(host)
            atomic.write_json(os.path.join(self.directory, DIGESTS), self._digests)
            self._mngr.save(step, args=ocp.args.StandardSave(state), force=True)
            if wait:
                self._mngr.wait_until_finished()
        except UserError:
            raise
        except Exception as e:  # Orbax wraps OS errors (disk full) from its writer threads
            err = atomic.storage_error(e, os.path.join(self.directory, str(step)))
            if err is None:
                raise
            raise err from e

    def restore(self, template):
        """Returns (step, state) from the newest checkpoint that restores, or (None, template).

        template: a pytree with the structure, shapes and dtypes of the saved state.
        """
        steps = sorted(self._mngr.all_steps(), reverse=True)
        abstract = jax.tree.map(_abstract, template)
        bad = []
        for step in steps:
            path = os.path.join(self.directory, str(step))
            try:
                state = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
                state = jax.tree.map(np.asarray, state)
            except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
                reason = f"{type(e).__name__}: {str(e)[:300]}"
            else:
                _check_shapes(state, abstract, path, self.directory)
                expected = self._digests.get(str(step))
                if expected is None or digest(state) == expected:
                    if expected is None:
                        logging.info("Checkpoint %s has no digest (older format).", path)
                    if bad:
                        self._set_aside(bad)
                    return step, state
                reason = f"its arrays do not match the SHA-256 in {DIGESTS} (garbled file?)"
            logging.warning("Checkpoint %s is unreadable (%s); trying an older one.", path, reason)
            bad.append(step)
        if steps:
            raise UserError(
                f"No checkpoint under {self.directory} could be restored (steps {steps}; see the "
                f"warnings above). Delete {self.directory} to redo this phase from scratch; "
                "the earlier phases are kept."
            )
        return None, template

    def wait(self) -> None:
        try:
            self._mngr.wait_until_finished()
        except Exception as e:
            err = atomic.storage_error(e, self.directory)
            if err is None:
                raise
            raise err from e

    def close(self) -> None:
        self.wait()
        self._mngr.close()

    def _read_digests(self) -> dict:
        path = os.path.join(self.directory, DIGESTS)
        if not os.path.isfile(path):
            return {}
        try:
            with open(path) as f:
                return dict(json.load(f))
        except (OSError, ValueError) as e:
            logging.warning("%s is unreadable (%s); checkpoints restore unverified.", path, e)
            return {}

    def _set_aside(self, steps) -> None:
        """Moves unreadable checkpoints to unreadable/<step>[-n], out of Orbax's sight."""
        self.wait()
        for step in steps:
            src = os.path.join(self.directory, str(step))
            dst = os.path.join(self.directory, UNREADABLE, str(step))
            n = 0
            while os.path.exists(dst):
                n += 1
                dst = os.path.join(self.directory, UNREADABLE, f"{step}-{n}")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
            self._digests.pop(str(step), None)
            logging.warning("Moved unreadable checkpoint %s to %s (safe to delete).", src, dst)
        self._mngr.reload()


def digest(tree) -> str:
    """SHA-256 over the dtype, shape and bytes of every leaf, in tree order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf)  # a Python int (a fresh TrainState's step) restores as int32:
        a = a.astype(jax.dtypes.canonicalize_dtype(a.dtype))  # hash what comes back
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _check_finite(host_tree) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(host_tree)[0]:
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise NonFiniteStateError(
                f"{jax.tree_util.keystr(path)} holds {int((~np.isfinite(a)).sum())} "
                "non-finite values"
            )


def _check_shapes(state, abstract, path, directory) -> None:
    """Orbax restores an array of another shape than the template's without complaint."""
    for (key, a), b in zip(
        jax.tree_util.tree_flatten_with_path(state)[0], jax.tree.leaves(abstract), strict=True
    ):
        if a.shape != b.shape:
            raise UserError(
                f"Checkpoint {path} was written by another config: "
                f"{jax.tree_util.keystr(key)} has shape {a.shape} there, {b.shape} now. Use a "
                f"new --workdir, or delete {directory} to redo this phase."
            )


def _remove_partial_saves(directory: str) -> None:
    for name in sorted(os.listdir(directory)):
        if TMP_MARKER in name:
            path = os.path.join(directory, name)
            logging.warning(
                "Removing %s: a checkpoint whose save was interrupted (never loaded).", path
            )
            shutil.rmtree(path, ignore_errors=True)


def _abstract(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    return jax.ShapeDtypeStruct(x.shape, x.dtype)
