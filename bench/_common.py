"""Pieces the benchmark scripts here share: the TensorFlow peer worker, the machine and load
records, and for the real-sample tables (galaxy_sample.py, features_table.py) running a
`main.py` command once, seed statistics and the Hungarian balanced accuracy. Imported as
`_common` (the scripts run as `python bench/<name>.py`)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository


class TFWorker:
    """A Python with TensorFlow (--tf_python) running `source`, a script that prints one JSON
    line of version info, then answers each JSON request line with one JSON line. TensorFlow
    never shares a process, or a virtual environment, with JAX."""

    def __init__(self, python: str, source: str):
        self.proc = subprocess.Popen(
            [python, "-c", source], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the TensorFlow worker exited; is tensorflow installed there?")
        return json.loads(line)

    def request(self, **fields) -> dict:
        self.proc.stdin.write(json.dumps(fields) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def matmul_gflops(size: int = 2048, runs: int = 10, statistic=np.median) -> float:
    """float32 GFLOP/s of one jitted [size, size] @ [size, size] product per local device, all
    devices at once (one device: a plain matmul). `statistic` of the run times: the median is the
    rate attainable right now, the min (the best run) the machine's peak as XLA reaches it."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from galaxy_jax.parallel import mesh as data_mesh

    mesh = data_mesh()
    d = mesh.devices.size
    a = jax.device_put(jnp.ones((d, size, size), jnp.float32), NamedSharding(mesh, P("data")))
    ts = _call_times(jax.jit(lambda a: jnp.einsum("dij,djk->dik", a, a)), a, runs)
    return 2.0 * d * size**3 / float(statistic(ts)) / 1e9


def stream_gbps(mib: int, runs: int = 15) -> float:
    """GB/s read + written by XLA's `x * a + b` over a float32 array of `mib` MiB on one device
    (median of `runs`): above the last-level cache this is the DRAM bandwidth a memory-bound
    operation gets, below it the cache's."""
    import jax
    import jax.numpy as jnp

    x = jax.device_put(jnp.ones((mib << 18,), jnp.float32), jax.devices()[0])
    ts = _call_times(jax.jit(lambda x: x * 1.0001 + 1.0), x, runs)
    return 2.0 * x.nbytes / float(np.median(ts)) / 1e9


def _call_times(f, x, runs: int) -> list[float]:
    """Seconds of each of `runs` calls f(x), after one untimed call (compile, warm up)."""
    f(x).block_until_ready()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        f(x).block_until_ready()
        ts.append(time.perf_counter() - t)
    return ts


def loadavg() -> list[float]:
    """The 1-, 5- and 15-minute load averages: how much else ran on the machine."""
    return [round(v, 2) for v in os.getloadavg()]


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
    }


def run_once(cmd: list[str], done_file: str) -> float | None:
    """Runs `cmd` (['python', 'main.py', ...]) in the repository unless `done_file` (relative
    to it) exists; returns the wall seconds of this call (None if skipped)."""
    if os.path.isfile(os.path.join(ROOT, done_file)):
        return None
    print("$", shlex.join(cmd), flush=True)
    t0 = time.time()
    subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, check=True)
    seconds = time.time() - t0
    print(f"  done in {seconds:.0f} s", flush=True)
    return seconds


def wall_seconds(results: dict) -> float:
    """Total wall time of a run from its results.json."""
    w = results.get("wall_s") or {}
    return float(w.get("total", w.get("kmeans", sum(w.values()))))


def seed_stats(values: list) -> dict | None:
    """Mean, population std and median over seeds (None entries left out), and the values."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {
        "mean": float(np.mean(v)),
        "std": float(np.std(v)),  # population std over seeds
        "median": float(np.median(v)),
        "per_seed": values,
    }


def balanced_acc_hungarian(contingency) -> float:
    """Mean per-class recall under the one-to-one (Hungarian) cluster -> class map; clusters
    left without a class predict nothing right. contingency: [clusters, classes] counts."""
    from scipy.optimize import linear_sum_assignment

    table = np.asarray(contingency)
    rows, cols = linear_sum_assignment(-table)
    hit = np.zeros(table.shape[1])
    hit[cols] = table[rows, cols]
    return float(np.mean(hit / np.maximum(table.sum(0), 1)))


def subset_features(src: str, dst: str, classes) -> str:
    """The features dir `src` restricted to the classes named in `classes` (relabelled 0, 1,
    ... in that order), written to `dst` once (kept if dst/features.npy exists); returns dst."""
    if os.path.isfile(os.path.join(dst, "features.npy")):
        return dst
    with open(os.path.join(src, "features_meta.json")) as f:
        meta = json.load(f)
    names = list(meta["class_names"])
    labels = np.load(os.path.join(src, "labels.npy"))
    keep_classes = [names.index(c) for c in classes]
    keep = np.isin(labels, keep_classes)
    os.makedirs(dst, exist_ok=True)
    new_label = {c: i for i, c in enumerate(keep_classes)}
    np.save(os.path.join(dst, "ids.npy"), np.load(os.path.join(src, "ids.npy"))[keep])
    np.save(
        os.path.join(dst, "labels.npy"), np.asarray([new_label[v] for v in labels[keep]], np.int32)
    )
    meta = {**meta, "class_names": list(classes), "subset_of": src, "num_images": int(keep.sum())}
    with open(os.path.join(dst, "features_meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    np.save(os.path.join(dst, "features.npy"), np.load(os.path.join(src, "features.npy"))[keep])
    return dst
