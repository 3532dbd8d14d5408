"""Certificate revocation: ``jigsaw pki revoke``, the signed list, and real servers refusing a
revoked client certificate on every call over mutual TLS, without a restart.

Each test gets a PKI of its own: revoking is what the tests do.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto.jigsaw.v1 import jigsaw_pb2
from server.common.pki import (
    CRL_FILE,
    UNIT_AGENCY,
    PkiError,
    ca_dir,
    init_pki,
    issue_certificate,
    read_revocation_list,
    revoke_certificate,
    server_name,
)
from server.common.revocation import RevocationChecker
from server.common.tls import secure_channel, tls_files_for
from server.matcher.config import parse_matcher_config
from server.matcher.service import build_matcher
from tests.helpers.matcher import Running, matcher_config
from tests.helpers.node import start_node, stop_node, write_node_config

TIMEOUT = 10
REVOKED = "the client certificate is revoked"


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_pki(
        directory,
        agencies=["police", "health"],
        staff=[("alice", "police"), ("bob", "police")],
        operators=["olga"],
        days=30,
    )
    return directory


@pytest.fixture
def matcher(tmp_path: Path, pki: Path) -> Iterator[Running]:
    (tmp_path / "matcher").mkdir()
    running = Running(matcher_config(tmp_path / "matcher", pki), pki)
    yield running
    running.stop()


def serial_of(pki: Path, name: str) -> int:
    return x509.load_pem_x509_certificate(tls_files_for(pki, name).cert.read_bytes()).serial_number


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_init_writes_an_empty_list_signed_by_the_ca(pki: Path) -> None:
    ca = x509.load_pem_x509_certificate(tls_files_for(pki, "olga").ca_cert.read_bytes())
    listed = read_revocation_list(ca_dir(pki) / CRL_FILE, ca)
    assert listed.serials == frozenset() and listed.number == 1
    assert listed.crl.next_update_utc == ca.not_valid_after_utc


def test_revoke_by_name_and_by_serial(pki: Path) -> None:
    ca = x509.load_pem_x509_certificate(tls_files_for(pki, "olga").ca_cert.read_bytes())
    alice = serial_of(pki, "alice")
    assert revoke_certificate(pki, name="alice") == alice
    assert revoke_certificate(pki, serial=serial_of(pki, "bob")) == serial_of(pki, "bob")
    listed = read_revocation_list(ca_dir(pki) / CRL_FILE, ca)
    assert listed.serials == {alice, serial_of(pki, "bob")} and listed.number == 3
    # the copies in the server bundles follow; other bundles have none
    signed = (ca_dir(pki) / CRL_FILE).read_bytes()
    for server in ("matcher", "police-node", "health-node"):
        assert tls_files_for(pki, server).revocation_list_path().read_bytes() == signed
    assert not (pki / "alice" / CRL_FILE).exists()
    assert revoke_certificate(pki, name="alice") == alice  # again: nothing changes
    assert read_revocation_list(ca_dir(pki) / CRL_FILE, ca).number == 3
    with pytest.raises(PkiError, match="not both"):
        revoke_certificate(pki, name="alice", serial=alice)
    with pytest.raises(PkiError, match="no certificate for identity"):
        revoke_certificate(pki, name="mallory")


def test_revoke_refuses_a_certificate_of_another_ca(pki: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_pki(other, agencies=[], staff=[], operators=["olga"])
    (pki / "stranger").mkdir()
    shutil.copy(tls_files_for(other, "olga").cert, pki / "stranger" / "stranger.pem")
    with pytest.raises(PkiError, match="not issued by this CA"):
        revoke_certificate(pki, name="stranger")


def test_a_revoked_staff_certificate_is_refused_at_a_node(
    pki: Path, matcher: Running, tmp_path: Path
) -> None:
    node = start_node(write_node_config(tmp_path / "node", pki, matcher.address))
    try:
        alice, bob = node.stub(pki, "alice"), node.stub(pki, "bob")
        assert alice.Status(jigsaw_pb2.NodeStatusRequest(), timeout=TIMEOUT).agency == "police"
        revoke_certificate(pki, name="alice")  # the node keeps running: no restart
        for call in (
            lambda: alice.Status(jigsaw_pb2.NodeStatusRequest(), timeout=TIMEOUT),
            lambda: alice.Lookup(
                jigsaw_pb2.LookupRequest(
                    identifiers={"family_name": "Smith"}, purpose_code="s47_enquiry", note="p"
                ),
                timeout=TIMEOUT,
            ),
        ):
            error = refused(call)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert REVOKED in error.details() and "not on the federation's" in error.details()
            assert "Smith" not in error.details()
        # a colleague's certificate is not affected
        assert bob.Status(jigsaw_pb2.NodeStatusRequest(), timeout=TIMEOUT).agency == "police"
    finally:
        stop_node(node)


def test_a_revoked_node_certificate_is_refused_at_the_matcher(pki: Path, matcher: Running) -> None:
    police, health = matcher.stub("police-node"), matcher.stub("health-node")
    police.Withdraw(jigsaw_pb2.WithdrawRequest(), timeout=TIMEOUT)
    revoke_certificate(pki, serial=serial_of(pki, "police-node"))
    error = refused(lambda: police.Withdraw(jigsaw_pb2.WithdrawRequest(), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and REVOKED in error.details()
    # open services too: a revoked certificate is no credential at all
    probe = health_pb2_grpc.HealthStub(matcher.channel("police-node"))
    error = refused(lambda: probe.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    health.Withdraw(jigsaw_pb2.WithdrawRequest(), timeout=TIMEOUT)


def test_a_list_signed_by_another_key_stops_the_server_starting(pki: Path, tmp_path: Path) -> None:
    # another CA of the same name: the issuer matches, the signature does not
    other = tmp_path / "other"
    init_pki(other, agencies=[], staff=[], operators=["olga"])
    served = tls_files_for(pki, "matcher").revocation_list_path()
    shutil.copy(ca_dir(other) / CRL_FILE, served)
    (tmp_path / "matcher").mkdir()
    with pytest.raises(PkiError, match="not signed by the federation CA"):
        build_matcher(matcher_config(tmp_path / "matcher", pki))
    served.write_text("not a list\n")
    with pytest.raises(PkiError, match="not a PEM certificate revocation list"):
        build_matcher(matcher_config(tmp_path / "matcher", pki))
    served.unlink()
    with pytest.raises(PkiError, match="no certificate revocation list"):
        build_matcher(matcher_config(tmp_path / "matcher", pki))


def test_the_crl_setting_names_the_list(pki: Path, tmp_path: Path) -> None:
    moved = tmp_path / "matcher" / "lists" / "federation.crl"
    moved.parent.mkdir(parents=True)
    served = tls_files_for(pki, "matcher").revocation_list_path()
    assert served == pki / "matcher" / CRL_FILE  # the default: beside ca_cert
    shutil.move(served, moved)
    config = matcher_config(tmp_path / "matcher", pki)
    assert config.tls.revocation_list_path() == served
    with pytest.raises(PkiError, match="no certificate revocation list"):
        build_matcher(config)
    tls = config.tls
    text = f"""
