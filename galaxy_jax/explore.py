"""An interactive map of a run: one HTML page that works offline, opened from disk.

Bokeh draws the points (WebGL) with its JavaScript inlined in the page (no server, no CDN).
Thumbnails are small JPEGs packed into sprite sheets in a folder beside the page
(`<name>_files/sprite_<k>.jpg`), read by the page through relative URLs, so the page stays small
and opens from file://.
  - points: the run's 2-D map (galaxy_jax.layout), coloured by cluster, switchable to the true
    label or to the confidence (max q);
  - hover: the galaxy's thumbnail, id, cluster, max q, label and its catalog columns (ra, dec...);
  - click: its nearest neighbours in the embedding (galaxy_jax.neighbours), with thumbnails;
  - box / lasso selection, and a button that downloads the selected ids as CSV.
Beyond `max_points` galaxies a seeded random sample is drawn, and the page says so.
"""

from __future__ import annotations

import html
import io
import json
import os
import time

import numpy as np

from galaxy_jax import atomic, layout, runs
from galaxy_jax import neighbours as neighbours_lib
from galaxy_jax.data.vectors import DiskRows
from galaxy_jax.errors import UserError

PALETTE = (
    "#1f77b4 #ff7f0e #2ca02c #d62728 #9467bd #8c564b #e377c2 #7f7f7f #bcbd22 #17becf "
    "#393b79 #637939 #8c6d31 #843c39 #7b4173 #3182bd #e6550d #31a354 #756bb1 #636363"
).split()
UNKNOWN = "#bbbbbb"
# Headless Chromium that opens a page from disk with no network (the tests and
# bench/map_screenshot.py): no GPU (software WebGL), no background connections.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1100,1100",
)
SHEET = 16  # thumbnails per sprite-sheet side: 256 per sheet

# JavaScript run in a page (tests, bench/map_screenshot.py): the page coordinates of point
# `arguments[0]`; it first finds the map's view (`view`), its data source (`src`), `doc`.
JS_FIND_MAP = """
const doc = Bokeh.documents[0];
const plot = doc.get_model_by_name('map'), src = doc.get_model_by_name('galaxies');
let view = null;
function walk(v) { if (!v || view) return; if (v.model === plot) { view = v; return; }
  for (const c of (v.child_views || [])) walk(c); }
[...Bokeh.index.roots].forEach(walk);
"""
JS_POINT_ON_PAGE = (
    JS_FIND_MAP
    + """
const i = arguments[0];
const r = view.canvas_view.el.getBoundingClientRect();
return [r.left + view.frame.x_scale.compute(src.data.x[i]),
        r.top + view.frame.y_scale.compute(src.data.y[i])];
"""
)


def _colours(values, n) -> list[str]:
    return [UNKNOWN if v < 0 else PALETTE[int(v) % len(PALETTE)] for v in values[:n]]


def _confidence_colours(conf) -> list[str]:
    from matplotlib import colormaps

    rgba = colormaps["viridis"](np.clip(np.nan_to_num(conf, nan=0.0), 0, 1))
    return ["#" + "".join(f"{int(255 * c):02x}" for c in r[:3]) for r in rgba]


def write_sprites(images_of, rows, folder: str, thumb: int) -> list[tuple[str, str]]:
    """Thumbnails of `rows` (images_of(rows_chunk) -> uint8 [B, H, W, 3]) as JPEG sprite sheets in
    `folder`; returns, per row, (sheet file name, CSS background-position)."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    per = SHEET * SHEET
    out = []
    for s, lo in enumerate(range(0, len(rows), per)):
        chunk = rows[lo : lo + per]
        sheet = Image.new("RGB", (SHEET * thumb, SHEET * thumb))
        for b in range(0, len(chunk), 64):
            for j, img in enumerate(images_of(chunk[b : b + 64])):
                k = b + j
                tile = Image.fromarray(np.asarray(img, np.uint8)).resize((thumb, thumb))
                sheet.paste(tile, ((k % SHEET) * thumb, (k // SHEET) * thumb))
        name = f"sprite_{s}.jpg"
        buf = io.BytesIO()
        sheet.save(buf, format="JPEG", quality=80)
        atomic.write_bytes(os.path.join(folder, name), buf.getvalue())
        for k in range(len(chunk)):
            out.append((name, f"{-(k % SHEET) * thumb}px {-(k // SHEET) * thumb}px"))
    return out


_TOOLTIP = """
<div style="max-width:260px">
  <div class="thumb" style="width:{t}px;height:{t}px;background-image:url('@sheet');
       background-position:@bgpos;background-size:{sheet}px {sheet}px"></div>
  <div class="tip-id">id <b>@id</b></div>
  <div>cluster <b>@cluster</b> &middot; max q @maxq_text &middot; label @label</div>
  {extra}
