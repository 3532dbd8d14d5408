"""Tests for server.common.pki: certificate layout, identity, extensions, file modes, TLS."""

from __future__ import annotations

import ipaddress
import stat
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from proto.jigsaw.v1.transport import MAX_MESSAGE_BYTES
from server.common.pki import (
    CaPassphrase,
    PkiError,
    PkiLayout,
    init_pki,
    issue_certificate,
    revoke_certificate,
)
from server.common.tls import (
    TlsFiles,
    secure_channel,
    server_credentials,
    server_options,
    tls_files_for,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PkiLayout]:
    out = tmp_path_factory.mktemp("pki")
    layout = init_pki(
        out,
        agencies=["police", "health"],
        staff=[("alice", "police")],
        operators=["olga"],
        days=30,
    )
    return out, layout


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def subject(certificate: x509.Certificate) -> tuple[str, str, str]:
    name = certificate.subject

    def one(oid: x509.ObjectIdentifier) -> str:
        (attribute,) = name.get_attributes_for_oid(oid)
        return str(attribute.value)

    return (
        one(NameOID.COMMON_NAME),
        one(NameOID.ORGANIZATION_NAME),
        one(NameOID.ORGANIZATIONAL_UNIT_NAME),
    )


def test_layout_lists_every_identity(pki: tuple[Path, PkiLayout]) -> None:
    out, layout = pki
    assert layout.names() == ["matcher", "police-node", "health-node", "alice", "olga"]
    assert layout.ca_cert == out / "ca" / "ca.pem"
    assert layout.ca_key == out / "ca" / "ca.key" and layout.crl == out / "ca" / "crl.pem"
    for name in layout.names():
        cert_path, key_path = layout[name]
        assert cert_path == out / name / f"{name}.pem" and cert_path.is_file()
        assert key_path == out / name / f"{name}.key" and key_path.is_file()
    assert "alice" in layout and "mallory" not in layout


def test_the_ca_key_is_apart_and_bundles_hold_only_their_identity(
    pki: tuple[Path, PkiLayout],
) -> None:
    out, layout = pki
    ca_pem = layout.ca_cert.read_bytes()
    assert sorted(p.name for p in (out / "ca").iterdir()) == ["ca.key", "ca.pem", "crl.pem"]
    for directory in [out / "ca", *(out / name for name in layout.names())]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory.name
    for name in layout.names():
        server = name in {"matcher", "police-node", "health-node"}
        expected = {f"{name}.key", f"{name}.pem", "ca.pem"} | ({"crl.pem"} if server else set())
        assert {p.name for p in (out / name).iterdir()} == expected
        assert (out / name / "ca.pem").read_bytes() == ca_pem
        for path in (out / name).iterdir():
            assert path.read_bytes() != layout.ca_key.read_bytes()
    # nothing else at the top: a CA key never sits beside the identities' keys
    assert {p.name for p in out.iterdir()} == {"ca", *layout.names()}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("matcher", ("matcher", "unit", "matcher")),
        ("police-node", ("police-node", "police", "node")),
        ("health-node", ("health-node", "health", "node")),
        ("alice", ("alice", "police", "staff")),
        ("olga", ("olga", "unit", "operator")),
    ],
)
def test_identity_encoded_in_subject(
    pki: tuple[Path, PkiLayout], name: str, expected: tuple[str, str, str]
) -> None:
    _out, layout = pki
    assert subject(load(layout[name][0])) == expected


def test_private_keys_are_owner_only(pki: tuple[Path, PkiLayout]) -> None:
    out, _layout = pki
    keys = sorted(out.glob("*/*.key"))
    assert len(keys) == 6
    for key_path in keys:
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600, key_path.name


def test_ca_certificate_extensions(pki: tuple[Path, PkiLayout]) -> None:
    _out, layout = pki
    ca = load(layout.ca_cert)
    assert ca.issuer == ca.subject
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    ca.verify_directly_issued_by(ca)


