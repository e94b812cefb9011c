"""Xception feature-extraction throughput: galaxy_jax (Flax on XLA) against Keras on TensorFlow.

Both compute the 2048-d average-pooled features of a float32 batch already in memory, in
inference mode, from the same random weights' architecture. The runs are interleaved in one
invocation (Flax batch, Keras batch, Flax batch, ...) so that load from other processes hits
both alike; medians are reported, and the ratio of the medians.

TensorFlow runs in a separate Python (a worker subprocess speaking JSON over stdin/stdout), so
it never shares a process, or a virtual environment, with JAX. Set it up once:
  python -m venv /work/tfvenv && /work/tfvenv/bin/pip install tensorflow-cpu h5py

Run (serialised with other timed runs on the machine by the lock):
  flock /tmp/galaxy_bench.lock python bench/xception_throughput.py \
      --tf_python=/work/tfvenv/bin/python
Writes bench/results/xception_throughput.json. Like `extract` by default, it splits the CPU into
one XLA device per core and shards the batch over them (`--host_devices=1`: one device on all
cores, bench/results/xception_throughput_1dev.json with --out). The fraction-of-peak columns
divide by XLA's own float32 matmul rate on the machine, measured in the same run (the best of
15 2048x2048 products per device). It also records the GB/s of an elementwise pass over 8 and
64 MiB arrays (in cache, and beyond it), and Flax runs each batch in `extract`'s CPU steps
(`features.cpu_micro_batches`; `--micro_batch N` for N images per step).
Not a test; never run by pytest.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from _common import TFWorker, machine, matmul_gflops, stream_gbps  # bench/_common.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Keras-TF worker: builds Xception once per input size, then times one batch per request.
_TF_WORKER = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # never take accelerator memory
import numpy as np, tensorflow as tf
models, inputs = {}, {}
print(json.dumps({"ready": True, "tensorflow": tf.__version__, "keras": tf.keras.__version__}),
      flush=True)
for line in sys.stdin:
    req = json.loads(line)
    key = (req["size"], req["batch"])
    if key not in models:
        m = tf.keras.applications.Xception(weights=None, include_top=False, pooling="avg",
                                           input_shape=(req["size"], req["size"], 3))
        models[key] = tf.function(lambda x, m=m: m(x, training=False))
        inputs[key] = tf.constant(np.random.default_rng(0).uniform(
            -1, 1, (req["batch"], req["size"], req["size"], 3)).astype(np.float32))
        models[key](inputs[key]).numpy()  # trace and warm up
    t = time.perf_counter()
    models[key](inputs[key]).numpy()
    print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)
"""


