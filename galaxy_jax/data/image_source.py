"""The one interface every image dataset provides: random access to uint8 images by index.

Feature extraction, supervised training and reports read images only through `ImageSource`,
so a TFDS build, a folder of JPEGs, a CSV of ids or the synthetic generator are interchangeable.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class ImageSource:
    """Random-access images.

    Attributes:
      ids: [N] str, unique image ids (GalaxyID for Kaggle data).
      labels: [N] int32 class index, -1 where unknown; None for an unlabelled dataset.
      class_names: names of the label indices, e.g. ("elliptical", "spiral").
      get: function(indices: [B] int array) -> [B, H, W, 3] uint8 images.
      image_shape: (H, W, 3) of what `get` returns.
      columns: {name: [N] array} of a catalog's other columns (ra, dec, ...), row for row with
        `ids`, carried through to the exports; None when the data has none.
    """

    ids: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...]
    get: object
    image_shape: tuple[int, int, int]
    columns: dict | None = None

    def __len__(self) -> int:
        return len(self.ids)


def from_arrays(images: np.ndarray, labels=None, ids=None, class_names=()) -> ImageSource:
    """An in-memory ImageSource; images: [N, H, W, 3] uint8."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [N,H,W,3] uint8, got {images.shape} {images.dtype}")
    n = len(images)
    ids = np.asarray([str(i) for i in range(n)] if ids is None else ids).astype(str)
    labels = None if labels is None else np.asarray(labels, np.int32)
    return ImageSource(
        ids,
        labels,
        tuple(class_names),
        lambda idx: images[np.asarray(idx)],
        tuple(images.shape[1:]),
    )