@pytest.mark.parametrize("name", ["matcher", "police-node", "alice", "olga"])
def test_leaf_extensions(pki: tuple[Path, PkiLayout], name: str) -> None:
    _out, layout = pki
    ca = load(layout.ca_cert)
    leaf = load(layout[name][0])
    leaf.verify_directly_issued_by(ca)
    extensions = leaf.extensions
    assert not extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    purposes = set(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert purposes == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    authority = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_key_id = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert authority.key_identifier == ca_key_id.digest
    extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    has_san = True
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        has_san = False
    if name in {"matcher", "police-node"}:
        assert has_san
        # and the role-and-agency name a client expecting this server checks
        expected = {
            "matcher": "matcher.unit.jigsaw.invalid",
            "police-node": "node.police.jigsaw.invalid",
        }
        assert san.get_values_for_type(x509.DNSName) == ["localhost", expected[name]]
        assert set(san.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        }
    else:
        assert not has_san


def test_refuses_to_overwrite_ca(tmp_path: Path) -> None:
    init_pki(tmp_path, agencies=["police"], staff=[], operators=[])
    before = (tmp_path / "ca" / "ca.pem").read_bytes()
    with pytest.raises(PkiError, match="already exists"):
        init_pki(tmp_path, agencies=["police"], staff=[], operators=[])
    assert (tmp_path / "ca" / "ca.pem").read_bytes() == before
    init_pki(tmp_path, agencies=["police"], staff=[], operators=[], force=True)
    assert (tmp_path / "ca" / "ca.pem").read_bytes() != before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"agencies": ["Police"], "staff": [], "operators": []}, "agency id"),
        ({"agencies": ["police"], "staff": [("bob", "schools")], "operators": []}, "agency"),
        ({"agencies": ["police"], "staff": [("../evil", "police")], "operators": []}, "name"),
        ({"agencies": ["police"], "staff": [], "operators": ["ca"]}, "reserved"),
        ({"agencies": ["police"], "staff": [("olga", "police")], "operators": ["olga"]}, "twice"),
    ],
)
def test_rejects_bad_plans(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PkiError, match=message):
        init_pki(tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "ca").exists()


def test_issue_certificate_later(tmp_path: Path) -> None:
    init_pki(tmp_path, agencies=["police"], staff=[], operators=[])
    cert_path, key_path = issue_certificate(tmp_path, "schools-node", "schools", "node")
    assert subject(load(cert_path)) == ("schools-node", "schools", "node")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    with pytest.raises(PkiError, match="already exists"):
        issue_certificate(tmp_path, "schools-node", "schools", "node")
    with pytest.raises(PkiError, match="role"):
        issue_certificate(tmp_path, "bob", "police", "admin")
    with pytest.raises(PkiError, match="no certificate authority"):
        issue_certificate(tmp_path / "empty", "bob", "police", "staff")


class _Matcher(jigsaw_pb2_grpc.MatcherServicer):
    def Status(
        self, request: jigsaw_pb2.MatcherStatusRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.MatcherStatusResponse:
        return jigsaw_pb2.MatcherStatusResponse(version="ok")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_certificates_work_for_grpc_mutual_tls(pki: tuple[Path, PkiLayout], host: str) -> None:
    out, _layout = pki
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=server_options())
    jigsaw_pb2_grpc.add_MatcherServicer_to_server(_Matcher(), server)  # type: ignore[no-untyped-call]
    bind = "[::1]:0" if host == "[::1]" else "127.0.0.1:0"
    try:
        port = server.add_secure_port(bind, server_credentials(tls_files_for(out, "matcher")))
    except RuntimeError:
        pytest.skip("IPv6 loopback unavailable")
    server.start()
    try:
        with secure_channel(f"{host}:{port}", tls_files_for(out, "olga")) as channel:
            response = jigsaw_pb2_grpc.MatcherStub(channel).Status(  # type: ignore[no-untyped-call]
                jigsaw_pb2.MatcherStatusRequest(), timeout=10
            )
        assert response.version == "ok"
    finally:
        server.stop(None)


