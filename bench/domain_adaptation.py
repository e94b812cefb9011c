"""Issue 17, item 6: do features adapted from ImageNet cluster better than the frozen ones?

Per set, one `adapt` run with optim.steps=0 (ImageNet's exit flow on the cached views: the
frozen baseline; it builds the view cache), then one adapted run per seed reading that cache
(configs/adapt.py: the exit flow trained contrastively on pairs of the 8 cached dihedral views).
Each features dir (frozen, and each seed's adapted one) is then clustered with the same seed by
bench/beat_anchors.py's methods, and probed (bench/imagenet_table.py's linear probe):
  kmeans_2      k-means, 2 clusters, data.normalize=sqrt_l2, Hungarian
  kmeans_10     k-means, 10 clusters, by dominant label
  spectral_2    spectral clustering on the 10-nearest-neighbour graph, 2 clusters, Hungarian
  spectral_10   the same, 10 clusters, by dominant label
  dec_2_beta0   SAE + DEC with p ~ q^2 (the best 2-cluster method of beat_anchors.json)
Sets (128 px):
  sdss_es   SDSS NGC/IC: the cache and the adaptation use all 3,898 galaxies (the training
            never reads a label); the scores are on the elliptical vs spiral subset (687 / 2,125)
  sample    the 2,000 Kaggle sample galaxies (crop 208)
Costs: the cache (views_meta.json), the training per seed, the feature pass. Results:
bench/results/domain_adaptation.json (written after every set; finished runs are skipped).
  python bench/domain_adaptation.py --seeds=0,1,2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys

import numpy as np
from _common import ROOT, run_once, seed_stats, subset_features, wall_seconds  # bench/
from beat_anchors import METHODS, _score, markdown
from imagenet_table import SDSS_CATALOG, SDSS_DATA, linear_probe, write_sdss_catalog

from galaxy_jax.atomic import write_json

OUT = FROZEN = "workdirs/adapt"
SDSS_ADAPT = ("--config=configs/adapt.py", *SDSS_DATA[1:])  # SDSS_DATA[0] is extract's config
SETS = {  # name: (adapt args, classes kept for scoring or None)
    "sdss_es": (SDSS_ADAPT, ("elliptical", "spiral")),
    "sample": (("--config=configs/adapt.py:sample",), None),
}
CLUSTERING = ("kmeans_2", "kmeans_10", "spectral_2", "spectral_10", "dec_2_beta0")


def _adapt(name, kind, seed, extra, steps):
    args, _ = SETS[name]
    # The frozen run (and its cache) stays in the default directory, whatever --workdirs says.
    workdir = f"{FROZEN if kind == 'frozen' else OUT}/{name}/{kind}"
    cmd = ["python", "main.py", *args, f"--config.seed={seed}", *extra, f"--workdir={workdir}"]
    run_once(cmd, os.path.join(workdir, "results.json"))
    with open(os.path.join(ROOT, workdir, "results.json")) as f:
        r = json.load(f)
    if r["config"]["optim"]["steps"] != steps:  # a finished run is skipped, never redone
        sys.exit(
            f"{workdir} was trained for {r['config']['optim']['steps']} steps, not {steps}: "
            "pass --workdirs=<another directory> for another number of steps"
        )
    return workdir, shlex.join(cmd), r


def _features_dir(name, workdir):
    classes = SETS[name][1]
    if classes is None:
        return workdir
    subset_features(os.path.join(ROOT, workdir), os.path.join(ROOT, workdir, "es"), classes)
    return f"{workdir}/es"


def _cluster(fdir, method, seed):
    args, key, scoring, *_ = METHODS[method]
    workdir = f"{fdir}/{method}/seed{seed}"  # the frozen dir is the same for every seed
    cmd = ["python", "main.py", *(a.format(classes=2) for a in args)]
    cmd += [f"--config.data.path={fdir}", f"--config.seed={seed}", f"--workdir={workdir}"]
    run_once(cmd, os.path.join(workdir, "results.json"))
    with open(os.path.join(ROOT, workdir, "results.json")) as f:
        r = json.load(f)
    return _score(r["metrics"][key], scoring), wall_seconds(r), shlex.join(cmd)


def _probe(fdir, seed):
    x = np.load(os.path.join(ROOT, fdir, "features.npy"))
    y = np.load(os.path.join(ROOT, fdir, "labels.npy"))
    p = linear_probe(x, y, seed=seed)
    return p["test_accuracy"], p["test_balanced_accuracy"]


def run_set(name, seeds, methods, steps):
    frozen_dir, frozen_cmd, frozen = _adapt(name, "frozen", 0, ["--config.optim.steps=0"], 0)
    views = frozen["views"]
    rows, commands = {}, {"frozen": frozen_cmd}
    costs = {
        "cache_s": views["seconds"],
        "cache_images_per_second": views["images_per_second"],
        "cache_bytes": int(np.prod(views["shape"])) * 2,
        "train_s": [],
        "train_views_per_second": [],
        "features_s": [],
    }
    dirs = {"frozen": [_features_dir(name, frozen_dir)] * len(seeds), "adapted": []}
    for seed in seeds:
        extra = [f"--config.views_from={frozen_dir}", f"--config.optim.steps={steps}"]
        workdir, cmd, r = _adapt(name, f"seed{seed}", seed, extra, steps)
        commands[f"adapted seed{seed}"] = cmd
        costs["train_s"].append(r["wall_s"].get("train"))
        costs["train_views_per_second"].append(r["wall_s"].get("train_images_per_second"))
        costs["features_s"].append(r["wall_s"].get("features"))
        dirs["adapted"].append(_features_dir(name, workdir))
    for kind, fdirs in dirs.items():
        probes = [_probe(fdirs[i], seed) for i, seed in enumerate(seeds)]
        rows[f"{kind} probe"] = {
            "scoring": "linear probe (30% test)",
            "acc": seed_stats([a for a, _ in probes]),
            "balanced_acc": seed_stats([b for _, b in probes]),
            "wall_s": seed_stats([0.0]),
        }
        for method in methods:
            out = [_cluster(fdirs[i], method, seed) for i, seed in enumerate(seeds)]
            commands[f"{kind} {method}"] = [c for _, _, c in out]
            rows[f"{kind} {method}"] = {
                "scoring": METHODS[method][2],
                "acc": seed_stats([s[0] for s, _, _ in out]),
                "balanced_acc": seed_stats([s[1] for s, _, _ in out]),
                "wall_s": seed_stats([w for _, w, _ in out]),
            }
        for row in [r for r in rows if r.startswith(kind)]:
            m = rows[row]
            print(
                f"{name:8s} {row:22s} acc {m['acc']['mean']:.3f} ± {m['acc']['std']:.3f}  "
                f"bal {m['balanced_acc']['mean']:.3f} ± {m['balanced_acc']['std']:.3f}",
                flush=True,
            )
    costs = {k: seed_stats(v) if isinstance(v, list) else v for k, v in costs.items()}
    return {"rows": rows, "commands": commands, "costs": costs}


def main():
    global OUT
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma list of {list(SETS)}")
    p.add_argument("--methods", default=",".join(CLUSTERING), help=f"comma list of {CLUSTERING}")
    p.add_argument("--steps", type=int, default=300, help="adaptation steps (configs/adapt.py)")
    p.add_argument("--workdirs", default=OUT, help="where the runs go (one per --steps value)")
    p.add_argument("--out", default="bench/results/domain_adaptation.json")
    a = p.parse_args()
    OUT = a.workdirs
    seeds = [int(s) for s in a.seeds.split(",")]
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {list(METHODS)}")
    path = os.path.join(ROOT, a.out)
    result = {"table": {}}
    if os.path.isfile(path):
        with open(path) as f:
            result = json.load(f)
    for name in [s for s in a.sets.split(",") if s]:
        if name not in SETS:
            p.error(f"unknown set {name!r}; choose from {list(SETS)}")
        if name == "sdss_es" and not os.path.isfile(os.path.join(ROOT, SDSS_CATALOG)):
            print(f"SDSS catalog: {write_sdss_catalog()} rows -> {SDSS_CATALOG}")
        result["table"][name] = run_set(name, seeds, methods, a.steps)
        result.update(
            date=datetime.date.today().isoformat(),
            machine=f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
            command=shlex.join(["python", "bench/domain_adaptation.py", *sys.argv[1:]]),
            seeds=seeds,
            steps=a.steps,
        )
        write_json(path, result)
    print("wrote", a.out)
    print(markdown({k: {"rows": v["rows"]} for k, v in result["table"].items()}))


if __name__ == "__main__":
    main()
