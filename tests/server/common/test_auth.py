"""Tests for server.common.auth: mutual TLS identities and role policy on real gRPC servers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.auth import (
    MATCHER_POLICY,
    NODE_POLICY,
    AuthInterceptor,
    Identity,
    RolePolicy,
    current_identity,
    identity_from_certificate,
    identity_from_context,
)
from server.common.pki import _issue, ca_dir, init_pki
from server.common.revocation import RevocationChecker
from server.common.status import Unauthenticated
from server.common.tls import (
    TlsFiles,
    secure_channel,
    server_credentials,
    server_options,
    tls_files_for,
)
from server.node.publish import message_forms, message_rows

TIMEOUT = 10


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    init_pki(out, agencies=["police"], staff=[("alice", "police")], operators=["olga", "oscar"])
    ca_certificate = x509.load_pem_x509_certificate((ca_dir(out) / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key(
        (ca_dir(out) / "ca.key").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    # Signed by the right CA, but OU is not a Jigsaw role: must be UNAUTHENTICATED.
    _issue(out, ca_certificate, ca_key, name="eve", agency="police", role="superuser", days=1)
    return out


@pytest.fixture(scope="module")
def other_pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("other-pki")
    init_pki(out, agencies=[], staff=[], operators=["olga"])
    return out


class EchoMatcher(jigsaw_pb2_grpc.MatcherServicer):
    """Answers with the caller's identity so tests can see what the servicer saw."""

    def Status(
        self, request: jigsaw_pb2.MatcherStatusRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.MatcherStatusResponse:
        identity = current_identity(context)
        return jigsaw_pb2.MatcherStatusResponse(
            version=f"{identity.name}/{identity.agency}/{identity.role}"
        )

    def Publish(
        self, request_iterator: Iterator[jigsaw_pb2.PublishRequest], context: grpc.ServicerContext
    ) -> jigsaw_pb2.PublishResponse:
        messages = list(request_iterator)
        assert current_identity(context).role == "node"
        return jigsaw_pb2.PublishResponse(
            received=sum(message_rows(m) for m in messages),
            forms=sum(message_forms(m) for m in messages),
        )

    def Link(
        self, request: jigsaw_pb2.LinkRequest, context: grpc.ServicerContext
    ) -> Iterator[jigsaw_pb2.LinkProgress]:
        for step in range(3):
            yield jigsaw_pb2.LinkProgress(stage=current_identity(context).name, done=step)


def chat(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for request in request_iterator:
        yield request + b":" + current_identity(context).name.encode()


CHAT_METHOD = "/jigsaw.v1.Test/Chat"
TEST_POLICY = RolePolicy(
    {**{m: MATCHER_POLICY.allowed_roles(m) for m in MATCHER_POLICY.methods}, CHAT_METHOD: {"staff"}}
)


@pytest.fixture(scope="module")
def address(pki_dir: Path) -> Iterator[str]:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[
            AuthInterceptor(
                TEST_POLICY,
                revocations=RevocationChecker.for_tls(tls_files_for(pki_dir, "matcher")),
            )
        ],
        options=server_options(),
    )
    jigsaw_pb2_grpc.add_MatcherServicer_to_server(EchoMatcher(), server)  # type: ignore[no-untyped-call]
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "jigsaw.v1.Test", {"Chat": grpc.stream_stream_rpc_method_handler(chat)}
            ),
        )
    )
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(tls_files_for(pki_dir, "matcher"))
    )
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def status_as(address: str, tls: TlsFiles) -> str:
    with secure_channel(address, tls) as channel:
        response = jigsaw_pb2_grpc.MatcherStub(channel).Status(  # type: ignore[no-untyped-call]
            jigsaw_pb2.MatcherStatusRequest(), timeout=TIMEOUT
        )
    return str(response.version)


