"""The matcher's durable store: published encodings, the fitted model and batch-link results.

Role: every ``Publish`` message is committed here (one SQLite transaction per message) before
it is applied to the in-memory :class:`~linkage.index.MatchIndex`, and at start the index is
rebuilt from here. ``Withdraw`` deletes here first. ``Link`` results and the fitted
Fellegi-Sunter model are kept here too. Tables and the payload byte layout:
``proto/FORMATS.md`` ("Matcher store").

Invariants:

* nothing here is an identifier value: encodings, opaque references, agency names,
  fingerprints and counts only;
* a store made for another schema fingerprint or key version is refused
  (:class:`StoreMismatchError`, which names both values: they are not identifiers);
* forms replace each other whole: for every record an :meth:`MatcherStore.upsert` touches, it
  deletes, in the same transaction, the record's stored forms the call does not carry and,
  when the record now comes as forms, the record's own row (and the reverse); so all the forms
  of a record come in one call, and the references deleted are returned
  (``UpsertCounts.removed``) for the index to drop too. :meth:`MatcherStore.delete` deletes a
  record's forms with it;
* a link result's clusters and its "complete" status are written in one transaction; a run
  found "running" at open is marked "abandoned"; only "complete" results are readable.

Crash safety: each :meth:`MatcherStore.upsert` / :meth:`MatcherStore.delete` call is one
transaction (WAL, ``synchronous=FULL``), so a ``kill -9`` loses only calls not yet committed;
the node re-sends whatever it had not seen acknowledged, and the upsert (keyed by agency and
reference, "unchanged" when the payload is byte-identical) makes that harmless.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from linkage.encode import EncodedBatch
from linkage.errors import IncompatibleEncodingError, JigsawError
from linkage.schema import Schema
from server.matcher.results import LinkResultInfo, LinkResults, StoredCluster

PAYLOAD_FORMAT = 1
DEFAULT_MODEL_NAME = "default"
_LE_U64 = np.dtype("<u8")
_SQL_CHUNK = 500  # references per IN (...) query, below SQLite's variable limit

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS encodings (
    agency TEXT NOT NULL,
    reference TEXT NOT NULL,
    payload BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (agency, reference)
);
CREATE TABLE IF NOT EXISTS forms (
    agency TEXT NOT NULL,
    reference TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (agency, reference)
);
CREATE INDEX IF NOT EXISTS forms_by_record ON forms (agency, record);
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, json TEXT NOT NULL, updated_at TEXT);
CREATE TABLE IF NOT EXISTS link_results (
    result_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed', 'abandoned')),
    min_probability REAL NOT NULL,
    total_records INTEGER NOT NULL DEFAULT 0,
    total_clusters INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS link_clusters (
    result_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    cluster TEXT NOT NULL,
    PRIMARY KEY (result_id, ordinal)
);
"""


class MatcherStoreError(JigsawError):
    """The matcher store is unusable (corrupt payload, unknown format)."""


class StoreMismatchError(IncompatibleEncodingError):
    """The store was made for another schema fingerprint or key version."""


@dataclass(frozen=True)
class UpsertCounts:
    """Outcome of one upsert: counts, the batch rows whose stored payload changed, and the
    references of the rows it deleted (forms, or records' own rows, replaced by the call)."""

    inserted: int
    replaced: int
    unchanged: int
    changed_rows: tuple[int, ...]
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Deleted:
    """Outcome of one delete: how many of the given records were held (as themselves or as
    forms), and the references of every row deleted (records' own rows and their forms)."""

    withdrawn: int
    removed: tuple[str, ...]


class StoredChunk(NamedTuple):
    """Rows of one agency from :meth:`MatcherStore.iter_encodings`, row-aligned;
    ``form_of[i]`` is "" for a record published as itself, else its record's reference."""

    agency: str
    references: list[str]
    batch: EncodedBatch
    form_of: list[str]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------------------ payloads


def payload_length(schema: Schema) -> int:
    """Bytes in one payload of ``schema`` (proto/FORMATS.md, "Matcher store")."""
    n_fields = len(schema.fields)
    return (
        1
        + (n_fields + 7) // 8
        + sum(spec.published_words * 8 for spec in schema.fields)
        + schema.published_record_words * 8
        + 8 * len(schema.blocking)
        + 8 * len(schema.salt_sources)
    )


