"""Small pieces every training loop here shares: batch order, workdir checks, results.json."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import numpy as np

from galaxy_jax import io
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


def prepare_workdir(workdir: str) -> str:
    """Creates `workdir` and checks that it is writable; returns its absolute path."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UserError(f"workdir {workdir} is not writable: {e.strerror}") from e
    return workdir


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
