"""Configs declare every field their mode reads, each mode has one validator, and sweeps and the
quick start load config files by path (never the `configs` package, which an installed
galaxy_jax does not ship)."""

import importlib
import os

import pytest
from conftest import ROOT
from test_main import CONFIGS

from configs import dec_base, extract, quickstart
from configs import sweep as sweep_config
from galaxy_jax import config_files, modes, validate
from galaxy_jax.errors import UserError
from galaxy_jax.modes import sweep

CLUSTERING = ("dec", "kmeans", "pretrain")


def _get(name, arg):
    return importlib.import_module(f"configs.{name}").get_config(arg)


def test_every_mode_has_one_validator():
    assert set(validate.VALIDATORS) == set(modes.MODES)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_smoke_config_passes_its_validator(name):
    config = _get(name, "smoke")
    validate.for_mode(config)
    assert config.host_devices in (-1, 1)  # declared everywhere: main.py reads it first


@pytest.mark.parametrize("name", CONFIGS)
def test_clustering_configs_declare_every_dec_and_sae_field(name):
    for arg in (None, "smoke"):
        c = _get(name, arg)
        if c.mode not in CLUSTERING:
            continue
        assert set(c.dec) == set(dec_base.dec_section()), name
        assert set(c.sae) == set(dec_base.sae_section()), name
        assert c.dec.init_sample == 100_000 and c.dec.init == "kmeans"


def test_extract_source_is_the_feature_source():
    c = extract.get_config("pixels_smoke")
    assert c.source == "pixels" and "model" not in c
    c.source = "resnet"
    with pytest.raises(UserError, match="config.source: must be one of"):
        validate.for_mode(c)
    c = quickstart.get_config("smoke")
    c.extract.data.image_size = 32
    with pytest.raises(UserError, match="config.extract.data.image_size: must be at least 71"):
        validate.for_mode(c)


def test_validators_name_the_field():
    c = sweep_config.get_config("smoke")
    c.variants = ({"name": "a"}, {"name": "a"})
    with pytest.raises(UserError, match="config.variants: each sweep variant needs a unique"):
        validate.for_mode(c)
    c = _get("mnist_dec", "smoke")
    c.dec.init_sample = -1
    with pytest.raises(UserError, match="config.dec.init_sample"):
        validate.for_mode(c)
    c = _get("supervised_cnn", "smoke")
    c.optim.schedule = "step"
    with pytest.raises(UserError, match="config.optim.schedule"):
        validate.for_mode(c)
    c.host_devices = 0
    with pytest.raises(UserError, match="config.host_devices: must be -1"):
        validate.for_mode(c)


def test_load_config_by_short_name_and_by_path_from_any_directory(tmp_path, monkeypatch):
    configs_dir = os.path.join(ROOT, "configs")
    want = _get("mnist_dec", "smoke").to_dict()
    monkeypatch.chdir(tmp_path)  # no configs/ here
    for spec in (
        "mnist_dec:smoke",
        "configs/mnist_dec.py:smoke",
        f"{configs_dir}/mnist_dec.py:smoke",
    ):
        assert config_files.load_config(spec, configs_dir).to_dict() == want, spec
    assert config_files.load_config("mnist_dec", configs_dir).sae.finetune_steps == 8000
    with pytest.raises(
        UserError, match=r"config 'nope:smoke': no such file \(looked for .*nope.py"
    ):
        config_files.load_config("nope:smoke", configs_dir)
    with pytest.raises(UserError, match="no such file"):
        config_files.load_config("mnist_dec:smoke")  # neither a config_dir nor ./configs/
    monkeypatch.chdir(ROOT)  # ./configs/ of the current directory, as before
    assert config_files.load_config("mnist_dec:smoke").to_dict() == want


def test_a_sweep_beside_its_own_configs(tmp_path, monkeypatch):
    """A sweep in a directory of its own finds its base there, by short name."""
    (tmp_path / "tiny.py").write_text(
        "from configs import mnist_dec\n\n\n"
        "def get_config(arg=None):\n"
        "    c = mnist_dec.get_config('smoke')\n"
        "    c.dec.maxiter = 3 if arg == 'three' else 5\n"
        "    return c\n"
    )
    c = sweep_config.get_config("smoke")
    assert c.config_dir == os.path.join(ROOT, "configs")
    c.config_dir = str(tmp_path)
    c.base = "tiny:three"
    monkeypatch.chdir(tmp_path)
    runs = sweep.run_configs(c)
    assert [(name, seed, r.dec.maxiter) for name, seed, _, _, r in runs] == [
        ("kmeans", 0, 3),
        ("kmeans", 1, 3),
        ("dec", 0, 3),
        ("dec", 1, 3),
    ]


def test_the_library_never_imports_the_configs_package():
    for dirpath, _, files in os.walk(os.path.join(ROOT, "galaxy_jax")):
        for f in (f for f in files if f.endswith(".py")):
            text = open(os.path.join(dirpath, f)).read()
            for bad in ("from configs", "import configs", '"configs.', "'configs."):
                assert bad not in text, (f, bad)
