"""Exit-flow adaptation (galaxy_jax/adapt.py, mode adapt): the network split, the view cache,
the view pairs, the frozen baseline against extract's tta features, resume == uninterrupted, one
compilation, the shared cache and the config guard."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import CountCompiles

from configs import adapt as adapt_config
from configs import extract as extract_config
from galaxy_jax import adapt, parallel, preemption, train_loop
from galaxy_jax.errors import UserError
from galaxy_jax.features import FeatureSpec, dihedral_batch, pooled_features
from galaxy_jax.models import xception
from galaxy_jax.modes import adapt as adapt_mode
from galaxy_jax.modes import extract as extract_mode

NARROW = dict(width=0.125, middle_blocks=1)


def _read(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def _narrow():
    model = xception.Xception(**NARROW)
    return model, xception.init_variables(model, seed=3)


def test_entry_middle_exit_is_the_whole_network():
    model, variables = _narrow()
    x = jax.random.uniform(jax.random.key(0), (3, 75, 75, 3), minval=-1.0, maxval=1.0)
    whole = model.apply(variables, x)[1]["pooled"]
    h = model.apply(variables, x, stage="entry")[1]["block3"]
    m = model.apply(variables, h, stage="middle")[1]["middle"]
    parts = model.apply(variables, m, stage="exit")[1]["pooled"]
    np.testing.assert_allclose(np.asarray(parts), np.asarray(whole), rtol=1e-5, atol=1e-7)
    # pooled_features' 'middle' output is that map, micro-batched or not
    for mb in (0, (1, 3)):
        got = pooled_features(model, variables, x, micro_batch=mb, output="middle")
        np.testing.assert_allclose(np.asarray(got), np.asarray(m), rtol=1e-5, atol=1e-7)


def test_cached_views_are_the_middle_flow_of_each_dihedral_view():
    model, variables = _narrow()
    spec = FeatureSpec(image_size=75, architecture=tuple(sorted(NARROW.items())))
    shape = adapt.exit_input_shape(spec)
    assert shape == (5, 5, xception.scaled_channels(728, NARROW["width"]))
    images = np.random.default_rng(0).integers(0, 256, (2, 75, 75, 3), dtype=np.uint8)
    rows = np.asarray(adapt.views_fn(parallel.mesh(), spec)(variables, images))
    assert rows.dtype == np.float16 and rows.shape == (2, 8 * int(np.prod(shape)))
    maps = rows.reshape(2, 8, *shape)
    x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
    for k in (0, 3, 5):
        want = pooled_features(model, variables, dihedral_batch(x, k), output="middle")
        np.testing.assert_allclose(
            maps[:, k].astype(np.float32), np.asarray(want), rtol=2e-3, atol=1e-4
        )


def test_view_pairs_are_two_different_views_cropped_where_drawn():
    shape = (4, 4, 3)
    views = np.arange(5 * 8 * 48, dtype=np.float16).reshape(5, -1)
    idx = np.array([3, 0, 3, 1])
    a = adapt.pair_views(views, idx, shape, 2, seed=1, step=7)
    assert a.shape == (8, 2, 2, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, adapt.pair_views(views, idx, shape, 2, seed=1, step=7))
    assert not np.array_equal(a, adapt.pair_views(views, idx, shape, 2, seed=1, step=8))
    maps = views.reshape(5, 8, *shape).astype(np.float32)
    for row in range(8):
        i = idx[row % 4]
        # each crop is a window of one of galaxy i's 8 maps
        hits = [
            (v, y, x)
            for v in range(8)
            for y in range(3)
            for x in range(3)
            if np.array_equal(maps[i, v, y : y + 2, x : x + 2], a[row])
        ]
        assert len(hits) == 1, row
    # the two crops of a galaxy come from different views (values encode the view)
    first, second = a[:4, 0, 0, 0] // 48 % 8, a[4:, 0, 0, 0] // 48 % 8
    assert np.all(first != second)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("adapt_full"))
    counts = _run(workdir)
    return workdir, counts


def _run(workdir, **overrides):
    config = adapt_config.get_config("smoke")
    for k, v in overrides.items():
        section = config
        *path, last = k.split(".")
        for p in path:
            section = section[p]
        section[last] = v
    counter = CountCompiles()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_loop, "compile_step", counter)
        adapt_mode.run_adapt(config, workdir)
    return counter.counts


def test_smoke_run_trains_the_exit_flow_only_and_writes_a_features_dir(full_run):
    workdir, counts = full_run
    assert counts == {"adapt": 1}  # one compilation for the 6 steps
    r = _read(workdir)
    loss = [v for _, v in r["history"]["adapt"]["loss"]]
    assert len(loss) == 6 and np.isfinite(loss).all()
    f = np.load(os.path.join(workdir, "features.npy"))
    assert f.shape == (8, 2048) and np.isfinite(f).all()
    meta = json.load(open(os.path.join(workdir, "features_meta.json")))
    assert meta["tta"] is True and meta["weights_kind"] == "adapt"
    # The exported encoder: ImageNet's (here: the seeded random) trunk, a changed exit flow.
    from galaxy_jax import weights

    enc = weights.load_weights(os.path.join(workdir, "encoder.npz"))
    start = weights.load_weights("random", seed=0)
    p, q = enc.variables["params"], start.variables["params"]
    for name in ("block1_conv1", "block4_sepconv1", "block12_sepconv3"):
        for k in p[name]:
            np.testing.assert_array_equal(p[name][k], q[name][k])
    assert not np.array_equal(
        p["block14_sepconv2"]["pointwise_kernel"], q["block14_sepconv2"]["pointwise_kernel"]
    )
    assert not np.array_equal(p["block13_sepconv1_bn"]["scale"], q["block13_sepconv1_bn"]["scale"])
    # batch norm ran in inference mode: its statistics are ImageNet's (here: the start's)
    s, t = enc.variables["batch_stats"], start.variables["batch_stats"]
    np.testing.assert_array_equal(
        s["block14_sepconv2_bn"]["mean"], t["block14_sepconv2_bn"]["mean"]
    )
    assert r["trained_parameters"] == sum(
        v.size for k, m in p.items() if k.startswith(("block13", "block14")) for v in m.values()
    ) + (2048 * 32 + 32 + 32 * 16 + 16)


def test_the_frozen_baseline_is_extracts_tta_features(full_run, tmp_path):
    workdir = str(tmp_path / "frozen")
    assert _run(workdir, **{"optim.steps": 0, "views_from": full_run[0]}) == {}
    assert not os.path.exists(os.path.join(workdir, "views"))  # read from full_run's
    assert _read(workdir)["views"]["shared"] is True
    c = extract_config.get_config("smoke")
    c.data.synthetic_n, c.tta = 8, True
    want = extract_mode.run_extract(c, str(tmp_path / "extract"))
    got = np.load(os.path.join(workdir, "features.npy"))
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-3 * np.abs(want).max())


def test_interrupted_and_resumed_run_is_bit_identical(full_run, tmp_path, monkeypatch):
    workdir = str(tmp_path / "resumed")
    calls = iter(range(1, 1000))
    monkeypatch.setattr(preemption, "requested", lambda: next(calls) == 3)
    with pytest.raises(preemption.Preempted):
        _run(workdir)
    assert not os.path.exists(os.path.join(workdir, "features.npy"))
    monkeypatch.setattr(preemption, "requested", lambda: False)
    _run(workdir)
    a, b = _read(full_run[0]), _read(workdir)
    assert a["history"] == b["history"]
    assert a["encoder"]["variables_sha256"] == b["encoder"]["variables_sha256"]
    np.testing.assert_array_equal(
        np.load(os.path.join(full_run[0], "features.npy")),
        np.load(os.path.join(workdir, "features.npy")),
    )
    assert _run(workdir) == {}  # finished: restored, nothing compiled again


def test_a_cache_of_other_images_is_refused_and_other_training_refuses_to_resume(
    full_run, tmp_path
):
    with pytest.raises(UserError, match="views_from"):
        _run(str(tmp_path / "a"), **{"views_from": full_run[0], "data.image_size": 75})
    with pytest.raises(UserError, match="no finished view cache"):
        _run(str(tmp_path / "b"), views_from=str(tmp_path))
    with pytest.raises(UserError, match="another config"):
        _run(full_run[0], **{"optim.lr": 1e-3})
    with pytest.raises(UserError, match="config.crop"):
        _run(str(tmp_path / "c"), views_from=full_run[0], crop=6)


@pytest.mark.parametrize(
    "field, value",
    [("optim.batch_size", 1), ("crop", -1), ("temperature", 0.0), ("data.image_size", 64)],
)
def test_bad_config_is_refused_naming_the_field(tmp_path, field, value):
    with pytest.raises(UserError, match=f"config.{field}"):
        _run(str(tmp_path / "w"), **{field: value})
    assert not os.path.exists(tmp_path / "w")


def test_damaged_features_are_rebuilt_and_a_batch_larger_than_the_data_is_refused(
    full_run, tmp_path
):
    workdir = str(tmp_path / "copy")
    shutil.copytree(full_run[0], workdir)
    path = os.path.join(workdir, "features.npy")
    want = np.load(path)
    with open(path, "r+b") as f:  # same size, other bytes: only the SHA-256 can tell
        f.seek(-8, os.SEEK_END)
        tail = f.read(8)
        f.seek(-8, os.SEEK_END)
        f.write(bytes(c ^ 0xFF for c in tail))
    assert not np.array_equal(np.load(path), want)
    assert _run(workdir) == {}  # nothing trained again
    np.testing.assert_array_equal(np.load(path), want)
    with pytest.raises(UserError, match="config.optim.batch_size: 9 galaxies"):
        _run(str(tmp_path / "big"), **{"optim.batch_size": 9})
