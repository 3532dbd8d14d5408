"""The one way a service refuses a caller over its limits and alerts on enumeration.

Role: a node's ``Lookup`` and ``Disclose`` and the matcher's ``Match`` each ask their limits
first (a :class:`~server.common.ratelimit.RateLimiter`, or the matcher's charged set of
limits), which give a retry-after (or None), and then call :meth:`Watch.check`: the attempt
counts towards the :class:`~server.common.ratelimit.EnumerationGuard` (refused or not), an
alert writes one audit entry (``<count_field>`` in the window, the threshold) and a warning
naming the caller, and a refusal raises
:class:`~server.common.status.RateLimitedError` (``RESOURCE_EXHAUSTED`` with
``retry-after-s``) after the caller's ``refuse`` hook counted it. :func:`outcome_of` is the
audit outcome word of a failed call.

No identifier value reaches the log or the audit entry: identity names, agencies and counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc

from linkage.errors import JigsawError
from server.common.audit import AuditLog
from server.common.ratelimit import EnumerationGuard
from server.common.status import RateLimitedError, status_for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watch:
    """An enumeration guard and the alert it writes: audit ``action`` with the caller's
    ``count_field`` in the window and the threshold (and ``extra`` details), and a warning
    (``warning`` with the actor for its one ``%s``)."""

    guard: EnumerationGuard
    audit: AuditLog
    action: str
    count_field: str
    warning: str
    extra: Mapping[str, str | int] = field(default_factory=dict)

    def check(
        self,
        key: str,
        retry_after: float | None,
        *,
        actor: str,
        details: Mapping[str, str | int],
        refuse: Callable[[], None] | None = None,
    ) -> None:
        """Count an attempt of ``key`` and alert once per burst; then,
        when a limit refused it (``retry_after`` not None), call ``refuse`` and raise."""
        if self.guard.observe(key):
            logger.warning(self.warning, actor)
            self.audit.append(
                actor=actor,
                action=self.action,
                outcome="alert",
                details={
                    **details,
                    self.count_field: self.guard.count(key),
                    "threshold": self.guard.threshold,
                    **self.extra,
                },
            )
        if retry_after is not None:
            if refuse is not None:
                refuse()
            raise RateLimitedError(retry_after)


def outcome_of(exc: BaseException) -> str:
    """Audit outcome word for a failed call: the status code name, lower case; a refusal by a
    rate limit is "rate_limited"."""
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    if isinstance(exc, JigsawError):
        code: grpc.StatusCode = status_for(exc)[0]
        return str(code.name).lower()
    return "error"


__all__ = ["Watch", "outcome_of"]
