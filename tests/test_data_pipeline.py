"""The grain pipeline: order, contents, crop+resize in workers, prefetch to device."""

import numpy as np

from galaxy_jax.data import pipeline
from galaxy_jax.data.image_source import from_arrays
from galaxy_jax.data.preprocess import preprocess
from galaxy_jax.data.synthetic import make_synthetic_source


def test_batches_in_order_with_labels_no_workers():
    images = np.random.default_rng(0).integers(0, 256, (10, 20, 20, 3), dtype=np.uint8)
    src = from_arrays(images, labels=np.arange(10) % 2)
    out = list(pipeline.batches(src, 4, worker_count=0))
    assert [len(b["index"]) for b in out] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in out]), images)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in out]), np.arange(10) % 2)


def test_workers_crop_resize_and_device_prefetch():
    src = make_synthetic_source(6, 40, seed=1)
    it = pipeline.batches(src, 3, crop_size=20, image_size=16, worker_count=1)
    out = list(pipeline.prefetch_to_device(it))
    assert [b["image"].shape for b in out] == [(3, 16, 16, 3)] * 2
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in out]), np.arange(6))
    x = preprocess(out[0]["image"], crop_size=0, image_size=16)
    y = preprocess(src.get([0, 1, 2]), crop_size=20, image_size=16)
    assert float(np.abs(x - y).mean()) < 0.05  # PIL vs jax bilinear: close, not bit-equal


def test_shuffle_is_seeded():
    src = from_arrays(np.zeros((8, 4, 4, 3), np.uint8))
    order = lambda seed: np.concatenate(
        [b["index"] for b in pipeline.batches(src, 8, shuffle=True, seed=seed, worker_count=0)]
    )
    np.testing.assert_array_equal(order(3), order(3))
    assert sorted(order(3).tolist()) == list(range(8))
