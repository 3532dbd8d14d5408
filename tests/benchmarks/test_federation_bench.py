"""The federation benchmark end to end at a small size: real matcher and node processes on
loopback with mutual TLS. Its figures must exist, be consistent and be plausible, or the
figures in benchmarks/RESULTS.md prove nothing."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import federation


@pytest.fixture(scope="module")
def run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    figures = federation.run_federation(
        1000, seed=5, emit=rows.append, lookups=60, lookup_seconds=3.0, library=False
    )
    return figures, rows


def test_every_stage_reports(run: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    _, rows = run
    stages = [row["stage"] for row in rows]
    assert stages == ["ingest", "publish", "lookup_c1", "lookup_c32", "lookup_r300", "link"]


def test_publish_and_lookups_are_counted(run: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    figures, _ = run
    assert figures["records"] > 950
    assert figures["publish_records_per_s"] > 0 and figures["matcher_bytes_per_record"] > 0
    for prefix in ("lookup_c1", "lookup_c32", "lookup_r300"):
        # as many as the time allowed (no wall-clock expectation in a test), none failed
        assert 0 < figures[f"{prefix}_count"] <= 60 and figures[f"{prefix}_errors"] == 0
        assert 0 < figures[f"{prefix}_p50_ms"] <= figures[f"{prefix}_p99_ms"]
        assert figures[f"{prefix}_hit_rate"] > 0.9
        # ranked per agency holding the child: first at most as often as among the first five
        assert 0.8 < figures[f"{prefix}_top1"] <= figures[f"{prefix}_top5"] <= 1.0
        assert figures[f"{prefix}_matcher_cpu_ms_per_lookup"] > 0
    # the paced run offers 300 a second: it cannot go faster than that
    assert figures["lookup_r300_per_s"] <= 300 * 1.05


def test_link_quality_is_scored(run: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    figures, _ = run
    assert figures["link_f1"] > 0.95
    assert figures["link_precision"] > 0.95 and figures["link_recall"] > 0.95
