"""Export a DEC run's clusters as CSV for labelling workflows.

Run:
  python main.py --config=configs/export.py --workdir=workdirs/export_galaxy \
      --config.run=workdirs/sweep_galaxy/xception_dec/seed0
Writes clusters.csv and its Parquet twin clusters.parquet, one row per galaxy, grouped by
cluster, most confident first (so a volunteer labels a cluster through its first rows). Columns,
in this order: id, cluster, confidence (max q), dist_0..dist_{K-1} (Euclidean distance of the
embedding to each centre), q_0..q_{K-1} (soft assignments), anomaly_score (1 - max q: how little
any cluster explains the galaxy), map_x, map_y (the 2-D map of the report, when the run has one;
empty for rows the map sampled out), then every column of the data's catalog (ra, dec, ...;
a name that collides gets a catalog_ prefix). Also anomalies.csv, the `anomalies` least
explained galaxies ranked (same columns), and anomalies.png, their montage. The run must hold
q.npy (and embedding.npy + centres.npy for the distances).
Variant `configs/export.py:smoke` exports the smoke sweep's DEC run (configs/sweep.py:smoke).
"""

import ml_collections

from configs import common


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "export"
    common.devices(c)
    c.run = ""  # workdir of a finished DEC run
    c.filename = "clusters.csv"  # the Parquet twin takes the same name with .parquet
    c.anomalies = 24  # rows of anomalies.csv / anomalies.png; 0 for none
    if arg == "smoke":
        c.run = "workdirs/sweep_smoke/dec/seed0"
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
