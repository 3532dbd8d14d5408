"""Batch link runs: cluster everything published and store the result.

Role: ``Link`` (an operator) clusters every published record across agencies with
:func:`linkage.pipeline.cluster_datasets` and stores the clusters (:func:`build_clusters`)
for ``GetLinkResult`` and ``GetLinkedRecords`` to page through. A :class:`Linker` runs one
link at a time on a worker thread and relays the pipeline's progress to the caller's
response stream through a queue; if the caller goes away the run still finishes and is
stored.

Invariants: a result's clusters and its "complete" status are written in one transaction
(a crash mid-link leaves no half result visible; a failed run is marked failed); each
cluster member is a record, once (a record's forms are clustered as that record); clusters
never join two records of one agency with different NHS numbers through a chain, and how many
merges that refused and how many the cluster-size bound undid are counted in the log and the
audit entry; every run refits the model on everything it linked and stores it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import compare, pipeline
from linkage.errors import ModelError
from linkage.schema import Schema
from linkage.scoring import FellegiSunterModel, level_label
from server.common.audit import AuditLog
from server.common.guard import outcome_of
from server.matcher.model import MatchModel
from server.matcher.records import PublishedRecords
from server.matcher.results import StoredCluster, StoredEdge

logger = logging.getLogger(__name__)


def build_clusters(
    result: pipeline.ClusterResult,
    members: Sequence[tuple[str, str]],
    threshold: float,
    *,
    schema: Schema | None = None,
    present: NDArray[np.bool_] | None = None,
) -> list[StoredCluster]:
    """Clusters with at least 2 members, members sorted by (agency, reference), with their edges.

    ``members[i]`` is the (agency, reference) of row ``i`` of the clustered concatenation:
    the rows that are forms of one record (:mod:`linkage.forms`) share their record's member,
    which a cluster lists once; ``result`` must then come from clustering with ``record=``
    (:func:`linkage.pipeline.cluster_datasets`), which keeps no pair inside one record and
    one pair between two. Edges are the scored pairs at or above ``threshold`` inside a
    cluster, each with its per-field (level label, weight) evidence. Clusters are ordered
    by their first member.
    With ``schema`` and that concatenation's ``present`` (field presence), a field both
    records hold that could not be compared (:func:`linkage.compare.not_compared`) is
    labelled ``not_compared`` (weight 0), as lookups say.
    """
    labels = result.labels
    if labels.size == 0:
        return []
    cluster_labels, sizes = np.unique(labels, return_counts=True)
    kept = set(cluster_labels[sizes >= 2].tolist())
    records_of: dict[int, list[int]] = {}
    for record in np.flatnonzero(np.isin(labels, list(kept))).tolist():
        records_of.setdefault(int(labels[record]), []).append(record)
    scored = result.scored
    model = scored.model
    mask = result.edges(threshold)
    edge_rows = np.flatnonzero(mask)
    # evidence depends only on the row of levels, and few distinct rows occur: build each once
    evidence_of: list[tuple[tuple[str, float], ...]] = []
    which = np.zeros(edge_rows.size, dtype=np.int64)
    if edge_rows.size:
        n_fields = scored.levels.shape[1]
        not_compared = np.zeros((edge_rows.size, n_fields), dtype=np.int8)
        if schema is not None and present is not None:
            left, right = scored.left[edge_rows], scored.right[edge_rows]
            not_compared = compare.not_compared(
                schema, present[left] & present[right], scored.levels[edge_rows]
            ).astype(np.int8)
        keyed = np.concatenate([scored.levels[edge_rows], not_compared], axis=1)
        distinct, inverse = np.unique(keyed, axis=0, return_inverse=True)
        which = inverse.reshape(-1)
        label_tables = _label_tables(model)
        weights = model.match_weights(distinct[:, :n_fields]).tolist()
        for row, row_weights in zip(distinct.tolist(), weights, strict=True):
            evidence_of.append(
                tuple(
                    ("not_compared", 0.0)
                    if row[n_fields + f]
                    else (label_tables[f][level], float(weight))
                    for f, (level, weight) in enumerate(
                        zip(row[:n_fields], row_weights, strict=True)
                    )
                )
            )
    edges_of: dict[int, list[tuple[int, int, float, int]]] = {}
    lefts = scored.left[edge_rows].tolist()
    for left, right, probability, label, evidence in zip(
        lefts,
        scored.right[edge_rows].tolist(),
        scored.probability[edge_rows].tolist(),
        labels[scored.left[edge_rows]].tolist(),
        which.tolist(),
        strict=True,
    ):
        edges_of.setdefault(label, []).append((left, right, probability, evidence))
    clusters: list[tuple[tuple[str, str], StoredCluster]] = []
    for label, records in records_of.items():
        member_tuple = tuple(sorted({members[r] for r in records}))
        if len(member_tuple) < 2:
            continue  # the forms of one record, alone
        position = {member: i for i, member in enumerate(member_tuple)}
        edges = tuple(
            StoredEdge(
                left=position[members[row_left]],
                right=position[members[row_right]],
                probability=probability,
                evidence=evidence_of[evidence],
            )
            for row_left, row_right, probability, evidence in edges_of.get(label, [])
        )
        clusters.append((member_tuple[0], StoredCluster(members=member_tuple, edges=edges)))
    clusters.sort(key=lambda item: item[0])
    return [cluster for _, cluster in clusters]


def _label_tables(model: FellegiSunterModel) -> list[dict[int, str]]:
    return [
        {level: level_label(level, count) for level in range(-1, count)} for count in model.n_levels
    ]


@dataclass(frozen=True)
class LinkProgress:
    """One step of a run: a stage's progress, or (``result_id`` set) the run's end."""

    stage: str
    done: int
    total: int
    result_id: str = ""


@dataclass
class _LinkJob:
    """One link run's hand-off between the worker thread and the response stream."""

    min_probability: float
    actor: str
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)

    def progress(self, stage: str, done: int, total: int) -> None:
        self.events.put(("progress", (stage, int(done), int(total))))


