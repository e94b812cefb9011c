"""Scale (issue 6): streamed features, bounded memory, subsampled initialisation, one compile per
phase, and data parallelism over 4 devices and over 2 processes giving the 1-device clusters."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import mnist_dec
from galaxy_jax import dec, dec_init
from galaxy_jax.data import vectors
from galaxy_jax.data.vectors import DiskRows, Vectors
from galaxy_jax.modes import dec as dec_mode
from tests.conftest import ROOT


def _write_features(path, n, dim, k=4, seed=0, spread=0.5):
    b = vectors.make_blobs(n, dim, k, seed, spread)
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "features.npy"), b.x * np.float32(0.05))  # off unit power
    np.save(os.path.join(path, "labels.npy"), b.y)
    np.save(os.path.join(path, "ids.npy"), b.ids)
    return b


def _features_config(path, **dec_fields):
    c = mnist_dec.get_config("smoke")
    c.data = {"name": "features", "path": str(path), "normalize": "unit_power"}
    c.dec.update(dec_fields)
    return c


def test_disk_rows_reads_like_an_array(tmp_path):
    a = np.random.default_rng(0).normal(size=(500, 7)).astype(np.float32)
    np.save(tmp_path / "f.npy", a)
    r = DiskRows(str(tmp_path / "f.npy"), scale=0.5)
    idx = np.array([3, 4, 5, 5, 4, 499, 0, 1, 2, -1])
    np.testing.assert_array_equal(r[idx], a[idx] * np.float32(0.5))
    np.testing.assert_array_equal(r[10:400], a[10:400] * np.float32(0.5))
    np.testing.assert_array_equal(r[490:1000], a[490:] * np.float32(0.5))
    np.testing.assert_array_equal(np.asarray(r), a * np.float32(0.5))
    assert r.shape == (500, 7) and len(r) == 500
    with pytest.raises(IndexError):
        r[np.array([500])]


def test_sqrt_l2_rows_stream_like_the_whole_array(tmp_path):
    """'sqrt_l2': every row signed-square-rooted and scaled to norm sqrt(D), whichever rows a
    read asks for; zero rows stay zero."""
    a = np.random.default_rng(1).normal(size=(300, 9)).astype(np.float32)
    a[7] = 0.0
    feat = tmp_path / "feat"
    feat.mkdir()
    np.save(feat / "features.npy", a)
    x = vectors.load_features(str(feat), "sqrt_l2").x
    r = np.sign(a) * np.sqrt(np.abs(a))
    want = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-30) * np.sqrt(9)
    idx = np.array([5, 7, 299, 0, 5])
    np.testing.assert_allclose(x[idx], want[idx], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(x), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(x[7:8], 0.0)
    np.testing.assert_allclose(np.mean(np.sum(np.asarray(x)[a.any(1)] ** 2, 1)), 9, rtol=1e-5)


def test_streaming_dec_equals_in_memory(tmp_path, monkeypatch):
    _write_features(tmp_path / "feat", 600, 32)
    streamed = vectors.load_features(str(tmp_path / "feat"))
    assert isinstance(streamed.x, DiskRows)
    dec_mode.run_dec(_features_config(tmp_path / "feat"), str(tmp_path / "stream"))

    in_memory = Vectors(np.asarray(streamed.x), streamed.y, streamed.ids)
    monkeypatch.setattr(dec_mode, "load_vectors", lambda data: in_memory)
    dec_mode.run_dec(_features_config(tmp_path / "feat"), str(tmp_path / "memory"))

    def out(name, run):
        return np.load(tmp_path / run / f"{name}.npy")

    np.testing.assert_array_equal(out("assignments", "stream"), out("assignments", "memory"))
    q_s, q_m = out("q", "stream"), out("q", "memory")
    p_s = np.asarray(dec.target_distribution(q_s))
    p_m = np.asarray(dec.target_distribution(q_m))
    np.testing.assert_allclose(p_s, p_m, atol=1e-6, rtol=0)
    # And the chunked target of the loop (q kept per row, f summed) is the one-shot target.
    chunks = [q_s[i : i + 128] for i in range(0, len(q_s), 128)]
    f = sum(c.sum(0) for c in chunks)
    p_chunked = np.concatenate([dec.target_distribution(c, f) for c in chunks])
    np.testing.assert_allclose(p_chunked, p_s, atol=1e-6, rtol=0)


_PEAK_RSS = """
import sys
import numpy as np
from tests.test_scale import _features_config
from galaxy_jax import dec, dec_init
from galaxy_jax.data import vectors
from galaxy_jax.modes import dec as dec_mode

feat, workdir, chunk, in_memory = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
dec.PREDICT_CHUNK = dec_init.ASSIGN_CHUNK = vectors.SCAN_CHUNK = chunk
if in_memory:
    data = vectors.load_features(feat)
    data = vectors.Vectors(np.asarray(data.x), data.y, data.ids)
    dec_mode.load_vectors = lambda _: data
