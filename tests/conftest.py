import collections
import os
import subprocess
import sys
import time

# Tests import configs/ as a package from the repo root, like main.py does.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


def start_main(args, log_prefix, env=None):
    """`python main.py ARGS` in a subprocess from the repo root; stderr goes to a file beside
    log_prefix (a full pipe would stall the child). Read it with `stderr_of`."""
    os.makedirs(os.path.dirname(log_prefix), exist_ok=True)
    log = open(f"{log_prefix}.{time.time_ns()}.log", "w+")
    proc = subprocess.Popen(
        [sys.executable, "main.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
    )
    proc.log = log
    return proc


def stderr_of(proc, timeout=300):
    """Waits for a `start_main` process and returns its stderr."""
    proc.wait(timeout=timeout)
    proc.log.seek(0)
    text = proc.log.read()
    proc.log.close()
    return text


class CountCompiles:
    """Stands in for train_loop.compile_step (monkeypatched), counting the compilations of each
    phase: `counts[phase]`."""

    def __init__(self):
        from galaxy_jax import train_loop

        self.counts = collections.Counter()
        self._real = train_loop.compile_step

    def __call__(self, jitted, wall, phase, *args):
        self.counts[phase] += 1
        return self._real(jitted, wall, phase, *args)
