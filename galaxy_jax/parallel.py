"""Data parallelism over every device of every process, with JAX's own runtime only.

One 1-D mesh, axis 'data', over `jax.devices()` (all processes' devices, process by process).
Training batches are sharded along 'data' and parameters are replicated; XLA inserts the
gradient all-reduce. A process feeds only its own rows: for a global batch of B rows (the same
indices on every process, from the seeded BatchSampler), process p reads rows
[p * B / P, (p + 1) * B / P) and `batch()` assembles the global array from the local pieces.

Whole-dataset passes (embeddings, soft assignments) go the same way: each global chunk of rows
is split over the devices, and the output is returned replicated, so every process holds the
full [N, d] or [N, K] result (small per row) without a host-side exchange.

Single process, single device is the same code with a mesh of one. Multi-process runs start with
`jax.distributed.initialize` (main.py's --coordinator_address/--num_processes/--process_id, or
--distributed for the cluster auto-detection); see docs/scale.md.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from galaxy_jax.errors import UserError


def mesh(devices=None) -> Mesh:
    """The 1-D mesh, axis 'data', over `devices`; by default every device of every process (that
    one is built once)."""
    if devices is None:
        return _all_devices_mesh()
    return Mesh(np.asarray(devices), ("data",))


@functools.cache
def _all_devices_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated() -> NamedSharding:
    return NamedSharding(mesh(), P())


def sharded() -> NamedSharding:
    return NamedSharding(mesh(), P("data"))


def host_device_count(requested: int, xla_flags: str = "") -> int | None:
    """How many XLA devices to make of the CPU for `requested` (-1: one per core this process
    may use), or None to leave JAX's default (one device on every core): for 1, and when
    XLA_FLAGS already sets --xla_force_host_platform_device_count (the user's choice wins)."""
    if "xla_force_host_platform_device_count" in xla_flags:
        return None
    if requested == -1:
        affinity = getattr(os, "sched_getaffinity", None)  # Linux: the cores this process may use
        requested = len(affinity(0)) if affinity else os.cpu_count() or 1
    if requested < 1:
        raise UserError(f"config.host_devices must be -1 (one per core) or >= 1, got {requested}")
    return None if requested == 1 else requested


def use_host_devices(requested: int) -> None:
    """Splits the CPU backend into `host_device_count(requested)` devices, before JAX starts.

    Each is a stream of its own (data-parallel work is sharded over them like over GPUs); on a
    2-core CPU that makes Xception extraction 4-21% faster at 299 px than one device using both
    cores (docs/modes.md, "Xception features"). Accelerators are untouched. Must run before any JAX
    computation: main.py calls it first thing for configs with a `host_devices` field."""
    n = host_device_count(requested, os.environ.get("XLA_FLAGS", ""))
    if n is not None:
        jax.config.update("jax_num_cpu_devices", n)


def device_count() -> int:
    return jax.device_count()


def is_primary() -> bool:
    """The process that writes results files (checkpoints are written by all, via Orbax)."""
    return jax.process_index() == 0


def check_batch_size(field: str, batch_size: int) -> None:
    n = jax.device_count()
    if batch_size % n:
        raise UserError(
            f"config.{field}={batch_size} is not a multiple of the {n} devices; the global batch "
            f"is split evenly over them (use e.g. {-(-batch_size // n) * n})"
        )


def replicate(tree):
    """Host or device arrays (the same values on every process) -> replicated global arrays."""
    return jax.device_put(tree, replicated())


def local_rows(global_rows: int) -> slice:
    """This process's slice of a global batch of `global_rows` rows (a multiple of the device
    count)."""
    per = global_rows // jax.process_count()
    p = jax.process_index()
    return slice(p * per, (p + 1) * per)


def batch(*local: np.ndarray, global_rows: int, sharding: NamedSharding | None = None):
    """Process-local row blocks (this process's `local_rows`) -> global arrays sharded on 'data'
    (of `sharding`, default `sharded()`).

    Returns a tuple, one array per input."""
    s = sharding or sharded()
    if jax.process_count() == 1:  # every row is local: a plain transfer (faster on CPU devices)
        return tuple(jax.device_put(np.asarray(a), s) for a in local)
    return tuple(
        jax.make_array_from_process_local_data(s, np.asarray(a), (global_rows, *a.shape[1:]))
        for a in local
    )


def map_rows(fn, params, x, chunk: int) -> np.ndarray:
    """fn(params, rows) over all rows of x [N, ...] in global chunks; returns [N, ...] on every
    process.

    x: anything with len() and slice reads (an array, or a disk reader). fn must be jitted with
    a replicated output (see `jit_rows`); the chunk is rounded up to a multiple of the device
    count and the last one is padded with zeros, so fn compiles once. Each process reads only
    its part of each chunk.
    """
    n = len(x)
    d = jax.device_count()
    chunk = -(-min(chunk, n) // d) * d
    mine = local_rows(chunk)
    outs = []
    for lo in range(0, n, chunk):
        a, b = min(lo + mine.start, n), min(lo + mine.stop, n)
        rows = np.asarray(x[a:b], np.float32)
        want = mine.stop - mine.start
        if len(rows) < want:
            rows = np.concatenate([rows, np.zeros((want - len(rows), *rows.shape[1:]), np.float32)])
        (g,) = batch(rows, global_rows=chunk)
        outs.append(np.asarray(fn(params, g))[: min(chunk, n - lo)])
    return np.concatenate(outs)


def jit_rows(fn):
    """jax.jit(fn) with its output replicated (for `map_rows`)."""
    return jax.jit(fn, out_shardings=replicated())
