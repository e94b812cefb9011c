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
