"""Batch lookups (:mod:`client.batch`) against the rate limits: at the shipped limits, 500
lookups by one person finish with no error reaching the caller.

The limits are the real ones (:class:`server.common.ratelimit.RateLimiter`, the matcher's
:class:`server.matcher.limits.MatchLimits`) at their default settings, on a simulated clock;
the node in front of them answers as gRPC's retry policy makes a real channel answer
(checked against a real channel in :func:`test_grpc_waits_out_a_pushback_within_the_deadline`
and :func:`test_a_pushback_of_minus_one_ends_the_call_at_once`): a refusal whose wait is at
most ``MAX_PUSHBACK_S`` is waited out inside the call when the call's deadline allows it,
else the call ends ``DEADLINE_EXCEEDED``; a longer wait (pushback -1) and the fifth refusal
surface at once, and the batch waits them out itself.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from client.batch import (
    BATCH_CALL_DEADLINE_S,
    DEFAULT_MAX_WAIT_S,
    LONGEST_LIMIT_WINDOW_S,
    BatchReport,
    QueryRow,
    run_batch,
)
from client.client import LOOKUP_ATTEMPTS, NODE_SERVICE_CONFIG
from proto.jigsaw.v1 import jigsaw_pb2
from proto.jigsaw.v1.transport import (
    MAX_PUSHBACK_S,
    PUSHBACK_METADATA_KEY,
    RETRY_AFTER_METADATA_KEY,
    pushback_ms,
)
from server.common.ratelimit import RateLimiter
from server.matcher.config import MatchLimitConfig
from server.matcher.limits import MATCH_WINDOW_S, MatchLimits
from server.node.config import RateLimitConfig
from server.node.service import ENUMERATION_WINDOW_S
from tests.helpers.calls import FailedCall

ATTEMPTS = NODE_SERVICE_CONFIG["methodConfig"][0]["retryPolicy"]["maxAttempts"]  # type: ignore[index]
assert ATTEMPTS == LOOKUP_ATTEMPTS
LOOKUP_S = 0.05  # a lookup's own time on the simulated clock


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@dataclass
class LimitedNode:
    """A node with its default per-person limit, in front of a matcher with its default
    per-node and per-person limits, reached through a channel with gRPC's retry policy."""

    clock: Clock
    person: str = "bob"
    node: RateLimitConfig = field(default_factory=RateLimitConfig)
    matcher: MatchLimitConfig = field(default_factory=MatchLimitConfig)
    refusals: int = 0
    answered: list[float] = field(default_factory=list)
    deadlines: set[float] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._node_limit = RateLimiter(
            self.node.lookups_per_minute, self.node.burst, clock=self.clock
        )
        self._match = MatchLimits.from_config(self.matcher, clock=self.clock)

    def _attempt(self) -> float | None:
        """One call at the node: None when answered, else the refusal's retry-after."""
        wait = self._node_limit.acquire(self.person)
        if wait is not None:
            return wait
        key = MatchLimits.person("police-node", self.person)
        waits = self._match.charge.acquire(
            [
                (self._match.rate, "police-node"),
                (self._match.person_rate, key),
                (self._match.cap, "police-node"),
                (self._match.person_cap, key),
            ]
        )
        if waits is None:
            return None
        return max(w for w in waits if w is not None)

    def lookup(self, identifiers: Any, *, timeout: float, **_: Any) -> jigsaw_pb2.LookupResponse:
        self.deadlines.add(timeout)
        ends = self.clock.now + timeout
        for attempt in range(1, ATTEMPTS + 1):
            wait = self._attempt()
            if wait is None:
                self.clock.sleep(LOOKUP_S)
                self.answered.append(self.clock.now)
                return jigsaw_pb2.LookupResponse(lookup_id="ab" * 16)
            self.refusals += 1
            if attempt == ATTEMPTS or pushback_ms(wait) == "-1":  # no retry: it surfaces
                raise FailedCall(grpc.StatusCode.RESOURCE_EXHAUSTED, wait)
            if self.clock.now + wait > ends:  # gRPC waits the pushback, the deadline ends it
                self.clock.now = ends
                raise FailedCall(grpc.StatusCode.DEADLINE_EXCEEDED)
            self.clock.sleep(wait)
        raise AssertionError("unreachable")


