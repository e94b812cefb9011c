"""Image preprocessing and training augmentations: pure functions of arrays.

Everything here runs under `jax.jit`; sizes are static arguments. The order for Xception is
centre crop -> resize -> scale to [-1, 1] (`preprocess`), then, for training only, `augment` on
the scaled images. `to_rgb_np` is the one NumPy helper: decoders call it so every source hands out
[H, W, 3] uint8 whatever the file held (grayscale, RGBA, palette).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def to_rgb_np(image: np.ndarray) -> np.ndarray:
    """[H, W], [H, W, 1], [H, W, 3] or [H, W, 4] uint8 -> [H, W, 3] uint8.

    Grayscale is replicated to three channels; the alpha channel of RGBA is dropped (survey
    cutouts carry no meaningful transparency, and compositing on black would darken them).
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an [H, W, 1|3|4] image, got shape {image.shape}")
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    return np.ascontiguousarray(image, dtype=np.uint8)


def to_rgb(images: jnp.ndarray) -> jnp.ndarray:
    """[B, H, W] or [B, H, W, 1|3|4] -> [B, H, W, 3], same dtype; the jnp twin of `to_rgb_np`."""
    if images.ndim == 3:
        images = images[..., None]
    channels = images.shape[-1]
    if channels == 1:
        return jnp.repeat(images, 3, axis=-1)
    if channels == 4:
        return images[..., :3]
    if channels != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {images.shape}")
    return images


