"""The MNIST table (docs/results.md): k-means on pixels, on the SAE embedding, and DEC, by seed.

Runs `python main.py` once per (config, seed) into workdirs/<config>/seed<N> (a finished run is
skipped, an interrupted one resumes), then writes bench/results/mnist_table.json and prints a
markdown table of mean +- std.

  python bench/mnist_table.py --seeds=0,1,2,3,4 --configs=mnist_kmeans,mnist_dec
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
# (config, metrics key in results.json, table row)
ROWS = {
    "mnist_kmeans": [("kmeans_input", "k-means on pixels")],
    "mnist_dec": [
        ("kmeans_embedding", "k-means on SAE embedding (Adam recipe)"),
        ("dec", "DEC (Adam recipe)"),
    ],
    "mnist_dec_paper": [
        ("kmeans_embedding", "k-means on SAE embedding (paper recipe)"),
        ("dec", "DEC (paper recipe)"),
    ],
}


def run(config, seed, workdir_root):
    workdir = os.path.join(workdir_root, config, f"seed{seed}")
    results = os.path.join(workdir, "results.json")
    if not os.path.isfile(results):
        cmd = [
            sys.executable,
            "main.py",
            f"--config=configs/{config}.py",
            f"--workdir={workdir}",
            f"--config.seed={seed}",
        ]
        print("$", " ".join(cmd[1:]), flush=True)
        t0 = time.time()
        subprocess.run(cmd, cwd=ROOT, check=True)
        print(f"  done in {time.time() - t0:.0f} s", flush=True)
    with open(results) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--configs", default="mnist_kmeans,mnist_dec")
    parser.add_argument("--workdir_root", default=os.path.join(ROOT, "workdirs"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "mnist_table.json"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    table = []
    for config in args.configs.split(","):
        runs = [run(config, s, args.workdir_root) for s in seeds]
        for key, name in ROWS[config]:
            row = {"method": name, "config": config, "seeds": seeds}
            for m in ("acc", "nmi", "ari"):
                vals = [r["metrics"][key][m] for r in runs]
                row[m] = {
                    "mean": float(np.mean(vals)),
                    "std": float(np.std(vals)),
                    "per_seed": vals,
                }
            row["wall_s"] = {
                "mean": float(
                    np.mean(
                        [r["wall_s"]["total" if "total" in r["wall_s"] else "kmeans"] for r in runs]
                    )
                ),
                "per_seed": [r["wall_s"] for r in runs],
            }
            table.append(row)
    out = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "rows": table}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print("| method | ACC | NMI | ARI | wall time per run |\n|---|---|---|---|---|")
    for r in table:
        cells = " | ".join(f"{r[m]['mean']:.3f} ± {r[m]['std']:.3f}" for m in ("acc", "nmi", "ari"))
        print(f"| {r['method']} | {cells} | {r['wall_s']['mean'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
