"""Similarity search: the k nearest galaxies of each query, in a feature or embedding space.

Run (after `extract`, or a DEC run):
  python main.py --config=configs/neighbours.py --workdir=workdirs/neighbours \
      --config.space=workdirs/galaxy_sample/xception128 --config.query_ids=100263,100458
`space` is an extract workdir (features.npy: Xception, pixel or SSL features) or a DEC run's
workdir (embedding.npy). Queries are galaxy ids of that space (`query_ids`, comma-separated) or
image files (`query_images`; run through the space's own preprocessing and network first; feature
spaces only). Writes neighbours.csv (query, rank, id, distance, then the catalog's columns) and
montages/<NNN>_<query>.png (query NNN, then its neighbours). The search is exact, streamed over the
space in chunks of `chunk` rows (bench/neighbours_throughput.py: 1M rows on this CPU).
Variant `configs/neighbours.py:smoke` searches the quick start's features (tests).
"""

import ml_collections

from configs import common


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "neighbours"
    common.devices(c)
    c.space = ""  # an extract workdir (features.npy) or a DEC run workdir (embedding.npy)
    c.query_ids = ""  # comma-separated ids of galaxies in the space
    c.query_images = ""  # comma-separated image files (jpg, png, fits, npy) not in the space
    c.k = 8
    c.metric = "cosine"  # cosine | euclidean
    c.chunk = 65536  # database rows per device step
    c.montage = True  # montages/<NNN>_<query>.png, when the space's images can be read
    if arg == "smoke":
        c.space = "workdirs/quickstart/features"
        c.query_ids = "synthetic-0-0,synthetic-0-1"
        c.k = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
