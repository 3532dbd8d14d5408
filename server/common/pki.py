"""Certificates for the federation's mutual TLS: one private CA, one certificate per identity.

Role: an operator runs :func:`init_pki` once to create the unit's certificate authority and
the certificates of the matcher, every agency node, every staff member and every operator;
:func:`issue_certificate` adds one identity later, :func:`revoke_certificate` revokes one and
:func:`export_pkcs12` writes a browser bundle. ``server.common.tls`` loads the files,
``server.common.auth`` reads the identity back out of the peer certificate on every call.
Subject encoding (CN = name, O = agency, OU = role), certificate profile and directory
layout: ``proto/FORMATS.md`` ("Certificates and the PKI directory").

Invariants:

* the CA's directory (``<dir>/ca/``) is never handed out; a bundle never holds the CA key;
  issuing and revoking need the CA key's passphrase (:class:`CaPassphrase`) when it is
  encrypted;
* a "probe" certificate (a load balancer's health check) may call the health and reflection
  services only, so the key a load balancer holds opens no record and no operation;
* server certificates name their role and agency (:func:`server_name`), so a client that
  names the server it expects (``server.common.tls.secure_channel``) is refused a server of
  another role or agency by TLS itself;
* :func:`revoke_certificate` re-signs ``crl.pem`` with a higher CRL number and refreshes the
  copy in every server bundle under ``<dir>`` (servers elsewhere need the new file copied to
  them); ``server.common.revocation`` checks callers against it.
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
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from linkage.errors import JigsawError
from proto.jigsaw.v1.transport import CRL_FILE, ROLES, UNIT_AGENCY, server_name

__all__ = ["CRL_FILE", "ROLES", "UNIT_AGENCY", "server_name"]  # of the wire convention

SERVER_ROLES = frozenset({"node", "matcher", "console"})
MATCHER_NAME = "matcher"
CA_NAME = "ca"
#: The CA's own directory inside a PKI directory.
CA_DIR = "ca"

_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
#: What an identity name (a certificate's CN) looks like.
IDENTITY_NAME_RE = _NAME_PATTERN
_CLOCK_SKEW = datetime.timedelta(minutes=5)


class PkiError(JigsawError):
    """The PKI directory or a requested identity is unusable (exists, missing, bad name)."""


@dataclass(frozen=True)
class CaPassphrase:
    """The passphrase that encrypts the CA's private key; never shown in a repr."""

    value: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.value:
            raise PkiError("the CA passphrase is empty")


def ca_dir(pki_dir: Path) -> Path:
    """The CA's own directory in ``pki_dir``: its key, certificate and revocation list."""
    return Path(pki_dir) / CA_DIR


def bundle_dir(pki_dir: Path, name: str) -> Path:
    """The directory of identity ``name``'s bundle in ``pki_dir``."""
    return Path(pki_dir) / name


@dataclass(frozen=True)
class PkiLayout:
    """Where :func:`init_pki` put everything: the CA and identity name → (cert path, key path)."""

    ca_cert: Path
    ca_key: Path
    crl: Path
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


