"""Feature sources on the real sample (issue 8): pixels, morphology, SSL, SSL rotation-averaged.

For each feature set of the 2,000 real Kaggle images (../shared/data/galaxy_zoo_kaggle_sample;
1,000 "spirals" / 1,000 "non_spirals" by a third party's vote cut, PROVENANCE.md), over seeds:
  - k-means on the features (`configs/galaxy_sample.py:kmeans_xception`, any features dir),
  - SAE + DEC (`configs/galaxy_sample.py:dec_xception`): k-means on the SAE embedding and DEC,
scored by accuracy (Hungarian), balanced accuracy (mean per-class recall under the same map) and
NMI; and a supervised linear probe as the ceiling: standardised logistic regression, C chosen by
5-fold CV on the sample's train folder (1,400), scored on its validation folder (600).

The feature sets are made first, once each, by the commands in FEATURES (the SSL encoder is
`python main.py --config=configs/ssl.py:sample --workdir=workdirs/ssl_sample`, ~28 min on the
shared 2-core CPU; this script does not train it). Finished runs are skipped, so a re-run only
re-reads results. Writes bench/results/features_table.json and prints a markdown table.

  python bench/features_table.py --seeds=0,1,2,3,4
  python bench/features_table.py --seeds=0 --sets=morphology      # one set, one seed
  python bench/features_table.py --sets=morphology --variants=idec,dec_k4 \
      --out=bench/results/features_table_variants.json         # DEC variants on one set
Variants: idec = DEC keeping the reconstruction loss (gamma 1); dec_k4 = 4 clusters, scored by
dominant label (each cluster -> its majority class), as the paper's "more clusters than classes".
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time

import numpy as np
from _common import ROOT, balanced_acc_hungarian, run_once, seed_stats, wall_seconds  # bench/

SAMPLE = os.path.join(ROOT, "..", "shared", "data", "galaxy_zoo_kaggle_sample")
WORKDIRS = "workdirs/galaxy_sample"
SSL_EXTRACT = (
    "--config=configs/extract.py",
    "--config.weights=workdirs/ssl_sample/encoder.npz",
    "--config.data.name=folder",
    "--config.data.image_size=72",
)
# name: (features dir, command that makes it, description)
FEATURES = {
    "pixels": (
        f"{WORKDIRS}/pixels64",
        ("--config=configs/galaxy_sample.py:pixels_extract",),
        "64x64 grayscale pixels (crop 208), 4,096-d",
    ),
    "morphology": (
        f"{WORKDIRS}/morphology",
        ("--config=configs/morphology.py:sample",),
        "statmorph CAS, Gini, M20, ellipticity, Sersic n (crop 212, block-averaged by 2), z-scored",
    ),
    "ssl": (
        "workdirs/ssl_sample_features",
        SSL_EXTRACT,
        "SimCLR Xception (width 0.25, 2 middle blocks, 72 px, 200 steps), 512-d",
    ),
    "ssl_tta": (
        "workdirs/ssl_sample_features_tta",
        (*SSL_EXTRACT, "--config.tta=True"),
        "the same SSL encoder, averaged over the 8 rotations/flips",
    ),
}
# The pixel rows are bench/galaxy_sample.py's runs (same configs, same workdirs).
CLUSTER_WORKDIR = {
    ("pixels", "kmeans"): f"{WORKDIRS}/kmeans_pixels",
    ("pixels", "dec"): f"{WORKDIRS}/dec_pixels",
}
CLUSTER_VARIANT = {"kmeans": "kmeans_xception", "dec": "dec_xception"}
# (row method, results.json metrics key, run)
METHODS = (
    ("k-means", "kmeans_input", "kmeans"),
    ("k-means on SAE embedding", "kmeans_embedding", "dec"),
    ("DEC", "dec", "dec"),
)
# name: (extra config overrides of the dec run, how it is scored)
VARIANTS = {
    "idec": (("--config.dec.gamma=1.0",), "hungarian"),
    "dec_k4": (("--config.dec.n_clusters=4",), "dominant"),
}
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def linear_probe(features, labels, train):
    """Standardised logistic regression, C by 5-fold CV on `train` rows, scored on the rest."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    search = GridSearchCV(pipe, {"logisticregression__C": list(C_GRID)}, cv=5)
    t0 = time.time()
    search.fit(features[train], labels[train])
    test = ~train
    pred = search.predict(features[test])
    score = search.predict_proba(features[test])[:, 1]
    return {
        "C": float(search.best_params_["logisticregression__C"]),
        "cv_accuracy": float(search.best_score_),
        "test_accuracy": float(np.mean(pred == labels[test])),
        "test_balanced_accuracy": float(balanced_accuracy_score(labels[test], pred)),
        "test_roc_auc": float(roc_auc_score(labels[test], score)),
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "seconds": round(time.time() - t0, 1),
    }


def _train_mask(ids):
    split = {}
    with open(os.path.join(SAMPLE, "labels.csv")) as f:
        header = f.readline().strip().split(",")
        i_id, i_split = header.index("GalaxyID"), header.index("split")
        for line in f:
            cells = line.strip().split(",")
            split[cells[i_id]] = cells[i_split]
    return np.array([split[str(i)] == "train" for i in ids])


