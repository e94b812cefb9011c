"""DEC on 2048-d Xception features of galaxies (the seed paper's proposed architecture).

Run after extracting features (configs/extract.py) into workdirs/synthetic_features:
  python main.py --config=configs/galaxy_dec.py --workdir=workdirs/synthetic_dec \
      --config.data.path=workdirs/synthetic_features
The autoencoder is 2048-500-500-2000-10 and there are 2 clusters (elliptical vs spiral).
Variant `configs/galaxy_dec.py:smoke` runs in seconds on generated blobs.
"""

from configs import data_defaults, dec_base


def get_config(arg=None):
    # An extract mode's workdir; the sae and dec fields are configs/dec_base.py's.
    c = dec_base.base_config(data_defaults.features_data("workdirs/synthetic_features"))
    c.dec.n_clusters = 2
    # Galaxy sets are small next to MNIST: fewer steps, target updated more often.
    c.sae.finetune_steps = 2000
    c.dec.update_interval = 20
    c.dec.maxiter = 4000
    # MNIST's lr 0.01 (momentum 0.9) collapsed DEC on 256 galaxies' features: with two close
    # initial centres, shifting every embedding far from both makes all rows of Q equal, and
    # then P = Q exactly (the f_j normalisation), KL = 0: a trivial minimum that a shared
    # last-layer bias reaches in ~80 steps at that lr. 0.001 stays out of it (docs/modes.md).
    c.dec.lr = 0.001
    if arg == "smoke":
        dec_base.shrink_for_smoke(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