def _rows(count: int) -> Iterator[QueryRow]:
    for i in range(count):
        yield QueryRow(i + 2, f"case-{i}", {"given_name": "Amelia", "family_name": f"B{i}"})


def test_500_lookups_at_the_default_limits_finish_with_no_error(tmp_path: Path) -> None:
    clock = Clock()
    node = LimitedNode(clock)
    out = tmp_path / "results.jsonl"
    started = clock.now
    shown: list[float] = []

    def progress(report: BatchReport) -> None:
        shown.append(report.waiting_s)

    report = run_batch(
        node, _rows(500), out, purpose_code="s47_enquiry", note="batch",
        per_minute=60.0, sleep=clock.sleep, clock=clock, progress=progress,
    )  # fmt: skip
    assert (report.rows, report.done, report.invalid) == (500, 500, 0)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["line"] for x in lines] == list(range(2, 502))
    assert all("error" not in x for x in lines)
    # the limits were met (the matcher's per-person pace and its hourly cap) and waited out
    assert node.refusals > 0
    cap = MatchLimitConfig().person_matches_per_hour
    assert cap == 250
    # never more than the cap in any hour
    times = node.answered
    assert all(
        sum(1 for t in times if s <= t < s + MATCH_WINDOW_S) <= cap for s in times
    )  # fmt: skip
    took = clock.now - started
    print(f"500 lookups: {took / 60:.1f} simulated minutes, {node.refusals} refusals waited out")
    assert MATCH_WINDOW_S < took < MATCH_WINDOW_S + 20 * 60, took / 60  # about 70 minutes
    # every call's deadline is minutes, not the hour: the hourly cap's wait came back to
    # the batch, which showed it while it waited
    assert node.deadlines == {BATCH_CALL_DEADLINE_S} and BATCH_CALL_DEADLINE_S < 300
    assert any(wait > MAX_PUSHBACK_S for wait in shown)
    assert shown.count(0.0) == 500  # one update per row besides the waits


def test_the_default_wait_outlasts_every_limits_window() -> None:
    assert max(MATCH_WINDOW_S, ENUMERATION_WINDOW_S) <= LONGEST_LIMIT_WINDOW_S
    assert DEFAULT_MAX_WAIT_S > LONGEST_LIMIT_WINDOW_S


@dataclass
class SurfacingNode:
    """Refuses the given rows once each, past gRPC's attempts, with ``retry_after``."""

    clock: Clock
    refuse: set[int]
    retry_after: float
    calls: list[tuple[str, float]] = field(default_factory=list)

    def lookup(self, identifiers: Any, *, timeout: float, **_: Any) -> jigsaw_pb2.LookupResponse:
        name = identifiers["family_name"]
        self.calls.append((name, self.clock.now))
        if int(name[1:]) in self.refuse:
            self.refuse.discard(int(name[1:]))
            raise FailedCall(grpc.StatusCode.RESOURCE_EXHAUSTED, self.retry_after)
        return jigsaw_pb2.LookupResponse(lookup_id="cd" * 16)


def test_a_refusal_that_surfaces_is_waited_out_at_the_same_pace(tmp_path: Path) -> None:
    clock = Clock()
    node = SurfacingNode(clock, {3}, retry_after=3000.0)
    report = run_batch(
        node, _rows(10), tmp_path / "out.jsonl", purpose_code="s47_enquiry", note="n",
        per_minute=60.0, sleep=clock.sleep, clock=clock,
    )  # fmt: skip
    assert (report.done, report.waits) == (10, 1)
    at = dict(node.calls)  # each row's last call
    assert at["B3"] - node.calls[3][1] == pytest.approx(3000.0)
    # after the wait, one a second again (60 a minute), not slower
    assert [round(at[f"B{i + 1}"] - at[f"B{i}"], 6) for i in range(3, 9)] == [1.0] * 6


def test_a_wait_past_max_wait_stops_the_batch_and_a_rerun_resumes(tmp_path: Path) -> None:
    clock = Clock()
    out = tmp_path / "out.jsonl"
    node = SurfacingNode(clock, {4}, retry_after=7200.0)
    with pytest.raises(grpc.RpcError):
        run_batch(
            node, _rows(8), out, purpose_code="s47_enquiry", note="n", per_minute=60.0,
            sleep=clock.sleep, clock=clock,
        )  # fmt: skip
    assert len(out.read_text().splitlines()) == 4
    again = SurfacingNode(clock, set(), retry_after=1.0)
    report = run_batch(
        again, _rows(8), out, purpose_code="s47_enquiry", note="n", per_minute=60.0,
        sleep=clock.sleep, clock=clock,
    )  # fmt: skip
    assert (report.skipped, report.done) == (4, 4)
    assert [n for n, _ in again.calls] == ["B4", "B5", "B6", "B7"]


