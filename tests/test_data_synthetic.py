"""Synthetic galaxies: deterministic per seed, exact balanced labels, the dispatcher."""

import pickle

import numpy as np
import pytest

from configs.data_defaults import get_data_config
from galaxy_jax.data.from_config import make_image_source
from galaxy_jax.data.synthetic import make_synthetic_source
from galaxy_jax.errors import UserError


def test_deterministic_per_seed_and_order_free():
    a = make_synthetic_source(6, 48, seed=3)
    b = make_synthetic_source(6, 48, seed=3)
    x = a.get(np.arange(6))
    assert x.shape == (6, 48, 48, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[::-1], b.get(np.arange(6)[::-1]))
    np.testing.assert_array_equal(x[2], b.get([2])[0])
    np.testing.assert_array_equal(a.labels, b.labels)
    c = make_synthetic_source(6, 48, seed=4)
    assert not np.array_equal(x, c.get(np.arange(6)))


def test_labels_exact_and_balanced():
    src = make_synthetic_source(10, 32, seed=0)
    assert src.class_names == ("elliptical", "spiral")
    assert np.bincount(src.labels).tolist() == [5, 5]


def test_default_geometry_and_pickle():
    src = make_image_source(get_data_config("synthetic"))
    assert src.image_shape == (424, 424, 3) and len(src) == 512
    get = pickle.loads(pickle.dumps(src.get))
    image = get([0])[0]
    assert image.shape == (424, 424, 3)
    assert image.max() > 100 and np.median(image) < 40  # a bright galaxy on dark sky


def test_unknown_dataset_name_lists_known():
    cfg = get_data_config()
    cfg.name = "sdss"
    with pytest.raises(UserError, match="synthetic, folder, csv, catalog, hdf5, galaxy_zoo"):
        make_image_source(cfg)
