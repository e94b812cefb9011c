"""The `neighbours` mode end to end on synthetic galaxies' features."""

import csv

import numpy as np
import pytest

from configs import extract as extract_config
from configs import neighbours as neighbours_config
from galaxy_jax import modes
from galaxy_jax.errors import UserError


@pytest.fixture(scope="module")
def pixel_space(tmp_path_factory):
    """Rotation-averaged 32x32 pixels of 64 synthetic galaxies (half spirals): a small space
    in which morphology, not orientation, sets the distances."""
    c = extract_config.get_config("pixels_smoke")
    c.data.synthetic_n, c.data.image_size, c.data.crop_size = 64, 32, 0
    c.tta, c.shard_size, c.batch_size = True, 64, 16
    path = str(tmp_path_factory.mktemp("space"))
    modes.get("extract")(c, path)
    return path


def _config(space, **fields):
    c = neighbours_config.get_config()
    c.space = space
    for k, v in fields.items():
        c[k] = v
    return c


def test_neighbours_csv_montages_and_same_class_neighbours(pixel_space, tmp_path):
    ids = np.load(f"{pixel_space}/ids.npy").astype(str)
    labels = np.load(f"{pixel_space}/labels.npy")
    queries = ",".join(ids[:10])
    out = modes.get("neighbours")(_config(pixel_space, query_ids=queries, k=5), str(tmp_path))
    rows = list(csv.DictReader(open(tmp_path / "neighbours.csv")))
    assert len(rows) == 50 and list(rows[0])[:4] == ["query", "rank", "id", "distance"]
    label_of = dict(zip(ids, labels, strict=True))
    same = [label_of[r["id"]] == label_of[r["query"]] for r in rows if r["id"] != r["query"]]
    assert np.mean(same) > 0.7, np.mean(same)  # most neighbours share the query's class
    first = [r for r in rows if r["rank"] == "1"]
    assert all(r["id"] == r["query"] for r in first)  # a galaxy is its own nearest, at 0
    assert all(float(r["distance"]) < 1e-5 for r in first)
    assert (
        out["montages"] == "montages/" and (tmp_path / "montages" / f"000_{ids[0]}.png").is_file()
    )


def test_bad_queries_are_user_errors(pixel_space, tmp_path):
    with pytest.raises(UserError, match="not in"):
        modes.get("neighbours")(_config(pixel_space, query_ids="nope"), str(tmp_path))
    with pytest.raises(UserError, match="query_ids"):
        modes.get("neighbours")(_config(pixel_space), str(tmp_path))
    with pytest.raises(UserError, match="neither embedding.npy"):
        modes.get("neighbours")(_config(str(tmp_path), query_ids="0"), str(tmp_path / "o"))


def test_an_image_file_not_in_the_space_is_run_through_the_same_features(pixel_space, tmp_path):
    import json

    import ml_collections
    from PIL import Image

    from galaxy_jax.data.from_config import make_image_source

    with open(f"{pixel_space}/features_meta.json") as f:
        data = ml_collections.ConfigDict(json.load(f)["config"]["data"])
    source = make_image_source(data)
    Image.fromarray(source.get([7])[0]).save(tmp_path / "query.png")  # lossless: row 7 exactly
    c = _config(pixel_space, query_images=str(tmp_path / "query.png"), k=3)
    modes.get("neighbours")(c, str(tmp_path / "out"))
    rows = list(csv.DictReader(open(tmp_path / "out" / "neighbours.csv")))
    assert rows[0]["query"] == "query.png" and rows[0]["id"] == source.ids[7]
    assert float(rows[0]["distance"]) < 1e-5
    assert (tmp_path / "out" / "montages" / "000_query.png.png").is_file()
