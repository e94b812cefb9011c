"""`make_image_source(config.data)`: the one door from a data config to an ImageSource."""

from __future__ import annotations

from galaxy_jax.data.image_source import ImageSource
from galaxy_jax.errors import UserError

DATASETS = ("synthetic", "folder", "csv", "catalog", "hdf5", "galaxy_zoo")


def make_image_source(data_config, report_path: str | None = None) -> ImageSource:
    """Dispatches on data_config.name (see configs/data_defaults.py for the fields).

    Args:
      data_config: the `data` ConfigDict.
      report_path: where a bad-input report goes when on_bad_input='skip' drops anything
        (default ./bad_input_report.json); modes pass a path in their workdir.
    Returns:
      An ImageSource whose `get` is picklable (usable from worker processes, e.g. morphology's).
    """
    name = data_config.name
    if name == "synthetic":
        from galaxy_jax.data.synthetic import make_synthetic_source

        return make_synthetic_source(
            data_config.synthetic_n, data_config.synthetic_size, data_config.synthetic_seed
        )
    if name == "folder":
        from galaxy_jax.data.folder import make_folder_source

        return make_folder_source(data_config, report_path)
    if name == "csv":
        from galaxy_jax.data.folder import make_csv_source

        return make_csv_source(data_config, report_path)
    if name == "catalog":
        from galaxy_jax.data.catalog import make_catalog_source

        return make_catalog_source(data_config, report_path)
    if name == "hdf5":
        from galaxy_jax.data.hdf5 import make_hdf5_source

        return make_hdf5_source(data_config)
    if name == "galaxy_zoo":
        from galaxy_jax.data.galaxy_zoo import make_galaxy_zoo_source

        return make_galaxy_zoo_source(data_config)
    raise UserError(f"Unknown data.name {name!r}; known datasets: {', '.join(DATASETS)}.")
