"""Modes `report` (sweep results -> report.md + PNG figures) and `export` (clusters -> CSV).

report reads `config.sweep` (a sweep.jsonl written by the `sweep` mode) or `config.runs` (run
workdirs, each with a results.json) and writes into its workdir:
  report.md                       mean +- std over seeds of every variant's metrics
  figures/<variant>_confusion.png contingency / confusion tables of the variant's first seed
  figures/<variant>_embedding.png t-SNE of the embedding, coloured by cluster and by true label
  figures/<variant>_montage.png   per cluster, its most and least confident galaxies
  figures/<variant>_neighbours.png  each cluster's most confident galaxy and its nearest
                                  neighbours in the clustered features (exact cosine search)
  figures/<variant>_map.html      the interactive map (galaxy_jax/explore.py), linked
  figures/<variant>_curves.png    losses, and the fraction of changed assignments per DEC update
  figures/<variant>_merge.png     runs with dec.merge_to: the clusters' merge tree (plots.py)

What a run directory may hold, and what each figure needs from it:
  results.json       metrics (contingency tables), history (curves); required
  assignments.npy    [N] int32 cluster of each row
  q.npy              [N, K] float32 soft assignments (confidence = max q)
  embedding.npy      [N, d] float32 DEC embedding; t-SNE falls back to q.npy without it
  centres.npy        [K, d] float32 cluster centres in the embedding (export's distances)
  ids.npy            [N] str row ids (optional; else the data's ids, e.g. the features dir's)
Labels and ids come from the run's data (config.data); images, for the montage, from the image
source of the `extract` run whose workdir is the features' data.path (its features_meta.json
holds that config). A figure whose inputs are missing is skipped with a note in report.md.

export writes <workdir>/clusters.csv: id, cluster, confidence, dist_0..dist_{K-1}, grouped by
cluster and sorted by decreasing confidence within each, so a volunteer labels a cluster
from its first (most representative) rows.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np
from absl import logging

from galaxy_jax import atomic, layout, plots, validate
from galaxy_jax import runs as run_files
from galaxy_jax.errors import UserError
from galaxy_jax.summary import by_variant, markdown_table, read_runs, read_sweep, summarise
from galaxy_jax.workdir import prepare_workdir

# The metrics section whose tables and files the figures describe, first one present wins.
PRIMARY_SECTIONS = ("dec", "selflabel", "scan", "kmeans_embedding", "kmeans_input", "test", "val")


# ----------------------------------------------------------------------------- reading runs


# ---------------------------------------------------------------------------- run artefacts


# ---------------------------------------------------------------------------------- figures


def _primary(metrics):
    for s in PRIMARY_SECTIONS:
        if s in metrics:
            return s
    return next(iter(metrics), None)


def plot_confusion(results, path, class_names=()) -> str:
    """Every contingency / confusion table in results['metrics'], with integer counts, class
    names on the true-class axis and cluster (or predicted class) names on the other."""
    plt = plots.pyplot()

    tables = [
        (s, np.asarray(m.get("contingency", m.get("confusion"))))
        for s, m in results.get("metrics", {}).items()
        if isinstance(m, dict) and (m.get("contingency") or m.get("confusion"))
    ]
    if not tables:
        return "no contingency tables in results.json"
    fig, axes = plt.subplots(
        1, len(tables), figsize=(4.6 * len(tables), 3.8), squeeze=False, layout="constrained"
    )
    for ax, (section, t) in zip(axes[0], tables, strict=True):
        supervised = "confusion" in results["metrics"][section]
        names = [str(c) for c in class_names] if len(class_names) == t.shape[1] else None
        true_names = names or [str(j) for j in range(t.shape[1])]
        rows = true_names if supervised and t.shape[0] == t.shape[1] else None
        rows = rows or [f"cluster {i}" for i in range(t.shape[0])]
        ax.imshow(t, cmap="Blues")
        for (i, j), v in np.ndenumerate(t):
            dark = v > t.max() / 2
            ax.text(
                j,
                i,
                f"{int(v)}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
        ax.set_xticks(range(t.shape[1]), true_names, rotation=30 if names else 0, ha="right")
        ax.set_yticks(range(t.shape[0]), rows)
        ax.set_xlabel("true class")
        ax.set_ylabel("predicted class" if supervised else "cluster")
        ax.set_title(section)
    plots.save_fig(fig, path)
    return ""


def plot_embedding(
    workdir, results, labels, path, max_points, seed, iters=1000, class_names=()
) -> str:
    """The run's 2-D map (galaxy_jax.layout: t-SNE or UMAP of embedding.npy, else q.npy, on a
    seeded subsample), by cluster and by label."""
    plt = plots.pyplot()

    z = run_files.load_npy(workdir, "embedding.npy")
    what = "embedding.npy"
    if z is None:
        z, what = run_files.load_npy(workdir, "q.npy"), "q.npy (no embedding.npy)"
    assign = run_files.load_npy(workdir, "assignments.npy")
    if z is None or assign is None:
        return "no embedding.npy / q.npy and assignments.npy in the run"
    n = len(z)
    idx, xy, how = layout.layout(workdir, z, max_points, seed, iters)
    panels = [("cluster", assign[idx])]
    if labels is not None and len(labels) == n:
        panels.append(("true label", labels[idx]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (name, c) in zip(axes[0], panels, strict=True):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=c, s=4, cmap="tab10")
        handles, _ = sc.legend_elements(num=None)  # one handle per value, in value order
        values = np.unique(c)
        if name == "true label" and len(class_names) > int(values.max(initial=-1)):
            text = [class_names[int(v)] if v >= 0 else "unknown" for v in values]
        else:
            text = [f"{'cluster' if name == 'cluster' else 'label'} {int(v)}" for v in values]
        ax.legend(handles, text, title=name, fontsize=7, loc="best")
        ax.set_title(f"{'t-SNE' if how == 'tsne' else 'UMAP'} of {what}: {name}")
        ax.set_xticks([])
        ax.set_yticks([])
    plots.save_fig(fig, path)
    return ""


def plot_montage(workdir, ids, features_dir, path, per_cluster) -> str:
    """Per cluster (rows), its `per_cluster` most confident then least confident galaxies."""
    plt = plots.pyplot()

    q = run_files.load_npy(workdir, "q.npy")
    if q is None:
        return "no q.npy in the run"
    source, why = run_files.image_source_of(features_dir)
    if source is None:
        return why
    if ids is None or len(ids) != len(q):
        return "the run's ids do not match q.npy"
    row_of = {str(i): k for k, i in enumerate(source.ids)}
    conf, assign = q.max(1), q.argmax(1)
    k_clusters = q.shape[1]
    fig, axes = plt.subplots(
        k_clusters,
        2 * per_cluster,
        figsize=(1.4 * 2 * per_cluster, 1.6 * k_clusters),
        squeeze=False,
    )
    for k in range(k_clusters):
        members = np.flatnonzero(assign == k)
        order = members[np.argsort(-conf[members], kind="stable")]
        most, least = order[:per_cluster], order[::-1][:per_cluster]  # least: lowest first
        for j, ax in enumerate(axes[k]):
            ax.axis("off")
            pool, tag = (most, "most") if j < per_cluster else (least, "least")
            jj = j % per_cluster
            if jj >= len(pool):
                continue
            i = pool[jj]
            src = row_of.get(str(ids[i]))
            if src is None:
                continue
            ax.imshow(source.get([src])[0])
            label = ""
            if source.labels is not None and 0 <= source.labels[src] < len(source.class_names):
                label = f" {source.class_names[source.labels[src]]}"
            ax.set_title(f"c{k} {tag} {conf[i]:.2f}{label}", fontsize=6)
    plots.save_fig(fig, path)
    return ""


def plot_neighbours(workdir, ids, features_dir, path, k=7) -> str:
    """For each cluster, its most confident galaxy and that galaxy's k nearest neighbours in the
    features the run clustered (exact cosine search, galaxy_jax.neighbours), with their clusters
    and true labels: does similarity in the feature space look like similar galaxies?"""
    from galaxy_jax import neighbours

    q = run_files.load_npy(workdir, "q.npy")
    if q is None:
        return "no q.npy in the run"
    if not features_dir or not os.path.isfile(os.path.join(features_dir, "features.npy")):
        return "the run's data are not extracted image features"
    source, why = run_files.image_source_of(features_dir)
    if source is None:
        return why
    x, space_ids, _, _ = run_files.load_space(features_dir)
    if ids is None or len(ids) != len(q):
        return "the run's ids do not match q.npy"
    cluster_of = {str(g): int(c) for g, c in zip(ids, q.argmax(1), strict=True)}
    row_in_space = {str(g): r for r, g in enumerate(space_ids)}
    src_row = {str(g): r for r, g in enumerate(source.ids)}
    conf, assign = q.max(1), q.argmax(1)
    queries = [
        int(np.flatnonzero(assign == c)[np.argmax(conf[assign == c])])
        for c in range(q.shape[1])
        if (assign == c).any()
    ]
    rows = [row_in_space.get(str(ids[i])) for i in queries]
    if any(r is None for r in rows):
        return "the run's ids are not all in its features"
    k = min(k, len(space_ids) - 1)
    _, nb = neighbours.search(np.asarray(x[rows]), x, k + 1, "cosine")  # [0] is the query

    def cell(gid, tag):
        r = src_row.get(str(gid))
        img = None if r is None else source.get([r])[0]
        label = ""
        if (
            r is not None
            and source.labels is not None
            and 0 <= source.labels[r] < len(source.class_names)
        ):
            label = f" {source.class_names[source.labels[r]]}"
        return img, f"{tag} c{cluster_of.get(str(gid), '?')}{label}"

    grid = []
    for qi, row in zip(queries, nb, strict=True):
        grid.append(
            [cell(ids[qi], "query")]
            + [cell(space_ids[j], f"#{n}") for n, j in enumerate(row[1:], 1)]
        )
    plots.image_grid(grid, path, "most confident galaxy of each cluster, then its neighbours")
    return ""


def plot_curves(results, path) -> str:
    """The curves of results['history'] ({phase: {metric: [[step, value], ...]}}, the one format
    of galaxy_jax/train_loop.py): losses on the left axis (log scale), every other metric (DEC's
    delta_label and acc, supervised val_accuracy, SSL top1) on the right one."""
    plt = plots.pyplot()

    hist = results.get("history") or {}
    # Runs written before the one format kept lists per phase: there is nothing to read by name.
    hist = {phase: curves for phase, curves in hist.items() if isinstance(curves, dict)}
    if not hist:
        return "no history in results.json (or only in the format of older versions)"
    fig, (ax_loss, ax_other) = plt.subplots(1, 2, figsize=(10, 3.6))
    positive = True  # SCAN's loss goes negative (its entropy term): then a symlog axis
    for phase, curves in hist.items():
        for metric, points in curves.items():
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            if metric == "loss":
                positive = positive and min(values) > 0
                ax_loss.plot(steps, values, marker="." if len(steps) < 50 else "", label=phase)
            else:
                ax_other.plot(steps, values, marker=".", label=f"{phase} {metric}")
    ax_loss.set_yscale("log" if positive else "symlog", **({} if positive else {"linthresh": 1e-2}))
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training loss")
    ax_loss.legend(fontsize=7)
    ax_other.set_xlabel("step")
    ax_other.set_title("other metrics (DEC: changed assignments per target update)")
    if ax_other.get_legend_handles_labels()[0]:
        ax_other.legend(fontsize=7)
    plots.save_fig(fig, path)
    return ""


# ------------------------------------------------------------------------------------- modes


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _map(config, run_dir, path, variant, seed) -> str:
    """The run's interactive map beside the figures; the markdown line that links it."""
    from galaxy_jax.explore import write_run_map

    try:
        info = write_run_map(
            run_dir,
            path,
            max_points=config.tsne_max_points,  # the same layout as the embedding figure
            seed=seed,
            layout_iters=config.tsne_iters,
            thumb=config.map_thumb,
            title=f"{variant}: {os.path.basename(run_dir)}",
        )
    except UserError as e:
        return f"**Interactive map**: _skipped: {e}_"
    rel = os.path.relpath(path, os.path.dirname(os.path.dirname(path)))
    return (
        f"**Interactive map**: [{os.path.basename(path)}]({rel}) ({info['points']:,} galaxies; "
        "open it in a browser, offline: hover for thumbnails, click for neighbours)"
    )