</div>
"""

# Shows the clicked galaxy's neighbours, and the size of a box/lasso selection.
_ON_SELECT = """
const idx = src.selected.indices;
const d = src.data;
const t = THUMB, sheet = SHEET_PX;
const esc = s => String(s).replace(/[&<>"']/g,
  c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
function cell(i, note) {
  return `<div style="display:inline-block;margin:2px;text-align:center;font-size:10px">` +
    `<div style="width:${t}px;height:${t}px;background-image:url('${d.sheet[i]}');` +
    `background-position:${d.bgpos[i]};background-size:${sheet}px ${sheet}px"></div>` +
    `${esc(d.id[i])}${note}</div>`;
}
if (idx.length === 1) {
  const i = idx[0];
  const nb = d.nbrs[i] ? d.nbrs[i].split(',').map(Number) : [];
  panel.text = `<b>${esc(d.id[i])}</b> (cluster ${esc(d.cluster[i])}) and its nearest ` +
    'neighbours:<br>' + cell(i, '') + nb.map(j => cell(j, ` c${esc(d.cluster[j])}`)).join('');
} else if (idx.length > 1) {
  panel.text = `${idx.length} galaxies selected: "Export selected ids" saves them as CSV.`;
} else {
  panel.text = 'Click a galaxy to see its nearest neighbours; box or lasso select to export.';
}
"""

_ON_COLOUR = """
const key = {'cluster': 'c_cluster', 'true label': 'c_label', 'confidence': 'c_conf'}[sel.value];
src.data['colour'] = src.data[key].slice();
src.change.emit();
legend.text = legends[sel.value];
"""

_ON_EXPORT = """
const idx = src.selected.indices;
const quote = s => /[",\\n]/.test(s) ? '"' + String(s).replace(/"/g, '""') + '"' : String(s);
const rows = ['id'].concat(idx.map(i => quote(src.data.id[i])));
const text = rows.join('\\n') + '\\n';
window.galaxyMapExport = text;
const blob = new Blob([text], {type: 'text/csv'});
const a = document.createElement('a');
a.href = URL.createObjectURL(blob);
a.download = 'selected_ids.csv';
document.body.appendChild(a);
a.click();
a.remove();
"""


def write_map(
    path: str,
    xy: np.ndarray,
    ids,
    images_of,
    *,
    cluster=None,
    confidence=None,
    labels=None,
    class_names=(),
    columns=None,
    embedding=None,
    title: str = "galaxy_jax map",
    max_points: int = 20000,
    thumb: int = 48,
    n_neighbours: int = 8,
    seed: int = 0,
    note: str = "",
) -> dict:
    """Writes the page at `path` (and its sprite folder); returns what was written.

    xy [N, 2] map coordinates (NaN rows are left out); ids [N]; images_of(rows) -> uint8 images
    of those rows; cluster [N] int, confidence [N] (max q), labels [N] int (-1 unknown) with
    class_names; columns {name: [N]} catalog columns for the hover; embedding [N, d] for the
    click's neighbours (default: the map coordinates)."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import (
        BoxSelectTool,
        Button,
        ColumnDataSource,
        CustomJS,
        Div,
        HoverTool,
        LassoSelectTool,
        Select,
        TapTool,
    )
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    t0 = time.time()
    n_all = len(ids)
    ok = np.flatnonzero(np.isfinite(xy).all(1))
    rows = ok
    sampled = len(ok) > max_points
    if sampled:
        rows = np.sort(np.random.default_rng(seed).choice(ok, max_points, replace=False))
    n = len(rows)
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), f"{stem}_files")
    sprites = write_sprites(images_of, rows, folder, thumb)
    cluster = np.full(n_all, -1) if cluster is None else np.asarray(cluster)
    conf = np.full(n_all, np.nan) if confidence is None else np.asarray(confidence, float)
    lab = np.full(n_all, -1) if labels is None else np.asarray(labels)
    names = list(class_names)
    data = {
        "x": xy[rows, 0].astype(float),
        "y": xy[rows, 1].astype(float),
        "id": [str(i) for i in np.asarray(ids)[rows]],
        "cluster": [str(int(c)) if c >= 0 else "-" for c in cluster[rows]],
        "maxq_text": ["-" if np.isnan(c) else f"{c:.3f}" for c in conf[rows]],
        "label": [
            names[v] if 0 <= v < len(names) else (str(v) if v >= 0 else "?") for v in lab[rows]
        ],
        "c_cluster": _colours(cluster[rows], n),
        "c_label": _colours(lab[rows], n),
        "c_conf": _confidence_colours(conf[rows]),
        "sheet": [f"{stem}_files/{s}" for s, _ in sprites],
        "bgpos": [p for _, p in sprites],
    }
    data["colour"] = list(data["c_cluster"])
    extra = []
    for k, v in (columns or {}).items():
        key = f"col_{len(extra)}"
        data[key] = [str(x) for x in np.asarray(v)[rows]]  # Bokeh escapes @field values
        extra.append(f'<div class="tip-col">{html.escape(str(k))}: @{key}</div>')
    space = xy[rows] if embedding is None else np.asarray(embedding[rows], np.float32)
    k = min(n_neighbours, n - 1)
    if k > 0:
        _, nb = neighbours_lib.mine(space, k, "euclidean")
        data["nbrs"] = [",".join(map(str, r)) for r in nb]
    else:
        data["nbrs"] = [""] * n
    src = ColumnDataSource(data, name="galaxies")

    p = figure(
        title=title,
        output_backend="webgl",
        tools="pan,wheel_zoom,box_zoom,reset",
        active_scroll="wheel_zoom",
        width=900,
        height=700,
        name="map",
    )
    p.scatter("x", "y", source=src, size=5, fill_color="colour", line_color=None, name="points")
    sheet_px = SHEET * thumb
    p.add_tools(
        HoverTool(
            tooltips=_TOOLTIP.format(t=thumb, sheet=sheet_px, extra="\n  ".join(extra)),
            name="hover",
        ),
        TapTool(),
        BoxSelectTool(),
        LassoSelectTool(),
    )
    p.xaxis.visible = p.yaxis.visible = False
    panel = Div(text="Click a galaxy to see its nearest neighbours.", width=900, name="panel")
    legends = {
        "cluster": _legend({int(c) for c in cluster[rows] if c >= 0}, lambda c: f"cluster {c}"),
        "true label": _legend(
            {int(v) for v in lab[rows] if v >= 0},
            lambda v: names[v] if v < len(names) else str(v),
        ),
        "confidence": "confidence: max q, dark (low) to yellow (high)",
    }
    legend = Div(text=legends["cluster"], width=900, name="legend")
    select = Select(title="Colour by", value="cluster", options=list(legends), name="colour_by")
    select.js_on_change(
        "value",
        CustomJS(args=dict(src=src, sel=select, legend=legend, legends=legends), code=_ON_COLOUR),
    )
    code = _ON_SELECT.replace("THUMB", str(thumb)).replace("SHEET_PX", str(sheet_px))
    src.selected.js_on_change("indices", CustomJS(args=dict(src=src, panel=panel), code=code))
    export = Button(label="Export selected ids (CSV)", name="export")
    export.js_on_event("button_click", CustomJS(args=dict(src=src), code=_ON_EXPORT))
    shown = f"Showing {n:,} of {n_all:,} galaxies"
    if sampled:
        shown += f" (a seeded random sample; the map draws at most {max_points:,})"
    header = Div(text=f"<b>{html.escape(title)}</b><br>{shown}. {html.escape(note)}", width=900)
    layout = column(header, row(select, export), legend, p, panel)
    page = file_html(layout, INLINE, title)
    atomic.write_bytes(path, page.encode())
    size = os.path.getsize(path) + sum(
        os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
    )
    info = {
        "path": path,
        "points": n,
        "galaxies": n_all,
        "sampled": bool(sampled),
        "bytes": size,
        "html_bytes": os.path.getsize(path),
        "seconds": time.time() - t0,
    }
    atomic.write_bytes(os.path.join(folder, "map.json"), json.dumps(info, indent=2).encode())
    return info


