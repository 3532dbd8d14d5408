"""The documented Python client (client.client: NodeClient, MatcherClient) against a real
federation: matcher and node processes over mutual TLS on loopback (the ``federation``
fixture of tests/conftest.py). Staff look up and disclose through their own node; the
operator links at the matcher, reads the result, has a node fetch its linked records and
anchors a node's audit head; every client checks whom it reached."""

from __future__ import annotations

import grpc
import pytest

from client.client import MatcherClient, NodeClient, own_agency
from linkage.schema import Schema
from proto.jigsaw.v1 import jigsaw_pb2
from proto.jigsaw.v1.transport import WrongServerError
from server.launcher import AGENCIES, DISCLOSED, OPERATOR
from tests.helpers.federation import LiveFederation

pytestmark = pytest.mark.e2e

#: alice's agency in the launcher's layout (server.launcher.STAFF)
CARE = "childrens_social_care"


def health_query(federation: LiveFederation) -> dict[str, str]:
    """The identifiers of the first complete health record (as the health extract holds them)."""
    health = federation.population.agencies["health"]
    for row in range(len(health)):
        query = {
            name: str(health.columns[name][row]).strip()
            for name in ("given_name", "family_name", "date_of_birth", "sex")
            if health.columns[name][row] and str(health.columns[name][row]).strip()
        }
        if len(query) == 4:
            return query
    raise AssertionError("no complete health record")


def alice(federation: LiveFederation) -> NodeClient:
    return NodeClient(federation.nodes[CARE].address(), federation.tls("alice"))


def operator_at_matcher(federation: LiveFederation) -> MatcherClient:
    return MatcherClient(federation.matcher.address(), federation.tls(OPERATOR))


def test_a_staff_client_talks_to_its_own_agencys_node(federation: LiveFederation) -> None:
    assert own_agency(federation.tls("alice")) == CARE
    with alice(federation) as node:
        node.wait_ready()
        assert (node.role, node.agency) == ("node", CARE)


def test_lookup_then_disclose(federation: LiveFederation) -> None:
    with alice(federation) as node:
        found = node.lookup(health_query(federation), purpose_code="s47_enquiry", note="t 1")
        assert len(found.lookup_id) > 0
        health = [c for c in found.candidates if c.agency == "health"]
        assert health, [c.agency for c in found.candidates]
        assert health[0].band in (
            jigsaw_pb2.PROBABILITY_BAND_VERY_HIGH,
            jigsaw_pb2.PROBABILITY_BAND_HIGH,
        )
        released = node.disclose(
            health[0].reference, purpose_code="s47_enquiry", note="case 4711", priority="amber"
        )
    assert (released.agency, released.reference) == ("health", health[0].reference)
    assert set(released.fields) <= set(DISCLOSED) and "given_name" in released.fields
    assert "nhs_number" in released.withheld_fields
    assert len(released.disclosure_id) == 32


def test_a_disclosure_without_a_lookup_is_refused(federation: LiveFederation) -> None:
    with alice(federation) as node, pytest.raises(grpc.RpcError) as refused:
        node.disclose("e" * 32, purpose_code="s47_enquiry")
    assert refused.value.code() in (
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def test_a_client_refuses_a_server_that_is_not_the_expected_one(
    federation: LiveFederation,
) -> None:
    # alice's node client pointed at the health node: TLS refuses it before any request
    with (
        NodeClient(federation.nodes["health"].address(), federation.tls("alice")) as node,
        pytest.raises(WrongServerError, match="expected node of agency childrens_social_care"),
    ):
        node.status()
    # the matcher client pointed at a node
    with (
        MatcherClient(federation.nodes["police"].address(), federation.tls(OPERATOR)) as m,
        pytest.raises(WrongServerError),
    ):
        m.status()


def test_an_operator_names_the_node_it_talks_to(federation: LiveFederation) -> None:
    with pytest.raises(ValueError, match="name the node's agency"):
        NodeClient(federation.nodes["police"].address(), federation.tls(OPERATOR))
    with NodeClient(
        federation.nodes["police"].address(), federation.tls(OPERATOR), agency="police"
    ) as node:
        status = node.status()
    assert status.agency == "police"
    assert status.records == len(federation.population.agencies["police"])
    assert status.pending == 0 and status.published > 0


def test_matcher_status(federation: LiveFederation, child_schema: Schema) -> None:
    with operator_at_matcher(federation) as matcher:
        status = matcher.status()
    assert status.schema_fingerprint == child_schema.fingerprint()
    assert status.key_version == 1
    assert {a.agency for a in status.agencies} == set(AGENCIES)
    assert status.indexed_records > 0


def test_link_result_pages_and_the_nodes_linked_records(federation: LiveFederation) -> None:
    progress: list[jigsaw_pb2.LinkProgress] = []
    with operator_at_matcher(federation) as matcher:
        result_id = matcher.link(on_progress=progress.append)
        pages = list(matcher.link_result_pages(result_id, page_size=7))
    assert result_id and progress and progress[-1].result_id == result_id
    clusters = [cluster for page in pages for cluster in page.clusters]
    assert len(pages) > 1 and all(len(page.clusters) <= 7 for page in pages)
    assert len(clusters) == pages[0].total_clusters > 0
    assert all(len(cluster.members) >= 2 for cluster in clusters)
    assert {m.agency for cluster in clusters for m in cluster.members} <= set(AGENCIES)

    with NodeClient(
        federation.nodes["police"].address(), federation.tls(OPERATOR), agency="police"
    ) as node:
        fetched = node.fetch_linked(result_id)
        assert fetched.result_id == result_id and fetched.linked_records > 0
        records = [r for page in node.linked_pages(page_size=5) for r in page.records]
        assert len(records) == fetched.linked_records
        local_ids = set(federation.population.agencies["police"].columns["record_id"])
        assert {r.local_id for r in records} <= local_ids
        reference = records[0].record.reference
        assert node.resolve(reference, purpose="client test") == records[0].local_id


def test_anchor_a_nodes_audit_head(federation: LiveFederation) -> None:
    with NodeClient(
        federation.nodes["health"].address(), federation.tls(OPERATOR), agency="health"
    ) as node:
        anchored = node.anchor_audit()
        assert anchored.seq > 0 and anchored.receipt.head.ByteSize() > 0
        node_holds = node.anchors("matcher")
    with operator_at_matcher(federation) as matcher:
        matcher_holds = matcher.anchors("health-node")
    assert matcher_holds, "the matcher holds the head the node anchored"
    assert isinstance(node_holds, list)
