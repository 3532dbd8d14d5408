"""Batch-link results in the matcher's store: the ``link_results`` and ``link_clusters`` tables.

Role: :class:`LinkResults` is the part of :class:`~server.matcher.store.MatcherStore` that
keeps what ``Link`` produced, on the store's connection, lock and transactions (the tables and
the cluster JSON are described in :mod:`server.matcher.store`). A run is "running" from
:meth:`LinkResults.begin`, "complete" once :meth:`LinkResults.finish` wrote its clusters,
"failed" on an error and "abandoned" when found running as the store opens (the process died
mid-link).

Invariants: a result's clusters and its "complete" status are written in one transaction, so
a crash mid-link never leaves half a result visible; only complete results are read.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class StoredEdge:
    """One scored pair inside a cluster; ``evidence`` is (level label, weight) per field."""

    left: int
    right: int
    probability: float
    evidence: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class StoredCluster:
    """One cluster of a link result: its members (agency, reference) and its edges."""

    members: tuple[tuple[str, str], ...]
    edges: tuple[StoredEdge, ...]


@dataclass(frozen=True)
class LinkResultInfo:
    """The row of one link result."""

    result_id: str
    created_at: str
    status: str
    min_probability: float
    total_records: int
    total_clusters: int


class LinkResults:
    """The link results of one store, on its connection (``lock`` guards it; ``transaction``
    is the store's BEGIN IMMEDIATE ... COMMIT)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        lock: threading.Lock,
        transaction: Callable[[], contextlib.AbstractContextManager[sqlite3.Connection]],
    ) -> None:
        self._conn = conn
        self._lock = lock
        self._transaction = transaction

    def abandon_running(self) -> None:
        """Mark every run still "running" abandoned (called as the store opens)."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE link_results SET status = 'abandoned', finished_at = ? "
                "WHERE status = 'running'",
                (_now(),),
            )

    def begin(self, min_probability: float) -> str:
        """Record the start of a link run; returns its new random result id."""
        result_id = secrets.token_hex(16)
        with self._lock, self._transaction() as conn:
            conn.execute(
                "INSERT INTO link_results (result_id, created_at, status, min_probability) "
                "VALUES (?, ?, 'running', ?)",
                (result_id, _now(), float(min_probability)),
            )
        return result_id

    def finish(self, result_id: str, clusters: Sequence[StoredCluster], total_records: int) -> bool:
        """Write every cluster and mark the run complete, in one transaction; False (nothing
        written) when no run of this id is running."""
        rows = [
            (result_id, ordinal, _cluster_json(cluster)) for ordinal, cluster in enumerate(clusters)
        ]
        with self._lock, self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE link_results SET status = 'complete', finished_at = ?, "
                "total_records = ?, total_clusters = ? WHERE result_id = ? AND status = 'running'",
                (_now(), int(total_records), len(rows), result_id),
            )
            if cursor.rowcount != 1:
                return False
            conn.executemany(
                "INSERT INTO link_clusters (result_id, ordinal, cluster) VALUES (?, ?, ?)", rows
            )
        return True

    def fail(self, result_id: str) -> None:
        """Mark a running link result failed."""
        with self._lock, self._transaction() as conn:
            conn.execute(
                "UPDATE link_results SET status = 'failed', finished_at = ? "
                "WHERE result_id = ? AND status = 'running'",
                (_now(), result_id),
            )

    def info(self, result_id: str) -> LinkResultInfo | None:
        """The row of a link result (any status), or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT result_id, created_at, status, min_probability, total_records, "
                "total_clusters FROM link_results WHERE result_id = ?",
                (result_id,),
            ).fetchone()
        if row is None:
            return None
        return LinkResultInfo(
            result_id=row[0],
            created_at=row[1],
            status=row[2],
            min_probability=float(row[3]),
            total_records=int(row[4]),
            total_clusters=int(row[5]),
        )

    def latest(self) -> LinkResultInfo | None:
        """The most recently finished complete link result, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT result_id FROM link_results WHERE status = 'complete' "
                "ORDER BY finished_at DESC, rowid DESC LIMIT 1"
            ).fetchone()
        return None if row is None else self.info(str(row[0]))

    def clusters(self, result_id: str, offset: int, limit: int) -> list[StoredCluster]:
        """Clusters ``offset .. offset + limit - 1`` of a result, in ordinal order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT cluster FROM link_clusters WHERE result_id = ? AND ordinal >= ? "
                "ORDER BY ordinal LIMIT ?",
                (result_id, int(offset), int(limit)),
            ).fetchall()
        return [_cluster_from_json(text) for (text,) in rows]


def _cluster_json(cluster: StoredCluster) -> str:
    return json.dumps(
        {
            "members": [list(member) for member in cluster.members],
            "edges": [
                [e.left, e.right, e.probability, [list(item) for item in e.evidence]]
                for e in cluster.edges
            ],
        },
        separators=(",", ":"),
        allow_nan=False,
    )


def _cluster_from_json(text: str) -> StoredCluster:
    data = json.loads(text)
    return StoredCluster(
        members=tuple((str(agency), str(reference)) for agency, reference in data["members"]),
        edges=tuple(
            StoredEdge(
                left=int(left),
                right=int(right),
                probability=float(probability),
                evidence=tuple((str(label), float(weight)) for label, weight in evidence),
            )
            for left, right, probability, evidence in data["edges"]
        ),
    )


__all__ = ["LinkResultInfo", "LinkResults", "StoredCluster", "StoredEdge"]
