"""Convert the Keras ImageNet Xception weights to Flax, once.

Run:
  python main.py --config=configs/convert_weights.py --workdir=workdirs/weights
Downloads xception_weights_tf_dim_ordering_tf_kernels_notop.h5 (83.7 MB, checked by size and
sha256) into ~/.cache/galaxy_jax ($GALAXY_JAX_CACHE), converts it, and writes
workdirs/weights/xception_notop.npz plus a converted copy in the cache, which `extract` with
weights='imagenet' then uses. Offline, fetch the file named in the error message yourself, or:
  python main.py --config=configs/convert_weights.py --workdir=workdirs/weights \
      --config.weights_path=/path/to/xception_weights_tf_dim_ordering_tf_kernels_notop.h5
Add --config.include_top=True for the 1000-class classifier (the other official file).
Variant `configs/convert_weights.py:smoke` never downloads (tests point weights_path at a file).
"""

import ml_collections

from configs import common


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "convert_weights"
    c.seed = 0
    common.weights(c)  # weights: imagenet | random | path to a Keras .h5 or Flax .npz
    common.devices(c)
    c.include_top = False  # True: the file with the 1000-way ImageNet classifier
    if arg == "smoke":
        c.download = False
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
