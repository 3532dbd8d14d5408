"""Tests for server.common.ratelimit with a fake clock: token buckets, eviction, enumeration alerts,
hourly caps, limits charged all or nothing."""

from __future__ import annotations

import threading

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from server.common.ratelimit import (
    AllOrNothing,
    EnumerationGuard,
    RateLimiter,
    RecentAnswers,
    WindowCap,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_burst_then_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, burst=3, clock=clock)
    assert [limiter.acquire("alice") for _ in range(3)] == [None, None, None]
    assert limiter.acquire("alice") == pytest.approx(1.0)
    clock.advance(0.25)
    assert limiter.acquire("alice") == pytest.approx(0.75)
    clock.advance(0.75)
    assert limiter.acquire("alice") is None
    assert limiter.acquire("alice") == pytest.approx(1.0)


def test_callers_are_independent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=6, burst=1, clock=clock)
    assert limiter.acquire("alice") is None
    assert limiter.acquire("alice") == pytest.approx(10.0)
    assert limiter.acquire("bob") is None


def test_refill_is_capped_at_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, burst=2, clock=clock)
    limiter.acquire("alice")
    clock.advance(3600)
    assert [limiter.acquire("alice") for _ in range(3)][:2] == [None, None]
    assert limiter.acquire("alice") is not None


def test_a_refund_gives_back_the_token_a_refused_call_took() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=6, burst=2, clock=clock)
    assert limiter.acquire("alice") is None
    limiter.refund("alice")  # refused further on: as if it had not been made
    assert [limiter.acquire("alice") for _ in range(2)] == [None, None]
    assert limiter.acquire("alice") == pytest.approx(10.0)
    clock.advance(5.0)  # half a token back, then a refund
    limiter.refund("alice")
    assert limiter.acquire("alice") is None
    assert limiter.acquire("alice") == pytest.approx(5.0)
    clock.advance(3600.0)
    limiter.refund("alice")  # never above the burst
    limiter.refund("bob")  # a caller not held is full already
    assert [limiter.acquire("alice") for _ in range(3)][2] is not None
    assert [limiter.acquire("bob") for _ in range(3)][2] is not None


def test_idle_callers_are_evicted() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, burst=2, clock=clock)
    for number in range(100):
        limiter.acquire(f"caller{number}")
    assert limiter.tracked_callers() == 100
    clock.advance(2.0)  # every bucket has refilled: nothing worth remembering
    limiter.acquire("late")
    assert limiter.tracked_callers() == 1


def test_memory_bound_holds_for_busy_callers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=1, burst=1, clock=clock, max_callers=10)
    for number in range(1000):
        limiter.acquire(f"caller{number}")
        assert limiter.tracked_callers() <= 10


def test_clock_going_backwards_does_not_mint_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, burst=1, clock=clock)
    assert limiter.acquire("alice") is None
    clock.advance(-100)
    assert limiter.acquire("alice") is not None


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (float("nan"), 1), (10, 0), (10, 1.5)]
)
def test_invalid_settings(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate_per_minute=rate, burst=burst)


def test_thread_safe_token_count() -> None:
    clock = FakeClock()  # frozen: exactly `burst` calls may succeed in total
    limiter = RateLimiter(rate_per_minute=1, burst=50, clock=clock)
    allowed: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        count = sum(limiter.acquire("shared") is None for _ in range(40))
        with lock:
            allowed.append(count)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 50


@settings(deadline=None, max_examples=50)
@given(
    rate=st.floats(min_value=1, max_value=600),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=5), min_size=1, max_size=60),
)
def test_never_more_than_burst_plus_refill(rate: float, burst: int, gaps: list[float]) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=rate, burst=burst, clock=clock)
    allowed = 0
    for gap in gaps:
        clock.advance(gap)
        retry_after = limiter.acquire("caller")
        if retry_after is None:
            allowed += 1
        else:
            assert 0 < retry_after <= 60 / rate + 1e-9
    assert allowed <= burst + sum(gaps) * rate / 60 + 1e-6