c = _features_config(feat, update_interval=40, maxiter=80, batch_size=64)
c.sae.dims, c.sae.finetune_steps = (32, 32, 64, 4), 20
dec_mode.run_dec(c, workdir)
# VmHWM: this process's peak RSS (ru_maxrss would include the parent's, kept across exec).
print(next(int(v.split()[1]) for v in open("/proc/self/status") if v.startswith("VmHWM")) / 1024)
"""


def _peak_rss_mb(feat, workdir, chunk, in_memory=False):
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(feat), str(workdir), str(chunk), str(int(in_memory))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "XLA_FLAGS": ""},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return float(out.stdout.strip().splitlines()[-1])


def test_streaming_memory_is_bounded_by_the_chunk(tmp_path):
    """Peak RSS of whole DEC runs (SAE, init, DEC, outputs) in fresh processes: a dataset 10x
    the chunk costs almost nothing more than a dataset of one chunk, streamed; held in memory,
    it costs the file (so the measurement can fail)."""
    chunk, dim = 4096, 2048  # one chunk of rows = 32 MiB
    _write_features(tmp_path / "small", chunk, dim)
    _write_features(tmp_path / "big", 10 * chunk, dim)
    file_mb = os.path.getsize(tmp_path / "big" / "features.npy") / 2**20
    small = _peak_rss_mb(tmp_path / "small", tmp_path / "w_small", chunk)
    big = _peak_rss_mb(tmp_path / "big", tmp_path / "w_big", chunk)
    held = _peak_rss_mb(tmp_path / "big", tmp_path / "w_held", chunk, in_memory=True)
    assert big - small < 0.2 * file_mb, (small, big, file_mb)
    assert held - small > 0.8 * file_mb, (small, held, file_mb)


def test_init_on_a_subsample_assigns_every_row():
    b = vectors.make_blobs(3000, 8, 3, seed=1, spread=0.3)
    full, labels_full = dec_init.init_centres("kmeans", b.x, 3, 0, 4)
    sub, labels_sub = dec_init.init_centres("kmeans", b.x, 3, 0, 4, max_points=300)
    assert labels_sub.shape == (3000,)
    # Same clusters up to their order, and the centres of the sample are close to the full ones.
    from galaxy_jax import metrics

    assert metrics.cluster_acc(labels_full, labels_sub) > 0.99
    assert np.abs(np.sort(sub, 0) - np.sort(full, 0)).max() < 0.2
    _, ward = dec_init.init_centres("ward", b.x, 3, 0, 1, max_points=500)
    assert metrics.cluster_acc(b.y, ward) > 0.99


def test_no_recompilation_after_the_first_step(tmp_path):
    """Backend compiles of a short and a 3x longer run are the same: nothing compiles per step,
    per target update or per whole-dataset pass."""
    counts = []

    def count(event, duration, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            counts[-1] += 1

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        for steps, name in ((40, "short"), (120, "long")):
            c = mnist_dec.get_config("smoke")
            c.sae.finetune_steps, c.dec.maxiter, c.dec.tol = steps, steps, 0.0
            counts.append(0)
            dec_mode.run_dec(c, str(tmp_path / name))
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert counts[0] == counts[1], counts
    wall = json.load(open(tmp_path / "long" / "results.json"))["wall_s"]
    assert wall["dec/compile"] > 0 and wall["sae/finetune/compile"] > 0


# ---------------------------------------------------------------------- devices and processes


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _main(workdir, extra=(), env=None, config="configs/mnist_dec.py:smoke"):
    args = [sys.executable, "main.py", f"--config={config}", f"--workdir={workdir}", *extra]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _finish(proc):
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one")
    env = {**os.environ, "XLA_FLAGS": ""}
    _finish(_main(workdir, env=env))
    return workdir


def _same_clusters(a, b):
    np.testing.assert_array_equal(np.load(a / "assignments.npy"), np.load(b / "assignments.npy"))
    np.testing.assert_allclose(np.load(a / "q.npy"), np.load(b / "q.npy"), atol=1e-4)
    np.testing.assert_allclose(np.load(a / "centres.npy"), np.load(b / "centres.npy"), atol=1e-3)


def test_four_devices_match_one(one_device, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    _finish(_main(tmp_path, env=env))
    devices = json.load(open(tmp_path / "results.json"))["devices"]
    assert len(devices) == 4
    _same_clusters(one_device, tmp_path)


def test_two_processes_match_one(one_device, tmp_path):
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": ""}
    procs = [
        _main(
            tmp_path,
            [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
            env=env,
        )
        for i in range(2)
    ]
    for p in procs:
        _finish(p)
    r = json.load(open(tmp_path / "results.json"))
    assert len(r["devices"]) == 2
    _same_clusters(one_device, tmp_path)


def test_supervised_ann_four_devices_match_one(tmp_path):
    config = "configs/supervised_ann.py:smoke"
    for name, flags in (("one", ""), ("four", "--xla_force_host_platform_device_count=4")):
        _finish(_main(tmp_path / name, env={**os.environ, "XLA_FLAGS": flags}, config=config))
    one, four = (np.load(tmp_path / n / "predictions.npz") for n in ("one", "four"))
    np.testing.assert_allclose(one["test_prob"], four["test_prob"], atol=1e-5)
    assert len(json.load(open(tmp_path / "four" / "results.json"))["devices"]) == 4
