"""What a gRPC channel raises for a failed call, for tests that stand in for a server."""

from __future__ import annotations

from typing import Any

import grpc

from proto.jigsaw.v1.transport import RETRY_AFTER_METADATA_KEY


class FailedCall(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A failed call with status ``code``; a ``RESOURCE_EXHAUSTED`` one says "rate limit
    exceeded" and carries the server's retry-after trailer when ``retry_after`` is given."""

    def __init__(self, code: grpc.StatusCode, retry_after: float | None = None) -> None:
        self._code = code
        self._trailer = (
            () if retry_after is None else ((RETRY_AFTER_METADATA_KEY, f"{retry_after:.3f}"),)
        )

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "rate limit exceeded" if self._code == grpc.StatusCode.RESOURCE_EXHAUSTED else ""

    def trailing_metadata(self) -> Any:
        return self._trailer

    def initial_metadata(self) -> Any:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float | None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Any) -> bool:
        return False
