"""Atomic file outputs: a reader never sees half a file. A full disk or a read-only directory
becomes a UserError naming the path (see `storage_error`), not a traceback from deep inside."""

from __future__ import annotations

import errno
import json
import os
import tempfile

import numpy as np

from galaxy_jax.errors import UserError

# errno -> what the user should do about it.
_STORAGE_ERRNOS = {
    errno.ENOSPC: "the disk is full: free some space, or point --workdir at another disk",
    errno.EDQUOT: "the disk quota is exceeded: free some space, or use another --workdir",
    errno.EROFS: "the file system is read-only: use another --workdir",
    errno.EACCES: "permission denied: use a --workdir you can write to",
    errno.EPERM: "permission denied: use a --workdir you can write to",
}


def storage_error(exc: BaseException, path: str) -> UserError | None:
    """A UserError for `exc` if it (or an exception it wraps) is a full disk, a quota, a read-only
    file system or a permission problem; None otherwise. Also recognises the message text, since
    Orbax and TensorStore re-raise OS errors from their writer threads as other types."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
            advice = _STORAGE_ERRNOS[exc.errno]
            break
        text = str(exc)
        advice = next((a for e, a in _STORAGE_ERRNOS.items() if os.strerror(e) in text), None)
        if advice:
            break
        exc = exc.__cause__ or exc.__context__
    else:
        return None
    return UserError(
        f"cannot write {path}: {advice}. Completed checkpoints are kept; re-run the same "
        "command to continue."
    )


def _fsync_dir(directory: str) -> None:
    """Makes a rename durable across a power cut (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, fsyncs it, and renames it over `path`."""
    _write(path, lambda f: f.write(data), os.path.basename(path))


def _write(path: str, write, suffix: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(directory)
    except OSError as e:
        err = storage_error(e, path)
        if err is None:
            raise
        raise err from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def json_bytes(obj) -> bytes:
    """obj (numpy arrays and scalars included) as the indented, key-sorted JSON of `write_json`."""
    return (json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n").encode()


def write_json(path: str, obj) -> None:
    write_bytes(path, json_bytes(obj))


def save_npy(path: str, array: np.ndarray) -> None:
    """np.save through a temporary file and a rename."""
    _write(path, lambda f: np.save(f, array), ".npy")
