"""Fault injection for the modes extract, supervised_ann and sweep: kill -9, SIGTERM, truncated or
garbled feature shards, a stale feature cache.

Like tests/test_reliability.py, the process-level tests run `python main.py` in a subprocess on a
small variant of a smoke config and compare the outputs byte for byte with an uninterrupted run.
(A stale cache from other weights is covered by tests/test_extract.py:
test_extract_mode_writes_outputs_and_skips_a_rerun and test_resume_reuses_shards_and_rejects_
foreign_ones; here, another input size.)
"""

import glob
import json
import os
import random
import signal
import time

import numpy as np
import pytest
from conftest import start_main, stderr_of

from configs import extract as extract_config
from configs import supervised_ann
from galaxy_jax import config_files, preemption, shards
from galaxy_jax import features as features_lib
from galaxy_jax.data import image_source as source_lib
from galaxy_jax.models import xception
from galaxy_jax.modes import extract, supervised

# extract: 48 small synthetic galaxies in 8 shards of 6, batches of 2 (so 3 batches per shard).
EXTRACT_FLAGS = [
    "--config=configs/extract.py:smoke",
    "--config.data.synthetic_n=48",
    "--config.data.synthetic_size=32",
    "--config.batch_size=2",
    "--config.shard_size=6",
]
EXTRACT_OUTPUTS = ("features.npy", "ids.npy", "labels.npy")
KILL_SEEDS = (0, 1, 2)  # seed 1 kills the moment a file is half written
# supervised_ann: the smoke run made long enough to be stopped half-way.
ANN_STEPS, ANN_CHECKPOINT_EVERY = 1000, 250
ANN_FLAGS = [
    "--config=configs/supervised_ann.py:smoke",
    f"--config.optim.steps={ANN_STEPS}",
    f"--config.checkpoint_every={ANN_CHECKPOINT_EVERY}",
]
# sweep: that ANN run for seeds 0 and 1.
SWEEP_FLAGS = [
    "--config=configs/sweep.py:smoke",
    "--config.base=supervised_ann:smoke",
    "--config.variants=({'name': 'ann'},)",
    "--config.seeds=(0,1)",
    f"--config.common=optim.steps={ANN_STEPS},checkpoint_every={ANN_CHECKPOINT_EVERY}",
]