def run_report(config, workdir: str) -> str:
    """Writes workdir/report.md and workdir/figures/*.png; returns the markdown."""
    validate.report(config)
    if config.sweep:
        runs = read_sweep(config.sweep)
    elif config.runs:
        runs = read_runs(config.runs)
    else:
        raise UserError("set config.sweep (a sweep.jsonl) or config.runs (run workdirs)")
    workdir = prepare_workdir(workdir)
    fig_dir = os.path.join(workdir, "figures")
    rows = summarise(runs)
    md = [
        f"# {config.title}",
        "",
        f"{len(runs)} runs. Mean ± sample std (ddof=1) over seeds; `seeds` counts the runs with "
        "that metric. acc: Hungarian one-to-one accuracy; acc_dominant: each cluster's majority "
        "label; accuracy / roc_auc: supervised.",
        "",
        markdown_table(rows) if rows else "_No metrics in the runs._",
        "",
    ]
    for variant, rs in by_variant(runs).items():
        r = rs[0]  # figures of the lowest seed: clusters are not aligned across seeds
        w = r["workdir"]
        md += [f"## {variant}", "", f"Figures from seed {r['seed']} (`{w}`).", ""]
        try:
            results = run_files.results(w)
        except UserError as e:
            md += [f"_Skipped: {e}_", ""]
            continue
        labels, ids, features_dir = run_files.run_labels_ids(results)
        if os.path.isfile(os.path.join(w, "ids.npy")):
            ids = np.load(os.path.join(w, "ids.npy"))
        meta = run_files.features_meta(features_dir)
        names = tuple(meta.get("class_names", ()))
        md += [f"Features: {run_files.weights_line(meta)}.", ""]
        name = _safe(variant)
        if config.map:
            page = os.path.join(fig_dir, f"{name}_map.html")
            md += [_map(config, w, page, variant, r["seed"]), ""]
        figures = [
            ("Confusion", "confusion", lambda p, res=results, n=names: plot_confusion(res, p, n)),
            (
                "Embedding (t-SNE)",
                "embedding",
                lambda p, w=w, res=results, y=labels, s=r["seed"], n=names: plot_embedding(
                    w, res, y, p, config.tsne_max_points, s, config.tsne_iters, n
                ),
            ),
            (
                "Most / least confident per cluster",
                "montage",
                lambda p, w=w, ids=ids, fd=features_dir: plot_montage(
                    w, ids, fd, p, config.montage_per_cluster
                ),
            ),
            (
                "Nearest neighbours in the features",
                "neighbours",
                lambda p, w=w, ids=ids, fd=features_dir: plot_neighbours(w, ids, fd, p),
            ),
            ("Training curves", "curves", lambda p, res=results: plot_curves(res, p)),
        ]
        if results.get("merge"):
            merged = lambda p, res=results, n=names: plots.merge_dendrogram(res, p, n)  # noqa: E731
            figures.insert(1, ("Clusters merged (dec.merge_to)", "merge", merged))
        for title, kind, fn in figures:
            rel = os.path.join("figures", f"{name}_{kind}.png")
            why = fn(os.path.join(fig_dir, os.path.basename(rel)))
            md += [f"**{title}**: _skipped: {why}._" if why else f"![{title}]({rel})", ""]
    text = "\n".join(md)
    atomic.write_bytes(os.path.join(workdir, "report.md"), text.encode())
    print(f"Wrote {os.path.join(workdir, 'report.md')} ({len(runs)} runs, {len(rows)} rows)")
    return text


