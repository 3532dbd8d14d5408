"""The console's record of what each staff member did: their lookups and disclosures.

"My activity" reads it. It holds, per entry: the staff member's name, the time, the kind
(lookup or disclosure), the purpose code, the priority (disclosures), the outcome, the
agencies involved, the node's lookup or disclosure id, and the names of the released and
withheld fields — never an identifier value and never the staff member's note (the note and
the full audit trail are in the node's audit log). One SQLite file, written as each action
completes; it is a convenience for staff, not the audit record: its journal is WAL with
``synchronous=NORMAL`` (an entry survives the console process dying; a power cut may lose the
last few, which the node's audit log still holds), so writing an entry costs no ``fsync`` on
the request's path.

"My activity" reads a person's entries a page at a time, newest first, by keyset on the
entry's ``id`` over the ``activity_by_person (person, id)`` index: a page costs its own rows,
however many entries the file holds.
"""

from __future__ import annotations

import datetime
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PAGE_SIZE", "Activity", "ActivityLog", "ActivityPage"]

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
);
CREATE INDEX IF NOT EXISTS activity_by_person ON activity (person, id)
"""
PAGE_SIZE = 25


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


@dataclass(frozen=True)
class ActivityPage:
    """One page of a person's entries, newest first; ``older`` is the ``before`` of the next
    page (0: this is the last)."""

    entries: list[Activity]
    older: int


_NO_ID = 2**63 - 1  # above every entry id: "from the newest"


class ActivityLog:
    """Append and read staff activity in one SQLite file (thread-safe)."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self._db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)

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

    def page(self, person: str, before: int = 0, limit: int = PAGE_SIZE) -> ActivityPage:
        """Up to ``limit`` of ``person``'s entries older than entry ``before`` (0: from the
        newest), newest first, and the ``before`` of the next (older) page, 0 when none."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, at, kind, purpose, outcome, agencies, action_id, priority, released, "
                "withheld FROM activity WHERE person = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (person, int(before) if before > 0 else _NO_ID, int(limit) + 1),
            ).fetchall()

        def split(text: str) -> tuple[str, ...]:
            return tuple(part for part in text.split(",") if part)

        entries = [
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
                _id,
                at,
                kind,
                purpose,
                outcome,
                agencies,
                action_id,
                priority,
                released,
                withheld,
            ) in rows[:limit]
        ]
        older = int(rows[limit - 1][0]) if len(rows) > limit else 0
        return ActivityPage(entries, older)

    def close(self) -> None:
        with self._lock:
            self._db.close()
