"""Mode `quickstart`: synthetic galaxies -> Xception features -> SAE + DEC (and k-means) ->
report, in one command, by chaining the extract, sweep and report modes.

Workdir layout:
  features/          the extract run (features.npy, features_meta.json, ...)
  sweep/             the sweep: kmeans_features/seed0, xception_dec/seed0, sweep.jsonl
  report.md figures/ the report of the sweep
  quickstart.json    the weights used, the accuracy table, wall time per stage

Weights: config.weights='auto' takes the converted ImageNet file if it is in the cache and
otherwise a seeded randomly initialised network, saying so on screen, in report.md's title and
in quickstart.json (`weights`). It never downloads. Each stage resumes (they are the modes'
own runs), so re-running finishes an interrupted quick start and redoes nothing.
"""

from __future__ import annotations

import copy
import os
import time

from galaxy_jax import atomic, config_files, modes, summary, validate, weights
from galaxy_jax.workdir import prepare_workdir, versions


def resolve_weights(config) -> tuple[str, str]:
    """(config.weights value for extract, a human description) for config.weights."""
    if config.weights != "auto":
        return config.weights, config.weights
    cached = weights.converted_path(False, config.extract.cache_dir or None)
    if os.path.isfile(cached):
        return "imagenet", f"imagenet ({cached})"
    print(
        "=" * 78 + "\n"
        f"ImageNet weights are NOT available (no converted file {cached}).\n"
        "Using a RANDOMLY INITIALISED Xception (seed "
        f"{config.seed}): the features carry no ImageNet prior.\n"
        "For ImageNet features run configs/convert_weights.py once, then re-run with a new "
        "--workdir.\n" + "=" * 78,
        flush=True,
    )
    return "random", f"random (seed {config.seed}), ImageNet weights unavailable"


def run_quickstart(config, workdir: str) -> dict:
    t_start = time.time()
    validate.quickstart(config)  # before the workdir exists
    workdir = prepare_workdir(workdir)
    wall = {}
    w, weights_desc = resolve_weights(config)

    t0 = time.time()
    ex = copy.deepcopy(config.extract)
    ex.weights, ex.seed = w, config.seed
    features_dir = os.path.join(workdir, "features")
    print(f"[1/3] extract: {ex.data.synthetic_n} synthetic galaxies -> {features_dir}")
    modes.get("extract")(ex, features_dir)
    wall["extract"] = time.time() - t0

    t0 = time.time()
    overrides = {"data.path": features_dir, **config_files.parse_common(config.dec_overrides)}
    sw = config_files.load_config("sweep:galaxy", config.config_dir)
    sw.seeds = tuple(config.seeds)
    sw.variants = (
        {"name": "kmeans_features", "mode": "kmeans", **overrides},
        {"name": "xception_dec", **overrides},
    )
    print("[2/3] k-means and DEC on the features")
    runs = modes.get("sweep")(sw, os.path.join(workdir, "sweep"))
    wall["sweep"] = time.time() - t0

    t0 = time.time()
    rc = config_files.load_config("report", config.config_dir)
    rc.update(config.report.to_dict())
    rc.sweep = os.path.join(workdir, "sweep", summary.SWEEP_FILE)
    rc.title = f"galaxy_jax quick start (Xception weights: {weights_desc})"
    print("[3/3] report")
    modes.get("report")(rc, workdir)
    wall["report"] = time.time() - t0
    wall["total"] = time.time() - t_start

    table = summary.markdown_table(summary.summarise(runs))
    print(f"\nXception weights: {weights_desc}\n\n{table}\n")
    print(f"Report: {os.path.join(workdir, 'report.md')}, figures in {workdir}/figures/")
    maps = sorted(f for f in os.listdir(os.path.join(workdir, "figures")) if f.endswith(".html"))
    for m in maps:  # the interactive maps (galaxy_jax/explore.py): open in a browser
        print(f"Map: {os.path.join(workdir, 'figures', m)}")
    results = {
        "weights": weights_desc,
        "table": table,
        "metrics": {r["variant"]: r["metrics"] for r in runs},
        "wall_s": wall,
        "config": config.to_dict(),
        "versions": versions(),
    }
    atomic.write_json(os.path.join(workdir, "quickstart.json"), results)
    return results
