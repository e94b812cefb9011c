"""DEC training throughput: galaxy_jax's `dec.make_train_step` against Keras `train_on_batch`.

Both run the DEC iteration of the paper: encoder d-500-500-2000-10 (ReLU except the
embedding), a Student-t soft assignment to K=10 trainable centres (alpha 1), KL(P||Q) against a
fixed target P, SGD lr 0.01 momentum 0.9, batch 256, on the same synthetic float32 rows and
target rows held in memory. Ours is what `galaxy_jax.dec.train` runs per step, its step runner
(galaxy_jax/train_loop.StepRunner, without checkpoints): numpy gather of x[idx] and p[idx],
host->device copies, the step compiled ahead of time, the on-device NaN guard (no host sync). Keras
is the public DEC-keras recipe rewritten here: Sequential-style encoder + a clustering layer
computing q_ij = (1 + |z_i - mu_j|^2/alpha)^-((alpha+1)/2) normalised over j, compiled with
loss 'kld', one `model.train_on_batch(x[idx], p[idx])` per iteration (which returns the loss to
the host, as DEC-keras uses it). Keras's default on a CPU-only machine is no XLA
(`jit_compile="auto"`); `keras_tf_xla` is the same model compiled with `jit_compile=True`.

Blocks of S iterations are interleaved (Flax, Keras, Keras-XLA, Flax, ...) so that load from
other processes hits all alike; medians over blocks are reported, and ratios of the medians.
Compile time is the first iteration minus one steady-state iteration.

TensorFlow runs in a separate Python (see bench/xception_throughput.py for the set-up).
Run (serialised with other timed runs on the machine by the lock):
  flock /tmp/galaxy_bench.lock python bench/dec_throughput.py --tf_python=/work/tfvenv/bin/python
Writes bench/results/dec_throughput.json. Not a test; never run by pytest.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from _common import TFWorker, loadavg, machine  # bench/_common.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

HIDDEN = (500, 500, 2000, 10)


def synthetic(n: int, d: int, k: int):
    """x [n, d] float32 and a valid target p [n, k] (rows sum to 1), the same in both workers."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    p = rng.dirichlet(np.full(k, 0.3), size=n).astype(np.float32)
    return x, p


# Keras-TF worker: one DEC model per (dims, K, jit); each request runs S train_on_batch calls.
_TF_WORKER = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # never take accelerator memory
import numpy as np, tensorflow as tf, keras
print(json.dumps({"ready": True, "tensorflow": tf.__version__, "keras": keras.__version__}),
      flush=True)


class StudentT(keras.layers.Layer):
    # Soft assignment of embeddings [B, D] to trainable centres [K, D].
    def __init__(self, k, alpha=1.0, **kw):
        super().__init__(**kw)
        self.k, self.alpha = k, alpha

    def build(self, input_shape):
        self.centres = self.add_weight(shape=(self.k, input_shape[-1]),
                                       initializer="glorot_uniform", name="centres")

    def call(self, z):
        d2 = keras.ops.sum(keras.ops.square(z[:, None, :] - self.centres[None]), axis=-1)
        q = keras.ops.power(1.0 + d2 / self.alpha, -(self.alpha + 1.0) / 2.0)
        return q / keras.ops.sum(q, axis=-1, keepdims=True)


def build(dims, k, jit):
    n = len(dims) - 1
    inp = keras.Input((dims[0],))
    h = inp
    for i in range(n):  # encoder: ReLU except the embedding
        h = keras.layers.Dense(dims[i + 1], activation="relu" if i < n - 1 else None)(h)
    m = keras.Model(inp, StudentT(k)(h))
    m.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="kld",
              jit_compile=True if jit else "auto")
    return m


