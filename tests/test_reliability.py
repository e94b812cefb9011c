"""Fault injection for the clustering modes: kill -9, SIGTERM, corrupt checkpoints, bad configs,
NaN in the data or the learning rate, a full disk.

The process-level tests run `python main.py` in a subprocess on a tiny variant of the smoke config
(2 layer-wise phases, fine-tuning, 120 DEC steps) and compare every output bit for bit with one
uninterrupted run (the module fixture `reference`).
"""

import errno
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, start_main, stderr_of

from configs import data_defaults, mnist_dec
from galaxy_jax import atomic, checkpoint, modes, preemption
from galaxy_jax.errors import UserError
from galaxy_jax.modes import dec as dec_mode
from galaxy_jax.train_loop import FiniteGuard, NonFiniteError

# The fault-injection run: layer-wise pairs 0 and 1, fine-tuning, then DEC to maxiter.
OVERRIDES = dict(
    sae_dims=(32, 4),
    sae_layerwise_steps=20,
    dec_tol=0.0,
    dec_maxiter=120,
    checkpoint_every=20,
)
KILL_SEEDS = (0, 1, 2)
# Orbax's reader coroutines complain when a truncated checkpoint fails to load; that is the point.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
KILLS_PER_SEED = 2


def _flags(workdir):
    o = OVERRIDES
    return [
        "--config=configs/mnist_dec.py:smoke",
        f"--config.sae.dims=({o['sae_dims'][0]},{o['sae_dims'][1]})",
        f"--config.sae.layerwise_steps={o['sae_layerwise_steps']}",
        f"--config.dec.tol={o['dec_tol']}",
        f"--config.dec.maxiter={o['dec_maxiter']}",
        f"--config.checkpoint_every={o['checkpoint_every']}",
        f"--workdir={workdir}",
    ]


def _config():
    """The same run as _flags(), built in-process."""
    c = mnist_dec.get_config("smoke")
    c.sae.dims = OVERRIDES["sae_dims"]
    c.sae.layerwise_steps = OVERRIDES["sae_layerwise_steps"]
    c.dec.tol = OVERRIDES["dec_tol"]
    c.dec.maxiter = OVERRIDES["dec_maxiter"]
    c.checkpoint_every = OVERRIDES["checkpoint_every"]
    return c


def _start(workdir):
    return start_main(_flags(workdir), workdir)


_stderr = stderr_of


def _run(workdir):
    p = _start(workdir)
    err = _stderr(p)
    assert p.returncode == 0, err[-3000:]
    return err


def _step_dirs(workdir):
    """Every finished or in-flight checkpoint directory of every phase."""
    pats = ("sae/*/*", "dec/*")
    return {
        p
        for pat in pats
        for p in glob.glob(os.path.join(workdir, pat))
        if os.path.basename(p).split(".")[0].isdigit()
    }


def _kill_when(proc, workdir, n_new, delay, sig=signal.SIGKILL, in_flight=False):
    """Sends `sig` `delay` s after the n_new-th new checkpoint directory appears (a half-written
    one if in_flight). Returns True if it landed before the process finished."""
    before, seen = _step_dirs(workdir), set()
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        new = _step_dirs(workdir) - before
        if in_flight:
            new = {p for p in new if checkpoint.TMP_MARKER in p}
        seen |= new
        if len(seen) >= n_new:
            time.sleep(delay)
            break
        time.sleep(0.002)
    if proc.poll() is not None:
        _stderr(proc)
        return False
    proc.send_signal(sig)
    _stderr(proc)
    return True


def _results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        r = json.load(f)
    arrays = {n: np.load(os.path.join(workdir, n)) for n in ("q.npy", "assignments.npy")}
    return r, arrays