def _le_bytes(words: NDArray[np.uint64]) -> NDArray[np.uint8]:
    rows = words.shape[0]
    return np.ascontiguousarray(words, dtype=_LE_U64).view(np.uint8).reshape(rows, -1)


def pack_payloads(batch: EncodedBatch, schema: Schema) -> list[bytes]:
    """One payload per row of ``batch`` (format in the module docstring)."""
    n = len(batch)
    if n == 0:
        return []
    present = np.asarray(batch.field_present, dtype=bool).reshape(n, len(schema.fields))
    parts: list[NDArray[np.uint8]] = [
        np.full((n, 1), PAYLOAD_FORMAT, dtype=np.uint8),
        np.packbits(present, axis=1, bitorder="little").reshape(n, -1),
    ]
    for f, filters in enumerate(batch.field_filters):
        row_bytes = _le_bytes(filters).copy()
        row_bytes[~present[:, f]] = 0
        parts.append(row_bytes)
    parts.append(_le_bytes(batch.record_filters))
    parts.append(_le_bytes(batch.block_keys))
    parts.append(_le_bytes(batch.salt_tags))
    table = np.concatenate(parts, axis=1)
    width = payload_length(schema)
    if table.shape[1] != width:
        raise MatcherStoreError(
            f"payload: expected {width} bytes per record for this schema, got {table.shape[1]}"
        )
    data = table.tobytes()
    return [data[i * width : (i + 1) * width] for i in range(n)]


def unpack_payloads(payloads: Sequence[bytes], schema: Schema, *, key_version: int) -> EncodedBatch:
    """The :class:`EncodedBatch` of ``payloads`` (inverse of :func:`pack_payloads`)."""
    width = payload_length(schema)
    n = len(payloads)
    for i, payload in enumerate(payloads):
        if len(payload) != width or payload[0] != PAYLOAD_FORMAT:
            raise MatcherStoreError(
                f"payload {i}: expected {width} bytes in format {PAYLOAD_FORMAT}"
            )
    table = np.frombuffer(b"".join(payloads), dtype=np.uint8).reshape(n, width)
    n_fields = len(schema.fields)
    offset = 1
    bitmap_bytes = (n_fields + 7) // 8
    present = np.unpackbits(table[:, offset : offset + bitmap_bytes], axis=1, bitorder="little")[
        :, :n_fields
    ].astype(bool)
    offset += bitmap_bytes

    def words(count: int) -> NDArray[np.uint64]:
        nonlocal offset
        chunk = np.ascontiguousarray(table[:, offset : offset + 8 * count])
        offset += 8 * count
        return np.ascontiguousarray(chunk.view(_LE_U64).astype(np.uint64).reshape(n, count))

    field_filters = tuple(words(spec.published_words) for spec in schema.fields)
    record_filters = words(schema.published_record_words)
    block_keys = words(len(schema.blocking))
    salt_tags = words(len(schema.salt_sources))
    return EncodedBatch(
        schema_fingerprint=schema.fingerprint(),
        key_version=key_version,
        field_names=schema.field_names,
        field_filters=field_filters,
        field_present=present,
        record_filters=record_filters,
        block_keys=block_keys,
        salt_tags=salt_tags,
    )


# ------------------------------------------------------------------------------ store


