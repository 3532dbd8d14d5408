"""Per-caller rate limiting, enumeration detection and hourly caps for lookups and disclosures.

Role in the pipeline: a node's ``Lookup`` and ``Disclose`` (and the matcher's ``Match``) ask
a :class:`RateLimiter` before doing any work and answers ``RESOURCE_EXHAUSTED`` with a
retry-after delay when the caller is over its rate (``server.common.status.RateLimitedError``);
a call the limiter allowed that another party's limit then refused is refunded
(:meth:`RateLimiter.refund`), so a refused call costs the caller nothing; an
:class:`EnumerationGuard` watches the same calls and says when a caller's lookups in a sliding
window cross an alert threshold (:class:`server.common.guard.Watch` writes the alert's audit
entry and raises the refusal, the one way both services do it).
The matcher also holds each calling node to a hard :class:`WindowCap` (at most ``limit`` calls
in any sliding window): a node's operator controls the node's own limits, so the matcher,
a separate trust domain, keeps its own. :class:`AllOrNothing` charges several limits
as one (a node's budget and a person's share of it): a call refused by any of them is charged
to none. A node's :class:`RecentAnswers` remembers which references each person's lookups
returned, so that ``Disclose`` releases only what that person's own recent lookup found.

All are in-memory, per process, thread-safe (one lock each) and bounded: at most
``max_callers`` callers are tracked; idle callers are evicted first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per caller: ``burst`` tokens, refilled at ``rate_per_minute``.

    A bucket starts full. A caller whose bucket has refilled completely is indistinguishable
    from a new caller, so it is forgotten (that is what keeps memory bounded without loss);
    beyond ``max_callers`` active callers the least recently seen one is forgotten as well.
    """

    def __init__(
        self,
        rate_per_minute: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        if not (isinstance(rate_per_minute, int | float) and math.isfinite(rate_per_minute)):
            raise ValueError("rate_per_minute must be a finite number")
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        if not isinstance(burst, int) or burst < 1:
            raise ValueError("burst must be an integer of at least 1")
        if max_callers < 1:
            raise ValueError("max_callers must be at least 1")
        self.rate_per_second = float(rate_per_minute) / 60.0
        self.burst = burst
        self.max_callers = max_callers
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.updated)
        return min(float(self.burst), bucket.tokens + elapsed * self.rate_per_second)

    def _evict(self, now: float) -> None:
        # Runs before the current caller is (re)inserted, so it leaves room for one more.
        # Oldest-seen first: forget callers whose bucket is full again, then enforce the bound.
        while self._buckets:
            caller, bucket = next(iter(self._buckets.items()))
            if self._refilled(bucket, now) >= self.burst or len(self._buckets) >= self.max_callers:
                del self._buckets[caller]
            else:
                break

    def wait(self, caller: str) -> float | None:
        """What :meth:`acquire` would answer now, taking nothing: None when a token is there,
        else seconds until one is."""
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                return None
            tokens = self._refilled(bucket, self._clock())
            return None if tokens >= 1.0 else (1.0 - tokens) / self.rate_per_second

    def acquire(self, caller: str) -> float | None:
        """Take one token for ``caller``: None when allowed, else seconds until one is available."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.pop(caller, None)
            self._evict(now)
            if bucket is None:
                bucket = _Bucket(tokens=float(self.burst), updated=now)
            bucket.tokens = self._refilled(bucket, now)
            bucket.updated = now
            self._buckets[caller] = bucket  # most recently seen goes last
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / self.rate_per_second

    def refund(self, caller: str) -> None:
        """Give back the token of a call :meth:`acquire` allowed that was then refused
        further on (it did no work for the caller): the bucket is as if the call had not been
        made, never above ``burst``. A caller no longer held has a full bucket already."""
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                return
            now = max(self._clock(), bucket.updated)
            bucket.tokens = min(float(self.burst), self._refilled(bucket, now) + 1.0)
            bucket.updated = now

    def tracked_callers(self) -> int:
        """How many callers are held in memory right now."""
        with self._lock:
            return len(self._buckets)


class EnumerationGuard:
    """Sliding-window count of lookups per caller, alerting when it exceeds ``threshold``.

    :meth:`observe` returns True once when a caller's count in the last ``window_seconds``
    goes above ``threshold``, and again only after the count has fallen back to the threshold
    or below (so one burst of enumeration gives one alert, not one per lookup). Only the last
    ``threshold + 1`` timestamps per caller are kept.
    """

    def __init__(
        self,
        threshold: int,
        window_seconds: float,
        *,
        clock: Clock = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        if not isinstance(threshold, int) or threshold < 1:
            raise ValueError("threshold must be an integer of at least 1")
        if not (isinstance(window_seconds, int | float) and window_seconds > 0):
            raise ValueError("window_seconds must be positive")
        if max_callers < 1:
            raise ValueError("max_callers must be at least 1")
        self.threshold = threshold
        self.window_seconds = float(window_seconds)
        self.max_callers = max_callers
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._alerting: set[str] = set()

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_seconds:
            times.popleft()

    def _evict(self, now: float) -> None:
        # Runs before the current caller is (re)inserted, so it leaves room for one more.
        while self._seen:
            caller, times = next(iter(self._seen.items()))
            self._expire(times, now)
            if not times or len(self._seen) >= self.max_callers:
                del self._seen[caller]
                self._alerting.discard(caller)
            else:
                break

    def observe(self, caller: str) -> bool:
        """Record one lookup by ``caller``; True when this lookup raises an alert."""
        with self._lock:
            now = self._clock()
            times = self._seen.pop(caller, None)
            self._evict(now)
            if times is None:
                times = deque(maxlen=self.threshold + 1)
            times.append(now)
            self._expire(times, now)
            self._seen[caller] = times
            over = len(times) > self.threshold
            if not over:
                self._alerting.discard(caller)
                return False
            if caller in self._alerting:
                return False
            self._alerting.add(caller)
            return True

    def count(self, caller: str) -> int:
        """Lookups by ``caller`` in the current window (capped at ``threshold + 1``)."""
        with self._lock:
            times = self._seen.get(caller)
            if times is None:
                return 0
            self._expire(times, self._clock())
            return len(times)


class WindowCap:
    """Hard cap per caller: at most ``limit`` granted calls in any ``window_seconds``.

    :meth:`acquire` grants a call (and records its time) while the caller has fewer than
    ``limit`` granted calls in the last ``window_seconds``; otherwise it refuses, saying when
    the oldest of them leaves the window and frees a slot. Refused calls are not recorded, so
    retrying does not push the slot further away. Exact, not an approximation: at most
    ``limit`` timestamps are kept per caller (memory is at most ``max_callers * limit``
    floats); a caller whose window is empty is forgotten.
    """

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        clock: Clock = time.monotonic,
        max_callers: int = 10_000,
    ) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError("limit must be an integer of at least 1")
        if not (
            isinstance(window_seconds, int | float)
            and math.isfinite(window_seconds)
            and window_seconds > 0
        ):
            raise ValueError("window_seconds must be a finite positive number")
        if max_callers < 1:
            raise ValueError("max_callers must be at least 1")
        self.limit = limit
        self.window_seconds = float(window_seconds)
        self.max_callers = max_callers
        self._clock = clock
        self._lock = threading.Lock()
        self._granted: OrderedDict[str, deque[float]] = OrderedDict()

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window_seconds:
            times.popleft()

    def _evict(self, now: float) -> None:
        # Runs before the current caller is (re)inserted, so it leaves room for one more.
        while self._granted:
            caller, times = next(iter(self._granted.items()))
            self._expire(times, now)
            if not times or len(self._granted) >= self.max_callers:
                del self._granted[caller]
            else:
                break

    def _wait(self, times: deque[float], now: float) -> float | None:
        """None when ``times`` (expired up to ``now``) leaves a slot, else the wait for one."""
        if len(times) < self.limit:
            return None
        # times[0] is inside the window (it was not expired), so the wait is in
        # (0, window]; the clamp only absorbs floating-point rounding at either end
        wait = times[0] + self.window_seconds - now
        return min(self.window_seconds, max(wait, 1e-9))

    def wait(self, caller: str) -> float | None:
        """What :meth:`acquire` would answer now, granting nothing."""
        with self._lock:
            times = self._granted.get(caller)
            if not times:
                return None
            now = max(self._clock(), times[-1])
            self._expire(times, now)
            return self._wait(times, now)

    def acquire(self, caller: str) -> float | None:
        """Grant one call to ``caller``: None when granted, else seconds until a slot frees."""
        with self._lock:
            now = self._clock()
            times = self._granted.pop(caller, None)
            self._evict(now)
            if times is None:
                times = deque(maxlen=self.limit)
            elif times:
                now = max(now, times[-1])  # a clock going backwards must not reorder the window
            self._expire(times, now)
            self._granted[caller] = times  # most recently seen goes last
            wait = self._wait(times, now)
            if wait is None:
                times.append(now)
            return wait

    def count(self, caller: str) -> int:
        """Granted calls by ``caller`` in the current window."""
        with self._lock:
            times = self._granted.get(caller)
            if times is None:
                return 0
            self._expire(times, self._clock())
            return len(times)

    def tracked_callers(self) -> int:
        """How many callers are held in memory right now."""
        with self._lock:
            return len(self._granted)


Limit = RateLimiter | WindowCap


class AllOrNothing:
    """Several limits charged together: a call is granted by every one or charged to none.

    :meth:`acquire` takes ``(limit, caller)`` pairs (a budget and whom it is kept for, say a
    node's hourly cap and a person's share of it), asks each what it would answer without
    charging it, and only when none refuses takes one from each. A refusal returns every
    limit's wait (None for those that would have granted), so the caller can say which
    refused and how long until all could grant (the largest wait). The check and the charge
    are one step under this object's lock, so the limits it is given must be charged only
    through it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def acquire(self, charges: Sequence[tuple[Limit, str]]) -> tuple[float | None, ...] | None:
        """None when every limit granted (each charged once), else each limit's wait."""
        with self._lock:
            waits = tuple(limit.wait(caller) for limit, caller in charges)
            if any(wait is not None for wait in waits):
                return waits
            for limit, caller in charges:
                if limit.acquire(caller) is not None:  # pragma: no cover - checked just above
                    raise RuntimeError("a limit refused a charge it had just allowed")
            return None