def _assert_identical(ref, workdir):
    (a, a_arr), (b, b_arr) = _results(ref), _results(workdir)
    assert a["metrics"] == b["metrics"]
    assert a["history"] == b["history"]  # every logged loss, delta_label and accuracy
    assert a["dec_steps"] == b["dec_steps"]
    for name in a_arr:
        assert a_arr[name].dtype == b_arr[name].dtype
        assert a_arr[name].tobytes() == b_arr[name].tobytes(), name
    litter = glob.glob(os.path.join(workdir, "**", f"*{checkpoint.TMP_MARKER}*"), recursive=True)
    assert not litter, litter


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("reference"))
    _run(workdir)
    return workdir


# ------------------------------------------------------------------------ kill -9 and SIGTERM


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_kill9_at_random_moments_then_resume_is_bit_identical(reference, tmp_path, seed):
    """Two SIGKILLs per seed, each after a random number of new checkpoint directories plus a
    random delay (sometimes while a save is half written), then a run to the end."""
    rng = random.Random(seed)
    workdir = str(tmp_path / "w")
    kills = 0
    for k in range(KILLS_PER_SEED):
        proc = _start(workdir)
        in_flight = (seed + k) % 3 == 1  # kill the moment a save is half written
        delay = 0.0 if in_flight else rng.uniform(0, 0.3)
        landed = _kill_when(proc, workdir, rng.randint(1, 4 - k), delay, in_flight=in_flight)
        if landed:
            assert proc.returncode == -signal.SIGKILL
            kills += 1
            partial = glob.glob(
                os.path.join(workdir, "**", f"*{checkpoint.TMP_MARKER}"), recursive=True
            )
            print(f"seed {seed} kill {k} (in_flight={in_flight}): left half-written {partial}")
    assert kills >= 1, "no kill landed before the run finished"
    _run(workdir)
    _assert_identical(reference, workdir)


def test_sigterm_saves_a_checkpoint_exits_75_and_resumes_bit_identical(reference, tmp_path):
    workdir = str(tmp_path / "w")
    proc = _start(workdir)
    # After DEC's first checkpoint, so the stop lands inside the DEC loop.
    before = time.time()
    while not glob.glob(os.path.join(workdir, "dec", "[0-9]*")) and proc.poll() is None:
        assert time.time() - before < 240
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    err = _stderr(proc)
    assert proc.returncode == 75, err[-2000:]
    assert "preempted: dec stopped at step" in err and "Re-run the same command" in err
    assert "Traceback" not in err
    step = int(err.split("dec stopped at step ")[1].split(";")[0])
    assert os.path.isdir(os.path.join(workdir, "dec", str(step)))  # saved and finished
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    _run(workdir)
    _assert_identical(reference, workdir)


# ------------------------------------------------------------------------------- determinism


def test_same_config_and_seed_give_identical_results_across_processes(reference, tmp_path):
    workdir = str(tmp_path / "w")
    dec_mode.run_dec(_config(), workdir)  # in this process, vs the subprocess reference
    _assert_identical(reference, workdir)


# -------------------------------------------------------------------------------- corruption


def _newest(directory):
    return os.path.join(directory, str(max(int(n) for n in os.listdir(directory) if n.isdigit())))


