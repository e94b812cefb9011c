"""The real 2,000-image Kaggle sample in ../shared/data, read as a folder dataset.

Its labels are spiral vs NON-spiral (PROVENANCE.md): 'non_spirals' is every galaxy that fails
the author's spiral cut, not a clean elliptical class.
"""

import os

import numpy as np
import pytest

from configs.data_defaults import KAGGLE_SAMPLE, get_data_config
from galaxy_jax.data.from_config import make_image_source

pytestmark = pytest.mark.skipif(
    not os.path.isdir(KAGGLE_SAMPLE),
    reason=f"real Kaggle sample not found at {KAGGLE_SAMPLE} (../shared/data beside the repo)",
)


def test_reads_all_2000_images_with_labels():
    cfg = get_data_config("folder")
    cfg.verify_images = True  # decodes every one of the 2,000 JPEGs
    src = make_image_source(cfg)
    assert len(src) == 2000
    assert src.class_names == ("non_spirals", "spirals")
    assert src.image_shape == (424, 424, 3)
    expected = {}
    with open(os.path.join(KAGGLE_SAMPLE, "labels.csv")) as f:
        next(f)
        for line in f:
            gid, _, label = line.split(",")[:3]
            expected[gid] = label
    assert len(expected) == 2000
    assert all(
        src.class_names[label] == expected[gid]
        for gid, label in zip(src.ids, src.labels, strict=True)
    )
    assert np.bincount(src.labels).tolist() == [1000, 1000]
    images = src.get(np.arange(0, 2000, 250))
    assert images.shape == (8, 424, 424, 3) and images.dtype == np.uint8
    cfg = get_data_config("folder")
    cfg.split = "validation"
    assert len(make_image_source(cfg)) == 600
