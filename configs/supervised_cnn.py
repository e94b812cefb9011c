"""Supervised reference (b): Xception fine-tuned end to end with a sigmoid head (section 4.1).

Run (ImageNet weights: configs/convert_weights.py, or downloaded on first use):
  python main.py --config=configs/supervised_cnn.py --workdir=workdirs/cnn/seed0
Binary cross-entropy, Adam, the training augmentations (dihedral symmetries, small rotations,
zoom and brightness shifts); batch norm in training mode for the updates, frozen in evaluation.
Data-parallel over all devices. Reports validation and test accuracy, ROC AUC and the confusion
table. Other data: --config.data.name=folder --config.data.folder=/path (configs/data_defaults.py);
a 2-core CPU needs a small input, e.g. --config.data.image_size=96. Scratch training:
--config.weights=random, with a narrower network if wanted: --config.model.width=0.25
--config.model.middle_blocks=2 (0.73M parameters instead of 20.9M; random weights only).
Variant `configs/supervised_cnn.py:smoke`: 16 small synthetic galaxies at 71x71, random weights,
2 steps (tests).
"""

import ml_collections

from configs import common, data_defaults


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "supervised_cnn"
    c.seed = 0  # head initialisation, augmentation and batch order (not the split)
    # eval_every: steps between validation accuracies (a pass over val); 0 = never
    common.cadence(c, log_every=20, checkpoint_every=200, eval_every=0)
    common.devices(c)

    c.data = data_defaults.get_data_config("synthetic")  # crop_size, image_size apply

    common.weights(c)  # weights: imagenet | random | a Flax .npz (e.g. an ssl encoder) or .h5
    c.dtype = "float32"  # float32 | bfloat16 (accelerators)

    c.split = ml_collections.ConfigDict()
    c.split.val_fraction = 0.15
    c.split.test_fraction = 0.15
    c.split.seed = 0
    # A predefined test set instead of test_fraction: the rows whose `csv_split_column` in this
    # CSV is `csv_test` (e.g. the real sample's labels.csv: its 'validation' folder); val is then
    # val_fraction of the other rows of each class. '' = split by the fractions.
    c.split.csv = ""
    c.split.csv_id_column = "GalaxyID"
    c.split.csv_split_column = "split"
    c.split.csv_test = "validation"

    c.model = ml_collections.ConfigDict()  # Xception + Dense(1)
    # A smaller Xception of the same design (galaxy_jax/models/xception.py), for weights='random'
    # only: a weights file fixes the architecture, and other values are then an error.
    c.model.width = 1.0  # channel multiplier (1.0 = Keras' Xception; 0.25 = 0.73M parameters
    #                      with middle_blocks=2)
    c.model.middle_blocks = 8  # middle-flow blocks, 0-8 (8 = Keras' Xception)

    c.augment = ml_collections.ConfigDict()  # galaxy_jax.data.preprocess.augment
    c.augment.max_angle_deg = 10.0
    c.augment.max_zoom = 1.1
    c.augment.max_brightness = 0.1

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-4  # Adam; small, as the backbone is pretrained
    c.optim.schedule = "constant"  # constant | cosine (decays lr to 0 at optim.steps)
    c.optim.batch_size = 32  # global, rounded up to a multiple of the device count
    c.optim.steps = 1000
    c.eval_batch_size = 64

    if arg == "smoke":
        c.weights = "random"
        c.download = False
        c.data.synthetic_n = 16
        c.data.synthetic_size = 96
        c.data.crop_size = 0
        c.data.image_size = 71
        c.optim.batch_size = 4
        c.optim.steps = 2
        c.eval_batch_size = 4
        c.log_every = 1
        c.checkpoint_every = 1
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
