"""Export a DEC run's clusters as CSV for labelling workflows.

Run:
  python main.py --config=configs/export.py --workdir=workdirs/export_galaxy \
      --config.run=workdirs/sweep_galaxy/xception_dec/seed0
Writes clusters.csv: id, cluster, confidence (max q), dist_0..dist_{K-1} (Euclidean distance of
the embedding to each centre), grouped by cluster, most confident first, so a volunteer labels a
cluster through its first rows. The run must hold q.npy (and embedding.npy + centres.npy for the
distances).
Variant `configs/export.py:smoke` exports the smoke sweep's DEC run (configs/sweep.py:smoke).
"""

import ml_collections

from configs import common


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "export"
    common.devices(c)
    c.run = ""  # workdir of a finished DEC run
    c.filename = "clusters.csv"
    if arg == "smoke":
        c.run = "workdirs/sweep_smoke/dec/seed0"
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