def test_tls_files_for_names_missing_file(pki: tuple[Path, PkiLayout]) -> None:
    out, _layout = pki
    bundle = out / "alice"
    expected = TlsFiles(bundle / "ca.pem", bundle / "alice.pem", bundle / "alice.key")
    assert tls_files_for(out, "alice") == expected
    assert tls_files_for(bundle, "alice") == expected  # the bundle alone, as handed out
    with pytest.raises(FileNotFoundError, match=r"nobody\.pem"):
        tls_files_for(out, "nobody")
    with pytest.raises(PkiError, match="certificate authority"):
        tls_files_for(out, "ca")


def test_message_limits_in_server_options() -> None:
    options = dict(server_options())
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES == 8 * 1024 * 1024
    assert options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    assert options["grpc.keepalive_time_ms"] >= 10_000


PASSPHRASE = CaPassphrase(b"test passphrase, not a real one")


def test_a_passphrase_encrypts_the_ca_key_and_issuing_needs_it(tmp_path: Path) -> None:
    layout = init_pki(tmp_path, agencies=["police"], staff=[], operators=[], passphrase=PASSPHRASE)
    pem = layout.ca_key.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(layout.ca_key.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(PkiError, match="is encrypted: give its passphrase"):
        issue_certificate(tmp_path, "bob", "police", "staff")
    with pytest.raises(PkiError, match="could not be decrypted"):
        issue_certificate(tmp_path, "bob", "police", "staff", passphrase=CaPassphrase(b"wrong"))
    with pytest.raises(PkiError, match="is encrypted"):
        revoke_certificate(tmp_path, name="police-node")
    cert_path, _key = issue_certificate(tmp_path, "bob", "police", "staff", passphrase=PASSPHRASE)
    load(cert_path).verify_directly_issued_by(load(layout.ca_cert))
    revoke_certificate(tmp_path, name="bob", passphrase=PASSPHRASE)
    assert "test passphrase" not in repr(PASSPHRASE)
    with pytest.raises(PkiError, match="empty"):
        CaPassphrase(b"")


def test_an_unencrypted_ca_key_refuses_a_passphrase(tmp_path: Path) -> None:
    init_pki(tmp_path, agencies=["police"], staff=[], operators=[])
    with pytest.raises(PkiError, match="not encrypted"):
        issue_certificate(tmp_path, "bob", "police", "staff", passphrase=PASSPHRASE)


def test_the_cli_takes_the_passphrase_from_a_file_or_the_environment(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text("correct horse\n")
    passphrase_file.chmod(0o600)

    def jigsaw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "client.cli", "pki", *args],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **(env or {})},
        )

    pki = tmp_path / "pki"
    made = jigsaw(
        "init", "--dir", str(pki), "--agency=police", f"--ca-passphrase-file={passphrase_file}"
    )
    assert made.returncode == 0, made.stderr
    said = " ".join(made.stdout.split())  # unwrapped
    assert "(key encrypted;" in said and "correct horse" not in said
    refused = jigsaw("issue", "--dir", str(pki), "--name=bob", "--agency=police", "--role=staff")
    assert refused.returncode == 1 and "is encrypted" in " ".join(refused.stderr.split())
    by_file = jigsaw(
        "issue", "--dir", str(pki), "--name=bob", "--agency=police", "--role=staff",
        f"--ca-passphrase-file={passphrase_file}",
    )  # fmt: skip
    assert by_file.returncode == 0, by_file.stderr
    by_env = jigsaw(
        "revoke", "--dir", str(pki), "--name=bob", env={"JIGSAW_CA_PASSPHRASE": "correct horse"}
    )
    assert by_env.returncode == 0, by_env.stderr
    assert (pki / "bob" / "bob.pem").is_file() and not (pki / "bob" / "crl.pem").exists()
