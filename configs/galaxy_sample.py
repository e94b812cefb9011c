"""The real 2,000-image Kaggle Galaxy Zoo sample: pixels vs features, k-means vs DEC, supervised.

The data (../shared/data/galaxy_zoo_kaggle_sample, PROVENANCE.md there): 1,000 "spirals" and
1,000 "non_spirals" chosen by a third party's cut on the Galaxy Zoo 2 vote fractions, spiral =
Class1.2 > 0.5 and Class4.1 > 0.5 and Class6.1 > 0.5 (6.1 is "anything odd? yes"), non-spiral =
everything else: NOT elliptical vs spiral. Its folders split each class 700 train / 300
validation; the supervised rows train on the 700s and test on the 300s (labels.csv, column split).

Every row of the table is one command (`bench/galaxy_sample.py` runs them all and writes
bench/results/galaxy_sample.json). First the features, once each:
  python main.py --config=configs/galaxy_sample.py:pixels_extract \\
      --workdir=workdirs/galaxy_sample/pixels64
  python main.py --config=configs/galaxy_sample.py:pixels_tta_extract \\
      --workdir=workdirs/galaxy_sample/pixels64_tta
  python main.py --config=configs/galaxy_sample.py:pixels_tta_std_extract \\
      --workdir=workdirs/galaxy_sample/pixels64_tta_std
  python main.py --config=configs/galaxy_sample.py:xception_extract \\
      --workdir=workdirs/galaxy_sample/xception128        # ImageNet weights (the default)
Then, per seed N (the seed changes the clustering or training, never the data):
  python main.py --config=configs/galaxy_sample.py:kmeans_pixels \\
      --workdir=workdirs/galaxy_sample/kmeans_pixels/seed0 --config.seed=0
Variants (`configs/galaxy_sample.py:ARG`; no ARG = pixels_extract):
  pixels_extract       64x64 grayscale pixels (crop 208, 4096-d) -> workdirs/galaxy_sample/pixels64
  pixels_tta_extract   the same, averaged over the 8 rotations/flips -> .../pixels64_tta
  pixels_tta_std_extract   and each image z-scored (standardize) -> .../pixels64_tta_std
  xception_extract     Xception features at 128 px (crop 208) -> .../xception128;
                       --config.weights=random for a seeded random network (no download)
  kmeans_pixels, dec_pixels            k-means / SAE 4096-500-500-2000-10 + DEC, 2 clusters
  kmeans_pixels_tta, dec_pixels_tta    the same on the rotation-averaged pixels
  kmeans_pixels_tta_std, dec_pixels_tta_std   on the rotation-averaged, z-scored pixels
  idec_pixels_tta      DEC with the reconstruction term (IDEC, gamma 1)
  dec_pixels_tta_4     4 clusters, scored by dominant label
  kmeans_xception, dec_xception        on .../xception128 (--config.data.path for another dir)
  ann_pixels           supervised MLP (512, 128) on the pixels, the sample's train/test split
  cnn_imagenet         Keras' Xception fine-tuned from ImageNet weights, 96 px, 150 steps
  cnn_scratch          a narrow Xception (width 0.25, 2 middle blocks: 0.73M parameters, not
                       Keras' 20.9M) trained from scratch (weights='random') on 72 px RGB, same
                       split: Adam 1e-3 cosine-decayed over 1,000 steps of 32 (~25 epochs),
                       the training augmentations; ~0.45 s a step, ~7.5 min a seed on a shared
                       2-core CPU
  smoke                pixel extraction of 6 small synthetic galaxies (tests)
The crop is 208, not the Kaggle winner's 207: 424 - 208 is even, so the crop window of a
rotated or flipped image is exactly the rotated window, and rotation averaging is exact.
"""

from configs import data_defaults, extract, galaxy_dec, supervised_ann, supervised_cnn

ROOT = "workdirs/galaxy_sample"  # relative to the repository root, where main.py runs
CROP = 208
PIXELS = f"{ROOT}/pixels64"
PIXELS_TTA = f"{ROOT}/pixels64_tta"
PIXELS_TTA_STD = f"{ROOT}/pixels64_tta_std"
XCEPTION = f"{ROOT}/xception128"
SPLIT_CSV = f"{data_defaults.KAGGLE_SAMPLE}/labels.csv"  # GalaxyID, split (train | validation)


def _sample_data(image_size):
    d = data_defaults.get_data_config("folder")  # the sample is the default data.folder
    d.crop_size = CROP
    d.image_size = image_size
    return d


