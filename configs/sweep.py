"""Sweeps: every variant x seed of an experiment, resumable, one JSON line per run.

Run (re-running continues where it stopped; finished runs are skipped):
  python main.py --config=configs/sweep.py:galaxy --workdir=workdirs/sweep_galaxy \
      --config.common=data.path=workdirs/synthetic_features --config.seeds="(0,1,2,3,4)"
then the report: python main.py --config=configs/report.py \
      --config.sweep=workdirs/sweep_galaxy/sweep.jsonl --workdir=workdirs/report_galaxy
Runs go to <workdir>/<variant>/seed<N>/ and lines to <workdir>/sweep.jsonl.
Variants (`configs/sweep.py:ARG`):
  galaxy   k-means vs DEC on the extracted Xception features (configs/galaxy_dec.py; the
           features dir via --config.common=data.path=DIR), 5 seeds (default), and the paper's
           variants as fields of the dec/sae sections (GALAXY_VARIANTS below): autoencoder
           architectures, the initialisation (k-means, GMM, Ward, class means of 10% labels),
           semi-supervised DEC, IDEC, and 4 clusters for 2 classes (scored by dominant label)
  preprocess  DEC on features of other crop sizes, input sizes and rotation averaging: each
           needs its own extract run first (PREPROCESS below lists the commands)
  mnist    k-means on pixels vs DEC on MNIST (configs/mnist_kmeans.py, configs/mnist_dec.py)
  ann      the supervised ANN's hidden sizes on the features (configs/supervised_ann.py)
  smoke    k-means and DEC on generated blobs, 2 seeds, seconds (tests)
"""

import os

import ml_collections

from configs import common

SEEDS = (0, 1, 2, 3, 4)

# Section 4.3-4.6 of the paper and beyond: one variant per field value (overrides of galaxy_dec).
GALAXY_VARIANTS = (
    {"name": "kmeans_features", "mode": "kmeans"},
    {"name": "xception_dec"},  # 2048-500-500-2000-10, k-means init
    {"name": "ae_small_embedding", "sae.dims": (500, 500, 2000, 3)},
    {"name": "ae_shallow", "sae.dims": (256, 10)},
    {"name": "init_gmm", "dec.init": "gmm"},
    {"name": "init_ward", "dec.init": "ward"},
    {"name": "init_labels", "dec.init": "labels", "dec.label_fraction": 0.1},
    {"name": "semi_supervised", "dec.label_fraction": 0.1, "dec.supervised_weight": 1.0},
    {"name": "idec", "dec.gamma": 1.0},
    {"name": "dec_4_clusters", "dec.n_clusters": 4},
)

# Section 4.2: features extracted with other preprocessing, each into its own directory:
#   python main.py --config=configs/extract.py --workdir=workdirs/features_<name> <flags>
PREPROCESS = {
    "crop207_299": "",  # the default: centre crop 207, input 299
    "crop0_299": "--config.data.crop_size=0",  # the whole 424x424 frame
    "crop207_150": "--config.data.image_size=150",
    "crop207_299_tta": "--config.tta=True",  # mean of the 8 rotations/flips
}


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "sweep"
    common.devices(c)
    # Where `base` and each variant's `config` are found (galaxy_jax.modes.sweep.load_config):
    # a short name 'galaxy_dec' or 'mnist_dec:smoke' is <config_dir>/galaxy_dec.py; a path
    # 'configs/mnist_dec.py:smoke' is read from the current directory, else its file name from
    # config_dir. Default: this file's directory.
    c.config_dir = os.path.dirname(os.path.abspath(__file__))
    c.seeds = SEEDS
    c.common = ""  # overrides for every variant, 'FIELD=VALUE,...' (e.g. 'data.path=workdirs/f')
    arg = arg or "galaxy"
    if arg == "galaxy":
        c.base = "galaxy_dec"  # a config of config_dir, optionally with ':ARG'
        # Each: a unique name, optionally `config` (another base) and dotted overrides.
        c.variants = GALAXY_VARIANTS
    elif arg == "preprocess":
        c.base = "galaxy_dec"
        c.variants = tuple(
            {"name": f"dec_{name}", "data.path": f"workdirs/features_{name}"} for name in PREPROCESS
        )
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
        raise ValueError(f"unknown variant {arg!r}; use galaxy, preprocess, mnist, ann or smoke")
    return c