[matcher]
schema = "child"
store = "matcher.sqlite"
audit_log = "matcher-audit.jsonl"
[tls]
ca_cert = "{tls.ca_cert}"
cert = "{tls.cert}"
key = "{tls.key}"
crl = "lists/federation.crl"
"""
    config = parse_matcher_config(text, base_dir=tmp_path / "matcher")
    assert config.tls.revocation_list_path() == moved
    build_matcher(config).close()


def test_a_reload_never_weakens_the_list(
    pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = tls_files_for(pki, "matcher")
    checker = RevocationChecker.for_tls(tls)
    served = tls.revocation_list_path()
    older = tmp_path / "older.pem"
    shutil.copy(served, older)
    alice = serial_of(pki, "alice")
    assert not checker.is_revoked(alice)
    revoke_certificate(pki, name="alice")
    assert checker.is_revoked(alice)
    with caplog.at_level(logging.ERROR, logger="server.common.revocation"):
        shutil.copy(older, served)  # an older list would un-revoke alice
        assert checker.is_revoked(alice)
        served.write_text("garbage")
        assert checker.is_revoked(alice)
        served.unlink()
        assert checker.is_revoked(alice)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3
    assert all("the one in force stays" in m or "which stays" in m for m in messages)


def test_the_cli_revokes(pki: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client.cli", "pki", "revoke", "--dir", str(pki), "--name", "bob"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{serial_of(pki, 'bob'):x}" in result.stdout
    listed = read_revocation_list(
        ca_dir(pki) / CRL_FILE,
        x509.load_pem_x509_certificate(tls_files_for(pki, "bob").ca_cert.read_bytes()),
    )
    assert listed.serials == {serial_of(pki, "bob")}


def test_a_revoked_certificate_is_refused_on_every_rpc_of_both_services(
    pki: Path, matcher: Running, tmp_path: Path
) -> None:
    """The authorisation matrix's column for a revoked certificate: a node certificate (the
    role that may call both services) gets UNAUTHENTICATED from every RPC."""
    from tests.server.common.test_authorisation_matrix import _matcher_calls, _node_calls

    issue_certificate(pki, "retired-node", "police", "node")
    revoke_certificate(pki, name="retired-node")
    node = start_node(write_node_config(tmp_path / "node", pki, matcher.address))
    try:
        for address, calls, expect in (
            (matcher.address, _matcher_calls(), server_name("matcher", UNIT_AGENCY)),
            (node.address, _node_calls(), server_name("node", "police")),
        ):
            tls = tls_files_for(pki, "retired-node")
            with secure_channel(address, tls, expect=expect) as channel:
                for rpc, call in calls.items():
                    error = refused(lambda call=call: call(channel))
                    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, rpc
                    assert REVOKED in error.details(), rpc
    finally:
        stop_node(node)


def test_a_list_past_its_next_update_fails_closed(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = tls_files_for(pki, "matcher")
    crl = read_revocation_list(files.revocation_list_path(), x509.load_pem_x509_certificate(
        files.ca_cert.read_bytes()
    ))  # fmt: skip
    assert crl.next_update is not None
    after = crl.next_update + datetime.timedelta(seconds=1)
    with pytest.raises(PkiError, match="past its next update"):
        RevocationChecker(files.revocation_list_path(), files.ca_cert, clock=lambda: after)
    now = [crl.next_update - datetime.timedelta(days=1)]
    checker = RevocationChecker(files.revocation_list_path(), files.ca_cert, clock=lambda: now[0])
    alice = serial_of(pki, "alice")
    assert not checker.is_revoked(alice)
    now[0] = after
    with caplog.at_level(logging.ERROR, logger="server.common.revocation"):
        assert checker.is_revoked(alice) and checker.is_revoked(serial_of(pki, "olga"))
    assert sum("past its next update" in r.getMessage() for r in caplog.records) == 1
