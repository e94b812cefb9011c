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


def merge_dendrogram(results: dict, path: str, class_names=()) -> str:
    """The merge of a run with dec.merge_to (results['merge'], galaxy_jax/merge.py): the
    dendrogram of the size-weighted Ward merge of its clusters, cut at the merged groups. Each
    leaf reads 'g<group> c<cluster> n=<rows>' and, when the run has labels, the cluster's dominant
    class (from the unmerged section's contingency table; names from class_names). Returns ""
    or why there is no figure."""
    import numpy as np
    from scipy.cluster.hierarchy import dendrogram

    rec = results.get("merge")
    if not rec:
        return "the run has no merge (dec.merge_to = 0)"
    z = np.asarray(rec["linkage"], np.float64)
    k, g = len(z) + 1, int(rec["to"])
    metrics = results.get("metrics", {})
    section = next((s for s in metrics if f"{s}_merged" in metrics), None)
    table = np.asarray((metrics.get(section) or {}).get("contingency") or np.zeros((0, 0)))
    labels = []
    for j in range(k):
        text = f"g{rec['group_of_cluster'][j]} c{j} n={rec['sizes'][j]}"
        if j < len(table) and table[j].sum() > 0:
            c = int(table[j].argmax())
            name = class_names[c] if c < len(class_names) else f"class {c}"
            text += f" {name} ({table[j, c] / table[j].sum():.0%})"
        labels.append(text)
    # The cut: between the last merge kept (k - g of them) and the first one not made.
    heights = np.concatenate([[0.0], z[:, 2], [1.1 * z[-1, 2] if len(z) else 1.0]])
    cut = (heights[k - g] + heights[k - g + 1]) / 2
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * k))
    dendrogram(z, orientation="right", labels=labels, color_threshold=cut, ax=ax)
    ax.axvline(cut, color="grey", linestyle="--", linewidth=1)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("Ward distance sqrt(2 ΔSSE) between merged groups")
    ax.set_title(f"{k} clusters merged into {g} groups (size-weighted Ward on the centres)")
    save_fig(fig, path)
    return ""
