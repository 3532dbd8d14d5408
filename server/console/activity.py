"""The console's record of what each staff member did: their lookups and disclosures.

"My activity" reads it. It holds, per entry: the staff member's name, the time, the kind
(lookup or disclosure), the purpose code, the priority (disclosures), the outcome, the
agencies involved, the node's lookup or disclosure id, and the names of the released and
withheld fields — never an identifier value and never the staff member's note (the note and
the full audit trail are in the node's audit log). One SQLite file, written as each action
completes; it is a convenience for staff, not the audit record.
"""

from __future__ import annotations

import datetime
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Activity", "ActivityLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS activity (
    id INTEGER PRIMARY KEY,
    person TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    purpose TEXT NOT NULL,
    priority TEXT NOT NULL,
    outcome TEXT NOT NULL,
    agencies TEXT NOT NULL,
    action_id TEXT NOT NULL,
    released TEXT NOT NULL,
    withheld TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Activity:
    """One lookup or disclosure of one staff member, without identifiers."""

    at: datetime.datetime
    kind: str
    purpose: str
    outcome: str
    agencies: tuple[str, ...] = ()
    action_id: str = ""
    priority: str = ""
    released: tuple[str, ...] = ()
    withheld: tuple[str, ...] = ()


class ActivityLog:
    """Append and read staff activity in one SQLite file (thread-safe)."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        with self._lock, self._db:
            self._db.execute(_SCHEMA)

    def add(self, person: str, entry: Activity) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO activity (person, at, kind, purpose, priority, outcome, agencies, "
                "action_id, released, withheld) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    person,
                    entry.at.isoformat(),
                    entry.kind,
                    entry.purpose,
                    entry.priority,
                    entry.outcome,
                    ",".join(entry.agencies),
                    entry.action_id,
                    ",".join(entry.released),
                    ",".join(entry.withheld),
                ),
            )

    def of(self, person: str, limit: int = 100) -> Sequence[Activity]:
        """``person``'s latest entries, newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT at, kind, purpose, outcome, agencies, action_id, priority, released, "
                "withheld FROM activity WHERE person = ? ORDER BY id DESC LIMIT ?",
                (person, limit),
            ).fetchall()

        def split(text: str) -> tuple[str, ...]:
            return tuple(part for part in text.split(",") if part)

        return [
            Activity(
                at=datetime.datetime.fromisoformat(at),
                kind=kind,
                purpose=purpose,
                outcome=outcome,
                agencies=split(agencies),
                action_id=action_id,
                priority=priority,
                released=split(released),
                withheld=split(withheld),
            )
            for (
                at,
                kind,
                purpose,
                outcome,
                agencies,
                action_id,
                priority,
                released,
                withheld,
            ) in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._db.close()
