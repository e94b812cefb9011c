"""The paper's DEC variants (configs/sweep.py GALAXY_VARIANTS) on tiny synthetic galaxies, the
labels they may see, and the quick start end to end.

Data: grey 32x32 pixel vectors of 160 synthetic galaxies (k-means on them scores ~0.73 against
chance 0.5), written as an extract-style features directory so that the real loaders run.
Variants that change only the `dec` section reuse one pretrained autoencoder (`sae_from`: read
from the finished run, checked to be of the same seed, data and sae settings).
"""

import json
import os

import numpy as np
import pytest

from configs import galaxy_dec, quickstart
from configs import sweep as sweep_config
from galaxy_jax import config_files, dec_init
from galaxy_jax.data.synthetic import make_synthetic_source
from galaxy_jax.data.vectors import load_vectors
from galaxy_jax.errors import UserError
from galaxy_jax.modes import dec as dec_mode

N, SIZE = 160, 32
CHANCE = 0.6  # 2 balanced classes: a random partition scores ~0.5 (+ ~0.04 noise at N=160)
VARIANTS = {v["name"]: v for v in sweep_config.GALAXY_VARIANTS}


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pixels"))
    src = make_synthetic_source(N, SIZE, seed=0)
    x = src.get(np.arange(N)).astype(np.float32).mean(-1).reshape(N, -1) / 255.0
    np.save(os.path.join(root, "features.npy"), x)
    np.save(os.path.join(root, "labels.npy"), src.labels.astype(np.int32))
    np.save(os.path.join(root, "ids.npy"), np.asarray(src.ids).astype(str))
    return root


def _config(features, variant=None):
    c = galaxy_dec.get_config()
    c.data.path = features
    c.sae.finetune_steps = 150
    c.sae.batch_size = 64
    c.dec.batch_size = 64
    c.dec.maxiter = 60
    c.dec.kmeans_n_init = 4
    c.log_every = 50
    c.checkpoint_every = 1000
    overrides = {k: v for k, v in (variant or {}).items() if k not in ("name", "mode")}
    overrides["sae.dims"] = _narrow(overrides.get("sae.dims", c.sae.dims))
    config_files.apply_overrides(c, overrides)
    if (variant or {}).get("mode"):
        c.mode = variant["mode"]
    return c


