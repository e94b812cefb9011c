"""galaxy_jax entry point: `python main.py --config=configs/X.py --workdir=DIR`.

The config's `mode` field picks a library function `run(config, workdir)`; this file holds no
training logic. The modes are listed in README.md and by `python main.py --help`.

Several processes (hosts): start the same command once per process with
--coordinator_address=HOST:PORT --num_processes=N --process_id=I (or --distributed on a cluster
that JAX detects itself: Cloud TPU, SLURM, ...). Every process sees every device; see
docs/scale.md.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from galaxy_jax import atomic, modes, parallel, preemption
from galaxy_jax.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config, e.g. configs/mnist_dec.py; append :ARG for a variant (e.g. :smoke). "
    f"Its `mode` field picks one of: {', '.join(sorted(modes.MODES))}. "
    "Override fields with --config.FIELD=VALUE.",
    lock_config=True,
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, results.json and outputs.")
flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-process runs: HOST:PORT of process 0 (jax.distributed.initialize). With it, also "
    "--num_processes and --process_id.",
)
flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes in all.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0..N-1.")
flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize() with no arguments: the cluster (Cloud TPU, SLURM, "
    "Open MPI, ...) tells JAX the coordinator, the process count and this process's index.",
)
flags.mark_flags_as_required(["config", "workdir"])


def _init_distributed():
    import jax

    if FLAGS.coordinator_address:
        if FLAGS.num_processes is None or FLAGS.process_id is None:
            raise app.UsageError("--coordinator_address needs --num_processes and --process_id")
        # CPU processes exchange gradients through gloo (accelerators use their own fabric).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    elif FLAGS.distributed:
        jax.distributed.initialize()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run = modes.get(FLAGS.config.mode)  # app.UsageError naming the known modes
    if not FLAGS["verbosity"].present:  # Orbax logs every save at INFO; keep the console readable
        logging.set_verbosity(logging.WARNING)
    preemption.install()
    try:
        parallel.use_host_devices(FLAGS.config.host_devices)  # CPU only; before JAX starts
        _init_distributed()
        import jax

        logging.info(
            "JAX %s, backend %s, process %d of %d, devices %s",
            jax.__version__,
            jax.default_backend(),
            jax.process_index(),
            jax.process_count(),
            jax.devices(),
        )
        run(FLAGS.config, FLAGS.workdir)
    except UserError as e:  # a problem the user can fix: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full disk or a read-only workdir that no library call wrapped
        err = atomic.storage_error(e, e.filename or FLAGS.workdir)
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except preemption.Preempted as e:
        print(f"preempted: {e}. Re-run the same command to continue.", file=sys.stderr)
        sys.exit(preemption.EXIT_CODE)
    except KeyboardInterrupt:  # a second Ctrl-C: no checkpoint now, like kill -9
        print(
            "interrupted: re-run the same command to resume from the last checkpoint.",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