def _corrupt(step_dir, how):
    files = [
        p for p in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True) if os.path.isfile(p)
    ]
    data_files = [p for p in files if f"{os.sep}d{os.sep}" in p]
    target = max(data_files, key=os.path.getsize)  # the array data, not the metadata
    with open(target, "rb") as f:
        data = bytearray(f.read())
    if how == "truncate":
        data = data[: len(data) // 2]
    else:  # garble: flip bytes in the middle; Orbax itself reads this without error
        for i in range(len(data) // 2, len(data) // 2 + 32):
            data[i] ^= 0xFF
    with open(target, "wb") as f:
        f.write(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_corrupt_newest_checkpoints_fall_back_with_a_warning_and_identical_results(
    reference, tmp_path, caplog, how
):
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)
    os.remove(os.path.join(workdir, "results.json"))
    bad = [_newest(os.path.join(workdir, "dec")), _newest(os.path.join(workdir, "sae", "finetune"))]
    for step_dir in bad:
        _corrupt(step_dir, how)
    caplog.set_level("WARNING")
    dec_mode.run_dec(_config(), workdir)
    for step_dir in bad:
        assert f"Checkpoint {step_dir} is unreadable" in caplog.text
        assert os.path.isdir(
            os.path.join(os.path.dirname(step_dir), "unreadable", os.path.basename(step_dir))
        )
    _assert_identical(reference, workdir)


def _w(step):  # incompressible, so the array data is the largest file of a checkpoint
    return np.random.default_rng(step).normal(size=(64, 64)).astype(np.float32)


def _tiny_checkpoints(directory, steps=(1, 2)):
    ckpt = checkpoint.Checkpointer(directory)
    for s in steps:
        ckpt.save(s, {"w": _w(s), "n": np.int32(s)}, wait=True)
    ckpt.close()
    return {"w": np.zeros((64, 64), np.float32), "n": np.int32(0)}


@pytest.mark.parametrize("how", ["truncate", "garble", "metadata_deleted"])
def test_checkpointer_falls_back_to_the_previous_good_step(tmp_path, caplog, how):
    d = str(tmp_path / "phase")
    template = _tiny_checkpoints(d)
    if how == "metadata_deleted":
        os.remove(os.path.join(d, "2", "default", "_METADATA"))
    else:
        _corrupt(os.path.join(d, "2"), how)
    caplog.set_level("WARNING")
    step, state = checkpoint.Checkpointer(d).restore(template)
    assert step == 1 and state["n"] == 1 and np.array_equal(state["w"], _w(1))
    assert f"Checkpoint {os.path.join(d, '2')} is unreadable" in caplog.text


def test_no_good_checkpoint_says_what_to_delete(tmp_path):
    d = str(tmp_path / "phase")
    template = _tiny_checkpoints(d)
    for s in ("1", "2"):
        _corrupt(os.path.join(d, s), "truncate")
    with pytest.raises(UserError, match=f"Delete {d} to redo this phase"):
        checkpoint.Checkpointer(d).restore(template)


def test_half_written_checkpoint_is_removed_with_a_warning_and_never_loaded(tmp_path, caplog):
    d = str(tmp_path / "phase")
    template = _tiny_checkpoints(d)
    partial = os.path.join(d, f"3{checkpoint.TMP_MARKER}")
    shutil.copytree(os.path.join(d, "2"), partial)
    _corrupt(partial, "truncate")
    caplog.set_level("WARNING")
    step, _ = checkpoint.Checkpointer(d).restore(template)
    assert step == 2
    assert f"Removing {partial}" in caplog.text and not os.path.exists(partial)


def test_checkpoint_of_other_shapes_is_refused_not_loaded(tmp_path):
    d = str(tmp_path / "phase")
    _tiny_checkpoints(d)
    with pytest.raises(UserError, match=r"written by another config: \['w'\] has shape"):
        checkpoint.Checkpointer(d).restore({"w": np.zeros((32, 64), np.float32), "n": np.int32(0)})


def test_workdir_of_another_config_is_refused_naming_the_field(reference, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)
    config = _config()
    config.sae.lr = 0.01
    with pytest.raises(UserError, match=r"sae holds checkpoints of another config \(sae.lr: 0.001"):
        dec_mode.run_dec(config, workdir)
    config = _config()
    config.dec.maxiter = 500  # a finished DEC would otherwise be restored, not run further
    with pytest.raises(UserError, match=r"dec holds checkpoints .*dec.maxiter: 120 then, 500 now"):
        dec_mode.run_dec(config, workdir)
    config = _config()
    config.log_every = 5  # changes no result: allowed
    dec_mode.run_dec(config, workdir)


def test_nonfinite_state_is_never_checkpointed(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path / "phase"))
    with pytest.raises(checkpoint.NonFiniteStateError, match=r"\['w'\] holds 1 non-finite"):
        ckpt.save(1, {"w": np.array([0.0, np.nan], np.float32)})
    ckpt.close()
    assert checkpoint.Checkpointer(str(tmp_path / "phase")).latest_step() is None


# -------------------------------------------------------------------------------- validation


def _set(config, field, value):
    *sections, name = field.split(".")
    node = config
    for s in sections:
        node = node[s]
    node[name] = value


# (field, bad value, text the message must contain). At least 15; each fails before any work.
BAD_CONFIGS = [
    ("dec.n_clusters", 1, "config.dec.n_clusters: must be >= 2"),
    ("dec.n_clusters", 601, "config.dec.n_clusters: 601 clusters need at least 601 examples"),
    ("sae.dims", (32, 0), "config.sae.dims"),
    ("sae.dims", (), "config.sae.dims"),
    ("sae.dropout", 1.5, "config.sae.dropout: must be in [0.0, 1.0)"),
    ("sae.dropout", -0.1, "config.sae.dropout"),
    ("sae.momentum", 1.0, "config.sae.momentum"),
    ("dec.momentum", -0.5, "config.dec.momentum"),
    ("dec.tol", -0.1, "config.dec.tol: must be in [0, 1]"),
    ("dec.tol", 2.0, "config.dec.tol"),
    ("sae.lr", 0.0, "config.sae.lr: must be a finite number > 0"),
    ("sae.lr", float("nan"), "config.sae.lr"),
    ("dec.lr", float("inf"), "config.dec.lr"),
    ("dec.alpha", 0.0, "config.dec.alpha"),
    ("sae.lr_decay", 0.0, "config.sae.lr_decay"),
    ("sae.batch_size", 0, "config.sae.batch_size: must be > 0"),
    ("dec.batch_size", -1, "config.dec.batch_size"),
    ("dec.update_interval", 0, "config.dec.update_interval"),
    ("checkpoint_every", 0, "config.checkpoint_every"),
    ("log_every", 0, "config.log_every"),
    ("dec.kmeans_n_init", 0, "config.dec.kmeans_n_init"),
    ("sae.finetune_steps", -1, "config.sae.finetune_steps: must be >= 0"),
    ("dec.maxiter", -5, "config.dec.maxiter"),
    ("sae.optimizer", "adamw", "config.sae.optimizer: must be one of ('sgd', 'adam')"),
    ("dec.optimizer", "rmsprop", "config.dec.optimizer"),
    ("seed", -1, "config.seed: must be an integer >= 0"),
    ("data.name", "cifar10", "config.data.name: must be one of ('mnist', 'features', 'blobs')"),
    ("data.spread", -1.0, "config.data.spread"),
    ("data.n", 0, "config.data.n"),
]
MNIST_BAD = [
    ("data.path", "/no/such/mnist.npz", "MNIST file not found: /no/such/mnist.npz"),
    ("data.normalize", "zscore", "config.data.normalize: must be one of"),
]


@pytest.mark.parametrize("field,value,message", BAD_CONFIGS + MNIST_BAD)
def test_bad_config_is_rejected_naming_the_field_with_no_workdir_litter(
    tmp_path, field, value, message
):
    config = mnist_dec.get_config(None if (field, value, message) in MNIST_BAD else "smoke")
    if field == "data.normalize":
        config.data.path = __file__  # exists: the check reaches normalize
    _set(config, field, value)
    workdir = tmp_path / "w"
    with pytest.raises(UserError) as e:
        dec_mode.run_dec(config, str(workdir))
    assert message in str(e.value)
    assert not workdir.exists()
    assert os.listdir(tmp_path) == []


def test_unknown_mode_and_bad_workdir_are_rejected(tmp_path):
    from absl import app

    with pytest.raises(app.UsageError, match="Unknown mode 'nope'"):
        modes.get("nope")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="exists and is not a directory"):
        dec_mode.run_kmeans(mnist_dec.get_config("smoke"), str(blocker / "w"))
    missing = tmp_path / "nofeatures"
    config = mnist_dec.get_config("smoke")
    config.data = data_defaults.features_data(str(missing))
    with pytest.raises(UserError, match="config.data.path: no features.npy"):
        dec_mode.run_kmeans(config, str(tmp_path / "w"))
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_unwritable_workdir_from_the_command_line_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = subprocess.run(
        [sys.executable, "main.py", "--config=configs/mnist_kmeans.py:smoke"]
        + [f"--workdir={blocker}/w"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "error: workdir" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------- NaN injection


def _features_dir(path, nan_row=None, value=np.nan):
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    if nan_row is not None:
        x[nan_row, 3] = value
    os.makedirs(path)
    np.save(os.path.join(path, "features.npy"), x)
    np.save(os.path.join(path, "ids.npy"), np.array([f"g{i}" for i in range(50)]))
    return str(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_features_stop_before_training_naming_file_and_row(tmp_path, value):
    config = mnist_dec.get_config("smoke")
    path = _features_dir(tmp_path / "f", 7, value)
    config.data = data_defaults.features_data(path)
    with pytest.raises(UserError, match=r"features.npy row 7 \(id g7\) column 3 is (nan|inf)"):
        dec_mode.run_dec(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_guard_names_the_first_nonfinite_step():
    import jax.numpy as jnp

    guard = FiniteGuard("sae/finetune")
    for step, loss in enumerate([1.0, 2.0, float("nan"), float("inf"), 3.0], start=1):
        guard.update(jnp.float32(loss), step)
    with pytest.raises(NonFiniteError, match="nan.*phase sae/finetune at step 3 "):
        guard.check(5)


def test_huge_sae_learning_rate_stops_the_phase_naming_the_step(tmp_path):
    config = _config()
    config.sae.layerwise_steps = 0
    config.sae.optimizer = "sgd"
    config.sae.lr = 1e30  # valid as a number; the first update overflows the weights
    with pytest.raises(NonFiniteError, match=r"phase sae/finetune at step (\d+)") as e:
        dec_mode.run_pretrain(config, str(tmp_path))
    assert int(e.value.args[0].split("at step ")[1].split()[0]) <= config.log_every
    ckpt_dir = tmp_path / "sae" / "finetune"
    assert not [n for n in os.listdir(ckpt_dir) if n.isdigit()]  # nothing bad was saved


def test_huge_dec_learning_rate_stops_dec_naming_the_step(reference, tmp_path):
    workdir = str(tmp_path / "w")
    shutil.copytree(reference, workdir)  # pretrained: only DEC runs
    shutil.rmtree(os.path.join(workdir, "dec"))
    config = _config()
    config.dec.lr = 1e30
    with pytest.raises(NonFiniteError, match=r"phase dec at step \d+"):
        dec_mode.run_dec(config, workdir)
    assert not [n for n in os.listdir(os.path.join(workdir, "dec")) if n.isdigit()]


# -------------------------------------------------------------------------------- full disk


def test_full_disk_is_a_clear_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    target = tmp_path / "results.json"
    with pytest.raises(UserError, match="results.json: the disk is full"):
        atomic.write_json(str(target), {"a": 1})
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary
    wrapped = ValueError(f"tensorstore write failed: {os.strerror(errno.ENOSPC)} [/x/1]")
    assert "disk is full" in str(atomic.storage_error(wrapped, "/x/1"))
    assert atomic.storage_error(ValueError("shape mismatch"), "/x") is None


def test_a_stop_in_a_phase_without_checkpoints_raises_at_once_and_not_elsewhere(monkeypatch):
    """stop_at_once (k-means, UMAP, GMM initialisation): SIGTERM raises Preempted at once there;
    outside it, it only sets the flag that the step loops read; a request that came before
    the phase raises on entry."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(preemption, "_requested", False)
    preemption.install()
    try:
        t0 = time.time()
        with pytest.raises(preemption.Preempted, match="during the k-means initialisation"):
            with preemption.stop_at_once("the k-means initialisation"):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)  # a long phase: the handler interrupts it
        assert time.time() - t0 < 5 and preemption._at_once is None
        monkeypatch.setattr(preemption, "_requested", False)
        os.kill(os.getpid(), signal.SIGTERM)  # outside: the flag only
        assert preemption.requested()
        with pytest.raises(preemption.Preempted, match="before the umap"):
            with preemption.stop_at_once("the umap initialisation"):
                raise AssertionError("not entered")
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
