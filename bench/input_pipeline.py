"""Decoded images/s of the input pipeline on this machine -> bench/results/input_pipeline.json.

  flock /tmp/galaxy_bench.lock python bench/input_pipeline.py [--n=1000] [--repeats=5]

Reads the real Kaggle sample (../shared/data, 424x424 JPEGs) as a folder dataset; falls back to
synthetic galaxies written as JPEGs when it is absent. Reports the median of --repeats runs
(steady state, after the first batch) for: decode only in this process, and grain with 0, 1 and
cpu_count workers doing decode + crop 207 + resize 299 (the extraction setting); worker start-up
time to the first batch is reported apart. Not run by the tests.
"""

import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.data_defaults import KAGGLE_SAMPLE, get_data_config  # noqa: E402
from galaxy_jax import atomic as gio  # noqa: E402
from galaxy_jax.data import pipeline  # noqa: E402
from galaxy_jax.data.from_config import make_image_source  # noqa: E402
from galaxy_jax.data.synthetic import make_synthetic_source  # noqa: E402

flags.DEFINE_integer("n", 1000, "Images per timed run.")
flags.DEFINE_integer("repeats", 5, "Timed runs per setting; the median is reported.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
FLAGS = flags.FLAGS


def _source(n):
    if os.path.isdir(KAGGLE_SAMPLE):
        cfg = get_data_config("folder")
        return make_image_source(cfg), "real Kaggle sample (424x424 JPEG)"
    root = tempfile.mkdtemp()
    synth = make_synthetic_source(n, 424, 0)
    for i in range(n):
        path = os.path.join(root, "all", "x", f"{i}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(synth.get([i])[0]).save(path, quality=90)
    cfg = get_data_config("folder")
    cfg.folder = root
    return make_image_source(cfg), "synthetic galaxies saved as 424x424 JPEG"


def _rate(fn, n, repeats):
    """fn(n) -> (images timed, seconds); the median over `repeats` runs after a warm-up."""
    fn(min(n, 128))  # warm-up: page cache, imports
    runs = [fn(n) for _ in range(repeats)]
    rates = [k / t for k, t in runs]
    return {
        "images_per_s_median": statistics.median(rates),
        "images_per_s": [round(r, 1) for r in rates],
    }


def main(argv):
    del argv
    source, what = _source(FLAGS.n)
    n = min(FLAGS.n, len(source))

    def decode_only(k):
        t = time.perf_counter()
        for start in range(0, k, FLAGS.batch_size):
            source.get(np.arange(start, min(k, start + FLAGS.batch_size)))
        return k, time.perf_counter() - t

    startup = {}

    def grain_run(workers):
        def run(k):
            sub = type(source)(
                source.ids[:k],
                source.labels[:k],
                source.class_names,
                source.get,
                source.image_shape,
            )
            t = time.perf_counter()
            it = pipeline.batches(
                sub, FLAGS.batch_size, crop_size=207, image_size=299, worker_count=workers
            )
            first = len(next(it)["index"])  # worker start-up is paid once per run, not per image
            t_first = time.perf_counter()
            startup.setdefault(workers, []).append(round(t_first - t, 3))
            rest = sum(len(b["index"]) for b in it)
            return rest, time.perf_counter() - t_first if rest else (first, t_first - t)

        return run

    results = {"decode_in_process": _rate(decode_only, n, FLAGS.repeats)}
    for workers in sorted({0, 1, os.cpu_count() or 1}):
        results[f"grain_{workers}_workers_crop207_resize299"] = _rate(
            grain_run(workers), n, FLAGS.repeats
        )
    synth = make_synthetic_source(64, 424, 0)

    def render(k):
        t = time.perf_counter()
        synth.get(np.arange(k))
        return k, time.perf_counter() - t

    results["synthetic_render_424"] = _rate(render, 64, 3)
    results["grain_startup_seconds_to_first_batch"] = startup
    out = {
        "what": what,
        "n_per_run": n,
        "repeats": FLAGS.repeats,
        "batch_size": FLAGS.batch_size,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "results": results,
    }
    path = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "input_pipeline.json"
    )
    gio.write_json(path, out)
    for k, v in results.items():
        if "images_per_s_median" in v:
            print(f"{k:<45} {v['images_per_s_median']:8.1f} images/s  {v['images_per_s']}")
    print("grain start-up to first batch (s):", startup)
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
