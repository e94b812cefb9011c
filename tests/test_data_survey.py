"""Survey inputs: FITS cutouts, CSV/Parquet catalogs, HDF5 bundles. All files are made here."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from configs import data_defaults
from galaxy_jax.data import fits
from galaxy_jax.data.from_config import make_image_source
from galaxy_jax.errors import UserError

astropy_fits = pytest.importorskip("astropy.io.fits")


def _flux(seed, bands=3, size=24):
    """A smooth positive galaxy-like blob per band, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r = np.hypot(yy, xx * (1 + 0.3 * seed % 2))
    base = np.exp(-r / (2 + seed % 3))
    return np.stack([base * (1 + b) + 0.01 * rng.normal(size=base.shape) for b in range(bands)])


def _write(path, data, hdu=0):
    hdus = [astropy_fits.PrimaryHDU()] if hdu else []
    hdus.append(astropy_fits.ImageHDU(data) if hdu else astropy_fits.PrimaryHDU(data))
    astropy_fits.HDUList(hdus).writeto(path, overwrite=True)
    return str(path)


def _data(name="catalog", **fields):
    d = data_defaults.get_data_config(name)
    for k, v in fields.items():
        d[k] = v
    return d


@pytest.mark.parametrize("stretch", fits.STRETCHES)
def test_one_band_three_files_and_cube_equal_the_array_path(tmp_path, stretch):
    opts = fits.FitsOptions(stretch=stretch)
    flux = _flux(0)
    reader = fits.FitsReader(opts)
    want3, _ = fits.bands_to_rgb(flux, opts)
    cube = reader(_write(tmp_path / "cube.fits", flux))
    files = [_write(tmp_path / f"b{b}.fits", flux[b]) for b in range(3)]
    from galaxy_jax.data.folder import read_image_file

    per_band = read_image_file(tuple(files), 0, reader)
    np.testing.assert_array_equal(cube, want3)
    np.testing.assert_array_equal(per_band, want3)
    # Bands listed blue to red: the reddest (index 2) is the red channel by default.
    if stretch == "asinh":
        red_only, _ = fits.bands_to_rgb(flux[[2]], opts)
        np.testing.assert_array_equal(want3[..., 0], red_only[..., 0])
    # One band: grey, the same in all channels, equal to the array path.
    want1, _ = fits.bands_to_rgb(flux[0], fits.FitsOptions(stretch="asinh"))
    one = fits.FitsReader(fits.FitsOptions()).__call__(_write(tmp_path / "one.fits", flux[0]))
    np.testing.assert_array_equal(one, want1)
    assert (one[..., 0] == one[..., 1]).all() and one.dtype == np.uint8 and one.max() > 200


def test_hdu_choice_and_nonfinite_pixels_are_counted(tmp_path):
    flux = _flux(1, bands=1)[0]
    flux[3, 4], flux[5, 6] = np.nan, np.inf
    path = _write(tmp_path / "ext.fits", flux, hdu=1)  # image in extension 1
    reader = fits.FitsReader(fits.FitsOptions(hdu=1))
    image = reader(path)
    clean = flux.copy()
    clean[3, 4] = clean[5, 6] = 0.0
    np.testing.assert_array_equal(image, fits.bands_to_rgb(clean, reader.options)[0])
    assert reader.nonfinite == {"images": 1, "pixels": 2}
    assert fits.FitsReader(fits.FitsOptions())(path).shape == image.shape  # -1: first image HDU


def _bad_fits(tmp_path):
    table = astropy_fits.BinTableHDU.from_columns(
        [astropy_fits.Column(name="a", format="E", array=np.zeros(3))]
    )
    astropy_fits.HDUList([astropy_fits.PrimaryHDU(), table]).writeto(tmp_path / "table.fits")
    (tmp_path / "garbage.fits").write_bytes(b"this is not a FITS file" * 20)
    return {
        "table.fits": "no image HDU",
        "garbage.fits": "cannot read FITS",
        "nan.fits": ("no finite pixel", _write(tmp_path / "nan.fits", np.full((8, 8), np.nan))),
        "dims.fits": ("expected", _write(tmp_path / "dims.fits", np.zeros((2, 3, 8, 8)))),
    }


