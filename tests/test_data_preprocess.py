"""Preprocessing and augmentation: shapes, ranges, Xception scaling, compile-once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from galaxy_jax.data import preprocess as P


def _images(b=2, h=32, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (b, h, h, c), dtype=np.uint8)


def test_preprocess_shape_range_and_scaling():
    x = _images()
    y = P.preprocess(x, crop_size=16, image_size=16)  # crop only, no resize
    assert y.shape == (2, 16, 16, 3) and y.dtype == jnp.float32
    np.testing.assert_allclose(y, x[:, 8:24, 8:24] / 127.5 - 1.0, atol=1e-6)
    z = P.preprocess(x, crop_size=0, image_size=48)
    assert z.shape == (2, 48, 48, 3)
    assert float(z.min()) >= -1.0 and float(z.max()) <= 1.0


def test_crop_is_noop_when_larger_or_zero():
    x = _images()
    for crop in (0, None, 32, 64):
        np.testing.assert_array_equal(P.center_crop(x, crop), x)


def test_constant_image_stays_constant_through_resize():
    x = np.full((1, 40, 40, 3), 200, np.uint8)
    np.testing.assert_allclose(
        P.preprocess(x, crop_size=20, image_size=29), 200 / 127.5 - 1, atol=1e-5
    )


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 32, 32, 1), (2, 32, 32, 4)])
def test_grayscale_and_rgba_become_rgb(shape):
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    y = P.preprocess(x, crop_size=0, image_size=32)
    assert y.shape == (2, 32, 32, 3)
    assert P.to_rgb_np(x[0]).shape == (32, 32, 3)
    if len(shape) == 4 and shape[-1] == 4:
        np.testing.assert_allclose(y, x[..., :3] / 127.5 - 1, atol=1e-6)


def test_preprocess_compiles_once_per_shape():
    x = _images(h=24)
    before = P.preprocess._cache_size()
    for _ in range(3):
        P.preprocess(x, crop_size=12, image_size=20)
    assert P.preprocess._cache_size() == before + 1


def test_dihedral_gives_the_8_symmetries():
    image = jnp.asarray(_images(1, 8)[0], jnp.float32)
    outs = {np.asarray(P.dihedral(image, k)).tobytes() for k in range(8)}
    assert len(outs) == 8
    np.testing.assert_array_equal(P.dihedral(image, 0), image)


def test_rotate_zoom_identity_and_augment():
    image = jnp.asarray(_images(1, 16)[0], jnp.float32) / 127.5 - 1
    np.testing.assert_allclose(P.rotate_zoom(image, 0.0, 1.0), image, atol=1e-5)
    batch = jnp.stack([image] * 4)
    a = P.augment(jax.random.key(0), batch)
    b = P.augment(jax.random.key(0), batch)
    assert a.shape == batch.shape and float(jnp.abs(a).max()) <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, P.augment(jax.random.key(1), batch))