def cluster_table(run_dir: str) -> tuple[dict, set]:
    """The per-galaxy table of a finished DEC run, in the run's row order (that of its data):
    {'id', 'cluster', 'confidence', 'dist_j', 'q_j', 'anomaly_score', 'map_x', 'map_y', then
    every catalog column the data carried}, each an [N] array. dist_j (Euclidean distance of the
    embedding to centre j) needs embedding.npy + centres.npy; map_x/map_y the run's saved 2-D
    map (galaxy_jax.layout; NaN for rows the map sampled out). Also returns the names of the
    catalog columns, which the CSV writes at full precision (ra, dec)."""
    run_dir = os.path.abspath(os.path.expanduser(run_dir))
    results = run_files.results(run_dir)
    q = run_files.load_npy(run_dir, "q.npy")
    if q is None:
        raise UserError(f"no q.npy in {run_dir}: export needs a finished DEC run")
    # The run's own ids if it wrote them, else its data's.
    ids = run_files.load_npy(run_dir, "ids.npy")
    _, data_ids, features_dir = run_files.run_labels_ids(results)
    if ids is None:
        ids = data_ids
    if ids is None or len(ids) != len(q):
        ids = np.arange(len(q)).astype(str)
    ids = np.asarray(ids).astype(str)
    table = {"id": ids, "cluster": q.argmax(1).astype(np.int64), "confidence": q.max(1)}
    z = run_files.load_npy(run_dir, "embedding.npy")
    centres = run_files.load_npy(run_dir, "centres.npy")
    if z is not None and centres is not None:
        if z.shape[0] != len(q) or centres.shape != (q.shape[1], z.shape[1]):
            raise UserError(
                f"{run_dir}: embedding.npy {z.shape}, centres.npy {centres.shape} and q.npy "
                f"{q.shape} disagree (expected [N, d], [K, d], [N, K])"
            )
        z64, c64 = np.asarray(z, np.float64), np.asarray(centres, np.float64)
        dist = np.sqrt(np.maximum(((z64[:, None, :] - c64[None]) ** 2).sum(-1), 0.0))
        table.update({f"dist_{j}": dist[:, j] for j in range(dist.shape[1])})
    else:
        logging.warning("%s has no embedding.npy + centres.npy: no distance columns.", run_dir)
    table.update({f"q_{j}": q[:, j] for j in range(q.shape[1])})
    # The galaxies no cluster explains: 1 - max_j q_ij (0 = fully assigned, -> 1 - 1/K = none).
    table["anomaly_score"] = 1.0 - q.max(1)
    xy = layout.coordinates(run_dir, len(q))
    if xy is not None:
        table["map_x"], table["map_y"] = xy[:, 0], xy[:, 1]
    catalog = set()
    for name, values in (run_files.catalog_columns_for(ids, features_dir) or {}).items():
        key = name if name not in table else f"catalog_{name}"
        table[key] = values
        catalog.add(key)
    return table, catalog


