"""main.py as a user meets it: --help, an unknown mode, a user error, and every config resolving."""

import glob
import importlib
import os
import subprocess
import sys

import pytest
from conftest import ROOT

CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if "def get_config" in open(p).read()
)


def _main(*args):
    return subprocess.run(
        [sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_help_lists_modes():
    r = _main("--help")  # absl exits 1 after printing help
    assert "--config" in r.stdout and "--workdir" in r.stdout and "dec" in r.stdout


def test_unknown_mode_is_a_usage_error(tmp_path):
    r = _main("--config=configs/mnist_dec.py:smoke", "--config.mode=nope", f"--workdir={tmp_path}")
    assert r.returncode != 0
    assert "Unknown mode 'nope'" in r.stderr and "dec" in r.stderr


def test_user_error_is_one_line_without_traceback(tmp_path):
    r = _main(
        "--config=configs/mnist_kmeans.py",
        "--config.data.path=/no/such/mnist.npz",
        f"--workdir={tmp_path}",
    )
    assert r.returncode == 2
    assert "error: MNIST file not found: /no/such/mnist.npz" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_resolves_with_a_run_command_and_a_smoke_variant(name):
    from galaxy_jax import modes

    module = importlib.import_module(f"configs.{name}")
    assert "python main.py --config=configs/" in module.__doc__, "docstring must give the command"
    for arg in (None, "smoke"):
        config = module.get_config(arg)
        assert config.mode in modes.MODES
        modes.get(config.mode)  # the mode's module imports
