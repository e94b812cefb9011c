"""Runs summarised: the runs of a sweep file or of run workdirs, and the mean +- std over seeds
of each variant's metrics as a markdown table (the report and the quick start print it)."""

from __future__ import annotations

import json
import os

import numpy as np
from absl import logging

from galaxy_jax import runs as run_files
from galaxy_jax.errors import UserError

SWEEP_FILE = "sweep.jsonl"  # one JSON line per finished (variant, seed), written by `sweep`
# Metrics summarised in report.md, in this column order, where a run's results have them.
SUMMARY_KEYS = ("acc", "acc_dominant", "nmi", "ari", "accuracy", "roc_auc")


def read_sweep(path: str) -> list[dict]:
    """The runs of a sweep.jsonl: [{'variant', 'seed', 'workdir', 'metrics', ...}].

    A later line for the same (variant, seed) replaces an earlier one; an unparseable line
    (a torn write) is skipped with a warning.
    """
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise UserError(f"no sweep file {path}: run the sweep mode first, or set config.runs")
    runs = {}
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                runs[(r["variant"], int(r["seed"]))] = r
            except (ValueError, KeyError, TypeError) as e:
                logging.warning("%s line %d is unreadable (%s); skipped.", path, n, e)
    if not runs:
        raise UserError(f"{path} lists no runs")
    return list(runs.values())


def read_runs(workdirs) -> list[dict]:
    """Runs from their workdirs; the variant is the workdir's parent name if it is `seed<N>`."""
    runs = []
    for w in workdirs:
        w = os.path.abspath(os.path.expanduser(w))
        results = run_files.results(w)
        base = os.path.basename(w)
        variant = os.path.basename(os.path.dirname(w)) if base.startswith("seed") else base
        runs.append(
            {
                "variant": variant,
                "seed": results.get("seed", 0),
                "workdir": w,
                "metrics": results.get("metrics", {}),
            }
        )
    return runs


def by_variant(runs) -> dict[str, list[dict]]:
    """{variant: runs sorted by seed}, variants in order of first appearance."""
    out: dict[str, list[dict]] = {}
    for r in runs:
        out.setdefault(r["variant"], []).append(r)
    return {v: sorted(rs, key=lambda r: r["seed"]) for v, rs in out.items()}


def summarise(runs) -> list[dict]:
    """One row per (variant, metrics section): n seeds, and (mean, std) of each SUMMARY_KEYS.

    std is the sample standard deviation (ddof=1); 0 for a single seed.
    """
    rows = []
    for variant, rs in by_variant(runs).items():
        sections = []
        for r in rs:
            sections += [s for s in r.get("metrics", {}) if s not in sections]
        for section in sections:
            row = {"variant": variant, "section": section, "n": 0, "stats": {}}
            for key in SUMMARY_KEYS:
                vals = [
                    r["metrics"][section][key]
                    for r in rs
                    if isinstance(r.get("metrics", {}).get(section, {}).get(key), (int, float))
                ]
                if vals:
                    v = np.asarray(vals, np.float64)
                    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
                    row["stats"][key] = (float(v.mean()), std)
                    row["n"] = max(row["n"], len(v))
            if row["stats"]:
                rows.append(row)
    return rows


def markdown_table(rows) -> str:
    keys = [k for k in SUMMARY_KEYS if any(k in r["stats"] for r in rows)]
    lines = [
        "| variant | metrics | seeds | " + " | ".join(keys) + " |",
        "|---|---|---|" + "---|" * len(keys),
    ]
    for r in rows:
        cells = [
            f"{r['stats'][k][0]:.4f} ± {r['stats'][k][1]:.4f}" if k in r["stats"] else ""
            for k in keys
        ]
        lines.append(f"| {r['variant']} | {r['section']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
