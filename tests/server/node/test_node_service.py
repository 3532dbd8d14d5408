"""gRPC tests of the agency node (server.node.service) over mutual TLS on 127.0.0.1, port 0.

Certificates come from ``server.common.pki.init_pki`` in a temporary directory. The fake
matcher of :mod:`tests.helpers.node` records what the node sends it, so Lookup and publishing
are exercised end to end without the real matcher.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from linkage.schema import load_schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from proto.jigsaw.v1.transport import RETRY_AFTER_METADATA_KEY
from server.common.audit import verify_audit_log
from server.common.auth import MATCHER_POLICY, AuthInterceptor, Identity
from server.common.pki import init_pki
from server.common.tls import TlsFiles, secure_channel, server_credentials, tls_files_for
from server.common.wire import request_form_of, request_references
from server.node.config import read_linkage_keys
from server.node.publish import publish_pending
from server.node.service import build_node
from tests.helpers.matcher import FakeClock, Running, matcher_config
from tests.helpers.node import (
    AMY,
    CANARY_ADDRESS,
    CANARY_DOB,
    CANARY_DOB_STORED,
    CANARY_FAMILY,
    CANARY_GIVEN,
    CANARY_LOCAL_ID,
    MatcherLog,
    Node,
    assert_no_identifier,
    fresh_node,
    look_up,
    matcher,
    matcher_revocations,
    served,
    start_node,
    stop_node,
    write_node_config,
)

__all__ = ["fresh_node", "matcher"]  # the fixtures of tests.helpers.node


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_pki(
        directory,
        agencies=["police", "health"],
        staff=[("alice", "police"), ("bob", "police"), ("harriet", "health")],
        operators=["olive"],
    )
    return directory


@pytest.fixture(scope="module")
def node(
    pki: Path, matcher: tuple[str, MatcherLog], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    config = write_node_config(tmp_path_factory.mktemp("node"), pki, matcher[0])
    started = start_node(config)
    yield started
    stop_node(started)


# --------------------------------------------------------------------------- Disclose


def test_disclose_releases_policy_fields_to_staff(
    node: Node, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    reference = node.reference_of(CANARY_LOCAL_ID)
    look_up(node, pki, matcher[1], "alice", [("police", reference)])
    response = node.stub(pki, "alice").Disclose(
        jigsaw_pb2.DiscloseRequest(reference=reference, purpose_code="s47_enquiry"),
        timeout=10,
    )
    assert response.agency == "police" and response.reference == reference
    assert dict(response.fields) == {
        "given_name": CANARY_GIVEN,
        "family_name": CANARY_FAMILY,
        "date_of_birth": CANARY_DOB_STORED,
        "address": CANARY_ADDRESS,
    }
    assert set(response.withheld_fields) == {"middle_names", "sex", "postcode", "nhs_number"}
    assert len(response.disclosure_id) == 32

    entry = node.audit_lines()[-1]
    assert (entry["actor"], entry["action"], entry["outcome"]) == ("alice", "disclose", "ok")
    assert entry["purpose"] == "s47_enquiry"
    assert entry["details"]["caller_agency"] == "police"
    assert entry["details"]["reference"] == reference
    assert entry["details"]["disclosure_id"] == response.disclosure_id
    assert entry["details"]["released"].split(",") == [
        "given_name",
        "family_name",
        "date_of_birth",
        "address",
    ]
    assert_no_identifier(node.config.audit_log.read_text("utf-8"))
    assert verify_audit_log(node.config.audit_log).ok


def test_disclose_missing_value_is_neither_released_nor_withheld(
    node: Node, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    look_up(node, pki, matcher[1], "bob", [("police", node.reference_of("c2"))])
    response = node.stub(pki, "bob").Disclose(
        jigsaw_pb2.DiscloseRequest(reference=node.reference_of("c2"), purpose_code="s47_enquiry"),
        timeout=10,
    )
    assert dict(response.fields) == {
        "given_name": "Amy",
        "family_name": "Smith",
        "date_of_birth": "2014-03-02",
    }
    assert "address" not in response.withheld_fields


def test_disclose_needs_a_lookup_by_the_same_person_that_returned_the_reference(
    fresh_node: Any, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    node: Node = fresh_node(matcher[0])
    reference = node.reference_of(CANARY_LOCAL_ID)
    request = jigsaw_pb2.DiscloseRequest(reference=reference, purpose_code="s47_enquiry")

    def refused(who: str) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            node.stub(pki, who).Disclose(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "look the child up first" in info.value.details()
        assert_no_identifier(info.value.details())
        assert node.audit_lines()[-1]["outcome"] == "no_lookup"
        return info.value

    refused("alice")  # no lookup at all
    look_up(node, pki, matcher[1], "alice", [("police", node.reference_of("c2"))])
    refused("alice")  # a lookup that returned another reference
    look_up(node, pki, matcher[1], "bob", [("police", reference)])
    refused("alice")  # a colleague's lookup returned it
    assert node.stub(pki, "bob").Disclose(request, timeout=10).reference == reference


def test_disclose_only_within_the_window_after_the_lookup(
    fresh_node: Any, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    node: Node = fresh_node(matcher[0], limits="disclosure_window_minutes = 0.005")  # 0.3 s
    reference = node.reference_of(CANARY_LOCAL_ID)
    look_up(node, pki, matcher[1], "alice", [("police", reference)])
    request = jigsaw_pb2.DiscloseRequest(reference=reference, purpose_code="s47_enquiry")
    assert node.stub(pki, "alice").Disclose(request, timeout=10).reference == reference
    time.sleep(0.4)
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "alice").Disclose(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "0.005 minutes" in info.value.details()


def test_disclosures_are_rate_limited_per_person_with_an_alert(
    fresh_node: Any, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    node: Node = fresh_node(
        matcher[0],
        limits="disclosures_per_minute = 1\ndisclosure_burst = 2\ndisclosure_alert_per_hour = 1",
    )
    reference = node.reference_of(CANARY_LOCAL_ID)
    for who in ("alice", "bob"):
        look_up(node, pki, matcher[1], who, [("police", reference)])
    request = jigsaw_pb2.DiscloseRequest(reference=reference, purpose_code="s47_enquiry")
    stub = node.stub(pki, "alice")
    stub.Disclose(request, timeout=10)
    stub.Disclose(request, timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        stub.Disclose(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert float(dict(info.value.trailing_metadata() or ())[RETRY_AFTER_METADATA_KEY]) > 0
    node.stub(pki, "bob").Disclose(request, timeout=10)  # a colleague has a budget of their own
    entries = node.audit_lines()
    actions = [(e["actor"], e["action"], e["outcome"]) for e in entries]
    assert ("alice", "disclosure_alert", "alert") in actions
    refusals = [e["details"] for e in entries if e["action"] == "refused"]
    # the interval is the wall-clock time the tally covered: any whole number of seconds
    assert [{**r, "interval_seconds": 0} for r in refusals] == [
        {"refused": 1, "interval_seconds": 0, "disclose.rate_limited": 1}
    ]
    assert isinstance(refusals[0]["interval_seconds"], int)
    assert actions.count(("alice", "disclose", "ok")) == 2
    assert ("bob", "disclose", "ok") in actions
    assert verify_audit_log(node.config.audit_log).ok


def test_a_disclosure_of_another_agencys_record_is_relayed_and_audited_on_both_nodes(
    fresh_node: Any, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    holder: Node = fresh_node(matcher[0], agency="health")
    requester: Node = fresh_node(matcher[0], peers=f'health = "{holder.address}"')
    reference = holder.reference_of(CANARY_LOCAL_ID)
    request = jigsaw_pb2.DiscloseRequest(
        reference=reference, purpose_code="s47_enquiry", note="case 4711 note", priority="red"
    )
    look_up(requester, pki, matcher[1], "alice", [("health", reference)])

    # harriet is health staff, but alice's lookup was at the police node: she may not ask
    # health directly (item: own node only), and alice is refused at the health node too
    with pytest.raises(grpc.RpcError) as info:
        holder.stub(pki, "alice").Disclose(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED

    response = requester.stub(pki, "alice").Disclose(request, timeout=10)
    assert response.agency == "health" and response.reference == reference
    assert dict(response.fields)["family_name"] == CANARY_FAMILY

    mine = served(requester)[-1]
    assert (mine["actor"], mine["action"], mine["outcome"]) == ("alice", "disclose", "ok")
    assert mine["details"]["holder"] == "health" and mine["details"]["reference"] == reference
    assert mine["details"]["holder_disclosure_id"] == response.disclosure_id
    theirs = served(holder)[-1]
    assert (theirs["actor"], theirs["action"], theirs["outcome"]) == ("alice", "disclose", "ok")
    assert theirs["purpose"] == "s47_enquiry"
    # the note stays with the requester; the priority travels with the request
    assert mine["details"]["note"] == "case 4711 note" and mine["details"]["priority"] == "red"
    assert "note" not in theirs["details"] and "case 4711" not in json.dumps(theirs)
    assert theirs["details"]["priority"] == "red"
    assert theirs["details"]["caller_agency"] == "police"
    assert theirs["details"]["via"] == "police-node"
    assert theirs["details"]["disclosure_id"] == response.disclosure_id
    for node in (requester, holder):
        assert_no_identifier(node.config.audit_log.read_text("utf-8"))
        assert verify_audit_log(node.config.audit_log).ok

    # the holder's refusal reaches staff with its code, naming the holder
    missing = "0" * 32
    look_up(requester, pki, matcher[1], "alice", [("health", missing)])
    with pytest.raises(grpc.RpcError) as info:
        requester.stub(pki, "alice").Disclose(
            jigsaw_pb2.DiscloseRequest(reference=missing, purpose_code="s47_enquiry"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details().startswith("health node:")
    assert served(requester)[-1]["outcome"] == "holder_not_found"


def test_a_disclosure_the_holder_refused_by_its_limit_costs_the_person_nothing(
    fresh_node: Any, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    """The holder limits a relaying agency's people (here one disclosure, then one a minute);
    a disclosure it refused by that limit is given back to the person's own limit at the
    requesting node (two) and counted there, not audited one by one."""
    holder: Node = fresh_node(
        matcher[0], agency="health", limits="disclosures_per_minute = 1\ndisclosure_burst = 1"
    )
    requester: Node = fresh_node(
        matcher[0],
        peers=f'health = "{holder.address}"',
        limits="disclosures_per_minute = 1\ndisclosure_burst = 2",
    )
    reference = holder.reference_of(CANARY_LOCAL_ID)
    own = requester.reference_of(CANARY_LOCAL_ID)
    look_up(requester, pki, matcher[1], "alice", [("health", reference), ("police", own)])
    stub = requester.stub(pki, "alice")
    relayed = jigsaw_pb2.DiscloseRequest(reference=reference, purpose_code="s47_enquiry")
    stub.Disclose(relayed, timeout=10)  # one of alice's two at her node, the holder's one
    for _ in range(5):  # refused by the holder's limit for her
        with pytest.raises(grpc.RpcError) as info:
            stub.Disclose(relayed, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # her own node's budget is as the answered disclosure left it: one more
    local = jigsaw_pb2.DiscloseRequest(reference=own, purpose_code="s47_enquiry")
    assert stub.Disclose(local, timeout=10).agency == "police"
    with pytest.raises(grpc.RpcError) as info:
        stub.Disclose(local, timeout=10)  # now spent, by her own node's limit
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    entries = requester.audit_lines()
    outcomes = [(e["actor"], e["outcome"]) for e in entries if e["action"] == "disclose"]
    assert outcomes == [("alice", "ok"), ("alice", "ok")]
    refusals = [e["details"] for e in entries if e["action"] == "refused"]
    assert len(refusals) == 1
    assert refusals[0]["disclose.holder_rate_limited"] == 5
    assert refusals[0]["disclose.rate_limited"] == 1
    assert verify_audit_log(requester.config.audit_log).ok


def test_a_disclosure_held_by_an_agency_without_a_peer_address_is_refused(
    fresh_node: Any, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    node: Node = fresh_node(matcher[0])
    look_up(node, pki, matcher[1], "alice", [("health", "cd" * 16)])
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "alice").Disclose(
            jigsaw_pb2.DiscloseRequest(reference="cd" * 16, purpose_code="s47_enquiry"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "held by health" in info.value.details() and "[peers]" in info.value.details()


def test_on_behalf_of_is_for_relaying_nodes_only(node: Node, pki: Path) -> None:
    reference = node.reference_of(CANARY_LOCAL_ID)
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "alice").Disclose(
            jigsaw_pb2.DiscloseRequest(
                reference=reference, purpose_code="s47_enquiry", on_behalf_of="bob"
            ),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "on_behalf_of" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "health-node").Disclose(
            jigsaw_pb2.DiscloseRequest(reference=reference, purpose_code="s47_enquiry"), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "on_behalf_of" in info.value.details()


def test_disclose_by_wrong_role_is_denied(node: Node, pki: Path) -> None:
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "olive").Disclose(
            jigsaw_pb2.DiscloseRequest(
                reference=node.reference_of(CANARY_LOCAL_ID), purpose_code="s47_enquiry"
            ),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "staff" in info.value.details()
    # the matcher's own certificate (role matcher) is no staff member either
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "matcher").Disclose(
            jigsaw_pb2.DiscloseRequest(
                reference=node.reference_of(CANARY_LOCAL_ID), purpose_code="s47_enquiry"
            ),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_disclose_to_a_role_without_policy_is_denied(
    fresh_node: Any, pki: Path, matcher: tuple[str, MatcherLog]
) -> None:
    strict: Node = fresh_node(matcher[0], disclosure='operator = ["family_name"]')
    look_up(strict, pki, matcher[1], "alice", [("police", strict.reference_of("c2"))])
    with pytest.raises(grpc.RpcError) as info:
        strict.stub(pki, "alice").Disclose(
            jigsaw_pb2.DiscloseRequest(
                reference=strict.reference_of("c2"), purpose_code="s47_enquiry"
            ),
            timeout=10,
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "releases nothing to role staff" in info.value.details()
    assert strict.audit_lines()[-1]["outcome"] == "denied"


@pytest.mark.parametrize(
    ("reference", "extra", "code", "field_name"),
    [
        ("not-hex", {}, grpc.StatusCode.INVALID_ARGUMENT, "reference"),
        ("AB" * 16, {}, grpc.StatusCode.INVALID_ARGUMENT, "reference"),
        ("0" * 32, {}, grpc.StatusCode.NOT_FOUND, "reference"),
        (None, {"purpose_code": ""}, grpc.StatusCode.INVALID_ARGUMENT, "purpose_code"),
        (None, {"purpose_code": "a section 47"}, grpc.StatusCode.INVALID_ARGUMENT, "purpose_code"),
        (None, {"note": "x" * 501}, grpc.StatusCode.INVALID_ARGUMENT, "note"),
        (None, {"priority": "urgent"}, grpc.StatusCode.INVALID_ARGUMENT, "priority"),
    ],
)
def test_disclose_validation(
    node: Node,
    pki: Path,
    matcher: tuple[str, MatcherLog],
    reference: str | None,
    extra: dict[str, str],
    code: grpc.StatusCode,
    field_name: str,
) -> None:
    ref = reference if reference is not None else node.reference_of(CANARY_LOCAL_ID)
    look_up(node, pki, matcher[1], "alice", [("police", ref)])
    before = len(node.audit_lines())
    with pytest.raises(grpc.RpcError) as info:
        node.stub(pki, "alice").Disclose(
            jigsaw_pb2.DiscloseRequest(reference=ref, **{"purpose_code": "s47_enquiry", **extra}),
            timeout=10,
        )
    assert info.value.code() == code
    assert field_name in info.value.details()
    assert_no_identifier(info.value.details())
    entries = node.audit_lines()
    assert len(entries) == before + 1 and entries[-1]["outcome"] != "ok"


@pytest.mark.parametrize("method", ["Lookup", "Disclose", "Status"])
def test_staff_of_another_agency_are_refused_every_method(
    node: Node, pki: Path, method: str
) -> None:
    """Staff talk to their own agency's node only: harriet (health) at the police node."""
    requests = {
        "Lookup": jigsaw_pb2.LookupRequest(identifiers=AMY, purpose_code="s47_enquiry", note="p"),
        "Disclose": jigsaw_pb2.DiscloseRequest(
            reference=node.reference_of(CANARY_LOCAL_ID), purpose_code="s47_enquiry"
        ),
        "Status": jigsaw_pb2.NodeStatusRequest(),
    }
    before = len(node.audit_lines())
    with pytest.raises(grpc.RpcError) as info:
        getattr(node.stub(pki, "harriet"), method)(requests[method], timeout=10)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = info.value.details()
    assert "staff of agency police only" in details and "names agency health" in details
    assert_no_identifier(details)
    assert "Amy" not in details
    # refused before the servicer: nothing released; the refusal is counted, not listed
    entries = node.audit_lines()
    assert len(entries) == before + 1 and entries[-1]["action"] == "refused"
    assert entries[-1]["actor"] == "harriet"
    assert entries[-1]["details"][f"{method}.other_agency"] == 1


def test_status_for_operator_and_health(node: Node, pki: Path) -> None:
    status = node.stub(pki, "olive").Status(jigsaw_pb2.NodeStatusRequest(), timeout=10)
    assert (status.agency, status.records, status.pending) == ("police", 2, 2)
    assert status.schema_fingerprint == node.config.schema.fingerprint()
    assert status.key_version == 1
    channel = secure_channel(node.address, tls_files_for(pki, "olive"))
    try:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="jigsaw.v1.AgencyNode"), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()


def test_client_from_another_ca_is_refused(node: Node, tmp_path: Path) -> None:
    other = tmp_path / "other-pki"
    init_pki(other, agencies=["police"], staff=[("alice", "police")], operators=[])
    foreign = tls_files_for(other, "alice")
    bad = TlsFiles(ca_cert=node.config.tls.ca_cert, cert=foreign.cert, key=foreign.key)
    channel = secure_channel(node.address, bad)
    try:
        with pytest.raises(grpc.RpcError) as info:
            jigsaw_pb2_grpc.AgencyNodeStub(channel).Status(  # type: ignore[no-untyped-call]
                jigsaw_pb2.NodeStatusRequest(), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()


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
