"""The agency node's store: its raw records and their publication state, in one SQLite file.

Role: ``ingest`` writes records here, ``publish`` reads the records whose encodings the
matcher does not hold yet (and the deleted ones it must withdraw), the node servicer reads a
record by its opaque reference to answer ``Disclose``, and ``linked`` and ``quality`` keep
their results here. Raw identifiers live only in this file, on the agency's own machine.
Tables, ``meta`` keys and the content hash: ``proto/FORMATS.md`` ("Node store").

Invariants:

* a record's reference is assigned at first insert and kept for the record's life, so
  republishing replaces and never duplicates;
* a record is *pending publication* when it is not deleted and ``content_hash`` differs from
  ``published_hash``; *pending withdrawal* when it is deleted and was published; a deleted
  record that was never published is purged at once;
* the store and its WAL and shared-memory files are mode 0600 (set so when found wider), a
  directory created for it 0700; a store of another ``store_format`` than
  :data:`STORE_FORMAT_VERSION` is refused (:class:`StoreFormatError`: re-ingest into a new
  store).

Concurrency and crash safety: one connection (``check_same_thread=False``) guarded by a lock,
usable from gRPC's thread pool; WAL journal with ``synchronous=FULL``; every method that
writes does so in one transaction, so a process killed mid-ingest loses no committed row, and
a re-run upserts by ``local_id`` and never duplicates.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from linkage.errors import JigsawError

STORE_FORMAT_VERSION = "2"  # 2: canonical dates, postcodes, NHS numbers and sex
_IN_CHUNK = 500  # parameters per "IN (...)" query, below SQLite's limit

FieldValues = Mapping[str, str | None]

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS records (
    local_id TEXT PRIMARY KEY,
    reference TEXT UNIQUE NOT NULL,
    fields TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    published_hash TEXT,
    deleted INTEGER DEFAULT 0,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS linked (
    reference TEXT NOT NULL,
    agency TEXT NOT NULL,
    cluster_id TEXT NOT NULL,
    band INTEGER NOT NULL,
    PRIMARY KEY (reference, agency)
);
CREATE TABLE IF NOT EXISTS linked_records (
    position INTEGER PRIMARY KEY,
    reference TEXT UNIQUE NOT NULL
);
CREATE TABLE IF NOT EXISTS source_quality (
    source TEXT PRIMARY KEY,
    ingested_at TEXT NOT NULL,
    summary TEXT NOT NULL
);
"""


def content_hash(fields: FieldValues) -> str:
    """The content hash of a record's fields (proto/FORMATS.md, "Node store")."""
    canonical = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class UpsertCounts:
    """What one :meth:`NodeStore.upsert_many` call did."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class StoredRecord:
    """One record as held by the node."""

    local_id: str
    reference: str
    fields: dict[str, str | None]
    content_hash: str
    published: bool
    deleted: bool


@dataclass(frozen=True)
class PendingRecord:
    """A record pending publication; ``row`` is its store position (for paging only)."""

    row: int
    local_id: str
    reference: str
    fields: dict[str, str | None]
    content_hash: str


@dataclass(frozen=True)
class StoreCounts:
    """Record counts: live records, of which published and pending; deleted awaiting withdrawal."""

    records: int
    published: int
    pending: int
    deleted: int


class StoreFormatError(JigsawError):
    """The store was written in another format than this version reads."""


def _private_file(path: Path) -> None:
    """Create ``path`` (and a missing directory, 0700) readable by its owner only, or narrow
    an existing file's mode to 0600."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
        path.parent.chmod(0o700)  # mkdir's mode is narrowed by the umask, never widened
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)


