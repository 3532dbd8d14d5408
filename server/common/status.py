"""The one table that maps Jigsaw errors to gRPC status codes, and request validation helpers.

Role in the pipeline: servicers (node and matcher) decorate their methods with
:func:`grpc_errors`; any :class:`~linkage.errors.JigsawError` raised by the servicer, a store
or the ``linkage`` library becomes a gRPC status through :data:`STATUS_TABLE`. Anything else
becomes ``INTERNAL`` with a generic message: ``str(exc)`` of an unknown exception could carry a
record's values, so it never reaches the wire (only the exception's type name is logged).

Server errors added here (all under ``JigsawError``, see ``linkage/errors.py`` for the rest)::

    JigsawError
     ├── RequestError        a request field is malformed           INVALID_ARGUMENT
     ├── NotFoundError       a reference / result does not exist    NOT_FOUND
     ├── RateLimitedError    caller over its rate limit             RESOURCE_EXHAUSTED
     ├── PolicyDenied        role or disclosure policy forbids it   PERMISSION_DENIED
     ├── PreconditionFailed  not allowed in this state (a           FAILED_PRECONDITION
     │                       disclosure without a preceding lookup)
     └── Unauthenticated     no verified identity on the call       UNAUTHENTICATED

Messages name the field and the expectation, never the value that came.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar, cast

import grpc

from linkage.errors import (
    FilterFormatError,
    IncompatibleEncodingError,
    InvalidValueError,
    JigsawError,
    KeyMaterialError,
    ModelError,
    SchemaError,
)
from proto.jigsaw.v1.transport import (
    PUSHBACK_METADATA_KEY,
    RETRY_AFTER_METADATA_KEY,
    pushback_ms,
)

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; see the server log"

_REFERENCE_PATTERN = re.compile(r"^[0-9a-f]{32}$")


class RequestError(JigsawError):
    """A request field is missing or malformed. Names the field and expectation, not the value."""

    def __init__(self, field: str, expectation: str) -> None:
        self.field = field
        self.expectation = expectation
        super().__init__(f"field {field!r}: {expectation}")


class NotFoundError(JigsawError):
    """The thing asked for (a reference, a link result) does not exist here."""


class RateLimitedError(JigsawError):
    """The caller is over its rate limit; ``retry_after`` is the delay in seconds."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = float(retry_after)
        super().__init__(f"rate limit exceeded; retry after {self.retry_after:.3f} s")


class PolicyDenied(JigsawError):
    """The caller's role or the disclosure policy does not allow this request."""


class PreconditionFailed(JigsawError):
    """The request is well formed but not allowed in the present state (for example a
    disclosure that no recent lookup by the same person led to)."""


class Unauthenticated(JigsawError):
    """The call carries no verified client identity."""


STATUS_TABLE: Mapping[type[JigsawError], grpc.StatusCode] = {
    SchemaError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidValueError: grpc.StatusCode.INVALID_ARGUMENT,
    FilterFormatError: grpc.StatusCode.INVALID_ARGUMENT,
    IncompatibleEncodingError: grpc.StatusCode.FAILED_PRECONDITION,
    KeyMaterialError: grpc.StatusCode.FAILED_PRECONDITION,
    ModelError: grpc.StatusCode.FAILED_PRECONDITION,
    RequestError: grpc.StatusCode.INVALID_ARGUMENT,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    RateLimitedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PolicyDenied: grpc.StatusCode.PERMISSION_DENIED,
    PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The (status code, message) that ``exc`` becomes on the wire.

    Looks the exception's classes up in :data:`STATUS_TABLE` most-derived first; an exception
    not in the table (including a bare ``JigsawError``) is ``INTERNAL`` with a generic message.
    """
    for klass in type(exc).__mro__:
        code = STATUS_TABLE.get(klass)
        if code is not None:
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def abort_for(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """Abort the RPC with the status :data:`STATUS_TABLE` gives ``exc``; never returns.

    A :class:`RateLimitedError` also sets trailing metadata ``retry-after-s`` (seconds, decimal
    text) and gRPC's ``grpc-retry-pushback-ms`` (:func:`pushback_ms`: "do not retry" beyond
    :data:`~proto.jigsaw.v1.transport.MAX_PUSHBACK_S`). An unknown
    exception is logged by type name only and sent as ``INTERNAL``.
    """
    code, message = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        logger.error("unhandled %s in a servicer; sent INTERNAL", type(exc).__name__)
    if isinstance(exc, RateLimitedError):
        context.set_trailing_metadata(
            (
                (RETRY_AFTER_METADATA_KEY, f"{exc.retry_after:.3f}"),
                # gRPC's own server pushback: a client whose retry policy covers this status
                # waits this long before its next attempt, or, for a long wait, gives up
                (PUSHBACK_METADATA_KEY, pushback_ms(exc.retry_after)),
            )
        )
    context.abort(code, message)
    raise RuntimeError("grpc.ServicerContext.abort returned")  # pragma: no cover


def _already_aborting(context: Any) -> bool:
    """True when the servicer itself called ``context.abort`` (grpc raises a bare Exception)."""
    code = getattr(context, "code", None)
    return callable(code) and code() is not None


MethodT = TypeVar("MethodT", bound=Callable[..., Any])


def _context_argument(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    return kwargs["context"] if "context" in kwargs else args[-1]


def grpc_errors(method: MethodT) -> MethodT:
    """Decorate a servicer method ``(self, request, context)`` so errors become statuses.

    ``JigsawError`` → :func:`abort_for`; any other exception → ``INTERNAL`` with a generic
    message, unless the method had already aborted the call itself. Works on plain methods and
    on generator methods (server-streaming RPCs), and on plain handler functions
    ``(request, context)``: the context is the last positional argument.
    """
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            context = _context_argument(args, kwargs)
            try:
                yield from method(*args, **kwargs)
            except JigsawError as exc:
                abort_for(context, exc)
            except Exception as exc:
                if _already_aborting(context):
                    raise
                abort_for(context, exc)

        return cast(MethodT, stream_wrapper)

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        context = _context_argument(args, kwargs)
        try:
            return method(*args, **kwargs)
        except JigsawError as exc:
            abort_for(context, exc)
        except Exception as exc:
            if _already_aborting(context):
                raise
            abort_for(context, exc)

    return cast(MethodT, wrapper)


def require_reference(value: object, field: str) -> str:
    """Return ``value`` if it is an opaque reference: exactly 32 lowercase hex characters."""
    if not isinstance(value, str) or not _REFERENCE_PATTERN.fullmatch(value):
        raise RequestError(field, "expected an opaque reference of 32 lowercase hex characters")
    return value


def require_text(value: object, field: str, max_len: int, *, allow_empty: bool = False) -> str:
    """Return ``value`` if it is text of at most ``max_len`` characters with no control chars.

    Empty (or all-whitespace) text is refused unless ``allow_empty``.
    """
    if not isinstance(value, str):
        raise RequestError(field, "expected text")
    if not allow_empty and not value.strip():
        raise RequestError(field, "must not be empty")
    if len(value) > max_len:
        raise RequestError(field, f"must be at most {max_len} characters")
    if any(unicodedata.category(character) == "Cc" for character in value):
        raise RequestError(field, "must not contain control characters")
    return value


def require_filter_bytes(value: object, field: str, expected_len: int) -> bytes:
    """Return ``value`` if it is a packed filter of exactly ``expected_len`` bytes."""
    if not isinstance(value, bytes):
        raise RequestError(field, f"expected {expected_len} bytes of packed filter")
    if len(value) != expected_len:
        raise RequestError(field, f"expected {expected_len} bytes, got {len(value)} bytes")
    return value
