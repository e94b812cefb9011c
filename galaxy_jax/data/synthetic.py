"""Synthetic galaxies: the offline default dataset, with exact labels.

Ellipticals are smooth Sersic profiles (n ~ 4); spirals are an exponential disc with a bulge and
2-4 logarithmic arms. Both get a random axis ratio or inclination, position angle and size, a
colour, background stars, PSF blur, sky noise and an asinh stretch, roughly the look of the SDSS
cutouts in the Kaggle data. Each galaxy's flux is set so that its brightest pixel stays below
white after the stretch: cores are never clipped (only bright foreground stars may saturate), so
ellipticals keep their concentrated Sersic centres. Image i of seed s depends only on (s, i), so
any subset renders the same pixels in any order or process, and nothing needs to be stored.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np
from scipy import ndimage

from galaxy_jax.data.image_source import ImageSource

CLASS_NAMES = ("elliptical", "spiral")
ELLIPTICAL, SPIRAL = 0, 1
_REFERENCE_SIZE = 424.0  # the Kaggle geometry; lengths below are in pixels at this size
STRETCH = 8.0  # a of the display stretch asinh(a x) / asinh(a), as x in [0, 1] goes to [0, 1]
PEAK_RANGE = (0.7, 0.92)  # the galaxy's brightest pixel after the stretch, as a fraction of 255
BULGE_PEAK = 3.0  # a spiral's bulge centre, in units of bulge_fraction x the disc's centre


def synthetic_labels(n: int, seed: int) -> np.ndarray:
    """[n] int32, half elliptical (0) and half spiral (1) in a seeded random order."""
    return np.random.default_rng([seed, 2**31]).permutation(np.arange(n) % 2).astype(np.int32)


def _sersic(r, r_e, n):
    b = float(2.0 * n - 1.0 / 3.0)  # Ciotti & Bertin's approximation of b_n, good for n > 0.5
    return np.exp(-b * ((r / r_e) ** (1.0 / n) - 1.0))


def render_galaxy(rng: np.random.Generator, label: int, size: int = 424) -> np.ndarray:
    """One galaxy of class `label` (0 elliptical, 1 spiral) -> [size, size, 3] uint8."""
    s = size / _REFERENCE_SIZE
    coords = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    # NumPy scalars would promote the float32 grids to float64 (NEP 50); draw Python floats.
    yy = yy - float(rng.normal(0, 3 * s))
    xx = xx - float(rng.normal(0, 3 * s))
    pa = float(rng.uniform(0, np.pi))
    cos, sin = float(np.cos(pa)), float(np.sin(pa))
    u = cos * xx + sin * yy  # along the major axis
    v = -sin * xx + cos * yy
    image = np.zeros((size, size, 3), np.float32)

    if label == ELLIPTICAL:
        q = float(rng.uniform(0.45, 1.0))
        r = np.sqrt(u**2 + (v / q) ** 2) + 0.5 * s
        light = _sersic(r, float(rng.uniform(8, 22) * s), float(rng.uniform(3.0, 5.0)))
        colour = (np.array([1.0, 0.82, 0.62]) * rng.uniform(0.9, 1.1, 3)).astype(np.float32)
        image += light[..., None] * colour
    else:
        q = float(
            np.cos(np.deg2rad(rng.uniform(0, 65)))
        )  # inclination; edge-on discs hide their arms
        v = v / q
        r = np.sqrt(u**2 + v**2) + 0.5 * s
        theta = np.arctan2(v, u)
        h = float(rng.uniform(12, 28) * s)  # disc scale length
        arms = int(rng.integers(2, 5))
        winding = float(rng.choice([-1.0, 1.0]) / np.tan(np.deg2rad(rng.uniform(12, 30))))
        phase = arms * (theta - winding * np.log(r / h)) + float(rng.uniform(0, 2 * np.pi))
        arm = (0.5 * (1.0 + np.cos(phase))) ** float(rng.uniform(2.0, 4.0))
        disc = np.exp(-r / h) * (0.25 + 1.5 * arm)
        r_b, n_b = float(rng.uniform(0.15, 0.35) * h), float(rng.uniform(1.5, 3.0))
        # The bulge is normalised at its centre, not at r_e: a Sersic cusp normalised at r_e is
        # 15-300x the disc there, and scaling the galaxy to an unclipped peak would then sink the
        # arms into the sky noise.
        bulge = _sersic(r, r_b, n_b) * (BULGE_PEAK / _sersic(0.5 * s, r_b, n_b))
        bulge_fraction = float(rng.uniform(0.2, 0.6))
        disc_colour = (np.array([0.72, 0.82, 1.0]) * rng.uniform(0.9, 1.1, 3)).astype(np.float32)
        bulge_colour = np.array([1.0, 0.85, 0.65], np.float32)
        image += (0.6 * disc)[..., None] * disc_colour
        image += (bulge_fraction * bulge)[..., None] * bulge_colour

    # The PSF blurs galaxy and stars alike; the galaxy is blurred on its own first so that its
    # flux can be set from its blurred peak (below).
    psf_sigma = float(rng.uniform(1.0, 2.0) * s)
    blur = lambda a: ndimage.gaussian_filter(a, sigma=(psf_sigma, psf_sigma, 0), truncate=3.0)
    image = blur(image)
    # Flux scale: the galaxy's brightest pixel lands at PEAK_RANGE of the display range after the
    # stretch, never above it. Scaling by a fixed factor instead put the centres of compact
    # Sersic profiles far past the clip, so ellipticals came out flat-topped (statmorph measured
    # n ~ 0.8 and a lower Gini than spirals) while real SDSS cutouts keep their cores resolved.
    peak = float(rng.uniform(*PEAK_RANGE))
    image *= float(np.sinh(peak * np.arcsinh(STRETCH)) / STRETCH) / max(float(image.max()), 1e-12)
    # Foreground stars, PSF-shaped; bright ones may saturate, as they do in the survey images.
    stars = np.zeros_like(image)
    for _ in range(rng.integers(0, 6)):
        y, x = rng.integers(0, size, 2)
        stars[y, x] += rng.uniform(20, 200) * s * s * rng.uniform(0.8, 1.0, 3)
    image += blur(stars)
    image += 0.012 * rng.standard_normal(image.shape, dtype=np.float32) + 0.01  # sky + noise
    # asinh stretch: bright cores without losing the faint disc (SDSS colour images use one).
    image = np.arcsinh(STRETCH * np.maximum(image, 0.0)) / np.arcsinh(STRETCH)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


class SyntheticRenderer:
    """Picklable `get` for an ImageSource: indices -> [B, size, size, 3] uint8 galaxies."""

    def __init__(self, labels: np.ndarray, size: int, seed: int):
        self.labels, self.size, self.seed = labels, size, seed

    def __call__(self, indices) -> np.ndarray:
        indices = np.atleast_1d(np.asarray(indices))
        out = np.empty((len(indices), self.size, self.size, 3), np.uint8)

        def render(j):
            rng = np.random.default_rng([self.seed, int(indices[j])])
            out[j] = render_galaxy(rng, int(self.labels[indices[j]]), self.size)

        if len(indices) == 1:
            render(0)
        else:  # NumPy's ufuncs release the GIL, so threads use every core
            with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
                list(pool.map(render, range(len(indices))))
        return out


def make_synthetic_source(n: int, image_size: int = 424, seed: int = 0) -> ImageSource:
    """`n` synthetic galaxies of side `image_size`, exact labels, class_names CLASS_NAMES."""
    labels = synthetic_labels(n, seed)
    ids = np.asarray([f"synthetic-{seed}-{i}" for i in range(n)])
    return ImageSource(
        ids,
        labels,
        CLASS_NAMES,
        SyntheticRenderer(labels, image_size, seed),
        (image_size, image_size, 3),
    )