def _private_dir(path: Path) -> Path:
    """``path`` as a directory of mode 0700 (created, or its mode set)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _ca_key_pem(key: ec.EllipticCurvePrivateKey, passphrase: CaPassphrase | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase.value)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


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


def _create_ca(
    directory: Path, days: int, passphrase: CaPassphrase | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
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
    _private_dir(directory)
    _write_private(directory / f"{CA_NAME}.key", _ca_key_pem(key, passphrase))
    _write_public(
        directory / f"{CA_NAME}.pem", certificate.public_bytes(serialization.Encoding.PEM)
    )
    _write_crl(directory / CRL_FILE, certificate, key, revoked=(), number=1)
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
        number=number,
        serials=frozenset(entry.serial_number for entry in crl),
        next_update=crl.next_update_utc,
        crl=crl,
    )


@dataclass(frozen=True)
class RevocationList:
    """A verified revocation list: its CRL number, the serials it revokes, and when it must be
    replaced by (None: the list names no next update)."""

    number: int
    serials: frozenset[int]
    next_update: datetime.datetime | None
    crl: x509.CertificateRevocationList = field(repr=False, compare=False)


def _load_ca(
    pki_dir: Path, passphrase: CaPassphrase | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    directory = ca_dir(pki_dir)
    cert_path, key_path = directory / f"{CA_NAME}.pem", directory / f"{CA_NAME}.key"
    if not cert_path.is_file() or not key_path.is_file():
        raise PkiError(f"no certificate authority in {directory} (expected ca.pem and ca.key)")
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    password = None if passphrase is None else passphrase.value
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=password)
    except TypeError:
        if passphrase is None:
            raise PkiError(
                f"the CA key {key_path} is encrypted: give its passphrase "
                "(--ca-passphrase-file or JIGSAW_CA_PASSPHRASE)"
            ) from None
        raise PkiError(
            f"the CA key {key_path} is not encrypted, yet a passphrase was given"
        ) from None
    except ValueError:
        raise PkiError(
            f"the CA key {key_path} could not be decrypted with that passphrase"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    return certificate, key


def _issue(
    pki_dir: Path,
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
    bundle = _private_dir(bundle_dir(pki_dir, name))
    cert_path, key_path = bundle / f"{name}.pem", bundle / f"{name}.key"
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    _write_public(bundle / f"{CA_NAME}.pem", (ca_dir(pki_dir) / f"{CA_NAME}.pem").read_bytes())
    if role in SERVER_ROLES:
        _write_public(bundle / CRL_FILE, (ca_dir(pki_dir) / CRL_FILE).read_bytes())
    return cert_path, key_path


def issue_certificate(
    pki_dir: Path,
    name: str,
    agency: str,
    role: str,
    *,
    passphrase: CaPassphrase | None = None,
    days: int = 365,
    extra_hosts: Sequence[str] = (),
    force: bool = False,
) -> tuple[Path, Path]:
    """Issue one identity's bundle from the CA in ``pki_dir``; return its cert and key paths.

    Needs the CA key (and ``passphrase`` when it is encrypted). Refuses to replace an existing
    bundle's certificate or key unless ``force=True``. ``extra_hosts`` adds DNS names to the
    SubjectAlternativeName (for nodes on other hosts).
    """
    pki_dir = Path(pki_dir)
    _check_name("identity name", name)
    _check_name("agency id", agency)
    if name == CA_NAME:
        raise PkiError(f"identity name {CA_NAME!r} is reserved for the certificate authority")
    if role not in ROLES:
        raise PkiError(f"role must be one of {sorted(ROLES)}")
    if days < 1:
        raise PkiError("days must be at least 1")
    bundle = bundle_dir(pki_dir, name)
    if not force and ((bundle / f"{name}.pem").exists() or (bundle / f"{name}.key").exists()):
        raise PkiError(f"certificate for identity {name!r} already exists (use force=True)")
    ca_certificate, ca_key = _load_ca(pki_dir, passphrase)
    return _issue(
        pki_dir,
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
    passphrase: CaPassphrase | None = None,
    days: int = 365,
    force: bool = False,
) -> PkiLayout:
    """Create a CA and the bundles of the matcher, one node per agency, staff and operators.

    ``staff`` is a sequence of (name, agency) pairs; every staff agency must be in ``agencies``.
    Identities: ``matcher`` (role matcher, O=unit), ``<agency>-node`` (role node), each staff
    member (role staff), each operator (role operator, O=unit). The CA key is encrypted with
    ``passphrase`` when one is given. Refuses to replace an existing CA unless
    ``force=True``; identity names must be unique.
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
    authority = ca_dir(out_dir)
    if not force and (
        (authority / f"{CA_NAME}.pem").exists() or (authority / f"{CA_NAME}.key").exists()
    ):
        raise PkiError(f"a certificate authority already exists in {authority} (use force=True)")
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_certificate, ca_key = _create_ca(authority, days, passphrase)
    identities: dict[str, tuple[Path, Path]] = {}
    for name, agency, role in plan:
        identities[name] = _issue(
            out_dir, ca_certificate, ca_key, name=name, agency=agency, role=role, days=days
        )
    return PkiLayout(
        ca_cert=authority / f"{CA_NAME}.pem",
        ca_key=authority / f"{CA_NAME}.key",
        crl=authority / CRL_FILE,
        identities=types.MappingProxyType(identities),
    )


