"""Streaming DEC at scale: SAE + DEC end to end on synthetic 2048-d features, N = 100k .. 1M.

For each N it writes a features directory (seeded, in blocks, never whole in memory) under
--data_root, then runs `python main.py --config=configs/galaxy_dec.py` on it as a child process
with a fixed amount of work PER SAMPLE (so time per sample should not grow with N):
  SAE fine-tuning: --epochs passes over the data at batch 256 (Adam 1e-3);
  DEC: --epochs passes at batch 256, target P recomputed --updates_per_epoch times per pass
       (each a full chunked pass over the inputs), tol 0 (no early stop);
  k-means init: fitted on dec.init_sample = 100,000 rows (the default), all rows assigned.
It records the child's wall time, its peak RSS (os.wait4), the compile times and phase times
from results.json, and the accuracy against the generating labels, then writes
bench/results/scaling.json.

  python bench/scaling.py --sizes=100000,300000,1000000
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM, K, LATENT = 2048, 2, 16
BLOCK = 50_000  # rows generated and written at a time


def write_features(path: str, n: int, seed: int = 0) -> None:
    """features.npy [n, 2048] float32 (+ labels.npy, ids.npy): two classes of non-negative,
    pooled-CNN-like vectors, relu(latent @ W + noise), written block by block."""
    done = os.path.join(path, "DONE")
    if os.path.isfile(done):
        return
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1 / np.sqrt(LATENT), (LATENT, DIM)).astype(np.float32)
    centres = rng.normal(0, 1.0, (K, LATENT)).astype(np.float32)
    labels = np.empty(n, np.int32)
    with open(os.path.join(path, "features.npy"), "wb") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n, DIM)}
        np.lib.format.write_array_header_1_0(f, header)
        for lo in range(0, n, BLOCK):
            b = np.random.default_rng([seed, lo]).normal
            m = min(BLOCK, n - lo)
            y = (b(size=m) > 0).astype(np.int32)
            latent = centres[y] + b(0, 1.0, (m, LATENT)).astype(np.float32)
            x = np.maximum(latent @ w + b(0, 0.3, (m, DIM)).astype(np.float32), 0)
            f.write(np.ascontiguousarray(x, np.float32).tobytes())
            labels[lo : lo + m] = y
    np.save(os.path.join(path, "labels.npy"), labels)
    np.save(os.path.join(path, "ids.npy"), np.arange(n).astype(str))
    open(done, "w").close()


def command(n: int, data: str, workdir: str, epochs: float, updates: int) -> list[str]:
    steps = max(1, int(round(epochs * n / 256)))
    interval = max(1, steps // max(1, int(round(updates * epochs))))
    return [
        sys.executable,
        "main.py",
        "--config=configs/galaxy_dec.py",
        f"--workdir={workdir}",
        f"--config.data.path={data}",
        f"--config.sae.finetune_steps={steps}",
        f"--config.dec.maxiter={steps}",
        f"--config.dec.update_interval={interval}",
        "--config.dec.tol=0.0",
        f"--config.checkpoint_every={max(1000, steps // 4)}",
        "--config.log_every=500",
    ]


def run_one(cmd: list[str]) -> dict:
    """Runs cmd from the repo root; returns wall time and the child's peak RSS."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    err = proc.stderr.read().decode()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"wall_s": wall, "peak_rss_gib": usage.ru_maxrss / 2**20}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--data_root", default=os.path.join(ROOT, "workdirs", "scaling_data"))
    ap.add_argument("--work_root", default=os.path.join(ROOT, "workdirs", "scaling"))
    ap.add_argument("--epochs", type=float, default=1.0, help="SAE and DEC passes per sample")
    ap.add_argument("--updates_per_epoch", type=int, default=2, help="target updates per pass")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "scaling.json"))
    args = ap.parse_args()

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        data = os.path.join(args.data_root, f"n{n}")
        t0 = time.time()
        write_features(data, n)
        gen_s = time.time() - t0
        workdir = os.path.join(args.work_root, f"n{n}")
        if os.path.isdir(workdir):
            subprocess.run(["rm", "-rf", workdir], check=True)
        cmd = command(n, data, workdir, args.epochs, args.updates_per_epoch)
        load = os.getloadavg()[0]
        r = run_one(cmd)
        with open(os.path.join(workdir, "results.json")) as f:
            res = json.load(f)
        wall = res["wall_s"]
        row = {
            "n": n,
            "features_gib": n * DIM * 4 / 2**30,
            "generate_s": gen_s,
            **r,
            "us_per_sample": 1e6 * r["wall_s"] / n,
            "compile_s": sum(v for k, v in wall.items() if k.endswith("/compile")),
            "phase_s": wall,
            "dec_acc": res["metrics"]["dec"]["acc"],
            "kmeans_init_acc": res["metrics"]["kmeans_embedding"]["acc"],
            "load_avg_1min_at_start": load,
            "load_avg_1min_at_end": os.getloadavg()[0],
            "command": " ".join(cmd[1:]),
        }
        rows.append(row)
        print(
            f"N={n:>9,}  wall {r['wall_s']:8.1f} s  {row['us_per_sample']:7.1f} us/sample  "
            f"peak RSS {r['peak_rss_gib']:.2f} GiB  compile {row['compile_s']:.1f} s  "
            f"DEC acc {row['dec_acc']:.3f}",
            flush=True,
        )
        _write(args, rows)


def _write(args, rows):
    """bench/results/scaling.json, rewritten after every size (a long sweep keeps its rows)."""
    base = rows[0]["us_per_sample"]
    for row in rows:
        row["time_per_sample_vs_smallest"] = row["us_per_sample"] / base
    out = {
        "benchmark": "streaming SAE + DEC end to end on synthetic 2048-d features",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.node()}",
        "command": "python bench/scaling.py " + " ".join(sys.argv[1:]),
        "epochs": args.epochs,
        "updates_per_epoch": args.updates_per_epoch,
        "rows": rows,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
