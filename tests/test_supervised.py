"""Supervised references: split, metrics, batch norm in the CNN step, and the smoke runs."""

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import supervised_ann, supervised_cnn
from galaxy_jax import preemption, supervised
from galaxy_jax.errors import UserError
from galaxy_jax.modes import supervised as supervised_mode
from galaxy_jax.optim import make_optimizer


def _read(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def test_split_is_stratified_disjoint_and_seeded():
    y = np.asarray([0] * 40 + [1] * 20 + [-1] * 5, np.int32)
    s = supervised.split_indices(y, 0.25, 0.25, seed=3)
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(60))
    assert [int((y[s["val"]] == c).sum()) for c in (0, 1)] == [10, 5]
    assert [int((y[s["test"]] == c).sum()) for c in (0, 1)] == [10, 5]
    again = supervised.split_indices(y, 0.25, 0.25, seed=3)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = supervised.split_indices(y, 0.25, 0.25, seed=4)
    assert not np.array_equal(s["test"], other["test"])


def test_split_from_csv_takes_the_test_rows_from_the_csv(tmp_path):
    # The real sample's labels.csv layout: GalaxyID, split, ... (train | validation folders).
    ids = np.asarray([f"g{i}" for i in range(26)])
    y = np.asarray([0] * 10 + [1] * 10 + [0, 0, 1, 1, -1, 0], np.int32)
    csv = tmp_path / "labels.csv"
    rows = [f"{g},{'validation' if i >= 20 else 'train'},x" for i, g in enumerate(ids)]
    csv.write_text("GalaxyID,split,label\n" + "\n".join(rows) + "\n")
    kw = dict(id_column="GalaxyID", split_column="split", test_split="validation", seed=0)
    s = supervised.split_indices_from_csv(ids, y, str(csv), val_fraction=0.2, **kw)
    assert s["test"].tolist() == [20, 21, 22, 23, 25]  # the CSV's validation rows, labelled
    assert [int((y[s["val"]] == c).sum()) for c in (0, 1)] == [2, 2]  # 20% of each class
    assert sorted(np.concatenate([s["train"], s["val"]]).tolist()) == list(range(20))
    with pytest.raises(UserError, match="the splits are"):
        supervised.split_indices_from_csv(
            ids, y, str(csv), val_fraction=0.2, **{**kw, "test_split": "test"}
        )
    with pytest.raises(UserError, match="no row for 1 ids"):
        supervised.split_indices_from_csv(
            np.asarray([*ids[:-1], "new"]), y, str(csv), val_fraction=0.2, **kw
        )


def test_binary_metrics_layout():
    m = supervised.binary_metrics(
        np.asarray([0, 0, 1, 1, 1]), np.asarray([0.1, 0.7, 0.9, 0.6, 0.2])
    )
    assert m["confusion"] == [[1, 1], [1, 2]]  # rows predicted 0/1, columns true 0/1
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["roc_auc"] == pytest.approx(4 / 6)  # 4 of the 6 (pos, neg) pairs ordered


