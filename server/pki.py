"""Certificates for the federation's mutual TLS: one private CA, one certificate per identity.

Role in the pipeline: an operator runs :func:`init_pki` once to create the unit's certificate
authority and the certificates of the matcher, every agency node, every staff member and every
operator; :func:`issue_certificate` adds one identity later. ``server.tls`` loads the files,
``server.auth`` reads the identity back out of the peer certificate on every call.

Identity encoding (every leaf certificate subject)::

    CN = identity name   ("police-node", "alice", "matcher")
    O  = agency id       ("police"; the matcher and operators use "unit")
    OU = role            one of "node", "staff", "operator", "matcher"

Certificates (all keys EC P-256, signatures ECDSA with SHA-256):

* CA: self-signed, BasicConstraints CA (critical, path length 0), KeyUsage keyCertSign and
  cRLSign (critical), SubjectKeyIdentifier.
* Leaf: BasicConstraints not-CA (critical), KeyUsage digitalSignature (critical),
  ExtendedKeyUsage serverAuth + clientAuth, SubjectKeyIdentifier, AuthorityKeyIdentifier.
  Server-capable roles (node, matcher) also carry SubjectAlternativeName DNS "localhost",
  IP 127.0.0.1 and IP ::1 (plus any extra host names asked for), so gRPC's BoringSSL accepts
  them as servers on loopback, and DNS :func:`server_name` (role and agency, under the
  reserved ``.invalid`` domain): a client names the server it expects with that name
  (``server.tls.secure_channel``), so TLS itself refuses a server of another role or agency.
  Validity starts five minutes in the past (clock skew).

Files, all PEM: ``<dir>/ca.pem``, ``<dir>/ca.key``, ``<dir>/<name>.pem``, ``<dir>/<name>.key``.
Private keys are unencrypted PKCS#8 (gRPC cannot read encrypted keys), written with mode 0600
via a temporary file and an atomic rename.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import tempfile
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from linkage.errors import JigsawError

ROLES = frozenset({"node", "staff", "operator", "matcher"})
SERVER_ROLES = frozenset({"node", "matcher"})
UNIT_AGENCY = "unit"
MATCHER_NAME = "matcher"
CA_NAME = "ca"
#: File name of the certificate revocation list, beside the CA certificate.
CRL_FILE = "crl.pem"

#: Domain of the role-and-agency names in server certificates; reserved, so never resolvable.
SERVER_NAME_DOMAIN = "jigsaw.invalid"

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_CLOCK_SKEW = datetime.timedelta(minutes=5)


class PkiError(JigsawError):
    """The PKI directory or a requested identity is unusable (exists, missing, bad name)."""


@dataclass(frozen=True)
class PkiLayout:
    """Where :func:`init_pki` put everything: the CA and identity name → (cert path, key path)."""

    ca_cert: Path
    ca_key: Path
    identities: Mapping[str, tuple[Path, Path]] = field(
        default_factory=lambda: types.MappingProxyType({}), hash=False
    )

    def __getitem__(self, name: str) -> tuple[Path, Path]:
        return self.identities[name]

    def __contains__(self, name: object) -> bool:
        return name in self.identities

    def names(self) -> list[str]:
        """Identity names in creation order."""
        return list(self.identities)


def server_name(role: str, agency: str) -> str:
    """The DNS name a server certificate of ``role`` and ``agency`` carries, and a client
    expecting that server checks: ``node.police.jigsaw.invalid``, ``matcher.unit.jigsaw.invalid``
    (agency underscores as hyphens: a DNS label)."""
    return f"{role}.{agency.replace('_', '-')}.{SERVER_NAME_DOMAIN}"


def _check_name(kind: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME_PATTERN.match(value):
        raise PkiError(
            f"{kind} must be 1-63 characters of lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically (temp file + rename)."""
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _write_public(path: Path, data: bytes) -> None:
    _write_private(path, data)
    path.chmod(0o644)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _subject(name: str, agency: str, role: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, agency),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )


def _create_ca(out_dir: Path, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Jigsaw federation CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, UNIT_AGENCY),
        ]
    )
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(out_dir / f"{CA_NAME}.key", _key_pem(key))
    _write_public(out_dir / f"{CA_NAME}.pem", certificate.public_bytes(serialization.Encoding.PEM))
    _write_crl(out_dir / CRL_FILE, certificate, key, revoked=(), number=1)
    return certificate, key


