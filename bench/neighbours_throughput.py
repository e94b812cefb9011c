"""Exact neighbour search over a million 2048-d rows: galaxy_jax.neighbours against NumPy.

Writes bench/results/neighbours_throughput.json. The database is N synthetic float32 rows of
D columns (seeded normal), written once to a .npy file under --tmp and streamed from disk as
`neighbours` mode streams features.npy (galaxy_jax.data.vectors.DiskRows). Each run times
  galaxy_jax   neighbours.search(queries, rows, k): jitted chunk products + running top-k;
  numpy        the same chunks through NumPy's BLAS product and np.argpartition (the peer),
on the same queries, interleaved, and checks that both return the same neighbours.

Run:
  python bench/neighbours_throughput.py --runs 3            # 1,000,000 x 2048, 64 queries
  python bench/neighbours_throughput.py --n 100000 --runs 3  # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402

from galaxy_jax import neighbours  # noqa: E402
from galaxy_jax.atomic import write_json  # noqa: E402
from galaxy_jax.data.vectors import DiskRows  # noqa: E402


def make_rows(path: str, n: int, d: int, chunk: int = 65536) -> None:
    if os.path.isfile(path) and DiskRows(path).shape == (n, d):
        return
    out = np.lib.format.open_memmap(path + ".tmp.npy", "w+", np.float32, (n, d))
    for lo in range(0, n, chunk):
        rng = np.random.default_rng(lo)
        out[lo : lo + chunk] = rng.standard_normal((min(chunk, n - lo), d), np.float32)
    out.flush()
    del out
    os.replace(path + ".tmp.npy", path)


def numpy_search(q, rows, k, chunk):
    """Cosine top-k by NumPy: the peer."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    best_d = np.full((len(q), 0), np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for lo in range(0, len(rows), chunk):
        x = np.asarray(rows[lo : lo + chunk], np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        d = 1.0 - qn @ x.T
        part = np.argpartition(d, min(k, d.shape[1] - 1), axis=1)[:, :k]
        all_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], 1)
        all_i = np.concatenate([best_i, part + lo], 1)
        order = np.lexsort((all_i, all_d), axis=1)[:, :k]
        best_d, best_i = np.take_along_axis(all_d, order, 1), np.take_along_axis(all_i, order, 1)
    return best_d, best_i


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--chunk", type=int, default=65536)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--tmp", default="/tmp/galaxy_jax_bench")
    p.add_argument(
        "--out", default=os.path.join(_common.ROOT, "bench/results/neighbours_throughput.json")
    )
    a = p.parse_args()
    os.makedirs(a.tmp, exist_ok=True)
    path = os.path.join(a.tmp, f"rows_{a.n}x{a.d}.npy")
    t0 = time.time()
    make_rows(path, a.n, a.d)
    print(f"database {path} ready in {time.time() - t0:.0f} s ({a.n * a.d * 4 / 2**30:.2f} GiB)")
    rows = DiskRows(path)
    q = np.random.default_rng(123).standard_normal((a.queries, a.d), np.float32)
    neighbours.search(q, rows, a.k, chunk=a.chunk, progress=False)  # compile
    times = {"galaxy_jax": [], "numpy": []}
    agree = True
    for _ in range(a.runs):
        t = time.time()
        _, ig = neighbours.search(q, rows, a.k, chunk=a.chunk, progress=False)
        times["galaxy_jax"].append(time.time() - t)
        t = time.time()
        _, inp = numpy_search(q, rows, a.k, a.chunk)
        times["numpy"].append(time.time() - t)
        agree &= bool((ig == inp).all())
    med = {k: float(np.median(v)) for k, v in times.items()}
    result = {
        "n": a.n,
        "d": a.d,
        "queries": a.queries,
        "k": a.k,
        "chunk": a.chunk,
        "metric": "cosine",
        "runs": a.runs,
        "seconds": times,
        "median_s": med,
        "rows_per_s": {k: a.n / v for k, v in med.items()},
        "speedup_vs_numpy": med["numpy"] / med["galaxy_jax"],
        "same_neighbours": agree,
        "machine": _common.machine(),
        "loadavg": _common.loadavg(),
        "command": "python bench/neighbours_throughput.py " + " ".join(sys.argv[1:]),
    }
    write_json(a.out, result)
    print(json.dumps({k: result[k] for k in ("median_s", "rows_per_s", "speedup_vs_numpy")}))


if __name__ == "__main__":
    main()
