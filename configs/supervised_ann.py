"""Supervised reference (a): an ANN on frozen Xception features (seed paper, section 4.1).

Run after extracting labelled features (configs/extract.py) into workdirs/synthetic_features:
  python main.py --config=configs/supervised_ann.py:medium --workdir=workdirs/ann_medium/seed0 \
      --config.data.path=workdirs/synthetic_features --config.seed=0
Fully connected ReLU layers, a sigmoid output, binary cross-entropy and Adam; labels 0/1. Reports
validation and test accuracy, ROC AUC and the confusion table in results.json.
Variants (`configs/supervised_ann.py:ARG`), the hidden sizes:
  small    (256,)
  medium   (512, 128) (default)
  large    (1024, 512, 128)
  smoke    (16,) on 2 generated blobs, a few steps (tests)
Every size over 5 seeds: configs/sweep.py:ann.
"""

import ml_collections

from configs import common, data_defaults

HIDDEN = {"small": (256,), "medium": (512, 128), "large": (1024, 512, 128)}


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "supervised_ann"
    c.seed = 0  # initialisation, dropout and batch order (not the split)
    # eval_every: steps between validation accuracies in the history; 0 = never
    common.cadence(c, log_every=50, checkpoint_every=1000, eval_every=200)
    common.devices(c)

    c.data = data_defaults.features_data("workdirs/synthetic_features")
    c.standardize = True  # z-score each feature with train-split statistics

    c.split = ml_collections.ConfigDict()
    c.split.val_fraction = 0.15
    c.split.test_fraction = 0.15
    c.split.seed = 0  # fixed across training seeds: the seeds vary only the training
    # A predefined test set instead of test_fraction: the rows whose `csv_split_column` in this
    # CSV is `csv_test` (e.g. the real sample's labels.csv: its 'validation' folder); val is then
    # val_fraction of the other rows of each class. '' = split by the fractions.
    c.split.csv = ""
    c.split.csv_id_column = "GalaxyID"
    c.split.csv_split_column = "split"
    c.split.csv_test = "validation"

    c.model = ml_collections.ConfigDict()
    c.model.hidden = HIDDEN["medium"]
    c.model.dropout = 0.2

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-3  # Adam
    c.optim.schedule = "constant"  # constant | cosine (decays lr to 0 at optim.steps)
    c.optim.batch_size = 64
    c.optim.steps = 2000

    if arg in HIDDEN:
        c.model.hidden = HIDDEN[arg]
    elif arg == "smoke":
        c.data = data_defaults.blobs_data(n=200, dim=16, n_clusters=2)
        c.model.hidden = (16,)
        c.optim.batch_size = 32
        c.optim.steps = 40
        c.log_every = 10
        c.eval_every = 20
        c.checkpoint_every = 20
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use small, medium, large or smoke")
    return c
