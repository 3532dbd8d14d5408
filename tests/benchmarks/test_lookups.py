"""benchmarks.lookups on a small population: the rows it reports, and the saltings it runs."""

from __future__ import annotations

import json

import pytest

from benchmarks import lookups
from benchmarks.salting_choice import VARIANTS


def test_rows_hold_shares_for_every_hypothesis_and_floor() -> None:
    rows = lookups.run(400, "hard", 40, 3, "childrens_social_care", "health")
    assert [(r["hypotheses"], r["floor"]) for r in rows] == [
        (h, f) for h in ("no", "yes") for f in (lookups.POSSIBLE, 0.1)
    ]
    for row in rows:
        assert 0 < row["lookups"] <= 40 and row["absent_lookups"] > 0
        assert 0.0 <= row["top1"] <= row["top5"] <= 1.0
        assert row["top5"] + row["none"] <= 1.0
    # a lower floor admits at least the candidates a higher one does
    assert rows[1]["none"] <= rows[0]["none"]
    assert rows[1]["absent_any"] >= rows[0]["absent_any"]


def test_a_salting_is_run_under_its_own_schema_and_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = "shipped + full name by sex"
    assert name in VARIANTS
    lookups.main(["--children", "300", "--lookups", "20", "--profile", "hard", "--salting", name])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4 and all(r["salting"] == name for r in rows)


def test_an_unknown_salting_is_refused() -> None:
    with pytest.raises(SystemExit):
        lookups.main(["--salting", "no such salting"])
