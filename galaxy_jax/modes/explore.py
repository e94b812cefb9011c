"""Mode `map`: the interactive HTML map of a run (galaxy_jax/explore.py; configs/map.py).

config.run is a finished DEC or k-means run's workdir (its embedding.npy, else the features it
clustered; cluster = argmax q or assignments.npy) or an `extract` workdir (features only: no
clusters). Writes <workdir>/map.html and <workdir>/map_files/ (sprite sheets, map.json).
"""

from __future__ import annotations

import os

import numpy as np

from galaxy_jax import explore, layout, runs, validate
from galaxy_jax.data.vectors import DiskRows
from galaxy_jax.errors import UserError
from galaxy_jax.workdir import prepare_workdir


def _run_arrays(run: str):
    """(z, ids, labels, features_dir, cluster, confidence, what) of a run or features dir."""
    if os.path.isfile(os.path.join(run, "results.json")):
        results = runs.results(run)
        labels, ids, features_dir = runs.run_labels_ids(results)
        own_ids = runs.load_npy(run, "ids.npy")
        ids = own_ids if own_ids is not None else ids
        q = runs.load_npy(run, "q.npy")
        assign = runs.load_npy(run, "assignments.npy")
        cluster = q.argmax(1) if q is not None else assign
        conf = None if q is None else q.max(1)
        z, what = runs.load_npy(run, "embedding.npy"), "DEC embedding"
        if z is None and features_dir:
            z, what = DiskRows(os.path.join(features_dir, "features.npy")), "features"
        if z is None:
            raise UserError(f"{run}: no embedding.npy and no features to lay out")
        return z, ids, labels, features_dir, cluster, conf, what
    if os.path.isfile(os.path.join(run, "features.npy")):
        z = DiskRows(os.path.join(run, "features.npy"))
        return (
            z,
            runs.load_npy(run, "ids.npy"),
            runs.load_npy(run, "labels.npy"),
            run,
            None,
            None,
            "features",
        )
    raise UserError(f"{run} is neither a finished run (results.json) nor an extract workdir")


def write_run_map(config, run: str, path: str, title: str = "") -> dict:
    """The map of `run` at `path` (the report calls this too)."""
    run = os.path.abspath(os.path.expanduser(run))
    z, ids, labels, features_dir, cluster, conf, what = _run_arrays(run)
    n = len(z)
    if ids is None or len(ids) != n:
        ids = np.arange(n).astype(str)
    rows, xy, how = layout.layout(run, z, config.max_points, config.seed, config.layout_iters)
    full = np.full((n, 2), np.nan, np.float32)
    full[rows] = xy
    source, why = runs.image_source_of(features_dir)
    class_names = source.class_names if source is not None else ()
    if source is not None:
        row_of = {str(g): r for r, g in enumerate(source.ids)}
        src_rows = np.asarray([row_of.get(str(g), -1) for g in ids])

        def images_of(rr):
            r = src_rows[np.asarray(rr)]
            out = np.zeros((len(r), *source.image_shape), np.uint8)
            ok = r >= 0
            if ok.any():
                out[ok] = source.get(r[ok])
            return out
    else:

        def images_of(rr):
            return np.full((len(rr), 8, 8, 3), 200, np.uint8)

    method = "t-SNE" if how == "tsne" else "UMAP"
    note = f"{method} of the {what}." + ("" if source is not None else f" No thumbnails: {why}.")
    info = explore.write_map(
        path,
        full,
        np.asarray(ids).astype(str),
        images_of,
        cluster=cluster,
        confidence=conf,
        labels=labels,
        class_names=class_names,
        columns=runs.catalog_columns(features_dir),
        embedding=z,
        title=title or f"galaxy_jax map: {os.path.basename(run)}",
        max_points=config.max_points,
        thumb=config.thumb,
        n_neighbours=config.neighbours,
        seed=config.seed,
        note=note,
    )
    return info


def run_map(config, workdir: str) -> dict:
    validate.map_(config)
    workdir = prepare_workdir(workdir)
    info = write_run_map(config, config.run, os.path.join(workdir, "map.html"))
    print(
        f"Wrote {info['path']}: {info['points']:,} of {info['galaxies']:,} galaxies, "
        f"{info['bytes'] / 2**20:.1f} MiB with thumbnails, in {info['seconds']:.0f} s"
    )
    return info
