"""Issue 17, item 3: which normalisation of the ImageNet features clusters best (k-means).

On the cached feature sets of bench/imagenet_table.py, for each normalisation: k-means with 2
clusters (Hungarian; accuracy and balanced accuracy) and with 10 clusters (dominant label),
n_init 10, seeds as given. Normalisations:
  raw         the features as extracted (k-means is blind to the DEC paper's global unit-power
              scale, so this is also `data.normalize=unit_power`)
  l2          each row to unit norm
  sqrt_l2     each row square-rooted, then to unit norm (`data.normalize=sqrt_l2`)
  pca<d>w     sqrt_l2, then PCA to d dimensions, whitened, then to unit norm (not kept: worse)
Writes bench/results/feature_normalisation.json and prints a markdown table.
  python bench/feature_normalisation.py --seeds=0,1,2
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys

import numpy as np
from _common import ROOT, balanced_acc_hungarian, seed_stats  # bench/

from galaxy_jax import metrics
from galaxy_jax.atomic import write_json
from galaxy_jax.data.vectors import sqrt_l2_rows

W = "workdirs/imagenet_table/features"
SETS = {
    "sample_128": f"{W}/sample_128",
    "sample_128_tta": f"{W}/sample_128_tta",
    "sdss_es_128": f"{W}/sdss_128_sdss_es",
    "sdss_es_128_tta": f"{W}/sdss_128_tta_sdss_es",
}


def _l2(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def _pca_whiten(d):
    def f(x):
        from sklearn.decomposition import PCA

        return _l2(PCA(d, whiten=True, random_state=0).fit_transform(_l2(sqrt_l2_rows(x.copy()))))

    return f


NORMS = {
    "raw": lambda x: x,
    "l2": _l2,
    "sqrt_l2": lambda x: sqrt_l2_rows(x.copy()),
    "pca32w": _pca_whiten(32),
    "pca64w": _pca_whiten(64),
    "pca256w": _pca_whiten(256),
}


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--out", default="bench/results/feature_normalisation.json")
    a = p.parse_args()
    from sklearn.cluster import KMeans

    seeds = [int(s) for s in a.seeds.split(",")]
    table = {}
    for name in a.sets.split(","):
        path = os.path.join(ROOT, SETS[name])
        if not os.path.isfile(os.path.join(path, "features.npy")):
            print(f"skip {name}: no features (run bench/imagenet_table.py first)")
            continue
        x = np.load(os.path.join(path, "features.npy")).astype(np.float32)
        y = np.load(os.path.join(path, "labels.npy"))
        for norm, fn in NORMS.items():
            z = fn(x)
            row = {}
            for k in (2, 10):
                scores = []
                for seed in seeds:
                    pred = KMeans(k, n_init=10, random_state=seed).fit_predict(z)
                    m = metrics.all_metrics(y, pred)
                    if k == 2:
                        scores.append((m["acc"], balanced_acc_hungarian(m["contingency"])))
                    else:
                        scores.append((m["acc_dominant"], m["balanced_acc_dominant"]))
                row[f"kmeans_{k}"] = {
                    "acc": seed_stats([s for s, _ in scores]),
                    "balanced_acc": seed_stats([b for _, b in scores]),
                }
            table.setdefault(name, {})[norm] = row
            print(
                f"| {name} | {norm} | "
                + " | ".join(
                    f"{r['acc']['mean']:.3f} / {r['balanced_acc']['mean']:.3f}"
                    for r in row.values()
                )
                + " |",
                flush=True,
            )
    write_json(
        os.path.join(ROOT, a.out),
        {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
            "command": shlex.join(["python", "bench/feature_normalisation.py", *sys.argv[1:]]),
            "seeds": seeds,
            "table": table,
        },
    )
    print("wrote", a.out)


if __name__ == "__main__":
    main()
