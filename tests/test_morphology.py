"""The morphology mode: statmorph on synthetic galaxies, failures flagged and kept, and the table
consumed by k-means like any features."""

import csv
import json
import os

import numpy as np
import pytest

pytest.importorskip("statmorph", reason="pip install -e '.[morphology]'")
pytest.importorskip("photutils", reason="pip install -e '.[morphology]'")

from sklearn import metrics as skm  # noqa: E402

from configs import galaxy_dec as dec_config  # noqa: E402
from configs import morphology as morph_config  # noqa: E402
from galaxy_jax import morphology  # noqa: E402
from galaxy_jax.data import image_source as source_lib  # noqa: E402
from galaxy_jax.data import synthetic, vectors  # noqa: E402
from galaxy_jax.modes import dec as dec_mode  # noqa: E402
from galaxy_jax.modes import morphology as morph_mode  # noqa: E402

N = 32


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """The mode on N synthetic galaxies of 128 px, in 2 worker processes."""
    workdir = str(tmp_path_factory.mktemp("morph"))
    c = morph_config.get_config("smoke")
    c.data.synthetic_n = N
    c.chunk_size = 8
    features = morph_mode.run_morphology(c, workdir)
    with open(os.path.join(workdir, "morphology.csv")) as f:
        table = list(csv.DictReader(f))
    return workdir, features, table


def _column(table, name, label):
    return np.array([float(r[name]) for r in table if int(r["label"]) == label])


@pytest.mark.slow
def test_outputs_load_as_features_and_all_measured(synthetic_run):
    workdir, features, table = synthetic_run
    assert features.shape == (N, len(morphology.COLUMNS)) and features.dtype == np.float32
    np.testing.assert_allclose(features.mean(0), 0, atol=1e-5)  # z-scored
    assert len(table) == N and all(r["ok"] == "1" for r in table)
    v = vectors.load_features(workdir)
    assert v.x.shape == features.shape
    np.testing.assert_array_equal(v.y, synthetic.synthetic_labels(N, 0))
    with open(os.path.join(workdir, "features_meta.json")) as f:
        meta = json.load(f)
    assert meta["columns"] == list(morphology.COLUMNS) and meta["num_failed"] == 0
    assert not os.path.exists(os.path.join(workdir, morph_mode.SHARD_DIR))


@pytest.mark.slow
def test_features_separate_ellipticals_from_spirals(synthetic_run):
    _, _, table = synthetic_run
    E, S = synthetic.ELLIPTICAL, synthetic.SPIRAL
    # Smooth ellipticals vs armed spirals: smoothness (clumpiness) and asymmetry split them.
    y = np.array([int(r["label"]) for r in table])
    for name, min_auc in (("smoothness", 0.8), ("asymmetry", 0.7)):
        score = np.array([float(r[name]) for r in table])
        assert skm.roc_auc_score(y == S, score) > min_auc, name
    assert _column(table, "concentration", E).mean() > _column(table, "concentration", S).mean()


@pytest.mark.slow
def test_ellipticals_have_higher_gini_and_sersic_n(synthetic_run):
    # The renderer keeps every galaxy's peak below white after its asinh stretch; when it clipped
    # the cores, ellipticals measured flat-topped (n ~ 0.8, Gini below the spirals').
    _, _, table = synthetic_run
    E, S = synthetic.ELLIPTICAL, synthetic.SPIRAL
    assert _column(table, "gini", E).mean() > _column(table, "gini", S).mean() + 0.01
    assert _column(table, "sersic_n", E).mean() > _column(table, "sersic_n", S).mean()


@pytest.mark.slow
def test_kmeans_runs_on_the_table(synthetic_run, tmp_path):
    workdir, _, _ = synthetic_run
    c = dec_config.get_config()
    c.data.path = workdir
    results = dec_mode.run_kmeans(c, str(tmp_path))
    assert results["metrics"]["kmeans_input"]["n"] == N


