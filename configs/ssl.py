"""Self-supervised (SimCLR) pretraining of Xception on unlabelled galaxy images: no ImageNet.

Run (the full Xception, synthetic galaxies; meant for an accelerator):
  python main.py --config=configs/ssl.py --workdir=workdirs/ssl_synthetic
On a CPU, the narrow network (width 0.25, 2 middle blocks, 72x72 input):
  python main.py --config=configs/ssl.py:cpu --workdir=workdirs/ssl_cpu
The real 2,000-image Kaggle sample (configs/data_defaults.py KAGGLE_SAMPLE; labels unused):
  nice -n 5 python main.py --config=configs/ssl.py:sample --workdir=workdirs/ssl_sample
Then features from the encoder it wrote (its architecture is read from encoder.json):
  python main.py --config=configs/extract.py --workdir=workdirs/ssl_sample_features \
      --config.weights=workdirs/ssl_sample/encoder.npz --config.data.name=folder \
      --config.data.image_size=72
Writes encoder.npz (the backbone's params and batch statistics, flat as galaxy_jax.weights
writes them), encoder.json (architecture, input size), results.json (loss history, wall time)
and ckpt/ (resumable; SIGTERM saves and exits 75). See galaxy_jax/modes/ssl.py.
From ImageNet's weights instead of random ones (the whole network: an accelerator's job):
  python main.py --config=configs/ssl.py --workdir=workdirs/ssl_imagenet --config.weights=imagenet
Variant `configs/ssl.py:smoke`: 16 small synthetic galaxies, a tiny network, 12 steps (tests).
"""

import ml_collections

from configs import common, data_defaults


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "ssl"
    c.seed = 0  # initialisation, views and batch order
    common.cadence(c, log_every=10, checkpoint_every=200)
    common.devices(c)

    c.data = data_defaults.get_data_config("synthetic")  # crop_size, image_size apply
    c.data.image_size = 128

    c.model = ml_collections.ConfigDict()
    c.model.width = 1.0  # Xception channel multiplier (1.0 = Keras' Xception)
    c.model.middle_blocks = 8  # middle-flow blocks, 0-8 (8 = Keras' Xception)
    c.model.proj_hidden = 512  # projection MLP: feature -> proj_hidden -> proj_dim
    c.model.proj_dim = 128
    c.dtype = "float32"  # float32 | bfloat16 (accelerators)
    # Where the backbone starts: 'random' (seeded; no ImageNet, the default) or 'imagenet' / a
    # weights file (domain adaptation; model.width 1.0 and middle_blocks 8 only). On a CPU,
    # configs/adapt.py adapts the exit flow alone on cached activations instead.
    common.weights(c, source="random")

    c.temperature = 0.2  # NT-Xent temperature

    c.augment = ml_collections.ConfigDict()  # galaxy_jax.data.preprocess.ssl_view_one
    c.augment.max_angle_deg = 180.0
    c.augment.min_zoom = 0.9
    c.augment.max_zoom = 1.25
    c.augment.max_shift = 0.05  # fraction of the side, per axis
    c.augment.min_flux = 0.7
    c.augment.max_flux = 1.3
    c.augment.max_noise = 0.03  # Gaussian sigma in [-1, 1] units
    c.augment.max_blur = 1.0  # PSF sigma in input pixels

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-3  # AdamW peak, after a linear warmup, cosine decay to 0
    c.optim.warmup_steps = 100
    c.optim.weight_decay = 1e-5
    c.optim.batch_size = 256  # global (2 views each), rounded up to a multiple of the devices
    c.optim.steps = 5000

    if arg in ("cpu", "sample"):
        c.model.width = 0.25
        c.model.middle_blocks = 2
        c.model.proj_hidden = 256
        c.data.image_size = 72
        c.optim.batch_size = 128
        c.optim.steps = 200  # ~13 epochs of the sample; ~20 min on a shared 2-core CPU
        c.optim.warmup_steps = 20
        c.checkpoint_every = 25
        if arg == "sample":
            c.data.name = "folder"  # data.folder defaults to the real 2,000-image sample
    elif arg == "smoke":
        c.data.synthetic_n = 16
        c.data.synthetic_size = 96
        c.data.crop_size = 0
        c.data.image_size = 71
        c.model.width = 0.125
        c.model.middle_blocks = 1
        c.model.proj_hidden = 32
        c.model.proj_dim = 16
        c.optim.batch_size = 8
        c.optim.steps = 12
        c.optim.warmup_steps = 2
        c.log_every = 1
        c.checkpoint_every = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'cpu', 'sample', 'smoke' or nothing")
    return c
