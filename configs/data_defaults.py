"""The `data` sections configs share. Not an experiment itself (no mode).

Images: `config.data = data_defaults.get_data_config()`;
`galaxy_jax.data.from_config.make_image_source(config.data)` reads it; `name` picks the dataset and
only that dataset's fields matter. Vectors (`galaxy_jax.data.vectors.load_vectors`, the clustering
and supervised_ann modes): `features_data(path)`, `blobs_data(...)`, and configs/mnist_dec.py's
MNIST section.
"""

import os

import ml_collections

# ../shared/data beside the repository, where CI and the dev machines keep the real sample.
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KAGGLE_SAMPLE = os.path.join(_REPO, "..", "shared", "data", "galaxy_zoo_kaggle_sample")


def get_data_config(name: str = "synthetic") -> ml_collections.ConfigDict:
    """Defaults for dataset `name` in {'synthetic', 'folder', 'csv', 'catalog', 'hdf5',
    'galaxy_zoo'}."""
    d = ml_collections.ConfigDict()
    d.name = name  # synthetic | folder | csv | catalog | hdf5 | galaxy_zoo
    d.on_bad_input = "raise"  # raise | skip (skip lists every left-out item in a JSON report)
    d.verify_images = False  # folder/csv: decode every image once up front (finds corrupt files)
    d.decode_size = 0  # folder/csv: >0 resizes every image to this square on decode (mixed sizes)

    # Preprocessing for Xception (galaxy_jax.data.preprocess.preprocess).
    d.crop_size = 207  # centre crop before resizing; 0 keeps the whole 424x424 frame
    d.image_size = 299  # model input side

    # synthetic: rendered on demand, exact labels ('elliptical', 'spiral'), no download.
    d.synthetic_n = 512
    d.synthetic_size = 424  # side of the rendered image (the Kaggle geometry)
    d.synthetic_seed = 0

    # folder: <folder>/<split>/<class>/<id>.jpg; split '' reads all, 'train,validation' a list.
    d.folder = os.path.join(KAGGLE_SAMPLE, "images")  # the real 2,000-image sample
    d.split = ""

    # csv: <image_dir>/<id><image_ext> and a CSV; label_column '' for unlabelled data.
    d.csv_path = ""
    d.image_dir = ""
    d.id_column = "id"
    d.label_column = ""
    d.image_ext = ".jpg"

    # catalog: a CSV or Parquet catalog, one row per galaxy (galaxy_jax/data/catalog.py); every
    # other column (ra, dec, ...) is carried into the exports. label_column (above) is optional.
    d.catalog_path = ""
    d.catalog_id_column = "id_str"  # Zoobot's convention
    d.catalog_path_column = "file_loc"  # .jpg | .png | .fits | .npy, relative to the catalog
    d.catalog_bands = ()  # e.g. ('g', 'r', 'z'): file_loc holds '{band}', one file per band

    # hdf5: a bundle read lazily by slices (galaxy_jax/data/hdf5.py); Galaxy10 DECaLS names.
    d.hdf5_path = ""
    d.hdf5_images = "images"
    d.hdf5_labels = "ans"  # '' for none
    d.hdf5_ids = ""  # '' = the row number
    d.hdf5_class_names = ()

    # FITS and flux arrays -> RGB (galaxy_jax/data/fits.py), for catalog, folder, csv and hdf5.
    d.fits_hdu = -1  # index or EXTNAME; -1 = the first HDU holding an image
    d.fits_channels = ()  # band index for R, G, B; () = (0,0,0) for 1 band, (2,1,0) for 3
    d.fits_stretch = "asinh"  # asinh (AsinhStretch after a PercentileInterval) | lupton
    d.fits_asinh_a = 0.1
    d.fits_percentile = 99.5
    d.fits_lupton_stretch = 0.5
    d.fits_lupton_q = 8.0
    d.fits_lupton_minimum = 0.0

    # galaxy_zoo: the TFDS build of Kaggle's Galaxy Zoo challenge (mode build_dataset).
    d.tfds_data_dir = os.path.expanduser("~/tensorflow_datasets")
    d.manual_dir = os.path.expanduser("~/tensorflow_datasets/downloads/manual/galaxy_zoo")
    d.tfds_split = "train"  # train | validation | test (or TFDS slicing, e.g. 'train[:10%]')
    d.label_rule = "dominant"  # dominant | clean (galaxy_jax.data.labels)
    d.clean_threshold = 0.8  # t of the 'clean' rule
    d.validation_fraction = 0.1  # split by a hash of GalaxyID; the rest of the data is 'train'
    d.test_fraction = 0.1
    return d


def blobs_data(n=600, dim=32, n_clusters=4, seed=0, spread=0.5) -> ml_collections.ConfigDict:
    """Generated Gaussian blobs (no files): the smoke variants' data."""
    return ml_collections.ConfigDict(
        dict(name="blobs", n=n, dim=dim, n_clusters=n_clusters, seed=seed, spread=spread)
    )


def features_data(path="workdirs/synthetic_features") -> ml_collections.ConfigDict:
    """An extract (or morphology) mode's workdir as [N, D] vectors."""
    return ml_collections.ConfigDict(
        dict(
            name="features",
            path=path,
            # unit_power: the DEC paper, mean |x|^2/d = 1; sqrt_l2: each row square-rooted and
            # L2-normalised (better on ImageNet features); none. Applied as rows stream in.
            normalize="unit_power",
        )
    )