def _write_table(table: dict, order: np.ndarray, path: str, exact=()) -> None:
    """table rows in `order` as CSV at path and as Parquet beside it (.parquet). Floats take 6
    significant digits in the CSV, except the `exact` columns (catalog values: the shortest
    text that reads back to the same float)."""
    import pyarrow as pa
    import pyarrow.parquet

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(table))

    def cell(v, full):
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else (repr(float(v)) if full else f"{v:.6g}")
        return "" if v is None else v

    full = [k in exact for k in table]
    columns = [np.asarray(v)[order] for v in table.values()]
    for row in zip(*columns, strict=True):
        w.writerow([cell(v, f) for v, f in zip(row, full, strict=True)])
    atomic.write_bytes(path, buf.getvalue().encode())
    arrow = pa.table({k: pa.array(list(c)) for k, c in zip(table, columns, strict=True)})
    sink = pa.BufferOutputStream()
    pyarrow.parquet.write_table(arrow, sink)
    atomic.write_bytes(os.path.splitext(path)[0] + ".parquet", sink.getvalue().to_pybytes())


def run_export(config, workdir: str) -> str:
    """Writes clusters.csv + clusters.parquet, and anomalies.csv + anomalies.png, from the DEC
    run in config.run (configs/export.py); returns the CSV's path."""
    validate.export(config)
    table, catalog = cluster_table(config.run)
    workdir = prepare_workdir(workdir)
    ids, assign, conf = table["id"], table["cluster"], table["confidence"]
    order = np.lexsort((np.arange(len(ids)), -conf, assign))  # cluster, then confidence desc
    path = os.path.join(workdir, config.filename)
    _write_table(table, order, path, catalog)
    n_anomalies = min(int(config.anomalies), len(ids))
    if n_anomalies:
        worst = np.lexsort((np.arange(len(ids)), -table["anomaly_score"]))[:n_anomalies]
        _write_table(table, worst, os.path.join(workdir, "anomalies.csv"), catalog)
        why = _anomaly_montage(config.run, ids[worst], table, worst, workdir)
        if why:
            print(f"No anomalies.png: {why}")
    print(f"Wrote {path} (+ .parquet): {len(ids)} rows, {int(assign.max(initial=-1)) + 1} clusters")
    return path


def _anomaly_montage(run_dir, ids, table, rows, workdir) -> str:
    results = run_files.results(os.path.abspath(os.path.expanduser(run_dir)))
    source, why = run_files.image_source_of(run_files.run_labels_ids(results)[2])
    if source is None:
        return why
    row_of = {str(i): r for r, i in enumerate(source.ids)}
    cells = [
        (
            source.get([row_of[g]])[0] if g in row_of else None,
            f"{g} c{table['cluster'][r]} {table['anomaly_score'][r]:.2f}",
        )
        for g, r in zip(ids, rows, strict=True)
    ]
    per_row = 8
    grid = [cells[i : i + per_row] for i in range(0, len(cells), per_row)]
    plots.image_grid(grid, os.path.join(workdir, "anomalies.png"), "least explained (1 - max q)")
    return ""
