"""gRPC tests of the agency node (server.node.service) over mutual TLS on 127.0.0.1: Lookup
through a fake or real matcher and its limits, publishing, and serving (a runtime that closes
what it opened, SIGTERM, linked-page tokens)."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from linkage.schema import load_schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from proto.jigsaw.v1.transport import RETRY_AFTER_METADATA_KEY
from server.common.audit import verify_audit_log
from server.common.auth import MATCHER_POLICY, AuthInterceptor, Identity
from server.common.tls import secure_channel, server_credentials, tls_files_for
from server.common.wire import request_form_of, request_references
from server.node.config import read_linkage_keys
from server.node.publish import publish_pending
from server.node.service import build_node
from tests.helpers.matcher import FakeClock, Running, matcher_config
from tests.helpers.node import (
    AMY,
    CANARY_DOB,
    CANARY_GIVEN,
    CANARY_LOCAL_ID,
    MatcherLog,
    Node,
    assert_no_identifier,
    fresh_node,
    matcher,
    matcher_revocations,
    write_node_config,
)

__all__ = ["fresh_node", "matcher"]  # the fixtures of tests.helpers.node


# --------------------------------------------------------------------------- Lookup


def published(*inputs: str) -> set[str]:
    """The published fields of the shipped schema that a query of ``inputs`` holds: the inputs
    themselves, and the views of each combined field that combines any of them."""
    schema = load_schema("child")
    views = {spec.name for spec in schema.fields if set(spec.combines) & set(inputs)}
    assert all(spec.view_of for spec in schema.fields if spec.name in views)
    return {*inputs, *views}


def _lookup(
    node: Node, pki: Path, log: MatcherLog, identifiers: dict[str, str], max_candidates: int = 0
) -> tuple[Any, list[tuple[Identity, Any]]]:
    """A staff lookup (alice) and the Match calls it made, with their callers."""
    before = len(log.matches)
    response = node.stub(pki, "alice").Lookup(
        jigsaw_pb2.LookupRequest(
            identifiers=identifiers,
            purpose_code="strategy_discussion",
            note="strategy meeting",
            max_candidates=max_candidates,
        ),
        timeout=10,
    )
    return response, log.matches[before:]


def test_lookup_goes_through_the_matcher(
    node: Node, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    response, sent = _lookup(node, pki, matcher[1], {**AMY, "sex": "F"}, max_candidates=5)
    assert len(response.lookup_id) == 32
    (candidate,) = response.candidates
    assert (candidate.agency, candidate.reference) == ("health", "ab" * 16)
    assert candidate.band == jigsaw_pb2.PROBABILITY_BAND_HIGH
    assert candidate.evidence[0].agreement == jigsaw_pb2.AGREEMENT_EXACT

    ((identity, request),) = sent
    assert identity == Identity(name="police-node", agency="police", role="node")
    assert request.on_behalf_of == "alice" and request.purpose_code == "strategy_discussion"
    assert b"strategy meeting" not in request.SerializeToString()  # the note stays here
    assert request.header.schema_fingerprint == node.config.schema.fingerprint()
    assert request.max_candidates == 5
    (query,) = request.queries
    filters = list(query.field_filters)
    names = node.config.schema.field_names
    present = {name for name, data in zip(names, filters, strict=True) if data}
    assert present == published("given_name", "family_name", "date_of_birth", "sex")
    assert len(present) == 4 + 3  # and the full name in its three views
    assert_no_identifier(request.SerializeToString().decode("latin-1"))
    assert b"Amy" not in request.SerializeToString()

    entry = node.audit_lines()[-1]
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("alice", "lookup", "ok")
    assert entry["details"]["candidates"] == 1
    # the code for both audit logs; the staff member's note for this node's only
    assert entry["purpose"] == "strategy_discussion"
    assert entry["details"]["note"] == "strategy meeting"
    assert entry["details"]["lookup_id"] == response.lookup_id


def test_a_lookup_without_sex_is_one_match_with_a_row_per_sex_value(
    node: Node, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    # the shipped schema salts the date of birth with sex (the names with the date's value,
    # the full name with parts of it): without sex the date could not be compared, so the node
    # sends the query under each sex value, sex itself published as missing (never compared),
    # every row in the lookup's one Match call (the matcher merges them)
    response, calls = _lookup(node, pki, matcher[1], AMY)  # no sex
    ((_, request),) = calls
    assert request.on_behalf_of == "alice"
    assert len(request.queries) == 3
    names = node.config.schema.field_names
    dates = set()
    names_sent = set()
    for query in request.queries:
        filters = dict(zip(names, query.field_filters, strict=True))
        assert {n for n, data in filters.items() if data} == published(
            "given_name", "family_name", "date_of_birth"
        )
        assert all(tag != 0 for tag in query.salt_tags)  # date and sex tags both set
        dates.add(filters["date_of_birth"])
        names_sent.add(tuple(data for n, data in filters.items() if "name" in n))
        assert query.reference == response.lookup_id
    assert len(dates) == 3  # the date's filter under each assumed sex
    assert len(names_sent) == 1  # the names do not depend on sex: the same filters each time
    (candidate,) = response.candidates
    assert (candidate.agency, candidate.reference) == ("health", "ab" * 16)
    entry = node.audit_lines()[-1]
    assert entry["details"]["queries"] == 3 and entry["details"]["candidates"] == 1


@pytest.mark.parametrize(
    ("identifiers", "purpose_code", "note", "expected"),
    [
        (
            {"shoe_size": "9"},
            "s47_enquiry",
            "n",
            "'identifiers': a key is not a field of the schema",
        ),
        (
            {"date_of_birth": CANARY_DOB.replace("17", "37")},
            "s47_enquiry",
            "n",
            "identifiers['date_of_birth']",
        ),
        ({"family_name": "x" * 201}, "s47_enquiry", "n", "at most 200"),
        ({"sex": "F"}, "s47_enquiry", "n", "at least one identifying field"),
        ({}, "s47_enquiry", "n", "at least one identifying field"),
        ({"family_name": "Smith"}, "", "n", "purpose_code"),
        # free text where a code belongs: refused, listing the codes, never echoed
        (
            {"family_name": "Smith"},
            f"s47 re {CANARY_GIVEN}",
            "n",
            "'purpose_code': expected a purpose code, one of s47_enquiry, strategy_discussion",
        ),
        ({"family_name": "Smith"}, "s47_enquiry", "", "'note': must not be empty"),
        ({"family_name": "Smith"}, "s47_enquiry", "x" * 501, "'note': must be at most 500"),
    ],
)
def test_lookup_validation(
    node: Node,
    pki: Path,
    identifiers: dict[str, str],
    purpose_code: str,
    note: str,
    expected: str,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "alice").Lookup(
            jigsaw_pb2.LookupRequest(identifiers=identifiers, purpose_code=purpose_code, note=note),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details()
    assert expected in details
    for value in identifiers.values():
        if value not in ("9", "F"):
            assert value not in details
    assert CANARY_GIVEN not in details
    assert node.audit_lines()[-1]["outcome"] == "invalid_argument"


def test_lookup_by_operator_is_denied(node: Node, pki: Path) -> None:
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "olive").Lookup(
            jigsaw_pb2.LookupRequest(
                identifiers={"family_name": "Smith"}, purpose_code="s47_enquiry", note="p"
            ),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_rate_limit_and_enumeration_alert(
    fresh_node: Any, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    limited: Node = fresh_node(matcher[0], per_minute=1, burst=2, alert=1)
    stub = limited.stub(pki, "alice")
    request = jigsaw_pb2.LookupRequest(
        identifiers={"family_name": "Smith"}, purpose_code="s47_enquiry", note="p"
    )
    stub.Lookup(request, timeout=10)
    stub.Lookup(request, timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        stub.Lookup(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(info.value.trailing_metadata() or ())
    assert float(trailing[RETRY_AFTER_METADATA_KEY]) > 0
    # another caller has its own bucket
    limited.stub(pki, "bob").Lookup(request, timeout=10)
    entries = limited.audit_lines()
    actions = [(e["actor"], e["action"], e["outcome"]) for e in entries]
    assert ("alice", "enumeration_alert", "alert") in actions
    refusals = [
        (e["actor"], {**e["details"], "interval_seconds": 0})  # any whole number of seconds
        for e in entries
        if e["action"] == "refused"
    ]
    assert refusals == [("alice", {"refused": 1, "interval_seconds": 0, "lookup.rate_limited": 1})]
    assert actions.count(("alice", "lookup", "ok")) == 2
    assert verify_audit_log(limited.config.audit_log).ok


def test_matcher_unreachable_is_unavailable(fresh_node: Any, pki: Path) -> None:
    lonely: Node = fresh_node("localhost:1")
    with pytest.raises(grpc.RpcError) as info:
        lonely.stub(pki, "alice").Lookup(
            jigsaw_pb2.LookupRequest(
                identifiers={"family_name": "Smith"}, purpose_code="s47_enquiry", note="p"
            ),
            timeout=20,
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "matcher" in info.value.details() and "Smith" not in info.value.details()
    assert lonely.audit_lines()[-1]["outcome"] == "matcher_error"


class LimitingMatcher(jigsaw_pb2_grpc.MatcherServicer):
    """A matcher whose [match_limits] refuse every Match (RESOURCE_EXHAUSTED, retry-after)."""

    def Match(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.set_trailing_metadata(((RETRY_AFTER_METADATA_KEY, "42.500"),))
        context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded; retry after 42.500 s"
        )


def test_the_matchers_limit_reaches_staff_as_resource_exhausted(fresh_node: Any, pki: Path) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[AuthInterceptor(MATCHER_POLICY, revocations=matcher_revocations(pki))],
    )
    jigsaw_pb2_grpc.add_MatcherServicer_to_server(LimitingMatcher(), server)  # type: ignore[no-untyped-call]
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls_files_for(pki, "matcher")))
    server.start()
    try:
        node: Node = fresh_node(f"localhost:{port}")
        with pytest.raises(grpc.RpcError) as info:
            node.stub(pki, "alice").Lookup(
                jigsaw_pb2.LookupRequest(
                    identifiers={"family_name": "Smith"}, purpose_code="s47_enquiry", note="p"
                ),
                timeout=20,
            )
    finally:
        server.stop(grace=None).wait()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (RETRY_AFTER_METADATA_KEY, "42.500") in tuple(info.value.trailing_metadata() or ())
    assert "Smith" not in (info.value.details() or "")
    last = node.audit_lines()[-1]  # counted per person per interval, not one entry each
    assert (last["actor"], last["action"]) == ("alice", "refused")
    assert last["details"]["lookup.matcher_rate_limited"] == 1


def test_a_lookup_the_matcher_refused_costs_the_person_nothing_at_the_node(
    fresh_node: Any, pki: Path, tmp_path: Path
) -> None:
    """A real matcher on a fake clock refuses alice's lookups over her share (a burst of
    one, a token every 4 s); the node's own limit for her (a burst of 3) is charged only
    for the lookups that were answered, and her flood does not refuse a colleague."""
    clock = FakeClock()
    limits = (
        "matches_per_minute = 60\nburst = 4\n"
        "enumeration_alert_per_hour = 100\nmax_matches_per_hour = 100\nperson_share = 0.25"
    )
    (tmp_path / "m").mkdir()
    real = Running(matcher_config(tmp_path / "m", pki, match_limits=limits), pki, clock=clock)
    try:
        limited: Node = fresh_node(real.address, per_minute=1, burst=3, alert=1000)
        alice, bob = limited.stub(pki, "alice"), limited.stub(pki, "bob")
        request = jigsaw_pb2.LookupRequest(
            identifiers={"family_name": "Smith"}, purpose_code="s47_enquiry", note="p"
        )

        def refused_by(stub: jigsaw_pb2_grpc.AgencyNodeStub) -> float:
            with pytest.raises(grpc.RpcError) as info:
                stub.Lookup(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            trailing = dict(info.value.trailing_metadata() or ())
            return float(trailing[RETRY_AFTER_METADATA_KEY])

        alice.Lookup(request, timeout=10)  # answered: one of her 3 at the node
        for _ in range(10):  # refused by the matcher (her share's next token in 4 s) ...
            assert refused_by(alice) == pytest.approx(4.0, abs=0.01)
        bob.Lookup(request, timeout=10)  # ... which does not refuse a colleague's first lookup
        clock.advance(4.0)
        alice.Lookup(request, timeout=10)  # her node budget is as the answered lookups left it
        clock.advance(4.0)
        alice.Lookup(request, timeout=10)
        assert refused_by(alice) > 30  # the node's own limit, now spent: a token a minute

        entries = limited.audit_lines()
        answered = [e["actor"] for e in entries if e["action"] == "lookup"]
        assert sorted(answered) == ["alice", "alice", "alice", "bob"]
        refusals = [(e["actor"], e["details"]) for e in entries if e["action"] == "refused"]
        assert len(refusals) == 1  # counted per person per interval, not one entry each
        assert refusals[0][0] == "alice"
        assert refusals[0][1]["lookup.matcher_rate_limited"] == 10
        assert refusals[0][1]["lookup.rate_limited"] == 1
        assert verify_audit_log(limited.config.audit_log).ok
    finally:
        real.stop()


# --------------------------------------------------------------------------- publish + server


def test_publish_over_mutual_tls(
    fresh_node: Any, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    node: Node = fresh_node(matcher[0])
    log = matcher[1]
    before = len(log.published)
    channel = secure_channel(node.config.matcher, node.config.tls)
    try:
        report = publish_pending(
            node.runtime.store,
            node.config.schema,
            read_linkage_keys(node.config),
            jigsaw_pb2_grpc.MatcherStub(channel),  # type: ignore[no-untyped-call]
            batch_size=node.config.publish_batch_size,
        )
    finally:
        channel.close()
    assert (report.published, report.calls) == (2, 1)
    (message,) = log.published[before:]
    assert message.header.schema_fingerprint == node.config.schema.fingerprint()
    # records lacking sex go as forms, each naming its record in form_of
    sent = zip(request_references(message), request_form_of(message), strict=True)
    assert {form_of or reference for reference, form_of in sent} == {
        node.reference_of(CANARY_LOCAL_ID),
        node.reference_of("c2"),
    }
    assert b"Quixotic" not in message.SerializeToString()
    status = node.stub(pki, "alice").Status(jigsaw_pb2.NodeStatusRequest(), timeout=10)
    assert (status.records, status.published, status.pending) == (2, 2, 0)


def test_a_runtime_serves_inside_its_block_and_closes_what_it_opened(
    pki: Path, tmp_path: Path
) -> None:
    config = write_node_config(tmp_path, pki, "localhost:1")
    with build_node(config) as runtime:
        assert runtime.port > 0
        assert runtime.store.counts().records == 2
    with pytest.raises(sqlite3.ProgrammingError):  # the store is closed
        runtime.store.counts()


_SERVE = """
import logging, sys
from server.node.service import serve
from server.node.config import load_node_config
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
serve(load_node_config(sys.argv[1]))
"""


def test_serve_stops_gracefully_on_sigterm(pki: Path, tmp_path: Path) -> None:
    config = write_node_config(tmp_path, pki, "localhost:1")
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(config.config_path)],
        cwd=Path(__file__).resolve().parents[3],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    port = None
    try:
        for line in process.stderr:
            found = re.search(r"serving on port (\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port is not None
        channel = secure_channel(f"localhost:{port}", tls_files_for(pki, "olive"))
        try:
            status = jigsaw_pb2_grpc.AgencyNodeStub(channel).Status(  # type: ignore[no-untyped-call]
                jigsaw_pb2.NodeStatusRequest(), timeout=10
            )
        finally:
            channel.close()
        assert status.records == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        rest = process.stderr.read()
        assert "agency node police stopped" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()


def test_a_linked_page_token_is_only_an_offset_the_node_handed_out(node: Node, pki: Path) -> None:
    # a number shaped like an NHS number is no page of this node's list, and never reaches
    # the audit log (a fuzzing run found the offset written there as given)
    nhs_shaped = "9434765919"
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "alice").ListLinked(
            jigsaw_pb2.ListLinkedRequest(page_token=nhs_shaped), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in info.value.details() and nhs_shaped not in info.value.details()
    assert not any(nhs_shaped in json.dumps(line) for line in node.audit_lines())
    first = node.stub(pki, "alice").ListLinked(jigsaw_pb2.ListLinkedRequest(), timeout=10)
    assert first.next_page_token == ""  # nothing fetched yet: one (empty) page
