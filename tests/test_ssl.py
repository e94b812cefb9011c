"""SSL mode: the NT-Xent loss, the views, a tiny run that learns, resumes bit-identically and
exports an encoder that galaxy_jax.weights loads into the right (narrow) Xception."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ssl as ssl_config
from galaxy_jax import preemption, simclr, weights
from galaxy_jax.data import preprocess as P
from galaxy_jax.data.synthetic import make_synthetic_source
from galaxy_jax.errors import UserError
from galaxy_jax.models import xception
from galaxy_jax.modes import ssl as ssl_mode

IDENTITY_BUT_DIHEDRAL = dict(
    max_angle_deg=0.0,
    min_zoom=1.0,
    max_zoom=1.0,
    max_shift=0.0,
    min_flux=1.0,
    max_flux=1.0,
    max_noise=0.0,
    max_blur=0.0,
)


def test_nt_xent_against_a_loop():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 5, 3)).astype(np.float32)
    t = 0.3
    loss, top1 = simclr.nt_xent(jnp.asarray(z1), jnp.asarray(z2), t)
    z = np.concatenate([z1, z2])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    terms = []
    for i in range(10):
        others = [j for j in range(10) if j != i]
        sims = np.array([z[i] @ z[j] for j in others]) / t
        partner = (i + 5) % 10
        terms.append(-(z[i] @ z[partner] / t - np.log(np.exp(sims).sum())))
    np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)
    aligned, top1_aligned = simclr.nt_xent(jnp.asarray(z1), jnp.asarray(z1), t)
    assert float(top1_aligned) == 1.0 and float(aligned) < float(loss)


def _eight(image):
    return [np.rot90(image if i < 4 else image[:, ::-1], k=i % 4, axes=(0, 1)) for i in range(8)]


def test_dihedral_views_are_exact_pixel_permutations():
    x = np.random.default_rng(1).uniform(-1, 1, (6, 9, 9, 3)).astype(np.float32)
    views = np.asarray(P.ssl_views(jax.random.key(0), x, **IDENTITY_BUT_DIHEDRAL))
    seen = set()
    for image, view in zip(x, views, strict=True):
        matches = [k for k, t in enumerate(_eight(image)) if np.array_equal(view, t)]
        assert len(matches) == 1  # bit-exact: a permutation of the pixels, nothing resampled
        seen.add(matches[0])
        np.testing.assert_array_equal(np.sort(view, axis=None), np.sort(image, axis=None))
    assert len(seen) > 1


def _concentration(images):
    """Flux within r < 4 px of the centre over flux within r < 12 px, sky (median) subtracted."""
    s = images.shape[1]
    yy, xx = np.mgrid[:s, :s] - (s - 1) / 2.0
    r = np.hypot(yy, xx)
    flux = images.mean(-1) - np.median(images, axis=(1, 2, 3))[:, None, None]
    return (flux * (r < 4)).sum((1, 2)) / (flux * (r < 12)).sum((1, 2))


def test_views_keep_shape_range_and_the_class_signal():
    src = make_synthetic_source(32, 96, seed=0)
    x = P.preprocess(src.get(np.arange(32)), crop_size=None, image_size=72)
    v1 = np.asarray(P.ssl_views(jax.random.key(1), x))
    v2 = np.asarray(P.ssl_views(jax.random.key(2), x))
    assert v1.shape == x.shape and v1.dtype == np.float32
    assert np.isfinite(v1).all() and v1.min() >= -1.0 and v1.max() <= 1.0
    assert not np.allclose(v1, v2)
    # Labels are never touched, so "label-preserving" means the class signal survives: the
    # ellipticals stay the more concentrated galaxies in every view (this crude fixed-aperture
    # statistic scores AUC 0.94 on the originals, 0.90 and 0.80 on the two views).
    from sklearn.metrics import roc_auc_score

    elliptical = src.labels == 0
    assert roc_auc_score(elliptical, _concentration(np.asarray(x))) > 0.9
    for view in (v1, v2):
        assert roc_auc_score(elliptical, _concentration(view)) > 0.75


def test_gaussian_blur_is_normalised_and_identity_at_zero():
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (12, 12, 3)), jnp.float32)
    np.testing.assert_allclose(P.gaussian_blur(x, 0.0, radius=3), x, atol=1e-6)
    flat = jnp.full((12, 12, 3), 0.25)
    np.testing.assert_allclose(P.gaussian_blur(flat, 1.5, radius=5), flat, atol=1e-6)
    assert float(jnp.std(P.gaussian_blur(x, 1.5, radius=5))) < float(jnp.std(x))


def _results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ssl_full"))
    ssl_mode.run_ssl(ssl_config.get_config("smoke"), workdir)
    return workdir


def test_tiny_run_lowers_the_loss(full_run):
    loss = [v for _, v in _results(full_run)["history"]["ssl"]["loss"]]
    assert len(loss) == 12 and np.isfinite(loss).all()
    assert np.mean(loss[-3:]) < np.mean(loss[:3]) - 0.05, loss


def test_preempted_and_resumed_run_is_identical(full_run, tmp_path, monkeypatch):
    config = ssl_config.get_config("smoke")
    calls = iter(range(1, 1000))
    monkeypatch.setattr(preemption, "requested", lambda: next(calls) == 5)
    with pytest.raises(preemption.Preempted):
        ssl_mode.run_ssl(config, str(tmp_path))
    assert os.path.isdir(tmp_path / "ckpt" / "5") and not os.path.exists(tmp_path / "encoder.npz")
    monkeypatch.setattr(preemption, "requested", lambda: False)
    ssl_mode.run_ssl(config, str(tmp_path))
    full, resumed = _results(full_run), _results(str(tmp_path))
    assert resumed["history"] == full["history"]
    assert resumed["encoder"]["variables_sha256"] == full["encoder"]["variables_sha256"]


def test_exported_encoder_loads_as_the_narrow_xception(full_run, tmp_path):
    path = os.path.join(full_run, "encoder.npz")
    loaded = weights.load_weights(path)
    assert loaded.architecture == {"width": 0.125, "middle_blocks": 1}
    assert loaded.info["image_size"] == 71 and loaded.info["feature_dim"] == 256
    model = weights.model_for(loaded)
    assert model.feature_dim == 256
    x = jnp.zeros((2, 71, 71, 3))
    _, out = model.apply(loaded.variables, x)
    assert out["pooled"].shape == (2, 256) and np.isfinite(np.asarray(out["pooled"])).all()
    assert "block5" in out and "block6" not in out
    # The batch statistics were trained, not left at the identity.
    assert not np.allclose(loaded.variables["batch_stats"]["block1_conv1_bn"]["var"], 1.0)
    # Without its JSON the file is read as Keras' Xception, and the strict check says why.
    alone = tmp_path / "alone.npz"
    alone.write_bytes(open(path, "rb").read())
    with pytest.raises(UserError, match="no alone.json beside it"):
        weights.load_weights(str(alone))


def test_extract_from_the_ssl_encoder_gives_its_features(full_run, tmp_path):
    from configs import extract as extract_config
    from galaxy_jax.modes import extract

    c = extract_config.get_config("smoke")
    c.weights = os.path.join(full_run, "encoder.npz")
    features = extract.run_extract(c, str(tmp_path))
    assert features.shape == (c.data.synthetic_n, 256) and np.isfinite(features).all()
    meta = json.load(open(tmp_path / "features_meta.json"))
    assert meta["architecture"] == {"middle_blocks": 1, "width": 0.125}
    assert np.load(tmp_path / "features.npy").shape == (c.data.synthetic_n, 256)


def test_default_architecture_is_keras_xception():
    model = weights.model_for(weights.LoadedWeights({}, "x", "", None))
    assert (model.width, model.middle_blocks, model.feature_dim) == (1.0, 8, 2048)
    shapes = xception.variable_shapes(model)
    assert xception.count_params(shapes) == 20_861_480


def test_bad_config_is_refused_naming_the_field(tmp_path):
    config = ssl_config.get_config("smoke")
    config.temperature = 0.0
    with pytest.raises(UserError, match="config.temperature"):
        ssl_mode.run_ssl(config, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w")


def test_imagenet_start_loads_the_backbone_and_a_narrow_model_is_refused(tmp_path, monkeypatch):
    """weights != 'random': the backbone starts from those weights (here a converted file of
    Keras' architecture, seeded), the head stays fresh; a narrow model is refused, naming it."""
    keras_xception = weights.load_weights("random", seed=5)
    for stats in keras_xception.variables["batch_stats"].values():  # not the identity a fresh
        stats["var"] = stats["var"] * 2.0  # initialisation has
    path = str(tmp_path / "start.npz")
    weights.save_npz(path, weights.flatten(keras_xception.variables))
    config = ssl_config.get_config("smoke")
    config.weights = path
    with pytest.raises(UserError, match="model.width and model.middle_blocks"):
        ssl_mode.run_ssl(config, str(tmp_path / "narrow"))
    # Keras' architecture: stop before the first step and look at the state it starts from.
    config.model.width, config.model.middle_blocks = 1.0, 8
    seen = {}

    def stop(self, state, *args, **kwargs):
        seen["state"] = state
        raise preemption.Preempted("stop")

    monkeypatch.setattr(ssl_mode.StepRunner, "run", stop)
    with pytest.raises(preemption.Preempted):
        ssl_mode.run_ssl(config, str(tmp_path / "keras"))
    backbone = jax.device_get(seen["state"].params["backbone"])
    for name in ("block1_conv1", "block14_sepconv2"):
        for k, v in backbone[name].items():
            np.testing.assert_array_equal(v, keras_xception.variables["params"][name][k])
    stats = jax.device_get(seen["state"].batch_stats["backbone"])
    np.testing.assert_array_equal(
        stats["block4_sepconv1_bn"]["var"],
        keras_xception.variables["batch_stats"]["block4_sepconv1_bn"]["var"],
    )
