"""Mode `map`: the interactive HTML map of a run (galaxy_jax/explore.py; configs/map.py).

config.run is a finished DEC or k-means run's workdir (its embedding.npy, else the features it
clustered; cluster = argmax q or assignments.npy) or an `extract` workdir (features only: no
clusters). Writes <workdir>/map.html and <workdir>/map_files/ (sprite sheets, map.json).
"""

from __future__ import annotations

import os

from galaxy_jax import explore, validate
from galaxy_jax.workdir import prepare_workdir


def run_map(config, workdir: str) -> dict:
    validate.map_(config)
    workdir = prepare_workdir(workdir)
    info = explore.write_run_map(
        config.run,
        os.path.join(workdir, "map.html"),
        max_points=config.max_points,
        seed=config.seed,
        layout_iters=config.layout_iters,
        thumb=config.thumb,
        neighbours=config.neighbours,
    )
    print(
        f"Wrote {info['path']}: {info['points']:,} of {info['galaxies']:,} galaxies, "
        f"{info['bytes'] / 2**20:.1f} MiB with thumbnails, in {info['seconds']:.0f} s"
    )
    return info