def _score(metrics, scoring):
    """(accuracy, balanced accuracy) of one run's metrics under `scoring`."""
    if scoring == "dominant":
        return metrics["acc_dominant"], metrics["balanced_acc_dominant"]
    return metrics["acc"], balanced_acc_hungarian(metrics["contingency"])


def _run(args, workdir, done_file):
    """`python main.py ARGS --workdir=WORKDIR` unless WORKDIR/done_file exists; returns the
    command line."""
    cmd = ["python", "main.py", *args, f"--workdir={workdir}"]
    run_once(cmd, os.path.join(workdir, done_file))
    return shlex.join(cmd)


def feature_set(name, seeds, variants=()):
    path, make_args, description = FEATURES[name]
    make_cmd = _run(make_args, path, "features.npy")
    with open(os.path.join(ROOT, path, "features_meta.json")) as f:
        meta = json.load(f)
    features = np.load(os.path.join(ROOT, path, "features.npy")).astype(np.float64)
    labels = np.load(os.path.join(ROOT, path, "labels.npy"))
    ids = np.load(os.path.join(ROOT, path, "ids.npy"))
    out = {
        "description": description,
        "features": path,
        "command": make_cmd,
        "feature_dim": int(features.shape[1]),
        "seconds_to_make": meta.get("seconds"),
        "rows": {},
        "commands": {},
        "wall_s": {},
    }
    if name == "morphology":
        out["measured_ok"] = meta.get("num_ok")
        out["flagged"] = meta.get("num_failed")
    results = {}
    for run in ("kmeans", "dec", *variants):
        base = CLUSTER_WORKDIR.get((name, run), f"{WORKDIRS}/features_table/{name}/{run}")
        results[run] = []
        for seed in seeds:
            args = (
                f"--config=configs/galaxy_sample.py:{CLUSTER_VARIANT.get(run, 'dec_xception')}",
            )
            if (name, run) in CLUSTER_WORKDIR:
                args = (f"--config=configs/galaxy_sample.py:{run}_pixels",)
            else:
                args += (f"--config.data.path={path}", *VARIANTS.get(run, ((), None))[0])
            workdir = f"{base}/seed{seed}"
            cmd = _run((*args, f"--config.seed={seed}"), workdir, "results.json")
            out["commands"].setdefault(run, []).append(cmd)
            with open(os.path.join(ROOT, workdir, "results.json")) as f:
                results[run].append(json.load(f))
        out["wall_s"][run] = seed_stats([wall_seconds(r) for r in results[run]])
    methods = [*METHODS, *((f"{v} ({VARIANTS[v][1]})", "dec", v) for v in variants)]
    for method, key, run in methods:
        scoring = VARIANTS[run][1] if run in VARIANTS else "hungarian"
        per_seed = [_score(r["metrics"][key], scoring) for r in results[run]]
        out["rows"][method] = {
            "acc": seed_stats([a for a, _ in per_seed]),
            "balanced_acc": seed_stats([b for _, b in per_seed]),
            "nmi": seed_stats([r["metrics"][key]["nmi"] for r in results[run]]),
        }
    out["linear_probe"] = linear_probe(features, labels, _train_mask(ids))
    return out


def _print_table(table):
    print("| features | method | accuracy | balanced acc. | NMI |")
    print("|---|---|---|---|---|")
    for name, s in table.items():
        for method, m in s["rows"].items():
            acc, bal, nmi = m["acc"], m["balanced_acc"], m["nmi"]
            print(
                f"| {name} | {method} | {acc['mean']:.3f} ± {acc['std']:.3f} | "
                f"{bal['mean']:.3f} ± {bal['std']:.3f} | {nmi['mean']:.3f} ± {nmi['std']:.3f} |"
            )
        p = s["linear_probe"]
        print(
            f"| {name} | linear probe (test) | {p['test_accuracy']:.3f} | "
            f"{p['test_balanced_accuracy']:.3f} | AUC {p['test_roc_auc']:.3f} |"
        )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument(
        "--sets", default=",".join(FEATURES), help=f"comma list of {list(FEATURES)}"
    )
    parser.add_argument("--variants", default="", help=f"comma list of {list(VARIANTS)}")
    parser.add_argument("--out", default="bench/results/features_table.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sets = [s for s in args.sets.split(",") if s]
    for s in sets:
        if s not in FEATURES:
            parser.error(f"unknown feature set {s!r}; choose from {list(FEATURES)}")
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; choose from {list(VARIANTS)}")
    table = {name: feature_set(name, seeds, variants) for name in sets}
    _print_table(table)
    out = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "note": "wall times measured while other jobs shared the CPU: upper bounds",
        "command": shlex.join(["python", "bench/features_table.py", *sys.argv[1:]]),
        "seeds": seeds,
        "scoring": "accuracy and balanced accuracy under the Hungarian cluster -> class map "
        "(dec_k4: under the dominant-label map)",
        "sets": table,
    }
    path = os.path.join(ROOT, args.out)
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
    os.replace(path + ".tmp", path)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
