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
    assert out["montages"] == "montages/" and (tmp_path / "montages" / f"{ids[0]}.png").is_file()


def test_bad_queries_are_user_errors(pixel_space, tmp_path):
    with pytest.raises(UserError, match="not in"):
        modes.get("neighbours")(_config(pixel_space, query_ids="nope"), str(tmp_path))
    with pytest.raises(UserError, match="query_ids"):
        modes.get("neighbours")(_config(pixel_space), str(tmp_path))
    with pytest.raises(UserError, match="neither embedding.npy"):
        modes.get("neighbours")(_config(str(tmp_path), query_ids="0"), str(tmp_path / "o"))
