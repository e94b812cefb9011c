"""A run's workdir: checked before anything is created, created writable, guarded against
mixing two configs' checkpoints, and given results.json."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile

from galaxy_jax import atomic
from galaxy_jax.errors import UserError


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
        raise (atomic.storage_error(e, workdir) or UserError(f"workdir {workdir}: {e}")) from e
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
    flat = _flatten(json.loads(json.dumps(atomic._jsonable(config.to_dict()))))
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
    atomic.write_json(path, now)


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


def write_results_primary(workdir: str, config, **fields) -> dict:
    """`write_results` from the primary process only (every process computes the same results);
    the other processes get the fields back."""
    from galaxy_jax import parallel

    if parallel.is_primary():
        return write_results(workdir, config, **fields)
    return fields


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
    atomic.write_json(os.path.join(workdir, "results.json"), results)
    return results