def test_enumeration_alert_fires_once_per_burst() -> None:
    clock = FakeClock()
    guard = EnumerationGuard(threshold=5, window_seconds=60, clock=clock)
    alerts = [guard.observe("alice") for _ in range(5)]
    assert alerts == [False] * 5
    assert guard.observe("alice") is True
    assert [guard.observe("alice") for _ in range(10)] == [False] * 10
    assert guard.observe("bob") is False
    clock.advance(61)  # window slides past the burst: re-armed
    assert guard.count("alice") == 0
    assert [guard.observe("alice") for _ in range(6)] == [False] * 5 + [True]


def test_enumeration_window_slides() -> None:
    clock = FakeClock()
    guard = EnumerationGuard(threshold=3, window_seconds=10, clock=clock)
    for _ in range(3):
        assert not guard.observe("alice")
        clock.advance(4)  # lookups at 0, 4, 8; the 4th at 12 drops the one at 0
    assert not guard.observe("alice")
    assert guard.count("alice") == 3
    assert guard.observe("alice")  # 4, 8, 12, 12 within 10 s


def test_enumeration_guard_bounded() -> None:
    clock = FakeClock()
    guard = EnumerationGuard(threshold=2, window_seconds=60, clock=clock, max_callers=5)
    for number in range(50):
        guard.observe(f"caller{number}")
    assert len(guard._seen) <= 5


@pytest.mark.parametrize(("threshold", "window"), [(0, 60), (3, 0), (3, -1)])
def test_enumeration_invalid_settings(threshold: int, window: float) -> None:
    with pytest.raises(ValueError):
        EnumerationGuard(threshold=threshold, window_seconds=window)


def test_window_cap_refuses_until_the_oldest_call_leaves() -> None:
    clock = FakeClock()
    cap = WindowCap(limit=3, window_seconds=100, clock=clock)
    for _ in range(3):
        assert cap.acquire("node") is None
        clock.advance(10)  # granted at 0, 10, 20
    assert cap.acquire("node") == pytest.approx(70.0)  # at 30: the call at 0 leaves at 100
    clock.advance(69.5)
    assert cap.acquire("node") == pytest.approx(0.5)
    assert cap.count("node") == 3  # refusals are not recorded
    clock.advance(0.5)
    assert cap.acquire("node") is None  # at 100: the call at 0 has left
    assert cap.acquire("node") == pytest.approx(10.0)  # the one at 10 is next


def test_window_cap_callers_are_independent() -> None:
    clock = FakeClock()
    cap = WindowCap(limit=2, window_seconds=3600, clock=clock)
    assert [cap.acquire("police-node") for _ in range(3)][:2] == [None, None]
    assert cap.acquire("police-node") is not None
    assert cap.acquire("health-node") is None
    assert cap.count("health-node") == 1 and cap.count("nobody") == 0


def test_window_cap_forgets_idle_callers_and_stays_bounded() -> None:
    clock = FakeClock()
    cap = WindowCap(limit=5, window_seconds=60, clock=clock, max_callers=10)
    for number in range(1000):
        cap.acquire(f"caller{number}")
        assert cap.tracked_callers() <= 10
    clock.advance(61)
    cap.acquire("late")
    assert cap.tracked_callers() == 1


def test_window_cap_clock_going_backwards_frees_no_slot() -> None:
    clock = FakeClock()
    cap = WindowCap(limit=1, window_seconds=10, clock=clock)
    assert cap.acquire("node") is None
    clock.advance(-100)
    retry_after = cap.acquire("node")
    assert retry_after is not None and 0 < retry_after <= 10


def test_window_cap_thread_safe_count() -> None:
    clock = FakeClock()  # frozen: exactly `limit` calls may be granted in total
    cap = WindowCap(limit=50, window_seconds=3600, clock=clock)
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        count = sum(cap.acquire("shared") is None for _ in range(40))
        with lock:
            granted.append(count)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 50