def _write_crl(
    path: Path,
    ca_certificate: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    revoked: Sequence[x509.RevokedCertificate],
    number: int,
) -> None:
    """Sign and write a revocation list of ``revoked``, CRL number ``number``.

    It is valid until the CA certificate expires: it is handed to the servers by the operator,
    not fetched, so a next-update date earlier than that would only stop the federation.
    """
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject)
        .last_update(now - _CLOCK_SKEW)
        .next_update(ca_certificate.not_valid_after_utc)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_public(path, crl.public_bytes(serialization.Encoding.PEM))


def read_revocation_list(path: Path, ca_certificate: x509.Certificate) -> RevocationList:
    """The revocation list in ``path``, checked: PEM, issued and signed by ``ca_certificate``.

    Raises :class:`PkiError` naming the file and what was expected.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PkiError(
            f"no certificate revocation list at {path} (jigsaw pki init writes {CRL_FILE} "
            "beside the CA certificate)"
        ) from None
    try:
        crl = x509.load_pem_x509_crl(data)
    except ValueError:
        raise PkiError(f"{path} is not a PEM certificate revocation list") from None
    if crl.issuer != ca_certificate.subject or not crl.is_signature_valid(
        ca_certificate.public_key()  # type: ignore[arg-type]
    ):
        raise PkiError(f"the revocation list {path} is not signed by the federation CA")
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise PkiError(f"the revocation list {path} has no CRL number") from None
    return RevocationList(
        number=number, serials=frozenset(entry.serial_number for entry in crl), crl=crl
    )


@dataclass(frozen=True)
class RevocationList:
    """A verified revocation list: its CRL number and the serials it revokes."""

    number: int
    serials: frozenset[int]
    crl: x509.CertificateRevocationList = field(repr=False, compare=False)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_dir / f"{CA_NAME}.pem", ca_dir / f"{CA_NAME}.key"
    if not cert_path.is_file() or not key_path.is_file():
        raise PkiError(f"no certificate authority in {ca_dir} (expected ca.pem and ca.key)")
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    return certificate, key


def _issue(
    out_dir: Path,
    ca_certificate: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    name: str,
    agency: str,
    role: str,
    days: int,
    extra_hosts: Sequence[str] = (),
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    public_key = key.public_key()
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(
        now + datetime.timedelta(days=days),
        ca_certificate.not_valid_after_utc,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(name, agency, role))
        .issuer_name(ca_certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if role in SERVER_ROLES or extra_hosts:
        alternative_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        if role in SERVER_ROLES:
            alternative_names.append(x509.DNSName(server_name(role, agency)))
        alternative_names += [x509.DNSName(host) for host in extra_hosts if host != "localhost"]
        alternative_names += [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternative_names), critical=False
        )
    certificate = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = out_dir / f"{name}.pem", out_dir / f"{name}.key"
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def issue_certificate(
    ca_dir: Path,
    name: str,
    agency: str,
    role: str,
    *,
    days: int = 365,
    extra_hosts: Sequence[str] = (),
    force: bool = False,
) -> tuple[Path, Path]:
    """Issue one identity's certificate and key from the CA in ``ca_dir``; return their paths.

    Refuses to replace an existing ``<name>.pem`` / ``<name>.key`` unless ``force=True``.
    ``extra_hosts`` adds DNS names to the SubjectAlternativeName (for nodes on other hosts).
    """
    ca_dir = Path(ca_dir)
    _check_name("identity name", name)
    _check_name("agency id", agency)
    if name == CA_NAME:
        raise PkiError(f"identity name {CA_NAME!r} is reserved for the certificate authority")
    if role not in ROLES:
        raise PkiError(f"role must be one of {sorted(ROLES)}")
    if days < 1:
        raise PkiError("days must be at least 1")
    if not force and ((ca_dir / f"{name}.pem").exists() or (ca_dir / f"{name}.key").exists()):
        raise PkiError(f"certificate for identity {name!r} already exists (use force=True)")
    ca_certificate, ca_key = _load_ca(ca_dir)
    return _issue(
        ca_dir,
        ca_certificate,
        ca_key,
        name=name,
        agency=agency,
        role=role,
        days=days,
        extra_hosts=extra_hosts,
    )


def init_pki(
    out_dir: Path,
    *,
    agencies: Sequence[str],
    staff: Sequence[tuple[str, str]],
    operators: Sequence[str],
    days: int = 365,
    force: bool = False,
) -> PkiLayout:
    """Create a CA and the certificates of the matcher, one node per agency, staff and operators.

    ``staff`` is a sequence of (name, agency) pairs; every staff agency must be in ``agencies``.
    Identities: ``matcher`` (role matcher, O=unit), ``<agency>-node`` (role node), each staff
    member (role staff), each operator (role operator, O=unit). Refuses to replace an existing
    CA unless ``force=True``; identity names must be unique.
    """
    out_dir = Path(out_dir)
    if days < 1:
        raise PkiError("days must be at least 1")
    for agency in agencies:
        _check_name("agency id", agency)
    plan: list[tuple[str, str, str]] = [(MATCHER_NAME, UNIT_AGENCY, "matcher")]
    plan += [(f"{agency}-node", agency, "node") for agency in agencies]
    for staff_name, staff_agency in staff:
        if staff_agency not in agencies:
            raise PkiError(f"staff member {staff_name!r} belongs to an agency not in agencies")
        plan.append((staff_name, staff_agency, "staff"))
    plan += [(operator, UNIT_AGENCY, "operator") for operator in operators]
    seen: set[str] = set()
    for name, _agency, _role in plan:
        _check_name("identity name", name)
        if name == CA_NAME or name in seen:
            raise PkiError(f"identity name {name!r} is reserved or used twice")
        seen.add(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not force and ((out_dir / "ca.pem").exists() or (out_dir / "ca.key").exists()):
        raise PkiError(f"a certificate authority already exists in {out_dir} (use force=True)")
    ca_certificate, ca_key = _create_ca(out_dir, days)
    identities: dict[str, tuple[Path, Path]] = {}
    for name, agency, role in plan:
        identities[name] = _issue(
            out_dir, ca_certificate, ca_key, name=name, agency=agency, role=role, days=days
        )
    return PkiLayout(
        ca_cert=out_dir / f"{CA_NAME}.pem",
        ca_key=out_dir / f"{CA_NAME}.key",
        identities=types.MappingProxyType(identities),
    )


def revoke_certificate(ca_dir: Path, *, name: str | None = None, serial: int | None = None) -> int:
    """Add one certificate to the revocation list beside the CA in ``ca_dir``; its serial.

    The certificate is named by identity (``name``: its ``<name>.pem``, which must have been
    issued by this CA) or by ``serial``; exactly one of the two. The list is re-signed with a
    higher CRL number, so a server that reloads it never goes back to an older one. Revoking
    a revoked certificate changes nothing.
    """
    ca_dir = Path(ca_dir)
    if (name is None) == (serial is None):
        raise PkiError("name the certificate to revoke by identity name or by serial, not both")
    ca_certificate, ca_key = _load_ca(ca_dir)
    if name is not None:
        _check_name("identity name", name)
        cert_path = ca_dir / f"{name}.pem"
        if not cert_path.is_file():
            raise PkiError(f"no certificate for identity {name!r} in {ca_dir}")
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            certificate.verify_directly_issued_by(ca_certificate)
        except (ValueError, TypeError, InvalidSignature):
            raise PkiError(f"the certificate of {name!r} was not issued by this CA") from None
        serial = certificate.serial_number
    if serial is None or serial < 1:
        raise PkiError("a certificate serial is a positive number")
    current = read_revocation_list(ca_dir / CRL_FILE, ca_certificate)
    if serial in current.serials:
        return serial
    entry = (
        x509.RevokedCertificateBuilder()
        .serial_number(serial)
        .revocation_date(datetime.datetime.now(datetime.UTC))
        .build()
    )
    _write_crl(
        ca_dir / CRL_FILE,
        ca_certificate,
        ca_key,
        revoked=[*current.crl, entry],
        number=current.number + 1,
    )
    return serial
