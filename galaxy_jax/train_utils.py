"""Small pieces every training loop here shares: batch order, workdir checks, the non-finite
guard, the checkpoint-or-stop end of a step, results.json."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from galaxy_jax import io, preemption
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


def check_workdir_writable(workdir: str) -> str:
    """Checks, creating nothing, that `workdir` is or can be made a writable directory."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    path = workdir
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.path.isdir(path):
        raise UserError(f"workdir {workdir}: {path} exists and is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"workdir {workdir}: {path} is not writable; use another --workdir")
    return workdir


def prepare_workdir(workdir: str) -> str:
    """Creates `workdir` and checks that it is writable; returns its absolute path."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    try:
        os.makedirs(workdir, exist_ok=True)
        # A unique name: several processes of one run may probe the same workdir at once.
        fd, probe = tempfile.mkstemp(dir=workdir, prefix=".write_test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise (io.storage_error(e, workdir) or UserError(f"workdir {workdir}: {e}")) from e
    return workdir


RUN_CONFIG = "run_config.json"


def check_run_config(directory: str, config, fields: tuple[str, ...]) -> None:
    """Refuses to continue the checkpoints in `directory` under other values of the config
    `fields` (top-level names or sections, e.g. ('seed', 'data', 'sae')) than they were written
    with: they would silently mix two experiments. Writes directory/run_config.json on the first
    run; a directory from before this check gets one without complaint. Only fields known to both
    runs are compared (a newer version may add fields), and paths are compared resolved.
    """
    path = os.path.join(directory, RUN_CONFIG)
    flat = _flatten(json.loads(json.dumps(io._jsonable(config.to_dict()))))
    now = {
        k: os.path.realpath(os.path.expanduser(v)) if k.endswith("path") and v else v
        for k, v in flat.items()
        if k.split(".")[0] in fields
    }
    if os.path.isfile(path):
        try:
            with open(path) as f:
                before = json.load(f)
        except (OSError, ValueError):
            before = {}  # written atomically, so only outside damage: rewrite it
        diff = [
            f"{k}: {before[k]!r} then, {now[k]!r} now"
            for k in sorted(set(before) & set(now))
            if before[k] != now[k]
        ]
        if diff:
            raise UserError(
                f"{directory} holds checkpoints of another config ({'; '.join(diff[:5])}). "
                f"Use a new --workdir, or delete {directory} to redo those phases."
            )
        if before == now:
            return
    io.atomic_write_json(path, now)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scikit-learn"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def write_results(workdir: str, config, **fields) -> dict:
    """Writes workdir/results.json atomically: the fields plus the config, seed and versions."""
    import jax

    results = {
        "config": config.to_dict(),
        "seed": config.get("seed"),
        "versions": versions(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        **fields,
    }
    io.atomic_write_json(os.path.join(workdir, "results.json"), results)
    return results


def checkpoint_or_stop(step, total, state, *, every, ckpt, guard, hist_path, history, name):
    """The end of one training step: every `every` steps, at the last step, or when preemption
    was requested, check the loss guard and save the history then the checkpoint (history
    first: a kill between the two leaves it ahead of the checkpoint, never behind); on a
    preemption request, close the checkpointer and raise `preemption.Preempted`."""
    stop = preemption.requested()
    if step % every == 0 or step == total or stop:
        guard.check(step)
        io.atomic_write_json(hist_path, history)
        ckpt.save(step, state, wait=stop or step == total)
    if stop:
        ckpt.close()
        raise preemption.Preempted(f"{name} stopped at step {step}; checkpoint saved")
