"""galaxy_jax entry point: `python main.py --config=configs/X.py --workdir=DIR`.

The config's `mode` field picks a library function `run(config, workdir)`; this file holds no
training logic. The modes are listed in README.md and by `python main.py --help`.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from galaxy_jax import io, modes, preemption
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
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    run = modes.get(FLAGS.config.mode)  # app.UsageError naming the known modes
    if not FLAGS["verbosity"].present:  # Orbax logs every save at INFO; keep the console readable
        logging.set_verbosity(logging.WARNING)
    preemption.install()
    import jax

    logging.info(
        "JAX %s, backend %s, devices %s", jax.__version__, jax.default_backend(), jax.devices()
    )
    try:
        run(FLAGS.config, FLAGS.workdir)
    except UserError as e:  # a problem the user can fix: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a full disk or a read-only workdir that no library call wrapped
        err = io.storage_error(e, e.filename or FLAGS.workdir)
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
