"""The EM-at-scale benchmark runs and reports one row per setting (tiny population)."""

from __future__ import annotations

import json

import pytest

from benchmarks import em_scale


def test_em_scale_prints_one_row_per_setting(capsys: pytest.CaptureFixture[str]) -> None:
    em_scale.main(["--children", "1500", "--classes", "2", "4", "--min-shared-keys", "1", "2"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["em_classes"], r["fit_min_shared_keys"]) for r in rows] == [
        (2, 1),
        (2, 2),
        (4, 1),
        (4, 2),
    ]
    for row in rows:
        assert row["fit_pairs"] <= row["candidates"]
        # two classes fitted on every candidate is the weakest setting: 0.899 precision here,
        # where 85 % of the candidates are matches (exact-filter blocking on 1,500 children)
        assert 0.85 < row["pairwise_precision"] <= 1.0 and 0.9 < row["pairwise_recall"] <= 1.0
    default = rows[3]  # four classes fitted on the pairs sharing two keys: the defaults
    assert default["pairwise_precision"] > 0.95 and default["pairwise_recall"] > 0.95
    # the subset EM fits on is richer in true matches than the candidates as a whole
    assert rows[1]["fit_match_share"] > rows[0]["fit_match_share"]
