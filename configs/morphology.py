"""Classical morphology (CAS, Gini, M20, ellipticity, Sersic n) of every galaxy, via statmorph.

Run (needs `pip install -e '.[morphology]'`, i.e. statmorph and photutils):
  python main.py --config=configs/morphology.py --workdir=workdirs/synthetic_morphology
Then cluster the table like any features:
  python main.py --config=configs/galaxy_dec.py --workdir=workdirs/synthetic_morph_dec \
      --config.data.path=workdirs/synthetic_morphology
Real sample: --config.data.name=folder (configs/data_defaults.py lists the fields).
Writes features.npy (z-scored), morphology.csv (raw values, flags), see
galaxy_jax/modes/morphology.py. Variant `configs/morphology.py:smoke`: 12 small synthetic
galaxies, 2 workers.
"""

import ml_collections

from configs import data_defaults


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.mode = "morphology"
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

    if arg == "smoke":
        c.data.synthetic_n = 12
        c.data.synthetic_size = 128
        c.workers = 2
        c.chunk_size = 4
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use 'smoke' or nothing")
    return c
