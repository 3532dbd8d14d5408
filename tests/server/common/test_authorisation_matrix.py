"""The authorisation matrix: every RPC of every service, called by every kind of identity the
PKI issues, with the status each cell must give — over real mutual TLS to a real matcher and
a real agency node (police) on loopback.

Identities: staff of the node's agency (alice, police), staff of another agency
(harriet, health), the federation's operator (olga), each node (police-node, health-node),
the matcher, each agency's staff console (police-console, health-console: a console names
the staff member it acts for, which these requests do not, so its own agency's node refuses
them as invalid); and a
client that expects the wrong server role (it names the matcher's role when calling the node,
and a node's when calling the matcher), which TLS refuses in the handshake (UNAVAILABLE)
before any request reaches the server. Two agency operators follow the rule that an agency's
operator is the federation's operator at its own agency's node and nobody anywhere else:
percy (police) gets olga's codes at the police node, hana (health) gets PERMISSION_DENIED
there, and both get it at the matcher.

Requests are the smallest that pass authorisation and then fail (or succeed) the same way
for every permitted caller, so a cell shows what the role policy and the agency binding did:
PERMISSION_DENIED is a refusal; any other code means the call reached the servicer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.pki import UNIT_AGENCY, server_name
from server.common.tls import secure_channel, tls_files_for
from tests.helpers.matcher import Running, matcher_config
from tests.helpers.node import Node, start_node, stop_node, write_node_config

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

CALLERS = (
    "alice",
    "harriet",
    "olga",
    "police-node",
    "health-node",
    "matcher",
    "wrong-server",
    "police-console",
    "health-console",
)
REFERENCE = "0" * 32

Call = Callable[[grpc.Channel], Any]


def _matcher_calls() -> dict[str, Call]:
    def stub(channel: grpc.Channel) -> Any:
        return jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]

    return {
        "Matcher/Publish": lambda c: stub(c).Publish(
            iter([jigsaw_pb2.PublishRequest()]), timeout=10
        ),
        "Matcher/Withdraw": lambda c: stub(c).Withdraw(
            jigsaw_pb2.WithdrawRequest(references=["not-a-reference"]), timeout=10
        ),
        "Matcher/Match": lambda c: stub(c).Match(jigsaw_pb2.MatchRequest(), timeout=10),
        "Matcher/Link": lambda c: list(
            stub(c).Link(jigsaw_pb2.LinkRequest(min_probability=2.0), timeout=10)
        ),
        "Matcher/GetLinkResult": lambda c: stub(c).GetLinkResult(
            jigsaw_pb2.GetLinkResultRequest(result_id="no-such-result"), timeout=10
        ),
        "Matcher/Status": lambda c: stub(c).Status(jigsaw_pb2.MatcherStatusRequest(), timeout=10),
        "Matcher/AnchorHead": lambda c: stub(c).AnchorHead(
            jigsaw_pb2.AnchorHeadRequest(), timeout=10
        ),
        "Matcher/GetAnchors": lambda c: list(
            stub(c).GetAnchors(jigsaw_pb2.GetAnchorsRequest(), timeout=10)
        ),
        "Matcher/GetLinkedRecords": lambda c: stub(c).GetLinkedRecords(
            jigsaw_pb2.GetLinkedRecordsRequest(result_id="no-such-result"), timeout=10
        ),
    }


def _node_calls() -> dict[str, Call]:
    def stub(channel: grpc.Channel) -> Any:
        return jigsaw_pb2_grpc.AgencyNodeStub(channel)  # type: ignore[no-untyped-call]

    return {
        "AgencyNode/Lookup": lambda c: stub(c).Lookup(
            jigsaw_pb2.LookupRequest(identifiers={}, purpose_code="s47_enquiry", note="p"),
            timeout=10,
        ),
        "AgencyNode/Disclose": lambda c: stub(c).Disclose(
            jigsaw_pb2.DiscloseRequest(reference=REFERENCE, purpose_code="s47_enquiry"), timeout=10
        ),
        "AgencyNode/Status": lambda c: stub(c).Status(jigsaw_pb2.NodeStatusRequest(), timeout=10),
        "AgencyNode/AnchorAudit": lambda c: stub(c).AnchorAudit(
            jigsaw_pb2.AnchorAuditRequest(), timeout=10
        ),
        "AgencyNode/GetAnchors": lambda c: list(
            stub(c).GetAnchors(jigsaw_pb2.GetAnchorsRequest(), timeout=10)
        ),
        "AgencyNode/FetchLinked": lambda c: stub(c).FetchLinked(
            jigsaw_pb2.FetchLinkedRequest(result_id="no-such-result"), timeout=10
        ),
        "AgencyNode/ListLinked": lambda c: stub(c).ListLinked(
            jigsaw_pb2.ListLinkedRequest(page_token="not-a-token"), timeout=10
        ),
        "AgencyNode/ResolveReference": lambda c: stub(c).ResolveReference(
            jigsaw_pb2.ResolveReferenceRequest(reference="not-a-reference", purpose="p"),
            timeout=10,
        ),
    }


# Rows: RPC; columns: CALLERS, in order.
EXPECTED: dict[str, tuple[grpc.StatusCode, ...]] = {
    # node-only methods: the nodes reach the servicer, which refuses the empty request
    "Matcher/Publish": (
        DENIED,
        DENIED,
        DENIED,
        INVALID,
        INVALID,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    "Matcher/Withdraw": (
        DENIED,
        DENIED,
        DENIED,
        INVALID,
        INVALID,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    "Matcher/Match": (
        DENIED,
        DENIED,
        DENIED,
        INVALID,
        INVALID,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    # operator-only methods
    "Matcher/Link": (DENIED, DENIED, INVALID, DENIED, DENIED, DENIED, UNAVAILABLE, DENIED, DENIED),
    "Matcher/GetLinkResult": (
        DENIED,
        DENIED,
        INVALID,
        DENIED,
        DENIED,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    "Matcher/Status": (DENIED, DENIED, OK, DENIED, DENIED, DENIED, UNAVAILABLE, DENIED, DENIED),
    # audit anchoring: a node's own (here unsigned) head; an operator's fetch (no owner)
    "Matcher/AnchorHead": (
        DENIED,
        DENIED,
        DENIED,
        INVALID,
        INVALID,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    "Matcher/GetAnchors": (
        DENIED,
        DENIED,
        INVALID,
        DENIED,
        DENIED,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    # a node, for its own agency's records
    "Matcher/GetLinkedRecords": (
        DENIED,
        DENIED,
        DENIED,
        INVALID,
        INVALID,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    # the police node: its own staff only (another agency's staff are refused everywhere)
    "AgencyNode/Lookup": (
        INVALID,
        DENIED,
        DENIED,
        DENIED,
        DENIED,
        DENIED,
        UNAVAILABLE,
        INVALID,
        DENIED,
    ),
    # staff: no lookup of theirs returned the reference; nodes (relaying): no on_behalf_of
    "AgencyNode/Disclose": (
        PRECONDITION,
        DENIED,
        DENIED,
        INVALID,
        INVALID,
        DENIED,
        UNAVAILABLE,
        INVALID,
        DENIED,
    ),
    # the console reads it as itself, to show its agency's operators
    "AgencyNode/Status": (OK, DENIED, OK, DENIED, DENIED, DENIED, UNAVAILABLE, OK, DENIED),
    "AgencyNode/AnchorAudit": (
        DENIED,
        DENIED,
        OK,
        DENIED,
        DENIED,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    "AgencyNode/GetAnchors": (
        DENIED,
        DENIED,
        INVALID,
        DENIED,
        DENIED,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    # the agency's records known to other agencies: fetched by operators, read by its own
    # staff and operators (a console lists for one staff member, as on Lookup; resolves none)
    "AgencyNode/FetchLinked": (
        DENIED,
        DENIED,
        INVALID,
        DENIED,
        DENIED,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
    "AgencyNode/ListLinked": (
        INVALID,
        DENIED,
        INVALID,
        DENIED,
        DENIED,
        DENIED,
        UNAVAILABLE,
        INVALID,
        DENIED,
    ),
    "AgencyNode/ResolveReference": (
        INVALID,
        DENIED,
        INVALID,
        DENIED,
        DENIED,
        DENIED,
        UNAVAILABLE,
        DENIED,
        DENIED,
    ),
}

CELLS = [
    (rpc, caller, code)
    for rpc, codes in EXPECTED.items()
    for caller, code in zip(CALLERS, codes, strict=True)
] + [
    (rpc, operator, codes[CALLERS.index("olga")] if rpc.startswith(own) else DENIED)
    for rpc, codes in EXPECTED.items()
    for operator, own in (("percy", "AgencyNode/"), ("hana", "nowhere"))
]


@pytest.fixture(scope="module")
def servers(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Node]]:
    matcher = Running(matcher_config(tmp_path_factory.mktemp("matcher"), pki), pki)
    node = start_node(write_node_config(tmp_path_factory.mktemp("node"), pki, matcher.address))
    yield matcher, node
    stop_node(node)
    matcher.stop()


def test_the_matrix_covers_every_rpc_of_every_service() -> None:
    declared = {
        f"{service.name}/{method.name}"
        for service in jigsaw_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert set(EXPECTED) == declared
    assert set(_matcher_calls()) | set(_node_calls()) == declared


@pytest.mark.parametrize(
    ("rpc", "caller", "expected"), CELLS, ids=[f"{r}-{c}" for r, c, _ in CELLS]
)
def test_authorisation_matrix(
    servers: tuple[Running, Node], pki: Path, rpc: str, caller: str, expected: grpc.StatusCode
) -> None:
    matcher, node = servers
    to_matcher = rpc.startswith("Matcher/")
    address = matcher.address if to_matcher else node.address
    if caller == "wrong-server":
        # a staff member's client that names the role the server does not have
        identity = "olga" if to_matcher else "alice"
        expect = (
            server_name("node", "police") if to_matcher else server_name("matcher", UNIT_AGENCY)
        )
    else:
        identity = caller
        expect = (
            server_name("matcher", UNIT_AGENCY) if to_matcher else server_name("node", "police")
        )
    call = (_matcher_calls() if to_matcher else _node_calls())[rpc]
    with secure_channel(address, tls_files_for(pki, identity), expect=expect) as channel:
        try:
            call(channel)
            code = OK
        except grpc.RpcError as exc:
            code = exc.code()
            details = exc.details() or ""
            if code == DENIED:
                assert "allowed for" in details  # the refusal names the expectation
    assert code == expected
