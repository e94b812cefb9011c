"""Report: mean +- std over seeds of every variant of a sweep, and its figures (PNG).

Run after a sweep (configs/sweep.py):
  python main.py --config=configs/report.py --workdir=workdirs/report_galaxy \
      --config.sweep=workdirs/sweep_galaxy/sweep.jsonl
Writes report.md and figures/ (confusion, t-SNE, per-cluster montages, training curves); see
galaxy_jax/modes/report.py for what each figure reads from the runs.
Variant `configs/report.py:smoke` reports on the smoke sweep (run configs/sweep.py:smoke into
workdirs/sweep_smoke first).
"""

import ml_collections

from configs import common


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "report"
    common.devices(c)
    c.title = "galaxy_jax results"
    c.sweep = "workdirs/sweep_galaxy/sweep.jsonl"  # a sweep.jsonl; '' to use `runs`
    c.runs = ()  # run workdirs (each with results.json) when there is no sweep file
    c.tsne_max_points = 2000  # t-SNE on a seeded subsample of this many rows
    c.tsne_iters = 1000  # optimisation steps (at least 250)
    c.montage_per_cluster = 6  # most and least confident galaxies shown per cluster
    c.map = True  # figures/<variant>_map.html: the interactive map (galaxy_jax/explore.py)
    c.map_thumb = 48  # its thumbnails' side in pixels
    if arg == "smoke":
        c.sweep = "workdirs/sweep_smoke/sweep.jsonl"
        c.tsne_max_points = 200
        c.tsne_iters = 250
        c.montage_per_cluster = 3
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