class RecentAnswers:
    """Which references each person's lookups returned, for ``window_seconds`` after.

    :meth:`record` notes the (agency, reference) pairs one lookup by ``person`` returned;
    :meth:`holder_of` says which agency holds ``reference`` if a lookup by ``person`` returned
    it within the window, else None. A reference returned again starts its window afresh.
    At most ``max_entries`` (person, reference) pairs are kept: the oldest are forgotten first
    (expired ones as they come to the front), which can only refuse a disclosure, never allow
    one.
    """

    def __init__(
        self,
        window_seconds: float,
        *,
        clock: Clock = time.monotonic,
        max_entries: int = 200_000,
    ) -> None:
        if not (
            isinstance(window_seconds, int | float)
            and math.isfinite(window_seconds)
            and window_seconds > 0
        ):
            raise ValueError("window_seconds must be a finite positive number")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.window_seconds = float(window_seconds)
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._seen:
            _, (_, when) = next(iter(self._seen.items()))
            if when > now - self.window_seconds and len(self._seen) <= self.max_entries:
                break
            self._seen.popitem(last=False)

    def record(self, person: str, answers: Iterable[tuple[str, str]]) -> None:
        """Note that a lookup by ``person`` returned each (agency, reference) of ``answers``."""
        with self._lock:
            now = self._clock()
            for agency, reference in answers:
                key = (person, reference)
                self._seen.pop(key, None)
                self._seen[key] = (agency, now)  # most recent goes last
            self._expire(now)

    def holder_of(self, person: str, reference: str) -> str | None:
        """The agency of ``reference`` if a lookup by ``person`` returned it within the window."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            held = self._seen.get((person, reference))
            return None if held is None else held[0]

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
