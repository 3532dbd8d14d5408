"""Mutual-TLS plumbing of the servers, over the wire convention of
:mod:`proto.jigsaw.v1.transport` (which owns :class:`TlsFiles`, :func:`secure_channel`,
:class:`WrongServerError`, the message limits and keepalive; the services import them from
here).

Role in the pipeline: node, matcher and console code never build gRPC credentials
themselves; they call :func:`server_credentials` / :func:`secure_channel` with the
:class:`TlsFiles` of their identity, found in a PKI directory by :func:`tls_files_for` (see
``server.common.pki`` for how the files are made). Servers always require a client
certificate signed by the federation CA, with keepalive settings matching the channels'
(:func:`server_options`).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from proto.jigsaw.v1.transport import (
    KEEPALIVE_TIME_MS,
    KEEPALIVE_TIMEOUT_MS,
    MESSAGE_LIMITS,
    MIN_PING_INTERVAL_MS,
    TlsFiles,
    WrongServerError,
    raise_if_wrong_server,
    secure_channel,
)
from server.common.pki import CA_NAME, PkiError, bundle_dir

__all__ = [
    "TlsFiles",
    "WrongServerError",
    "raise_if_wrong_server",
    "secure_channel",
    "server_credentials",
    "server_options",
    "tls_files_for",
]


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
        *MESSAGE_LIMITS,
        # gRPC sets SO_REUSEPORT by default: a second server on a port already served (a
        # stale node, another federation's) would bind it too and take half the connections
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 2),
    ]
