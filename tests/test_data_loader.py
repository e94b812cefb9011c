"""The image loader: batches in the order given, rows of other arrays alongside, one batch read
ahead, sharded over the devices."""

import contextlib

import numpy as np
import pytest

from galaxy_jax import parallel
from galaxy_jax.data.image_source import from_arrays
from galaxy_jax.data.loader import image_batches
from galaxy_jax.errors import UserError


def test_batches_in_the_given_order_with_their_labels():
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
    labels = (np.arange(10) % 2).astype(np.int32)
    src = from_arrays(images)
    order = [np.array([3, 1]), np.array([9, 9]), np.array([0, 4])]
    out = list(image_batches(src, order, labels))
    assert len(out) == 3
    for (x, y), idx in zip(out, order, strict=True):
        assert x.sharding == parallel.sharded() and y.sharding == parallel.sharded()
        np.testing.assert_array_equal(np.asarray(x), images[idx])
        np.testing.assert_array_equal(np.asarray(y), labels[idx])


def test_reads_one_batch_ahead_and_stops_when_closed():
    src = from_arrays(np.zeros((6, 4, 4, 3), np.uint8))
    requested = []
    get = src.get
    src.get = lambda idx: (requested.append(np.asarray(idx).tolist()), get(idx))[1]
    drawn = []

    def order():
        for i in range(3):
            drawn.append(i)
            yield np.array([2 * i, 2 * i + 1])

    with contextlib.closing(image_batches(src, order())) as batches:
        next(batches)
        assert drawn == [0, 1]  # batch 1 is drawn (and read) while batch 0 is used
    assert drawn == [0, 1] and requested[0] == [0, 1]


def test_non_uint8_images_are_an_error():
    src = from_arrays(np.zeros((2, 4, 4, 3), np.uint8))
    src.get = lambda idx: np.zeros((len(idx), 4, 4, 3), np.float32)
    with pytest.raises(UserError, match="expected uint8"):
        next(image_batches(src, [np.array([0, 1])]))
