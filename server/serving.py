"""Run a built gRPC server until SIGTERM or SIGINT, then shut it down gracefully.

Role in the pipeline: the one serve loop behind ``jigsaw node serve`` and ``jigsaw matcher
serve`` (through :func:`server.node.serve` and :func:`server.matcher.serve`). A service builds
its runtime (server bound, resources open, not started); :func:`serve_until_signal` starts it,
reports the bound port, blocks until a signal asks it to stop, then stops the server with a
grace period for calls in flight and closes the runtime's resources.

Signal handlers are installed only in the main thread (Python allows no other) and the
previous handlers are put back afterwards, so a test can run a server in-process.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

import grpc

logger = logging.getLogger(__name__)

#: Seconds that calls in flight get to finish once shutdown starts.
SHUTDOWN_GRACE_S = 5.0
#: The signals that ask a server to stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ServerRuntime(Protocol):
    """A built, not yet started, server and the resources it owns (see ``build_node``)."""

    @property
    def server(self) -> grpc.Server: ...

    @property
    def port(self) -> int: ...

    def close(self) -> None:
        """Release the resources; called once the server has stopped."""


def serve_until_signal(
    runtime: ServerRuntime,
    *,
    on_started: Callable[[int], None] | None = None,
    grace_s: float = SHUTDOWN_GRACE_S,
) -> None:
    """Start ``runtime.server``, call ``on_started(port)``, and block until SIGTERM or SIGINT.

    Then stop the server (``grace_s`` seconds for calls in flight), close ``runtime`` and put
    the previous signal handlers back. The server is stopped and the runtime closed also when
    ``on_started`` raises.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    previous: list[tuple[signal.Signals, Any]] = []
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            previous.append((signum, signal.signal(signum, on_signal)))
    try:
        runtime.server.start()
        if on_started is not None:
            on_started(runtime.port)
        stop.wait()
    finally:
        runtime.server.stop(grace=grace_s).wait()
        runtime.close()
        for signum, handler in previous:
            signal.signal(signum, handler)
