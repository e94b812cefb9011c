"""Mode `convert_weights`: Keras ImageNet .h5 -> Flax .npz (galaxy_jax.weights)."""

from __future__ import annotations

import os

from absl import logging

from galaxy_jax import atomic, validate, weights
from galaxy_jax.workdir import prepare_workdir, versions


def run_convert_weights(config, workdir: str) -> str:
    """Converts the Keras weights once; returns the path of the written .npz.

    Writes workdir/xception_{top,notop}.npz (flat Flax variables, see galaxy_jax.weights) and
    workdir/weights_meta.json. For the official file the shared cache gets a copy too, so later
    runs with `weights='imagenet'` skip the conversion.
    """
    validate.convert_weights(config)
    workdir = prepare_workdir(workdir)
    loaded = weights.from_config(config)
    flat = weights.flatten(loaded.variables)
    path = os.path.join(workdir, f"xception_{'top' if config.include_top else 'notop'}.npz")
    weights.save_converted(path, flat, loaded)  # and beside it where the weights came from
    n = sum(int(v.size) for v in flat.values())
    atomic.write_json(
        os.path.join(workdir, "weights_meta.json"),
        {
            "weights": loaded.description,
            "include_top": bool(config.include_top),
            "source_sha256": loaded.source_sha256,
            **loaded.record(),  # weights_kind, weights_source_file, weights_provenance
            "variables_sha256": loaded.sha256,
            "num_arrays": len(flat),
            "num_parameters": n,
            "npz": path,
            "config": config.to_dict(),
            "versions": versions(),
        },
    )
    logging.info("Wrote %s: %d arrays, %d parameters, sha256 %s", path, len(flat), n, loaded.sha256)
    print(f"Converted Xception weights ({n:,} parameters) -> {path}")
    return path
