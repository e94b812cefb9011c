"""Mode `neighbours`: the k nearest galaxies of each query (configs/neighbours.py).

Writes into its workdir:
  neighbours.csv        query, rank (1 = nearest), id, distance, then every catalog column of the
                        neighbour (ra, dec, ...) when the data came from a catalog
  montages/<NNN>_<query>.png  query NNN (0-based, in the order given), then its neighbours
  neighbours.json       what was searched: space, metric, k, the queries, wall time
"""

from __future__ import annotations

import csv
import io
import os
import time

import numpy as np

from galaxy_jax import atomic, neighbours, plots, runs, validate
from galaxy_jax.errors import UserError
from galaxy_jax.workdir import prepare_workdir


def _split(text: str) -> list[str]:
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _queries(config, x, ids, features_dir):
    """(names [Q], vectors [Q, D], query images or None) of the id and image queries."""
    names, vectors, images = [], [], []
    row_of = {str(i): r for r, i in enumerate(ids)}
    for q in _split(config.query_ids):
        if q not in row_of:
            raise UserError(f"query id {q!r} is not in {config.space} ({len(ids):,} ids)")
        names.append(q)
        vectors.append(np.asarray(x[[row_of[q]]], np.float32)[0])
        images.append(None)
    files = _split(config.query_images)
    if files:
        from galaxy_jax.features import features_of_files  # the network, only when needed

        if features_dir is None or not os.path.isfile(os.path.join(config.space, "features.npy")):
            raise UserError("image queries need a feature space (an extract workdir)")
        feats, pics = features_of_files(files, features_dir)
        names += [os.path.basename(f) for f in files]
        vectors += list(feats)
        images += list(pics)
    return names, np.stack(vectors), images


def run_neighbours(config, workdir: str) -> dict:
    t0 = time.time()
    validate.neighbours(config)
    x, ids, features_dir, what = runs.load_space(config.space)
    names, q, query_images = _queries(config, x, ids, features_dir)
    k = min(int(config.k), len(ids))
    dist, idx = neighbours.search(q, x, k, config.metric, config.chunk)
    workdir = prepare_workdir(workdir)
    columns = runs.catalog_columns_for(ids, features_dir) or {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["query", "rank", "id", "distance", *columns])
    for qi, name in enumerate(names):
        for rank in range(k):
            r = idx[qi, rank]
            w.writerow(
                [name, rank + 1, ids[r], f"{dist[qi, rank]:.6g}"] + [v[r] for v in columns.values()]
            )
    csv_path = os.path.join(workdir, "neighbours.csv")
    atomic.write_bytes(csv_path, buf.getvalue().encode())
    note = ""
    if config.montage:
        note = _montages(workdir, names, query_images, ids, idx, dist, features_dir)
    summary = {
        "space": os.path.abspath(config.space),
        "space_kind": what,
        "rows": len(ids),
        "metric": config.metric,
        "k": k,
        "queries": names,
        "montages": note or "montages/",
        "wall_s": time.time() - t0,
    }
    atomic.write_json(os.path.join(workdir, "neighbours.json"), summary)
    print(f"Wrote {csv_path}: {len(names)} queries x {k} neighbours ({what}, {config.metric})")
    if note:
        print(f"No montages: {note}")
    return summary


def _montages(workdir, names, query_images, ids, idx, dist, features_dir) -> str:
    source, why = runs.image_source_of(features_dir)
    if source is None:
        return why
    row_of = {str(i): r for r, i in enumerate(source.ids)}

    def image(gid):
        r = row_of.get(str(gid))
        return None if r is None else source.get([r])[0]

    os.makedirs(os.path.join(workdir, "montages"), exist_ok=True)
    for qi, name in enumerate(names):
        first = query_images[qi] if query_images[qi] is not None else image(name)
        row = [(first, f"query {name}")]
        row += [
            (image(ids[r]), f"{ids[r]} {d:.3f}") for r, d in zip(idx[qi], dist[qi], strict=True)
        ]
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        plots.image_grid([row], os.path.join(workdir, "montages", f"{qi:03d}_{safe}.png"))
    return ""
