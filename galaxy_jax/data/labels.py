"""Galaxy Zoo vote fractions -> elliptical / spiral labels, and the checks on the vote table.

Question 1 of the Galaxy Zoo 2 tree asks "smooth (1.1), features or disc (1.2), or star /
artifact (1.3)?". Both rules read only these three fractions:
  dominant: elliptical if 1.1 is the strict maximum, spiral if 1.2 is; galaxies where 1.3 is the
            maximum, or where the maximum is tied, are excluded.
  clean:    elliptical if 1.1 >= t, spiral if 1.2 >= t, the rest excluded (t = 0.8 by default).
"Elliptical" is shorthand for "smooth": the Kaggle table has no morphology beyond the votes.
"""

from __future__ import annotations

import numpy as np

from galaxy_jax.errors import UserError

# The 37 vote-fraction columns of Kaggle's training_solutions_rev1.csv, in file order.
VOTE_COLUMNS = tuple(
    f"Class{q}.{a}"
    for q, answers in [
        (1, 3),
        (2, 2),
        (3, 2),
        (4, 2),
        (5, 4),
        (6, 2),
        (7, 3),
        (8, 7),
        (9, 3),
        (10, 3),
        (11, 6),
    ]
    for a in range(1, answers + 1)
)
ID_COLUMN = "GalaxyID"
CLASS_NAMES = ("elliptical", "spiral")
ELLIPTICAL, SPIRAL, EXCLUDED = 0, 1, -1
LABEL_RULES = ("dominant", "clean")


def apply_label_rule(q1: np.ndarray, rule: str, threshold: float = 0.8) -> np.ndarray:
    """Labels from the Question 1 fractions.

    Args:
      q1: [N, 3] float, columns Class1.1, Class1.2, Class1.3 (or [N, 37], the full table).
      rule: 'dominant' or 'clean' (see the module docstring).
      threshold: t of the 'clean' rule, in (0.5, 1]; above 0.5 the two classes cannot overlap.
    Returns:
      [N] int32: 0 elliptical, 1 spiral, -1 excluded.
    """
    q1 = np.asarray(q1, np.float64)[:, :3]
    labels = np.full(len(q1), EXCLUDED, np.int32)
    if rule == "dominant":
        top = q1.max(axis=1)
        unique_top = (q1 == top[:, None]).sum(axis=1) == 1
        labels[unique_top & (q1[:, 0] == top)] = ELLIPTICAL
        labels[unique_top & (q1[:, 1] == top)] = SPIRAL
    elif rule == "clean":
        if not 0.5 < threshold <= 1.0:
            raise UserError(f"clean_threshold must be in (0.5, 1], got {threshold}")
        labels[q1[:, 0] >= threshold] = ELLIPTICAL
        labels[q1[:, 1] >= threshold] = SPIRAL
    else:
        raise UserError(f"Unknown label_rule {rule!r}; known rules: {', '.join(LABEL_RULES)}.")
    return labels


def label_counts(q1: np.ndarray, labels: np.ndarray, rule: str) -> dict[str, int]:
    """Counts per class and per reason for exclusion, for printing next to a rule's output."""
    q1 = np.asarray(q1, np.float64)[:, :3]
    excluded = labels == EXCLUDED
    counts = {
        "elliptical": int((labels == ELLIPTICAL).sum()),
        "spiral": int((labels == SPIRAL).sum()),
        "excluded": int(excluded.sum()),
    }
    if rule == "dominant":
        top = q1.max(axis=1)
        tied = (q1 == top[:, None]).sum(axis=1) > 1
        counts["excluded_star_artifact"] = int((excluded & ~tied & (q1[:, 2] == top)).sum())
        counts["excluded_tie"] = int((excluded & tied).sum())
    return counts


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def check_vote_rows(votes: np.ndarray, ids, source: str, first_row: int = 2) -> list[dict]:
    """Problems in a vote table: NaN or out-of-range fractions and duplicate ids.

    Args:
      votes: [N, 37] float fractions; ids: [N] GalaxyIDs; source: the file name for messages;
      first_row: the file line of votes[0] (2 for a CSV with a header).
    Returns:
      One {'file', 'row', 'id', 'problem'} dict per bad row; the caller raises or skips.
    """
    problems = []
    votes = np.asarray(votes, np.float64)
    bad_value = ~np.isfinite(votes) | (votes < 0.0) | (votes > 1.0)
    for i in np.flatnonzero(bad_value.any(axis=1)):
        cols = [f"{VOTE_COLUMNS[j]}={float(votes[i, j])!r}" for j in np.flatnonzero(bad_value[i])]
        problems.append(
            {
                "file": source,
                "row": int(i + first_row),
                "id": str(ids[i]),
                "problem": f"vote fraction NaN or outside [0, 1]: {', '.join(cols)}",
            }
        )
    seen: dict[str, int] = {}
    for i, gid in enumerate(ids):
        gid = str(gid)
        if gid in seen:
            problems.append(
                {
                    "file": source,
                    "row": i + first_row,
                    "id": gid,
                    "problem": f"duplicate {ID_COLUMN} {gid} (first on row {seen[gid]})",
                }
            )
        else:
            seen[gid] = i + first_row
    return problems
