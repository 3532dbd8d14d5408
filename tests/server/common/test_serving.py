"""Tests of the shared serve loop (server.common.serving.serve_until_signal).

The node and matcher run it through ``serve()``; the real processes are exercised in
test_matcher_service.py (SIGTERM) and test_e2e.py (the CLI with ``--port-file``). Here a
recording stand-in for the gRPC server shows the order of events and the cleanup.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field

import pytest

from server.common.serving import SHUTDOWN_GRACE_S, STOP_SIGNALS, serve_until_signal


@dataclass
class RecordingServer:
    events: list[str]

    def start(self) -> None:
        self.events.append("start")

    def stop(self, grace: float | None) -> threading.Event:
        self.events.append(f"stop grace={grace}")
        done = threading.Event()
        done.set()
        return done


@dataclass
class RecordingRuntime:
    port: int = 4321
    events: list[str] = field(default_factory=list)
    server: RecordingServer = field(init=False)

    def __post_init__(self) -> None:
        self.server = RecordingServer(self.events)

    def close(self) -> None:
        self.events.append("close")


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_runs_until_a_stop_signal_then_cleans_up(signum: signal.Signals) -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    runtime = RecordingRuntime()

    def started(port: int) -> None:
        runtime.events.append(f"started {port}")
        assert all(signal.getsignal(s) is not before[s] for s in STOP_SIGNALS)
        signal.raise_signal(signum)  # handled in this (main) thread: the loop's handler

    serve_until_signal(runtime, on_started=started)
    assert runtime.events == [
        "start",
        "started 4321",
        f"stop grace={SHUTDOWN_GRACE_S}",
        "close",
    ]
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def test_a_failing_on_started_still_stops_and_closes() -> None:
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    runtime = RecordingRuntime()

    def started(port: int) -> None:
        raise OSError("cannot write the port file")

    with pytest.raises(OSError, match="port file"):
        serve_until_signal(runtime, on_started=started, grace_s=0.5)
    assert runtime.events == ["start", "stop grace=0.5", "close"]
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before


def test_a_port_already_served_is_refused_not_shared() -> None:
    """gRPC's default SO_REUSEPORT would let a second server (a stale node, another
    federation's) bind a fixed port too and take half its connections."""
    from concurrent import futures

    import grpc

    from server.common.tls import server_options

    first = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=server_options())
    second = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=server_options())
    try:
        port = first.add_insecure_port("127.0.0.1:0")
        with pytest.raises(RuntimeError):
            second.add_insecure_port(f"127.0.0.1:{port}")
    finally:
        first.stop(None)
        second.stop(None)