class _TinyBN(nn.Module):
    """Conv -> BatchNorm -> pool -> Dense: the CNN step's batch-norm handling, compiled fast."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
        return nn.Dense(1)(nn.relu(x).mean((1, 2)))[..., 0]


def test_cnn_step_updates_batch_stats_and_eval_uses_them():
    model = _TinyBN()
    images = np.random.default_rng(0).integers(0, 255, (4, 12, 12, 3)).astype(np.uint8)
    v = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    state = supervised.State.create(
        apply_fn=model.apply, params=v["params"], tx=optax.adam(1e-3), batch_stats=v["batch_stats"]
    )
    sizes = dict(crop_size=None, image_size=8)
    aug = dict(max_angle_deg=10.0, max_zoom=1.1, max_brightness=0.1)
    step = jax.jit(functools.partial(supervised.cnn_train_step, model=model, aug=aug, **sizes))
    new, loss = step(state, images, jnp.asarray([0, 1, 0, 1]), jax.random.key(1))
    assert np.isfinite(float(loss)) and int(new.step) == 1
    assert not np.allclose(new.batch_stats["BatchNorm_0"]["mean"], 0.0)  # stats were updated
    predict = jax.jit(functools.partial(supervised.cnn_predict, model=model, **sizes))
    variables = {"params": new.params, "batch_stats": new.batch_stats}
    alone = predict(variables, images[[0, 0, 0, 0]])
    mixed = predict(variables, images)
    # Eval mode: an image's prediction does not depend on the rest of its batch.
    np.testing.assert_allclose(alone[0], mixed[0], rtol=1e-5)


def test_ann_smoke_resumes_to_the_same_result(tmp_path, monkeypatch):
    config = supervised_ann.get_config("smoke")
    full = _read_run(supervised_mode.run_ann, config, str(tmp_path / "full"))
    assert full["metrics"]["test"]["accuracy"] >= 0.9
    assert set(full["metrics"]["val"]) >= {"accuracy", "roc_auc", "confusion", "n"}
    calls = iter(range(1, 1000))
    monkeypatch.setattr(preemption, "requested", lambda: next(calls) == 25)
    with pytest.raises(preemption.Preempted):
        supervised_mode.run_ann(config, str(tmp_path / "cut"))
    monkeypatch.setattr(preemption, "requested", lambda: False)
    resumed = _read_run(supervised_mode.run_ann, config, str(tmp_path / "cut"))
    assert resumed["metrics"] == full["metrics"]
    assert resumed["history"] == full["history"]


def _read_run(fn, config, workdir):
    fn(config, workdir)
    return _read(workdir)


def test_ann_needs_binary_labels(tmp_path):
    config = supervised_ann.get_config("smoke")
    config.data.n_clusters = 3
    with pytest.raises(UserError, match="binary"):
        supervised_mode.run_ann(config, str(tmp_path))


def test_cnn_smoke(tmp_path):
    config = supervised_cnn.get_config("smoke")
    r = _read_run(supervised_mode.run_cnn, config, str(tmp_path))
    assert r["split_sizes"] == {"train": 12, "val": 2, "test": 2}
    assert [s for s, _ in r["history"]["supervised_cnn"]["loss"]] == [1, 2]
    assert r["weights"].startswith("random")  # results.json says which weights the CNN started from
    for split in ("val", "test"):
        m = r["metrics"][split]
        assert m["n"] == 2 and np.asarray(m["confusion"]).sum() == 2
    with np.load(tmp_path / "predictions.npz") as p:
        assert p["test_prob"].shape == (2,) and np.all(
            (p["test_prob"] >= 0) & (p["test_prob"] <= 1)
        )
    assert os.path.isdir(tmp_path / "ckpt" / "2")
    # The checkpoint restores into the initial state's structure, with trained batch statistics.
    from galaxy_jax.checkpoint import Checkpointer

    model = supervised.XceptionBinary()
    variables, _ = supervised.cnn_variables(config, model, config.data.image_size)
    init = supervised.State.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=optax.adam(config.optim.lr),
        batch_stats=variables["batch_stats"],
    )
    step, restored = Checkpointer(str(tmp_path / "ckpt")).restore(init)
    assert step == 2 and int(restored.step) == 2
    bn = restored.batch_stats["backbone"]["block1_conv1_bn"]["mean"]
    assert not np.allclose(bn, variables["batch_stats"]["backbone"]["block1_conv1_bn"]["mean"])


def test_cnn_narrow_network_from_scratch(tmp_path):
    config = supervised_cnn.get_config("smoke")
    config.model.width = 0.25
    config.model.middle_blocks = 2
    config.optim.steps = 1
    r = _read_run(supervised_mode.run_cnn, config, str(tmp_path))
    assert [s for s, _ in r["history"]["supervised_cnn"]["loss"]] == [1]
    assert np.isfinite(r["history"]["supervised_cnn"]["loss"][0][1])
    model = supervised.XceptionBinary(width=0.25, middle_blocks=2)
    variables, description = supervised.cnn_variables(config, model, config.data.image_size)
    assert "width 0.25, middle_blocks 2" in description
    assert variables["params"]["head"]["kernel"].shape == (512, 1)  # 2048 * 0.25
    assert "block6_sepconv1" in variables["params"]["backbone"]
    assert "block7_sepconv1" not in variables["params"]["backbone"]
    n = sum(np.asarray(v).size for v in jax.tree.leaves(variables))
    assert n == 731_904 + 513  # the backbone (trainable and batch statistics) and Dense(1)


def test_cnn_architecture_must_match_the_weights(tmp_path):
    from galaxy_jax import weights
    from galaxy_jax.models.xception import Xception, init_variables

    config = supervised_cnn.get_config("smoke")
    config.model.width = 0.25
    config.weights = "imagenet"
    config.download = True  # the error comes first: nothing is downloaded or created
    workdir = tmp_path / "run"
    with pytest.raises(UserError, match=r"config.model.width=0.25 and config.model.middle_blocks"):
        supervised_mode.run_cnn(config, str(workdir))
    assert not workdir.exists()
    config.weights = "random"
    config.model.middle_blocks = 9
    with pytest.raises(UserError, match=r"config.model.middle_blocks: must be an integer"):
        supervised.cnn_architecture(config)
    # An exported encoder names its architecture: used as is with the default fields or the
    # same ones, an error with others.
    arch = {"width": 0.125, "middle_blocks": 1}
    path = str(tmp_path / "encoder.npz")
    weights.save_encoder(path, init_variables(Xception(**arch), 0), arch)
    config.weights = path
    config.model.width, config.model.middle_blocks = 1.0, 8
    assert supervised.cnn_architecture(config) == arch
    config.model.width, config.model.middle_blocks = 0.125, 1
    assert supervised.cnn_architecture(config) == arch
    config.model.width, config.model.middle_blocks = 1.0, 8
    config.optim.steps = 1
    r = _read_run(supervised_mode.run_cnn, config, str(tmp_path / "from_encoder"))
    assert r["metrics"]["test"]["n"] == 2
    config.model.width = 0.25
    with pytest.raises(UserError, match="holds width 0.125, middle_blocks 1"):
        supervised.cnn_architecture(config)


def test_optimizer_schedule():
    optim = supervised_cnn.get_config().optim
    optim.lr, optim.steps, optim.schedule = 0.1, 4, "cosine"
    tx = make_optimizer(optim)
    params = {"w": jnp.ones(())}
    state = tx.init(params)
    steps = []
    for _ in range(5):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        steps.append(abs(float(updates["w"])))
    assert steps[0] == pytest.approx(0.1, rel=1e-3) and steps[-1] == 0.0  # lr -> 0 at steps
    optim.schedule = "linear"
    with pytest.raises(UserError, match="config.optim.schedule"):
        make_optimizer(optim)
