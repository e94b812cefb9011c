"""FITS cutouts -> [H, W, 3] uint8 images, through astropy.io.fits and astropy.visualization.

A galaxy may come as one single-band file, one file per band, or one cube [bands, H, W]. Its
bands are mapped to the network's three channels and stretched:
  'lupton'  astropy.visualization.make_lupton_rgb (Lupton et al. 2004), three channels;
  'asinh'   astropy.visualization.AsinhStretch(a) of each channel after a PercentileInterval,
            the stretch Zoobot's documentation recommends for flux images.
Non-finite pixels (NaN, inf: masked or saturated pixels) are set to 0 before the stretch and
counted (`FitsReader.nonfinite`); an image with no finite pixel is bad input.

The same stretch applies to arrays that are not FITS files (`.npy` bands in a catalog, HDF5
bundles of flux), through `bands_to_rgb`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import zlib

import numpy as np
from absl import logging

from galaxy_jax.errors import UserError

FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
STRETCHES = ("asinh", "lupton")


def is_fits(path: str) -> bool:
    return str(path).lower().endswith(FITS_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class FitsOptions:
    """How bands become RGB (the `data.fits_*` config fields, configs/data_defaults.py).

    hdu: the HDU to read, by index or EXTNAME; -1 = the first HDU holding an image.
    channels: band index for each of (R, G, B); () = (0, 0, 0) for one band, (2, 1, 0) for
      three (bands listed blue to red, the reddest shown as red). Other band counts need it set.
    stretch: 'asinh' or 'lupton' (module docstring).
    asinh_a: AsinhStretch's a (smaller = stronger compression of bright cores).
    percentile: PercentileInterval before the asinh stretch (per channel).
    lupton_stretch, lupton_q, lupton_minimum: make_lupton_rgb's stretch, Q and minimum.
    """

    hdu: int | str = -1
    channels: tuple[int, ...] = ()
    stretch: str = "asinh"
    asinh_a: float = 0.1
    percentile: float = 99.5
    lupton_stretch: float = 0.5
    lupton_q: float = 8.0
    lupton_minimum: float = 0.0

    @classmethod
    def from_config(cls, d) -> FitsOptions:
        hdu = d.fits_hdu
        return cls(
            hdu=int(hdu) if str(hdu).lstrip("-").isdigit() else str(hdu),
            channels=tuple(int(c) for c in d.fits_channels),
            stretch=d.fits_stretch,
            asinh_a=float(d.fits_asinh_a),
            percentile=float(d.fits_percentile),
            lupton_stretch=float(d.fits_lupton_stretch),
            lupton_q=float(d.fits_lupton_q),
            lupton_minimum=float(d.fits_lupton_minimum),
        )

    def check(self) -> None:
        if self.stretch not in STRETCHES:
            raise UserError(
                f"data.fits_stretch must be one of {', '.join(STRETCHES)}, got {self.stretch!r}"
            )
        if self.channels and len(self.channels) != 3:
            raise UserError(f"data.fits_channels needs 3 band indices (R, G, B): {self.channels}")
        if not 0 < self.percentile <= 100:
            raise UserError(f"data.fits_percentile must be in (0, 100], got {self.percentile}")
        if self.asinh_a <= 0:
            raise UserError(f"data.fits_asinh_a must be > 0, got {self.asinh_a}")


def _channels(options: FitsOptions, n_bands: int, name: str) -> tuple[int, int, int]:
    ch = options.channels or {1: (0, 0, 0), 3: (2, 1, 0)}.get(n_bands)
    if ch is None:
        raise UserError(
            f"{name}: {n_bands} bands; set data.fits_channels to the band index of each of R, G, B"
        )
    if max(ch) >= n_bands or min(ch) < 0:
        raise UserError(f"{name}: data.fits_channels {tuple(ch)} names a band beyond its {n_bands}")
    return tuple(ch)


def bands_to_rgb(bands: np.ndarray, options: FitsOptions, name: str = "image"):
    """[B, H, W] (or [H, W]) flux -> ([H, W, 3] uint8, number of non-finite pixels set to 0)."""
    from astropy.visualization import AsinhStretch, PercentileInterval, make_lupton_rgb

    bands = np.asarray(bands, np.float64)
    if bands.ndim == 2:
        bands = bands[None]
    if bands.ndim != 3:
        raise UserError(f"{name}: expected [H, W] or [bands, H, W] data, got shape {bands.shape}")
    finite = np.isfinite(bands)
    if not finite.any():
        raise UserError(f"{name}: no finite pixel (all NaN/inf)")
    nonfinite = int(bands.size - finite.sum())
    if nonfinite:
        bands = np.where(finite, bands, 0.0)
    rgb = bands[list(_channels(options, len(bands), name))]
    if options.stretch == "lupton":
        image = make_lupton_rgb(
            rgb[0],
            rgb[1],
            rgb[2],
            minimum=options.lupton_minimum,
            stretch=options.lupton_stretch,
            Q=options.lupton_q,
        )
        return np.ascontiguousarray(image, np.uint8), nonfinite
    interval, stretch = PercentileInterval(options.percentile), AsinhStretch(options.asinh_a)
    out = np.empty(rgb.shape[1:] + (3,), np.uint8)
    for c in range(3):
        unit = stretch(interval(rgb[c], clip=True), clip=True)
        out[..., c] = np.round(255.0 * unit).astype(np.uint8)
    return out, nonfinite


def _image_hdu(hdul, hdu, path: str):
    if hdu != -1:
        try:
            h = hdul[hdu]
        except (KeyError, IndexError):
            names = [f"{i}:{x.name}" for i, x in enumerate(hdul)]
            raise UserError(f"{path}: no HDU {hdu!r} (it has {', '.join(names)})") from None
        if h.data is None:
            raise UserError(f"{path}: HDU {hdu!r} holds no image data")
        return h
    for h in hdul:
        if h.is_image and h.data is not None and h.data.ndim >= 2:
            return h
    raise UserError(f"{path}: no image HDU (every HDU is empty or a table)")


def read_bands(paths, hdu: int | str = -1) -> np.ndarray:
    """One FITS path (a 2-D image or a [bands, H, W] cube) or several single-band paths ->
    [B, H, W] float64. UserError naming the file for anything that is not such an image."""
    from astropy.io import fits

    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    planes = []
    for path in paths:
        try:
            with fits.open(path, memmap=False) as hdul:
                data = np.asarray(_image_hdu(hdul, hdu, path).data, np.float64)
        except UserError:
            raise
        except (OSError, ValueError, TypeError, IndexError, EOFError, zlib.error) as e:
            raise UserError(f"{path}: cannot read FITS ({type(e).__name__}: {e})") from None
        data = np.squeeze(data)  # a [1, H, W] single-band cube is one band
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3 or (len(paths) > 1 and len(data) != 1):
            raise UserError(
                f"{path}: image of shape {data.shape}; expected [H, W]"
                + (" (one band per file)" if len(paths) > 1 else " or a [bands, H, W] cube")
            )
        planes.append(data)
    shapes = {p.shape[1:] for p in planes}
    if len(shapes) > 1:
        raise UserError(f"{', '.join(map(str, paths))}: bands of different shapes {sorted(shapes)}")
    return np.concatenate(planes)


class FitsReader:
    """FITS path(s) -> [H, W, 3] uint8, counting non-finite pixels; safe across threads."""

    def __init__(self, options: FitsOptions):
        options.check()
        self.options = options
        self.nonfinite = {"images": 0, "pixels": 0}
        self._lock = threading.Lock()

    def __getstate__(self):  # picklable for worker processes (the lock is not)
        return {"options": self.options, "nonfinite": dict(self.nonfinite)}

    def __setstate__(self, state):
        self.__init__(state["options"])
        self.nonfinite = state["nonfinite"]

    def __call__(self, paths) -> np.ndarray:
        name = paths if isinstance(paths, str) else ",".join(map(str, paths))
        return self.from_bands(read_bands(paths, self.options.hdu), name)

    def from_bands(self, bands, name: str) -> np.ndarray:
        """[B, H, W] or [H, W] flux -> [H, W, 3] uint8 (bands_to_rgb), counted."""
        image, bad = bands_to_rgb(bands, self.options, name)
        if bad:
            with self._lock:
                self.nonfinite["images"] += 1
                self.nonfinite["pixels"] += bad
            logging.warning("%s: %d non-finite pixel(s) set to 0 before the stretch", name, bad)
        return image
