"""The one image loader of `extract`, `supervised_cnn` and `ssl`: batches of an ImageSource, read
one batch ahead in a background thread, as global arrays sharded along mesh axis 'data'.

  with contextlib.closing(image_batches(source, index_batches, labels)) as batches:
      for images, y in batches:  # [B, H, W, 3] uint8 and [B] rows of `labels`, both sharded
          ...

The caller chooses the rows of every batch (a seeded sampler, or an ordered, padded grid for
resumable extraction), so the order and the resume point stay the caller's. `source.get` is
called once per batch with that batch's indices (this process's part of them, see below), in
the order given, while the devices work on the previous batch. Crop, resize and scaling are
left to the jitted step (galaxy_jax.data.preprocess), so the numbers do not depend on the loader.

Like the vector modes (`parallel.batch`), each process reads only its rows of a global batch
(`parallel.local_rows`) and the global array is assembled from the local pieces.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np

from galaxy_jax import parallel
from galaxy_jax.data.image_source import ImageSource
from galaxy_jax.errors import UserError


def image_batches(source: ImageSource, index_batches, *arrays, sharding=None):
    """Yields (images, *rows of `arrays`) for each index array of `index_batches`.

    Args:
      source: the images; `get` must return uint8.
      index_batches: an iterable of [B] int index arrays (B a multiple of the device count),
        consumed lazily, one batch ahead of the consumer.
      arrays: [N, ...] arrays (e.g. labels) whose rows go with the images.
      sharding: a NamedSharding over the batch axis; default `parallel.sharded()`.
    Close the generator (contextlib.closing, or exhaust it) to stop the background read: a batch
    being read then finishes, a queued one is dropped.
    """
    sharding = sharding or parallel.sharded()
    index_batches = iter(index_batches)

    def read(idx):
        idx = np.asarray(idx)
        mine = idx[parallel.local_rows(len(idx))]
        images = np.asarray(source.get(mine))
        if images.dtype != np.uint8:
            raise UserError(f"ImageSource.get returned {images.dtype}, expected uint8")
        return len(idx), (images, *(np.asarray(a)[mine] for a in arrays))

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        nxt = next(index_batches, None)
        future = None if nxt is None else pool.submit(read, nxt)
        while future is not None:
            rows, local = future.result()
            nxt = next(index_batches, None)
            future = None if nxt is None else pool.submit(read, nxt)  # read k+1 during k
            yield parallel.batch(*local, global_rows=rows, sharding=sharding)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