class MatcherStore:
    """The matcher's SQLite store (thread-safe: one connection behind a lock)."""

    def __init__(self, path: Path | str, *, schema: Schema, key_version: int) -> None:
        self.path = Path(path)
        self.schema = schema
        self.key_version = key_version
        self.fingerprint = schema.fingerprint()
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA_SQL)
            self._check_meta()
            self._links = LinkResults(self._conn, self._lock, self._transaction)
            self._links.abandon_running()
        except BaseException:
            self._conn.close()
            raise

    # -------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the body raises."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _check_meta(self) -> None:
        expected = {
            "schema_fingerprint": self.fingerprint,
            "key_version": str(self.key_version),
            "payload_format": str(PAYLOAD_FORMAT),
        }
        with self._transaction() as conn:
            stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if not stored:
                conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", expected.items())
                return
        problems = [
            f"{key} is {stored.get(key)!s}, this matcher serves {value}"
            for key, value in expected.items()
            if stored.get(key) != value
        ]
        if problems:
            raise StoreMismatchError(
                f"store {self.path.name} was made for other encodings: " + "; ".join(problems)
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -------------------------------------------------------------- encodings

    def upsert(
        self,
        agency: str,
        references: Sequence[str],
        batch: EncodedBatch,
        form_of: Sequence[str] | None = None,
    ) -> UpsertCounts:
        """Insert or replace ``batch`` (row i under ``references[i]``) in one transaction.

        A row whose payload is byte-identical to the stored one is "unchanged"; a reference
        repeated in the batch counts once (its last row wins). ``form_of[i]`` ("" or absent:
        a record published as itself) is the record row i is a form of; the forms and own
        rows this call replaces are deleted (module docstring) and listed in ``removed``.
        """
        if len(references) != len(batch):
            raise MatcherStoreError("references: expected one reference per encoded record")
        forms = [""] * len(references) if form_of is None else list(form_of)
        if len(forms) != len(references):
            raise MatcherStoreError("form_of: expected one entry per encoded record")
        if batch.schema_fingerprint != self.fingerprint or batch.key_version != self.key_version:
            raise IncompatibleEncodingError(
                "batch: schema fingerprint or key version differ from the store's"
            )
        payloads = pack_payloads(batch, self.schema)
        last_row = {reference: row for row, reference in enumerate(references)}
        record_of = {reference: forms[row] for reference, row in last_row.items()}
        if any(record in last_row for record in record_of.values() if record):
            raise MatcherStoreError(
                "form_of: a form must name a record that is not itself a row of the call"
            )
        # per record the call touches: the forms it carries (none for a record as itself)
        carried: dict[str, set[str]] = {}
        for reference, record in record_of.items():
            if record:
                carried.setdefault(record, set()).add(reference)
            else:
                carried.setdefault(reference, set())
        as_forms = [record for record, held in carried.items() if held]
        now = _now()
        inserted = replaced = unchanged = 0
        changed: list[int] = []
        writes: list[tuple[str, str, bytes, str]] = []
        with self._lock, self._transaction() as conn:
            existing = self._existing(conn, agency, list(last_row))
            for reference, row in last_row.items():
                old = existing.get(reference)
                if old is None:
                    inserted += 1
                elif old == payloads[row]:
                    unchanged += 1
                    continue
                else:
                    replaced += 1
                changed.append(row)
                writes.append((agency, reference, payloads[row], now))
            # one look at the forms table: the call's rows mapped as forms, and the stored
            # forms of the records it touches
            touching = self._forms_touching(conn, agency, [*last_row, *as_forms])
            mapped = {reference: record for reference, record in touching if reference in last_row}
            stale = list(
                dict.fromkeys(  # once each (two chunks may both find a form)
                    reference
                    for reference, record in touching
                    if record in carried
                    and reference not in carried[record]
                    and reference not in last_row
                )
            )
            stale_rows = sorted(set(self._references_held(conn, agency, stale + as_forms)))
            self._delete_rows(conn, "encodings", "reference", agency, stale_rows)
            self._delete_rows(conn, "forms", "reference", agency, stale)
            writes.sort()  # in key order, the B-tree pages of one message are visited once each
            conn.executemany(
                "INSERT INTO encodings (agency, reference, payload, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (agency, reference) DO UPDATE SET "
                "payload = excluded.payload, updated_at = excluded.updated_at",
                writes,
            )
            self._write_form_map(conn, agency, record_of, mapped)
        return UpsertCounts(
            inserted, replaced, unchanged, tuple(sorted(changed)), tuple(stale_rows)
        )

    def _write_form_map(
        self,
        conn: sqlite3.Connection,
        agency: str,
        record_of: Mapping[str, str],
        mapped: Mapping[str, str],
    ) -> None:
        """Make the forms table say ``record_of`` for these references ("" = not a form),
        writing only what differs from what it says (``mapped``: its rows for them)."""
        unmapped = [r for r, record in record_of.items() if not record and r in mapped]
        self._delete_rows(conn, "forms", "reference", agency, unmapped)
        conn.executemany(
            "INSERT INTO forms (agency, reference, record) VALUES (?, ?, ?) "
            "ON CONFLICT (agency, reference) DO UPDATE SET record = excluded.record",
            sorted(
                (agency, reference, record)
                for reference, record in record_of.items()
                if record and mapped.get(reference) != record
            ),
        )

    @staticmethod
    def _select_in(
        conn: sqlite3.Connection,
        columns: str,
        key: str,
        agency: str,
        values: Sequence[str] | Mapping[str, str],
        table: str = "forms",
    ) -> list[tuple[Any, ...]]:
        """``SELECT columns FROM table WHERE agency = ? AND key IN values``, chunked."""
        values = list(values)
        out: list[tuple[Any, ...]] = []
        for start in range(0, len(values), _SQL_CHUNK):
            chunk = values[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            out.extend(
                conn.execute(
                    f"SELECT {columns} FROM {table} WHERE agency = ? AND {key} IN ({marks})",
                    (agency, *chunk),
                ).fetchall()
            )
        return out

    @staticmethod
    def _forms_touching(
        conn: sqlite3.Connection, agency: str, keys: Sequence[str]
    ) -> list[tuple[str, str]]:
        """(reference, record) of every stored form whose reference or record is in ``keys``."""
        out: list[tuple[str, str]] = []
        for start in range(0, len(keys), _SQL_CHUNK):
            chunk = keys[start : start + _SQL_CHUNK]
            # numbered parameters: the chunk is bound once and read by every list; two
            # searches, not one "reference IN .. OR record IN ..", which SQLite answers by
            # reading all the agency's forms
            marks = ",".join(f"?{i + 2}" for i in range(len(chunk)))
            out.extend(
                conn.execute(
                    f"SELECT reference, record FROM forms WHERE agency = ?1 "
                    f"AND reference IN ({marks}) UNION ALL "
                    f"SELECT reference, record FROM forms WHERE agency = ?1 "
                    f"AND record IN ({marks}) AND reference NOT IN ({marks})",
                    (agency, *chunk),
                ).fetchall()
            )
        return out

    def _forms_of_records(
        self, conn: sqlite3.Connection, agency: str, records: Sequence[str]
    ) -> list[tuple[str, str]]:
        """(form reference, record) of every stored form of these records."""
        rows = self._select_in(conn, "reference, record", "record", agency, records)
        return [(str(reference), str(record)) for reference, record in rows]

    def _references_held(
        self, conn: sqlite3.Connection, agency: str, references: Sequence[str]
    ) -> list[str]:
        """Those of ``references`` that have a row in ``encodings``."""
        rows = self._select_in(
            conn, "reference", "reference", agency, references, table="encodings"
        )
        return [str(reference) for (reference,) in rows]

    @staticmethod
    def _delete_rows(
        conn: sqlite3.Connection, table: str, key: str, agency: str, values: Sequence[str]
    ) -> int:
        """``DELETE FROM table WHERE agency = ? AND key IN values``, chunked; rows deleted."""
        deleted = 0
        values = list(values)
        for start in range(0, len(values), _SQL_CHUNK):
            chunk = values[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            cursor = conn.execute(
                f"DELETE FROM {table} WHERE agency = ? AND {key} IN ({marks})", (agency, *chunk)
            )
            deleted += cursor.rowcount
        return deleted

    @staticmethod
    def _existing(conn: sqlite3.Connection, agency: str, references: list[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(references), _SQL_CHUNK):
            chunk = references[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT reference, payload FROM encodings WHERE agency = ? "
                f"AND reference IN ({marks})",
                (agency, *chunk),
            )
            found.update((reference, bytes(payload)) for reference, payload in rows)
        return found

    def delete(self, agency: str, references: Sequence[str]) -> Deleted:
        """Delete ``agency``'s records with these references, and their forms, in one
        transaction: how many of them were held, and every row reference deleted."""
        unique = list(dict.fromkeys(references))
        with self._lock, self._transaction() as conn:
            forms = self._forms_of_records(conn, agency, unique)
            rows = self._references_held(conn, agency, unique + [f for f, _ in forms])
            held = set(rows)
            withdrawn = {r for r in unique if r in held} | {
                record for form, record in forms if form in held
            }
            self._delete_rows(conn, "encodings", "reference", agency, rows)
            self._delete_rows(conn, "forms", "record", agency, unique)
            self._delete_rows(conn, "forms", "reference", agency, unique)
        return Deleted(withdrawn=len(withdrawn), removed=tuple(sorted(rows)))

    def iter_encodings(self, *, chunk_size: int = 10_000) -> Iterator[StoredChunk]:
        """Every stored row as :class:`StoredChunk` (agency, references, batch, form_of)
        chunks, one agency per chunk.

        Reads page by page (keyset pagination on the primary key), so it may run while other
        threads write; it is meant for rebuilding the index and the form map at start.
        """
        after = ("", "")
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT e.agency, e.reference, e.payload, COALESCE(f.record, '') "
                    "FROM encodings AS e LEFT JOIN forms AS f "
                    "ON f.agency = e.agency AND f.reference = e.reference "
                    "WHERE (e.agency, e.reference) > (?, ?) "
                    "ORDER BY e.agency, e.reference LIMIT ?",
                    (*after, chunk_size),
                ).fetchall()
            if not rows:
                return
            after = (rows[-1][0], rows[-1][1])
            start = 0
            while start < len(rows):
                agency = rows[start][0]
                end = start
                while end < len(rows) and rows[end][0] == agency:
                    end += 1
                group = rows[start:end]
                batch = unpack_payloads(
                    [bytes(r[2]) for r in group], self.schema, key_version=self.key_version
                )
                yield StoredChunk(agency, [r[1] for r in group], batch, [r[3] for r in group])
                start = end

    def counts_by_agency(self) -> dict[str, int]:
        """Stored records per agency."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT agency, COUNT(*) FROM encodings GROUP BY agency ORDER BY agency"
            ).fetchall()
        return {agency: int(count) for agency, count in rows}

    def count(self) -> int:
        """Stored records over all agencies."""
        return sum(self.counts_by_agency().values())

    # -------------------------------------------------------------- model

    def save_model(self, data: Mapping[str, Any], *, name: str = DEFAULT_MODEL_NAME) -> None:
        """Store a model's ``to_dict()`` form under ``name`` (replacing any previous one)."""
        text = json.dumps(data, sort_keys=True, allow_nan=False)
        with self._lock, self._transaction() as conn:
            conn.execute(
                "INSERT INTO models (name, json, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET json = excluded.json, "
                "updated_at = excluded.updated_at",
                (name, text, _now()),
            )

    def load_model(self, *, name: str = DEFAULT_MODEL_NAME) -> dict[str, Any] | None:
        """The stored model dict under ``name``, or None."""
        with self._lock:
            row = self._conn.execute("SELECT json FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        if not isinstance(data, dict):
            raise MatcherStoreError(f"model {name!r}: stored JSON is not an object")
        return data

    # -------------------------------------------------------------- link results

    def begin_link(self, *, min_probability: float) -> str:
        """Record the start of a link run; returns its new random result id."""
        return self._links.begin(min_probability)

    def finish_link(
        self, result_id: str, clusters: Sequence[StoredCluster], *, total_records: int
    ) -> None:
        """Write every cluster and mark the result complete, in one transaction."""
        if not self._links.finish(result_id, clusters, total_records):
            raise MatcherStoreError("link result: no running link with this result id")

    def fail_link(self, result_id: str) -> None:
        """Mark a running link result failed."""
        self._links.fail(result_id)

    def link_result(self, result_id: str) -> LinkResultInfo | None:
        """The row of a link result (any status), or None."""
        return self._links.info(result_id)

    def latest_link_result(self) -> LinkResultInfo | None:
        """The most recently finished complete link result, or None."""
        return self._links.latest()

    def link_clusters(self, result_id: str, *, offset: int, limit: int) -> list[StoredCluster]:
        """Clusters ``offset .. offset + limit - 1`` of a result, in ordinal order."""
        return self._links.clusters(result_id, offset, limit)
