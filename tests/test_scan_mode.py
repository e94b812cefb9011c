"""Mode scan (galaxy_jax/modes/scan.py) end to end on configs/scan.py's smoke blobs: accuracy,
resume == uninterrupted for each training loop, one compilation per phase, config guard, the
neighbour cache."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import CountCompiles

from configs import scan as scan_config
from galaxy_jax import preemption, scan, train_loop
from galaxy_jax.data.vectors import load_vectors
from galaxy_jax.errors import UserError
from galaxy_jax.modes import scan as scan_mode

FILES = ("q.npy", "assignments.npy", "ids.npy", "neighbours.npz")


def _read(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def _run(workdir, config=None, monkeypatch=None):
    counter = CountCompiles()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_loop, "compile_step", counter)
        scan_mode.run_scan(config or scan_config.get_config("smoke"), str(workdir))
    return counter.counts


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    return str(workdir), _run(workdir)


def test_smoke_separates_blobs_after_scan_and_after_selflabelling(uninterrupted):
    workdir, _ = uninterrupted
    r = _read(workdir)
    assert r["metrics"]["scan"]["acc"] >= 0.95
    assert r["metrics"]["selflabel"]["acc"] >= 0.95
    assert r["mode"] == "scan" and r["steps"] == {"scan": 150, "selflabel": 60}
    assert len(r["scan_head_losses"]) == 3 and r["scan_head"] == int(
        np.argmin(r["scan_head_losses"])
    )
    assert r["confident_after_scan"] > 0.5  # self-labelling had pseudo-labels to train on
    assert set(r["history"]["scan"]) == {"loss", "consistency", "entropy"}
    assert r["history"]["selflabel"]["confident"][-1][1] > 0.5
    assert set(r["wall_s"]) >= {"neighbours", "scan", "scan/compile", "selflabel", "total"}
    n, k = 600, 4
    for name, shape in (("q", (n, k)), ("assignments", (n,)), ("ids", (n,))):
        assert np.load(os.path.join(workdir, f"{name}.npy")).shape == shape, name
    q = np.load(os.path.join(workdir, "q.npy"))
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(q.argmax(1), np.load(os.path.join(workdir, "assignments.npy")))


def test_each_phase_compiles_its_step_once_and_the_whole_set_pass_once(uninterrupted):
    _, counts = uninterrupted
    assert counts == {"scan": 1, "selflabel": 1}
    s = scan_config.get_config("smoke").scan
    for head in (scan.ClusterHead(s.n_clusters, s.hidden, s.n_heads), scan.ClusterHead(4)):
        # 600 rows in one padded chunk: one shape, one compilation, however often it ran
        assert scan_mode._probs_fn(head)._cache_size() == 1


def test_more_clusters_than_classes_is_scored_by_the_dominant_label(tmp_path):
    config = scan_config.get_config("smoke")
    config.scan.n_clusters = 8
    config.scan.n_heads = 1
    config.selflabel.steps = 0  # skipped: no selflabel/ checkpoints, metrics 'scan' only
    r = scan_mode.run_scan(config, str(tmp_path))
    assert set(r["metrics"]) == {"scan"} and r["steps"] == {"scan": 150}
    assert r["metrics"]["scan"]["acc_dominant"] >= 0.95
    assert np.load(tmp_path / "q.npy").shape == (600, 8)
    assert not any(name.isdigit() for name in os.listdir(tmp_path / "selflabel"))


class _StopAt:
    """Makes preemption.requested() true once, after `n` calls (i.e. after n training steps)."""

    def __init__(self, n):
        self.n = n

    def __call__(self):
        self.n -= 1
        return self.n == 0


# Stop points: inside the scan phase (150 steps, checkpoints every 50), inside self-labelling.
@pytest.mark.parametrize("stop_after", [70, 150 + 25])
def test_interrupted_and_resumed_run_is_bit_identical(
    uninterrupted, tmp_path, monkeypatch, stop_after
):
    full, _ = uninterrupted
    workdir = str(tmp_path / "resumed")
    monkeypatch.setattr(preemption, "requested", _StopAt(stop_after))
    with pytest.raises(preemption.Preempted):
        _run(workdir)
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    monkeypatch.setattr(preemption, "requested", lambda: False)
    counts = _run(workdir)
    # the phase finished before the stop is restored, not compiled or run again
    assert counts == ({"scan": 1, "selflabel": 1} if stop_after < 150 else {"selflabel": 1})
    a, b = _read(full), _read(workdir)
    assert a["metrics"] == b["metrics"] and a["history"] == b["history"]
    assert a["scan_head_losses"] == b["scan_head_losses"]
    for name in FILES:
        x, y = np.load(os.path.join(full, name)), np.load(os.path.join(workdir, name))
        if name.endswith(".npz"):
            x, y = x["idx"], y["idx"]
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_finished_run_is_restored_not_redone(uninterrupted, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(uninterrupted[0], workdir)
    assert _run(workdir) == {}  # no phase compiled a step
    assert _read(workdir)["metrics"] == _read(uninterrupted[0])["metrics"]


@pytest.mark.parametrize(
    "field,value", [("scan.entropy_weight", 2.0), ("selflabel.threshold", 0.5), ("seed", 1)]
)
def test_a_changed_config_refuses_to_resume(uninterrupted, tmp_path, field, value):
    workdir = str(tmp_path / "copy")
    shutil.copytree(uninterrupted[0], workdir)
    config = scan_config.get_config("smoke")
    if "." in field:
        section, name = field.split(".")
        config[section][name] = value
    else:
        config[field] = value
    with pytest.raises(UserError, match=f"{field}: .* then, .* now"):
        scan_mode.run_scan(config, workdir)


def test_neighbour_cache_is_reused_remined_on_other_settings_and_rebuilt_when_corrupt(
    tmp_path, caplog
):
    config = scan_config.get_config("smoke")
    x = load_vectors(config.data).x
    first = scan_mode.mine_neighbours(config, x, str(tmp_path))
    path = tmp_path / "neighbours.npz"
    assert first.shape == (600, config.scan.k_neighbours) and path.is_file()
    stamp = os.stat(path).st_mtime_ns
    np.testing.assert_array_equal(scan_mode.mine_neighbours(config, x, str(tmp_path)), first)
    assert os.stat(path).st_mtime_ns == stamp  # read, not rewritten
    path.write_bytes(b"not a zip file")
    np.testing.assert_array_equal(scan_mode.mine_neighbours(config, x, str(tmp_path)), first)
    assert "unreadable" in caplog.text
    config.scan.k_neighbours = 3
    assert scan_mode.mine_neighbours(config, x, str(tmp_path)).shape == (600, 3)
    x2 = x.copy()
    x2[0] += 1.0  # other data, same settings: mined again
    config.scan.k_neighbours = 8
    assert scan_mode.data_digest(x2) != scan_mode.data_digest(x)
    scan_mode.mine_neighbours(config, x2, str(tmp_path))
    with np.load(path) as f:
        assert str(f["key"]).startswith(scan_mode.data_digest(x2))


@pytest.mark.parametrize(
    "field,value",
    [
        ("scan.n_clusters", 1),
        ("scan.k_neighbours", 0),
        ("scan.k_neighbours", 600),
        ("scan.metric", "manhattan"),
        ("selflabel.threshold", 1.0),
        ("selflabel.dropout", -0.1),
        ("scan.optimizer", "rmsprop"),
    ],
)
def test_invalid_config_is_rejected_before_work(tmp_path, field, value):
    config = scan_config.get_config("smoke")
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(UserError, match=f"config.{field}"):
        scan_mode.run_scan(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


def test_report_reads_a_scan_run(uninterrupted, tmp_path):
    from configs import report as report_config
    from galaxy_jax.modes import report

    config = report_config.get_config("smoke")
    config.sweep, config.runs, config.map = "", (uninterrupted[0],), False
    text = report.run_report(config, str(tmp_path))
    assert "| selflabel |" in text and "| scan |" in text
    for fig in ("confusion", "embedding", "curves"):
        assert any(f.endswith(f"_{fig}.png") for f in os.listdir(tmp_path / "figures")), fig
