"""Sweeps: every variant x seed of an experiment, resumable, one JSON line per run.

Run (re-running continues where it stopped; finished runs are skipped):
  python main.py --config=configs/sweep.py:galaxy --workdir=workdirs/sweep_galaxy \
      --config.common=data.path=workdirs/synthetic_features --config.seeds="(0,1,2,3,4)"
then the report: python main.py --config=configs/report.py \
      --config.sweep=workdirs/sweep_galaxy/sweep.jsonl --workdir=workdirs/report_galaxy
Runs go to <workdir>/<variant>/seed<N>/ and lines to <workdir>/sweep.jsonl.
Variants (`configs/sweep.py:ARG`):
  galaxy   k-means vs DEC on the extracted Xception features (configs/galaxy_dec.py; the
           features dir via --config.common=data.path=DIR), 5 seeds (default)
  mnist    k-means on pixels vs DEC on MNIST (configs/mnist_kmeans.py, configs/mnist_dec.py)
  ann      the supervised ANN's hidden sizes on the features (configs/supervised_ann.py)
  smoke    k-means and DEC on generated blobs, 2 seeds, seconds (tests)
"""

import ml_collections

SEEDS = (0, 1, 2, 3, 4)


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "sweep"
    c.seeds = SEEDS
    c.common = ""  # overrides for every variant, 'FIELD=VALUE,...' (e.g. 'data.path=workdirs/f')
    arg = arg or "galaxy"
    if arg == "galaxy":
        c.base = "galaxy_dec"  # a configs/ module, optionally with ':ARG'
        # Each: a unique name, optionally `config` (another base) and dotted overrides.
        c.variants = ({"name": "kmeans_features", "mode": "kmeans"}, {"name": "xception_dec"})
    elif arg == "mnist":
        c.base = "mnist_dec"
        c.variants = ({"name": "kmeans_pixels", "config": "mnist_kmeans"}, {"name": "dec"})
    elif arg == "ann":
        c.base = "supervised_ann"
        c.variants = tuple(
            {"name": f"ann_{size}", "config": f"supervised_ann:{size}"}
            for size in ("small", "medium", "large")
        )
    elif arg == "smoke":
        c.base = "mnist_dec:smoke"
        c.seeds = (0, 1)
        c.variants = ({"name": "kmeans", "mode": "kmeans"}, {"name": "dec"})
    else:
        raise ValueError(f"unknown variant {arg!r}; use galaxy, mnist, ann or smoke")
    return c
