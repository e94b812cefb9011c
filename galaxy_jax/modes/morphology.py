"""Mode `morphology`: images -> a table of classical morphology (CAS, Gini-M20, ellipticity,
Sersic n) per galaxy, measured by statmorph in parallel worker processes.

Workdir (the clustering modes read the first four, like the output of `extract`):
  features.npy          [N, F] float32, the columns of galaxy_jax.morphology.COLUMNS, z-scored;
                        values that could not be measured are imputed with the column median
  ids.npy               [N] str image ids
  labels.npy            [N] int32, -1 where unknown; absent for an unlabelled dataset
  features_meta.json    config, columns, medians/means/stds used, failure counts, versions
  morphology.csv        every galaxy: id, label, raw (unscaled) columns, NaN where not measured,
                        statmorph's flag and flag_sersic, ok, error, seconds
  morphology_flags.npy  [N] int32 statmorph flag (0 good, 1 suspect, 2 bad, 4 catastrophic;
                        -1 no galaxy segment, -2 statmorph raised)
  morphology_shards/    resumable partial results (deleted once the table is written)

No galaxy is dropped: a failed one keeps its row, flagged in morphology.csv and
morphology_flags.npy, with imputed (median) values in features.npy.
"""

from __future__ import annotations

import concurrent.futures
import csv
import functools
import io
import json
import multiprocessing
import os
import shutil
import time

import numpy as np
from absl import logging
from tqdm.auto import tqdm

from galaxy_jax import atomic, morphology, shards, validate
from galaxy_jax.data.vectors import save_features
from galaxy_jax.errors import UserError
from galaxy_jax.workdir import prepare_workdir, versions

SHARD_DIR = "morphology_shards"
_FIELDS = ("flag", "flag_sersic", "ok", "error", "seconds")


def _measure_params(config) -> dict:
    return dict(
        asinh_stretch=float(config.asinh_stretch),
        border=float(config.border),
        crop_fraction=float(config.crop_fraction),
        downsample=int(config.downsample),
        threshold_sigma=float(config.threshold_sigma),
        min_pixels=int(config.min_pixels),
    )


def _measure_chunk(get, indices, params, tta=False) -> list[dict]:
    """Worker: renders or decodes `indices` through `get` and measures each galaxy (with `tta`,
    its 8 rotations/flips, combined by `morphology.measure_dihedral`)."""
    images = np.asarray(get(np.asarray(indices)))
    measure = morphology.measure_dihedral if tta else morphology.measure
    return [measure(im, **params) for im in images]


def measure_source(
    source,
    params: dict,
    *,
    workers: int = 0,
    chunk_size: int = 16,
    shard_dir=None,
    meta_hash="",
    tta: bool = False,
):
    """Measures every galaxy of `source` (an ImageSource); returns a list of N row dicts.

    workers: processes (0 = os.cpu_count(); 1 = this process, no pool). Each task is one chunk of
    `chunk_size` images, so the images travel as indices, not pixels. With `shard_dir`, each
    finished chunk is saved there as JSON under `meta_hash`, and a re-run measures only the rest.
    `tta`: measure the 8 rotations/flips of each galaxy, keep the per-column median (8x time).
    """
    chunks = shards.ranges(len(source), chunk_size)
    rows: dict[int, list] = {}
    if shard_dir:
        rows = _open_shards(shard_dir, meta_hash, chunks)
        if rows:
            logging.info("Resuming: %d of %d chunks already measured.", len(rows), len(chunks))
    todo = [i for i in range(len(chunks)) if i not in rows]
    work = functools.partial(_measure_chunk, source.get, params=params, tta=tta)
    bar = tqdm(total=sum(chunks[i][1] - chunks[i][0] for i in todo), unit="img")

    def finish(i, result):
        rows[i] = result
        if shard_dir:
            shards.save_json(shards.shard_path(shard_dir, i, len(chunks), ".json"), result)
        bar.update(len(result))

    workers = int(workers) or os.cpu_count() or 1
    if workers == 1 or len(todo) <= 1:
        for i in todo:
            finish(i, work(range(*chunks[i])))
    else:
        # spawn, not fork: the parent may hold JAX's threads, which fork would copy mid-state.
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = {pool.submit(work, range(*chunks[i])): i for i in todo}
            for f in concurrent.futures.as_completed(futures):
                finish(futures[f], f.result())
    bar.close()
    return [r for i in range(len(chunks)) for r in rows[i]]


def _open_shards(shard_dir, meta_hash, chunks) -> dict[int, list]:
    """{chunk index: rows} of the chunks already measured under `meta_hash` (galaxy_jax.shards:
    a chunk whose file does not match its SHA-256, or of another length, is measured again)."""
    shards.open_dir(shard_dir, meta_hash, "measurements")
    done = {}
    for i, (s, e) in enumerate(chunks):
        path = shards.shard_path(shard_dir, i, len(chunks), ".json")
        if not os.path.exists(path):
            continue
        try:
            result = shards.load_json(path, "morphology chunk")
        except ValueError:
            result = None
        if isinstance(result, list) and len(result) == e - s:
            done[i] = result
        else:
            shards.remove(path)
    return done


