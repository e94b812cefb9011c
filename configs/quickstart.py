"""Quick start: the whole pipeline on synthetic galaxies, offline, in a few minutes on a CPU.

Run:
  python main.py --config=configs/quickstart.py --workdir=workdirs/quickstart
Renders 256 synthetic galaxies, extracts Xception features (ImageNet weights when the converted
file is in the cache, else a randomly initialised network, announced as such), pretrains the
autoencoder, runs DEC and k-means on the features, writes report.md and figures/ into the
workdir and prints the accuracy table. Each stage resumes; re-running does nothing new.
Variant `configs/quickstart.py:smoke`: 24 tiny galaxies, seconds of training (tests).
"""

import os

import ml_collections

from configs import common, extract


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "quickstart"
    c.seed = 0
    common.devices(c)  # the top-level value counts (extract.host_devices is not read)
    # Where the sweep (sweep.py:galaxy, hence galaxy_dec.py) and report (report.py) configs of
    # the stages are found; default: this file's directory.
    c.config_dir = os.path.dirname(os.path.abspath(__file__))
    # auto: ImageNet if its converted file is cached (configs/convert_weights.py), else a seeded
    # random network (printed, and recorded as results' `weights`); never downloads.
    # imagenet | random | a .npz path force one.
    c.weights = "auto"

    c.extract = extract.get_config()
    c.extract.download = False
    c.extract.data.synthetic_n = 256
    c.extract.data.image_size = 128  # small input: ~20 s for 256 images on 2 CPU cores

    # DEC on the features: configs/galaxy_dec.py with these overrides, beside k-means.
    c.seeds = (0,)
    # 'FIELD=VALUE,...' as the sweep's `common` (Python literals where they parse as one).
    c.dec_overrides = "sae.finetune_steps=300,log_every=50,checkpoint_every=100"

    c.report = ml_collections.ConfigDict()
    c.report.tsne_max_points = 256
    c.report.tsne_iters = 500
    c.report.montage_per_cluster = 6

    if arg == "smoke":
        c.extract.data.synthetic_n = 24
        c.extract.data.synthetic_size = 96
        c.extract.data.crop_size = 0
        c.extract.data.image_size = 71
        c.extract.batch_size = 8
        c.dec_overrides = (
            "sae.dims=(32,4),sae.finetune_steps=20,sae.batch_size=8,dec.batch_size=8,"
            "dec.maxiter=20,dec.update_interval=5,dec.kmeans_n_init=2,log_every=5,"
            "checkpoint_every=10"
        )
        c.report.tsne_max_points = 24
        c.report.tsne_iters = 250
        c.report.montage_per_cluster = 2
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
