"""A survey catalog as the dataset: one row per galaxy, CSV or Parquet (read with pyarrow).

  data.name = 'catalog'
  data.catalog_path          the .csv or .parquet file
  data.catalog_id_column     a unique id per row (default 'id_str', Zoobot's convention)
  data.catalog_path_column   the galaxy's file (default 'file_loc'): .jpg, .png, .fits or .npy;
                             relative paths resolve against the catalog's folder
  data.catalog_bands         e.g. ('g', 'r', 'z'): the path holds '{band}' and each band is its own
                             file (single-band FITS or .npy), stacked in this order
  data.label_column          optional class names ('' for none; empty cells are unknown, -1)

Every other column (ra, dec, redshift, ...) is carried through unchanged, row for row, in the
ImageSource's `columns`, and from there into the exports (clusters.csv / clusters.parquet). Rows
keep the catalog's order, less the rows left out as bad input (each listed in the skip report).
FITS and array files are stretched to RGB as galaxy_jax.data.fits describes (data.fits_* fields).
"""

from __future__ import annotations

import os

import numpy as np

from galaxy_jax.data import fits
from galaxy_jax.data.bad_input import BadInput
from galaxy_jax.data.folder import _finish
from galaxy_jax.data.image_source import ImageSource
from galaxy_jax.errors import UserError

CATALOG_FORMATS = (".csv", ".parquet", ".pq")


def read_table(path: str, text_columns=()):
    """The catalog as a pyarrow Table; UserError naming the file if it cannot be read.
    text_columns (ids, paths, labels) are read as text as written, never as numbers (a CSV's
    type guess would turn 000123 into 123, or a large integer id with a blank cell into a float).
    """
    import pyarrow as pa
    import pyarrow.csv
    import pyarrow.parquet

    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise UserError(f"data.catalog_path: no such file {path!r}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in CATALOG_FORMATS:
        raise UserError(f"{path}: a catalog must be {', '.join(CATALOG_FORMATS)}")
    try:
        if ext == ".csv":
            types = {c: pa.string() for c in text_columns}  # absent names are ignored
            return pyarrow.csv.read_csv(
                path, convert_options=pyarrow.csv.ConvertOptions(column_types=types)
            )
        return pyarrow.parquet.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"{path}: cannot read the catalog ({type(e).__name__}: {e})") from None


def _column(table, name: str, path: str) -> np.ndarray:
    if name not in table.column_names:
        shown = ", ".join(table.column_names[:15])
        raise UserError(f"{path}: no column {name!r}; the catalog has {shown}")
    return table.column(name).to_numpy(zero_copy_only=False)


def _text(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # a Parquet float column of integer ids
    return str(value)


def make_catalog_source(data_config, report_path: str | None = None) -> ImageSource:
    """The ImageSource of a catalog (module docstring)."""
    d = data_config
    path = os.path.abspath(os.path.expanduser(d.catalog_path))
    text = [c for c in (d.catalog_id_column, d.catalog_path_column, d.label_column) if c]
    table = read_table(path, text)
    if table.num_rows == 0:
        raise UserError(f"{path}: the catalog has no rows")
    root = os.path.dirname(path)
    id_col, path_col, label_col = d.catalog_id_column, d.catalog_path_column, d.label_column
    ids_raw = [_text(v).strip() for v in _column(table, id_col, path)]
    locs = [_text(v).strip() for v in _column(table, path_col, path)]
    labels_raw = [_text(v).strip() for v in _column(table, label_col, path)] if label_col else None
    bands = tuple(d.catalog_bands)
    reader = fits.FitsReader(fits.FitsOptions.from_config(d))
    bad = BadInput(d.on_bad_input)
    rows, paths, seen = [], [], {}
    for r, (gid, loc) in enumerate(zip(ids_raw, locs, strict=True)):
        row_no = r + 2 if path.lower().endswith(".csv") else r  # CSV: line; Parquet: row
        if not gid:
            bad.add(path, f"empty {id_col}", row=row_no)
            continue
        if gid in seen:
            bad.add(path, f"duplicate id {gid} (also row {seen[gid]}; later row left out)", row_no)
            continue
        seen[gid] = row_no
        if not loc:
            bad.add(path, f"empty {path_col}", row=row_no, id=gid)
            continue
        full = loc if os.path.isabs(loc) else os.path.join(root, os.path.expanduser(loc))
        if bands:
            if "{band}" not in loc:
                bad.add(path, f"{path_col} {loc!r} has no {{band}} for catalog_bands", row_no, gid)
                continue
            files = tuple(full.replace("{band}", b) for b in bands)
        else:
            files = (full,)
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            bad.add(missing[0], f"file not found (listed in {path})", row=row_no, id=gid)
            continue
        rows.append(r)
        paths.append(files if bands else full)
    if not paths:
        raise UserError(f"{path}: no row names a readable file; see the messages above")
    ids = [ids_raw[r] for r in rows]
    labels, class_names = None, ()
    if labels_raw is not None:
        class_names = tuple(sorted({labels_raw[r] for r in rows if labels_raw[r]}))
        index = {c: i for i, c in enumerate(class_names)}
        labels = np.asarray([index.get(labels_raw[r], -1) for r in rows], np.int32)
    idx = np.asarray(rows)
    columns = {
        name: _column(table, name, path)[idx]
        for name in table.column_names
        if name not in (id_col, path_col)
    }
    return _finish(paths, ids, labels, class_names, bad, d, report_path, columns, reader)