def _narrow(dims):
    """The same architecture at 1/8 of the hidden widths (the embedding width is kept)."""
    return (*(max(8, h // 8) for h in dims[:-1]), dims[-1])


def _read(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def pretrained(features, tmp_path_factory):
    """A finished default run: its sae/ is reused by the dec-only variants."""
    workdir = str(tmp_path_factory.mktemp("xception_dec"))
    dec_mode.run_dec(_config(features), workdir)
    return workdir


def _run(name, features, pretrained, tmp_path):
    v = VARIANTS[name]
    config = _config(features, v)
    workdir = str(tmp_path / name)
    if not any(k.startswith("sae.") for k in v):
        config.sae_from = pretrained  # the same seed, data and sae: its autoencoder is reused
    run = {"kmeans": dec_mode.run_kmeans, "dec": dec_mode.run_dec}[config.mode]
    return run(config, workdir), workdir


PARAMS = [n for n in VARIANTS if n != "xception_dec"]  # xception_dec is the `pretrained` run


def test_default_dec_clusters_better_than_chance(pretrained):
    m = _read(pretrained)["metrics"]
    assert m["dec"]["acc"] > CHANCE, m["dec"]
    assert len(set(np.load(os.path.join(pretrained, "assignments.npy")))) == 2  # no collapse


@pytest.mark.parametrize("name", PARAMS)
def test_variant_clusters_better_than_chance(name, features, pretrained, tmp_path):
    results, _ = _run(name, features, pretrained, tmp_path)
    m = results["metrics"]
    section = m.get("dec_hidden") or m.get("dec") or m["kmeans_input"]
    # More clusters than classes: one-to-one accuracy caps below 1; score by dominant label.
    key = "acc_dominant" if "4_clusters" in name else "acc"
    assert section[key] > CHANCE, (name, section)


def test_visible_labels_read_only_the_drawn_rows():
    class Recording:
        def __init__(self, y):
            self.y, self.read = y, set()

        def __len__(self):
            return len(self.y)

        def __getitem__(self, idx):
            self.read.update(np.atleast_1d(np.arange(len(self.y))[idx]).tolist())
            return self.y[idx]

    y = Recording(np.arange(1000) % 2)
    vis = dec_init.visible_labels(y, 0.1, seed=3)
    assert y.read == set(np.flatnonzero(vis >= 0).tolist()) and len(y.read) == 100
    np.testing.assert_array_equal(vis, dec_init.visible_labels(np.arange(1000) % 2, 0.1, seed=3))


@pytest.mark.parametrize("name", ["init_labels", "semi_supervised"])
def test_hidden_labels_are_never_read(name, features, pretrained, tmp_path, monkeypatch):
    """Poisons every hidden label (flipped, or unknown): training must not change at all."""
    config = _config(features, VARIANTS[name])
    results, clean = _run(name, features, pretrained, tmp_path)
    real = load_vectors(config.data)
    hidden = dec_init.visible_labels(real.y, config.dec.label_fraction, config.seed) < 0
    assert 0 < hidden.sum() < N
    poisoned = real.y.copy()
    poisoned[hidden] = np.where(np.arange(N)[hidden] % 3 == 0, -1, 1 - real.y[hidden])
    monkeypatch.setattr(
        dec_mode, "load_vectors", lambda data: type(real)(real.x, poisoned.copy(), real.ids)
    )
    workdir = str(tmp_path / "poisoned")
    config.sae_from = pretrained
    dec_mode.run_dec(config, workdir)
    for f in ("q.npy", "centres.npy", "assignments.npy"):
        a, b = (open(os.path.join(w, f), "rb").read() for w in (clean, workdir))
        assert a == b, f
    # The evaluation did see the poisoned labels (so the poison was in the data).
    assert _read(workdir)["metrics"]["dec"] != results["metrics"]["dec"]


def test_label_variants_need_labels_and_matching_classes(features, tmp_path):
    c = _config(features, VARIANTS["init_labels"])
    c.dec.label_fraction = 0.0
    with pytest.raises(UserError, match="config.dec.label_fraction"):
        dec_mode.run_dec(c, str(tmp_path / "a"))
    c = _config(features, VARIANTS["init_labels"])
    c.dec.n_clusters = 3
    with pytest.raises(UserError, match="config.dec.n_clusters"):
        dec_mode.run_dec(c, str(tmp_path / "b"))
    for field, value in (
        ("init", "dbscan"),
        ("spectral_neighbors", 0),
        ("gamma", -1.0),
        ("label_fraction", 1.5),
    ):
        c = _config(features)
        c.dec[field] = value
        with pytest.raises(UserError, match=f"config.dec.{field}"):
            dec_mode.run_dec(c, str(tmp_path / "c"))
    assert not os.listdir(tmp_path)


def test_quickstart_smoke_runs_end_to_end_and_says_which_weights(tmp_path, capsys):
    from galaxy_jax.modes.quickstart import run_quickstart

    config = quickstart.get_config("smoke")
    config.extract.cache_dir = str(tmp_path / "empty_cache")  # no ImageNet file there
    config.seeds = (0,)
    out = run_quickstart(config, str(tmp_path / "qs"))
    printed = capsys.readouterr().out
    assert "ImageNet weights are NOT available" in printed
    assert "RANDOMLY INITIALISED" in printed and "| xception_dec |" in printed
    assert out["weights"].startswith("random")
    for f in ("report.md", "quickstart.json", "features/features.npy"):
        assert os.path.isfile(tmp_path / "qs" / f), f
    assert os.listdir(tmp_path / "qs" / "figures")
    with open(tmp_path / "qs" / "report.md") as f:
        assert "random" in f.readline()


def test_sae_from_reuses_a_finished_autoencoder_exactly(features, pretrained, tmp_path):
    """DEC on another run's autoencoder == that run's own DEC; nothing is trained or written
    there; another seed, data or sae setting is refused, as is a workdir without one."""
    config = _config(features)
    config.sae_from = pretrained
    workdir = str(tmp_path / "shared")
    before = sorted(os.listdir(os.path.join(pretrained, "sae", "finetune")))
    results = dec_mode.run_dec(config, workdir)
    assert not os.path.exists(os.path.join(workdir, "sae"))
    assert "sae/shared" in results["wall_s"] and "sae/finetune" not in results["wall_s"]
    assert results["metrics"]["dec"] == _read(pretrained)["metrics"]["dec"]
    np.testing.assert_array_equal(
        np.load(os.path.join(workdir, "assignments.npy")),
        np.load(os.path.join(pretrained, "assignments.npy")),
    )
    assert sorted(os.listdir(os.path.join(pretrained, "sae", "finetune"))) == before
    for field, value in (("seed", 1), ("sae.finetune_steps", 10)):
        other = _config(features, {field: value})
        other.sae_from = pretrained
        with pytest.raises(UserError, match="another config"):
            dec_mode.run_dec(other, str(tmp_path / f"other_{field}"))
    config.sae_from = str(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no autoencoder there"):
        dec_mode.run_dec(config, str(tmp_path / "nowhere_run"))


@pytest.mark.parametrize("mode", ["pretrain", "dec"])
def test_n2d_umap_init_separates_blobs(mode, tmp_path):
    """N2D (dec.init='umap': UMAP of the embedding, then a Gaussian mixture) as the final
    clusterer (mode pretrain) and as DEC's initialisation, on well-separated blobs."""
    from configs import mnist_dec

    c = mnist_dec.get_config("smoke")
    c.mode, c.dec.init = mode, "umap"
    results = {"pretrain": dec_mode.run_pretrain, "dec": dec_mode.run_dec}[mode](c, str(tmp_path))
    m = results["metrics"]
    assert m["kmeans_embedding"]["acc"] >= 0.95, m
    if mode == "dec":
        assert m["dec"]["acc"] >= 0.95, m


@pytest.mark.parametrize("mode", ["kmeans", "pretrain"])
def test_spectral_init_separates_blobs(mode, tmp_path):
    """dec.init='spectral' as the final clusterer of the input vectors (mode kmeans clusters
    them with dec.init) and of the SAE embedding (mode pretrain), on well-separated blobs."""
    from configs import mnist_dec

    c = mnist_dec.get_config("smoke")
    c.mode, c.dec.init = mode, "spectral"
    run = {"kmeans": dec_mode.run_kmeans, "pretrain": dec_mode.run_pretrain}[mode]
    m = run(c, str(tmp_path))["metrics"]
    section = {"kmeans": "kmeans_input", "pretrain": "kmeans_embedding"}[mode]
    assert m[section]["acc"] >= 0.95, m


def test_spectral_equals_scikit_learn_and_follows_the_manifold():
    """Our graph (exact neighbours from neighbours.mine, self-loops, symmetrised) is
    scikit-learn's affinity='nearest_neighbors' with one more neighbour (the row itself): the
    same partition. On two interleaved half-moons, where k-means cuts across both, it follows
    each moon."""
    from sklearn.cluster import KMeans, SpectralClustering
    from sklearn.datasets import make_moons
    from sklearn.metrics import adjusted_rand_score

    from galaxy_jax import metrics

    x, y = make_moons(400, noise=0.06, random_state=0)
    x = x.astype(np.float32)
    ours = dec_init.spectral_labels(x, 2, seed=3, n_neighbors=9)
    theirs = SpectralClustering(
        2, affinity="nearest_neighbors", n_neighbors=10, random_state=3, eigen_solver="lobpcg"
    ).fit_predict(x)
    assert adjusted_rand_score(ours, theirs) == 1.0
    assert metrics.cluster_acc(y, ours) >= 0.99
    assert metrics.cluster_acc(y, KMeans(2, n_init=4, random_state=0).fit_predict(x)) < 0.9
    centres, labels = dec_init.init_centres("spectral", x, 2, 3, 1, spectral_neighbors=9)
    np.testing.assert_array_equal(labels, ours)
    np.testing.assert_allclose(centres[0], x[ours == 0].mean(0), rtol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [{"dec.target_power": 0.0}, {"dec.target_power": 0.5}, {"data.normalize": "sqrt_l2"}],
    ids=["target_power_0", "target_power_0.5", "sqrt_l2"],
)
def test_issue17_dec_variants_separate_blobs(overrides, tmp_path):
    """Each new DEC variant on well-separated blobs (the sqrt_l2 one through a features dir)."""
    from configs import mnist_dec
    from galaxy_jax.data import vectors

    c = mnist_dec.get_config("smoke")
    if "data.normalize" in overrides:
        b = vectors.make_blobs(600, 32, 4, 0, 0.5)
        vectors.save_features(str(tmp_path / "feat"), b.x, b.ids, b.y)
        c.data = {"name": "features", "path": str(tmp_path / "feat"), "normalize": "unit_power"}
    config_files.apply_overrides(c, overrides)
    m = dec_mode.run_dec(c, str(tmp_path / "run"))["metrics"]
    assert m["dec"]["acc"] >= 0.95, m["dec"]