def export_pkcs12(pki_dir: Path, name: str, password: bytes) -> Path:
    """Write identity ``name``'s certificate and key, with the CA certificate, as a PKCS#12
    file a browser can import (``<name>.p12`` in its bundle), encrypted with ``password``
    (AES-256 with PBKDF2, ``cryptography``'s best available); its path."""
    _check_name("identity name", name)
    if not password:
        raise PkiError("the PKCS#12 password is empty")
    bundle = bundle_dir(Path(pki_dir), name)
    if not bundle.is_dir() and (Path(pki_dir) / f"{name}.pem").is_file():
        bundle = Path(pki_dir)  # the bundle itself, as handed to its owner
    cert_path, key_path = bundle / f"{name}.pem", bundle / f"{name}.key"
    if name == CA_NAME or not cert_path.is_file() or not key_path.is_file():
        raise PkiError(f"no certificate and key for identity {name!r} in {pki_dir}")
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an EC private key")
    ca_certificate = x509.load_pem_x509_certificate((bundle / f"{CA_NAME}.pem").read_bytes())
    data = pkcs12.serialize_key_and_certificates(
        name.encode("utf-8"),
        key,
        certificate,
        [ca_certificate],
        serialization.BestAvailableEncryption(password),
    )
    out = bundle / f"{name}.p12"
    _write_private(out, data)
    return out


def revoke_certificate(
    pki_dir: Path,
    *,
    name: str | None = None,
    serial: int | None = None,
    passphrase: CaPassphrase | None = None,
) -> int:
    """Add one certificate to the revocation list of the CA in ``pki_dir``; its serial.

    The certificate is named by identity (``name``: the certificate in its bundle, which must
    have been issued by this CA) or by ``serial``; exactly one of the two. Needs the CA key
    (and ``passphrase`` when it is encrypted). The list is re-signed with a higher CRL number,
    so a server that reloads it never goes back to an older one, and copied into every server
    bundle under ``pki_dir``. Revoking a revoked certificate changes nothing.
    """
    pki_dir = Path(pki_dir)
    if (name is None) == (serial is None):
        raise PkiError("name the certificate to revoke by identity name or by serial, not both")
    ca_certificate, ca_key = _load_ca(pki_dir, passphrase)
    if name is not None:
        _check_name("identity name", name)
        cert_path = bundle_dir(pki_dir, name) / f"{name}.pem"
        if name == CA_NAME or not cert_path.is_file():
            raise PkiError(f"no certificate for identity {name!r} in {pki_dir}")
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            certificate.verify_directly_issued_by(ca_certificate)
        except (ValueError, TypeError, InvalidSignature):
            raise PkiError(f"the certificate of {name!r} was not issued by this CA") from None
        serial = certificate.serial_number
    if serial is None or serial < 1:
        raise PkiError("a certificate serial is a positive number")
    crl_path = ca_dir(pki_dir) / CRL_FILE
    current = read_revocation_list(crl_path, ca_certificate)
    if serial not in current.serials:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(datetime.datetime.now(datetime.UTC))
            .build()
        )
        _write_crl(
            crl_path,
            ca_certificate,
            ca_key,
            revoked=[*current.crl, entry],
            number=current.number + 1,
        )
    signed = crl_path.read_bytes()
    for copy in sorted(pki_dir.glob(f"*/{CRL_FILE}")):
        if copy != crl_path and copy.read_bytes() != signed:
            _write_public(copy, signed)
    return serial
