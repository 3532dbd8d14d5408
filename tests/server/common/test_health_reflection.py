"""Health checks and server reflection on a real matcher and a real node, over mutual TLS.

A load balancer's probe uses a ``probe`` certificate (``jigsaw pki issue --role probe``): it
is answered by the health service and refused by every Jigsaw RPC. Reflection answers as
v1alpha and as v1, the version grpcurl-like clients ask first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from server.common.pki import UNIT_AGENCY, server_name
from server.common.tls import secure_channel, tls_files_for
from tests.helpers.matcher import Running, matcher_config
from tests.helpers.node import Node, start_node, stop_node, write_node_config
from tests.helpers.pki import PKI_PROBE
from tests.server.common.test_authorisation_matrix import _matcher_calls, _node_calls

TIMEOUT = 10
PROBE = PKI_PROBE  # the shared PKI's probe certificate (tests/conftest.py)


@pytest.fixture(scope="module")
def servers(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Node]]:
    matcher = Running(matcher_config(tmp_path_factory.mktemp("matcher"), pki), pki)
    node = start_node(write_node_config(tmp_path_factory.mktemp("node"), pki, matcher.address))
    yield matcher, node
    stop_node(node)
    matcher.stop()


def targets(servers: tuple[Running, Node]) -> list[tuple[str, str, str]]:
    """(address, expected server name, served service) of the matcher and the node."""
    matcher, node = servers
    return [
        (matcher.address, server_name("matcher", UNIT_AGENCY), "jigsaw.v1.Matcher"),
        (node.address, server_name("node", "police"), "jigsaw.v1.AgencyNode"),
    ]


def test_a_probe_certificate_gets_health_checks(servers: tuple[Running, Node], pki: Path) -> None:
    for address, expect, service in targets(servers):
        with secure_channel(address, tls_files_for(pki, PROBE), expect=expect) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", service):
                answer = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=TIMEOUT)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, (address, name)


def test_a_probe_certificate_opens_no_jigsaw_rpc(servers: tuple[Running, Node], pki: Path) -> None:
    (matcher_address, matcher_name, _), (node_address, node_name, _) = targets(servers)
    for address, expect, calls in (
        (matcher_address, matcher_name, _matcher_calls()),
        (node_address, node_name, _node_calls()),
    ):
        with secure_channel(address, tls_files_for(pki, PROBE), expect=expect) as channel:
            for rpc, call in calls.items():
                with pytest.raises(grpc.RpcError) as info:
                    call(channel)
                assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, rpc
                assert "caller has role probe" in (info.value.details() or ""), rpc


def test_reflection_v1alpha_lists_and_describes(servers: tuple[Running, Node], pki: Path) -> None:
    for address, expect, service in targets(servers):
        with secure_channel(address, tls_files_for(pki, PROBE), expect=expect) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            assert set(database.get_services()) == {
                service,
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }
            described = database.FindFileContainingSymbol(service)
            assert described.package == "jigsaw.v1"


def reflect_v1(channel: grpc.Channel, request: reflection_pb2.ServerReflectionRequest) -> Any:
    """One request to ``grpc.reflection.v1``, as a v1 client sends it (the bytes of v1 and
    v1alpha messages are the same)."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    (response,) = list(call(iter([request]), timeout=TIMEOUT))
    return response


def test_reflection_v1_answers(servers: tuple[Running, Node], pki: Path) -> None:
    for address, expect, service in targets(servers):
        with secure_channel(address, tls_files_for(pki, PROBE), expect=expect) as channel:
            listed = reflect_v1(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
            names = {entry.name for entry in listed.list_services_response.service}
            assert service in names and "grpc.health.v1.Health" in names
            found = reflect_v1(
                channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
            )
            assert found.file_descriptor_response.file_descriptor_proto
