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