# @synthetic: the parent puts the source of its synthetic() here, so both draw the same data
models, data, cursor = {}, {}, {}
for line in sys.stdin:
    req = json.loads(line)
    key = (tuple(req["dims"]), req["k"], req["jit"])
    if key not in models:
        data[key] = synthetic(req["n"], req["dims"][0], req["k"])
        models[key] = build(req["dims"], req["k"], req["jit"])
        cursor[key] = 0
    m, (x, p) = models[key], data[key]
    n, b = len(x), req["batch"]
    t = time.perf_counter()
    for _ in range(req["steps"]):  # DEC-keras: one shuffled-order batch per train_on_batch
        i = cursor[key]
        if i % (n // b) == 0:
            order = np.random.default_rng(i).permutation(n)
            data[key + ("order",)] = order
        idx = data[key + ("order",)][(i % (n // b)) * b:(i % (n // b) + 1) * b]
        m.train_on_batch(x[idx], p[idx])
        cursor[key] = i + 1
    print(json.dumps({"seconds": time.perf_counter() - t, "jit_compile": bool(m.jit_compile)}),
          flush=True)
"""


def _worker_source() -> str:
    """_TF_WORKER with `synthetic` inlined, so both sides train on the same data."""
    import inspect

    return _TF_WORKER.replace("# @synthetic", inspect.getsource(synthetic) + "\n#")


def flax_runner(dims, k: int, batch: int, n: int):
    """Returns (run(steps) -> seconds, first-call seconds, XLA's flop count of one iteration)."""
    import jax
    import jax.numpy as jnp

    from galaxy_jax import dec
    from galaxy_jax.models.autoencoder import Autoencoder
    from galaxy_jax.optim import make_optimizer
    from galaxy_jax.train_loop import BatchSampler, StepRunner

    model = Autoencoder(dims)
    x, p = synthetic(n, dims[0], k)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, dims[0])))["params"]
    centres = jax.random.normal(jax.random.PRNGKey(1), (k, dims[-1]))
    state = dec.DECState.create(
        apply_fn=model.apply,
        tx=make_optimizer(
            {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "lr_decay_every": 0, "lr_decay": 0.1}
        ),
        params={"ae": params, "centres": centres},
    )
    encode = lambda v, xb: model.apply(v, xb, method=Autoencoder.encode)  # noqa: E731
    step_fn = dec.make_train_step(encode, 1.0)
    plain = dec.make_train_step(encode, 1.0)  # a second jit: its lowering leaves step_fn cold
    cost = plain.lower(state, jnp.asarray(x[:batch]), jnp.asarray(p[:batch])).compile()
    cost = cost.cost_analysis()
    flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
    sampler = BatchSampler(n, batch, seed=999)
    runner = StepRunner("dec", None, total=2**31 - 1, start=0)  # dec.train's loop, no checkpoints
    box = {"state": state}

    def batch_fn(i):
        idx = sampler(i)
        return jnp.asarray(x[idx]), jnp.asarray(p[idx])

    def run(steps: int) -> float:
        t = time.perf_counter()
        state = box["state"]
        stop = int(state.step) + steps
        state = runner.run(state, step_fn, batch_fn, stop=stop)
        runner.guard.check(stop)  # one host sync per block, as at a target update
        box["state"] = state
        return time.perf_counter() - t

    first = run(1)
    return run, first, flops


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--input_dims", default="784,2048", help="encoder input widths")
    p.add_argument("--k", type=int, default=10, help="clusters")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=50, help="iterations per timed block")
    p.add_argument("--runs", type=int, default=7, help="timed blocks per framework and shape")
    p.add_argument("--n", type=int, default=16384, help="rows of synthetic data in memory")
    p.add_argument(
        "--no_keras_xla", action="store_true", help="skip the jit_compile=True Keras peer"
    )
    p.add_argument("--tf_python", default=os.environ.get("TF_PYTHON", "/work/tfvenv/bin/python"))
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "dec_throughput.json"))
    args = p.parse_args()

    import jax

    from galaxy_jax.atomic import write_json as atomic_write_json

    load_start = loadavg()
    tf = TFWorker(args.tf_python, _worker_source())
    peers = {"keras_tf": False} if args.no_keras_xla else {"keras_tf": False, "keras_tf_xla": True}
    results = []
    for d in map(int, args.input_dims.split(",")):
        dims = (d, *HIDDEN)
        run_flax, first_flax, flops = flax_runner(dims, args.k, args.batch, args.n)

        def ask(jit, steps, dims=dims):
            return tf.request(
                dims=list(dims), k=args.k, jit=jit, batch=args.batch, n=args.n, steps=steps
            )

        run_flax(args.steps)  # warm-up block
        first = {"flax": first_flax}
        times = {"flax": []}
        for name, jit in peers.items():
            first[name] = ask(jit, 1)["seconds"]
            ask(jit, args.steps)  # warm-up block
            times[name] = []
        jit_resolved = {}
        for _ in range(args.runs):  # interleaved: all see the same background load
            times["flax"].append(run_flax(args.steps))
            for name, jit in peers.items():
                r = ask(jit, args.steps)
                times[name].append(r["seconds"])
                jit_resolved[name] = r["jit_compile"]
        row = {
            "encoder_dims": list(dims),
            "n_clusters": args.k,
            "batch": args.batch,
            "steps_per_block": args.steps,
            "runs": args.runs,
            "gflop_per_iteration": round(flops / 1e9, 3),
        }
        for name, ts in times.items():
            step_s = float(np.median(ts)) / args.steps
            row[name] = {
                "iterations_per_s": round(1 / step_s, 2),
                "gflop_per_s": round(flops / step_s / 1e9, 1),
                "first_call_s": round(first[name], 3),
                "compile_s": round(first[name] - step_s, 3),  # first call minus one iteration
                "seconds_per_block": [round(t, 4) for t in ts],
            }
            if name in jit_resolved:
                row[name]["jit_compile"] = jit_resolved[name]
        for name in peers:
            row[f"ratio_flax_over_{name}"] = round(
                row["flax"]["iterations_per_s"] / row[name]["iterations_per_s"], 3
            )
        results.append(row)
        print(
            f"DEC encoder {'-'.join(map(str, dims))} K={args.k} batch {args.batch}: Flax "
            f"{row['flax']['iterations_per_s']:.1f} it/s ({row['flax']['gflop_per_s']:.0f} "
            f"GFLOP/s, compile {row['flax']['compile_s']:.2f} s), "
            + ", ".join(
                f"{name} {row[name]['iterations_per_s']:.1f} it/s (compile "
                f"{row[name]['compile_s']:.2f} s), ratio {row[f'ratio_flax_over_{name}']:.2f}"
                for name in peers
            )
            + f" (median of {args.runs} blocks of {args.steps} iterations)",
            flush=True,
        )
    tf.close()
    atomic_write_json(
        args.out,
        {
            "results": results,
            "loadavg_1_5_15": {"start": load_start, "end": loadavg()},
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
