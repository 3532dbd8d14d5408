"""What a node's staff are told when the matcher or a holding agency's node fails a call.

Role: the node calls the matcher (``Match``, ``GetLinkedRecords``, anchoring) and other
agencies' nodes (a relayed ``Disclose``) over mutual TLS as itself. A failure there becomes
an :class:`UpstreamError`, the status the node answers with: ``UNAVAILABLE`` when the other
side is unreachable, too slow or not the server it should be (named), a matcher's refusal of
the request as ``FAILED_PRECONDITION`` (its details name fields and expectations only: the
matcher never sees identifiers), and a holder's ``NOT_FOUND``, ``PERMISSION_DENIED``,
``INVALID_ARGUMENT`` and ``FAILED_PRECONDITION`` as they came, with the holder named.
:func:`upstream_errors` turns an UpstreamError raised in a servicer method into that status.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import grpc

from proto.jigsaw.v1.transport import retry_after_from_metadata
from server.common.pki import UNIT_AGENCY
from server.common.status import RateLimitedError
from server.common.tls import WrongServerError, raise_if_wrong_server

logger = logging.getLogger(__name__)

#: Seconds the node waits for the matcher, and for a holding agency's node.
MATCH_TIMEOUT_S = 5.0
RELAY_TIMEOUT_S = 5.0
#: Statuses of the holding node that reach staff as they came (with the holder named).
RELAYED_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)


class UpstreamError(Exception):
    """The status a node answers with when the matcher or a holder failed its call."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def code_of(exc: grpc.RpcError) -> grpc.StatusCode:
    return exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN


def _details(exc: grpc.RpcError) -> str:
    return (exc.details() if isinstance(exc, grpc.Call) else "") or ""


def rate_limited(exc: grpc.RpcError) -> RateLimitedError | None:
    """The other side's own rate-limit refusal, with its retry-after, or None."""
    if code_of(exc) != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    retry_after = retry_after_from_metadata(exc.trailing_metadata())
    return RateLimitedError(1.0 if retry_after is None else retry_after)


def matcher_failure(exc: grpc.RpcError, address: str) -> UpstreamError:
    """What staff are told when the matcher at ``address`` failed a call."""
    code = code_of(exc)
    logger.warning("matcher call failed: %s", code.name if code else "unknown")
    try:
        raise_if_wrong_server(exc, address, role="matcher", agency=UNIT_AGENCY)
    except WrongServerError as wrong:
        return UpstreamError(grpc.StatusCode.UNAVAILABLE, str(wrong))
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UpstreamError(
            grpc.StatusCode.UNAVAILABLE,
            f"the matcher at {address} is unreachable or did not answer in "
            f"{MATCH_TIMEOUT_S:g} s; try again later",
        )
    return UpstreamError(
        grpc.StatusCode.FAILED_PRECONDITION
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
        else grpc.StatusCode.UNAVAILABLE,
        f"the matcher refused the call ({code.name if code else 'unknown'}): {_details(exc)}",
    )


def holder_failure(exc: grpc.RpcError, holder: str, address: str) -> UpstreamError:
    """What staff are told when ``holder``'s node at ``address`` failed a relayed call."""
    code = code_of(exc)
    if code in RELAYED_CODES:  # the holder's details name fields and expectations, never values
        return UpstreamError(code, f"{holder} node: {_details(exc)}")
    logger.warning("disclosure relay to %s failed: %s", holder, code.name)
    try:
        raise_if_wrong_server(exc, address, role="node", agency=holder)
    except WrongServerError as wrong:
        return UpstreamError(grpc.StatusCode.UNAVAILABLE, str(wrong))
    return UpstreamError(
        grpc.StatusCode.UNAVAILABLE,
        f"the {holder} node did not answer the disclosure ({code.name}); try again later",
    )


MethodT = TypeVar("MethodT", bound=Callable[..., Any])


def upstream_errors(method: MethodT) -> MethodT:
    """Decorate a servicer method ``(self, request, context)`` (under ``grpc_errors``) so an
    :class:`UpstreamError` aborts the call with its status."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except UpstreamError as exc:
            context.abort(exc.code, exc.message)
            raise RuntimeError("grpc.ServicerContext.abort returned") from None  # pragma: no cover

    return cast(MethodT, wrapper)


__all__ = [
    "MATCH_TIMEOUT_S",
    "RELAYED_CODES",
    "RELAY_TIMEOUT_S",
    "UpstreamError",
    "holder_failure",
    "matcher_failure",
    "rate_limited",
    "upstream_errors",
]