# ------------------------------------------------------------------------------- subprocesses


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """One persistent XLA cache for this module's subprocesses: each compiles Xception or the
    ANN once instead of every time (halves a run on CPU). The same executable is loaded, so
    the numbers are those of a fresh compilation."""
    global _ENV
    _ENV = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("xla_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    yield
    _ENV = None


_ENV = None


def _start(flags, workdir):
    return start_main([*flags, f"--workdir={workdir}"], workdir, env=_ENV)


_stderr = stderr_of


def _run(flags, workdir):
    p = _start(flags, workdir)
    err = _stderr(p)
    assert p.returncode == 0, err[-3000:]
    return err


def _wait_for(proc, pattern, n=1, ignore=()):
    """Waits until `n` paths not in `ignore` match the glob `pattern`; False if the process
    ended first."""
    deadline = time.time() + 240
    while proc.poll() is None:
        assert time.time() < deadline
        if len(set(glob.glob(pattern)) - set(ignore)) >= n:
            return True
        time.sleep(0.002)
    return False


def _assert_preempted(proc, prefix):
    err = _stderr(proc)
    assert proc.returncode == preemption.EXIT_CODE == 75, err[-3000:]
    assert f"preempted: {prefix}" in err and "Re-run the same command to continue" in err, err
    assert "Traceback" not in err
    return err


def _no_litter(workdir):
    litter = [
        p
        for pat in ("**/.tmp-*", "**/*.orbax-checkpoint-tmp*")
        for p in glob.glob(os.path.join(workdir, pat), recursive=True)
    ]
    assert not litter, litter


# ------------------------------------------------------------------------------------ extract


@pytest.fixture(scope="module")
def extract_reference(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("extract_reference") / "w")
    _run(EXTRACT_FLAGS, workdir)
    return workdir


def _assert_same_features(ref, workdir):
    for name in EXTRACT_OUTPUTS:
        with open(os.path.join(ref, name), "rb") as a, open(os.path.join(workdir, name), "rb") as b:
            assert a.read() == b.read(), name
    metas = []
    for d in (ref, workdir):
        with open(os.path.join(d, "features_meta.json")) as f:
            metas.append(json.load(f))
    for key in ("meta_hash", "features_sha256", "num_images", "image_size"):
        assert metas[0][key] == metas[1][key], key
    assert not os.path.exists(os.path.join(workdir, extract.SHARD_DIR))
    _no_litter(workdir)


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_extract_kill9_at_random_moments_then_resume_is_identical(
    extract_reference, tmp_path, seed
):
    """SIGKILL after a random number of written shards plus a random delay (for seed 1, the
    moment a new temporary file of a shard appears: mid-write), twice, then a run to the end."""
    rng = random.Random(seed)
    workdir = str(tmp_path / "w")
    shards = os.path.join(workdir, extract.SHARD_DIR)
    kills = 0
    for k in range(2):
        proc = _start(EXTRACT_FLAGS, workdir)
        before = len(glob.glob(os.path.join(shards, "shard_*.npy")))
        if seed == 1:
            tmp = os.path.join(shards, ".tmp-*shard_*")
            landed = _wait_for(proc, tmp, ignore=glob.glob(tmp))
        else:
            n = before + rng.randint(1, 3)
            landed = _wait_for(proc, os.path.join(shards, "shard_*.npy"), n)
            time.sleep(rng.uniform(0, 0.3))
        if landed and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _stderr(proc)
        if landed and proc.returncode == -signal.SIGKILL:
            left = sorted(os.listdir(shards)) if os.path.isdir(shards) else []
            print(f"seed {seed} kill {k}: left {left}")
    assert kills >= 1, "no kill landed before the run finished"
    _run(EXTRACT_FLAGS, workdir)
    _assert_same_features(extract_reference, workdir)


def test_extract_sigterm_saves_shards_exits_75_and_resumes_identical(extract_reference, tmp_path):
    workdir = str(tmp_path / "w")
    shards = os.path.join(workdir, extract.SHARD_DIR)
    proc = _start(EXTRACT_FLAGS, workdir)
    assert _wait_for(proc, os.path.join(shards, "shard_*_of_*[0-9].npy"))
    proc.send_signal(signal.SIGTERM)
    err = _assert_preempted(proc, "extract stopped after image ")
    stopped = int(err.split("extract stopped after image ")[1].split()[0])
    assert 6 <= stopped < 48
    complete = glob.glob(os.path.join(shards, "shard_*_of_*[0-9].npy"))
    partial = glob.glob(os.path.join(shards, "*.partial.npy"))
    # Every finished image is saved: whole shards of 6, and the current shard's batches.
    assert 6 * len(complete) + sum(len(np.load(p)) for p in partial) == stopped
    assert not os.path.exists(os.path.join(workdir, "features.npy"))
    _run(EXTRACT_FLAGS, workdir)
    _assert_same_features(extract_reference, workdir)


@pytest.fixture(scope="module")
def variables():
    return xception.init_variables(xception.Xception(), seed=0)


def test_truncated_garbled_or_undigested_shards_are_rebuilt_with_a_warning(
    variables, tmp_path, caplog
):
    images = np.random.default_rng(0).integers(0, 256, (8, 71, 71, 3), dtype=np.uint8)
    requested = []
    src = source_lib.from_arrays(images)
    get = src.get
    src.get = lambda idx: (requested.append(np.asarray(idx).tolist()), get(idx))[1]
    d = str(tmp_path / "shards")
    kw = dict(batch_size=2, shard_size=2, shard_dir=d, meta_hash="a")
    spec = features_lib.FeatureSpec(image_size=71)
    full, _ = features_lib.extract_features(src, variables, spec, progress=False, **kw)
    path = [shards.shard_path(d, i, 4) for i in range(4)]
    with open(path[0], "r+b") as f:  # truncated
        f.truncate(os.path.getsize(path[0]) // 2)
    with open(path[2], "r+b") as f:  # garbled: the header still parses, the numbers are wrong
        f.seek(-64, os.SEEK_END)
        f.write(bytes(64))
    os.remove(path[3] + ".sha256")  # a valid .npy without its digest: not trusted
    tmp = os.path.join(d, ".tmp-abc" + os.path.basename(path[1]))
    with open(tmp, "wb") as f:  # a write that a kill -9 cut short
        f.write(b"\x93NUMPY")
    caplog.set_level("WARNING")
    requested.clear()
    again, _ = features_lib.extract_features(src, variables, spec, progress=False, **kw)
    assert requested == [[0, 1], [4, 5], [6, 7]]  # shard 1 reused, the other three rebuilt
    assert again.tobytes() == full.tobytes()
    for i in (0, 2):
        assert (
            f"Ignoring feature shard {path[i]}: its bytes do not match the SHA-256" in caplog.text
        )
    assert f"Ignoring feature shard {path[3]} (" in caplog.text  # no digest
    assert f"Removing {tmp}" in caplog.text and not os.path.exists(tmp)


def test_stopped_extraction_resumes_from_its_partial_shard(variables, tmp_path, monkeypatch):
    images = np.random.default_rng(1).integers(0, 256, (7, 71, 71, 3), dtype=np.uint8)
    src = source_lib.from_arrays(images)
    kw = dict(batch_size=2, shard_size=6, progress=False, meta_hash="a")
    spec = features_lib.FeatureSpec(image_size=71)
    full, _ = features_lib.extract_features(src, variables, spec, **kw)
    calls = iter(range(1, 100))
    monkeypatch.setattr(preemption, "requested", lambda: next(calls) == 2)  # after 2 batches
    d = str(tmp_path / "shards")
    with pytest.raises(preemption.Preempted, match="after image 4 of 7"):
        features_lib.extract_features(src, variables, spec, shard_dir=d, **kw)
    part = os.path.join(d, "shard_00000_of_00002.partial.npy")
    assert np.load(part).tobytes() == full[:4].tobytes()
    monkeypatch.setattr(preemption, "requested", lambda: False)
    requested = []
    get = src.get
    src.get = lambda idx: (requested.append(np.asarray(idx).tolist()), get(idx))[1]
    again, _ = features_lib.extract_features(src, variables, spec, shard_dir=d, **kw)
    assert requested == [[4, 5], [6, 6]]  # the partial shard's batches are not redone
    assert again.tobytes() == full.tobytes()
    assert not os.path.exists(part)


def test_feature_cache_of_another_input_size_is_rebuilt_not_reused(tmp_path, caplog, monkeypatch):
    config = extract_config.get_config("smoke")
    config.batch_size, config.micro_batch = 2, 0  # the compilation of the test above
    wd = str(tmp_path / "wd")
    small = extract.run_extract(config, wd)
    config.data.image_size = 80  # the same images and weights, another input size
    caplog.set_level("WARNING")
    big = extract.run_extract(config, wd)
    assert "came from another config or weights; extracting again" in caplog.text
    with open(os.path.join(wd, "features_meta.json")) as f:
        assert json.load(f)["image_size"] == 80
    assert not np.allclose(big, small)
    fresh = extract.run_extract(config, str(tmp_path / "fresh"))
    assert big.tobytes() == fresh.tobytes()
    # A shard directory of the other size is cleared, never merged.
    calls = iter(range(1, 100))
    monkeypatch.setattr(preemption, "requested", lambda: next(calls) == 1)
    config.data.image_size = 71
    with pytest.raises(preemption.Preempted):
        extract.run_extract(config, str(tmp_path / "mixed"))
    monkeypatch.setattr(preemption, "requested", lambda: False)
    config.data.image_size = 80
    caplog.clear()
    mixed = extract.run_extract(config, str(tmp_path / "mixed"))
    assert "holds features of another config or weights" in caplog.text
    assert mixed.tobytes() == fresh.tobytes()


def test_garbled_features_npy_is_extracted_again(tmp_path, caplog):
    config = extract_config.get_config("smoke")
    config.batch_size, config.micro_batch = 2, 0
    wd = str(tmp_path / "wd")
    features = extract.run_extract(config, wd)
    path = os.path.join(wd, "features.npy")
    with open(path, "r+b") as f:
        f.seek(-16, os.SEEK_END)
        f.write(bytes(16))
    caplog.set_level("WARNING")
    again = extract.run_extract(config, wd)
    assert f"{path} does not match the SHA-256" in caplog.text
    assert again.tobytes() == features.tobytes()


# ----------------------------------------------------------------------- supervised and sweep


def _ann_config(seed=0):
    c = supervised_ann.get_config("smoke")
    c.optim.steps = ANN_STEPS
    c.checkpoint_every = ANN_CHECKPOINT_EVERY
    c.seed = seed
    return c


@pytest.fixture(scope="module")
def ann_reference(tmp_path_factory):
    """Uninterrupted runs, in this process, for seeds 0 and 1."""
    out = {}
    for seed in (0, 1):
        workdir = str(tmp_path_factory.mktemp(f"ann_reference{seed}"))
        supervised.run_ann(_ann_config(seed), workdir)
        out[seed] = workdir
    return out


def _assert_same_ann(ref, workdir):
    results = []
    for d in (ref, workdir):
        with open(os.path.join(d, "results.json")) as f:
            results.append(json.load(f))
    a, b = results
    assert a["metrics"] == b["metrics"]
    assert a["history"] == b["history"]  # every logged loss and validation accuracy
    assert a["config"] == b["config"]
    with (
        np.load(os.path.join(ref, "predictions.npz")) as p,
        np.load(os.path.join(workdir, "predictions.npz")) as q,
    ):
        assert sorted(p) == sorted(q)
        for k in p:
            assert p[k].tobytes() == q[k].tobytes(), k
    _no_litter(workdir)


def test_supervised_sigterm_saves_a_checkpoint_exits_75_and_resumes_identical(
    ann_reference, tmp_path
):
    workdir = str(tmp_path / "w")
    proc = _start(ANN_FLAGS, workdir)
    # After the first checkpoint: the stop lands in the middle of training.
    assert _wait_for(proc, os.path.join(workdir, "ckpt", "[0-9]*"))
    proc.send_signal(signal.SIGTERM)
    err = _assert_preempted(proc, "supervised_ann stopped at step ")
    step = int(err.split("stopped at step ")[1].split(";")[0])
    assert ANN_CHECKPOINT_EVERY < step < ANN_STEPS
    assert os.path.isdir(os.path.join(workdir, "ckpt", str(step)))  # saved and finished
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    _run(ANN_FLAGS, workdir)
    _assert_same_ann(ann_reference[0], workdir)


def test_sweep_sigterm_stops_the_inner_run_exits_75_and_resumes_identical(ann_reference, tmp_path):
    workdir = str(tmp_path / "w")
    proc = _start(SWEEP_FLAGS, workdir)
    # The second run has saved its first checkpoint: the first run is done, the second is cut
    # short in the middle of training.
    assert _wait_for(proc, os.path.join(workdir, "ann", "seed1", "ckpt", "[0-9]*"))
    proc.send_signal(signal.SIGTERM)
    err = _assert_preempted(proc, "sweep run 2 of 2 (ann seed 1): supervised_ann stopped at step ")
    step = int(err.split("stopped at step ")[1].split(";")[0])
    assert os.path.isdir(os.path.join(workdir, "ann", "seed1", "ckpt", str(step)))
    assert os.path.isfile(os.path.join(workdir, "ann", "seed0", "results.json"))
    assert not os.path.exists(os.path.join(workdir, "ann", "seed1", "results.json"))
    _run(SWEEP_FLAGS, workdir)
    with open(os.path.join(workdir, "sweep.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    assert [(r["variant"], r["seed"]) for r in lines] == [("ann", 0), ("ann", 1)]
    for seed in (0, 1):
        _assert_same_ann(ann_reference[seed], os.path.join(workdir, "ann", f"seed{seed}"))


def test_sweep_stop_between_runs_is_preempted_before_the_next_run(tmp_path, monkeypatch):
    from galaxy_jax.modes import sweep

    config = config_files.load_config("sweep:smoke")
    config.base = "supervised_ann:smoke"
    config.variants = ({"name": "ann"},)
    monkeypatch.setattr(preemption, "requested", lambda: True)
    with pytest.raises(preemption.Preempted, match=r"sweep stopped before run 1 of 2 \(ann seed 0"):
        sweep.run_sweep(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "ann")
