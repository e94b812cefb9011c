"""An HDF5 bundle as the dataset, read lazily by slices: memory stays flat however large it is.

The Galaxy10 DECaLS layout is the default: `images` [N, H, W, 3] uint8, labels `ans` [N], and
per-row `ra`, `dec`, `redshift`, `pxscale`. Any other layout is given by the dataset names:
  data.hdf5_path            the .h5 / .hdf5 file
  data.hdf5_images          the image dataset: uint8 [N, H, W] or [N, H, W, 3] images, or float
                            flux [N, H, W] / [N, bands, H, W] (stretched as galaxy_jax.data.fits)
  data.hdf5_labels          integer labels ('' for none; negative = unknown)
  data.hdf5_ids             ids ('' = the row number)
  data.hdf5_class_names     names of the label values, e.g. Galaxy10's ten classes (optional)
Every other 1-D dataset of N rows (ra, dec, redshift, ...) is carried through as a catalog
column into the exports, row for row. Only those small columns are read up front; images are
read per batch, as sorted slices of the file.
"""

from __future__ import annotations

import os

import numpy as np

from galaxy_jax.data import fits
from galaxy_jax.data.image_source import ImageSource
from galaxy_jax.data.preprocess import to_rgb_np
from galaxy_jax.errors import UserError


class Hdf5Images:
    """Picklable `get`: indices -> [B, H, W, 3] uint8 read from one dataset of an HDF5 file.

    The file is opened on first use in each process (h5py handles do not survive pickling)."""

    def __init__(self, path: str, dataset: str, fits_reader: fits.FitsReader, image_shape):
        self.path, self.dataset, self.reader = path, dataset, fits_reader
        self.image_shape = image_shape
        self._file = None

    def __getstate__(self):
        return {**self.__dict__, "_file": None}

    def _ds(self):
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file[self.dataset]

    def to_rgb(self, item: np.ndarray, row: int) -> np.ndarray:
        name = f"{self.path}:{self.dataset}[{row}]"
        if item.dtype != np.uint8:
            return self.reader.from_bands(item, name)
        try:
            return to_rgb_np(item)
        except ValueError as e:
            raise UserError(f"{name}: {e}") from None

    def __call__(self, indices) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(indices, np.int64))
        order = np.unique(idx)  # h5py reads increasing indices; duplicates once
        data = self._ds()[order]
        pos = np.searchsorted(order, idx)
        return np.stack([self.to_rgb(data[p], int(idx[k])) for k, p in enumerate(pos)])


def _decoded(values: np.ndarray) -> np.ndarray:
    """Byte strings (h5py's fixed and variable-length strings) as text."""
    if values.dtype.kind == "S" or (
        values.dtype == object and len(values) and isinstance(values[0], bytes)
    ):
        return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values])
    return values


def make_hdf5_source(data_config) -> ImageSource:
    """The ImageSource of an HDF5 bundle (module docstring)."""
    import h5py

    d = data_config
    path = os.path.abspath(os.path.expanduser(d.hdf5_path))
    if not os.path.isfile(path):
        raise UserError(f"data.hdf5_path: no such file {path!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: cannot open as HDF5 ({e})") from None
    with f:
        names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
        if d.hdf5_images not in names:
            raise UserError(
                f"{path}: no dataset {d.hdf5_images!r} (data.hdf5_images); it has "
                f"{', '.join(names) or 'no datasets'}"
            )
        images = f[d.hdf5_images]
        n = images.shape[0]
        if images.ndim not in (3, 4) or n == 0:
            raise UserError(
                f"{path}:{d.hdf5_images} has shape {images.shape}; expected [N, H, W], "
                "[N, H, W, 3] (uint8) or [N, bands, H, W] (flux)"
            )

        def column(name: str, what: str) -> np.ndarray:
            if name not in names:
                raise UserError(f"{path}: no dataset {name!r} ({what}); it has {', '.join(names)}")
            values = f[name][()]
            if values.shape[:1] != (n,):
                raise UserError(f"{path}:{name} has {values.shape[:1]} rows, images have {n}")
            return values

        labels = None
        if d.hdf5_labels:
            labels = column(d.hdf5_labels, "data.hdf5_labels").astype(np.int64).reshape(n)
            labels = np.where(labels < 0, -1, labels).astype(np.int32)
        ids = np.arange(n).astype(str)
        if d.hdf5_ids:
            raw = column(d.hdf5_ids, "data.hdf5_ids").reshape(n)
            ids = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in raw])
            if len(set(ids.tolist())) != n:
                raise UserError(f"{path}:{d.hdf5_ids}: ids are not unique")
        skip = {d.hdf5_images, d.hdf5_labels, d.hdf5_ids}
        columns = {
            k: _decoded(f[k][()])
            for k in names
            if k not in skip and f[k].ndim == 1 and f[k].shape[0] == n
        }
        first = images[0]
    class_names = tuple(d.hdf5_class_names)
    if labels is not None and not class_names:
        class_names = tuple(str(c) for c in range(int(labels.max()) + 1))
    reader = fits.FitsReader(fits.FitsOptions.from_config(d))
    get = Hdf5Images(path, d.hdf5_images, reader, None)
    get.image_shape = get.to_rgb(first, 0).shape
    return ImageSource(ids, labels, class_names, get, get.image_shape, columns or None)
