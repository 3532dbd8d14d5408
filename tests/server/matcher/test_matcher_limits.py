"""Tests for the matcher's limits on a real matcher with a fake clock: Match per node and per
person, the enumeration alert, the hourly cap, and AnchorHead."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto.jigsaw.v1 import jigsaw_pb2
from proto.jigsaw.v1.transport import retry_after_from_metadata
from server.common.anchor import Signer
from server.common.audit import verify_audit_log
from server.common.tls import tls_files_for
from server.matcher.config import AnchorLimitConfig
from tests.helpers.matcher import FakeClock, Running, matcher_config
from tests.helpers.matcher_population import (
    TIMEOUT,
    AgencyEncodings,
    audit_entries,
    error_of,
    match,
    publish,
    status,
)

# ------------------------------------------------------------------------------ match limits


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(tmp_path: Path, pki_dir: Path, clock: FakeClock) -> Iterator[Running]:
    """A matcher with small match limits on a fake clock: burst 3 at 60 a minute (one a
    second), an alert above 5 calls an hour, a cap of 8 answered calls an hour, and all of it
    open to one person (the per-person shares have tests of their own)."""
    limits = (
        "matches_per_minute = 60\nburst = 3\n"
        "enumeration_alert_per_hour = 5\nmax_matches_per_hour = 8\nperson_share = 1.0"
    )
    running = Running(matcher_config(tmp_path, pki_dir, match_limits=limits), pki_dir, clock=clock)
    yield running
    running.stop()


def refused_matches(entries: list[dict[str, Any]], person: str | None = None) -> int:
    """Match calls refused by the limits, as the refusal entries count them."""
    return sum(
        e["details"].get("match.rate_limited", 0)
        for e in entries
        if e["action"] == "refused"
        and (person is None or e["details"].get("on_behalf_of") == person)
    )


def refused(matcher: Running, identity: str, query: jigsaw_pb2.EncodedRecord) -> float:
    """Match as ``identity`` expecting RESOURCE_EXHAUSTED; the retry-after delay it carries."""
    with pytest.raises(grpc.RpcError) as caught:
        match(matcher, identity, query)
    error = error_of(caught.value)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in (error.details() or "")
    retry_after = retry_after_from_metadata(error.trailing_metadata())
    assert retry_after is not None and retry_after > 0
    return retry_after


def test_match_over_burst_is_refused_with_retry_after_and_audited(
    limited: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    for _ in range(3):  # the burst (an empty index answers with no candidates)
        assert match(limited, "police-node", query).candidates == []
    assert refused(limited, "police-node", query) == pytest.approx(1.0)
    # checked before any decoding: a malformed request over the limit is refused the same way
    with pytest.raises(grpc.RpcError) as caught:
        match(limited, "police-node", query, purpose_code="")
    assert error_of(caught.value).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    clock.advance(1.0)  # one token back
    assert match(limited, "police-node", query).candidates == []
    assert refused(limited, "police-node", query) == pytest.approx(1.0)

    entries = audit_entries(limited)
    matches = [e for e in entries if e["action"] == "match"]
    assert [e["outcome"] for e in matches] == ["ok"] * 4  # refusals are counted, not listed
    for entry in matches:
        assert entry["actor"] == "police-node"
        assert entry["details"]["caller_agency"] == "police"  # type: ignore[index]
    assert refused_matches(entries) == 3
    assert {e["actor"] for e in entries if e["action"] == "refused"} == {"police-node"}
    assert verify_audit_log(limited.config.audit_log).ok


def test_enumeration_alert_is_written_once_per_burst(
    limited: Running,
    clock: FakeClock,
    population: dict[str, AgencyEncodings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    query = population["police"].records([0])[0]
    caplog.set_level(logging.WARNING, logger="server.matcher.service")
    for _ in range(8):  # a second apart: the bucket never refuses; 6th call crosses 5
        match(limited, "police-node", query)
        clock.advance(1.0)
    alerts = [e for e in audit_entries(limited) if e["action"] == "enumeration_alert"]
    assert len(alerts) == 1
    assert alerts[0]["actor"] == "police-node"
    assert alerts[0]["outcome"] == "alert"
    assert alerts[0]["details"] == {
        "caller_agency": "police",
        "matches_in_window": 6,
        "threshold": 5,
        "window_seconds": 3600,
    }
    entries = audit_entries(limited)
    first_alert = next(i for i, e in enumerate(entries) if e["action"] == "enumeration_alert")
    assert sum(e["action"] == "match" for e in entries[:first_alert]) == 5
    warnings = [r.getMessage() for r in caplog.records if "enumeration alert" in r.getMessage()]
    assert warnings == ["enumeration alert: caller police-node over the match threshold"]

    clock.advance(3600.0)  # the hour slides past the burst: the next burst alerts again
    for _ in range(6):
        match(limited, "police-node", query)
        clock.advance(1.0)
    alerts = [e for e in audit_entries(limited) if e["action"] == "enumeration_alert"]
    assert len(alerts) == 2


def test_refused_calls_count_towards_the_enumeration_alert(
    limited: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    for _ in range(3):  # the burst, answered
        match(limited, "police-node", query)
    for _ in range(2):  # refused by the bucket on a frozen clock: 5 attempts, at the threshold
        refused(limited, "police-node", query)
    assert not [e for e in audit_entries(limited) if e["action"] == "enumeration_alert"]
    refused(limited, "police-node", query)  # the 6th attempt crosses it, answered or not
    refused(limited, "police-node", query)  # one alert per burst
    entries = audit_entries(limited)
    alerts = [e for e in entries if e["action"] == "enumeration_alert"]
    assert [(e["actor"], e["details"]["matches_in_window"]) for e in alerts] == [  # type: ignore[index]
        ("police-node", 6)
    ]
    # the refusals are still counted per node and person per interval (each read above
    # closed an interval), not written one entry each
    assert [e["outcome"] for e in entries if e["action"] == "match"] == ["ok"] * 3
    assert sum(e["action"] == "refused" for e in entries) == 2
    assert refused_matches(entries) == 4


def test_hourly_cap_refuses_until_a_slot_frees(
    limited: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    for _ in range(8):  # the cap: 8 answered calls, 10 s apart (t = 0 .. 70)
        match(limited, "health-node", query)
        clock.advance(10.0)
    # at t = 80 the bucket is full again, but the hour is not over: the call at t = 0 leaves
    # the window at t = 3600
    assert refused(limited, "health-node", query) == pytest.approx(3520.0)
    clock.advance(10.0)
    assert refused(limited, "health-node", query) == pytest.approx(3510.0)
    clock.advance(3510.0)
    assert match(limited, "health-node", query).candidates == []  # one slot freed
    assert refused(limited, "health-node", query) == pytest.approx(10.0)  # the next at t = 10

    entries = audit_entries(limited)
    outcomes = [e["outcome"] for e in entries if e["action"] == "match"]
    assert outcomes == ["ok"] * 9 and refused_matches(entries) == 3
    # calls refused by the cap still count towards the alert: one alert, at the 6th call
    assert sum(e["action"] == "enumeration_alert" for e in entries) == 1


def test_alert_comes_even_when_the_cap_equals_the_threshold(
    tmp_path: Path, pki_dir: Path, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    limits = (
        "burst = 100\nenumeration_alert_per_hour = 4\nmax_matches_per_hour = 4\nperson_share = 1.0"
    )
    running = Running(matcher_config(tmp_path, pki_dir, match_limits=limits), pki_dir, clock=clock)
    try:
        query = population["police"].records([0])[0]
        for _ in range(4):
            match(running, "school-node", query)
        assert audit_entries(running)[-1]["action"] == "match"
        refused(running, "school-node", query)
        refused(running, "school-node", query)
        entries = audit_entries(running)
        actions = [(e["action"], e["outcome"]) for e in entries]
        assert actions[4:] == [("enumeration_alert", "alert"), ("refused", "refused")]
        assert refused_matches(entries) == 2
    finally:
        running.stop()


def test_one_node_over_its_limits_does_not_limit_another(
    limited: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    for _ in range(3):
        match(limited, "police-node", query)
    refused(limited, "police-node", query)
    for _ in range(3):  # health's node has its own bucket
        assert match(limited, "health-node", query).candidates == []
    refused(limited, "health-node", query)
    for _ in range(5):  # police's node runs into its hourly cap (8) ...
        clock.advance(1.0)
        match(limited, "police-node", query)
    clock.advance(60.0)
    refused(limited, "police-node", query)
    for _ in range(3):  # ... and health's node still has all but 3 of its 8
        match(limited, "health-node", query)
    entries = audit_entries(limited)
    alerts = [e["actor"] for e in entries if e["action"] == "enumeration_alert"]
    assert alerts == ["police-node", "health-node"]  # each at its own 6th counted call


@pytest.fixture
def shared(tmp_path: Path, pki_dir: Path, clock: FakeClock) -> Iterator[Running]:
    """A matcher whose nodes' budgets are shared by their people on a fake clock: per node a
    burst of 4 at 60 a minute and a cap of 8 calls an hour; per person a quarter of each (a
    burst of 1 at 15 a minute, 2 calls an hour)."""
    limits = (
        "matches_per_minute = 60\nburst = 4\n"
        "enumeration_alert_per_hour = 8\nmax_matches_per_hour = 8\nperson_share = 0.25"
    )
    running = Running(matcher_config(tmp_path, pki_dir, match_limits=limits), pki_dir, clock=clock)
    yield running
    running.stop()


def match_as(
    matcher: Running, person: str, query: jigsaw_pb2.EncodedRecord, rows: int = 1
) -> jigsaw_pb2.MatchResponse:
    """A lookup by ``person`` through the police node, of ``rows`` query rows."""
    return match(matcher, "police-node", query, on_behalf_of=person, queries=[query] * rows)


def refused_as(matcher: Running, person: str, query: jigsaw_pb2.EncodedRecord) -> float:
    with pytest.raises(grpc.RpcError) as caught:
        match_as(matcher, person, query)
    error = error_of(caught.value)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = retry_after_from_metadata(error.trailing_metadata())
    assert retry_after is not None and retry_after > 0
    return retry_after


def test_one_person_flooding_cannot_refuse_a_colleagues_first_lookup(
    shared: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    match_as(shared, "alice", query)
    for _ in range(20):  # alice floods: her own bucket (one call) refuses her, not the node's
        assert refused_as(shared, "alice", query) == pytest.approx(4.0)  # 15 a minute
    match_as(shared, "bob", query)  # colleagues' first lookups are answered
    match_as(shared, "carol", query)
    clock.advance(4.0)
    match_as(shared, "alice", query)  # her hourly share (2) is spent ...
    for _ in range(20):
        clock.advance(4.0)
        assert refused_as(shared, "alice", query) > 3000  # ... until the hour moves on
    for person in ("dave", "erin"):  # the node still has room for the others
        match_as(shared, person, query)
    entries = audit_entries(shared)
    assert refused_matches(entries) == refused_matches(entries, "alice") == 40


def test_a_refused_lookup_charges_no_budget(
    shared: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    people = ("alice", "bob", "carol", "dave")
    for person in people:  # a lookup is one call whatever its rows (3: no sex given)
        match_as(shared, person, query, rows=3)
    refusals = 0
    for _ in range(10):  # refused by the buckets (theirs and the node's), on a frozen clock
        for person in people:
            refused_as(shared, person, query)
            refusals += 1
    clock.advance(4.0)
    for person in people:  # the node's hourly budget (8) is as the refusals found it: 4 left
        match_as(shared, person, query, rows=3)
    # now the node's cap is spent: erin is refused by it, until the first calls leave the hour
    wait = refused_as(shared, "erin", query)
    assert wait == pytest.approx(3600.0 - 4.0)
    for _ in range(5):
        clock.advance(4.0)
        refused_as(shared, "erin", query)
    clock.advance(wait)  # the hour has slid past every call: erin's refusals cost her nothing
    match_as(shared, "erin", query)
    clock.advance(4.0)
    match_as(shared, "erin", query)  # her whole share (2)
    entries = audit_entries(shared)
    outcomes = [e["outcome"] for e in entries if e["action"] == "match"]
    assert outcomes.count("ok") == 8 + 2
    assert refused_matches(entries) == refusals + 6


# ------------------------------------------------------------------------------ anchor limits


def test_anchor_head_is_limited_per_node_with_an_alert(
    tmp_path: Path, pki_dir: Path, clock: FakeClock
) -> None:
    config = replace(
        matcher_config(tmp_path, pki_dir),
        anchor_limits=AnchorLimitConfig(anchors_per_minute=6.0, burst=2, alert_per_hour=3),
    )
    running = Running(config, pki_dir, clock=clock)
    try:

        def anchor(identity: str, seq: int) -> jigsaw_pb2.AnchorHeadResponse:
            head = Signer.from_tls(tls_files_for(pki_dir, identity)).sign_head(seq, "ab" * 32)
            request = jigsaw_pb2.AnchorHeadRequest(head=head.to_proto())
            response: jigsaw_pb2.AnchorHeadResponse = running.stub(identity).AnchorHead(
                request, timeout=TIMEOUT
            )
            return response

        def refused_anchor(request: jigsaw_pb2.AnchorHeadRequest) -> float:
            with pytest.raises(grpc.RpcError) as caught:
                running.stub("police-node").AnchorHead(request, timeout=TIMEOUT)
            error = error_of(caught.value)
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            wait = retry_after_from_metadata(error.trailing_metadata())
            assert wait is not None
            return wait

        anchor("police-node", 1)
        anchor("police-node", 2)  # the burst
        signed = Signer.from_tls(tls_files_for(pki_dir, "police-node")).sign_head(3, "cd" * 32)
        assert refused_anchor(
            jigsaw_pb2.AnchorHeadRequest(head=signed.to_proto())
        ) == pytest.approx(10.0)  # 6 a minute
        # checked before the head is read: a malformed one over the limit is refused the same
        assert refused_anchor(jigsaw_pb2.AnchorHeadRequest()) == pytest.approx(10.0)
        assert anchor("health-node", 1).HasField("receipt")  # each node has its own bucket
        clock.advance(10.0)
        assert anchor("police-node", 3).HasField("receipt")

        entries = audit_entries(running)
        anchored = [(e["actor"], e["outcome"]) for e in entries if e["action"] == "audit_anchor"]
        assert anchored == [("police-node", "ok")] * 2 + [
            ("health-node", "ok"),
            ("police-node", "ok"),
        ]
        refusals = [e["details"] for e in entries if e["action"] == "refused"]
        assert [r.get("audit_anchor.rate_limited") for r in refusals] == [2]  # type: ignore[attr-defined]
        # the 4th attempt of police-node (refused or not) went above 3 an hour
        alerts = [e for e in entries if e["action"] == "anchor_alert"]
        assert [(e["actor"], e["details"]["anchors_in_window"]) for e in alerts] == [  # type: ignore[index]
            ("police-node", 4)
        ]
        assert verify_audit_log(config.audit_log).ok
    finally:
        running.stop()


def test_publish_and_withdraw_are_not_limited(
    limited: Running, population: dict[str, AgencyEncodings]
) -> None:
    police = population["police"]
    stub = limited.stub("police-node")
    for _ in range(5):  # more than the burst of 3, on a frozen clock
        assert publish(stub, police.records(range(2))).received == 2
        stub.Withdraw(jigsaw_pb2.WithdrawRequest(references=police.references[:1]), timeout=TIMEOUT)
    assert status(limited) == {"police": 1}


def test_default_limits_allow_a_burst_of_sixty_fifteen_a_person(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    started = time.monotonic()
    for _ in range(15):  # a person's share of the burst (a quarter) ...
        match(matcher, "police-node", query)
    refused(matcher, "police-node", query)
    for person in ("bob", "carol", "dave"):  # ... and the node's whole burst, shared
        for _ in range(15):
            match(matcher, "police-node", query, on_behalf_of=person)
    granted = 60
    while granted < 200:  # then only what the real clock refilled (2 a second)
        try:
            match(matcher, "police-node", query, on_behalf_of=f"person-{granted}")
        except grpc.RpcError as exc:
            assert error_of(exc).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            break
        granted += 1
    assert granted <= 60 + 2 * (time.monotonic() - started) + 1
