"""Xception ImageNet features (2048-d, global average pool) of every image of a dataset, or
the preprocessed pixels themselves (`source='pixels'`).

Run (after configs/convert_weights.py, or let it download and convert on first use):
  python main.py --config=configs/extract.py --workdir=workdirs/synthetic_features
Pixels instead (no weights; 64x64 grayscale -> 4096-d, the "k-means/DEC on pixels" baselines):
  python main.py --config=configs/extract.py --workdir=workdirs/synthetic_pixels \
      --config.source=pixels --config.data.image_size=64
Writes features.npy, ids.npy, labels.npy and features_meta.json (see galaxy_jax/modes/extract.py).
Other data: --config.data.name=folder --config.data.folder=/path/to/images (configs/data_defaults.py
lists the fields). On a GPU: --config.dtype=bfloat16. Test-time augmentation over the 8
rotations and flips: --config.tta=True (8x the compute).
Variant `configs/extract.py:smoke`: 6 small synthetic galaxies, random weights, 71x71 input.
Variant `configs/extract.py:pixels_smoke`: the same galaxies as 16x16 grayscale pixels.
"""

import ml_collections

from configs import common, data_defaults


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "extract"
    c.seed = 0  # only used by weights='random'
    c.data = data_defaults.get_data_config("synthetic")  # data.crop_size, data.image_size apply

    # The feature source. xception: 2048-d pooled features of the network in `weights` (ImageNet,
    # random, or an `ssl` encoder). pixels: the preprocessed image (the same centre crop, resize
    # and [-1, 1] scaling as Xception's input), flattened to S*S (grayscale) or S*S*3.
    c.source = "xception"  # xception | pixels
    c.grayscale = True  # pixels only: one channel, the mean of R, G and B
    c.standardize = False  # pixels only: z-score each image (drops brightness and contrast)

    common.weights(c)  # weights, weights_path, cache_dir, download (xception only)

    c.batch_size = 32  # global; rounded up to a multiple of the device count
    c.tta = False  # pool the features of the 8 rotations/flips of each galaxy (8x the compute)
    c.tta_pool = "mean"  # mean | max (per feature, over the 8 views)
    c.dtype = "float32"  # float32 | bfloat16 (accelerators; CPU bfloat16 is slow)
    c.shard_size = 2048  # images per resumable shard under workdir/feature_shards/
    # Images per device per network pass within a batch; -1 = auto: on CPU cache-sized steps,
    # fewer images for the large early feature maps than for the rest (features.cpu_micro_batches:
    # 1 then 2 at 299 px, 2 then 8 at 128), the whole batch on accelerators; 0 = the whole batch.
    c.micro_batch = -1
    # On a CPU, one XLA device per core (4-21% faster than one device on both cores at 299 px,
    # 2 cores); 1 = JAX's default single device. See configs/common.py devices.
    common.devices(c, host_devices=-1)

    if arg == "smoke":
        c.weights = "random"
        c.download = False
        c.data.synthetic_n = 6
        c.data.synthetic_size = 96
        c.data.crop_size = 0
        c.data.image_size = 71
        c.batch_size = 4
        c.shard_size = 4
    elif arg == "pixels_smoke":
        c = get_config("smoke")
        c.source = "pixels"
        c.data.image_size = 16
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke', 'pixels_smoke' or nothing")
    return c
