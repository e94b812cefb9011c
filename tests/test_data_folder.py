"""Folder and CSV datasets: round trips, and every kind of bad input named or reported."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from configs.data_defaults import get_data_config
from galaxy_jax.data.from_config import make_image_source
from galaxy_jax.errors import UserError


def _png(path, seed, size=16):
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path)
    return image


def _folder_tree(root):
    truth = {}
    for split, n in (("train", 3), ("validation", 2)):
        for c in ("elliptical", "spiral"):
            for i in range(n):
                gid = f"{split[0]}{c[0]}{i}"
                truth[gid] = (c, _png(os.path.join(root, split, c, f"{gid}.png"), hash(gid) % 99))
    return truth


def _folder_config(root, **kw):
    cfg = get_data_config("folder")
    cfg.folder = str(root)
    cfg.update(kw)
    return cfg


def test_folder_round_trip(tmp_path):
    truth = _folder_tree(tmp_path)
    src = make_image_source(_folder_config(tmp_path))
    assert len(src) == 10 and src.class_names == ("elliptical", "spiral")
    images = src.get(np.arange(len(src)))
    for gid, label, image in zip(src.ids, src.labels, images, strict=True):
        assert src.class_names[label] == truth[gid][0]
        np.testing.assert_array_equal(image, truth[gid][1])
    assert len(make_image_source(_folder_config(tmp_path, split="validation"))) == 4


def test_folder_errors(tmp_path):
    with pytest.raises(UserError, match="empty folder"):
        make_image_source(_folder_config(tmp_path))
    _folder_tree(tmp_path)
    with pytest.raises(UserError, match="no split folder test"):
        make_image_source(_folder_config(tmp_path, split="test"))


def _corrupt(tmp_path, truth_ids):
    """Breaks two files: garbage bytes and a truncated JPEG."""
    spiral = os.path.join(tmp_path, "train", "spiral")
    with open(os.path.join(spiral, "garbage.png"), "wb") as f:
        f.write(b"not an image at all")
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(os.path.join(spiral, "full.jpg"))
    data = open(os.path.join(spiral, "full.jpg"), "rb").read()
    with open(os.path.join(spiral, "truncated.jpg"), "wb") as f:
        f.write(data[: len(data) // 2])
    os.remove(os.path.join(spiral, "full.jpg"))


def test_folder_corrupt_images_raise_or_skip_with_report(tmp_path):
    _folder_tree(tmp_path)
    _corrupt(tmp_path, None)
    src = make_image_source(_folder_config(tmp_path))  # listing alone does not decode
    bad = int(np.flatnonzero(src.ids == "garbage")[0])
    with pytest.raises(UserError, match="garbage.png: cannot decode"):
        src.get([bad])
    with pytest.raises(UserError, match=r"garbage.png|truncated.jpg"):
        make_image_source(_folder_config(tmp_path, verify_images=True))
    report = tmp_path / "report.json"
    src = make_image_source(
        _folder_config(tmp_path, verify_images=True, on_bad_input="skip"), report_path=str(report)
    )
    assert len(src) == 10
    problems = json.loads(report.read_text())["problems"]
    assert sorted(p["id"] for p in problems) == ["garbage", "truncated"]
    assert all("cannot decode" in p["problem"] for p in problems)


def test_folder_duplicate_ids(tmp_path):
    _folder_tree(tmp_path)
    _png(os.path.join(tmp_path, "validation", "spiral", "te0.png"), 1)  # te0 is in train too
    with pytest.raises(UserError, match="duplicate id te0"):
        make_image_source(_folder_config(tmp_path))
    src = make_image_source(
        _folder_config(tmp_path, on_bad_input="skip"), report_path=str(tmp_path / "r.json")
    )
    assert "te0" not in set(src.ids) and len(src) == 9  # both copies out, and reported


def _csv_dataset(tmp_path, lines, n=4):
    images = tmp_path / "images"
    truth = {f"g{i}": _png(str(images / f"g{i}.png"), i) for i in range(n)}
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    cfg = get_data_config("csv")
    cfg.update(dict(csv_path=str(tmp_path / "meta.csv"), image_dir=str(images), image_ext=".png"))
    return cfg, truth


def test_csv_round_trip_labelled_and_unlabelled(tmp_path):
    lines = ["id,morphology", "g0,spiral", "g1,elliptical", "g2,", "g3,spiral"]
    cfg, truth = _csv_dataset(tmp_path, lines)
    cfg.label_column = "morphology"
    src = make_image_source(cfg)
    assert list(src.ids) == ["g0", "g1", "g2", "g3"]
    assert src.class_names == ("elliptical", "spiral")
    assert src.labels.tolist() == [1, 0, -1, 1]
    np.testing.assert_array_equal(src.get([2])[0], truth["g2"])
    cfg.label_column = ""
    src = make_image_source(cfg)
    assert src.labels is None and len(src) == 4


@pytest.mark.parametrize(
    "lines, label_column, match",
    [
        (["id", "g0", "g1", "g2", "g3", "g9"], "", r"meta.csv, row 6: no image g9.png"),
        (["id", "g0", "g1", "g2"], "", r"g3.png: image has no row"),
        (["id", "g0", "g1", "g2", "g3", "g1"], "", r"meta.csv, row 6: duplicate id g1"),
        (["ident", "g0", "g1", "g2", "g3"], "", r"missing column\(s\) id; the header has ident"),
        (["id,label", "g0,a", "g1,b", "g2,a", "g3,b"], "labels", r"missing column\(s\) labels"),
        (["id"], "", "no rows"),
    ],
)
def test_csv_bad_input_raises_naming_file_and_row(tmp_path, lines, label_column, match):
    cfg, _ = _csv_dataset(tmp_path, lines)
    cfg.label_column = label_column
    with pytest.raises(UserError, match=match):
        make_image_source(cfg)


def test_csv_skip_mode_reports_everything(tmp_path):
    cfg, _ = _csv_dataset(tmp_path, ["id", "g0", "g1", "g1", "g9"])  # g2, g3 have no row
    cfg.on_bad_input = "skip"
    report = tmp_path / "report.json"
    src = make_image_source(cfg, report_path=str(report))
    assert list(src.ids) == ["g0"]  # g1 is duplicated: both rows out
    summary = json.loads(report.read_text())
    assert summary["summary"]["skipped"] == 4 and summary["summary"]["kept"] == 1
    ids = sorted(p["id"] for p in summary["problems"])
    assert ids == ["g1", "g2", "g3", "g9"]


def test_csv_empty_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "meta.csv").write_text("id\ng0\n")
    cfg = get_data_config("csv")
    cfg.update(dict(csv_path=str(tmp_path / "meta.csv"), image_dir=str(tmp_path / "images")))
    with pytest.raises(UserError, match="empty folder"):
        make_image_source(cfg)
