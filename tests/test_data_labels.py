"""Label rules on hand-made Question 1 rows."""

import numpy as np
import pytest

from galaxy_jax.data import labels as L
from galaxy_jax.errors import UserError

ROWS = np.array(
    [
        [0.70, 0.25, 0.05],  # smooth dominates
        [0.20, 0.75, 0.05],  # features/disc dominates
        [0.30, 0.30, 0.40],  # star/artifact dominates
        [0.45, 0.45, 0.10],  # tie between smooth and disc
        [0.85, 0.10, 0.05],  # clean elliptical
        [0.05, 0.90, 0.05],  # clean spiral
        [0.80, 0.20, 0.00],  # exactly at t = 0.8
    ]
)


def test_dominant_rule():
    got = L.apply_label_rule(ROWS, "dominant")
    np.testing.assert_array_equal(got, [0, 1, -1, -1, 0, 1, 0])
    counts = L.label_counts(ROWS, got, "dominant")
    assert counts == {
        "elliptical": 3,
        "spiral": 2,
        "excluded": 2,
        "excluded_star_artifact": 1,
        "excluded_tie": 1,
    }


def test_clean_rule_default_and_custom_threshold():
    np.testing.assert_array_equal(L.apply_label_rule(ROWS, "clean"), [-1, -1, -1, -1, 0, 1, 0])
    np.testing.assert_array_equal(L.apply_label_rule(ROWS, "clean", 0.72), [-1, 1, -1, -1, 0, 1, 0])


def test_rules_accept_the_full_37_columns():
    full = np.concatenate([ROWS, np.zeros((len(ROWS), 34))], axis=1)
    np.testing.assert_array_equal(
        L.apply_label_rule(full, "dominant"), L.apply_label_rule(ROWS, "dominant")
    )


def test_bad_rule_and_threshold():
    with pytest.raises(UserError, match="dominant, clean"):
        L.apply_label_rule(ROWS, "majority")
    with pytest.raises(UserError, match="clean_threshold"):
        L.apply_label_rule(ROWS, "clean", 0.4)


def test_vote_columns_are_kaggles_37():
    assert len(L.VOTE_COLUMNS) == 37
    assert L.VOTE_COLUMNS[:4] == ("Class1.1", "Class1.2", "Class1.3", "Class2.1")
    assert L.VOTE_COLUMNS[-1] == "Class11.6"


def test_check_vote_rows_names_rows():
    votes = np.full((3, 37), 0.5)
    votes[1, 4] = np.nan
    votes[2, 0] = 1.5
    problems = L.check_vote_rows(votes, ["1", "2", "1"], "x.csv")
    rows = sorted((p["row"], p["problem"].split(":")[0].split(" ")[0]) for p in problems)
    assert rows == [(3, "vote"), (4, "duplicate"), (4, "vote")]
    assert "Class2.2=nan" in problems[0]["problem"]
