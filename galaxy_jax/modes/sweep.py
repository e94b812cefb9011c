"""Mode `sweep`: every (variant, seed) of an experiment, in this process, resumable.

The sweep config names a base config (`base`, e.g. 'galaxy_dec' or 'mnist_dec:smoke': a config
file of `config_dir` plus its optional get_config argument; see `load_config`), a list of
`variants` and the `seeds`. Each variant is a dict: `name`, optionally `config` (another base for
this variant only, so a sweep can set k-means beside DEC) and dotted overrides such as
{'dec.alpha': 2.0}. The run of (variant, seed) has the workdir <workdir>/<variant>/seed<N> and
config.seed = N.

Resuming: a run whose results.json exists is done and is not run again (even if the sweep
config has changed since: use a new workdir for a changed sweep); a run that was cut
short resumes from its own checkpoints (the modes resume themselves). After each run one JSON
line goes to <workdir>/sweep.jsonl, written with a single O_APPEND write so that concurrent or
interrupted sweeps never interleave half lines; a done run with no line (killed between the two
writes) gets its line on the next pass.

Preemption: SIGTERM/SIGINT during a run stops that run at its next step boundary with a
checkpoint (each mode's own guarantee); its `preemption.Preempted` propagates, naming the run, so
main.py exits 75, and the re-run skips the done runs and resumes that one. A stop requested
between runs (or during a run with no step loop, such as k-means) stops before the next run.
"""

from __future__ import annotations

import json
import os
import time

from absl import logging

from galaxy_jax import atomic, modes, preemption, validate
from galaxy_jax.config_files import apply_overrides, load_config, parse_common
from galaxy_jax.errors import UserError
from galaxy_jax.summary import SWEEP_FILE
from galaxy_jax.workdir import prepare_workdir


def run_configs(sweep_config):
    """[(variant name, seed, base, overrides, config)] of the sweep, in run order (variant-major).

    Overrides: sweep_config.common (for every variant) and then the variant's own.
    """
    out, names = [], set()
    common = parse_common(sweep_config.common)
    for v in sweep_config.variants:
        v = {**common, **dict(v)}
        name = v.pop("name", None)
        if not name or "/" in name or name in names:
            raise UserError(f"each sweep variant needs a unique name without '/': {name!r}")
        names.add(name)
        base = v.pop("config", sweep_config.base)
        for seed in sweep_config.seeds:
            config = apply_overrides(load_config(base, sweep_config.config_dir), v)
            if config.mode == "sweep":
                raise UserError(f"variant {name!r}: a sweep cannot run a sweep")
            config.seed = int(seed)
            out.append((name, int(seed), base, v, config))
    return out


def _done_lines(path: str) -> set:
    done = set()
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                    done.add((r["variant"], int(r["seed"])))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line: that run gets a fresh one
    return done


def append_line(path: str, record: dict) -> None:
    """One JSON line, appended with a single write (atomic for lines this short)."""
    data = (json.dumps(atomic._jsonable(record), sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def run_sweep(config, workdir: str) -> list[dict]:
    """Runs every (variant, seed) not yet done; returns the records of this sweep."""
    validate.sweep(config)
    runs = run_configs(config)  # every config resolves before anything runs
    workdir = prepare_workdir(workdir)
    path = os.path.join(workdir, SWEEP_FILE)
    done = _done_lines(path)
    records = []
    for k, (name, seed, base, overrides, run_config) in enumerate(runs):
        run_dir = os.path.join(workdir, name, f"seed{seed}")
        results_path = os.path.join(run_dir, "results.json")
        if os.path.isfile(results_path):
            with open(results_path) as f:
                results = json.load(f)
            status = "done before"
        else:
            if preemption.requested():
                raise preemption.Preempted(
                    f"sweep stopped before run {k + 1} of {len(runs)} ({name} seed {seed}); "
                    f"the {k} before it are done"
                )
            print(f"[{k + 1}/{len(runs)}] {name} seed {seed} -> {run_dir}")
            t0 = time.time()
            try:
                results = modes.get(run_config.mode)(run_config, run_dir)
            except preemption.Preempted as e:
                raise preemption.Preempted(
                    f"sweep run {k + 1} of {len(runs)} ({name} seed {seed}): {e}"
                ) from e
            results = dict(results or {}, sweep_wall_s=time.time() - t0)
            status = "ran"
        record = {
            "variant": name,
            "seed": seed,
            "config": base,
            "overrides": overrides,
            "mode": run_config.mode,
            "workdir": run_dir,
            "metrics": _scalars(results.get("metrics", {})),
            "wall_s": results.get("wall_s"),
        }
        if (name, seed) not in done:
            append_line(path, record)
            done.add((name, seed))
        logging.info("sweep %s seed %d: %s", name, seed, status)
        records.append(record)
    print(f"Sweep done: {len(runs)} runs in {path}")
    return records


def _scalars(metrics: dict) -> dict:
    """The metrics without their tables (those stay in each run's results.json)."""
    return {
        s: {k: v for k, v in m.items() if isinstance(v, (int, float))} if isinstance(m, dict) else m
        for s, m in metrics.items()
    }
