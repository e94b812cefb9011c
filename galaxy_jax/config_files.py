"""Experiment config files by path: `configs/<name>.py[:variant]` or a short `name[:variant]`,
loaded without importing the top-level `configs` package (an installed galaxy_jax does not ship
it), with FIELD=VALUE overrides. The sweep and quick start modes build their runs' configs here.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re

from galaxy_jax.errors import UserError


def config_path(spec: str, config_dir: str | None = None) -> str:
    """The file of config `spec` ('mnist_dec', 'mnist_dec:smoke', 'configs/mnist_dec.py:smoke').

    A short name is <config_dir>/<name>.py, else ./configs/<name>.py; a path (one with '/' or
    '.py') is read as given (absolute, or from the current directory), else its file name from
    config_dir. Raises UserError naming every place looked in."""
    name = str(spec).partition(":")[0]
    if not name:
        raise UserError(f"config {spec!r}: no config name")
    if name.endswith(".py") or "/" in name or os.sep in name:
        candidates = [name]
        if config_dir and not os.path.isabs(name):
            candidates.append(os.path.join(config_dir, os.path.basename(name)))
    else:
        candidates = [os.path.join(config_dir, f"{name}.py")] if config_dir else []
        candidates.append(os.path.join("configs", f"{name}.py"))
    for path in candidates:
        path = os.path.expanduser(path)
        if os.path.isfile(path):
            return os.path.abspath(path)
    tried = ", ".join(os.path.abspath(os.path.expanduser(p)) for p in candidates)
    raise UserError(f"config {spec!r}: no such file (looked for {tried})")


def load_config(spec: str, config_dir: str | None = None):
    """'mnist_dec', 'mnist_dec:smoke' or 'configs/mnist_dec.py:smoke' -> its ConfigDict.

    Loads the file found by `config_path` by path, as main.py's --config does (ml_collections),
    never the `configs` package (an installed galaxy_jax does not ship it), and calls its
    get_config(ARG), ARG the text after ':' (None without one). A config that imports its
    siblings through their package (the repository's configs/ does) needs that package's parent
    on sys.path, as main.py's directory (the repository root) is when main.py runs."""
    path = config_path(spec, config_dir)
    arg = str(spec).partition(":")[2]
    stem = os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(f"galaxy_jax_config_{stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"config {spec!r}: {path} has no get_config(arg) function")
    return module.get_config(arg or None)


def apply_overrides(config, overrides: dict):
    """Sets dotted fields ({'dec.alpha': 2.0}) on `config` in place; unknown fields raise."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            if p not in node:
                raise UserError(f"override {key!r}: the config has no section {p!r}")
            node = node[p]
        if leaf not in node:
            raise UserError(f"override {key!r}: the config has no field {leaf!r}")
        if isinstance(node[leaf], tuple) and isinstance(value, list):
            value = tuple(value)
        try:
            node[leaf] = value
        except TypeError as e:
            raise UserError(f"override {key!r}={value!r}: {e}") from e
    return config


def parse_common(text: str) -> dict:
    """'data.path=workdirs/f,dec.maxiter=100' -> {'data.path': 'workdirs/f', 'dec.maxiter': 100}.

    Values are Python literals where they parse as one, else strings.
    """
    out = {}
    # Split at commas that start a new FIELD=, so values may hold commas: 'sae.dims=(8,4)'.
    items = re.split(r",\s*(?=[\w.]+\s*=)", str(text or ""))
    for item in filter(None, (t.strip() for t in items)):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"sweep common override {item!r}: use FIELD=VALUE")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out
