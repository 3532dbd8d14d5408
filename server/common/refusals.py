"""Refused calls counted per identity and written to an audit log as one entry per interval.

Role: a flood of refused calls (role, rate limit, malformed) must neither fill a disk nor go
unseen. Servers call :meth:`RefusalTally.count` for each refused call; every
:data:`REFUSAL_INTERVAL_S` a writer thread appends one ``refused`` entry per identity (and
person acted for) with the count per kind (``<action>.<reason>``) and the interval's length.

Invariants: every counted call is in exactly one entry; at most :data:`MAX_REFUSED_ACTORS`
identities are counted apart per interval, the rest together under :data:`OTHER_ACTORS`;
:meth:`RefusalTally.close` writes what was counted since the last entry, before the log
closes. No identifier value is counted: identities are certificate names.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from server.common.audit import AuditIntegrityError, AuditLog

logger = logging.getLogger(__name__)


#: Seconds a :class:`RefusalTally` counts before it writes its entries.
REFUSAL_INTERVAL_S = 60.0
#: Identities one interval counts apart; further ones are counted together.
MAX_REFUSED_ACTORS = 1000
OTHER_ACTORS = "(other identities)"


class RefusalTally:
    """Refused calls counted per identity, written as one ``refused`` entry per identity per
    interval (module docstring); thread-safe. :meth:`close` writes what was counted."""

    def __init__(
        self,
        log: AuditLog,
        *,
        interval_s: float = REFUSAL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], dict[str, int]] = {}
        self._started = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-refusals", daemon=True)
        self._thread.start()

    def count(self, actor: str, action: str, reason: str, *, on_behalf_of: str = "") -> None:
        """Count one call of ``action`` by ``actor`` (for ``on_behalf_of``, when a node acts
        for a person) refused for ``reason`` (a word)."""
        with self._lock:
            key = (actor, on_behalf_of)
            if key not in self._counts and len(self._counts) >= MAX_REFUSED_ACTORS:
                key = (OTHER_ACTORS, "")
            kinds = self._counts.setdefault(key, {})
            kind = f"{action}.{reason}"
            kinds[kind] = kinds.get(kind, 0) + 1

    def flush(self) -> int:
        """Write one entry per identity counted since the last flush; the entries written."""
        with self._lock:
            counts, self._counts = self._counts, {}
            now = self._clock()
            seconds, self._started = max(0, round(now - self._started)), now
        for (actor, on_behalf_of), kinds in sorted(counts.items()):
            person = {"on_behalf_of": on_behalf_of} if on_behalf_of else {}
            self._log.append(
                actor=actor,
                action="refused",
                outcome="refused",
                details={
                    "refused": sum(kinds.values()),
                    "interval_seconds": seconds,
                    **person,
                    **kinds,
                },
            )
        return len(counts)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.flush()
            except (AuditIntegrityError, ValueError) as exc:
                logger.error("audit: refused calls could not be written (%s)", exc)

    def close(self) -> None:
        """Stop the interval writer and write what was counted since (before the log closes)."""
        self._stop.set()
        self._thread.join()
        self.flush()
