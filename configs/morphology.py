"""Classical morphology (CAS, Gini, M20, ellipticity, Sersic n) of every galaxy, via statmorph.

Run (needs `pip install -e '.[morphology]'`, i.e. statmorph and photutils):
  python main.py --config=configs/morphology.py --workdir=workdirs/synthetic_morphology
Then cluster the table like any features:
  python main.py --config=configs/galaxy_dec.py --workdir=workdirs/synthetic_morph_dec \
      --config.data.path=workdirs/synthetic_morphology
The real 2,000-image Kaggle sample, block-averaged by 2 after the crop (~0.5 s/image/core
instead of ~1.8 s; bench/features_table.py uses it):
  python main.py --config=configs/morphology.py:sample --workdir=workdirs/galaxy_sample/morphology
Other folders: --config.data.name=folder --config.data.folder=... (configs/data_defaults.py).
Writes features.npy (z-scored), morphology.csv (raw values, flags), see
galaxy_jax/modes/morphology.py. Variant `configs/morphology.py:smoke`: 12 small synthetic
galaxies, 2 workers.
"""

import ml_collections

from configs import common, data_defaults


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "morphology"
    common.devices(c)  # statmorph runs in worker processes (`workers`), not on JAX devices
    c.data = data_defaults.get_data_config("synthetic")  # crop_size/image_size do not apply

    c.workers = 0  # worker processes; 0 = os.cpu_count()
    c.chunk_size = 16  # images per worker task and per resumable shard
    # Measurement (galaxy_jax/morphology.py documents each step).
    c.asinh_stretch = 0.0  # >0 undoes a display stretch asinh(a x)/asinh(a) first; 0 = as shown
    c.border = 0.1  # sky statistics from this outer fraction of each side of the whole cutout
    c.crop_fraction = 0.5  # centre crop kept (0.5 of 424 = 212 px, which holds the galaxy)
    c.downsample = 1  # block-average factor after the crop (2: ~4x faster, coarser)
    c.threshold_sigma = 1.5  # detection threshold in sky sigmas (on the FWHM-3 smoothed image)
    c.min_pixels = 10  # smallest segment kept
    # Median over the 8 rotations/flips of each galaxy (galaxy_jax.morphology.measure_dihedral):
    # statmorph's numerics depend on orientation; 8x the time.
    c.tta = False

    if arg == "sample":
        c.data.name = "folder"  # data.folder defaults to the real 2,000-image sample
        c.downsample = 2
    elif arg == "smoke":
        c.data.synthetic_n = 12
        c.data.synthetic_size = 128
        c.workers = 2
        c.chunk_size = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'sample', 'smoke' or nothing")
    return c
