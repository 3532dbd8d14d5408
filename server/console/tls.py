"""The browser's client certificate, from uvicorn's TLS connection into the ASGI scope.

uvicorn verifies the client certificate (``ssl.CERT_REQUIRED`` against the federation CA)
but does not yet expose it to the application: the ASGI TLS extension is an open pull
request there. :class:`ClientCertificateProtocol` is uvicorn's own h11 protocol with one
addition: on each connection it reads the verified leaf certificate from the connection's
``ssl_object`` and puts it, as PEM, in ``scope["extensions"]["tls"]["client_cert_chain"]``
of every request on that connection — the extension's own key, so that this module goes
away when uvicorn ships the extension. The keys the ``ssl`` module cannot fill are None.

:func:`client_certificate_pem` reads it back; None when there is none (plain HTTP, or a
server started without this protocol), which the console treats as "not signed in".
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ClientCertificateProtocol", "client_certificate_pem", "tls_context_factory"]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class ClientCertificateProtocol(H11Protocol):
    """uvicorn's h11 protocol, adding the ASGI TLS extension's client certificate."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        chain = (ssl.DER_cert_to_PEM_cert(der),) if der else ()
        tls_version = ssl_object.version() if ssl_object is not None else None
        inner: ASGIApp = self.app

        async def with_certificate(scope: Scope, receive: Any, send: Any) -> None:
            if chain:
                scope.setdefault("extensions", {})["tls"] = {
                    "server_cert": None,
                    "client_cert_chain": chain,
                    "client_cert_name": None,
                    "client_cert_error": None,
                    "tls_version": tls_version,
                    "cipher_suite": None,
                }
            await inner(scope, receive, send)

        self.app = with_certificate


def client_certificate_pem(scope: Scope) -> bytes | None:
    """The verified client leaf certificate of the request, PEM, or None."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    return chain[0].encode("ascii") if chain else None


def tls_context_factory(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's SSL context, restricted to TLS 1.2 and newer."""
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
