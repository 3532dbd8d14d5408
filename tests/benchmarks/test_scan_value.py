"""Tests for benchmarks.scan_value: the figures the matcher's scan policy rests on."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import scan_value


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    return scan_value.run(children=400, lookups=80, seed=3)


def test_one_row_per_policy_then_the_misses(rows: list[dict[str, Any]]) -> None:
    assert [r.get("policy") for r in rows[:-1]] == [name for name, _ in scan_value.POLICIES]
    misses = rows[-1]
    assert isinstance(misses["misses"], int) and isinstance(misses["misses_the_model_rejects"], int)
    assert 0 <= misses["misses_the_model_rejects"] <= misses["misses"] <= 80


def test_recall_is_measured_and_never_scanning_cannot_find_more(
    rows: list[dict[str, Any]],
) -> None:
    recall = {r["policy"]: r["record_recall"] for r in rows[:-1]}
    assert all(isinstance(v, float) and 0.5 < v <= 1.0 for v in recall.values())
    # the scan only adds candidates, so skipping it finds at most as many records (seeded data;
    # a scanned stranger could in principle push a record out of the ten kept)
    assert recall["scan_never"] <= recall["scan_always"]
    assert recall["scan_unless_one_confident"] <= recall["scan_always"]
    assert all(r["lookups"] == 80 for r in rows)
