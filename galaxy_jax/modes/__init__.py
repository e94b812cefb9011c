"""Mode registry: `config.mode` -> `run(config, workdir)`.

Modes are imported lazily so `--help` and a mistyped mode answer at once, and a mode's heavy
dependencies load only when that mode runs.
"""

import importlib

from absl import app

# name -> "module:function". Each function has the signature run(config, workdir).
MODES = {
    "kmeans": "galaxy_jax.modes.dec:run_kmeans",  # k-means baseline on the input vectors
    "pretrain": "galaxy_jax.modes.dec:run_pretrain",  # SAE: layer-wise + fine-tuning
    "dec": "galaxy_jax.modes.dec:run_dec",  # pretrain (or resume) + k-means init + DEC
    "convert_weights": "galaxy_jax.modes.convert_weights:run_convert_weights",  # Keras h5 -> Flax
    "extract": "galaxy_jax.modes.extract:run_extract",  # images -> Xception features or pixels
    "morphology": "galaxy_jax.modes.morphology:run_morphology",  # CAS, Gini-M20, Sersic n
    "build_dataset": "galaxy_jax.modes.data:run_build_dataset",  # TFDS / folder datasets
    "sweep": "galaxy_jax.modes.sweep:run_sweep",  # variants x seeds of a config, resumable
    "report": "galaxy_jax.modes.report:run_report",  # report.md + PNG figures from a sweep
    "export": "galaxy_jax.modes.report:run_export",  # clusters.csv for labelling workflows
    "supervised_ann": "galaxy_jax.modes.supervised:run_ann",  # MLP on frozen features
    "supervised_cnn": "galaxy_jax.modes.supervised:run_cnn",  # Xception fine-tuned end to end
    "quickstart": "galaxy_jax.modes.quickstart:run_quickstart",  # extract + DEC + report, offline
    "ssl": "galaxy_jax.modes.ssl:run_ssl",  # SimCLR pretraining of Xception, no labels, no ImageNet
    "neighbours": "galaxy_jax.modes.neighbours:run_neighbours",  # k nearest galaxies of a query
    "map": "galaxy_jax.modes.explore:run_map",  # interactive HTML map with thumbnails
    "scan": "galaxy_jax.modes.scan:run_scan",  # neighbour-consistency clustering + self-labelling
    "adapt": "galaxy_jax.modes.adapt:run_adapt",  # ImageNet exit flow adapted on cached views
}


def get(name):
    """Returns the run function of mode `name`, or raises app.UsageError listing the modes."""
    if name not in MODES:
        raise app.UsageError(f"Unknown mode {name!r}. Known modes: {', '.join(sorted(MODES))}.")
    module, fn = MODES[name].split(":")
    return getattr(importlib.import_module(module), fn)
