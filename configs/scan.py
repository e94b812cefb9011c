"""SCAN-style clustering (neighbour consistency, then self-labelling) on cached feature vectors.

Run (seconds, on generated blobs, no files):
  python main.py --config=configs/scan.py --workdir=workdirs/scan_smoke
On the real sample's ImageNet Xception features (after configs/galaxy_sample.py:xception_extract):
  python main.py --config=configs/scan.py:sample --workdir=workdirs/galaxy_sample/scan/seed0 \\
      --config.data.path=workdirs/galaxy_sample/xception128 --config.seed=0
Variants (`configs/scan.py:ARG`; no ARG = smoke):
  smoke      600 blobs, 4 clusters, 32-d
  sample     ~2,000-4,000 rows of 2048-d features, 2 clusters, k 20, entropy weight 5, 5 heads
  sample_10  the same with 10 clusters (score by acc_dominant)
Phases (galaxy_jax/modes/scan.py): neighbours mined once (neighbours.npz), `scan` (the head),
`selflabel` (the best head on its confident pseudo-labels); each resumable.
"""

import ml_collections

from configs import common, data_defaults

SAMPLE_FEATURES = "workdirs/galaxy_sample/xception128"  # configs/galaxy_sample.py:xception_extract


def scan_section() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.n_clusters = 2
    s.n_heads = 5  # trained at once; the one of lowest SCAN loss over all neighbours is kept
    s.hidden = 0  # 0: linear head on the L2-normalised features; > 0 a ReLU layer of that width
    s.k_neighbours = 20  # mined once, exactly (galaxy_jax/neighbours.py)
    s.metric = "cosine"  # cosine | euclidean
    s.entropy_weight = 5.0  # against collapse into one cluster
    s.batch_size = 256
    s.steps = 1000
    s.optimizer = "adam"  # adam | sgd
    s.lr = 1e-3
    s.momentum = 0.9  # sgd only
    s.lr_decay_every = 0  # 0 = constant lr
    s.lr_decay = 0.1
    return s


def selflabel_section() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.steps = 500  # 0 skips self-labelling
    s.threshold = 0.99  # confidence above which a row is a pseudo-label
    s.dropout = 0.25  # strong view: features zeroed with this probability...
    s.noise = 0.1  # ... plus Gaussian noise of this std times the row's RMS
    s.batch_size = 256
    s.optimizer = "adam"
    s.lr = 1e-4
    s.momentum = 0.9
    s.lr_decay_every = 0
    s.lr_decay = 0.1
    return s


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "scan"
    c.seed = 0
    common.cadence(c, log_every=50, checkpoint_every=500)
    common.devices(c)
    c.scan = scan_section()
    c.selflabel = selflabel_section()
    arg = arg or "smoke"
    if arg == "smoke":
        c.data = data_defaults.blobs_data()
        c.scan.n_clusters = 4
        c.scan.n_heads = 3
        c.scan.k_neighbours = 8
        c.scan.batch_size = c.selflabel.batch_size = 64
        c.scan.steps = 150
        c.scan.lr = 1e-2  # 32-d: the head needs larger weights than at 2048-d to be confident
        c.selflabel.steps = 60
        c.selflabel.lr = 1e-3
        c.selflabel.threshold = 0.9
        c.log_every = 10
        c.checkpoint_every = 50
    elif arg in ("sample", "sample_10"):
        c.data = data_defaults.features_data(SAMPLE_FEATURES)
        c.scan.n_clusters = 10 if arg == "sample_10" else 2
    else:
        raise ValueError(f"unknown variant {arg!r}; use smoke, sample or sample_10")
    return c
