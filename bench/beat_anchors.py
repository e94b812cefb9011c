"""Issue 17: clustering variants on ImageNet Xception features against the anchors.

On the feature sets bench/imagenet_table.py extracts (run it first; `--extract_only` is enough):
  sample_128_tta   the 2,000 Kaggle sample galaxies, 128 px, averaged over the 8 rotations/flips
  sdss_es_128      SDSS NGC/IC, elliptical vs spiral (687 / 2,125), 128 px
  sdss_es_128_tta  the same, rotation-averaged
  sample_128_ttamax  the sample, the maximum over the 8 views per feature (extract tta_pool=max)
  sdss_4_128       SDSS NGC/IC, all four classes (E, S0, S, Irr): many-cluster methods only
Per set and seed, every method is one `python main.py` run (its command is in the JSON):
  kmeans_2_unit     k-means, 2 clusters, the DEC paper's unit-power scaling (the baseline)
  kmeans_2          k-means, 2 clusters, data.normalize=sqrt_l2 (all methods below use it)
  kmeans_10         k-means, 10 clusters, scored by dominant label
  kmeans_30         k-means, 30 clusters, by dominant label; `kmeans_30 merged` is the same run's
                    clusters merged into 2 (or 4) groups by size-weighted Ward on the centres
                    (dec.merge_to, no labels), scored one-to-one
  spectral_2        spectral clustering, 2 clusters: the graph of each galaxy's 10 nearest
                    neighbours (dec.init=spectral, mode kmeans)
  spectral_10       the same, 10 clusters, by dominant label
  dec_2             SAE + DEC (configs/galaxy_sample.py:dec_xception); the autoencoder of this
                    run is shared by the dec_*/n2d_* runs of the same seed (sae_from)
  dec_2_beta0.5     DEC with the softened target p ~ q^2 / f^0.5 (dec.target_power)
  dec_2_beta0       DEC with p ~ q^2 (no cluster-frequency normalisation)
  n2d_2             N2D: UMAP of the SAE embedding to 2-d, then a Gaussian mixture (mode pretrain,
                    dec.init=umap)
  dec_10            DEC, 10 clusters, by dominant label
  scan_2, scan_10   SCAN (configs/scan.py:sample, :sample_10): mined neighbours, 5 heads,
                    self-labelling; the `selflabel` result
Scores: accuracy and balanced accuracy (the mean per-class recall; Hungarian one-to-one for
2 clusters, dominant label for more). Results: bench/results/beat_anchors.json (written after
every set, so an interrupted run keeps what finished; finished runs are skipped on a re-run).
  python bench/beat_anchors.py --seeds=0,1,2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys

from _common import ROOT, balanced_acc_hungarian, run_once, seed_stats, wall_seconds  # bench/

from galaxy_jax.atomic import write_json

W = "workdirs/imagenet_table"
OUT = "workdirs/beat_anchors"
SETS = {  # name: (features dir, number of classes)
    "sample_128_tta": (f"{W}/features/sample_128_tta", 2),
    "sdss_es_128": (f"{W}/features/sdss_128_sdss_es", 2),
    "sdss_es_128_tta": (f"{W}/features/sdss_128_tta_sdss_es", 2),
    "sample_128_ttamax": (f"{W}/features/sample_128_ttamax", 2),
    "sdss_4_128": (f"{W}/features/sdss_128", 4),
}
DEC = "--config=configs/galaxy_sample.py:dec_xception"
KMEANS = "--config=configs/galaxy_sample.py:kmeans_xception"
SQRT = "--config.data.normalize=sqrt_l2"
SPECTRAL = "--config.dec.init=spectral"
# name: (args, results key, scoring, only on 2-class sets, shares dec_2's autoencoder)
METHODS = {
    "kmeans_2_unit": ((KMEANS,), "kmeans_input", "hungarian", True),
    "kmeans_2": ((KMEANS, SQRT), "kmeans_input", "hungarian", True),
    "kmeans_10": ((KMEANS, SQRT, "--config.dec.n_clusters=10"), "kmeans_input", "dominant"),
    "kmeans_30": (
        (KMEANS, SQRT, "--config.dec.n_clusters=30", "--config.dec.merge_to={classes}"),
        "kmeans_input",
        "dominant",
    ),
    "spectral_2": ((KMEANS, SQRT, SPECTRAL), "kmeans_input", "hungarian", True),
    "spectral_10": (
        (KMEANS, SQRT, SPECTRAL, "--config.dec.n_clusters=10"),
        "kmeans_input",
        "dominant",
    ),
    "dec_2": ((DEC, SQRT), "dec", "hungarian", True),
    "dec_2_beta0.5": ((DEC, SQRT, "--config.dec.target_power=0.5"), "dec", "hungarian", True),
    "dec_2_beta0": ((DEC, SQRT, "--config.dec.target_power=0.0"), "dec", "hungarian", True),
    "n2d_2": (
        (DEC, SQRT, "--config.mode=pretrain", "--config.dec.init=umap"),
        "kmeans_embedding",
        "hungarian",
        True,
    ),
    "dec_10": ((DEC, SQRT, "--config.dec.n_clusters=10"), "dec", "dominant"),
    "scan_2": (("--config=configs/scan.py:sample", SQRT), "selflabel", "hungarian", True),
    "scan_10": (("--config=configs/scan.py:sample_10", SQRT), "selflabel", "dominant"),
}
SHARED = ("dec_2_beta0.5", "dec_2_beta0", "n2d_2", "dec_10")


def _spec(name):
    args, key, scoring, *rest = METHODS[name]
    two_only = rest[0] if rest else False
    return args, key, scoring, two_only


def _score(m, scoring):
    if scoring == "dominant":
        return m["acc_dominant"], m["balanced_acc_dominant"]
    return m["acc"], balanced_acc_hungarian(m["contingency"])


def run_set(name, seeds, methods):
    fdir, classes = SETS[name]
    if not os.path.isfile(os.path.join(ROOT, fdir, "features.npy")):
        print(f"skip {name}: no {fdir}/features.npy (run bench/imagenet_table.py first)")
        return None
    rows, commands = {}, {}
    for method in methods:
        args, key, scoring, two_only = _spec(method)
        if two_only and classes != 2:
            continue
        per, walls = {"": [], " merged": []}, []
        for seed in seeds:
            workdir = f"{OUT}/{name}/{method}/seed{seed}"
            cmd = ["python", "main.py", *(a.format(classes=classes) for a in args)]
            cmd += [f"--config.data.path={fdir}", f"--config.seed={seed}"]
            if method in SHARED and classes == 2:  # dec_2 (its autoencoder) runs on 2 classes
                cmd.append(f"--config.sae_from={OUT}/{name}/dec_2/seed{seed}")
            cmd.append(f"--workdir={workdir}")
            run_once(cmd, os.path.join(workdir, "results.json"))
            commands.setdefault(method, []).append(shlex.join(cmd))
            with open(os.path.join(ROOT, workdir, "results.json")) as f:
                r = json.load(f)
            per[""].append(_score(r["metrics"][key], scoring))
            if f"{key}_merged" in r["metrics"]:
                per[" merged"].append(_score(r["metrics"][f"{key}_merged"], "hungarian"))
            walls.append(wall_seconds(r))
        for suffix, scores in per.items():
            if scores:
                rows[method + suffix] = {
                    "scoring": "hungarian" if suffix else scoring,
                    "acc": seed_stats([a for a, _ in scores]),
                    "balanced_acc": seed_stats([b for _, b in scores]),
                    "wall_s": seed_stats(walls),
                }
        m = rows[method]
        print(
            f"{name:16s} {method:16s} acc {m['acc']['mean']:.3f} ± {m['acc']['std']:.3f}  "
            f"bal {m['balanced_acc']['mean']:.3f} ± {m['balanced_acc']['std']:.3f}",
            flush=True,
        )
    return {"features": fdir, "rows": rows, "commands": commands}


def markdown(table) -> str:
    lines = ["| set | method | accuracy | balanced acc. | wall / run |", "|---|---|---|---|---|"]
    for name, t in table.items():
        for method, m in t["rows"].items():
            a, b = m["acc"], m["balanced_acc"]
            lines.append(
                f"| {name} | {method} | {a['mean']:.3f} ± {a['std']:.3f} | "
                f"{b['mean']:.3f} ± {b['std']:.3f} | {m['wall_s']['median']:.0f} s |"
            )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma list of {list(SETS)}")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {list(METHODS)}")
    p.add_argument("--out", default="bench/results/beat_anchors.json")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {list(METHODS)}")
        if m in SHARED and "dec_2" not in methods:
            methods.insert(0, "dec_2")  # the autoencoder it reads
    path = os.path.join(ROOT, a.out)
    result = {"table": {}}
    if os.path.isfile(path):
        with open(path) as f:
            result = json.load(f)
    for name in [s for s in a.sets.split(",") if s]:
        if name not in SETS:
            p.error(f"unknown set {name!r}; choose from {list(SETS)}")
        out = run_set(name, seeds, methods)
        if out is None:
            continue
        old = result["table"].get(name, {"rows": {}, "commands": {}})
        old["rows"].update(out["rows"])
        old["commands"].update(out["commands"])
        old["features"] = out["features"]
        result["table"][name] = old
        result.update(
            date=datetime.date.today().isoformat(),
            machine=f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
            command=shlex.join(["python", "bench/beat_anchors.py", *sys.argv[1:]]),
            seeds=seeds,
        )
        write_json(path, result)
    print("wrote", a.out)
    print(markdown(result["table"]))


if __name__ == "__main__":
    main()