def test_blank_image_is_flagged_and_kept(tmp_path, monkeypatch):
    good = synthetic.make_synthetic_source(3, 96, 0)
    images = np.concatenate([good.get(np.arange(3)), np.zeros((1, 96, 96, 3), np.uint8)])
    src = source_lib.from_arrays(
        images, labels=[*good.labels, 0], ids=["a", "b", "c", "blank"], class_names=("e", "s")
    )
    from galaxy_jax.data import from_config as sources

    monkeypatch.setattr(sources, "make_image_source", lambda *a, **k: src)
    c = morph_config.get_config("smoke")
    c.workers = 1  # from_arrays' `get` is a lambda: not picklable for worker processes
    features = morph_mode.run_morphology(c, str(tmp_path))
    assert features.shape == (4, len(morphology.COLUMNS)) and np.isfinite(features).all()
    flags = np.load(tmp_path / "morphology_flags.npy")
    assert flags[3] == morphology.NO_SEGMENT and (flags[:3] >= 0).all()
    with open(tmp_path / "morphology.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["id"] for r in table] == ["a", "b", "c", "blank"]
    assert table[3]["ok"] == "0" and table[3]["error"] and table[3]["gini"] == "nan"
    # The imputed row sits at the column medians of the measured galaxies.
    raw = np.array([[float(r[k]) for k in morphology.COLUMNS] for r in table[:3]])
    meta = json.loads((tmp_path / "features_meta.json").read_text())
    std = np.array([meta["std"][k] for k in morphology.COLUMNS])
    mean = np.array([meta["mean"][k] for k in morphology.COLUMNS])
    np.testing.assert_allclose(features[3] * std + mean, np.median(raw, 0), rtol=1e-4, atol=1e-5)
    assert meta["num_failed"] == 1


def test_measure_reports_an_exception_as_a_flag():
    row = morphology.measure(np.zeros((4,), np.uint8))  # not an image: the band has no shape
    assert not row["ok"] and row["flag"] == morphology.EXCEPTION and "Error" in row["error"]
    assert np.isnan(row["gini"])


def test_dihedral_measurement_is_the_same_for_every_orientation():
    # statmorph alone is not orientation-free (galaxy_jax/morphology.py docstring); the median
    # over the 8 rotations/flips is, exactly: any orientation has the same 8 transforms.
    image = synthetic.render_galaxy(np.random.default_rng(3), 0, size=128)
    assert len({v.tobytes() for v in morphology.dihedral_views(image)}) == 8
    ref = morphology.measure_dihedral(image)
    assert ref["ok"], ref["error"]
    for view in (np.rot90(image), np.ascontiguousarray(image[::-1])):
        got = morphology.measure_dihedral(view)
        assert [got[c] for c in morphology.COLUMNS] == [ref[c] for c in morphology.COLUMNS]


def test_mode_tta_writes_the_dihedral_medians(tmp_path):
    c = morph_config.get_config("smoke")
    c.data.synthetic_n = 2
    c.workers = 1
    c.tta = True
    morph_mode.run_morphology(c, str(tmp_path))
    with open(tmp_path / "morphology.csv") as f:
        table = list(csv.DictReader(f))
    images = synthetic.make_synthetic_source(2, 128, seed=c.data.synthetic_seed).get(np.arange(2))
    for row, image in zip(table, np.asarray(images), strict=True):
        want = morphology.measure_dihedral(image)
        for col in morphology.COLUMNS:
            assert float(row[col]) == pytest.approx(
                want[col], rel=1e-5, abs=1e-6, nan_ok=True
            )  # CSV: 6 digits
    with open(tmp_path / "features_meta.json") as f:
        assert json.load(f)["tta"] is True


def test_measure_source_resumes_from_its_verified_chunks(tmp_path, caplog):
    """The chunks go through galaxy_jax.shards: a re-run measures only the chunks that are
    missing or do not match their SHA-256, and another hash starts over."""
    from galaxy_jax import shards

    src = synthetic.make_synthetic_source(6, 64, 0)
    requested = []
    get = src.get
    src.get = lambda idx: (requested.append(np.asarray(idx).tolist()), get(idx))[1]
    params = morph_mode._measure_params(morph_config.get_config("smoke"))
    d = str(tmp_path / "shards")
    kw = dict(workers=1, chunk_size=2, shard_dir=d)
    full = morph_mode.measure_source(src, params, meta_hash="a", **kw)
    paths = [shards.shard_path(d, i, 3, ".json") for i in range(3)]
    assert all(os.path.exists(p) and os.path.exists(p + ".sha256") for p in paths)
    os.remove(paths[0])
    with open(paths[2], "r+b") as f:  # garbled
        f.seek(10)
        f.write(b"#")
    caplog.set_level("WARNING")
    requested.clear()
    again = morph_mode.measure_source(src, params, meta_hash="a", **kw)
    assert requested == [[0, 1], [4, 5]]
    assert f"Ignoring morphology chunk {paths[2]}: its bytes do not match" in caplog.text
    same = lambda rows: json.dumps([{**r, "seconds": 0} for r in rows], sort_keys=True)  # noqa: E731
    assert same(again) == same(full)  # but the timings of the chunks measured again
    requested.clear()
    morph_mode.measure_source(src, params, meta_hash="b", **kw)
    assert requested == [[0, 1], [2, 3], [4, 5]]
