"""gRPC tests of the agency node (server.node.service) over mutual TLS on 127.0.0.1, port 0.

Certificates come from ``server.common.pki.init_pki`` in a temporary directory. The fake
matcher of :mod:`tests.helpers.node` records what the node sends it, so Lookup and publishing
are exercised end to end without the real matcher. Disclose, roles and status here; Lookup,
publishing and serving in ``test_node_lookup.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from proto.jigsaw.v1.transport import RETRY_AFTER_METADATA_KEY
from server.common.audit import verify_audit_log
from server.common.pki import init_pki
from server.common.tls import TlsFiles, secure_channel, tls_files_for
from tests.helpers.node import (
    AMY,
    CANARY_ADDRESS,
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
    served,
)

__all__ = ["fresh_node", "matcher"]  # the fixtures of tests.helpers.node


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
