"""Mutual-TLS plumbing for every gRPC server and channel in the federation.

Role in the pipeline: node, matcher and client code never build gRPC credentials themselves;
they call :func:`server_credentials` / :func:`secure_channel` with the :class:`TlsFiles` of
their identity (see ``server.common.pki`` for how the files are made). Servers always require a
client certificate signed by the federation CA; channels always present one, and name the
server they expect (``expect``, a :func:`server.common.pki.server_name` of role and agency):
TLS then
checks that name against the server certificate's DNS names on every connection, so a node
cannot pose as the matcher, nor one agency's node as another's (a channel fails with
``UNAVAILABLE``, "Peer name ... is not in peer certificate").

Message size limits are fixed at :data:`MAX_MESSAGE_BYTES` (8 MiB) in both directions: large
transfers (publishing encodings, link results) are streamed in batches, not sent whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from linkage.errors import JigsawError
from server.common.pki import CA_NAME, CRL_FILE, PkiError, bundle_dir, server_name

MAX_MESSAGE_BYTES = 8 * 1024 * 1024

# Keepalive: clients ping an idle connection every 60 s and give up after 20 s without an
# answer; servers accept pings every 30 s or more (twice the client rate), so a well-behaved
# client is never sent GOAWAY "too_many_pings".
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
MIN_PING_INTERVAL_MS = 30_000

_MESSAGE_LIMITS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


class WrongServerError(JigsawError):
    """The server reached is not the one expected: its certificate is for another role or
    agency (or for none), so TLS refused it before any request was sent."""


# what gRPC's TLS says when the server certificate does not carry the expected name
_HOSTNAME_CHECK_FAILED = "Hostname Verification Check failed"


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


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one identity: the federation CA, its certificate and its private key.

    ``crl``, the federation's certificate revocation list, matters to servers only (see
    ``server.common.revocation``); by default it is :data:`server.common.pki.CRL_FILE`
    beside ``ca_cert``.
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


def tls_files_for(pki_dir: Path, name: str) -> TlsFiles:
    """The TlsFiles of identity ``name``: its bundle in a PKI directory made by
    ``server.common.pki.init_pki``, or ``pki_dir`` itself when that is the bundle (as handed to the
    identity's machine)."""
    pki_dir = Path(pki_dir)
    if name == CA_NAME:
        raise PkiError(f"{CA_NAME!r} is the certificate authority, not an identity")
    bundle = bundle_dir(pki_dir, name)
    if not bundle.is_dir() and (pki_dir / f"{name}.pem").is_file():
        bundle = pki_dir
    if not (bundle / f"{name}.pem").is_file():
        raise FileNotFoundError(f"TLS certificate file not found: {bundle / f'{name}.pem'}")
    files = TlsFiles(
        ca_cert=bundle / f"{CA_NAME}.pem", cert=bundle / f"{name}.pem", key=bundle / f"{name}.key"
    )
    files.read()  # fail early, naming the missing file
    return files


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that require and verify a client certificate from the CA."""
    ca_pem, cert_pem, key_pem = tls.read()
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
    )


def server_options() -> list[tuple[str, int]]:
    """Options for ``grpc.server``: message limits and keepalive values matching the channels."""
    return [
        *_MESSAGE_LIMITS,
        # gRPC sets SO_REUSEPORT by default: a second server on a port already served (a
        # stale node, another federation's) would bind it too and take half the connections
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def channel_options() -> list[tuple[str, int]]:
    """Default options of :func:`secure_channel`: message limits and keepalive."""
    return [
        *_MESSAGE_LIMITS,
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

    ``expect`` is the :func:`server.common.pki.server_name` of the server this channel must reach
    (its role and agency); every Jigsaw client passes it. Without it any server with a
    certificate of the CA valid for the address is accepted (tests and probes only).
    ``options`` override the defaults of :func:`channel_options` key by key (for example a
    test's ``grpc.ssl_target_name_override``); the message limits should not be raised.
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
