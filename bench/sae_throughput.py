"""SAE fine-tuning throughput: galaxy_jax (Flax on XLA) against Keras `model.fit` on TensorFlow.

Both train the DEC stacked autoencoder d-500-500-2000-10 end to end (ReLU except the embedding
and the reconstruction), MSE loss, Adam lr 1e-3 (epsilon 1e-8 on both), batch 256, on the same
synthetic float32 rows held in memory, shuffled. Ours is what `galaxy_jax.sae.pretrain` runs
per step, its step runner (galaxy_jax/train_loop.StepRunner, without checkpoints): numpy gather
of a BatchSampler batch, host->device copy, `sae.make_finetune_step` compiled ahead of time, the
on-device NaN guard.
Keras is `model.fit(x, x, batch_size=256, steps_per_epoch=S, shuffle=True)`, timed two ways:
whole calls (its per-call set-up included, amortised over S steps) and, from batch-end
callbacks, the steady state inside a call (set-up excluded, as in a long fit; the `_in_fit`
ratios, the conservative ones for us). Keras's default on a
CPU-only machine is `jit_compile="auto"`, which resolves to no XLA; `keras_tf_xla` is the same
model with `jit_compile=True`, reported beside it.

Blocks of S steps are interleaved (Flax block, Keras block, Keras-XLA block, Flax block, ...)
so that load from other processes hits all alike; medians over blocks are reported, and the
ratio of the medians. Compile time is the first call (trace, compile, one step) minus one
steady-state step, reported apart from steady state. A large float32 matmul is timed at the
start and the end as the machine's attainable rate in the same run.

TensorFlow runs in a separate Python (see bench/xception_throughput.py for the set-up).
Run (serialised with other timed runs on the machine by the lock):
  flock /tmp/galaxy_bench.lock python bench/sae_throughput.py --tf_python=/work/tfvenv/bin/python
Writes bench/results/sae_throughput.json. Not a test; never run by pytest.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from _common import TFWorker, loadavg, machine, matmul_gflops  # bench/_common.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

HIDDEN = (500, 500, 2000, 10)

# Keras-TF worker: builds one autoencoder per (input dim, jit), then answers one fit per request.
_TF_WORKER = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # never take accelerator memory
import numpy as np, tensorflow as tf, keras
print(json.dumps({"ready": True, "tensorflow": tf.__version__, "keras": keras.__version__}),
      flush=True)
models, data = {}, {}


def build(dims, jit):
    n = len(dims) - 1
    inp = keras.Input((dims[0],))
    h = inp
    for i in range(n):  # encoder: ReLU except the embedding
        h = keras.layers.Dense(dims[i + 1], activation="relu" if i < n - 1 else None)(h)
    for i in reversed(range(n)):  # decoder: ReLU except the reconstruction
        h = keras.layers.Dense(dims[i], activation="relu" if i > 0 else None)(h)
    m = keras.Model(inp, h)
    m.compile(optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-8), loss="mse",
              jit_compile=True if jit else "auto")
    return m


class Clock(keras.callbacks.Callback):
    # Batch end times, for the steady state inside one fit call (its set-up excluded).
    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


clock = Clock()
for line in sys.stdin:
    req = json.loads(line)
    key = (tuple(req["dims"]), req["jit"])
    if key not in models:
        x = np.random.default_rng(0).normal(size=(req["n"], req["dims"][0])).astype(np.float32)
        data[key] = x
        models[key] = build(req["dims"], req["jit"])
    m, x = models[key], data[key]
    clock.ends = []
    t = time.perf_counter()
    m.fit(x, x, batch_size=req["batch"], epochs=1, steps_per_epoch=req["steps"], shuffle=True,
          verbose=0, callbacks=[clock])
    seconds = time.perf_counter() - t
    steady = clock.ends[-1] - clock.ends[0] if len(clock.ends) > 1 else seconds
    print(json.dumps({"seconds": seconds, "steady_seconds": steady,
                      "steady_steps": max(len(clock.ends) - 1, 1),
                      "jit_compile": bool(m.jit_compile)}), flush=True)
"""