def rpc_error(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_right_role_is_served_with_its_identity(address: str, pki_dir: Path) -> None:
    assert status_as(address, tls_files_for(pki_dir, "olga")) == "olga/unit/operator"


@pytest.mark.parametrize("name", ["alice", "police-node"])
def test_wrong_role_is_permission_denied(address: str, pki_dir: Path, name: str) -> None:
    error = rpc_error(lambda: status_as(address, tls_files_for(pki_dir, name)))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "/jigsaw.v1.Matcher/Status" in error.details()
    assert "operator" in error.details()


def test_method_missing_from_policy_is_denied(address: str, pki_dir: Path) -> None:
    with secure_channel(address, tls_files_for(pki_dir, "olga")) as channel:
        stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
        # Withdraw is served by the base class but only "node" may call it.
        error = rpc_error(lambda: stub.Withdraw(jigsaw_pb2.WithdrawRequest(), timeout=TIMEOUT))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    policy = RolePolicy({"/jigsaw.v1.Matcher/Status": {"operator"}})
    assert not policy.permits("/jigsaw.v1.Matcher/Link", "operator")
    assert policy.allowed_roles("/jigsaw.v1.Matcher/Link") == frozenset()


def test_certificate_without_role_is_unauthenticated(address: str, pki_dir: Path) -> None:
    error = rpc_error(lambda: status_as(address, tls_files_for(pki_dir, "eve")))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


def test_client_without_certificate_is_refused(address: str, pki_dir: Path) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(ca_dir(pki_dir) / "ca.pem").read_bytes()
    )
    with grpc.secure_channel(address, credentials) as channel:
        stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
        error = rpc_error(lambda: stub.Status(jigsaw_pb2.MatcherStatusRequest(), timeout=TIMEOUT))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
        error = rpc_error(lambda: stub.Status(jigsaw_pb2.MatcherStatusRequest(), timeout=TIMEOUT))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_is_refused(
    address: str, pki_dir: Path, other_pki_dir: Path
) -> None:
    # The client trusts the right CA but presents a certificate from another CA.
    olga = tls_files_for(other_pki_dir, "olga")
    foreign = TlsFiles(ca_cert=ca_dir(pki_dir) / "ca.pem", cert=olga.cert, key=olga.key)
    error = rpc_error(lambda: status_as(address, foreign))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_client_refuses_server_from_another_ca(address: str, other_pki_dir: Path) -> None:
    error = rpc_error(lambda: status_as(address, tls_files_for(other_pki_dir, "olga")))
    assert error.code() is grpc.StatusCode.UNAVAILABLE


def test_stream_request_and_stream_response_handlers(address: str, pki_dir: Path) -> None:
    with secure_channel(address, tls_files_for(pki_dir, "police-node")) as channel:
        stub = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
        two_rows = jigsaw_pb2.EncodedColumns(references=["a" * 32, "b" * 32])
        batches = iter([jigsaw_pb2.PublishRequest(columns=two_rows)] * 3)
        assert stub.Publish(batches, timeout=TIMEOUT).received == 6
        error = rpc_error(lambda: list(stub.Link(jigsaw_pb2.LinkRequest(), timeout=TIMEOUT)))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    with secure_channel(address, tls_files_for(pki_dir, "olga")) as channel:
        progress = list(
            jigsaw_pb2_grpc.MatcherStub(channel).Link(jigsaw_pb2.LinkRequest(), timeout=TIMEOUT)  # type: ignore[no-untyped-call]
        )
        assert [(p.stage, p.done) for p in progress] == [("olga", 0), ("olga", 1), ("olga", 2)]
        publish = jigsaw_pb2_grpc.MatcherStub(channel).Publish  # type: ignore[no-untyped-call]
        error = rpc_error(lambda: publish(iter([jigsaw_pb2.PublishRequest()]), timeout=TIMEOUT))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED


def test_stream_stream_handler(address: str, pki_dir: Path) -> None:
    for name, allowed in (("alice", True), ("olga", False)):
        with secure_channel(address, tls_files_for(pki_dir, name)) as channel:
            call = channel.stream_stream(CHAT_METHOD)
            if allowed:
                assert list(call(iter([b"a", b"b"]), timeout=TIMEOUT)) == [b"a:alice", b"b:alice"]
            else:
                with pytest.raises(grpc.RpcError) as caught:
                    list(call(iter([b"a"]), timeout=TIMEOUT))
                assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("name", ["alice", "olga", "police-node"])