def flax_runner(size: int, batch: int, micro_batch):
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from galaxy_jax.features import cpu_micro_batches, pooled_features
    from galaxy_jax.models import xception
    from galaxy_jax.parallel import mesh as data_mesh

    model = xception.Xception()
    if isinstance(micro_batch, int) and micro_batch < 0:  # extract's CPU default
        micro_batch = cpu_micro_batches(model, size)
    mesh = data_mesh()  # every local device (one per core with --host_devices)
    variables = jax.device_put(xception.init_variables(model), NamedSharding(mesh, P()))
    # What `extract` runs per batch (minus uint8 decoding and resizing, which Keras lacks too).
    fn = jax.jit(
        lambda v, x: pooled_features(
            model, v, x, micro_batch=micro_batch, num_shards=mesh.devices.size
        ),
        out_shardings=NamedSharding(mesh, P("data")),
    )
    x = jax.device_put(
        np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32),
        NamedSharding(mesh, P("data")),
    )
    # XLA's count for one image of the plain graph (a lax.map body would be counted once).
    one = jax.jit(lambda v, x: model.apply(v, x)[1]["pooled"])
    flops = one.lower(variables, jnp.zeros((1, size, size, 3))).cost_analysis()["flops"]
    fn(variables, x).block_until_ready()  # compile and warm up

    def run() -> float:
        t = time.perf_counter()
        fn(variables, x).block_until_ready()
        return time.perf_counter() - t

    return run, flops, micro_batch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="299,128")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--runs", type=int, default=5, help="timed batches per framework and size")
    p.add_argument(
        "--micro_batch",
        type=int,
        default=-1,
        help="Flax images per device per network pass; -1: extract's CPU default\n"
        "(features.cpu_micro_batches: fewer for the stem and blocks 2-3 than for the rest)",
    )
    p.add_argument(
        "--peak_gflops",
        type=float,
        default=0.0,
        help="the machine's float32 matmul peak, for the fraction-of-peak column; 0 measures it\n"
        "(XLA's 2048x2048 product per device, all devices at once)",
    )
    p.add_argument(
        "--host_devices",
        type=int,
        default=-1,
        help="split the CPU into this many XLA devices, the batch sharded over them, as\n"
        "`extract`'s config.host_devices does (-1, its default: one per core; 1: one device)",
    )
    p.add_argument("--tf_python", default=os.environ.get("TF_PYTHON", "/work/tfvenv/bin/python"))
    p.add_argument(
        "--out", default=os.path.join(REPO, "bench", "results", "xception_throughput.json")
    )
    args = p.parse_args()
    import jax

    from galaxy_jax.parallel import use_host_devices

    use_host_devices(args.host_devices)

    from galaxy_jax.atomic import write_json as atomic_write_json

    peak = args.peak_gflops or matmul_gflops(runs=15, statistic=min)  # best run: a peak
    print(f"float32 matmul: {peak:.0f} GFLOP/s over {jax.local_device_count()} device(s)")
    # Why small steps pay on a CPU: memory-bound operations on arrays beyond the cache.
    memory = {f"{mib}_mib": round(stream_gbps(mib), 1) for mib in (8, 64)}
    print(f"elementwise read+write, GB/s by array size (one device): {memory}")
    tf = TFWorker(args.tf_python, _TF_WORKER)
    results = []
    for size in map(int, args.sizes.split(",")):
        run_flax, flops, micro_batch = flax_runner(size, args.batch, args.micro_batch)
        tf.request(size=size, batch=args.batch)  # build and warm up outside the timed loop
        t_flax, t_tf = [], []
        for _ in range(args.runs):  # interleaved: both see the same background load
            t_flax.append(run_flax())
            t_tf.append(tf.request(size=size, batch=args.batch)["seconds"])
        row = {
            "size": size,
            "batch": args.batch,
            "flax_micro_batch": micro_batch,
            "flax_devices": jax.local_device_count(),
            "runs": args.runs,
            "gflop_per_image": round(flops / 1e9, 3),
        }
        for name, ts in (("flax", t_flax), ("keras_tf", t_tf)):
            ips = args.batch / float(np.median(ts))
            row[name] = {
                "images_per_s": round(ips, 2),
                "fraction_of_peak": round(ips * flops / 1e9 / peak, 3),
                "seconds_per_batch": [round(t, 4) for t in ts],
            }
        row["ratio_flax_over_keras_tf"] = round(
            row["flax"]["images_per_s"] / row["keras_tf"]["images_per_s"], 3
        )
        results.append(row)
        print(
            f"{size}x{size} batch {args.batch}: Flax ({row['flax_devices']} device(s)) "
            f"{row['flax']['images_per_s']:.2f} img/s "
            f"({row['flax']['fraction_of_peak']:.0%} of peak), Keras-TF "
            f"{row['keras_tf']['images_per_s']:.2f} img/s "
            f"({row['keras_tf']['fraction_of_peak']:.0%}), ratio "
            f"{row['ratio_flax_over_keras_tf']:.2f} (median of {args.runs})",
            flush=True,
        )
    tf.close()
    atomic_write_json(
        args.out,
        {
            "results": results,
            "peak_gflops": round(peak, 1),
            "peak_gflops_measured": not args.peak_gflops,
            "elementwise_gbps": memory,
            "machine": machine(),
            "versions": {"jax": jax.__version__, **tf.info},
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "command": " ".join(sys.argv),
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )
    print("wrote", args.out)


if __name__ == "__main__":
    main()