@settings(deadline=None, max_examples=50)
@given(
    limit=st.integers(min_value=1, max_value=10),
    window=st.floats(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=20), min_size=1, max_size=60),
)
@example(limit=1, window=12.0, gaps=[12.627165786917118, 12.0])  # a window ending now
def test_window_cap_never_grants_more_than_limit_in_a_window(
    limit: int, window: float, gaps: list[float]
) -> None:
    clock = FakeClock()
    cap = WindowCap(limit=limit, window_seconds=window, clock=clock)
    granted: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        retry_after = cap.acquire("node")
        in_window = [t for t in granted if t > clock.now - window]
        if retry_after is None:
            assert len(in_window) < limit  # granted only when there was room
            granted.append(clock.now)
        else:
            assert len(in_window) == limit  # refused only when full
            # the slot frees at the window's end; a refusal names a wait of at least 1 ns,
            # also where the end is now, to within float rounding
            expected = max(min(in_window) + window - clock.now, 1e-9)
            assert retry_after == pytest.approx(expected, abs=1e-9)
            assert 0 < retry_after <= window


@pytest.mark.parametrize(
    ("limit", "window"),
    [(0, 60), (True, 60), (1.5, 60), (3, 0), (3, -1), (3, float("inf")), (3, float("nan"))],
)
def test_window_cap_invalid_settings(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        WindowCap(limit=limit, window_seconds=window)


def test_recent_answers_hold_a_reference_for_its_person_within_the_window() -> None:
    clock = FakeClock()
    answers = RecentAnswers(60.0, clock=clock)
    answers.record("alice", [("health", "a" * 32), ("police", "b" * 32)])
    assert answers.holder_of("alice", "a" * 32) == "health"
    assert answers.holder_of("bob", "a" * 32) is None  # another person's lookup
    assert answers.holder_of("alice", "c" * 32) is None
    clock.advance(59.0)
    answers.record("alice", [("health", "a" * 32)])  # returned again: a fresh window
    clock.advance(2.0)
    assert answers.holder_of("alice", "a" * 32) == "health"
    assert answers.holder_of("alice", "b" * 32) is None  # expired
    assert len(answers) == 1


def test_recent_answers_are_bounded_oldest_first() -> None:
    answers = RecentAnswers(60.0, clock=FakeClock(), max_entries=3)
    answers.record("alice", [("health", str(i) * 32) for i in range(5)])
    assert len(answers) == 3
    assert answers.holder_of("alice", "0" * 32) is None
    assert answers.holder_of("alice", "4" * 32) == "health"


def test_wait_answers_as_acquire_would_and_takes_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_minute=60, burst=1, clock=clock)
    cap = WindowCap(1, 100.0, clock=clock)
    assert limiter.wait("alice") is None and cap.wait("alice") is None
    assert limiter.wait("alice") is None and cap.wait("alice") is None  # nothing taken
    assert limiter.acquire("alice") is None and cap.acquire("alice") is None
    assert limiter.wait("alice") == pytest.approx(1.0) == limiter.acquire("alice")
    clock.advance(40.0)
    assert cap.wait("alice") == pytest.approx(60.0) == cap.acquire("alice")


def test_all_or_nothing_charges_every_limit_or_none() -> None:
    clock = FakeClock()
    node = WindowCap(3, 3600.0, clock=clock)
    person = WindowCap(1, 3600.0, clock=clock)
    pace = RateLimiter(rate_per_minute=60, burst=10, clock=clock)
    charge = AllOrNothing()

    def call(who: str) -> tuple[float | None, ...] | None:
        return charge.acquire([(pace, "node"), (node, "node"), (person, who)])

    assert call("alice") is None
    for _ in range(5):  # refused by alice's own cap: the node's cap and pace are not charged
        waits = call("alice")
        assert waits is not None and waits[:2] == (None, None)
        assert waits[2] == pytest.approx(3600.0)
    assert node.count("node") == 1
    assert call("bob") is None and call("carol") is None
    waits = call("dave")  # the node's cap is spent; dave's own is not charged by the refusal
    assert waits is not None and waits[1] == pytest.approx(3600.0) and waits[2] is None
    assert person.count("dave") == 0
    # the pace was charged for the three granted calls only: seven of its ten tokens are left
    assert [pace.acquire("node") for _ in range(8)] == [None] * 7 + [pytest.approx(1.0)]