# ------------------------------------------------------------------ gRPC's own behaviour


#: the pushback the refusing server sends (a test may set "-1")
REFUSAL_PUSHBACK = "1500"


@pytest.fixture
def refusing_server() -> Iterator[tuple[str, list[float]]]:
    """A Lookup that refuses its first call with a 1.5 s pushback, then answers."""
    calls: list[float] = []
    lock = threading.Lock()

    def lookup(request: bytes, context: grpc.ServicerContext) -> bytes:
        with lock:
            calls.append(time.monotonic())
            first = len(calls) % 2 == 1
        if first:
            context.set_trailing_metadata(
                ((PUSHBACK_METADATA_KEY, REFUSAL_PUSHBACK), (RETRY_AFTER_METADATA_KEY, "1.500"))
            )
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit exceeded")
        return jigsaw_pb2.LookupResponse(lookup_id="ef" * 16).SerializeToString()

    handler = grpc.method_handlers_generic_handler(
        "jigsaw.v1.AgencyNode", {"Lookup": grpc.unary_unary_rpc_method_handler(lookup)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", calls
    finally:
        server.stop(0)


@contextmanager
def _retrying_lookup(address: str) -> Iterator[Callable[..., Any]]:
    """``Lookup`` on a channel to ``address`` with the node client's retry policy."""
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(NODE_SERVICE_CONFIG)),
    ]
    with grpc.insecure_channel(address, options=options) as channel:
        yield channel.unary_unary(
            "/jigsaw.v1.AgencyNode/Lookup",
            request_serializer=jigsaw_pb2.LookupRequest.SerializeToString,
            response_deserializer=jigsaw_pb2.LookupResponse.FromString,
        )


def test_grpc_waits_out_a_pushback_within_the_deadline(
    refusing_server: tuple[str, list[float]],
) -> None:
    """The premise of the batch's deadline: with the client's retry policy, a refusal's
    pushback is waited out inside the call when the deadline allows (the call answers),
    and the call ends DEADLINE_EXCEEDED when it does not (no refusal, no retry-after)."""
    address, calls = refusing_server
    with _retrying_lookup(address) as lookup:
        t0 = time.monotonic()
        answer = lookup(jigsaw_pb2.LookupRequest(), timeout=10.0)
        assert answer.lookup_id == "ef" * 16
        assert len(calls) == 2 and calls[1] - calls[0] >= 1.4
        assert time.monotonic() - t0 < 5.0
        with pytest.raises(grpc.RpcError) as ended:
            lookup(jigsaw_pb2.LookupRequest(), timeout=0.5)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(0.0, "1"), (0.0004, "1"), (1.5, "1500"), (MAX_PUSHBACK_S, "30000"),
     (MAX_PUSHBACK_S + 0.001, "-1"), (3600.0, "-1"), (float("nan"), "-1")],
)  # fmt: skip
def test_pushback_is_milliseconds_up_to_the_bound_then_do_not_retry(
    retry_after: float, expected: str
) -> None:
    assert pushback_ms(retry_after) == expected


def test_a_pushback_of_minus_one_ends_the_call_at_once(
    refusing_server: tuple[str, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The premise of the batch's short deadline: with the client's retry policy, a refusal
    whose pushback is -1 (a wait past MAX_PUSHBACK_S) is not retried; the caller gets
    RESOURCE_EXHAUSTED at once, with the retry-after to wait for."""
    address, calls = refusing_server
    monkeypatch.setattr(sys.modules[__name__], "REFUSAL_PUSHBACK", "-1")
    with _retrying_lookup(address) as lookup:
        with pytest.raises(grpc.RpcError) as refused:
            lookup(jigsaw_pb2.LookupRequest(), timeout=10.0)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(calls) == 1  # not retried
        assert dict(refused.value.trailing_metadata())[RETRY_AFTER_METADATA_KEY] == "1.500"
