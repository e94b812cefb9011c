"""The Kaggle TFDS builder on a tiny fixture in the Kaggle layout: build, read back, bad input."""

import json
import os
import sys

import numpy as np
import pytest

from configs import build_galaxy_zoo
from configs.data_defaults import get_data_config
from galaxy_jax.data import galaxy_zoo
from galaxy_jax.data.from_config import make_image_source
from galaxy_jax.data.labels import VOTE_COLUMNS
from galaxy_jax.data.testing import jpeg_bytes, vote_row, write_kaggle
from galaxy_jax.errors import UserError


def _config(tmp_path, **kw):
    d = get_data_config("galaxy_zoo")
    d.tfds_data_dir = str(tmp_path / "tfds")
    d.manual_dir = str(tmp_path / "manual")
    d.validation_fraction, d.test_fraction = 0.25, 0.25
    d.update(kw)
    return d


def _prepared_dirs(tmp_path):
    root = tmp_path / "tfds"
    return [p for p in root.rglob("*") if p.is_dir() and (p / "dataset_info.json").exists()]


@pytest.mark.parametrize("zipped", [True, False])
def test_build_and_read_back(tmp_path, zipped):
    d = _config(tmp_path)
    truth = write_kaggle(d.manual_dir, 12, zipped=zipped)
    builder = galaxy_zoo.build(d)
    assert "tensorflow" not in sys.modules  # array_record: no TensorFlow needed
    assert str(builder.info.file_format.value) == "array_record"
    sizes = {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")}
    assert sum(sizes.values()) == 12
    seen = {}
    for split in sizes:
        d.tfds_split = split
        src = make_image_source(d)
        for gid, label in zip(src.ids, src.labels, strict=True):
            assert galaxy_zoo.split_of(gid, 0.25, 0.25) == split
            seen[int(gid)] = int(label)
        if len(src):
            image = src.get([0])[0]
            assert image.shape == (424, 424, 3) and image.dtype == np.uint8
    assert seen == truth
    ids, votes = galaxy_zoo.read_votes(d, "train")
    assert votes.shape == (sizes["train"], 37) and np.isfinite(votes).all()


def test_split_is_a_stable_hash():
    splits = [galaxy_zoo.split_of(str(100000 + i), 0.1, 0.1) for i in range(4000)]
    frac = {s: splits.count(s) / 4000 for s in ("train", "validation", "test")}
    assert abs(frac["test"] - 0.1) < 0.02 and abs(frac["validation"] - 0.1) < 0.02
    assert galaxy_zoo.split_of("100008", 0.1, 0.1) == galaxy_zoo.split_of("100008", 0.1, 0.1)


def test_reading_before_building_says_how(tmp_path):
    with pytest.raises(UserError, match="not built"):
        make_image_source(_config(tmp_path))
    with pytest.raises(UserError, match="images_training_rev1.zip"):
        galaxy_zoo.build(_config(tmp_path))  # empty manual dir: the instructions


def _bad_fixtures():
    """name -> (rows/images edit on the default fixture, expected message)."""
    ids = [100008 + 7 * i for i in range(6)]
    good_rows = {g: vote_row((0.7, 0.2, 0.1), i) for i, g in enumerate(ids)}
    good_images = {g: jpeg_bytes(i) for i, g in enumerate(ids)}
    cases = {}

    def case(name, match, rows=None, images=None, header=None):
        cases[name] = (rows or dict(good_rows), images or dict(good_images), header, match)

    nan_rows = dict(good_rows)
    nan_rows[ids[1]] = ["nan"] + good_rows[ids[1]][1:]
    case("nan_vote", r"row 3: vote fraction NaN.*Class1.1=nan", rows=nan_rows)
    big = dict(good_rows)
    big[ids[2]] = good_rows[ids[2]][:5] + [1.7] + good_rows[ids[2]][6:]
    case("out_of_range", r"row 4: vote fraction NaN or outside \[0, 1\]: Class3.1=1.7", rows=big)
    case(
        "row_without_image",
        r"row 8: no image 999999.jpg",
        rows={**good_rows, 999999: good_rows[ids[0]]},
    )
    case(
        "image_without_row",
        r"999998.jpg: image has no row",
        images={**good_images, 999998: jpeg_bytes(0)},
    )
    dup = list(good_rows.items()) + [(ids[0], good_rows[ids[0]])]
    case("duplicate_id", r"row 8: duplicate GalaxyID 100008", rows=dup)
    case(
        "corrupt_jpeg",
        r"100015.jpg: cannot decode",
        images={**good_images, ids[1]: b"\xff\xd8garbage"},
    )
    case(
        "truncated_jpeg",
        r"100022.jpg: cannot decode",
        images={**good_images, ids[2]: good_images[ids[2]][:600]},
    )
    case(
        "wrong_size",
        r"100029.jpg: image is \(64, 64, 3\)",
        images={**good_images, ids[3]: jpeg_bytes(3, size=64)},
    )
    case("missing_column", r"missing column\(s\) Class11.6", header=list(VOTE_COLUMNS[:-1]))
    renamed = list(VOTE_COLUMNS)
    renamed[0] = "class1_1"
    case("renamed_column", r"'Class1.1' \(renamed to 'class1_1'\?\)", header=renamed)
    return cases


BAD = _bad_fixtures()


def _write_bad(d, name):
    rows, images, header, _ = BAD[name]
    write_kaggle(d.manual_dir, 0, rows=rows if isinstance(rows, dict) else {}, images=images)
    if not isinstance(rows, dict) or header is not None:  # duplicates or a changed header
        path = os.path.join(d.manual_dir, "training_solutions_rev1.csv")
        items = rows if not isinstance(rows, dict) else list(rows.items())
        cols = header or list(VOTE_COLUMNS)
        lines = [",".join(["GalaxyID"] + cols)]
        lines += [",".join([str(g)] + [str(v) for v in vals[: len(cols)]]) for g, vals in items]
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_raises_and_leaves_no_dataset(tmp_path, name):
    d = _config(tmp_path)
    _write_bad(d, name)
    with pytest.raises(UserError, match=BAD[name][3]):
        galaxy_zoo.build(d)
    assert _prepared_dirs(tmp_path) == []
    assert not galaxy_zoo.make_builder(d).is_prepared()


@pytest.mark.parametrize(
    "name",
    [
        "nan_vote",
        "out_of_range",
        "row_without_image",
        "image_without_row",
        "duplicate_id",
        "corrupt_jpeg",
        "truncated_jpeg",
        "wrong_size",
    ],
)
def test_bad_input_skip_mode_builds_and_reports(tmp_path, name):
    d = _config(tmp_path, on_bad_input="skip")
    _write_bad(d, name)
    report = tmp_path / "report.json"
    builder = galaxy_zoo.build(d, report_path=str(report))
    entries = json.loads(report.read_text())["problems"]
    assert entries and all(e["file"] for e in entries)
    kept = sum(s.num_examples for s in builder.info.splits.values())
    # Each case spoils one of the 6 galaxies (a duplicated id leaves out both of its rows);
    # the extra row or image of the *_without_* cases is simply not there.
    assert kept == 6 - (name not in ("row_without_image", "image_without_row"))


def test_build_dataset_mode_prints_counts(tmp_path, capsys):
    from galaxy_jax.modes.data import run_build_dataset

    config = build_galaxy_zoo.get_config()
    config.data = _config(tmp_path)
    write_kaggle(config.data.manual_dir, 12)
    summary = run_build_dataset(config, str(tmp_path / "work"))
    out = capsys.readouterr().out
    assert "elliptical" in out and "spiral" in out
    totals = {k: sum(s[k] for s in summary["splits"].values()) for k in ("elliptical", "spiral")}
    assert totals == {"elliptical": 6, "spiral": 6}
    assert json.loads((tmp_path / "work" / "dataset.json").read_text())["label_rule"] == "dominant"


@pytest.mark.parametrize("arg", [None, "clean", "folder", "smoke"])
def test_configs_build(arg):
    config = build_galaxy_zoo.get_config(arg)
    assert config.mode == "build_dataset"
