"""The limits ``Match`` applies per calling node and per person it acts for.

Role: the matcher limits each calling node identity itself, because the node's own per-staff
limits are set by the node's operator and do not bind a node that holds the linkage secret
and probes the matcher with guessed identities; inside a node's budget each person it acts
for (``on_behalf_of``) gets at most ``person_share`` of it, so one person cannot lock
colleagues out. One Match is one lookup, counted once whatever its rows.

Contract (:meth:`MatchLimits.check`, before any decoding or index work): a token of the
node's and of the person's :class:`~server.common.ratelimit.RateLimiter` and a slot of the
node's and the person's hourly :class:`~server.common.ratelimit.WindowCap`, all or nothing (a
refused call is charged to none). Every call counts towards the node's
:class:`~server.common.ratelimit.EnumerationGuard`, answered or refused by any limit (over
the hourly threshold: one "enumeration_alert" audit entry and a warning naming the caller),
so a flood of refused calls is seen as one. A refusal is
:class:`~server.common.status.RateLimitedError` with the longest wait of the limits that
refused. Publish, Withdraw and Link are not lookups and are not limited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from server.common.audit import AuditLog
from server.common.guard import Watch
from server.common.ratelimit import AllOrNothing, Clock, EnumerationGuard, RateLimiter, WindowCap
from server.matcher.config import MatchLimitConfig

#: The sliding window of the enumeration alert and of the hard caps on Match calls.
MATCH_WINDOW_S = 3600.0


@dataclass(frozen=True)
class MatchLimits:
    """The limits ``Match`` applies per calling node identity (``identity.name``) and, inside
    them, per person the node acts for (keyed by :meth:`person`): pace (token buckets), an
    enumeration alert per node, and hourly caps. Every bucket and cap is charged through
    ``charge`` (all or nothing)."""

    rate: RateLimiter
    guard: EnumerationGuard
    cap: WindowCap
    person_rate: RateLimiter
    person_cap: WindowCap
    charge: AllOrNothing = field(default_factory=AllOrNothing)

    @classmethod
    def from_config(cls, limits: MatchLimitConfig, *, clock: Clock = time.monotonic) -> MatchLimits:
        """Buckets, alert and hourly caps as ``[match_limits]`` sets them, on ``clock``."""
        return cls(
            rate=RateLimiter(limits.matches_per_minute, limits.burst, clock=clock),
            guard=EnumerationGuard(limits.enumeration_alert_per_hour, MATCH_WINDOW_S, clock=clock),
            cap=WindowCap(limits.max_matches_per_hour, MATCH_WINDOW_S, clock=clock),
            person_rate=RateLimiter(
                limits.person_matches_per_minute, limits.person_burst, clock=clock
            ),
            person_cap=WindowCap(limits.person_matches_per_hour, MATCH_WINDOW_S, clock=clock),
        )

    @staticmethod
    def person(caller: str, on_behalf_of: str) -> str:
        """The key of one person at one node (names hold no control character)."""
        return f"{caller}\x00{on_behalf_of}"

    def check(self, audit: AuditLog, caller: str, agency: str, person: str) -> None:
        """Count one Match attempt of ``caller`` (a node) for ``person`` towards the alert
        (once per burst), then charge it, or raise RateLimitedError charging none (module
        docstring)."""
        key = self.person(caller, person)
        waits = self.charge.acquire(
            [
                (self.rate, caller),
                (self.person_rate, key),
                (self.cap, caller),
                (self.person_cap, key),
            ]
        )
        watch = Watch(
            self.guard,
            audit,
            action="enumeration_alert",
            count_field="matches_in_window",
            warning="enumeration alert: caller %s over the match threshold",
            extra={"window_seconds": int(MATCH_WINDOW_S)},
        )
        watch.check(
            caller,
            None if waits is None else max(wait for wait in waits if wait is not None),
            actor=caller,
            details={"caller_agency": agency},
        )


__all__ = ["MATCH_WINDOW_S", "MatchLimits"]
