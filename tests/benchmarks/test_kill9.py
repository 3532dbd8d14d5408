"""kill -9 during ingest, publish and link, at four of the benchmark's twenty points: one per
job and process (``jigsaw ingest`` after two chunks committed, ``jigsaw publish`` after three
batches reached the matcher, the matcher after four batches, the matcher mid-link as it starts
comparing). Real CLI processes and a real matcher process, mutual TLS on loopback; after the
restart and the job run to its end, 0 records lost and 0 duplicated in the node store, the
matcher's store and the link result, on 3,000 children with ingest chunks of 500 rows.
``python -m benchmarks.kill9 --report`` runs all twenty on 22,000 children.
"""

from __future__ import annotations

import pytest

from benchmarks import kill9

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_kill_9_loses_and_duplicates_nothing() -> None:
    points = [point for point in kill9.POINTS if point.name in kill9.SUITE_POINTS]
    assert len(points) == len(kill9.SUITE_POINTS) == 4
    outcomes = kill9.run_points(points, children=3000, chunk_rows=500)
    for outcome in outcomes:
        assert outcome.killed, f"{outcome.point}: the job ended before the kill point"
        assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
        assert outcome.counted == outcome.expected > 0, outcome


def test_there_are_twenty_points_over_every_job_and_process() -> None:
    assert len(kill9.POINTS) == 20
    assert {(p.job, p.victim) for p in kill9.POINTS} == {
        ("ingest", "client"),
        ("publish", "client"),
        ("publish", "matcher"),
        ("link", "client"),
        ("link", "matcher"),
    }
