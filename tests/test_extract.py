"""Feature extraction: data parallelism over 4 CPU devices, resume, TTA, and the extract mode."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from configs import data_defaults
from configs import extract as extract_config
from galaxy_jax import features as features_lib
from galaxy_jax.data import image_source as source_lib
from galaxy_jax.errors import UserError
from galaxy_jax.models import xception
from galaxy_jax.modes import extract

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, size=71, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def variables():
    return xception.init_variables(xception.Xception(), seed=0)


def test_four_devices_equal_one_and_compile_once(tmp_path):
    # A fresh process: the device count is fixed when JAX starts.
    script = textwrap.dedent(
        """
        import json, sys
        import jax, numpy as np
        from galaxy_jax.data import image_source as source_lib
        from galaxy_jax import features as features_lib, parallel
        from galaxy_jax.models import xception
        assert jax.device_count() == 4, jax.devices()
        v = xception.init_variables(xception.Xception(), seed=0)
        src = source_lib.from_arrays(
            np.random.default_rng(0).integers(0, 256, (7, 80, 80, 3), dtype=np.uint8))
        out = {}
        for n_dev, micro in ((4, 0), (1, 0), (4, (1, 2))):  # (1, 2): entry, rest per step
            f, fn = features_lib.extract_features(
                src, v, features_lib.FeatureSpec(image_size=71, crop_size=76, micro_batch=micro),
                batch_size=5, mesh=parallel.mesh(jax.devices()[:n_dev]), progress=False)
            out[n_dev, micro] = f
            # Batch 5 -> 8 on 4 devices: a batch of 8 (last 1 padded); one compilation.
            assert fn._cache_size() == 1, fn._cache_size()
        np.savez(sys.argv[1], four=out[4, 0], one=out[1, 0], four_micro=out[4, (1, 2)])
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    path = str(tmp_path / "out.npz")
    r = subprocess.run(
        [sys.executable, "-c", script, path], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    with np.load(path) as z:
        assert z["four"].shape == (7, 2048)
        assert np.abs(z["one"]).max() > 0
        np.testing.assert_allclose(z["four"], z["one"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(z["four_micro"], z["one"], rtol=1e-5, atol=1e-6)


def test_micro_batches_give_the_features_of_one_pass():
    model = xception.Xception(width=0.125, middle_blocks=1)
    v = xception.init_variables(model, seed=1)
    x = np.random.default_rng(1).uniform(-1, 1, (6, 75, 75, 3)).astype(np.float32)
    whole = features_lib.pooled_features(model, v, x)
    assert whole.shape == (6, model.feature_dim)
    for micro in (1, 4, (1, 3), (2, 6), (3, 1)):  # 4 -> 3: the largest divisor of 6 below it
        np.testing.assert_allclose(
            features_lib.pooled_features(model, v, x, micro_batch=micro),
            whole,
            rtol=1e-5,
            atol=1e-6,
        )
    # Two shards of 3 rows: each step takes rows of both, and the order is kept.
    np.testing.assert_allclose(
        features_lib.pooled_features(model, v, x, micro_batch=(1, 3), num_shards=2),
        whole,
        atol=1e-6,
    )


def test_cpu_micro_batches_follow_the_feature_map_sizes():
    full = xception.Xception()
    assert features_lib.cpu_micro_batches(full, 299) == (1, 2)
    assert features_lib.cpu_micro_batches(full, 224) == (1, 4)
    assert features_lib.cpu_micro_batches(full, 128) == (2, 14)
    # Narrower channels and bfloat16 halve the bytes per image: more images per step.
    assert features_lib.cpu_micro_batches(xception.Xception(dtype="bfloat16"), 128) == (4, 28)
    assert features_lib.cpu_micro_batches(xception.Xception(width=0.25), 299) == (1, 9)


def test_resume_reuses_shards_and_rejects_foreign_ones(variables, tmp_path):
    images = _images(5)
    requested = []
    src = source_lib.from_arrays(images)
    get = src.get
    src.get = lambda idx: (requested.append(np.asarray(idx).copy()), get(idx))[1]
    spec = features_lib.FeatureSpec(image_size=71)
    kw = dict(batch_size=2, shard_size=2, shard_dir=str(tmp_path), progress=False)
    full, _ = features_lib.extract_features(src, variables, spec, meta_hash="a", **kw)
    shards = [f"shard_{i:05d}_of_00003.npy" for i in range(3)]
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["meta.json", *shards, *(f"{s}.sha256" for s in shards)]
    )  # each shard with its SHA-256
    os.remove(tmp_path / "shard_00001_of_00003.npy")  # as if interrupted there
    requested.clear()
    again, _ = features_lib.extract_features(src, variables, spec, meta_hash="a", **kw)
    assert [list(r) for r in requested] == [[2, 3]]
    np.testing.assert_array_equal(again, full)
    requested.clear()
    # other weights or config
    features_lib.extract_features(src, variables, spec, meta_hash="b", **kw)
    assert [list(r) for r in requested] == [[0, 1], [2, 3], [4, 4]]  # last batch padded


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_tta_is_invariant_to_rotations_and_flips(variables, pool):
    image = _images(1)[0]
    views = np.stack([image, np.rot90(image), image[:, ::-1], np.rot90(image, 3)[::-1]])
    spec = features_lib.FeatureSpec(image_size=71, tta=True, tta_pool=pool)
    f, _ = features_lib.extract_features(
        source_lib.from_arrays(np.ascontiguousarray(views)),
        variables, spec, batch_size=4, progress=False,
    )  # fmt: skip
    # max: the same 8 feature vectors in another order, so the same maximum, bit for bit.
    tol = dict(rtol=0, atol=0) if pool == "max" else dict(rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(f, np.broadcast_to(f[:1], f.shape), **tol)
    plain, _ = features_lib.extract_features(
        source_lib.from_arrays(views[:1]),
        variables,
        features_lib.FeatureSpec(image_size=71),
        progress=False,
    )
    assert not np.allclose(plain[0], f[0], rtol=1e-3)  # TTA did average different views


def test_extract_mode_writes_outputs_and_skips_a_rerun(tmp_path):
    config = extract_config.get_config("smoke")
    config.cache_dir = str(tmp_path / "cache")
    wd = str(tmp_path / "wd")
    features = extract.run_extract(config, wd)
    assert features.shape == (6, 2048) and features.dtype == np.float32
    np.testing.assert_array_equal(np.load(os.path.join(wd, "features.npy")), features)
    ids = np.load(os.path.join(wd, "ids.npy"))
    assert ids.dtype.kind == "U" and len(set(ids)) == 6
    labels = np.load(os.path.join(wd, "labels.npy"))
    assert labels.dtype == np.int32 and labels.shape == (6,)
    with open(os.path.join(wd, "features_meta.json")) as f:
        meta = json.load(f)
    assert meta["num_images"] == 6 and meta["image_size"] == 71 and meta["tta"] is False
    assert meta["weights"] == "random (seed 0)" and len(meta["weights_sha256"]) == 64
    assert meta["config"]["mode"] == "extract" and "jax" in meta["versions"]
    assert not os.path.exists(os.path.join(wd, extract.SHARD_DIR))
    mtime = os.path.getmtime(os.path.join(wd, "features.npy"))
    extract.run_extract(config, wd)  # up to date: nothing recomputed or rewritten
    assert os.path.getmtime(os.path.join(wd, "features.npy")) == mtime
    config.seed = 1  # other (random) weights: a different hash, so extracted again
    again = extract.run_extract(config, wd)
    assert not np.allclose(again, features)


def test_main_splits_the_cpu_into_host_devices(tmp_path):
    """configs/extract.py's host_devices (default -1: one per core) reaches JAX before it starts,
    and the features do not depend on it."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    wd = str(tmp_path / "three")
    flags = ["--config=configs/extract.py:smoke", "--config.host_devices=3", f"--workdir={wd}"]
    r = subprocess.run(
        [sys.executable, "main.py", *flags], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    with open(os.path.join(wd, "features_meta.json")) as f:
        assert json.load(f)["num_devices"] == 3
    one = extract.run_extract(extract_config.get_config("smoke"), str(tmp_path / "here"))
    np.testing.assert_allclose(np.load(os.path.join(wd, "features.npy")), one, atol=1e-5)


def test_host_device_count():
    from galaxy_jax.parallel import host_device_count

    cores = len(os.sched_getaffinity(0))
    assert host_device_count(-1) == (cores if cores > 1 else None)
    assert host_device_count(1) is None  # JAX's default: one device on every core
    assert host_device_count(3) == 3
    assert host_device_count(3, "--xla_force_host_platform_device_count=4") is None
    with pytest.raises(UserError, match="host_devices must be -1"):
        host_device_count(0)


# ------------------------------------------------------------------------------------ pixels


def _pixels(src, **spec):
    """extract_features of the pixels of `src` at 16 px, batches of 4, spec fields as given."""
    spec = features_lib.FeatureSpec(image_size=16, model="pixels", **spec)
    return features_lib.extract_features(src, {}, spec, batch_size=4, progress=False)


def test_pixel_features_are_the_preprocessed_image_flattened():
    from galaxy_jax.data.preprocess import preprocess

    images = _images(5, size=40)
    src = source_lib.from_arrays(images)
    gray, fn = _pixels(src, grayscale=True, crop_size=20)
    rgb, _ = _pixels(src, grayscale=False, crop_size=20)
    x = np.asarray(preprocess(images, crop_size=20, image_size=16))  # [5, 16, 16, 3] in [-1, 1]
    assert gray.shape == (5, 16 * 16) and gray.dtype == np.float32
    assert rgb.shape == (5, 16 * 16 * 3)
    np.testing.assert_allclose(rgb, x.reshape(5, -1), atol=1e-6)
    np.testing.assert_allclose(gray, x.mean(-1).reshape(5, -1), atol=1e-6)
    assert features_lib.feature_dim("pixels", 16, True) == 256
    assert fn._cache_size() == 1  # the padded last batch reuses the one compilation
    std, _ = _pixels(src, grayscale=True, standardize=True, crop_size=20)
    np.testing.assert_allclose(std.mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(std.std(1), 1.0, atol=1e-4)
    g = gray - gray.mean(1, keepdims=True)
    np.testing.assert_allclose(std, g / g.std(1, keepdims=True), atol=1e-4)


def test_pixel_tta_is_a_rotation_invariant_image():
    # 50 - 30 is even: the centre crop of a rotated image is the rotated crop, exactly.
    image = _images(1, size=50)[0]
    views = np.stack([image, np.rot90(image), image[:, ::-1], np.rot90(image, 3)[::-1]])
    src = source_lib.from_arrays(np.ascontiguousarray(views))
    f, _ = _pixels(src, tta=True, grayscale=True, crop_size=30)
    np.testing.assert_allclose(f, np.broadcast_to(f[:1], f.shape), atol=1e-6)
    averaged = f[0].reshape(16, 16)
    np.testing.assert_allclose(np.rot90(averaged), averaged, atol=1e-6)  # itself symmetric
    np.testing.assert_allclose(averaged[:, ::-1], averaged, atol=1e-6)
    plain, _ = _pixels(src, grayscale=True, crop_size=30)
    assert not np.allclose(plain[0], plain[1])  # the views do differ without TTA


def test_pixels_extract_mode_layout_metadata_and_kmeans_on_it(tmp_path):
    from configs import galaxy_sample
    from galaxy_jax.modes import dec as dec_mode

    config = extract_config.get_config("pixels_smoke")
    wd = str(tmp_path / "pixels")
    features = extract.run_extract(config, wd)
    assert features.shape == (6, 16 * 16) and features.dtype == np.float32
    assert sorted(os.listdir(wd)) == sorted(extract.OUTPUTS)  # the Xception layout, no shards
    assert np.load(os.path.join(wd, "labels.npy")).shape == (6,)
    with open(os.path.join(wd, "features_meta.json")) as f:
        meta = json.load(f)
    assert meta["feature_source"] == "pixels" and meta["grayscale"] is True
    assert meta["standardize"] is False
    assert meta["weights"] == "none (pixels)" and meta["weights_sha256"] is None
    assert meta["feature_dim"] == 256 and meta["image_size"] == 16
    mtime = os.path.getmtime(os.path.join(wd, "features.npy"))
    extract.run_extract(config, wd)  # up to date
    assert os.path.getmtime(os.path.join(wd, "features.npy")) == mtime
    config.tta = True  # another identity: extracted again
    assert not np.allclose(extract.run_extract(config, wd), features)

    km = galaxy_sample.get_config("kmeans_pixels")  # "k-means on pixels" reads that workdir
    km.data.path = wd
    km.dec.kmeans_n_init = 2
    results = dec_mode.run_kmeans(km, str(tmp_path / "kmeans"))
    assert results["metrics"]["kmeans_input"]["n"] == 6


def test_unknown_feature_source_is_rejected_before_the_workdir(tmp_path):
    config = extract_config.get_config("pixels_smoke")
    config.source = "resnet"
    with pytest.raises(UserError, match="config.source"):
        extract.run_extract(config, str(tmp_path / "wd"))
    assert not os.path.exists(tmp_path / "wd")


@pytest.mark.skipif(
    not os.path.isdir(data_defaults.KAGGLE_SAMPLE), reason="real Kaggle sample not found"
)
def test_sample_configs_run_on_real_images_with_random_weights(tmp_path):
    """configs/galaxy_sample.py's extraction variants on 4 real sample JPEGs (2 per class, the
    sample's folder layout): Xception with weights='random' is what a user flips to 'imagenet'."""
    from configs import galaxy_sample

    root = tmp_path / "sample"
    for split, cls in (("train", "spirals"), ("validation", "non_spirals")):
        src_dir = os.path.join(data_defaults.KAGGLE_SAMPLE, "images", split, cls)
        (root / split / cls).mkdir(parents=True)
        for name in sorted(os.listdir(src_dir))[:2]:
            os.symlink(os.path.join(src_dir, name), root / split / cls / name)
    for variant, dim in (("xception_extract", 2048), ("pixels_extract", 64 * 64)):
        config = galaxy_sample.get_config(variant)
        if variant == "xception_extract":
            assert config.weights == "imagenet" and config.source == "xception"
            config.weights, config.download = "random", False
        config.data.folder = str(root)
        wd = str(tmp_path / variant)
        features = extract.run_extract(config, wd)
        assert features.shape == (4, dim) and np.all(np.isfinite(features))
        with open(os.path.join(wd, "features_meta.json")) as f:
            meta = json.load(f)
        assert meta["class_names"] == ["non_spirals", "spirals"]
        assert meta["crop_size"] == 208 and meta["source_image_shape"] == [424, 424, 3]
        assert meta["feature_source"] == config.source
        assert meta["weights"] == ("random (seed 0)" if dim == 2048 else "none (pixels)")
        assert np.load(os.path.join(wd, "labels.npy")).tolist() == [1, 1, 0, 0]
