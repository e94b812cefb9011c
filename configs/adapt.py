"""The ImageNet Xception's exit flow adapted to galaxies, on cached activations (mode `adapt`).

The entry and middle flows stay ImageNet's; their output for the 8 rotations and flips of every
galaxy is cached once (float16); the exit flow (blocks 13-14) then trains contrastively on
pairs of those views (galaxy_jax/adapt.py). The workdir is a features dir like extract's.
Run (the real 2,000-image Kaggle sample, 128 px, crop 208 as configs/galaxy_sample.py):
  nice -n 5 python main.py --config=configs/adapt.py:sample --workdir=workdirs/adapt_sample/seed0
Another seed on the same cached views (no second cache):
  python main.py --config=configs/adapt.py:sample --workdir=workdirs/adapt_sample/seed1 \
      --config.seed=1 --config.views_from=workdirs/adapt_sample/seed0
The frozen ImageNet features from the same cache, for comparison: --config.optim.steps=0.
Then cluster the adapted features as any others:
  python main.py --config=configs/galaxy_sample.py:kmeans_xception \
      --workdir=workdirs/adapt_sample/seed0/kmeans --config.data.path=workdirs/adapt_sample/seed0 \
      --config.data.normalize=sqrt_l2
Variant `configs/adapt.py:smoke`: 8 small synthetic galaxies, random weights, 71 px (tests).
"""

import ml_collections

from configs import common, data_defaults


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "adapt"
    c.seed = 0  # head, view pairs, crops, batch order (not the cache, but for weights='random')
    common.cadence(c, log_every=10, checkpoint_every=50)
    common.devices(c)
    common.weights(c)  # the network to adapt: ImageNet by default (weights='random' for tests)

    c.data = data_defaults.get_data_config("synthetic")  # crop_size, image_size apply
    c.data.image_size = 128

    # Phase 1, the cache: the middle flow's output for the 8 views (8 x 8 x 8 x 728 values a
    # galaxy at 128 px: 745 KB float16).
    c.views_from = ""  # another adapt workdir whose finished cache this run reads (seeds share)
    c.batch_size = 32  # images per network pass while caching; galaxies per features batch
    c.shard_size = 256  # images per resumable cache shard
    c.micro_batch = -1  # as extract's: -1 = auto (cache-sized steps on a CPU)

    # Phase 2, training: NT-Xent on two different dihedral views of each galaxy, each cropped
    # to crop x crop in the activation map at a random offset (0 = the whole map, no crop).
    c.crop = 6  # of the 8 x 8 maps at 128 px
    c.temperature = 0.2
    c.model = ml_collections.ConfigDict()
    c.model.proj_hidden = 512  # projection MLP 2048 -> proj_hidden -> proj_dim, then dropped
    c.model.proj_dim = 128
    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-4  # AdamW peak after a linear warmup, cosine decay to 0 (fine-tuning: low)
    c.optim.warmup_steps = 30
    c.optim.weight_decay = 1e-5
    c.optim.batch_size = 64  # galaxies a step (2 views each)
    c.optim.steps = 300  # 0 = no training: ImageNet's exit flow on the cache (the baseline)

    if arg == "sample":
        c.data.name = "folder"  # data.folder defaults to the real 2,000-image sample
        c.data.crop_size = 208  # as configs/galaxy_sample.py (exact rotations of the window)
    elif arg == "smoke":
        c.weights = "random"
        c.download = False
        c.data.synthetic_n = 8
        c.data.synthetic_size = 96
        c.data.crop_size = 0
        c.data.image_size = 71  # 5 x 5 maps
        c.batch_size = 4
        c.shard_size = 4
        c.crop = 4
        c.model.proj_hidden = 32
        c.model.proj_dim = 16
        c.optim.batch_size = 4
        c.optim.steps = 6
        c.optim.warmup_steps = 2
        c.log_every = 1
        c.checkpoint_every = 2
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'sample', 'smoke' or nothing")
    return c