def test_health_is_open_to_every_identity(address: str, pki_dir: Path, name: str) -> None:
    with secure_channel(address, tls_files_for(pki_dir, name)) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_identities_do_not_leak_across_concurrent_calls(address: str, pki_dir: Path) -> None:
    names = ["olga", "oscar"]
    channels = {name: secure_channel(address, tls_files_for(pki_dir, name)) for name in names}
    results: list[tuple[str, str]] = []
    lock = threading.Lock()

    def call(name: str) -> None:
        stub = jigsaw_pb2_grpc.MatcherStub(channels[name])  # type: ignore[no-untyped-call]
        for _ in range(15):
            version = stub.Status(jigsaw_pb2.MatcherStatusRequest(), timeout=TIMEOUT).version
            with lock:
                results.append((name, version))

    threads = [threading.Thread(target=call, args=(name,)) for name in names * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in channels.values():
        channel.close()
    assert len(results) == 60
    assert all(version == f"{name}/unit/operator" for name, version in results)


class FakeContext:
    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_identity_from_context_without_tls(pki_dir: Path) -> None:
    assert identity_from_context(FakeContext({})) is None
    with pytest.raises(Unauthenticated):
        current_identity(FakeContext({}))
    pem = tls_files_for(pki_dir, "alice").cert.read_bytes()
    context = FakeContext({"x509_pem_cert": [pem]})
    assert identity_from_context(context) == Identity("alice", "police", "staff")
    # Without the interceptor, current_identity falls back to the peer certificate.
    assert current_identity(context) == Identity("alice", "police", "staff")
    assert identity_from_certificate((ca_dir(pki_dir) / "ca.pem").read_bytes()) is None
    assert identity_from_certificate(b"not a certificate") is None


@pytest.mark.parametrize(
    ("policy", "service"),
    [(MATCHER_POLICY, "Matcher"), (NODE_POLICY, "AgencyNode")],
)
def test_policies_cover_every_method_of_their_service(policy: RolePolicy, service: str) -> None:
    descriptor = jigsaw_pb2.DESCRIPTOR.services_by_name[service]
    expected = {f"/jigsaw.v1.{service}/{method.name}" for method in descriptor.methods}
    assert policy.methods == expected


def test_policy_tables() -> None:
    assert MATCHER_POLICY.allowed_roles("/jigsaw.v1.Matcher/Match") == {"node"}
    assert MATCHER_POLICY.allowed_roles("/jigsaw.v1.Matcher/Link") == {"operator"}
    assert NODE_POLICY.allowed_roles("/jigsaw.v1.AgencyNode/Disclose") == {
        "staff",
        "node",
        "console",
    }
    assert NODE_POLICY.allowed_roles("/jigsaw.v1.AgencyNode/Lookup") == {"staff", "console"}
    assert NODE_POLICY.allowed_roles("/jigsaw.v1.AgencyNode/Status") == {
        "staff",
        "operator",
        "console",
    }
    assert NODE_POLICY.allowed_roles("/jigsaw.v1.AgencyNode/ListLinked") == {
        "staff",
        "operator",
        "console",
    }
    assert NODE_POLICY.allowed_roles("/jigsaw.v1.AgencyNode/ResolveReference") == {
        "staff",
        "operator",
    }
    assert NODE_POLICY.permits("/grpc.health.v1.Health/Check", "node")
    assert not NODE_POLICY.permits("/jigsaw.v1.AgencyNode/Lookup", "node")


def test_policy_rejects_unknown_roles_and_bad_names() -> None:
    with pytest.raises(ValueError, match="unknown roles"):
        RolePolicy({"/jigsaw.v1.Matcher/Status": {"admin"}})
    with pytest.raises(ValueError, match="full name"):
        RolePolicy({"Status": {"operator"}})


def test_interceptor_parses_each_certificate_once(
    pki_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Identities are remembered per exact certificate, bounded, and never mixed up."""
    import server.common.auth as auth

    parsed: list[bytes] = []
    original = auth._identity_and_serial

    def counting(pem: bytes) -> tuple[Identity, int] | None:
        parsed.append(pem)
        return original(pem)

    monkeypatch.setattr(auth, "_identity_and_serial", counting)
    monkeypatch.setattr(auth, "MAX_REMEMBERED_CERTIFICATES", 2)
    interceptor = AuthInterceptor(
        NODE_POLICY, revocations=RevocationChecker.for_tls(tls_files_for(pki_dir, "police-node"))
    )
    alice = tls_files_for(pki_dir, "alice").cert.read_bytes()
    olga = tls_files_for(pki_dir, "olga").cert.read_bytes()
    ca = (ca_dir(pki_dir) / "ca.pem").read_bytes()
    for _ in range(3):
        assert interceptor._identity(FakeContext({"x509_pem_cert": [alice]})) == (
            Identity("alice", "police", "staff"),
            x509.load_pem_x509_certificate(alice).serial_number,
        )
        assert interceptor._identity(FakeContext({"x509_pem_cert": [olga]})) == (
            Identity("olga", "unit", "operator"),
            x509.load_pem_x509_certificate(olga).serial_number,
        )
    assert parsed == [alice, olga]
    assert interceptor._identity(FakeContext({"x509_pem_cert": [ca]})) is None  # no identity
    assert interceptor._identity(FakeContext({"x509_pem_cert": [alice]})) is not None
    assert parsed == [alice, olga, ca, alice]  # the bound of 2 made it start over
    assert interceptor._identity(FakeContext({})) is None
    assert interceptor._identity(FakeContext({"x509_pem_cert": [alice, olga]})) is None
