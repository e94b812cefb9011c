"""Input pipeline: grain decodes, crops and resizes in worker processes; batches are prefetched.

  for batch in prefetch_to_device(batches(source, 64, crop_size=207, image_size=299)):
      x = preprocess(batch["image"], crop_size=0, image_size=299)  # only the scaling is left

The crop and resize run on uint8 in the workers (PIL bilinear, which low-pass filters when it
shrinks, like `preprocess`), so the host sends S x S instead of 424 x 424 images to the device.
Pass crop_size=0, image_size=0 to get the decoded images untouched.
"""

from __future__ import annotations

import collections
import os
import pickle
import queue
import threading

import grain.python as grain
import jax
import numpy as np
from absl import flags, logging
from PIL import Image

from galaxy_jax.data.image_source import ImageSource


class _Records(grain.RandomAccessDataSource):
    """ImageSource -> grain records {'image', 'index', 'label'}; label -1 when unknown."""

    def __init__(self, source: ImageSource):
        self.get, self.n = source.get, len(source)
        self.labels = source.labels

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        i = int(i)
        label = -1 if self.labels is None else int(self.labels[i])
        return {"image": self.get([i])[0], "index": np.int64(i), "label": np.int32(label)}


class _CropResize(grain.MapTransform):
    def __init__(self, crop_size: int, image_size: int):
        self.crop_size, self.image_size = crop_size, image_size

    def map(self, record):
        image = record["image"]
        h, w = image.shape[:2]
        c = self.crop_size
        if c and (c < h or c < w):
            top, left = (h - min(c, h)) // 2, (w - min(c, w)) // 2
            image = image[top : top + min(c, h), left : left + min(c, w)]
        s = self.image_size
        if s and image.shape[:2] != (s, s):
            image = np.asarray(Image.fromarray(image).resize((s, s), Image.BILINEAR))
        return {**record, "image": image}


def batches(
    source: ImageSource,
    batch_size: int,
    *,
    crop_size: int = 0,
    image_size: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    num_epochs: int = 1,
    drop_remainder: bool = False,
    worker_count: int | None = None,
    prefetch: int = 2,
):
    """Iterates {'image': [B, S, S, 3] uint8, 'index': [B] int64, 'label': [B] int32}.

    Args:
      source: any ImageSource; its `get` must pickle for worker processes (all of
        make_image_source's do; an in-memory `from_arrays` source falls back to no workers).
      shuffle/seed/num_epochs: a seeded, reproducible order; shuffle=False keeps index order.
      worker_count: decoding processes; default one per CPU core. 0 decodes in this process.
      prefetch: batches each worker keeps ready ahead of the consumer.
    """
    if worker_count is None:
        worker_count = os.cpu_count() or 1
    if worker_count:
        try:
            pickle.dumps(source.get)
        except (pickle.PicklingError, AttributeError, TypeError):
            logging.warning("The source's get does not pickle; decoding in this process.")
            worker_count = 0
    if worker_count and not flags.FLAGS.is_parsed():
        # grain's worker processes read its absl flags; outside main.py (tests, notebooks) no one
        # has parsed them, so take the defaults.
        flags.FLAGS.mark_as_parsed()
    sampler = grain.IndexSampler(
        len(source),
        shard_options=grain.NoSharding(),
        shuffle=shuffle,
        num_epochs=num_epochs,
        seed=seed,
    )
    loader = grain.DataLoader(
        data_source=_Records(source),
        sampler=sampler,
        operations=[
            _CropResize(crop_size, image_size),
            grain.Batch(batch_size, drop_remainder=drop_remainder),
        ],
        worker_count=worker_count,
        worker_buffer_size=prefetch,
    )
    yield from loader


def prefetch_to_device(iterator, size: int = 2, sharding=None):
    """Puts the next `size` batches on the device from a background thread while one is used.

    `sharding` (e.g. a NamedSharding over the batch axis) is passed to jax.device_put.
    """
    q: queue.Queue = queue.Queue(maxsize=size)
    done = object()

    def producer():
        try:
            for batch in iterator:
                q.put(jax.device_put(batch, sharding))
        except BaseException as e:  # re-raised in the consumer
            q.put(e)
            return
        q.put(done)

    threading.Thread(target=producer, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def count_by_label(labels, class_names) -> dict[str, int]:
    """Class counts of a batch stream's labels (for logs)."""
    c = collections.Counter(int(x) for x in labels)
    return {(class_names[k] if 0 <= k < len(class_names) else "unknown"): v for k, v in c.items()}