def center_crop(images: jnp.ndarray, crop_size: int | None) -> jnp.ndarray:
    """[B, H, W, C] -> [B, c, c, C], the centre c x c window; a no-op if c is 0/None or >= H, W.

    The Kaggle winner cropped 424 -> 207: the galaxy sits in the centre and the border holds
    mostly sky and neighbours.
    """
    h, w = images.shape[1:3]
    if not crop_size or (crop_size >= h and crop_size >= w):
        return images
    ch, cw = min(crop_size, h), min(crop_size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[:, top : top + ch, left : left + cw]


def resize(images: jnp.ndarray, image_size: int) -> jnp.ndarray:
    """[B, H, W, C] -> [B, S, S, C] float32, bilinear with antialiasing.

    Antialiasing matters only when shrinking (424 -> 299 without a crop): without it bilinear
    samples skip pixels and alias the noise. When enlarging (207 -> 299) it has no effect. This
    matches `tf.image.resize(..., antialias=True)`, not Keras' `load_img` (PIL nearest).
    """
    images = images.astype(jnp.float32)
    b, h, w, c = images.shape
    if (h, w) == (image_size, image_size):
        return images
    return jax.image.resize(images, (b, image_size, image_size, c), "bilinear", antialias=True)


def xception_scale(images: jnp.ndarray) -> jnp.ndarray:
    """uint8-range values -> [-1, 1], Keras' `xception.preprocess_input` ('tf' mode)."""
    return images.astype(jnp.float32) / 127.5 - 1.0


@functools.partial(jax.jit, static_argnames=("crop_size", "image_size"))
def preprocess(images, *, crop_size: int | None, image_size: int) -> jnp.ndarray:
    """Images for Xception.

    Args:
      images: [B, H, W, 3] uint8 (NumPy or jnp); 1 or 4 channels are converted to RGB.
      crop_size: centre crop side in pixels before resizing; 0/None or >= H keeps the full image.
      image_size: output side S (299 for Xception).
    Returns:
      [B, S, S, 3] float32 in [-1, 1].
    """
    images = to_rgb(jnp.asarray(images))
    images = resize(center_crop(images, crop_size), image_size)
    # Bilinear interpolation of values in [0, 255] stays in range up to rounding; clip the rest.
    return jnp.clip(xception_scale(images), -1.0, 1.0)


# ----------------------------------------------------------------------------- augmentations
# They act on one scaled image [S, S, 3] in [-1, 1]; `augment` vmaps them over a batch with one
# key per image. Galaxies have no preferred orientation or handedness, so all 8 symmetries of the
# square are label-preserving.


def dihedral(image: jnp.ndarray, k) -> jnp.ndarray:
    """One of the 8 right-angle rotations and flips of a square [S, S, C] image; k in [0, 8)."""

    def branch(i):
        return lambda x: jnp.rot90(x if i < 4 else x[:, ::-1], k=i % 4, axes=(0, 1))

    return jax.lax.switch(k, [branch(i) for i in range(8)], image)


def rotate_zoom(image: jnp.ndarray, angle_rad, zoom) -> jnp.ndarray:
    """Rotates [S, S, C] by `angle_rad` about the centre and magnifies by `zoom` (>1 zooms in).

    Bilinear sampling; pixels from outside the frame repeat the nearest edge (sky, not black).
    """
    s0, s1 = image.shape[:2]
    c0, c1 = (s0 - 1) / 2.0, (s1 - 1) / 2.0
    yy, xx = jnp.meshgrid(
        jnp.arange(s0, dtype=jnp.float32), jnp.arange(s1, dtype=jnp.float32), indexing="ij"
    )
    cos, sin = jnp.cos(angle_rad) / zoom, jnp.sin(angle_rad) / zoom
    src_y = c0 + cos * (yy - c0) - sin * (xx - c1)
    src_x = c1 + sin * (yy - c0) + cos * (xx - c1)
    sample = lambda ch: jax.scipy.ndimage.map_coordinates(
        ch, [src_y, src_x], order=1, mode="nearest"
    )
    return jax.vmap(sample, in_axes=2, out_axes=2)(image)


def brightness(image: jnp.ndarray, delta) -> jnp.ndarray:
    """Adds `delta` (in [-1, 1] units) to a scaled image and clips to [-1, 1]."""
    return jnp.clip(image + delta, -1.0, 1.0)


def augment_one(key, image, *, max_angle_deg: float, max_zoom: float, max_brightness: float):
    """A random dihedral symmetry, rotation in +-max_angle_deg, zoom in [1, max_zoom] and
    brightness shift in +-max_brightness of one [S, S, 3] image in [-1, 1]."""
    k_sym, k_ang, k_zoom, k_bri = jax.random.split(key, 4)
    image = dihedral(image, jax.random.randint(k_sym, (), 0, 8))
    if max_angle_deg or max_zoom > 1.0:
        angle = jnp.deg2rad(jax.random.uniform(k_ang, (), minval=-1.0, maxval=1.0) * max_angle_deg)
        zoom = jax.random.uniform(k_zoom, (), minval=1.0, maxval=max(max_zoom, 1.0))
        image = rotate_zoom(image, angle, zoom)
    if max_brightness:
        delta = jax.random.uniform(k_bri, (), minval=-max_brightness, maxval=max_brightness)
        image = brightness(image, delta)
    return image


@functools.partial(jax.jit, static_argnames=("max_angle_deg", "max_zoom", "max_brightness"))
def augment(
    key,
    images,
    *,
    max_angle_deg: float = 10.0,
    max_zoom: float = 1.1,
    max_brightness: float = 0.1,
) -> jnp.ndarray:
    """Training augmentation of [B, S, S, 3] float32 in [-1, 1] (the output of `preprocess`).

    One independent draw per image from `key`; use `jax.random.fold_in(key, step)` per step.
    The defaults are deliberately small: a galaxy's class must not change under them.
    """
    keys = jax.random.split(key, images.shape[0])
    fn = functools.partial(
        augment_one, max_angle_deg=max_angle_deg, max_zoom=max_zoom, max_brightness=max_brightness
    )
    return jax.vmap(fn)(keys, images)


# ------------------------------------------------------------- self-supervised views (ssl mode)
# Stronger than `augment`, for contrastive pretraining (galaxy_jax/simclr.py), but still what a
# telescope could have done to the same galaxy: any orientation, a slightly other pointing and
# scale, another exposure (flux), seeing (PSF) and sky noise. No colour jitter or large crops,
# which could turn a galaxy into another class (a cut-off disc, a reddened spiral).


def rotate_zoom_shift(image: jnp.ndarray, angle_rad, zoom, shift) -> jnp.ndarray:
    """`rotate_zoom` about a centre moved by `shift` ([2] pixels, y and x): a rotated, zoomed
    crop of [S, S, C]. Bilinear sampling; outside the frame repeats the nearest edge."""
    s0, s1 = image.shape[:2]
    c0, c1 = (s0 - 1) / 2.0, (s1 - 1) / 2.0
    yy, xx = jnp.meshgrid(
        jnp.arange(s0, dtype=jnp.float32), jnp.arange(s1, dtype=jnp.float32), indexing="ij"
    )
    cos, sin = jnp.cos(angle_rad) / zoom, jnp.sin(angle_rad) / zoom
    src_y = c0 + shift[0] + cos * (yy - c0) - sin * (xx - c1)
    src_x = c1 + shift[1] + sin * (yy - c0) + cos * (xx - c1)
    sample = lambda ch: jax.scipy.ndimage.map_coordinates(
        ch, [src_y, src_x], order=1, mode="nearest"
    )
    return jax.vmap(sample, in_axes=2, out_axes=2)(image)


def gaussian_blur(image: jnp.ndarray, sigma, radius: int) -> jnp.ndarray:
    """Separable Gaussian blur of [S, S, C] with standard deviation `sigma` pixels (traced; 0 or
    tiny leaves the image unchanged) and a static kernel of 2 * radius + 1 taps. Edge padding."""
    if radius <= 0:
        return image
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    w = jnp.exp(-0.5 * (taps / jnp.maximum(sigma, 1e-2)) ** 2)
    w = w / w.sum()
    h, wd = image.shape[:2]
    xp = jnp.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="edge")
    image = sum(w[i] * xp[i : i + h] for i in range(2 * radius + 1))
    xp = jnp.pad(image, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    return sum(w[i] * xp[:, i : i + wd] for i in range(2 * radius + 1))


def flux_scale(image: jnp.ndarray, factor) -> jnp.ndarray:
    """Multiplies the displayed flux (pixel values in [0, 255] units, i.e. x + 1 in [-1, 1]
    units) by `factor`, clipping to [-1, 1]: a longer or shorter exposure of the same sky."""
    return jnp.clip((image + 1.0) * factor - 1.0, -1.0, 1.0)


def ssl_view_one(
    key,
    image,
    *,
    max_angle_deg: float,
    min_zoom: float,
    max_zoom: float,
    max_shift: float,
    min_flux: float,
    max_flux: float,
    max_noise: float,
    max_blur: float,
):
    """One random view of one [S, S, C] image in [-1, 1], all draws from `key`, in this order:
    a dihedral symmetry (exact: a permutation of the pixels); a rotation in +-max_angle_deg,
    zoom in [min_zoom, max_zoom] and shift of the centre by up to max_shift * S pixels per axis
    (one bilinear resampling); a Gaussian PSF blur of sigma in [0, max_blur] pixels; a flux
    factor in [min_flux, max_flux]; Gaussian noise of sigma in [0, max_noise] ([-1, 1] units).
    A step whose bounds make it the identity is not compiled in."""
    k_sym, k_ang, k_zoom, k_shift, k_blur, k_flux, k_sig, k_noise = jax.random.split(key, 8)
    image = dihedral(image, jax.random.randint(k_sym, (), 0, 8))
    if max_angle_deg or min_zoom != 1.0 or max_zoom != 1.0 or max_shift:
        angle = jnp.deg2rad(jax.random.uniform(k_ang, (), minval=-1.0, maxval=1.0) * max_angle_deg)
        zoom = jax.random.uniform(k_zoom, (), minval=min_zoom, maxval=max_zoom)
        shift = jax.random.uniform(k_shift, (2,), minval=-1.0, maxval=1.0)
        image = rotate_zoom_shift(image, angle, zoom, shift * max_shift * image.shape[0])
    if max_blur:
        sigma = jax.random.uniform(k_blur, (), minval=0.0, maxval=max_blur)
        image = gaussian_blur(image, sigma, radius=int(np.ceil(3 * max_blur)))
    if min_flux != 1.0 or max_flux != 1.0:
        image = flux_scale(image, jax.random.uniform(k_flux, (), minval=min_flux, maxval=max_flux))
    if max_noise:
        sigma = jax.random.uniform(k_sig, (), minval=0.0, maxval=max_noise)
        image = image + sigma * jax.random.normal(k_noise, image.shape, image.dtype)
    return jnp.clip(image, -1.0, 1.0)


SSL_VIEW_DEFAULTS = dict(
    max_angle_deg=180.0,  # with the dihedral group: any orientation
    min_zoom=0.9,
    max_zoom=1.25,
    max_shift=0.05,  # of the side, per axis
    min_flux=0.7,
    max_flux=1.3,
    max_noise=0.03,  # about 4/255
    max_blur=1.0,  # pixels of the model input
)


@functools.partial(jax.jit, static_argnames=tuple(SSL_VIEW_DEFAULTS))
def ssl_views(key, images, **kwargs) -> jnp.ndarray:
    """One random view per image of [B, S, S, C] float32 in [-1, 1] (see `ssl_view_one`; the
    bounds are static keyword arguments, defaults SSL_VIEW_DEFAULTS). One independent draw per
    image from `key`; fold in the step and the view index for two views of a batch."""
    fn = functools.partial(ssl_view_one, **{**SSL_VIEW_DEFAULTS, **kwargs})
    return jax.vmap(fn)(jax.random.split(key, images.shape[0]), images)
