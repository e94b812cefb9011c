"""Mode `extract`: images -> features (galaxy_jax.features) in the workdir.

Feature sources (`config.source`, see galaxy_jax.features): 'xception' [N, 2048] pooled
Xception features; 'pixels' the flattened preprocessed images (`grayscale`, `standardize`).

Workdir of `extract` (the clustering modes read the first four):
  features.npy          [N, D] float32 features (D as above), written once complete
  ids.npy               [N] str image ids
  labels.npy            [N] int32, -1 where unknown; absent for an unlabelled dataset
  features_meta.json    feature_source, config, weights hash, input size, crop, TTA, dtype,
                        versions
  feature_shards/       resumable partial results (deleted once features.npy is written)

Interruptions: the shards resume as galaxy_jax.features.extract_features says (a kill -9 keeps
every complete shard; SIGTERM/SIGINT save the finished batches and exit 75).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time

import jax
import numpy as np
from absl import logging

from galaxy_jax import atomic, runs, shards, validate, weights
from galaxy_jax import features as features_lib
from galaxy_jax.data.vectors import save_features
from galaxy_jax.errors import UserError
from galaxy_jax.workdir import prepare_workdir, versions

SHARD_DIR = "feature_shards"

OUTPUTS = ("features.npy", "ids.npy", "labels.npy", "features_meta.json")


def _file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _up_to_date(meta_path: str, feat_path: str, meta_hash: str) -> np.ndarray | None:
    """features.npy if features_meta.json says it was made under `meta_hash` and its bytes match
    the SHA-256 recorded there; None (with a warning saying why) if it must be extracted again."""
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        logging.warning("%s is unreadable (%s); extracting again.", meta_path, e)
        return None
    if meta.get("meta_hash") != meta_hash:
        logging.warning("%s came from another config or weights; extracting again.", feat_path)
        return None
    expected = meta.get("features_sha256")
    if expected is not None and _file_sha256(feat_path) != expected:
        logging.warning(
            "%s does not match the SHA-256 in %s (truncated or garbled); extracting again.",
            feat_path,
            meta_path,
        )
        return None
    return np.load(feat_path)


def run_extract(config, workdir: str) -> np.ndarray:
    """Writes features.npy, ids.npy, labels.npy and features_meta.json in `workdir`.

    A re-run with the same config, weights and images returns at once; an interrupted run
    resumes from workdir/feature_shards/.
    """
    from galaxy_jax.data.from_config import make_image_source

    validate.extract(config)
    model = config.source
    grayscale = config.grayscale and model == "pixels"
    standardize = config.standardize and model == "pixels"
    workdir = prepare_workdir(workdir)
    d = config.data
    source = make_image_source(d, report_path=os.path.join(workdir, "bad_input_report.json"))
    if model == "xception":
        loaded = weights.from_config(config, include_top=False)
        variables, description = loaded.variables, loaded.description
        weights_sha256, weights_source_sha256 = loaded.sha256, loaded.source_sha256
        weights_record = loaded.record()  # weights_kind: official, wheel, keras-file, ssl, ...
        # An `ssl` encoder (weights=<workdir>/encoder.npz + encoder.json) may be narrower.
        architecture = (
            ()
            if loaded.architecture == weights.DEFAULT_ARCHITECTURE
            else tuple(sorted(loaded.architecture.items()))
        )
        trained = loaded.info.get("image_size") if loaded.info else None
        if trained and int(trained) != int(d.image_size):
            logging.warning(
                "The encoder was trained at %s px; extracting at data.image_size=%s.",
                trained,
                d.image_size,
            )
    else:  # pixels need no network: nothing is loaded or downloaded
        variables, description = {}, "none (pixels)"
        weights_sha256 = weights_source_sha256 = None
        weights_record = {"weights_kind": "none"}
        architecture = ()
    # Everything the numbers depend on (not batch size, device count or shard layout).
    identity = {
        "weights_sha256": weights_sha256,
        "ids_sha256": shards.ids_sha256(source.ids),
        "num_images": len(source),
        "source_image_shape": list(source.image_shape),
        "image_size": int(d.image_size),
        "crop_size": int(d.crop_size),
        "tta": bool(config.tta),
        "dtype": config.dtype,
    }
    if config.tta and config.tta_pool != "mean":  # only then: hashes of older runs still match
        identity["tta_pool"] = config.tta_pool
    if model != "xception":  # added only here, so that Xception hashes of older runs still match
        identity.update(feature_source=model, grayscale=grayscale, standardize=standardize)
    if architecture:
        identity["architecture"] = dict(architecture)
    meta_hash = shards.meta_hash(identity)
    meta_path = os.path.join(workdir, "features_meta.json")
    feat_path = os.path.join(workdir, "features.npy")
    shards.remove_temporaries(workdir, (*OUTPUTS, runs.CATALOG_COLUMNS))
    if os.path.exists(meta_path) and os.path.exists(feat_path):
        features = _up_to_date(meta_path, feat_path, meta_hash)
        if features is not None:
            logging.info("%s is up to date; nothing to do.", feat_path)
            runs.save_catalog_columns(workdir, source.columns)
            return features

    start = time.time()
    spec = features_lib.FeatureSpec(
        image_size=d.image_size,
        crop_size=d.crop_size,
        tta=config.tta,
        tta_pool=config.tta_pool,
        dtype=config.dtype,
        model=model,
        grayscale=grayscale,
        standardize=standardize,
        architecture=architecture,
    )
    if config.micro_batch < 0:  # auto: by backend and input size
        spec = dataclasses.replace(spec, micro_batch=features_lib.auto_micro_batch(spec))
    else:
        spec = dataclasses.replace(spec, micro_batch=int(config.micro_batch))
    features, _ = features_lib.extract_features(
        source,
        variables,
        spec,
        batch_size=config.batch_size,
        shard_dir=os.path.join(workdir, SHARD_DIR),
        shard_size=config.shard_size,
        meta_hash=meta_hash,
    )
    seconds = time.time() - start
    if not np.all(np.isfinite(features)):
        bad = np.flatnonzero(~np.all(np.isfinite(features), axis=1))
        raise UserError(
            f"Non-finite features for {len(bad)} images, e.g. ids {source.ids[bad[:5]]}"
        )

    # features.npy last but one, the metadata last: its hash marks the set complete.
    save_features(workdir, features, source.ids, source.labels)
    runs.save_catalog_columns(workdir, source.columns)  # ra, dec, ... row for row with ids.npy
    atomic.write_json(
        meta_path,
        {
            **identity,
            "feature_source": model,
            "grayscale": grayscale,
            "standardize": standardize,
            "tta_pool": config.tta_pool,
            "meta_hash": meta_hash,
            "features_sha256": _file_sha256(feat_path),
            "weights": description,
            "weights_source_sha256": weights_source_sha256,
            **weights_record,
            "class_names": list(source.class_names),
            "feature_dim": int(features.shape[1]),
            "num_devices": jax.device_count(),
            "backend": jax.default_backend(),
            "seconds": round(seconds, 2),
            "images_per_second": round(
                len(source) * (8 if config.tta else 1) / max(seconds, 1e-9), 2
            ),
            "config": config.to_dict(),
            "versions": versions(),
        },
    )
    shutil.rmtree(os.path.join(workdir, SHARD_DIR), ignore_errors=True)
    print(f"Wrote {features.shape} {model} features of {len(source)} images to {feat_path}")
    return features
