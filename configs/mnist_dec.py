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

# ../shared/data beside the repository, where the dev machines and CI keep the real MNIST.
MNIST_PATH = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..",
    "shared",
    "data",
    "mnist",
    "mnist.npz",
)


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "dec"
    c.seed = 0
    c.log_every = 100  # steps between host syncs (loss logging, NaN check)
    c.checkpoint_every = 1000  # steps between Orbax checkpoints (DEC: at the next target update)

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist"
    c.data.path = MNIST_PATH  # a Keras-format mnist.npz
    c.data.normalize = "unit_power"  # DEC paper: mean |x|^2/d = 1; 'scale01' is x/255

    # Stacked denoising autoencoder d-500-500-2000-10.
    c.sae = ml_collections.ConfigDict()
    c.sae.dims = (500, 500, 2000, 10)  # hidden widths; the input width comes from the data
    c.sae.dropout = 0.2  # denoising dropout on the input and hidden units (layer-wise only)
    c.sae.layerwise_steps = 0  # steps per layer pair; 0 skips greedy pretraining
    c.sae.finetune_steps = 8000  # end-to-end steps, no dropout
    c.sae.batch_size = 256
    c.sae.optimizer = "adam"
    c.sae.lr = 1e-3
    c.sae.momentum = 0.9  # SGD only
    c.sae.lr_decay_every = 0  # staircase decay period in steps; 0 = constant lr
    c.sae.lr_decay = 0.1

    c.dec = ml_collections.ConfigDict()
    c.dec.n_clusters = 10
    c.dec.alpha = 1.0  # Student-t degrees of freedom
    c.dec.batch_size = 256
    c.dec.optimizer = "sgd"
    c.dec.lr = 0.01
    c.dec.momentum = 0.9
    c.dec.update_interval = 140  # steps between recomputing P over the whole dataset
    c.dec.tol = 0.001  # stop when fewer than this fraction of points changed cluster
    c.dec.maxiter = 10000
    c.dec.kmeans_n_init = 20  # restarts of the k-means or Gaussian-mixture initialisation
    # Variants (defaults = the DEC paper): the initial centres, labels, extra loss terms.
    c.dec.init = "kmeans"  # kmeans | gmm | ward | labels (class means of the visible labels)
    c.dec.label_fraction = 0.0  # fraction of rows whose label training may see (seeded draw)
    c.dec.supervised_weight = 0.0  # weight of the semi-supervised cross-entropy; 0 = plain DEC
    c.dec.gamma = 0.0  # IDEC: weight of the reconstruction MSE kept during DEC; 0 = DEC

    if arg == "smoke":
        shrink_for_smoke(c)
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


def shrink_for_smoke(c):
    """Seconds-long variant on generated, well-separated blobs (no files needed)."""
    c.data = ml_collections.ConfigDict(
        dict(name="blobs", n=600, dim=32, n_clusters=4, seed=0, spread=0.5)
    )
    c.sae.dims = (32, 32, 64, 4)
    if c.sae.layerwise_steps:
        c.sae.layerwise_steps = 30
    c.sae.finetune_steps = 60
    c.sae.batch_size = 64
    c.dec.n_clusters = 4
    c.dec.batch_size = 64
    c.dec.update_interval = 20
    c.dec.maxiter = 100
    c.dec.kmeans_n_init = 4
    c.log_every = 10
    c.checkpoint_every = 50