def _extract(source, image_size, tta=False, standardize=False):
    c = extract.get_config()
    c.data = _sample_data(image_size)
    c.source = source
    c.grayscale = True
    c.tta = tta
    c.standardize = standardize
    return c


def _cluster(path, mode="dec"):
    c = galaxy_dec.get_config()
    c.mode = mode
    c.data.path = path
    # 2,000 images, batch 256: 500 steps are 64 epochs of the SAE (on the pixels its loss was
    # flat from step ~200 of a 1,000-step trial).
    c.sae.finetune_steps = 500
    c.dec.update_interval = 20  # 2,560 points between target updates, ~1.3 epochs
    c.dec.maxiter = 2000
    c.log_every = 50
    c.checkpoint_every = 500
    return c


def _split(c):
    c.split.csv = SPLIT_CSV
    c.split.csv_id_column = "GalaxyID"
    c.split.csv_split_column = "split"
    c.split.csv_test = "validation"  # the sample's 300 + 300 held-out folder is the test set
    c.split.val_fraction = 0.1  # of the 1,400 train-folder images: 70 per class, seeded
    return c


def get_config(arg=None):
    arg = arg or "pixels_extract"
    if arg == "pixels_extract":
        return _extract("pixels", 64)
    if arg == "pixels_tta_extract":
        return _extract("pixels", 64, tta=True)
    if arg == "pixels_tta_std_extract":
        return _extract("pixels", 64, tta=True, standardize=True)
    if arg == "xception_extract":
        return _extract("xception", 128)
    if arg == "kmeans_pixels":
        return _cluster(PIXELS, "kmeans")
    if arg == "dec_pixels":
        return _cluster(PIXELS)
    if arg == "kmeans_pixels_tta":
        return _cluster(PIXELS_TTA, "kmeans")
    if arg == "dec_pixels_tta":
        return _cluster(PIXELS_TTA)
    if arg == "kmeans_pixels_tta_std":
        return _cluster(PIXELS_TTA_STD, "kmeans")
    if arg == "dec_pixels_tta_std":
        return _cluster(PIXELS_TTA_STD)
    if arg == "idec_pixels_tta":
        c = _cluster(PIXELS_TTA)
        c.dec.gamma = 1.0
        return c
    if arg == "dec_pixels_tta_4":
        c = _cluster(PIXELS_TTA)
        c.dec.n_clusters = 4
        return c
    if arg == "kmeans_xception":
        return _cluster(XCEPTION, "kmeans")
    if arg == "dec_xception":
        return _cluster(XCEPTION)
    if arg == "ann_pixels":
        c = _split(supervised_ann.get_config("medium"))
        c.data.path = PIXELS
        return c
    if arg == "cnn_scratch":
        c = _split(supervised_cnn.get_config())
        c.data = _sample_data(72)  # RGB; Xception's smallest input is 71
        c.weights = "random"  # from scratch: no ImageNet weights
        c.download = False
        c.model.width = 0.25  # with 2 middle blocks 0.73M parameters, not Keras' 20.9M
        c.model.middle_blocks = 2
        c.optim.lr = 1e-3  # Adam; from scratch, not fine-tuning
        c.optim.schedule = "cosine"  # a constant lr left val accuracy swinging 0.67-0.90
        c.optim.batch_size = 32
        # 1,000 steps of 32: ~25 epochs of the 1,260 training images; val accuracy rose from
        # step ~600 and was flat over the last 200 steps (seed 0).
        c.optim.steps = 1000
        c.log_every = 50
        c.eval_every = 100  # 140 val images: a few seconds each
        c.checkpoint_every = 250
        return c
    if arg == "cnn_imagenet":
        # The seed's supervised reference (b): Keras' Xception fine-tuned from ImageNet weights
        # (configs/convert_weights.py first), binary cross-entropy, Adam. Cut to what a 2-core
        # CPU affords: 96 px (not 299), 150 steps of 32 (~4 epochs of the 1,260 training images).
        c = _split(supervised_cnn.get_config())
        c.data = _sample_data(96)
        c.weights = "imagenet"
        c.optim.lr = 1e-4
        c.optim.schedule = "cosine"
        c.optim.batch_size = 32
        c.optim.steps = 150
        c.log_every = 25
        c.eval_every = 0
        c.checkpoint_every = 50
        return c
    if arg == "smoke":
        c = extract.get_config("pixels_smoke")
        return c
    raise ValueError(f"unknown variant {arg!r}; see the docstring of configs/galaxy_sample.py")
