"""Xception weights: Keras HDF5 -> Flax conversion, download and verification, strict loading.

Sources of weights (`config.weights`):
  'imagenet'  the official Keras ImageNet file, converted once and cached as a flat .npz;
              the .h5 comes from `config.weights_path` if set, else the cache, else a download.
  'random'    a seeded, randomly initialised network (for running the pipeline without weights).
  PATH.npz    Flax variables saved by `save_npz`: a converted file, or an encoder exported by
              the `ssl` mode, whose architecture (width, middle blocks) is named in the JSON
              beside it (`architecture_path`, written by `save_encoder`). Without that JSON the
              file must hold Keras' Xception.
  PATH.h5     a Keras legacy HDF5 file in the official layout, converted on the fly.

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
        f"{dest}, or point --config.weights_path at a copy."
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
            put(f"params/{lname}/depthwise_kernel", _squeeze(dw, 3, lname), f"{lname}/depthwise")
            put(f"params/{lname}/pointwise_kernel", _squeeze(pw, (0, 1), lname), f"{lname}/pw")
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
    name = KERAS_FILES[include_top].name.replace(".h5", "_flax.npz")
    return os.path.join(cache_dir or default_cache_dir(), name)


@dataclasses.dataclass
class LoadedWeights:
    variables: dict  # {'params': ..., 'batch_stats': ...} of numpy float32 arrays
    description: str  # e.g. 'imagenet', 'random (seed 0)', or a path
    sha256: str  # variables_sha256 of the flat variables
    source_sha256: str | None  # sha256 of the file they came from, if any
    # Xception fields of the network the variables belong to (see `model_for`).
    architecture: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_ARCHITECTURE))
    info: dict = dataclasses.field(default_factory=dict)  # an exported encoder's JSON, else {}


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
    source_sha = None
    architecture, info = dict(DEFAULT_ARCHITECTURE), {}
    if weights == "random":
        variables = xception.init_variables(xception.Xception(include_top=include_top), seed)
        flat = {k: np.asarray(v) for k, v in flatten(variables).items()}
        logging.warning(
            "Xception weights are RANDOM (seed %d): features carry no ImageNet prior.", seed
        )
        description = f"random (seed {seed})"
    elif weights == "imagenet":
        description = "imagenet"
        h5 = weights_path or None
        cached = converted_path(include_top, cache_dir)
        if not h5 and os.path.exists(cached):
            flat = load_npz(cached, include_top)
            source_sha = KERAS_FILES[include_top].sha256
        else:
            if h5:
                if not os.path.exists(h5):
                    raise UserError(
                        _missing_file_message(KERAS_FILES[include_top], h5, f"{h5} does not exist")
                    )
            else:
                h5 = fetch_keras_file(include_top, cache_dir, download)
            source_sha = sha256_file(h5)
            if source_sha != KERAS_FILES[include_top].sha256:
                logging.warning(
                    "%s is not the official %s (sha256 %s); converting it anyway.",
                    h5,
                    KERAS_FILES[include_top].name,
                    source_sha,
                )
            flat = convert_keras_h5(h5, include_top)
            if source_sha == KERAS_FILES[include_top].sha256:
                save_npz(cached, flat)  # only the official file populates the shared cache
            else:
                description = f"imagenet layout, unofficial file {h5}"
    elif weights.endswith(".npz"):
        architecture, info = read_architecture(_existing(weights))
        if include_top and architecture != DEFAULT_ARCHITECTURE:
            raise UserError(f"{weights} is an encoder without a top; include_top must be False")
        flat = load_npz(weights, include_top, architecture)
        source_sha = sha256_file(weights)
        description = weights
    elif weights.endswith(".h5"):
        flat = convert_keras_h5(_existing(weights), include_top)
        source_sha = sha256_file(weights)
        description = weights
    else:
        raise UserError(
            f"config.weights={weights!r}: use 'imagenet', 'random', or a path to a .npz or .h5"
        )
    flat = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    return LoadedWeights(
        unflatten(flat), description, variables_sha256(flat), source_sha, architecture, info
    )


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
