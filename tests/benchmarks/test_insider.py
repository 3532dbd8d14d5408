"""Insider probing (benchmarks/insider.py) on real matcher processes with mutual TLS.

Small limits make every stage of the matcher's defence happen within seconds: the first
burst, the token bucket's refusals, the audited enumeration alert and the hourly cap. The
figures must follow from the limits exactly, so a matcher that stopped limiting ``Match``
(or stopped auditing the alert) fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.insider import insider_report, run_insider

#: 2 per second after a burst of 5; alert above 8 in an hour; never more than 12 an hour.
SMALL_LIMITS = {
    "matches_per_minute": "120",
    "burst": "5",
    "enumeration_alert_per_hour": "8",
    "max_matches_per_hour": "12",
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_insider(
        children=150,
        seed=3,
        probe_seconds=6.0,
        population=1000,
        unlimited_seconds=1.5,
        limits=SMALL_LIMITS,
        workdir=tmp_path_factory.mktemp("insider"),
    )


def test_the_matcher_limits_a_node_that_probes_it(probed: dict[str, Any]) -> None:
    assert probed["indexed_records"] > 150  # several records per child were published
    # the bucket's burst, then refusals (one more token refills only if 5 calls take 0.5 s)
    assert probed["burst_accepted"] in (5, 6)
    assert probed["accepted"] == 12  # the hourly cap: nothing more within the probe
    assert probed["refused"] >= 1
    assert probed["alert_raised"] is True
    # the first call above the threshold raises it, refused or not: within the first 9 calls,
    # after the burst
    assert probed["burst_accepted"] <= probed["alert_after_accepted"] <= 9
    assert probed["configured_max_matches_per_hour"] == 12.0
    # with the cap binding, a day is 24 hourly caps
    assert probed["tests_per_day"] == pytest.approx(24 * 12)
    assert probed["days_for_population"] == pytest.approx(1000 / (24 * 12))


def test_without_limits_the_insider_is_much_faster(probed: dict[str, Any]) -> None:
    assert probed["unlimited_per_minute"] > 20 * probed["sustained_per_minute"]


def test_probes_of_real_children_are_confirmed(probed: dict[str, Any]) -> None:
    # every guess is a real child's identifiers, so most come back with a high band
    assert probed["confirmed_share"] > 0.5


def test_the_report_states_the_figures(probed: dict[str, Any], tmp_path: Path) -> None:
    text = insider_report(probed)
    assert f"| calls accepted in the first burst | {probed['burst_accepted']} |" in text
    assert f", {probed['alert_after_accepted']:,} calls accepted before it" in text
