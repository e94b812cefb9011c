"""Issue 17 on MNIST (all 70,000 digits, 10 clusters): N2D and DEC from N2D, on one autoencoder.

Per seed, one autoencoder (configs/mnist_dec.py's Adam recipe, mode pretrain: k-means on its
embedding) that the other runs of the seed read through `sae_from`, never retraining it:
  sae       workdirs/mnist_sae/seed<N>       k-means on the SAE embedding (the DEC paper's init)
  n2d       workdirs/mnist_n2d/seed<N>       N2D: UMAP of the embedding to 10-d, then a Gaussian
                                             mixture (mode pretrain, dec.init=umap)
  dec_umap  workdirs/mnist_dec_umap/seed<N>  DEC started from the N2D clusters (dec.init=umap)
A finished run is skipped, an interrupted one resumes. Writes bench/results/mnist_variants.json
(accuracy, NMI, ARI per seed, wall time per run: the autoencoder's once, in `sae`) and prints
a markdown table. The plain DEC row is bench/mnist_table.py's (its own autoencoders).
  python bench/mnist_variants.py --seeds=0,1,2,3,4
  python bench/mnist_variants.py --seeds=0 --runs=dec_umap     # one row, other rows kept
The N2D row of a seed whose DEC-from-N2D run exists (and whose own n2d run does not) is read
from that run's initialisation, which is the same computation: run dec_umap before n2d.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys

from _common import ROOT, run_once, seed_stats  # bench/

from galaxy_jax.atomic import write_json

BASE = ("python", "main.py", "--config=configs/mnist_dec.py")
# name: (workdir root, extra args, metrics key, reads the seed's autoencoder)
RUNS = {
    "sae": ("workdirs/mnist_sae", ("--config.mode=pretrain",), "kmeans_embedding", False),
    "n2d": (
        "workdirs/mnist_n2d",
        ("--config.mode=pretrain", "--config.dec.init=umap"),
        "kmeans_embedding",
        True,
    ),
    "dec_umap": ("workdirs/mnist_dec_umap", ("--config.dec.init=umap",), "dec", True),
}
LABELS = {
    "sae": "k-means on the SAE embedding",
    "n2d": "N2D (UMAP + GMM on the SAE embedding)",
    "dec_umap": "DEC from the N2D clusters",
}


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {list(RUNS)}")
    p.add_argument("--out", default="bench/results/mnist_variants.json")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    path = os.path.join(ROOT, a.out)
    old = {}
    if os.path.isfile(path):  # rows of other runs (and their seeds) are kept
        with open(path) as f:
            old = json.load(f)
    rows, commands = old.get("rows", {}), old.get("commands", {})
    for name in [r for r in a.runs.split(",") if r]:
        root, extra, key, shared = RUNS[name]
        commands[name] = []
        per = {"acc": [], "nmi": [], "ari": []}
        walls = []
        for seed in seeds:
            workdir = f"{root}/seed{seed}"
            cmd = [*BASE, *extra, f"--config.seed={seed}"]
            if shared:
                cmd.append(f"--config.sae_from={RUNS['sae'][0]}/seed{seed}")
            cmd.append(f"--workdir={workdir}")
            done = os.path.join(workdir, "results.json")
            # DEC from N2D starts from exactly N2D's clusters (same autoencoder, seed, UMAP and
            # mixture) and records them as its initialisation: the N2D row reads them there
            # rather than computing the UMAP a second time.
            dec_done = f"{RUNS['dec_umap'][0]}/seed{seed}/results.json"
            if name == "n2d" and not os.path.isfile(os.path.join(ROOT, done)):
                if os.path.isfile(os.path.join(ROOT, dec_done)):
                    done = dec_done
                    cmd = [*BASE, *RUNS["dec_umap"][1], *cmd[len(BASE) + len(extra) :]]
                    cmd[-1] = f"--workdir={RUNS['dec_umap'][0]}/seed{seed}"
            run_once(cmd, done)
            commands[name].append(shlex.join(cmd))
            with open(os.path.join(ROOT, done)) as f:
                r = json.load(f)
            for m in per:
                per[m].append(r["metrics"][key][m])
            w = r["wall_s"]  # older pretrain runs record their phases only (compile inside)
            if name == "n2d" and done == dec_done:  # the UMAP + mixture part of the DEC run
                walls.append(w["kmeans_init"] + w.get("sae/shared", 0.0))
                continue
            total = sum(v for k, v in w.items() if not k.endswith("/compile"))
            walls.append(w.get("total", total))
        rows[name] = {
            "method": LABELS[name],
            "seeds": seeds,
            **{m: seed_stats(v) for m, v in per.items()},
            "wall_s": seed_stats(walls),
        }
        print(
            f"{LABELS[name]:40s} acc {rows[name]['acc']['mean']:.4f} ± "
            f"{rows[name]['acc']['std']:.4f}  per seed {per['acc']}",
            flush=True,
        )
    write_json(
        path,
        {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
            "command": shlex.join(["python", "bench/mnist_variants.py", *sys.argv[1:]]),
            "rows": rows,
            "commands": commands,
        },
    )
    print("wrote", a.out)


if __name__ == "__main__":
    main()