def test_each_bad_fits_is_named(tmp_path):
    reader = fits.FitsReader(fits.FitsOptions())
    for name, want in _bad_fits(tmp_path).items():
        want = want if isinstance(want, str) else want[0]
        with pytest.raises(UserError, match=rf"{name}.*{want}|{want}.*{name}"):
            reader(str(tmp_path / name))
    a = _write(tmp_path / "a.fits", np.zeros((8, 8)))
    b = _write(tmp_path / "b.fits", np.zeros((9, 8)))
    with pytest.raises(UserError, match="different shapes"):
        reader((a, b))
    with pytest.raises(UserError, match="fits_channels"):
        fits.bands_to_rgb(np.ones((2, 4, 4)), fits.FitsOptions(), "two.fits")
    with pytest.raises(UserError, match="fits_stretch"):
        fits.FitsReader(fits.FitsOptions(stretch="log"))


def _catalog(tmp_path, n=6, fmt="csv", extra_rows=()):
    """n galaxies as FITS cubes in tmp_path/cutouts, a catalog with relative paths, ra/dec."""
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    (tmp_path / "cutouts").mkdir(exist_ok=True)
    rows = {"id_str": [], "file_loc": [], "ra": [], "dec": [], "morph": [], "z": []}
    for i in range(n):
        _write(tmp_path / "cutouts" / f"g{i}.fits", _flux(i))
        rows["id_str"].append(f"g{i}")
        rows["file_loc"].append(f"cutouts/g{i}.fits")
        rows["ra"].append(150.0 + i / 7)
        rows["dec"].append(-2.0 + i / 11)
        rows["morph"].append("spiral" if i % 2 else "elliptical")
        rows["z"].append(0.01 * i)
    for r in extra_rows:
        for k in rows:
            rows[k].append(r.get(k, rows[k][0]))
    table = pa.table(rows)
    path = tmp_path / f"catalog.{fmt}"
    if fmt == "csv":
        pyarrow.csv.write_csv(table, path)
    else:
        pyarrow.parquet.write_table(table, path)
    return str(path)


def test_csv_and_parquet_catalogs_give_the_same_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir("/")  # relative file_loc resolves against the catalog's folder, not cwd
    sources = [
        make_image_source(_data(catalog_path=_catalog(tmp_path, fmt=f), label_column="morph"))
        for f in ("csv", "parquet")
    ]
    a, b = sources
    np.testing.assert_array_equal(a.ids, [f"g{i}" for i in range(6)])  # the catalog's order
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.labels, [0, 1, 0, 1, 0, 1])
    assert a.class_names == b.class_names == ("elliptical", "spiral")
    np.testing.assert_array_equal(a.get(np.arange(6)), b.get(np.arange(6)))
    assert list(a.columns) == ["ra", "dec", "morph", "z"]
    for k in a.columns:
        np.testing.assert_array_equal(a.columns[k], b.columns[k])
    np.testing.assert_allclose(a.columns["ra"], 150.0 + np.arange(6) / 7)
    want = fits.bands_to_rgb(_flux(3), fits.FitsOptions())[0]
    np.testing.assert_array_equal(a.get([3])[0], want)


def test_catalog_bad_rows_are_skipped_and_reported(tmp_path):
    (tmp_path / "cutouts").mkdir()
    _write(tmp_path / "cutouts" / "nan.fits", np.full((24, 24), np.nan))
    extra = [
        {"id_str": "missing", "file_loc": "cutouts/nope.fits"},
        {"id_str": "g0", "file_loc": "cutouts/g0.fits"},  # duplicate id
        {"id_str": "allnan", "file_loc": "cutouts/nan.fits"},
    ]
    path = _catalog(tmp_path, n=4, extra_rows=extra)
    report = tmp_path / "report.json"
    with pytest.raises(
        UserError, match=r"nope.fits, row 6: file not found \(listed in .*catalog.csv\)"
    ):
        make_image_source(_data(catalog_path=path))
    d = _data(catalog_path=path, on_bad_input="skip", verify_images=True)
    src = make_image_source(d, str(report))
    assert list(src.ids) == ["g0", "g1", "g2", "g3"]
    assert len(src.columns["ra"]) == 4
    import json

    problems = json.loads(report.read_text())["problems"]
    text = " ".join(p["problem"] for p in problems)
    assert "file not found" in text and "duplicate id g0" in text and "no finite pixel" in text