class NodeStore:
    """The node's SQLite store (see the module docstring). Use as a context manager or close()."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        _private_file(self.path)
        self._conn = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._transaction():
                for statement in _SCHEMA_SQL.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('store_format', ?)",
                    (STORE_FORMAT_VERSION,),
                )
            for suffix in ("-wal", "-shm"):  # SQLite gives them the store's mode; make sure
                companion = self.path.with_name(self.path.name + suffix)
                if companion.exists():
                    companion.chmod(0o600)
        found = self.get_meta("store_format")
        if found != STORE_FORMAT_VERSION:
            self._conn.close()
            raise StoreFormatError(
                f"store {self.path}: format {found}, this version reads format "
                f"{STORE_FORMAT_VERSION} (re-ingest the sources into a new store)"
            )

    # ------------------------------------------------------------------ plumbing

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> NodeStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def upsert_many(self, rows: Iterable[tuple[str, FieldValues]]) -> UpsertCounts:
        """Insert or update records by local id, in one transaction.

        A new local id gets a fresh reference; a changed record keeps its reference and becomes
        pending publication again; a record marked deleted but present again is restored.
        """
        inserted = updated = unchanged = 0
        now = _now()
        with self._lock, self._transaction():
            conn = self._conn
            for local_id, fields in rows:
                stored = dict(fields)
                digest = content_hash(stored)
                found = conn.execute(
                    "SELECT content_hash, deleted FROM records WHERE local_id = ?", (local_id,)
                ).fetchone()
                if found is None:
                    conn.execute(
                        "INSERT INTO records(local_id, reference, fields, content_hash, "
                        "published_hash, deleted, updated_at) VALUES (?, ?, ?, ?, NULL, 0, ?)",
                        (local_id, _new_reference(conn), _to_json(stored), digest, now),
                    )
                    inserted += 1
                elif found[0] == digest and not found[1]:
                    unchanged += 1
                else:
                    conn.execute(
                        "UPDATE records SET fields = ?, content_hash = ?, deleted = 0, "
                        "updated_at = ? WHERE local_id = ?",
                        (_to_json(stored), digest, now, local_id),
                    )
                    updated += 1
        return UpsertCounts(inserted, updated, unchanged)

    def mark_deleted(self, local_ids: Iterable[str]) -> int:
        """Mark records for withdrawal (never-published ones are purged at once); returns count."""
        ids = list(local_ids)
        changed = 0
        now = _now()
        with self._lock, self._transaction():
            renumber = False
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                renumber = renumber or _linked_among(self._conn, "local_id", chunk)
                changed += self._conn.execute(
                    f"DELETE FROM records WHERE published_hash IS NULL AND local_id IN ({marks})",
                    chunk,
                ).rowcount
                changed += self._conn.execute(
                    f"UPDATE records SET deleted = 1, updated_at = ? "
                    f"WHERE deleted = 0 AND local_id IN ({marks})",
                    [now, *chunk],
                ).rowcount
            if renumber:  # a deleted record leaves the linked list, which closes up
                _number_linked(self._conn)
        return changed

    def mark_published_rows(self, records: Iterable[PendingRecord]) -> int:
        """Record that the matcher holds these records, read by :meth:`pending_publish_page`;
        returns rows touched. The hash recorded is the one read with the content sent, so a
        record changed since then stays pending.

        Each row is found by its store position and must still carry the same reference (a
        purged record's position can be reused by a new one): in store order the updates
        visit each table page once, with no lookup in the reference index.
        """
        with self._lock, self._transaction():
            cursor = self._conn.executemany(
                "UPDATE records SET published_hash = ? WHERE rowid = ? AND reference = ?",
                [(record.content_hash, record.row, record.reference) for record in records],
            )
            return cursor.rowcount

    def mark_withdrawn(self, references: Iterable[str]) -> int:
        """The matcher dropped these deleted records: purge them; returns rows purged."""
        refs = list(references)
        purged = 0
        with self._lock, self._transaction():
            for chunk in _chunks(refs):
                marks = ",".join("?" * len(chunk))
                purged += self._conn.execute(
                    f"DELETE FROM records WHERE deleted = 1 AND reference IN ({marks})", chunk
                ).rowcount
        return purged

    def reset_publication(self) -> int:
        """Mark every record unpublished (after a schema or key change); returns rows reset."""
        with self._lock, self._transaction():
            return self._conn.execute(
                "UPDATE records SET published_hash = NULL WHERE published_hash IS NOT NULL"
            ).rowcount

    def set_meta(self, key: str, value: str) -> None:
        with self._lock, self._transaction():
            self._conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ------------------------------------------------------------------ reads

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def pending_publish(self, limit: int) -> list[tuple[str, str, dict[str, str | None]]]:
        """Up to ``limit`` live records the matcher lacks: ``(local_id, reference, fields)``
        (the first page of :meth:`pending_publish_page`)."""
        return [(r.local_id, r.reference, r.fields) for r in self.pending_publish_page(0, limit)]

    def pending_publish_page(self, after_row: int, limit: int) -> list[PendingRecord]:
        """Up to ``limit`` live records the matcher lacks, stored after position ``after_row``.

        Keyset pagination on SQLite's rowid: a publisher passes the ``row`` of the last record
        of the previous page, so each page costs the rows it returns rather than a scan from
        the start of the table past everything already published. ``content_hash`` is read in
        the same statement as ``fields``, so it is the hash of exactly the content returned.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT rowid, local_id, reference, fields, content_hash FROM records "
                "WHERE rowid > ? AND deleted = 0 "
                "AND (published_hash IS NULL OR published_hash != content_hash) "
                "ORDER BY rowid LIMIT ?",
                (int(after_row), int(limit)),
            ).fetchall()
        return [
            PendingRecord(int(r[0]), str(r[1]), str(r[2]), json.loads(r[3]), str(r[4]))
            for r in rows
        ]

    def pending_withdraw(self) -> list[str]:
        """References of deleted records that were published (to send in Withdraw)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT reference FROM records WHERE deleted = 1 AND published_hash IS NOT NULL "
                "ORDER BY rowid"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def get_by_reference(self, reference: str) -> StoredRecord | None:
        """The record with this opaque reference, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT local_id, reference, fields, content_hash, published_hash, deleted "
                "FROM records WHERE reference = ?",
                (reference,),
            ).fetchone()
        if row is None:
            return None
        return StoredRecord(
            local_id=str(row[0]),
            reference=str(row[1]),
            fields=json.loads(row[2]),
            content_hash=str(row[3]),
            published=row[4] is not None and row[4] == row[3],
            deleted=bool(row[5]),
        )

    def counts(self) -> StoreCounts:
        """Live, published, pending and deleted-awaiting-withdrawal record counts."""
        with self._lock:
            row = self._conn.execute(
                "SELECT "
                "COALESCE(SUM(deleted = 0), 0), "
                "COALESCE(SUM(deleted = 0 AND published_hash = content_hash), 0), "
                "COALESCE(SUM(deleted = 1), 0) FROM records"
            ).fetchone()
        records, published, deleted = (int(v) for v in row)
        return StoreCounts(records, published, records - published, deleted)

    # ------------------------------------------------------------------ linked records

    def replace_linked(self, result_id: str, rows: Iterable[LinkedRow]) -> int:
        """Replace the linked records with ``rows`` of link result ``result_id``, in one
        transaction; a row whose reference the store does not hold as a live record is
        dropped. Returns the records (distinct references) kept."""
        with self._lock, self._transaction():
            conn = self._conn
            conn.execute("DELETE FROM linked")
            conn.executemany(
                "INSERT OR REPLACE INTO linked(reference, agency, cluster_id, band) "
                "SELECT ?, ?, ?, ? WHERE EXISTS "
                "(SELECT 1 FROM records WHERE reference = ? AND deleted = 0)",
                (
                    (row.reference, agency, row.cluster_id, int(band), row.reference)
                    for row in rows
                    for agency, band in row.agencies
                ),
            )
            for key, value in (("linked_result_id", result_id), ("linked_fetched_at", _now())):
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            return _number_linked(conn)

    def linked_count(self) -> int:
        """Live records with at least one linked agency (the last position of the list: the
        positions are dense, so this is one step down the table's key, at any size)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COALESCE(max(position), 0) FROM linked_records"
            ).fetchone()
        return int(row[0])

    def linked_page(self, after: int, limit: int) -> list[LinkedRow]:
        """Up to ``limit`` live linked records after list position ``after`` (0 = from the
        first), in store order, each with its local id and its other agencies (by name).

        Keyset pagination: positions run 1..:meth:`linked_count` without a gap, so position
        ``after`` is also the number of records before the page, and a page is one range of
        ``linked_records``' integer key, then a lookup per row by reference: its cost is the
        rows it returns, the same on the last page of a million records as on the first.
        """
        with self._lock:
            refs = self._conn.execute(
                "SELECT r.reference, r.local_id FROM linked_records lr "
                "JOIN records r ON r.reference = lr.reference "
                "WHERE lr.position > ? ORDER BY lr.position LIMIT ?",
                (int(after), int(limit)),
            ).fetchall()
            agencies: dict[str, list[tuple[str, str, int]]] = {}
            for chunk in _chunks([str(reference) for reference, _ in refs]):
                marks = ",".join("?" * len(chunk))
                for reference, agency, cluster_id, band in self._conn.execute(
                    "SELECT reference, agency, cluster_id, band FROM linked "
                    f"WHERE reference IN ({marks}) ORDER BY reference, agency",
                    chunk,
                ):
                    agencies.setdefault(str(reference), []).append(
                        (str(agency), str(cluster_id), int(band))
                    )
        return [
            LinkedRow(
                reference=str(reference),
                cluster_id=agencies[reference][0][1],
                agencies=tuple((a, b) for a, _, b in agencies[reference]),
                local_id=str(local_id),
            )
            for reference, local_id in refs
        ]

    def linked_without(self, field: str) -> tuple[int, int, int]:
        """Over live records: (records lacking a value of ``field``, of which linked to
        another agency; all linked records)."""
        path = _json_path(field)
        with self._lock:
            row = self._conn.execute(
                "SELECT COALESCE(SUM(json_extract(r.fields, ?) IS NULL), 0), "
                "COALESCE(SUM(json_extract(r.fields, ?) IS NULL AND l.reference IS NOT NULL), 0), "
                "COALESCE(SUM(l.reference IS NOT NULL), 0) "
                "FROM records r LEFT JOIN linked_records l "
                "ON l.reference = r.reference WHERE r.deleted = 0",
                (path, path),
            ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def missing_counts(self, fields: Sequence[str]) -> tuple[int, dict[str, int]]:
        """Live records, and of them how many lack a value of each of ``fields``."""
        if not fields:
            return self.counts().records, {}
        sums = ", ".join("COALESCE(SUM(json_extract(fields, ?) IS NULL), 0)" for _ in fields)
        with self._lock:
            row = self._conn.execute(
                f"SELECT count(*), {sums} FROM records WHERE deleted = 0",
                [_json_path(name) for name in fields],
            ).fetchone()
        return int(row[0]), {name: int(v) for name, v in zip(fields, row[1:], strict=True)}

    # ------------------------------------------------------------------ data quality

    def save_source_quality(self, source: str, summary: str) -> None:
        """Keep the last ingest's data-quality summary (JSON text) of ``source``."""
        with self._lock, self._transaction():
            self._conn.execute(
                "INSERT INTO source_quality(source, ingested_at, summary) VALUES (?, ?, ?) "
                "ON CONFLICT(source) DO UPDATE SET ingested_at = excluded.ingested_at, "
                "summary = excluded.summary",
                (source, _now(), summary),
            )

    def source_quality(self) -> list[tuple[str, str, str]]:
        """(source, ingested_at, summary JSON) of every source ingested, by source name."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT source, ingested_at, summary FROM source_quality ORDER BY source"
            ).fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def linked_references(self) -> set[str]:
        """References of the live linked records."""
        with self._lock:
            rows = self._conn.execute("SELECT reference FROM linked_records").fetchall()
        return {str(r[0]) for r in rows}


@dataclass(frozen=True)
class LinkedRow:
    """One of the node's records known to other agencies: its reference, cluster, and
    (agency, band number) per other agency; ``local_id`` is filled when read back."""

    reference: str
    cluster_id: str
    agencies: tuple[tuple[str, int], ...]
    local_id: str = ""


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")


def _number_linked(conn: sqlite3.Connection) -> int:
    """Give every live record in ``linked`` its list position, 1..n in store order with no
    gap (``linked_records``, rebuilt whole; rows of records no longer live are dropped from
    ``linked`` first); returns n. Inside the caller's transaction."""
    conn.execute(
        "DELETE FROM linked WHERE NOT EXISTS "
        "(SELECT 1 FROM records r WHERE r.reference = linked.reference AND r.deleted = 0)"
    )
    conn.execute("DELETE FROM linked_records")
    conn.execute(
        "INSERT INTO linked_records(position, reference) "
        "SELECT row_number() OVER (ORDER BY r.rowid), r.reference FROM records r "
        "WHERE r.deleted = 0 AND r.reference IN (SELECT reference FROM linked)"
    )
    return int(conn.execute("SELECT count(*) FROM linked_records").fetchone()[0])


def _linked_among(conn: sqlite3.Connection, column: str, values: Sequence[str]) -> bool:
    """Whether any record whose ``column`` (``local_id`` or ``reference``) is in ``values``
    is in the linked list (one index lookup per value)."""
    marks = ",".join("?" * len(values))
    found = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM records r JOIN linked_records lr "
        f"ON lr.reference = r.reference WHERE r.{column} IN ({marks}))",
        list(values),
    ).fetchone()
    return bool(found[0])


def _new_reference(conn: sqlite3.Connection) -> str:
    """A fresh random reference not used by any record (collisions are ~2^-64 likely)."""
    while True:
        reference = secrets.token_hex(16)
        taken = conn.execute("SELECT 1 FROM records WHERE reference = ?", (reference,))
        if taken.fetchone() is None:
            return reference


def _json_path(field: str) -> str:
    """The SQLite JSON path of a key of a record's fields object."""
    return '$."' + field.replace('"', '\\"') + '"'


def _to_json(fields: Mapping[str, str | None]) -> str:
    return json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield list(items[start : start + _IN_CHUNK])
