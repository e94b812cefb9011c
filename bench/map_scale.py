"""Size and write time of the interactive map (galaxy_jax/explore.py) as the run grows.

Writes bench/results/map_scale.json. Two kinds of rows:
  synthetic N   N synthetic galaxies (rendered at --size px, thumbnails 48 px), a 10-d embedding
                of two noisy groups, its first two coordinates as the map (no t-SNE: this times
                the page, not the layout), every point drawn (--max_points N);
  run PATH      a real run's map, written exactly as `python main.py --config=configs/map.py`
                writes it (layout included on the first call; the layout is saved in the run).
Each row: points drawn, bytes of the page and of its sprite sheets, seconds to write.

Run:
  python bench/map_scale.py --synthetic 2000 100000
  python bench/map_scale.py --run workdirs/imagenet_table/sample128/dec/seed0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402

from galaxy_jax import explore  # noqa: E402
from galaxy_jax.atomic import write_json  # noqa: E402
from galaxy_jax.data.synthetic import make_synthetic_source  # noqa: E402


def synthetic_row(n: int, size: int, out_dir: str) -> dict:
    source = make_synthetic_source(n, size, seed=0)
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, (n, 10)).astype(np.float32) + 3 * source.labels[:, None]
    t0 = time.time()
    info = explore.write_map(
        os.path.join(out_dir, f"synthetic_{n}.html"),
        z[:, :2],
        source.ids,
        source.get,
        cluster=source.labels,
        confidence=rng.uniform(0.5, 1, n),
        labels=source.labels,
        class_names=source.class_names,
        columns={"ra": rng.uniform(0, 360, n), "dec": rng.uniform(-90, 90, n)},
        embedding=z,
        max_points=n,
    )
    return {
        "kind": "synthetic",
        "n": n,
        "image_size": size,
        "wall_s": time.time() - t0,
        "loadavg_at_run": _common.loadavg(),
        **info,
    }


def run_row(run: str, out_dir: str) -> dict:
    from galaxy_jax.explore import write_run_map

    t0 = time.time()
    info = write_run_map(run, os.path.join(out_dir, "run.html"))  # configs/map.py's defaults
    return {
        "kind": "run",
        "run": run,
        "wall_s": time.time() - t0,
        "loadavg_at_run": _common.loadavg(),
        **info,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--synthetic", type=int, nargs="*", default=[])
    p.add_argument("--size", type=int, default=96, help="synthetic render size (px)")
    p.add_argument("--run", nargs="*", default=[])
    p.add_argument("--out", default=os.path.join(_common.ROOT, "bench/results/map_scale.json"))
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.synthetic:
            rows.append(synthetic_row(n, a.size, tmp))
            print(rows[-1])
        for run in a.run:
            rows.append(run_row(run, tmp))
            print(rows[-1])
    for r in rows:
        r.pop("path", None)
    # Keep the rows of earlier runs that this one did not redo (same kind and size or run).
    key = lambda r: (r["kind"], r.get("n"), r.get("run"))  # noqa: E731
    if os.path.isfile(a.out):
        with open(a.out) as f:
            old = [r for r in json.load(f)["rows"] if key(r) not in {key(x) for x in rows}]
        rows = old + rows
    write_json(
        a.out,
        {
            "rows": rows,
            "machine": _common.machine(),
            "loadavg": _common.loadavg(),
            "command": "python bench/map_scale.py " + " ".join(sys.argv[1:]),
            "note": "each row keeps the machine load of its own run in `loadavg_at_run`",
        },
    )


if __name__ == "__main__":
    main()