def test_npy_files_never_unpickle(tmp_path):
    np.save(
        tmp_path / "img.npy", (np.arange(16 * 16 * 3) % 256).astype(np.uint8).reshape(16, 16, 3)
    )
    np.save(tmp_path / "flux.npy", _flux(2))
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    from galaxy_jax.data.folder import read_image_file

    assert read_image_file(str(tmp_path / "img.npy")).shape == (16, 16, 3)
    flux = read_image_file(str(tmp_path / "flux.npy"))
    np.testing.assert_array_equal(flux, fits.bands_to_rgb(_flux(2), fits.FitsOptions())[0])
    with pytest.raises(UserError, match="evil.npy: cannot read .npy"):
        read_image_file(str(tmp_path / "evil.npy"))


def test_catalog_with_one_file_per_band(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet

    for i in range(3):
        for b, band in enumerate("grz"):
            _write(tmp_path / f"g{i}_{band}.fits", _flux(i)[b])
    pyarrow.parquet.write_table(
        pa.table(
            {"id_str": ["a", "b", "c"], "file_loc": [f"g{i}_{{band}}.fits" for i in range(3)]}
        ),
        tmp_path / "cat.parquet",
    )
    src = make_image_source(
        _data(catalog_path=str(tmp_path / "cat.parquet"), catalog_bands=("g", "r", "z"))
    )
    np.testing.assert_array_equal(
        src.get([1])[0], fits.bands_to_rgb(_flux(1), fits.FitsOptions())[0]
    )
    assert src.columns is None or src.columns == {}


def _bundle(path, n, size=16, labels=True):
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        if labels:
            f.create_dataset("ans", data=np.arange(n) % 10)
        f.create_dataset("ra", data=np.linspace(0, 10, n))
        f.create_dataset("dec", data=np.linspace(-5, 5, n))
        f.create_dataset("redshift", data=np.full(n, 0.05))
    return str(path)


def test_hdf5_bundle_in_the_galaxy10_layout(tmp_path):
    import h5py

    path = _bundle(tmp_path / "g10.h5", 25)
    src = make_image_source(_data("hdf5", hdf5_path=path))
    with h5py.File(path) as f:
        np.testing.assert_array_equal(src.get([7, 3, 7]), f["images"][[3, 7]][[1, 0, 1]])
        np.testing.assert_array_equal(src.columns["ra"], f["ra"][()])
    assert (
        len(src) == 25 and src.labels[12] == 2 and sorted(src.columns) == ["dec", "ra", "redshift"]
    )
    import pickle

    again = pickle.loads(pickle.dumps(src.get))  # for worker processes
    np.testing.assert_array_equal(again([4]), src.get([4]))
    unlabelled = make_image_source(
        _data("hdf5", hdf5_path=_bundle(tmp_path / "u.h5", 5, labels=False), hdf5_labels="")
    )
    assert unlabelled.labels is None
    with pytest.raises(UserError, match="no dataset 'ans'"):
        make_image_source(_data("hdf5", hdf5_path=str(tmp_path / "u.h5")))
    with pytest.raises(UserError, match="no dataset 'pics'"):
        make_image_source(_data("hdf5", hdf5_path=path, hdf5_images="pics"))


_PEAK = textwrap.dedent(
    """
    import sys
    import numpy as np
    from configs import data_defaults
    from galaxy_jax.data.from_config import make_image_source
    d = data_defaults.get_data_config("hdf5")
    d.hdf5_path = sys.argv[1]
    src = make_image_source(d)
    total = 0
    for lo in range(0, len(src), 64):
        total += int(src.get(np.arange(lo, min(lo + 64, len(src)))).sum() % 7)
    print(next(int(v.split()[1]) for v in open("/proc/self/status") if v.startswith("VmHWM")))
    """
)


@pytest.mark.slow
def test_hdf5_memory_stays_flat_as_the_bundle_grows(tmp_path):
    """Peak RSS reading every image of a 40 MB and a 320 MB bundle differs by far less than the
    bundle sizes: images are read batch by batch, never loaded whole."""
    peaks = {}
    for n in (600, 4800):  # 256x256x3 uint8: 118 MB and 944 MB
        path = _bundle(tmp_path / f"b{n}.h5", n, size=256)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(
            [sys.executable, "-c", _PEAK, path],
            capture_output=True,
            text=True,
            cwd=root,
            check=True,
        )
        peaks[n] = int(out.stdout.split()[-1]) / 1024  # MiB
        os.remove(path)
    assert peaks[4800] - peaks[600] < 100, peaks  # the data grew by ~826 MB


def test_fits_catalog_to_extract_to_dec_to_export_keeps_ra_dec(tmp_path):
    """End to end: a FITS catalog -> extract (pixels) -> SAE + DEC -> export, ra/dec preserved
    row for row in clusters.csv and clusters.parquet."""
    import pyarrow.parquet

    from configs import dec_base, export, extract, galaxy_dec
    from galaxy_jax import modes

    cat = _catalog(tmp_path, n=24)
    ex = extract.get_config("pixels_smoke")
    ex.data = _data(catalog_path=cat, label_column="morph")
    ex.data.image_size, ex.data.crop_size = 16, 0
    ex.batch_size, ex.shard_size = 8, 24
    modes.get("extract")(ex, str(tmp_path / "features"))
    assert (tmp_path / "features" / "catalog_columns.parquet").is_file()
    c = galaxy_dec.get_config()
    dec_base.shrink_for_smoke(c)
    c.data = data_defaults.features_data(str(tmp_path / "features"))
    c.dec.n_clusters, c.sae.dims = 2, (16, 16, 32, 3)
    modes.get("dec")(c, str(tmp_path / "dec"))
    e = export.get_config()
    e.run = str(tmp_path / "dec")
    modes.get("export")(e, str(tmp_path / "export"))
    import csv

    rows = list(csv.DictReader(open(tmp_path / "export" / "clusters.csv")))
    twin = pyarrow.parquet.read_table(tmp_path / "export" / "clusters.parquet").to_pylist()
    assert len(rows) == len(twin) == 24
    for r, t in zip(rows, twin, strict=True):
        i = int(r["id"][1:])  # g<i>
        assert float(r["ra"]) == 150.0 + i / 7  # the catalog's value, not a rounding of it
        assert t["ra"] == 150.0 + i / 7 and t["dec"] == -2.0 + i / 11  # exact in Parquet
        assert r["morph"] == ("spiral" if i % 2 else "elliptical")


SDSS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "..",
    "shared",
    "data",
    "sdss_ngc_hubble",
)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isfile(os.path.join(SDSS, "catalog.csv")),
    reason="no ../shared/data/sdss_ngc_hubble",
)
def test_real_sdss_catalog_end_to_end(tmp_path):
    """The real SDSS NGC/IC catalog, as published, through the catalog input -> pixel features ->
    DEC -> export: every row kept (its four bad images are valid JPEGs), ra/dec exact."""
    import csv

    from configs import dec_base, export, extract, galaxy_dec
    from galaxy_jax import modes

    with open(os.path.join(SDSS, "catalog.csv"), newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    ex = extract.get_config("pixels_smoke")
    ex.data = _data(
        catalog_path=os.path.join(SDSS, "catalog.csv"),
        catalog_id_column="name",
        catalog_path_column="image_filepath",
        label_column="folder_class",
    )
    ex.data.image_size, ex.data.crop_size = 16, 0
    ex.batch_size, ex.shard_size = 256, 4096
    modes.get("extract")(ex, str(tmp_path / "features"))
    c = galaxy_dec.get_config()
    dec_base.shrink_for_smoke(c)
    c.data = data_defaults.features_data(str(tmp_path / "features"))
    c.sae.dims, c.dec.n_clusters = (32, 32, 64, 4), 4
    modes.get("dec")(c, str(tmp_path / "dec"))
    e = export.get_config()
    e.run = str(tmp_path / "dec")
    modes.get("export")(e, str(tmp_path / "export"))
    out = list(csv.DictReader(open(tmp_path / "export" / "clusters.csv")))
    assert len(out) == len(rows) == 3902
    for r in out:
        src = rows[r["id"]]
        assert float(r["ra_deg"]) == float(src["ra_deg"])
        assert float(r["dec_deg"]) == float(src["dec_deg"])
        assert r["hubble_type_openngc"] == src["hubble_type_openngc"]
    anomalies = list(csv.DictReader(open(tmp_path / "export" / "anomalies.csv")))
    assert len(anomalies) == 24
