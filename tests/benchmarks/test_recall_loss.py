"""The recall-loss benchmark (benchmarks/recall_loss.py): its categories and one tiny run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import recall_loss
from linkage.synthetic import ERROR_CATEGORIES


def test_each_lost_pair_goes_to_the_first_category_that_fits() -> None:
    dob = ["2014-01-02", None, "2014-01-02", "2014-01-03", "2014-01-02", "2014-01-02"]
    sex = ["f", "f", None, "f", "m", "f"]
    left = np.array([0, 0, 0, 0, 0, 1], dtype=np.int64)
    right = np.array([1, 3, 2, 4, 5, 3], dtype=np.int64)
    assert recall_loss.categorise(left, right, dob, sex) == {
        "dob_missing": 2,  # (0, 1) and (1, 3): a missing date comes first
        "dob_differs": 1,
        "sex_missing": 1,
        "sex_differs": 1,
        "dob_and_sex_agree": 1,
    }


def test_a_tiny_run_accounts_for_every_lost_pair(capsys: pytest.CaptureFixture[str]) -> None:
    recall_loss.main(["--children", "400", "--plain"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["schema"] for r in rows] == ["shipped", "plain"]
    for row in rows:
        shares = sum(row[f"lost_{name}"] for name in recall_loss.CATEGORIES)
        assert shares == pytest.approx(row["lost"] / row["true_pairs"])
        assert row["recall"] == pytest.approx(1 - row["lost"] / row["true_pairs"])
        assert 0.9 < row["precision"] <= 1.0


def test_loss_by_error_counts_pairs_with_the_error_on_either_record() -> None:
    left = np.array([0, 0, 2], dtype=np.int64)
    right = np.array([1, 2, 3], dtype=np.int64)
    lost = np.array([True, False, True])
    unseen = np.array([False, False, True])
    flags = {"dob_day_off": np.array([False, False, True, False])}  # on pairs 2 and 3
    assert recall_loss.by_error(left, right, lost, unseen, flags) == {
        "dob_day_off": {"pairs": 2 / 3, "lost": 1 / 3, "unseen": 1 / 3}
    }


def test_seen_finds_true_pairs_among_candidates_in_either_order() -> None:
    left = np.array([0, 1, 2], dtype=np.int64)
    right = np.array([1, 3, 3], dtype=np.int64)
    candidates = (np.array([3, 1, 0], dtype=np.int64), np.array([1, 0, 2], dtype=np.int64))
    seen = recall_loss._seen(left, right, *candidates, 4)
    assert seen.tolist() == [True, True, False]


def test_duplicates_are_scored_on_pairs_within_one_agency(
    capsys: pytest.CaptureFixture[str],
) -> None:
    recall_loss.main(["--children", "400", "--profile", "hard"])
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert 0 < row["dup_f1"] <= 1
    assert row["recall"] <= row["pair_completeness"] + 0.02  # a pair never seen is rarely linked


def test_a_tiny_hard_run_reports_loss_by_every_error_category(
    capsys: pytest.CaptureFixture[str],
) -> None:
    recall_loss.main(["--children", "400", "--profile", "hard"])
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["profile"] == "hard"
    assert set(row["by_error"]) == set(ERROR_CATEGORIES)
    for shares in row["by_error"].values():
        assert 0 <= shares["lost"] <= shares["pairs"] <= 1
        assert 0 <= shares["unseen"] <= shares["pairs"]
        assert shares["lost"] <= row["lost"] / row["true_pairs"] + 1e-12
    assert row["by_error"]["moved_house"]["pairs"] > 0
