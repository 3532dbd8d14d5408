"""The wire convention around ``jigsaw.proto``: how parties connect and know each other.

Role: the messages are in ``jigsaw.proto``; this hand-written module holds the rest of what a
client and a server must agree on, so that the Python client (:mod:`client.client`) and the
services (``server/``) meet here and nowhere else:

* **Identities.** Every party presents a certificate of the federation CA whose subject
  names it: CN = identity name, O = agency (:data:`UNIT_AGENCY` for the multi-agency unit),
  OU = one of :data:`ROLES` (:func:`certificate_identity` reads them back). A server's
  certificate also carries the DNS name :func:`server_name` of its role and agency, which a
  channel names as the server it expects (``expect``), so TLS itself refuses a server of
  another role or agency (:func:`raise_if_wrong_server` turns that refusal into
  :class:`WrongServerError`).
* **Channels.** Mutual TLS trusting the federation CA only, messages of at most
  :data:`MAX_MESSAGE_BYTES` either way (large transfers are streamed in pages), keepalive
  pings every :data:`KEEPALIVE_TIME_MS` (servers accept one every
  :data:`MIN_PING_INTERVAL_MS` or more): :func:`secure_channel`.
* **Rate limits.** A call refused for a rate limit fails with ``RESOURCE_EXHAUSTED`` and the
  trailers :data:`RETRY_AFTER_METADATA_KEY` (seconds, decimal) and
  :data:`PUSHBACK_METADATA_KEY` (gRPC's server pushback, :func:`pushback_ms`): a wait of at
  most :data:`MAX_PUSHBACK_S` is waited out by the caller's retry policy inside the call; a
  longer one says "do not retry", so the refusal reaches the caller at once and it waits
  where it can show it (:func:`retry_after_from_metadata`).
* **Files.** An identity's :class:`TlsFiles`: the CA certificate, its certificate and key,
  and the revocation list :data:`CRL_FILE` beside the CA certificate (servers only).

Invariant: nothing here reads configuration or knows a service's policy; byte layouts of
certificates and the PKI directory are in ``proto/FORMATS.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

#: The roles a certificate's OU may name.
ROLES = frozenset({"node", "staff", "operator", "matcher", "probe", "console"})
#: The agency of the multi-agency unit (the matcher, its staff and the federation operators).
UNIT_AGENCY = "unit"
#: Domain of the role-and-agency names in server certificates; reserved, so never resolvable.
SERVER_NAME_DOMAIN = "jigsaw.invalid"
#: File name of the certificate revocation list, beside the CA certificate.
CRL_FILE = "crl.pem"

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# Keepalive: clients ping an idle connection every 60 s and give up after 20 s without an
# answer; servers accept pings every 30 s or more (twice the client rate), so a well-behaved
# client is never sent GOAWAY "too_many_pings".
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
MIN_PING_INTERVAL_MS = 30_000
MESSAGE_LIMITS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)

#: Trailer of a rate-limit refusal: seconds to wait before trying again.
RETRY_AFTER_METADATA_KEY = "retry-after-s"
#: gRPC's server-pushback trailer (milliseconds), honoured by a channel's retry policy.
PUSHBACK_METADATA_KEY = "grpc-retry-pushback-ms"
#: The longest wait a refusal leaves to the caller's retry policy, inside one call.
MAX_PUSHBACK_S = 30.0

# what gRPC's TLS says when the server certificate does not carry the expected name
_HOSTNAME_CHECK_FAILED = "Hostname Verification Check failed"


def server_name(role: str, agency: str) -> str:
    """The DNS name a server certificate of ``role`` and ``agency`` carries, and a client
    expecting that server checks: ``node.police.jigsaw.invalid``, ``matcher.unit.jigsaw.invalid``
    (agency underscores as hyphens: a DNS label)."""
    return f"{role}.{agency.replace('_', '-')}.{SERVER_NAME_DOMAIN}"


def _single_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    attributes = name.get_attributes_for_oid(oid)
    if len(attributes) != 1:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) and value else None


def certificate_identity(certificate: x509.Certificate) -> tuple[str, str, str] | None:
    """(name, agency, role) of a certificate's subject, or None unless it has exactly one
    non-empty CN and O and one OU naming a role of :data:`ROLES`."""
    subject = certificate.subject
    name = _single_attribute(subject, NameOID.COMMON_NAME)
    agency = _single_attribute(subject, NameOID.ORGANIZATION_NAME)
    role = _single_attribute(subject, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if name is None or agency is None or role not in ROLES:
        return None
    return name, agency, role


def pem_identity(pem: bytes) -> tuple[str, str, str] | None:
    """:func:`certificate_identity` of a PEM certificate, or None if it is not one."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return certificate_identity(certificate)


