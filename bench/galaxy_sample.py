"""The real-sample table: k-means and DEC on pixels (and variants), supervised references.

The data: the 2,000 real Kaggle Galaxy Zoo images in ../shared/data/galaxy_zoo_kaggle_sample,
1,000 "spirals" / 1,000 "non_spirals" by a third party's cut (PROVENANCE.md; not elliptical vs
spiral). Each row is `python main.py --config=configs/galaxy_sample.py:VARIANT` run once per seed
into workdirs/galaxy_sample/<row>/seed<N> (a finished run is skipped, an interrupted one
resumes; a finished supervised run whose results.json holds another config than the variant's
now is an error, not a row); the features each row reads are extracted first, once. Writes
bench/results/galaxy_sample.json (per-seed numbers, mean, std, median, the commands, wall times;
the supervised rows also balanced accuracy and the confusion table of each seed) and prints a
markdown table of mean +- std. The rows of an existing JSON that this call does not run are
kept as they are (--fresh drops them).

  python bench/galaxy_sample.py --seeds=0,1,2,3,4                  # every row
  python bench/galaxy_sample.py --seeds=0,1,2,3,4 --rows=kmeans_pixels,dec_pixels
  python bench/galaxy_sample.py --rows=cnn_scratch --row_seeds=cnn_scratch=0  # fewer seeds
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import sys

import numpy as np
from _common import balanced_acc_hungarian, run_once, seed_stats, wall_seconds  # bench/

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = "configs/galaxy_sample.py"
WORKDIRS = "workdirs/galaxy_sample"

# Feature sets: name (= workdir under WORKDIRS) -> (extract variant, extra flags).
FEATURES = {
    "pixels64": ("pixels_extract", []),
    "pixels64_tta": ("pixels_tta_extract", []),
    "pixels64_tta_std": ("pixels_tta_std_extract", []),
    # No ImageNet weights can be downloaded here: a seeded, randomly initialised Xception.
    "xception128_random": ("xception_extract", ["--config.weights=random"]),
}

# Row name (= workdir under WORKDIRS) -> variant, features, extra flags, [(metrics key, label)].
ROWS = {
    "kmeans_pixels": dict(
        variant="kmeans_pixels",
        features="pixels64",
        report=[("kmeans_input", "(a) k-means on pixels (64x64 gray)")],
    ),
    "dec_pixels": dict(
        variant="dec_pixels",
        features="pixels64",
        report=[
            ("kmeans_embedding", "k-means on the SAE embedding of the pixels"),
            ("dec", "(b) DEC on pixels (SAE 4096-500-500-2000-10)"),
        ],
    ),
    "kmeans_pixels_tta": dict(
        variant="kmeans_pixels_tta",
        features="pixels64_tta",
        report=[("kmeans_input", "(c) k-means on rotation-averaged pixels")],
    ),
    "dec_pixels_tta": dict(
        variant="dec_pixels_tta",
        features="pixels64_tta",
        report=[
            ("kmeans_embedding", "(c) k-means on the SAE embedding, rotation-averaged pixels"),
            ("dec", "(c) DEC on rotation-averaged pixels"),
        ],
    ),
    "kmeans_pixels_tta_std": dict(
        variant="kmeans_pixels_tta_std",
        features="pixels64_tta_std",
        report=[("kmeans_input", "(c) k-means on rotation-averaged, per-image z-scored pixels")],
    ),
    "dec_pixels_tta_std": dict(
        variant="dec_pixels_tta_std",
        features="pixels64_tta_std",
        report=[
            ("kmeans_embedding", "(c) k-means on the SAE embedding, rot.-avg. z-scored pixels"),
            ("dec", "(c) DEC on rotation-averaged, per-image z-scored pixels"),
        ],
    ),
    "idec_pixels_tta": dict(
        variant="idec_pixels_tta",
        features="pixels64_tta",
        report=[("dec", "(c) IDEC (gamma 1) on rotation-averaged pixels")],
    ),
    "dec_pixels_tta_4": dict(
        variant="dec_pixels_tta_4",
        features="pixels64_tta",
        report=[("dec", "(c) DEC, 4 clusters by dominant label, rotation-averaged pixels")],
        dominant=True,  # more clusters than classes: score by each cluster's majority label
    ),
    "kmeans_xception_random": dict(
        variant="kmeans_xception",
        features="xception128_random",
        extra=[f"--config.data.path={WORKDIRS}/xception128_random"],
        report=[("kmeans_input", "(c) k-means on RANDOM-weight Xception features (128 px)")],
    ),
    "dec_xception_random": dict(
        variant="dec_xception",
        features="xception128_random",
        extra=[f"--config.data.path={WORKDIRS}/xception128_random"],
        report=[("dec", "(c) DEC on RANDOM-weight Xception features (128 px)")],
    ),
    "ann_pixels": dict(
        variant="ann_pixels",
        features="pixels64",
        report=[("test", "(d) supervised ANN (512, 128) on pixels")],
    ),
    "cnn_scratch": dict(
        variant="cnn_scratch",
        features=None,
        report=[
            (
                "test",
                "(d) supervised CNN from scratch: narrow Xception (width 0.25, 2 middle blocks, "
                "0.73M parameters), 72 px RGB",
            )
        ],
    ),
}
DEFAULT_ROWS = (
    "kmeans_pixels,dec_pixels,ann_pixels,cnn_scratch,kmeans_pixels_tta,kmeans_pixels_tta_std,"
    "dec_pixels_tta_std,kmeans_xception_random"
)


def _cmd(variant, workdir, extra=(), seed=None):
    cmd = ["python", "main.py", f"--config={CONFIG}:{variant}", f"--workdir={workdir}"]
    if seed is not None:
        cmd.append(f"--config.seed={seed}")
    return cmd + list(extra)


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


# What a supervised run's numbers depend on (galaxy_jax/modes/supervised.py RUN_FIELDS).
SUPERVISED_FIELDS = ("seed", "data", "split", "model", "optim", "weights", "augment")


def check_config(results, variant, extra, seed, workdir):
    """Raises unless the config in `results` (a supervised run's results.json) is what `variant`
    gives now, in SUPERVISED_FIELDS; fields set by the `extra` flags and fields only one side has
    are not compared. A finished run of an older config must not be reported as this row. (The
    clustering modes check their own checkpoints' configs.)"""
    from configs import galaxy_sample

    if not str(results.get("mode", "")).startswith("supervised"):
        return
    want = _flat(galaxy_sample.get_config(variant).to_dict())
    want["seed"] = seed
    have = _flat(results.get("config", {}))
    overridden = [e.split("=")[0].removeprefix("--config.") for e in extra]
    diff = [
        f"{k}: {have[k]!r} there, {want[k]!r} now"
        for k in sorted(set(want) & set(have))
        if k.split(".")[0] in SUPERVISED_FIELDS
        and have[k] != want[k]
        and not any(k == o or k.startswith(o + ".") for o in overridden)
    ]
    if diff:
        raise SystemExit(
            f"{workdir}/results.json is a run of another config ({'; '.join(diff[:6])}). "
            f"Delete {workdir} to run {variant} again."
        )


def extract(name):
    variant, extra = FEATURES[name]
    workdir = f"{WORKDIRS}/{name}"
    cmd = _cmd(variant, workdir, extra)
    run_once(cmd, os.path.join(workdir, "features.npy"))
    with open(os.path.join(ROOT, workdir, "features_meta.json")) as f:
        meta = json.load(f)
    keep = ("feature_source", "weights", "feature_dim", "image_size", "crop_size", "tta")
    return {
        "command": shlex.join(cmd),
        "seconds": meta["seconds"],
        **{k: meta.get(k) for k in keep},
    }


def balanced_acc_supervised(confusion):
    """Mean recall of the two classes; confusion [[TN, FN], [FP, TP]] (rows predicted, columns
    true)."""
    c = np.asarray(confusion, np.float64)
    return float(np.mean(np.diag(c) / np.maximum(c.sum(0), 1)))


def row_metrics(key, runs):
    """{metric: stats over seeds} for a clustering key or a supervised split ('test')."""
    ms = [r["metrics"][key] for r in runs]
    if key in ("test", "val"):
        steps = [r.get("config", {}).get("optim", {}).get("steps") for r in runs]
        out = {
            "accuracy": seed_stats([m["accuracy"] for m in ms]),
            "balanced_accuracy": seed_stats([balanced_acc_supervised(m["confusion"]) for m in ms]),
            "roc_auc": seed_stats([m["roc_auc"] for m in ms]),
            "val_accuracy": seed_stats([r["metrics"].get("val", {}).get("accuracy") for r in runs]),
            # [[TN, FN], [FP, TP]]: rows predicted 0/1, columns true 0/1 (1 = spiral)
            "confusion_per_seed": [m["confusion"] for m in ms],
            "n_test": ms[0]["n"],
            "split_sizes": runs[0].get("split_sizes"),
            "steps": steps[0],
            # training wall time / steps, compilation and the validation passes included
            "train_s_per_step": seed_stats(
                [
                    r["wall_s"]["train"] / n if n and "train" in r.get("wall_s", {}) else None
                    for r, n in zip(runs, steps, strict=True)
                ]
            ),
            "val_accuracy_history_per_seed": [
                r["history"].get(r["config"]["mode"], {}).get("val_accuracy") for r in runs
            ],
        }
        return out
    return {
        "acc": seed_stats([m["acc"] for m in ms]),
        "balanced_acc": seed_stats([balanced_acc_hungarian(m["contingency"]) for m in ms]),
        "acc_dominant": seed_stats([m["acc_dominant"] for m in ms]),
        "balanced_acc_dominant": seed_stats([m["balanced_acc_dominant"] for m in ms]),
        "nmi": seed_stats([m["nmi"] for m in ms]),
        "ari": seed_stats([m["ari"] for m in ms]),
        "contingency_per_seed": [m["contingency"] for m in ms],
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--rows", default=DEFAULT_ROWS, help=f"comma list of {list(ROWS)}")
    parser.add_argument(
        "--row_seeds",
        default="",
        help="ROW=S:S:...;ROW=... seeds for single rows instead of --seeds, e.g. cnn_scratch=0",
    )
    parser.add_argument(
        "--out", default=os.path.join(ROOT, "bench", "results", "galaxy_sample.json")
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="write only the rows run now (default: keep the other rows of an existing --out)",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    row_seeds = {}
    for item in filter(None, args.row_seeds.split(";")):
        row, _, values = item.partition("=")
        row_seeds[row] = [int(s) for s in values.split(":")]
    names = [r for r in args.rows.split(",") if r]
    unknown = [r for r in names if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {list(ROWS)}")

    features = {}
    for name in names:
        f = ROWS[name]["features"]
        if f and f not in features:
            features[f] = extract(f)

    table = []
    for name in names:
        spec = ROWS[name]
        runs, commands = [], []
        for seed in row_seeds.get(name, seeds):
            workdir = f"{WORKDIRS}/{name}/seed{seed}"
            cmd = _cmd(spec["variant"], workdir, spec.get("extra", ()), seed)
            commands.append(shlex.join(cmd))
            run_once(cmd, os.path.join(workdir, "results.json"))
            with open(os.path.join(ROOT, workdir, "results.json")) as f:
                runs.append(json.load(f))
            check_config(runs[-1], spec["variant"], spec.get("extra", ()), seed, workdir)
        walls = [wall_seconds(r) for r in runs]
        for key, label in spec["report"]:
            table.append(
                {
                    "row": name,
                    "method": label,
                    "metrics_key": key,
                    "features": spec["features"],
                    "seeds": row_seeds.get(name, seeds),
                    "scored_by": "dominant label" if spec.get("dominant") else "Hungarian",
                    "commands": commands,
                    "wall_s_per_run": seed_stats(walls),
                    "wall_s_phases_per_seed": [r.get("wall_s") for r in runs],
                    **row_metrics(key, runs),
                }
            )

    if not args.fresh and os.path.isfile(args.out):
        with open(args.out) as f:
            old = json.load(f)
        features = {**old.get("features", {}), **features}
        new_rows = {}
        for r in table:
            new_rows.setdefault(r["row"], []).append(r)
        merged = []
        for r in old.get("rows", []):  # the old order; a row run now replaces all its entries
            if r["row"] not in new_rows:
                merged.append(r)
            elif r["row"] not in {m["row"] for m in merged}:
                merged.extend(new_rows[r["row"]])
        merged.extend(r for r in table if r["row"] not in {m["row"] for m in merged})
        table = merged

    out = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "note": "wall times measured while other jobs shared the CPU: upper bounds",
        "data": (
            "../shared/data/galaxy_zoo_kaggle_sample: 2,000 real Kaggle Galaxy Zoo training "
            "images; 1,000 'spirals' = Class1.2 > 0.5 and Class4.1 > 0.5 and Class6.1 > 0.5 "
            "(6.1 = 'anything odd? yes'), 1,000 'non_spirals' drawn from all other galaxies "
            "(smooth, edge-on, armless discs, artefacts); NOT elliptical vs spiral. Folders: "
            "700 train + 300 validation per class."
        ),
        "supervised_split": (
            "test = the sample's validation folder (300 + 300, labels.csv column split); "
            "val = 10% of each class of the train folder (70 + 70, seeded by split.seed=0); "
            "train = the other 630 + 630"
        ),
        "features": features,
        "rows": table,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2)
    os.replace(tmp, args.out)
    print(f"Wrote {args.out}\n")
    _print_table(table)


def _fmt(s):
    return "—" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}"


def _print_table(table):
    print("| method | ACC | balanced ACC | NMI | ARI | wall time per run |")
    print("|---|---|---|---|---|---|")
    for r in table:
        if "acc" not in r:
            continue
        if r["scored_by"] == "dominant label":
            cells = [r["acc_dominant"], r["balanced_acc_dominant"], r["nmi"], r["ari"]]
        else:
            cells = [r["acc"], r["balanced_acc"], r["nmi"], r["ari"]]
        wall = f"{r['wall_s_per_run']['mean'] / 60:.1f} min"
        if r["metrics_key"] == "kmeans_embedding":
            wall = "(part of the DEC run)"
        print(f"| {r['method']} | {' | '.join(_fmt(c) for c in cells)} | {wall} |")
    print(
        "\n| method | test accuracy | test balanced accuracy | test ROC AUC | val accuracy "
        "| wall time per run |"
    )
    print("|---|---|---|---|---|---|")
    for r in table:
        if "accuracy" not in r:
            continue
        cells = [r["accuracy"], r.get("balanced_accuracy"), r["roc_auc"], r["val_accuracy"]]
        wall = r["wall_s_per_run"]["mean"] / 60
        print(f"| {r['method']} | {' | '.join(_fmt(c) for c in cells)} | {wall:.1f} min |")


if __name__ == "__main__":
    main()