def _legend(values, name) -> str:
    return " ".join(
        f'<span style="color:{PALETTE[v % len(PALETTE)]}">&#9679;</span> {html.escape(name(v))}'
        for v in sorted(values)
    )


def _run_arrays(run: str):
    """(z, ids, labels, features_dir, cluster, confidence, what) of a run or features dir."""
    if os.path.isfile(os.path.join(run, "results.json")):
        results = runs.results(run)
        labels, ids, features_dir = runs.run_labels_ids(results)
        own_ids = runs.load_npy(run, "ids.npy")
        ids = own_ids if own_ids is not None else ids
        q = runs.load_npy(run, "q.npy")
        assign = runs.load_npy(run, "assignments.npy")
        cluster = q.argmax(1) if q is not None else assign
        conf = None if q is None else q.max(1)
        z, what = runs.load_npy(run, "embedding.npy"), "DEC embedding"
        if z is None and features_dir:
            z, what = DiskRows(os.path.join(features_dir, "features.npy")), "features"
        if z is None:
            raise UserError(f"{run}: no embedding.npy and no features to lay out")
        return z, ids, labels, features_dir, cluster, conf, what
    if os.path.isfile(os.path.join(run, "features.npy")):
        z = DiskRows(os.path.join(run, "features.npy"))
        return (
            z,
            runs.load_npy(run, "ids.npy"),
            runs.load_npy(run, "labels.npy"),
            run,
            None,
            None,
            "features",
        )
    raise UserError(f"{run} is neither a finished run (results.json) nor an extract workdir")


