"""DEC on all 70,000 MNIST digits with the fast end-to-end Adam recipe (the default).

Run:
  python main.py --config=configs/mnist_dec.py --workdir=workdirs/mnist_dec/seed0 \
      --config.seed=0
Variants: `configs/mnist_dec.py:smoke` is a seconds-long run on generated blobs (used by tests):
  python main.py --config=configs/mnist_dec.py:smoke --workdir=workdirs/smoke
`configs/mnist_dec.py:fast` trades a few points of accuracy for time (about 12 SAE epochs instead
of 29, lr / 10 for the last two, a short DEC; see bench/mnist_time_to_acc.py):
  python main.py --config=configs/mnist_dec.py:fast --workdir=workdirs/mnist_dec_fast/seed0 \
      --config.seed=0
The paper's layer-wise SGD recipe is configs/mnist_dec_paper.py.
"""

import os

import ml_collections

from configs import dec_base

# ../shared/data beside the repository, where the dev machines and CI keep the real MNIST.
MNIST_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..",
    "shared",
    "data",
    "mnist",
    "mnist.npz",
)


def mnist_data(path: str = MNIST_PATH) -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.name = "mnist"
    d.path = path  # a Keras-format mnist.npz
    d.normalize = "unit_power"  # DEC paper: mean |x|^2/d = 1; 'scale01' is x/255
    return d


def get_config(arg=None):
    c = dec_base.base_config(mnist_data())  # every sae and dec field
    if arg == "smoke":
        dec_base.shrink_for_smoke(c)
    elif arg == "fast":
        make_fast(c)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke', 'fast' or nothing")
    return c


def make_fast(c):
    """Minutes on a 2-core CPU, aiming at 84% accuracy (the DEC paper's MNIST figure).

    The SAE's k-means accuracy gains most per epoch from smaller batches and from a final drop of
    the learning rate; DEC gains most of its points in its first ~1,000 steps.
    """
    c.sae.batch_size = 128  # ~95% of batch 256's samples/s on CPU, twice the updates per epoch
    c.sae.finetune_steps = 6560  # ~12 epochs of 70,000 digits
    c.sae.lr_decay_every = 5470  # ~10 epochs at lr 1e-3, then 1e-4 (staircase decay)
    c.sae.lr_decay = 0.1
    c.dec.maxiter = 1120  # 8 target updates
    c.dec.kmeans_n_init = 10