def feature_table(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, dict]:
    """rows -> (raw [N, F] float64 with NaN where not measured, features [N, F] float32, stats).

    features: NaN cells replaced by the column median of the measured values (0 if a column has
    none), then each column z-scored (mean 0, std 1; std 1 kept for a constant column), so that
    Gini (~0.5), M20 (~-2), C (~3) and n (~1-6) weigh alike in k-means and the autoencoder.
    """
    raw = np.array([[r[c] for c in morphology.COLUMNS] for r in rows], np.float64)
    raw = raw.reshape(len(rows), len(morphology.COLUMNS))
    missing = ~np.isfinite(raw)
    medians = np.array(
        [np.median(col[np.isfinite(col)]) if np.isfinite(col).any() else 0.0 for col in raw.T]
    )
    filled = np.where(missing, medians, raw)
    mean, std = filled.mean(axis=0), filled.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    features = ((filled - mean) / std).astype(np.float32)
    stats = {
        "median": dict(zip(morphology.COLUMNS, medians, strict=True)),
        "mean": dict(zip(morphology.COLUMNS, mean, strict=True)),
        "std": dict(zip(morphology.COLUMNS, std, strict=True)),
        "num_imputed": dict(zip(morphology.COLUMNS, missing.sum(axis=0), strict=True)),
    }
    return raw, features, stats


def _csv_bytes(ids, labels, class_names, raw, rows) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["id", "label", "class", *morphology.COLUMNS, *_FIELDS])
    for k, r in enumerate(rows):
        label = -1 if labels is None else int(labels[k])
        name = class_names[label] if 0 <= label < len(class_names) else ""
        vals = ["nan" if not np.isfinite(v) else f"{v:.6g}" for v in raw[k]]
        extra = [int(r["flag"]), int(r["flag_sersic"]), int(bool(r["ok"])), r["error"]]
        w.writerow([ids[k], label, name, *vals, *extra, f"{r['seconds']:.3f}"])
    return out.getvalue().encode()


def run_morphology(config, workdir: str) -> np.ndarray:
    """Writes the files listed in the module docstring; returns features [N, F] float32.

    A re-run with the same config and images returns at once; an interrupted run resumes from
    workdir/morphology_shards/.
    """
    validate.morphology(config)
    from galaxy_jax.data.from_config import make_image_source

    try:
        packages = morphology.check_installed()
    except ImportError as e:
        raise UserError(str(e)) from e
    workdir = prepare_workdir(workdir)
    source = make_image_source(
        config.data, report_path=os.path.join(workdir, "bad_input_report.json")
    )
    if len(source) == 0:
        raise UserError("the dataset is empty; nothing to measure")
    params = _measure_params(config)
    identity = {
        "ids_sha256": shards.ids_sha256(source.ids),
        "num_images": len(source),
        "source_image_shape": list(source.image_shape),
        "data": config.data.to_dict(),
        "measure": params,
        "columns": list(morphology.COLUMNS),
        "packages": packages,
    }
    if config.tta:  # only when set, so tables measured before the field existed stay valid
        identity["tta"] = True
    meta_hash = shards.meta_hash(identity)
    meta_path = os.path.join(workdir, "features_meta.json")
    feat_path = os.path.join(workdir, "features.npy")
    if os.path.exists(meta_path) and os.path.exists(feat_path):
        with open(meta_path) as f:
            if json.load(f).get("meta_hash") == meta_hash:
                logging.info("%s is up to date; nothing to do.", feat_path)
                return np.load(feat_path)

    start = time.time()
    rows = measure_source(
        source,
        params,
        workers=config.workers,
        chunk_size=config.chunk_size,
        shard_dir=os.path.join(workdir, SHARD_DIR),
        meta_hash=meta_hash,
        tta=bool(config.tta),
    )
    seconds = time.time() - start
    raw, features, stats = feature_table(rows)
    ok = np.array([bool(r["ok"]) for r in rows])
    flags = np.array([int(r["flag"]) for r in rows], np.int32)

    ids = np.asarray(source.ids).astype(str)
    atomic.write_bytes(
        os.path.join(workdir, "morphology.csv"),
        _csv_bytes(ids, source.labels, source.class_names, raw, rows),
    )
    atomic.save_npy(os.path.join(workdir, "morphology_flags.npy"), flags)
    save_features(workdir, features, ids, source.labels)
    per_image = [r["seconds"] for r in rows]
    atomic.write_json(  # last: its hash marks the set complete
        meta_path,
        {
            **identity,
            "meta_hash": meta_hash,
            "kind": "morphology",
            "feature_dim": len(morphology.COLUMNS),
            "class_names": list(source.class_names),
            "normalisation": "median imputation of unmeasured values, then per-column z-score",
            **stats,
            "num_ok": int(ok.sum()),
            "num_failed": int((~ok).sum()),
            "flag_counts": {
                str(k): int(v) for k, v in zip(*np.unique(flags, return_counts=True), strict=True)
            },
            "seconds": round(seconds, 2),
            "seconds_per_image_median": round(float(np.median(per_image)), 3),
            "workers": int(config.workers) or os.cpu_count(),
            "config": config.to_dict(),
            "versions": {**versions(), **packages},
        },
    )
    shutil.rmtree(os.path.join(workdir, SHARD_DIR), ignore_errors=True)
    if (~ok).any():
        logging.warning(
            "%d of %d galaxies not measured cleanly (flagged in morphology.csv, imputed in "
            "features.npy), e.g. %s: %s",
            (~ok).sum(),
            len(ok),
            ids[~ok][0],
            rows[int(np.flatnonzero(~ok)[0])]["error"],
        )
    print(
        f"Measured {len(ok)} galaxies ({int(ok.sum())} ok, {int((~ok).sum())} flagged) in "
        f"{seconds:.0f} s -> {feat_path}, {os.path.join(workdir, 'morphology.csv')}"
    )
    return features
