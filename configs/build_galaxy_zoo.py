"""Build Kaggle's Galaxy Zoo challenge as a TFDS array_record dataset and print class counts.

  python main.py --config=configs/build_galaxy_zoo.py --workdir=/tmp/galaxy_zoo_build \
      --config.data.manual_dir=~/Downloads/galaxy_zoo

The manual directory holds images_training_rev1.zip (or its extracted folder) and
training_solutions_rev1.csv. Variants (`configs/build_galaxy_zoo.py:ARG`):
  clean   the 'clean' label rule (t = 0.8) instead of 'dominant'
  folder  check the real 2,000-image sample (../shared/data) as a folder dataset
  smoke   the folder check on the real sample's validation split only (600 images)
"""

import ml_collections

from configs import common, data_defaults


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.mode = "build_dataset"
    common.devices(config)
    config.data = data_defaults.get_data_config("galaxy_zoo")
    if arg == "clean":
        config.data.label_rule = "clean"
    elif arg in ("folder", "smoke"):
        config.data = data_defaults.get_data_config("folder")
        if arg == "smoke":
            config.data.split = "validation"
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use clean, folder or smoke")
    return config
