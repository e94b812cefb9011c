"""Linear probe of SSL encoder features against pixels on the real Kaggle sample
-> bench/results/ssl_probe.json.

  python main.py --config=configs/ssl.py:sample --workdir=workdirs/ssl_sample   # first
  nice -n 5 python bench/ssl_probe.py --encoder=workdirs/ssl_sample/encoder.npz

The sample's own split is used: logistic regression fitted on `train` (1,400 images, labels
spiral / non-spiral), scored on `validation` (600). Inputs, all at the encoder's input geometry
(encoder.json: centre crop, then resize): (a) the pooled features of the SSL encoder, (b) the
pooled features of the same architecture randomly initialised (what the training added),
(c) the pixels themselves (the preprocessed RGB input, block-averaged --pixel_pool x
--pixel_pool, flattened). Each is standardised on the
train split; the inverse regularisation C is picked by 5-fold cross-validation on the train split
only. The SSL encoder never saw the labels (but did see the validation images, unlabelled, if it
was trained on the whole sample). Not run by the tests.
"""

import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.data_defaults import get_data_config  # noqa: E402
from galaxy_jax import atomic as gio  # noqa: E402
from galaxy_jax import weights  # noqa: E402
from galaxy_jax.data.from_config import make_image_source  # noqa: E402
from galaxy_jax.data.preprocess import preprocess  # noqa: E402
from galaxy_jax.models import xception  # noqa: E402
from galaxy_jax.workdir import versions  # noqa: E402

flags.DEFINE_string("encoder", "workdirs/ssl_sample/encoder.npz", "SSL encoder (.npz + .json).")
flags.DEFINE_string("folder", "", "Dataset root <split>/<class>/<id>.jpg; '' = the real sample.")
flags.DEFINE_integer("batch_size", 100, "Images per forward pass.")
flags.DEFINE_integer("pixel_pool", 3, "Block-average the pixel baseline by this factor.")
flags.DEFINE_string("out", "bench/results/ssl_probe.json", "Where the results go.")
FLAGS = flags.FLAGS

C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _images(split: str, crop: int, size: int):
    """(preprocessed images [N, size, size, 3] in [-1, 1], labels [N]) of one split."""
    d = get_data_config("folder")
    if FLAGS.folder:
        d.folder = FLAGS.folder
    d.split = split
    source = make_image_source(d)
    out = []
    for lo in range(0, len(source), FLAGS.batch_size):
        idx = np.arange(lo, min(len(source), lo + FLAGS.batch_size))
        out.append(np.asarray(preprocess(source.get(idx), crop_size=crop or None, image_size=size)))
    return np.concatenate(out), np.asarray(source.labels), list(source.class_names)


def _features(model, variables, x) -> np.ndarray:
    fn = jax.jit(lambda v, xb: model.apply(v, xb)[1]["pooled"])
    out = []
    for lo in range(0, len(x), FLAGS.batch_size):
        out.append(np.asarray(fn(variables, jnp.asarray(x[lo : lo + FLAGS.batch_size]))))
    return np.concatenate(out)


def _probe(x_train, y_train, x_test, y_test) -> dict:
    start = time.time()
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    search = GridSearchCV(pipe, {"logisticregression__C": C_GRID}, cv=5, n_jobs=1)
    search.fit(x_train, y_train)
    prob = search.predict_proba(x_test)[:, 1]
    return {
        "test_accuracy": float(((prob >= 0.5) == y_test).mean()),
        "test_roc_auc": float(roc_auc_score(y_test, prob)),
        "cv_accuracy": float(search.best_score_),
        "C": float(search.best_params_["logisticregression__C"]),
        "dim": int(x_train.shape[1]),
        "seconds": round(time.time() - start, 1),
    }


def main(argv):
    del argv
    t0 = time.time()
    loaded = weights.load_weights(FLAGS.encoder)
    info = loaded.info
    crop, size = int(info.get("crop_size", 207)), int(info.get("image_size", 72))
    x_train, y_train, classes = _images("train", crop, size)
    x_test, y_test, _ = _images("validation", crop, size)
    print(f"train {x_train.shape}, validation {x_test.shape}, classes {classes}")

    model = weights.model_for(loaded)
    random_vars = xception.init_variables(model, seed=0)
    results, inputs = {}, {}
    t = time.time()
    inputs["ssl_encoder"] = [_features(model, loaded.variables, x) for x in (x_train, x_test)]
    extract_s = time.time() - t
    inputs["random_encoder"] = [_features(model, random_vars, x) for x in (x_train, x_test)]
    # Pixels block-averaged 3x3 (72 -> 24 px, 1,728 values): the full 15,552 made the 30
    # cross-validation fits take over 15 minutes on the shared CPU.
    f = FLAGS.pixel_pool
    inputs["pixels"] = [
        x.reshape(len(x), size // f, f, size // f, f, 3).mean((2, 4)).reshape(len(x), -1)
        for x in (x_train, x_test)
    ]
    for name, (a, b) in inputs.items():
        results[name] = _probe(a, y_train, b, y_test)
        r = results[name]
        print(
            f"{name:15s} dim {r['dim']:6d}  test accuracy {r['test_accuracy']:.3f}  "
            f"ROC AUC {r['test_roc_auc']:.3f}  (cv {r['cv_accuracy']:.3f}, C {r['C']:g})"
        )
    majority = float(max(np.mean(y_test), 1 - np.mean(y_test)))
    report = {
        "encoder": os.path.abspath(FLAGS.encoder),
        "encoder_info": {k: v for k, v in info.items() if k != "config"},
        "input": {"crop_size": crop, "image_size": size, "pixel_pool": FLAGS.pixel_pool},
        "classes": classes,
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "majority_baseline": majority,
        "probes": results,
        "extract_seconds_ssl_features": round(extract_s, 1),
        "wall_seconds": round(time.time() - t0, 1),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "backend": jax.default_backend(),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
    }
    gio.write_json(FLAGS.out, report)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
