"""Tests for server.common.status: error table, aborts on a real server, canary-safe messages."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from linkage.errors import (
    FilterFormatError,
    IncompatibleEncodingError,
    InvalidValueError,
    JigsawError,
    KeyMaterialError,
    ModelError,
    SchemaError,
)
from proto.jigsaw.v1.transport import RETRY_AFTER_METADATA_KEY, retry_after_from_metadata
from server.common.status import (
    INTERNAL_MESSAGE,
    NotFoundError,
    PolicyDenied,
    RateLimitedError,
    RequestError,
    Unauthenticated,
    grpc_errors,
    require_filter_bytes,
    require_reference,
    require_text,
    status_for,
)
from server.common.tls import secure_channel, server_credentials, server_options, tls_files_for

CANARY = "Zebedee-Canary-1999-03-02"
TIMEOUT = 10
Code = grpc.StatusCode


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SchemaError(["field 'x': unknown key"]), Code.INVALID_ARGUMENT),
        (InvalidValueError("given_name", "empty after normalisation"), Code.INVALID_ARGUMENT),
        (FilterFormatError("wrong length"), Code.INVALID_ARGUMENT),
        (IncompatibleEncodingError("schema fingerprint differs"), Code.FAILED_PRECONDITION),
        (KeyMaterialError("secret too short"), Code.FAILED_PRECONDITION),
        (ModelError("cannot fit"), Code.FAILED_PRECONDITION),
        (RequestError("purpose", "must not be empty"), Code.INVALID_ARGUMENT),
        (NotFoundError("no such reference"), Code.NOT_FOUND),
        (RateLimitedError(2.5), Code.RESOURCE_EXHAUSTED),
        (PolicyDenied("purpose not allowed"), Code.PERMISSION_DENIED),
        (Unauthenticated("no identity"), Code.UNAUTHENTICATED),
    ],
)
def test_status_table(error: JigsawError, code: grpc.StatusCode) -> None:
    assert status_for(error) == (code, str(error))


class _SubRequestError(RequestError):
    pass


def test_subclasses_use_the_nearest_entry() -> None:
    assert status_for(_SubRequestError("f", "bad"))[0] is Code.INVALID_ARGUMENT


@pytest.mark.parametrize("error", [JigsawError(CANARY), ValueError(CANARY), KeyError(CANARY)])
def test_unknown_errors_are_internal_and_generic(error: Exception) -> None:
    assert status_for(error) == (Code.INTERNAL, INTERNAL_MESSAGE)


def test_rate_limited_message_carries_delay() -> None:
    error = RateLimitedError(2.5)
    assert error.retry_after == 2.5 and "2.500" in str(error)


def raises(error: BaseException) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    @grpc_errors
    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise error

    return handler


@grpc_errors
def validate(request: bytes, context: grpc.ServicerContext) -> bytes:
    require_reference(request.decode(), "reference")
    return b"ok"


@grpc_errors
def aborts_itself(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(Code.ALREADY_EXISTS, "batch already published")
    raise AssertionError("unreachable")


@grpc_errors
def streams_then_fails(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise NotFoundError("link result not found")


class Servicer:
    """A class-based servicer, as the node and matcher will write them."""

    @grpc_errors
    def lookup(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        raise InvalidValueError("date_of_birth", "not a calendar date", row=3)


HANDLERS: dict[str, grpc.RpcMethodHandler] = {
    "Validate": grpc.unary_unary_rpc_method_handler(validate),
    "Limited": grpc.unary_unary_rpc_method_handler(raises(RateLimitedError(2.5))),
    "Crash": grpc.unary_unary_rpc_method_handler(raises(ValueError(f"bad value {CANARY}"))),
    "Aborts": grpc.unary_unary_rpc_method_handler(aborts_itself),
    "Stream": grpc.unary_stream_rpc_method_handler(streams_then_fails),
    "Method": grpc.unary_unary_rpc_method_handler(Servicer().lookup),
}


@pytest.fixture(scope="module")
def channel(pki: Path) -> Iterator[grpc.Channel]:
    pki_dir = pki  # the shared PKI (tests/conftest.py)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=server_options())
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("jigsaw.v1.Test", HANDLERS),)
    )
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(tls_files_for(pki_dir, "police-node"))
    )
    server.start()
    with secure_channel(f"127.0.0.1:{port}", tls_files_for(pki_dir, "alice")) as client:
        yield client
    server.stop(None)


def call(channel: grpc.Channel, method: str, request: bytes = b"") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        result = channel.unary_unary(f"/jigsaw.v1.Test/{method}")(request, timeout=TIMEOUT)
        assert result is not None
    return caught.value


def test_validation_error_on_the_wire(channel: grpc.Channel) -> None:
    error = call(channel, "Validate", CANARY.encode())
    assert error.code() is Code.INVALID_ARGUMENT
    assert "reference" in error.details() and CANARY not in error.details()
    ok = channel.unary_unary("/jigsaw.v1.Test/Validate")(b"0123456789abcdef" * 2, timeout=TIMEOUT)
    assert ok == b"ok"


def test_rate_limited_on_the_wire(channel: grpc.Channel) -> None:
    error = call(channel, "Limited")
    assert error.code() is Code.RESOURCE_EXHAUSTED
    assert "2.500" in error.details()
    metadata = error.trailing_metadata()
    assert (RETRY_AFTER_METADATA_KEY, "2.500") in list(metadata)
    assert retry_after_from_metadata(metadata) == 2.5


def test_unknown_exception_is_internal_without_its_message(
    channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        error = call(channel, "Crash")
    assert error.code() is Code.INTERNAL
    assert error.details() == INTERNAL_MESSAGE
    assert "ValueError" in caplog.text
    assert all(CANARY not in record.getMessage() for record in caplog.records)
    assert CANARY not in caplog.text


def test_servicer_abort_passes_through(channel: grpc.Channel) -> None:
    error = call(channel, "Aborts")
    assert error.code() is Code.ALREADY_EXISTS
    assert error.details() == "batch already published"


def test_streaming_method_error(channel: grpc.Channel) -> None:
    responses = channel.unary_stream("/jigsaw.v1.Test/Stream")(b"", timeout=TIMEOUT)
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in responses:
            received.append(response)
    assert received == [b"first"]
    assert caught.value.code() is Code.NOT_FOUND


def test_class_servicer_method(channel: grpc.Channel) -> None:
    error = call(channel, "Method")
    assert error.code() is Code.INVALID_ARGUMENT
    assert "date_of_birth" in error.details() and "row 3" in error.details()


CANARY_FAILURES: list[tuple[Callable[[], Any], str]] = [
    (lambda: require_reference(CANARY, "reference"), "reference"),
    (lambda: require_reference(CANARY.upper()[:32].ljust(32, "A"), "reference"), "reference"),
    (lambda: require_reference("ABCDEF0123456789" * 2, "reference"), "reference"),
    (lambda: require_reference(CANARY.encode(), "reference"), "reference"),
    (lambda: require_reference(None, "reference"), "reference"),
    (lambda: require_text(CANARY * 10, "purpose", 40), "purpose"),
    (lambda: require_text(CANARY + "\n", "purpose", 200), "purpose"),
    (lambda: require_text(CANARY + "\x00", "given_name", 200), "given_name"),
    (lambda: require_text("   ", "purpose", 200), "purpose"),
    (lambda: require_text(CANARY.encode(), "purpose", 200), "purpose"),
    (lambda: require_filter_bytes(CANARY.encode(), "field_filters[0]", 128), "field_filters[0]"),
    (lambda: require_filter_bytes(CANARY, "record_filter", 128), "record_filter"),
]


@pytest.mark.parametrize(("failure", "field"), CANARY_FAILURES)
def test_validation_messages_never_carry_the_value(failure: Callable[[], Any], field: str) -> None:
    with pytest.raises(RequestError) as caught:
        failure()
    message = str(caught.value)
    assert field in message and caught.value.field == field
    assert CANARY not in message and CANARY.lower() not in message.lower()
    assert status_for(caught.value) == (Code.INVALID_ARGUMENT, message)


def test_validation_success_returns_the_value() -> None:
    reference = "0123456789abcdef" * 2
    assert require_reference(reference, "reference") == reference
    assert require_text("s47 enquiry", "purpose", 200) == "s47 enquiry"
    assert require_text("", "note", 10, allow_empty=True) == ""
    assert require_filter_bytes(bytes(128), "record_filter", 128) == bytes(128)


def test_filter_length_message_says_what_came() -> None:
    with pytest.raises(RequestError, match="expected 128 bytes, got 3 bytes"):
        require_filter_bytes(b"abc", "record_filter", 128)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        (None, None),
        ((), None),
        ((("retry-after-s", "1.5"),), 1.5),
        ((("retry-after-s", "nan"),), None),
        ((("retry-after-s", "x"),), None),
        ((("other", "1"),), None),
    ],
)
def test_retry_after_from_metadata(metadata: object, expected: float | None) -> None:
    assert retry_after_from_metadata(metadata) == expected


@pytest.mark.parametrize("bad", ["0" * 32 + "\n", "0" * 31, "0" * 33, "A" * 32, " " + "0" * 31])
def test_require_reference_wants_exactly_32_lowercase_hex(bad: str) -> None:
    # a trailing newline once passed: "$" also matches before a final "\n"
    with pytest.raises(RequestError, match="32 lowercase hex"):
        require_reference(bad, "reference")
    assert require_reference("0123456789abcdef" * 2, "reference") == "0123456789abcdef" * 2