def write_run_map(
    run: str,
    path: str,
    *,
    max_points: int = 20000,
    seed: int = 0,
    layout_iters: int = 1000,
    thumb: int = 48,
    neighbours: int = 8,
    title: str = "",
) -> dict:
    """The map of a run (or an extract workdir) at `path`; the map mode and the report call it.
    The 2-D layout is the run's saved one (galaxy_jax.layout) for these max_points/seed/iters."""
    run = os.path.abspath(os.path.expanduser(run))
    z, ids, labels, features_dir, cluster, conf, what = _run_arrays(run)
    n = len(z)
    if ids is None or len(ids) != n:
        ids = np.arange(n).astype(str)
    rows, xy, how = layout.layout(run, z, max_points, seed, layout_iters)
    full = np.full((n, 2), np.nan, np.float32)
    full[rows] = xy
    source, why = runs.image_source_of(features_dir)
    class_names = source.class_names if source is not None else ()
    if source is not None:
        row_of = {str(g): r for r, g in enumerate(source.ids)}
        src_rows = np.asarray([row_of.get(str(g), -1) for g in ids])

        def images_of(rr):
            r = src_rows[np.asarray(rr)]
            out = np.zeros((len(r), *source.image_shape), np.uint8)
            ok = r >= 0
            if ok.any():
                out[ok] = source.get(r[ok])
            return out
    else:

        def images_of(rr):
            return np.full((len(rr), 8, 8, 3), 200, np.uint8)

    method = "t-SNE" if how == "tsne" else "UMAP"
    note = f"{method} of the {what}." + ("" if source is not None else f" No thumbnails: {why}.")
    info = write_map(
        path,
        full,
        np.asarray(ids).astype(str),
        images_of,
        cluster=cluster,
        confidence=conf,
        labels=labels,
        class_names=class_names,
        columns=runs.catalog_columns_for(ids, features_dir),
        embedding=z,
        title=title
        or f"galaxy_jax map: {os.path.basename(os.path.dirname(run))}/{os.path.basename(run)}",
        max_points=max_points,
        thumb=thumb,
        n_neighbours=neighbours,
        seed=seed,
        note=note,
    )
    return info
