"""The base of every clustering config (modes dec, pretrain, kmeans): `dec_base.base_config(data)`.

Not an experiment itself (no mode of its own to run): configs/mnist_dec.py, mnist_dec_paper.py,
galaxy_dec.py, galaxy_sample.py's clustering variants and, through galaxy_dec.py, quickstart.py
extend it. It declares every field of the `sae` and `dec` sections with the DEC paper's defaults
(and the fast Adam recipe's autoencoder), so a config changes values and never adds fields.
"""

import ml_collections

from configs import common, data_defaults


def base_config(data: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Mode 'dec' on `data` (a section galaxy_jax.data.vectors.load_vectors reads)."""
    c = ml_collections.ConfigDict()
    c.mode = "dec"  # dec | pretrain | kmeans
    c.seed = 0
    common.cadence(c, log_every=100, checkpoint_every=1000)  # DEC: at the next target update
    common.devices(c)
    c.data = data
    # Another run's workdir whose finished autoencoder (same seed, data and sae settings) this
    # run reads instead of training its own: variants on one autoencoder. '' trains it here.
    c.sae_from = ""
    c.sae = sae_section()
    c.dec = dec_section()
    return c


def sae_section() -> ml_collections.ConfigDict:
    """Stacked denoising autoencoder d-500-500-2000-10 (the input width d comes from the data)."""
    s = ml_collections.ConfigDict()
    s.dims = (500, 500, 2000, 10)  # hidden widths
    s.dropout = 0.2  # denoising dropout on the input and hidden units (layer-wise only)
    s.layerwise_steps = 0  # steps per layer pair; 0 skips greedy pretraining
    s.finetune_steps = 8000  # end-to-end steps, no dropout
    s.batch_size = 256
    s.optimizer = "adam"  # adam | sgd
    s.lr = 1e-3
    s.momentum = 0.9  # SGD only
    s.lr_decay_every = 0  # staircase decay period in steps; 0 = constant lr
    s.lr_decay = 0.1
    return s


def dec_section() -> ml_collections.ConfigDict:
    """DEC (Xie et al. 2016) and its variants; the defaults are the paper's."""
    d = ml_collections.ConfigDict()
    d.n_clusters = 10
    d.alpha = 1.0  # Student-t degrees of freedom
    d.batch_size = 256
    d.optimizer = "sgd"  # sgd | adam
    d.lr = 0.01
    d.momentum = 0.9
    d.lr_decay_every = 0  # lr times lr_decay every this many steps; 0 = constant
    d.lr_decay = 0.1
    d.update_interval = 140  # steps between recomputing P over the whole dataset
    d.tol = 0.001  # stop when fewer than this fraction of points changed cluster
    d.maxiter = 10000
    d.kmeans_n_init = 20  # restarts of the k-means or Gaussian-mixture initialisation
    # The initial clustering is fitted on at most this many rows (a seeded draw), then assigns
    # all of them; 0 = all rows (galaxy_jax.dec_init.DEFAULT_INIT_SAMPLE).
    d.init_sample = 100_000
    # Variants (defaults = the DEC paper): the initial centres, labels, extra loss terms.
    # kmeans | gmm | ward | umap (N2D: UMAP to n_clusters dims, then a Gaussian mixture) |
    # spectral (on the nearest-neighbour graph) | labels (class means of the visible labels).
    # Mode pretrain clusters its embedding with it, mode kmeans its input vectors.
    d.init = "kmeans"
    d.umap_neighbors = 20  # init 'umap': UMAP's n_neighbors (N2D's value)
    d.spectral_neighbors = 10  # init 'spectral': neighbours of each row in the graph
    d.label_fraction = 0.0  # fraction of rows whose label training may see (seeded draw)
    d.supervised_weight = 0.0  # weight of the semi-supervised cross-entropy; 0 = plain DEC
    d.gamma = 0.0  # IDEC: weight of the reconstruction MSE kept during DEC; 0 = DEC
    # Target P ~ q^2 / f^target_power: 1 = the paper (pushes towards equal clusters), 0 = no
    # frequency normalisation (cluster sizes follow the data; imbalanced classes), in [0, 1].
    d.target_power = 1.0
    # After the final clustering (modes dec, kmeans), merge the K clusters into this many groups
    # by size-weighted Ward linkage of their centres (galaxy_jax/merge.py); 0 = no merge.
    d.merge_to = 0
    return d


def shrink_for_smoke(c):
    """Seconds-long variant on generated, well-separated blobs (no files needed)."""
    c.data = data_defaults.blobs_data()
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
