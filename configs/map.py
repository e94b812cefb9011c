"""An interactive map of a run: one HTML page, opened from disk, with every galaxy's thumbnail.

Run (after a DEC or k-means run, or an extract):
  python main.py --config=configs/map.py --workdir=workdirs/map \\
      --config.run=workdirs/quickstart/sweep/xception_dec/seed0
Writes map.html and map_files/ (thumbnail sprite sheets): pan and zoom, hover a point for its
galaxy, click for its nearest neighbours, colour by cluster / true label / confidence, select
with a box or lasso and export the ids as CSV. Beyond `max_points` galaxies a seeded sample is
drawn (the page says so). The 2-D layout (UMAP if umap-learn is installed, else t-SNE) is
computed once and saved in the run (map_2d.npz).
Variant `configs/map.py:smoke` maps the quick start's DEC run (tests).
"""

import ml_collections

from configs import common


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "map"
    common.devices(c)
    c.seed = 0
    c.run = ""  # a finished DEC / k-means run's workdir, or an extract workdir
    c.max_points = 20000  # galaxies drawn; a seeded sample beyond this
    c.layout_iters = 1000  # t-SNE iterations (UMAP ignores it)
    c.thumb = 48  # thumbnail side in pixels
    c.neighbours = 8  # shown on click
    if arg == "smoke":
        c.run = "workdirs/quickstart/sweep/xception_dec/seed0"
        c.layout_iters = 250
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
