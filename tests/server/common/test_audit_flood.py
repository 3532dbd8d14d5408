"""A flood of refused calls writes a bounded number of audit entries that count every one,
and refused attempts trip the enumeration alert: a real node over loopback with mutual TLS,
and a :class:`server.common.refusals.RefusalTally` on a real log file."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto.jigsaw.v1 import jigsaw_pb2
from server.common.audit import AuditLog, verify_audit_log
from server.common.refusals import RefusalTally
from tests.helpers.node import AMY, Node, fresh_node, matcher, stop_node

__all__ = ["fresh_node", "matcher"]  # the fixtures of tests.helpers.node (pki: the shared one)

FLOOD = 200


def entries_of_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def refused_counts(entries: list[dict[str, Any]]) -> tuple[int, int]:
    """(refusal entries, calls they count)."""
    refusals = [e for e in entries if e["action"] == "refused"]
    for entry in refusals:
        kinds = {k: v for k, v in entry["details"].items() if "." in k}
        assert sum(kinds.values()) == entry["details"]["refused"]
    return len(refusals), sum(e["details"]["refused"] for e in refusals)


def test_a_flood_of_refused_calls_writes_few_entries_counting_every_call(
    pki: Path, fresh_node: Any, matcher: Any
) -> None:
    node: Node = fresh_node(matcher[0], per_minute=1, burst=1, alert=5)
    alice, harriet = node.stub(pki, "alice"), node.stub(pki, "harriet")
    request = jigsaw_pb2.LookupRequest(identifiers=AMY, purpose_code="s47_enquiry", note="p")
    alice.Lookup(request, timeout=10)  # the one admitted lookup
    refused = 0
    for _ in range(FLOOD):
        for stub in (alice, harriet):  # over the limit; another agency's staff
            with pytest.raises(grpc.RpcError) as info:
                stub.Lookup(request, timeout=10)
            assert info.value.code() in (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.PERMISSION_DENIED,
            )
            refused += 1
    log = node.config.audit_log
    stop_node(node)  # the counts are written at shutdown
    entries = entries_of_log(log)
    assert len(entries) < 10  # one lookup, one alert, one count per identity
    assert refused_counts(entries) == (2, refused)
    by_actor = {e["actor"]: e["details"] for e in entries if e["action"] == "refused"}
    assert by_actor["alice"]["lookup.rate_limited"] == FLOOD
    assert by_actor["harriet"]["Lookup.other_agency"] == FLOOD
    # the refused attempts, not only the admitted lookup, tripped the alert
    alerts = [e for e in entries if e["action"] == "enumeration_alert"]
    assert [e["actor"] for e in alerts] == ["alice"]
    assert verify_audit_log(log).ok


def test_refusals_are_written_at_each_intervals_end(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        tally = RefusalTally(log, interval_s=0.2)
        for index in range(1000):
            tally.count("mallory", "lookup", "rate_limited")
            tally.count(f"node-{index % 2}", "match", "rate_limited", on_behalf_of="erin")
        deadline = time.monotonic() + 10
        while log.last_seq < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.last_seq == 3  # written by the interval, before close
        tally.count("mallory", "disclose", "invalid_argument")
        tally.close()
    entries = entries_of_log(path)
    assert refused_counts(entries) == (4, 2001)
    assert {(e["actor"], e["details"].get("on_behalf_of", "")) for e in entries} == {
        ("mallory", ""),
        ("node-0", "erin"),
        ("node-1", "erin"),
    }


def test_a_flood_of_malformed_calls_before_any_limit_writes_few_entries(
    pki: Path, fresh_node: Any, matcher: Any
) -> None:
    """Calls refused as malformed before a rate limit is asked (a person named by someone
    who may not name one; a reference that is not one) are counted, not audited one by one:
    otherwise nothing would bound the entries one identity can write."""
    node: Node = fresh_node(matcher[0])
    alice, olive = node.stub(pki, "alice"), node.stub(pki, "olive")
    calls: tuple[Callable[[], object], ...] = (
        lambda: alice.Lookup(
            jigsaw_pb2.LookupRequest(
                identifiers=AMY, purpose_code="s47_enquiry", note="p", on_behalf_of="bob"
            ),
            timeout=10,
        ),
        lambda: alice.ListLinked(jigsaw_pb2.ListLinkedRequest(on_behalf_of="bob"), timeout=10),
        lambda: olive.ResolveReference(
            jigsaw_pb2.ResolveReferenceRequest(reference="not-a-reference", purpose="p"),
            timeout=10,
        ),
    )
    for _ in range(FLOOD):
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    log = node.config.audit_log
    stop_node(node)  # the counts are written at shutdown
    entries = entries_of_log(log)
    assert len(entries) < 5
    assert refused_counts(entries) == (2, 3 * FLOOD)
    by_actor = {e["actor"]: e["details"] for e in entries if e["action"] == "refused"}
    assert by_actor["alice"]["lookup.invalid_argument"] == FLOOD
    assert by_actor["alice"]["list_linked.invalid_argument"] == FLOOD
    assert by_actor["olive"]["resolve.invalid_argument"] == FLOOD
    assert verify_audit_log(log).ok
