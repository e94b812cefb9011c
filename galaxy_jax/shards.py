"""Resumable results in numbered shards, one directory per computation (`extract`'s features,
`morphology`'s measurements).

The directory's meta.json holds the hash of everything the results depend on (`meta_hash`); a
directory written under another hash, or without a readable meta.json, is cleared, never reused
(`open_dir`). Each shard is written atomically, its SHA-256 beside it first (`save_bytes`), so
after a kill -9 a re-run keeps every complete shard, and a shard that is missing, truncated,
garbled or without its digest is not loaded: `load_bytes` returns None with a warning naming it,
and the caller computes it again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil

import numpy as np
from absl import logging

from galaxy_jax import atomic


def meta_hash(identity: dict) -> str:
    """SHA-256 of a JSON dict of everything the results depend on."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def ids_sha256(ids) -> str:
    """SHA-256 of the image ids, in order (part of an identity)."""
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


def ranges(n: int, size: int) -> list[tuple[int, int]]:
    """[(start, end)] of the shards of `size` rows of n rows (the last one shorter)."""
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def shard_path(directory: str, i: int, total: int, ext: str = ".npy") -> str:
    return os.path.join(directory, f"shard_{i:05d}_of_{total:05d}{ext}")


def partial_path(path: str) -> str:
    """Where the first rows of an unfinished shard go on a stop request."""
    root, ext = os.path.splitext(path)
    return root + ".partial" + ext


def digest_path(path: str) -> str:
    return path + ".sha256"


def open_dir(directory: str, hash_: str, contents: str = "results") -> None:
    """Makes `directory` the shard directory of `hash_`, keeping the shards already there if they
    were written under it. Clears it if it was written under another hash (or its meta.json is
    unreadable or missing), and deletes writes that a kill -9 cut short."""
    meta_path = os.path.join(directory, "meta.json")
    if os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                old = json.load(f).get("meta_hash")
        except (OSError, ValueError, AttributeError):
            old = "unreadable"
        if old != hash_:
            logging.warning(
                "%s holds %s of another config or weights (hash %s, now %s); rebuilding.",
                directory,
                contents,
                old,
                hash_,
            )
            shutil.rmtree(directory)
    elif os.path.isdir(directory):
        shutil.rmtree(directory)  # no metadata: unknown origin, never reuse
    if not os.path.exists(meta_path):
        atomic.write_json(meta_path, {"meta_hash": hash_})
    remove_temporaries(directory)


def save_bytes(path: str, data: bytes) -> None:
    """Writes the SHA-256 of `data`, then `data` (both atomically): a complete shard always has
    its digest, and a shard that does not match it is never loaded."""
    atomic.write_bytes(digest_path(path), hashlib.sha256(data).hexdigest().encode())
    atomic.write_bytes(path, data)


def save_npy(path: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    save_bytes(path, buf.getvalue())


def save_json(path: str, obj) -> None:
    save_bytes(path, atomic.json_bytes(obj))


def load_bytes(path: str, what: str = "shard") -> bytes | None:
    """The bytes of `path` if they match its digest; else None, with a warning naming the file
    (it is then rebuilt)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        with open(digest_path(path)) as f:
            expected = f.read().strip()
    except OSError as e:
        logging.warning("Ignoring %s %s (%s); rebuilding it.", what, path, e)
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        logging.warning(
            "Ignoring %s %s: its bytes do not match the SHA-256 in %s (truncated or garbled); "
            "rebuilding it.",
            what,
            path,
            digest_path(path),
        )
        return None
    return data


def load_npy(path: str, what: str = "shard") -> np.ndarray | None:
    data = load_bytes(path, what)
    return None if data is None else np.load(io.BytesIO(data))


def load_json(path: str, what: str = "shard"):
    data = load_bytes(path, what)
    return None if data is None else json.loads(data)


def remove(path: str) -> None:
    """Deletes a shard and its digest, where they exist."""
    for p in (path, digest_path(path)):
        if os.path.exists(p):
            os.remove(p)


def remove_temporaries(directory: str, names=None) -> None:
    """Deletes `atomic`'s temporaries (.tmp-*, those ending in one of `names` if given) left by a
    write that a kill -9 cut short."""
    if not os.path.isdir(directory):
        return
    for name in sorted(os.listdir(directory)):
        if name.startswith(".tmp-") and (names is None or any(name.endswith(m) for m in names)):
            path = os.path.join(directory, name)
            logging.warning("Removing %s: a file whose write was interrupted (never loaded).", path)
            os.remove(path)