class Linker:
    """Runs link jobs over the published records, one at a time, each on its own thread."""

    def __init__(
        self, records: PublishedRecords, model: MatchModel, audit: AuditLog, schema: Schema
    ) -> None:
        self._records = records
        self._store = records.store
        self._model = model
        self._audit = audit
        self._schema = schema
        self._link_lock = threading.Lock()  # one link run at a time
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()

    def run(self, min_probability: float, actor: str) -> Iterator[LinkProgress]:
        """Start a run and yield its progress; the last item names the stored result (and
        counts its clusters as ``done``). A failed run raises its error here."""
        if self._records.rows < 2:
            raise ModelError("link needs at least 2 published records")
        job = _LinkJob(min_probability=min_probability, actor=actor)
        worker = threading.Thread(target=self._run, args=(job,), name="matcher-link", daemon=False)
        with self._threads_lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [worker]
            worker.start()
        while True:
            kind, payload = job.events.get()
            if kind == "progress":
                yield LinkProgress(*payload)
            elif kind == "done":
                result_id, clusters = payload
                yield LinkProgress("done", clusters, clusters, result_id)
                return
            else:
                raise payload

    def join(self, timeout: float | None = None) -> None:
        """Wait for running link threads (used at shutdown)."""
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def _run(self, job: _LinkJob) -> None:
        """Worker thread: snapshot, cluster, store the result and the refitted model."""
        result_id = ""
        try:
            job.progress("queued", 0, 1)
            with self._link_lock:
                result_id = self._store.begin_link(min_probability=job.min_probability)
                started = time.perf_counter()
                job.progress("snapshot", 0, 1)
                snapshot = self._records.snapshot()
                job.progress("snapshot", 1, 1)
                if snapshot.rows < 2:
                    raise ModelError("link needs at least 2 published records")
                total_records = len(set(snapshot.members))
                result = pipeline.cluster_datasets(
                    self._schema,
                    snapshot.datasets,
                    options=pipeline.LinkageOptions(min_probability=job.min_probability),
                    progress=job.progress,
                    record=snapshot.record,
                )
                job.progress("storing", 0, 1)
                clusters = build_clusters(
                    result,
                    snapshot.members,
                    job.min_probability,
                    schema=self._schema,
                    present=snapshot.present,
                )
                self._store.finish_link(result_id, clusters, total_records=total_records)
                self._model.replace(result.scored.model)
                job.progress("storing", 1, 1)
            self._audit.append(
                actor=job.actor,
                action="link",
                outcome="ok",
                details={
                    "result_id": result_id,
                    "records": total_records,
                    "clusters": len(clusters),
                    "refused_unions": result.refused_unions,
                    "size_splits": result.size_splits,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
            logger.info(
                "link %s: %d records, %d clusters, %d merges refused on hard evidence, "
                "%d undone in oversize clusters",
                result_id,
                total_records,
                len(clusters),
                result.refused_unions,
                result.size_splits,
            )
            job.events.put(("done", (result_id, len(clusters))))
        except BaseException as exc:
            if result_id:
                try:
                    self._store.fail_link(result_id)
                except Exception:
                    logger.exception("could not mark link %s failed", result_id)
            logger.error("link %s failed: %s", result_id or "-", type(exc).__name__)
            try:
                self._audit.append(
                    actor=job.actor,
                    action="link",
                    outcome=outcome_of(exc),
                    details={"result_id": result_id},
                )
            finally:
                job.events.put(("error", exc if isinstance(exc, Exception) else RuntimeError()))


__all__ = ["LinkProgress", "Linker", "build_clusters"]
