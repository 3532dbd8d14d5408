"""Build, run and stop a Jigsaw gRPC server (node or matcher) and the resources it owns.

Role in the pipeline: the one serve loop behind ``jigsaw node serve`` and ``jigsaw matcher
serve`` (through :func:`server.node.service.serve` and
:func:`server.matcher.service.serve`). A service builds a :class:`Runtime` (server bound with
:func:`build_grpc_server`, not started; every resource it opened — store, audit log, index,
channels — registered on the runtime's exit stack as it was opened, so a failed build closes
what it had opened and :meth:`Runtime.close` closes all of it, last opened first).
:func:`serve_until_signal` starts it, reports the bound port, blocks until a signal asks it
to stop, then stops the server with a grace period for calls in flight and closes the
runtime. Tests use a runtime as a context manager: ``with build_matcher(config) as
runtime:`` starts the server, and leaving the block stops it and closes everything.

Signal handlers are installed only in the main thread (Python allows no other) and the
previous handlers are put back afterwards, so a test can run a server in-process.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, Protocol, Self

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from server.common.auth import AuthInterceptor, RolePolicy
from server.common.refusals import RefusalTally
from server.common.revocation import RevocationChecker
from server.common.tls import TlsFiles, server_credentials, server_options

logger = logging.getLogger(__name__)

#: Seconds that calls in flight get to finish once shutdown starts.
SHUTDOWN_GRACE_S = 5.0
#: Worker threads of a node's or the matcher's gRPC server (calls served at once).
MAX_WORKERS = 16
#: The signals that ask a server to stop.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def build_grpc_server(
    *,
    role: str,
    service_name: str,
    policy: RolePolicy,
    add_servicer: Callable[[grpc.Server], None],
    listen: str,
    tls: TlsFiles,
    max_workers: int = MAX_WORKERS,
    agency: str | None = None,
    refusals: RefusalTally | None = None,
) -> tuple[grpc.Server, int]:
    """A bound, not started, mutual-TLS server for one Jigsaw service (node or matcher).

    Every call passes the role interceptor with ``policy`` first, which also refuses a client
    certificate on the federation's revocation list (``tls.revocation_list_path()``; a missing
    list, or one not signed by the CA, raises :class:`server.common.pki.PkiError`: no server starts
    without a good one); the standard health service (SERVING for "" and ``service_name``)
    and server reflection are added beside the service that ``add_servicer`` registers. A
    server of an ``agency`` (a node) admits callers of an agency-bound role (staff) of that
    agency only. The interceptor counts the calls it refuses in ``refusals``. Raises OSError
    when ``listen`` cannot be bound.
    """
    revocations = RevocationChecker.for_tls(tls)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=role),
        interceptors=[
            AuthInterceptor(policy, revocations=revocations, agency=agency, refusals=refusals)
        ],
        options=server_options(),
    )
    add_servicer(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    add_reflection(server, (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME))
    try:
        port = server.add_secure_port(listen, server_credentials(tls))
    except RuntimeError:  # grpcio >= 1.51 raises where older releases returned 0
        port = 0
    if port == 0:
        raise OSError(f"cannot bind the {role} server to {listen} (in use, or not this host's)")
    return server, port


#: Server reflection v1, which current clients (grpcurl, Postman) ask first.
REFLECTION_V1_SERVICE = "grpc.reflection.v1.ServerReflection"


def add_reflection(server: grpc.Server, service_names: tuple[str, ...]) -> None:
    """Serve server reflection as ``grpc.reflection.v1alpha`` and ``grpc.reflection.v1``.

    grpcio-reflection implements v1alpha only. v1 is the same protocol under a new package
    name (gRFC A15: messages, fields and numbers unchanged), so its bytes on the wire are
    those of v1alpha and one servicer answers both. ``service_names`` are what a client's
    list shows: the services whose descriptors the server can give (v1's own descriptor is
    not in the pool, so v1 is served but not listed).
    """
    servicer = reflection.ReflectionServicer(service_names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        REFLECTION_V1_SERVICE,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))


@dataclass
class Runtime:
    """A built (bound, not started) server and the resources it opened.

    ``resources`` closes them, last opened first; :meth:`close` is idempotent. As a context
    manager the runtime starts the server on entry and, on exit, stops it at once and closes.
    """

    server: grpc.Server
    port: int
    resources: ExitStack = field(repr=False)

    def close(self) -> None:
        """Release every resource (once the server has stopped)."""
        self.resources.close()

    def stop(self, grace: float | None = None) -> None:
        """Stop the server (``grace`` seconds for calls in flight), then :meth:`close`."""
        try:
            self.server.stop(grace).wait()
        finally:
            self.close()

    def __enter__(self) -> Self:
        try:
            self.server.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ServerRuntime(Protocol):
    """What :func:`serve_until_signal` needs of a :class:`Runtime`."""

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
        # Woken every second: a signal the kernel delivers to another thread (gRPC's own) only
        # marks the handler pending, and a main thread asleep in an untimed wait never runs it.
        while not stop.wait(1.0):
            pass
    finally:
        runtime.server.stop(grace=grace_s).wait()
        runtime.close()
        for signum, handler in previous:
            signal.signal(signum, handler)