class WrongServerError(Exception):
    """The server reached is not the one expected: its certificate is for another role or
    agency (or for none), so TLS refused it before any request was sent."""


def raise_if_wrong_server(exc: grpc.RpcError, address: str, *, role: str, agency: str) -> None:
    """Raise :class:`WrongServerError` when ``exc`` is a channel's refusal of a server whose
    certificate does not name the expected ``role`` and ``agency`` (a channel made with
    ``expect=server_name(role, agency)``); else return, and the caller re-raises ``exc``."""
    details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
    if _HOSTNAME_CHECK_FAILED in details:
        raise WrongServerError(
            f"the server at {address} is not the expected {role} of agency {agency}: its "
            f"certificate does not name {server_name(role, agency)}"
        ) from None


def pushback_ms(retry_after: float) -> str:
    """The :data:`PUSHBACK_METADATA_KEY` value of a refusal to be retried after
    ``retry_after`` seconds: whole milliseconds (at least 1) up to :data:`MAX_PUSHBACK_S`,
    else ``-1``, which gRPC's retry policy reads as "do not retry" (gRFC A6): a call's
    deadline need not outlast an hourly cap, and the wait happens where the caller sees it."""
    if not retry_after <= MAX_PUSHBACK_S:  # NaN too
        return "-1"
    return str(max(1, math.ceil(retry_after * 1000)))


def retry_after_from_metadata(metadata: object) -> float | None:
    """The :data:`RETRY_AFTER_METADATA_KEY` of a refusal's trailing metadata, if present and a
    finite number of seconds of at least 0."""
    if not metadata:
        return None
    for key, text in metadata:  # type: ignore[attr-defined]
        if key == RETRY_AFTER_METADATA_KEY:
            try:
                delay = float(text)
            except ValueError:
                return None
            return delay if math.isfinite(delay) and delay >= 0 else None
    return None


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one identity: the federation CA, its certificate and its private key.

    ``crl``, the federation's certificate revocation list, matters to servers only; by
    default it is :data:`CRL_FILE` beside ``ca_cert``.
    """

    ca_cert: Path
    cert: Path
    key: Path
    crl: Path | None = None

    def revocation_list_path(self) -> Path:
        """The revocation list a server with these files checks its callers against."""
        return self.crl if self.crl is not None else Path(self.ca_cert).parent / CRL_FILE

    def read(self) -> tuple[bytes, bytes, bytes]:
        """Return (CA certificate, certificate chain, private key) bytes."""
        for kind, path in (
            ("CA certificate", self.ca_cert),
            ("certificate", self.cert),
            ("private key", self.key),
        ):
            if not Path(path).is_file():
                raise FileNotFoundError(f"TLS {kind} file not found: {path}")
        return (
            Path(self.ca_cert).read_bytes(),
            Path(self.cert).read_bytes(),
            Path(self.key).read_bytes(),
        )


def channel_options() -> list[tuple[str, int]]:
    """Default options of :func:`secure_channel`: message limits and keepalive."""
    return [
        *MESSAGE_LIMITS,
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
    ]


def secure_channel(
    address: str,
    tls: TlsFiles,
    *,
    expect: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``address`` presenting this identity's certificate, trusting only the CA.

    ``expect`` is the :func:`server_name` of the server this channel must reach (its role and
    agency); every Jigsaw client passes it. Without it any server with a certificate of the
    CA valid for the address is accepted (tests and probes only). ``options`` override the
    defaults of :func:`channel_options` key by key (for example a test's
    ``grpc.ssl_target_name_override``); the message limits should not be raised.
    """
    ca_pem, cert_pem, key_pem = tls.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )
    merged: dict[str, Any] = dict(channel_options())
    if expect is not None:
        # the name TLS checks the server certificate against, instead of the address's host
        merged["grpc.ssl_target_name_override"] = expect
    merged.update(dict(options))
    return grpc.secure_channel(address, credentials, options=list(merged.items()))
