"""Test fixtures: a tiny dataset in the Kaggle layout, written by the tests themselves."""

from __future__ import annotations

import csv
import io
import os
import zipfile

import numpy as np
from PIL import Image

from galaxy_jax.data.labels import ID_COLUMN, VOTE_COLUMNS


def jpeg_bytes(seed: int, size: int = 424, mode: str = "RGB") -> bytes:
    """A smooth, seeded image (compresses to a few kB) as JPEG bytes."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    image = np.outer(ramp, ramp)[..., None] * rng.uniform(50, 250, 3)
    image = Image.fromarray(image.astype(np.uint8))
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


def vote_row(q1: tuple[float, float, float], seed: int) -> list[float]:
    """37 fractions with Question 1 set to `q1`, the rest seeded and in [0, 1]."""
    rest = np.random.default_rng(seed).uniform(0, 1, len(VOTE_COLUMNS) - 3).round(6)
    return list(q1) + rest.tolist()


def write_kaggle(manual_dir: str, n: int = 12, *, zipped: bool = True, rows=None, images=None):
    """Writes images_training_rev1(.zip) and training_solutions_rev1.csv into manual_dir.

    Returns {GalaxyID: label} with 0 elliptical, 1 spiral under the 'dominant' rule. `rows`
    ({id: list of 37 values or strings}) and `images` ({id: bytes}) override the defaults.
    """
    os.makedirs(manual_dir, exist_ok=True)
    ids = [100008 + 7 * i for i in range(n)]
    truth, default_rows, default_images = {}, {}, {}
    for i, gid in enumerate(ids):
        label = i % 2
        q1 = (0.7, 0.25, 0.05) if label == 0 else (0.2, 0.75, 0.05)
        default_rows[gid] = vote_row(q1, i)
        default_images[gid] = jpeg_bytes(i)
        truth[gid] = label
    rows = default_rows if rows is None else rows
    images = default_images if images is None else images
    with open(os.path.join(manual_dir, "training_solutions_rev1.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow((ID_COLUMN,) + VOTE_COLUMNS)
        for gid, values in rows.items():
            w.writerow([gid] + list(values))
    if zipped:
        with zipfile.ZipFile(os.path.join(manual_dir, "images_training_rev1.zip"), "w") as z:
            for gid, data in images.items():
                z.writestr(f"images_training_rev1/{gid}.jpg", data)
    else:
        folder = os.path.join(manual_dir, "images_training_rev1")
        os.makedirs(folder, exist_ok=True)
        for gid, data in images.items():
            with open(os.path.join(folder, f"{gid}.jpg"), "wb") as f:
                f.write(data)
    return truth
