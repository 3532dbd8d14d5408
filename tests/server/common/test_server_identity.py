"""Clients check whom they reached: the server certificate must name the role and agency
expected (``server.common.pki.server_name``), over real mutual TLS on loopback.

Every certificate of the federation's CA is valid for TLS, so without that check a node could
pose as the matcher (and collect other agencies' encodings) or as another agency's node.
Each impostor here is a bare gRPC server presenting another identity's certificate; the
control is the same server with the right certificate, which the client reaches (and which
answers UNIMPLEMENTED, having no services).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from client.client import MatcherClient, NodeClient
from proto.jigsaw.v1 import jigsaw_pb2
from server.common.tls import WrongServerError, server_credentials, tls_files_for
from tests.helpers.node import (
    MatcherLog,
    look_up,
    matcher,
    start_node,
    stop_node,
    write_node_config,
)

__all__ = ["matcher"]  # the node tests' recording matcher, a fixture here too


@pytest.fixture
def server_as(pki: Path) -> Iterator[object]:
    """Start a bare server presenting the certificate of identity ``name``; its address."""
    servers: list[grpc.Server] = []

    def start(name: str) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        port = server.add_secure_port("127.0.0.1:0", server_credentials(tls_files_for(pki, name)))
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=None).wait()


def unimplemented(call: object) -> None:
    """The control: TLS accepted the server, which has no Jigsaw service."""
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("impostor", ["police-node", "alice", "olga"])
def test_the_matcher_client_refuses_a_server_that_is_not_the_matcher(
    pki: Path, server_as: object, impostor: str
) -> None:
    address = server_as(impostor)  # type: ignore[operator]
    client = MatcherClient(address, tls_files_for(pki, "olga"))
    with client, pytest.raises(WrongServerError) as info:
        client.status()
    message = str(info.value)
    assert address in message and "not the expected matcher of agency unit" in message
    with MatcherClient(server_as("matcher"), tls_files_for(pki, "olga")) as client:  # type: ignore[operator]
        unimplemented(client.status)


@pytest.mark.parametrize("impostor", ["health-node", "matcher", "alice"])
def test_a_staff_client_refuses_a_server_that_is_not_its_own_agencys_node(
    pki: Path, server_as: object, impostor: str
) -> None:
    address = server_as(impostor)  # type: ignore[operator]
    node = NodeClient(address, tls_files_for(pki, "alice"))
    with node, pytest.raises(WrongServerError) as info:
        node.lookup({"family_name": "Smith"}, purpose_code="s47_enquiry", note="p")
    assert "not the expected node of agency police" in str(info.value)
    assert "Smith" not in str(info.value)
    with NodeClient(server_as("police-node"), tls_files_for(pki, "alice")) as client:  # type: ignore[operator]
        unimplemented(lambda: client.disclose("ab" * 16, purpose_code="s47_enquiry"))


def test_an_operator_names_the_nodes_agency(pki: Path, server_as: object) -> None:
    address = server_as("health-node")  # type: ignore[operator]
    with pytest.raises(ValueError, match="name the node's agency"):
        NodeClient(address, tls_files_for(pki, "olga"))
    wrong = NodeClient(address, tls_files_for(pki, "olga"), agency="police")
    with wrong, pytest.raises(WrongServerError):
        wrong.status()
    with NodeClient(address, tls_files_for(pki, "olga"), agency="health") as client:
        unimplemented(client.status)


def test_the_nodes_channel_to_the_matcher_refuses_an_impostor(
    pki: Path, server_as: object, tmp_path: Path
) -> None:
    impostor = server_as("health-node")  # type: ignore[operator]
    node = start_node(write_node_config(tmp_path, pki, impostor))
    try:
        with pytest.raises(grpc.RpcError) as info:
            node.stub(pki, "alice").Lookup(
                jigsaw_pb2.LookupRequest(
                    identifiers={"family_name": "Smith"}, purpose_code="s47_enquiry", note="p"
                ),
                timeout=10,
            )
    finally:
        stop_node(node)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not the expected matcher of agency unit" in info.value.details()
    assert "Smith" not in info.value.details()


def test_a_nodes_relay_refuses_a_holder_that_is_not_that_agencys_node(
    pki: Path, server_as: object, matcher: tuple[str, MatcherLog], tmp_path: Path
) -> None:
    """A disclosure relayed to the holder's node goes only to a server whose certificate
    names that agency's node: police's own node certificate will not do for health."""
    impostor = server_as("police-node")  # type: ignore[operator]
    node = start_node(write_node_config(tmp_path, pki, matcher[0], peers=f'health = "{impostor}"'))
    try:
        reference = "ab" * 16
        look_up(node, pki, matcher[1], "alice", [("health", reference)])
        with pytest.raises(grpc.RpcError) as info:
            node.stub(pki, "alice").Disclose(
                jigsaw_pb2.DiscloseRequest(reference=reference, purpose_code="s47_enquiry"),
                timeout=10,
            )
    finally:
        stop_node(node)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not the expected node of agency health" in info.value.details()
