"""Figures as PNG files: matplotlib without a display, written atomically."""

from __future__ import annotations

import io

from galaxy_jax import atomic


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and safe from worker threads
    import matplotlib.pyplot as plt

    return plt


def save_fig(fig, path):
    plt = pyplot()

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def image_grid(rows, path: str, suptitle: str = "", size: float = 1.4) -> None:
    """A PNG of image rows: rows = [[(image [H, W, 3] uint8 or None, title), ...], ...]."""
    plt = pyplot()
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(size * n_cols, (size + 0.25) * len(rows)), squeeze=False
    )
    for ax_row, row in zip(axes, rows, strict=True):
        for j, ax in enumerate(ax_row):
            ax.axis("off")
            if j < len(row) and row[j][0] is not None:
                ax.imshow(row[j][0])
                ax.set_title(row[j][1], fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=8)
    save_fig(fig, path)