def flax_runner(dims, batch: int, n: int):
    """Returns (run(steps) -> seconds, first-call seconds, XLA's flop count of one step)."""
    import functools

    import jax
    import jax.numpy as jnp

    from galaxy_jax import sae
    from galaxy_jax.models.autoencoder import Autoencoder
    from galaxy_jax.optim import make_optimizer
    from galaxy_jax.train_loop import BatchSampler, StepRunner

    model = Autoencoder(dims)
    tx = make_optimizer(
        {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "lr_decay_every": 0, "lr_decay": 0.1}
    )
    state = sae.create_state(model, tx, jax.random.PRNGKey(0))
    x = np.random.default_rng(0).normal(size=(n, dims[0])).astype(np.float32)
    sampler = BatchSampler(n, batch, seed=0)
    plain = jax.jit(functools.partial(sae.finetune_step, model=model))
    cost = plain.lower(state, jnp.asarray(x[:batch])).compile().cost_analysis()
    flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
    step_fn = sae.make_finetune_step(model)
    # The loop of every mode (compiled on the first call), without checkpoints or history.
    runner = StepRunner("sae/finetune", None, total=2**31 - 1, start=0)
    box = {"state": state}

    def run(steps: int) -> float:
        t = time.perf_counter()
        state = box["state"]
        stop = int(state.step) + steps
        state = runner.run(state, step_fn, lambda i: (jnp.asarray(x[sampler(i)]),), stop=stop)
        runner.guard.check(stop)  # one host sync per block, as at a log step
        box["state"] = state
        return time.perf_counter() - t

    first = run(1)
    return run, first, flops


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--input_dims", default="784,2048", help="autoencoder input widths")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=40, help="steps per timed block")
    p.add_argument("--runs", type=int, default=7, help="timed blocks per framework and shape")
    p.add_argument("--n", type=int, default=16384, help="rows of synthetic data in memory")
    p.add_argument(
        "--no_keras_xla", action="store_true", help="skip the jit_compile=True Keras peer"
    )
    p.add_argument("--tf_python", default=os.environ.get("TF_PYTHON", "/work/tfvenv/bin/python"))
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "sae_throughput.json"))
    args = p.parse_args()

    import jax

    from galaxy_jax.atomic import write_json as atomic_write_json

    load_start = loadavg()
    matmul_start = matmul_gflops()
    tf = TFWorker(args.tf_python, _TF_WORKER)
    peers = {"keras_tf": False} if args.no_keras_xla else {"keras_tf": False, "keras_tf_xla": True}
    results = []
    for d in map(int, args.input_dims.split(",")):
        dims = (d, *HIDDEN)
        run_flax, first_flax, flops = flax_runner(dims, args.batch, args.n)

        def ask(jit, steps, dims=dims):
            return tf.request(dims=list(dims), jit=jit, batch=args.batch, n=args.n, steps=steps)

        run_flax(args.steps)  # warm-up block
        first = {"flax": first_flax}
        times, steady = {"flax": []}, {}  # steady: Keras seconds per step inside a fit call
        for name, jit in peers.items():
            first[name] = ask(jit, 1)["seconds"]
            ask(jit, args.steps)  # warm-up block
            times[name], steady[name] = [], []
        jit_resolved = {}
        for _ in range(args.runs):  # interleaved: all see the same background load
            times["flax"].append(run_flax(args.steps))
            for name, jit in peers.items():
                r = ask(jit, args.steps)
                times[name].append(r["seconds"])
                steady[name].append(r["steady_seconds"] / r["steady_steps"])
                jit_resolved[name] = r["jit_compile"]
        row = {
            "dims": list(dims),
            "batch": args.batch,
            "steps_per_block": args.steps,
            "runs": args.runs,
            "gflop_per_step": round(flops / 1e9, 3),
        }
        for name, ts in times.items():
            step_s = float(np.median(ts)) / args.steps
            row[name] = {
                "samples_per_s": round(args.batch / step_s, 1),
                "steps_per_s": round(1 / step_s, 2),
                "gflop_per_s": round(flops / step_s / 1e9, 1),
                "first_call_s": round(first[name], 3),
                "compile_s": round(first[name] - step_s, 3),  # first call minus one step
                "seconds_per_block": [round(t, 4) for t in ts],
            }
            if name in steady:  # excludes fit's per-call set-up, amortised in long fits
                row[name]["samples_per_s_in_fit"] = round(
                    args.batch / float(np.median(steady[name])), 1
                )
                row[name]["seconds_per_step_in_fit"] = [round(t, 5) for t in steady[name]]
            if name in jit_resolved:
                row[name]["jit_compile"] = jit_resolved[name]
        for name in peers:
            flax = row["flax"]["samples_per_s"]
            row[f"ratio_flax_over_{name}"] = round(flax / row[name]["samples_per_s"], 3)
            row[f"ratio_flax_over_{name}_in_fit"] = round(
                flax / row[name]["samples_per_s_in_fit"], 3
            )
        results.append(row)
        print(
            f"SAE {'-'.join(map(str, dims))} batch {args.batch}: Flax "
            f"{row['flax']['samples_per_s']:.0f} samples/s ({row['flax']['gflop_per_s']:.0f} "
            f"GFLOP/s, compile {row['flax']['compile_s']:.2f} s), "
            + ", ".join(
                f"{name} {row[name]['samples_per_s']:.0f} samples/s per fit call, "
                f"{row[name]['samples_per_s_in_fit']:.0f} inside it (compile "
                f"{row[name]['compile_s']:.2f} s), ratio {row[f'ratio_flax_over_{name}']:.2f} / "
                f"{row[f'ratio_flax_over_{name}_in_fit']:.2f}"
                for name in peers
            )
            + f" (median of {args.runs} blocks of {args.steps} steps)",
            flush=True,
        )
    tf.close()
    matmul_end = matmul_gflops()
    atomic_write_json(
        args.out,
        {
            "results": results,
            "matmul_2048_gflop_per_s": {
                "start": round(matmul_start, 1),
                "end": round(matmul_end, 1),
            },
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
