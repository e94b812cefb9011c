"""End-to-end runs of the clustering modes on the smoke variants of the real configs."""

import json
import os

import numpy as np
import pytest

from configs import mnist_dec, mnist_dec_paper, mnist_kmeans
from galaxy_jax import preemption
from galaxy_jax.errors import UserError
from galaxy_jax.modes import dec as dec_mode


def _read(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def _paper_smoke():
    config = mnist_dec_paper.get_config("smoke")
    config.dec.tol = 0.0  # run DEC to maxiter, so an interruption can land inside it
    return config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("full"))
    dec_mode.run_dec(_paper_smoke(), workdir)
    return workdir


def test_dec_smoke_clusters_separated_blobs(uninterrupted):
    r = _read(uninterrupted)
    assert r["metrics"]["dec"]["acc"] >= 0.95
    assert r["metrics"]["kmeans_embedding"]["acc"] >= 0.9
    assert set(r["wall_s"]) >= {"sae/layer_0", "sae/finetune", "kmeans_init", "dec", "total"}
    assert r["config"]["mode"] == "dec" and "jax" in r["versions"]
    assert r["history"]["dec"]["delta_label"][0][0] == 0
    n, k, d = 600, 4, 4  # the smoke blobs: 600 points, 4 clusters, 4-d embedding
    for name, shape in (
        ("q", (n, k)),
        ("embedding", (n, d)),
        ("centres", (k, d)),
        ("ids", (n,)),
        ("assignments", (n,)),
    ):
        assert np.load(os.path.join(uninterrupted, f"{name}.npy")).shape == shape, name


def test_adam_recipe_smoke(tmp_path):
    dec_mode.run_dec(mnist_dec.get_config("smoke"), str(tmp_path))
    assert _read(str(tmp_path))["metrics"]["dec"]["acc"] >= 0.95


def test_kmeans_mode(tmp_path):
    dec_mode.run_kmeans(mnist_kmeans.get_config("smoke"), str(tmp_path))
    assert _read(str(tmp_path))["metrics"]["kmeans_input"]["acc"] >= 0.9


class _StopAt:
    """Makes preemption.requested() true once, after `n` calls (i.e. after n training steps)."""

    def __init__(self, n):
        self.n = n

    def __call__(self):
        self.n -= 1
        return self.n == 0


# Stop points: inside layer-wise pretraining of pair 1, inside fine-tuning, and inside DEC
# (the smoke paper recipe has 4 x 30 layer-wise steps, 60 fine-tuning steps, then DEC).
@pytest.mark.parametrize("stop_after", [40, 120 + 25, 120 + 60 + 35])
def test_interrupted_and_resumed_run_is_bit_identical(
    uninterrupted, tmp_path, monkeypatch, stop_after
):
    config = _paper_smoke()
    full = uninterrupted
    workdir = str(tmp_path / "resumed")
    monkeypatch.setattr(preemption, "requested", _StopAt(stop_after))
    with pytest.raises(preemption.Preempted):
        dec_mode.run_dec(config, workdir)
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    monkeypatch.setattr(preemption, "requested", lambda: False)
    dec_mode.run_dec(config, workdir)
    a, b = _read(full), _read(workdir)
    assert a["metrics"] == b["metrics"]
    np.testing.assert_array_equal(
        np.load(os.path.join(full, "q.npy")), np.load(os.path.join(workdir, "q.npy"))
    )
    assert a["history"]["dec"] == b["history"]["dec"]


def test_finished_run_is_not_redone(uninterrupted, monkeypatch):
    before = _read(uninterrupted)
    calls = []
    monkeypatch.setattr(dec_mode.sae, "make_finetune_step", lambda *a: calls.append(a))
    dec_mode.run_dec(_paper_smoke(), uninterrupted)
    assert not calls  # every phase restored from its final checkpoint
    assert _read(uninterrupted)["metrics"] == before["metrics"]


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("dec.n_clusters", 1, "dec.n_clusters"),
        ("sae.dropout", 1.5, "sae.dropout"),
        ("dec.tol", -0.1, "dec.tol"),
        ("dec.update_interval", 0, "dec.update_interval"),
        ("sae.batch_size", 0, "sae.batch_size"),
    ],
)
def test_invalid_config_is_rejected_before_work(tmp_path, field, value, message):
    config = mnist_dec.get_config("smoke")
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(UserError, match=message):
        dec_mode.run_dec(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


def test_missing_mnist_file_names_the_path(tmp_path):
    config = mnist_dec.get_config()
    config.data.path = str(tmp_path / "nope.npz")
    with pytest.raises(UserError, match="nope.npz"):
        dec_mode.run_kmeans(config, str(tmp_path / "w"))


def test_convergence_on_a_checkpoint_step_saves_done_over_the_pending_save(tmp_path):
    """DEC converging exactly at a checkpoint_every step re-saves that step with done=1 while the
    cadence save of the same step may still be in flight: it must wait, not race (the bug was an
    OSError 'Directory not empty' from Orbax's delete)."""
    from configs import mnist_dec

    c = mnist_dec.get_config("smoke")
    c.dec.update_interval = c.checkpoint_every = 20
    c.dec.tol = 1.0  # converges at the first target update after step 0: step 20
    r = dec_mode.run_dec(c, str(tmp_path))
    assert r["dec_steps"] == 20
