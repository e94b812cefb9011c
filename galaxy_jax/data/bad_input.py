"""Bad input: one place that decides between stopping and skipping, and keeps the record.

With on_bad_input='raise' (the default) the first problem raises a UserError naming the file
and row. With 'skip' every problem is collected, the item is left out, and `finish` writes the
list to a JSON report and prints the counts: nothing is dropped without a trace.
"""

from __future__ import annotations

import collections
import csv
import difflib
import io
import os

import numpy as np
from absl import logging
from PIL import Image

from galaxy_jax import atomic as gio
from galaxy_jax.data.preprocess import to_rgb_np
from galaxy_jax.errors import UserError

ON_BAD_INPUT = ("raise", "skip")


class BadInput:
    """Collects problems {'file', 'row', 'id', 'problem'}; raises at once in 'raise' mode."""

    def __init__(self, on_bad_input: str = "raise"):
        if on_bad_input not in ON_BAD_INPUT:
            raise UserError(
                f"on_bad_input must be one of {', '.join(ON_BAD_INPUT)}, got {on_bad_input!r}"
            )
        self.mode = on_bad_input
        self.problems: list[dict] = []

    def add(self, file: str, problem: str, row: int | None = None, id: str | None = None):
        entry = {
            "file": str(file),
            "row": row,
            "id": None if id is None else str(id),
            "problem": problem,
        }
        if self.mode == "raise":
            where = f"{file}" + (f", row {row}" if row is not None else "")
            raise UserError(
                f"{where}: {problem}. Fix it, or set on_bad_input='skip' to leave such items out "
                "and list them in a report."
            )
        self.problems.append(entry)

    def extend(self, problems: list[dict]):
        for p in problems:
            self.add(p["file"], p["problem"], row=p.get("row"), id=p.get("id"))

    def bad_ids(self) -> set[str]:
        return {p["id"] for p in self.problems if p["id"] is not None}

    def finish(self, report_path: str | None, kept: int) -> dict:
        """Writes the report (when anything was skipped) and prints the counts; returns them."""
        kinds = collections.Counter(p["problem"].split(":")[0] for p in self.problems)
        summary = {"kept": kept, "skipped": len(self.problems), "by_problem": dict(kinds)}
        if self.problems:
            report_path = report_path or os.path.abspath("bad_input_report.json")
            gio.write_json(report_path, {"summary": summary, "problems": self.problems})
            print(
                f"Skipped {len(self.problems):,} bad inputs, kept {kept:,}; listed in {report_path}"
            )
            for kind, n in kinds.most_common():
                print(f"  {n:>7,}  {kind}")
            logging.warning("Skipped %d bad inputs; report %s", len(self.problems), report_path)
        return summary


def decode_image(data_or_path, name: str, size: int = 0) -> np.ndarray:
    """JPEG/PNG bytes or a path -> [H, W, 3] uint8; UserError naming `name` if it will not decode.

    A truncated JPEG raises here: PIL's LOAD_TRUNCATED_IMAGES stays False on purpose, so grey
    padding never passes for data. `size` > 0 resizes to size x size (bilinear) after decoding.
    """
    try:
        if isinstance(data_or_path, (bytes, bytearray)):
            data_or_path = io.BytesIO(data_or_path)
        with Image.open(data_or_path) as im:
            im.load()
            if im.mode not in ("RGB", "L", "RGBA"):
                im = im.convert("RGB")
            if size and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return to_rgb_np(np.asarray(im))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from None


def read_csv(path: str, required: tuple[str, ...], what: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV; UserError naming missing (or renamed) columns and the file."""
    if not os.path.isfile(path):
        raise UserError(f"{what} CSV not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path}: cannot read CSV ({e})") from None
    if not header:
        raise UserError(f"{path}: the CSV is empty (no header row)")
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        hints = []
        unused = [h for h in header if h not in required]
        norm = lambda name: "".join(ch for ch in name.lower() if ch.isalnum())
        for c in missing:
            same = [h for h in unused if norm(h) == norm(c)]  # Class1.1 vs class1_1
            close = same or difflib.get_close_matches(c, unused, n=1, cutoff=0.6)
            if close:
                hints.append(f"{c!r} (renamed to {close[0]!r}?)")
        hint = f" Possibly renamed: {', '.join(hints)}." if hints else ""
        shown = ", ".join(header[:12]) + (", ..." if len(header) > 12 else "")
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; the header has {shown}.{hint}"
        )
    if not rows:
        raise UserError(f"{path}: the CSV has a header but no rows")
    return header, rows
