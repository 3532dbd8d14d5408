"""The matcher's gRPC server: Publish, Withdraw, Match, Link, GetLinkResult and Status.

Role in the pipeline: steps 2, 3 and 5 of the data flow. Agency nodes stream their encodings
in (``Publish``) and withdraw them (``Withdraw``); a node asks ``Match`` on behalf of a staff
member with one encoded query and gets ranked candidates across every agency (its own
included: staff want to know about every record, wherever it is held); an operator runs a batch
``Link`` over everything published and pages through the stored clusters
(``GetLinkResult``). The matcher sees encodings, opaque references, agency ids, fingerprints,
purposes and counts only — it has no linkage secret and no identifier value ever reaches it.

State: a :class:`~server.matcher_store.MatcherStore` (SQLite, the durable copy) and a
:class:`~linkage.index.MatchIndex` (in memory, rebuilt from the store at start). Every Publish
message is committed to the store in its own transaction and then applied to the index, so a
``kill -9`` loses only the message in flight, which the node re-sends (upserts are idempotent).
The Fellegi-Sunter model is loaded from the store at start; if there is none, it is fitted at
the first Match on a random sample of at most ``MODEL_FIT_RECORDS`` indexed records
(``pipeline.score_pairs(schema, sample, None).model``) and stored; every Link refits it on
everything published and stores it again.

Security: every call passes :class:`server.auth.AuthInterceptor` with
:data:`server.auth.MATCHER_POLICY` first (Publish, Withdraw, Match: node; Link,
GetLinkResult, Status: operator). The publishing agency is the ``O`` of the node's
certificate, never a message field. Match answers carry a band and per-field evidence; the raw
probability is filled only in benchmark mode *and* for an operator caller — Match is a
node-only RPC, so in practice nodes always get probability 0. Publish streams, withdrawals,
matches and link runs are audited (who, agency, purpose, counts, ids). Message contents are
never logged.

Match limits (``[match_limits]`` of the config, :mod:`server.matcher_config`): the matcher
limits each calling node identity itself, because the node's own per-staff limits are set by
the node's operator and do not bind a node that holds the linkage secret and probes the
matcher with guessed identities. Before any decoding or index work, ``Match`` takes a token
from the caller's :class:`~server.ratelimit.RateLimiter`; a call past it is counted by an
:class:`~server.ratelimit.EnumerationGuard` (over the hourly threshold: one
"enumeration_alert" audit entry and a warning naming the caller) and must then get a slot of
the caller's hourly :class:`~server.ratelimit.WindowCap`. A refusal by the bucket or the cap
is ``RESOURCE_EXHAUSTED`` with trailing metadata ``retry-after-s``, audited as a "match" with
outcome "rate_limited". Publish, Withdraw and Link are not lookups and are not limited.

Errors go through :mod:`server.status` (``@grpc_errors``): a header whose fingerprint or key
version differs is ``FAILED_PRECONDITION`` saying which differs; a malformed record is
``INVALID_ARGUMENT`` naming ``records[i].field_filters[j]`` (or, for the columnar form a
Publish message may use instead, ``columns.field_filters[j]``, ``columns.references[i]``; a
message with both forms is refused naming ``columns``); an unknown link result is
``NOT_FOUND``.

Link runs: the pipeline runs in a worker thread (one run at a time) and relays its progress
callback through a queue to the response stream. If the client goes away the run still
finishes and is stored; its clusters and "complete" status are written in one transaction, so
a crash mid-link leaves no half result visible.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from linkage import pipeline
from linkage.encode import salt_comparable
from linkage.errors import JigsawError, ModelError
from linkage.index import CONFIDENT_PROBABILITY, IndexedCandidate, MatchIndex
from linkage.schema import Schema
from linkage.scoring import FellegiSunterModel, level_label
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.audit import AuditLog
from server.auth import MATCHER_POLICY, current_identity
from server.matcher_config import MatcherConfig, MatchLimitConfig
from server.matcher_convert import (
    EvidenceTable,
    candidates_from_table,
    check_header,
    cluster_to_proto,
    columns_message_to_encoded,
    evidence_table,
    query_to_encoded,
    records_to_encoded,
)
from server.matcher_store import MatcherStore, StoredCluster, StoredEdge
from server.ratelimit import Clock, EnumerationGuard, RateLimiter, WindowCap
from server.serving import build_grpc_server, serve_until_signal
from server.status import (
    NotFoundError,
    RateLimitedError,
    RequestError,
    grpc_errors,
    require_reference,
    require_text,
    status_for,
)

logger = logging.getLogger(__name__)

SERVICE_NAME = jigsaw_pb2.DESCRIPTOR.services_by_name["Matcher"].full_name
MAX_WORKERS = 16
SHUTDOWN_GRACE_S = 5.0
MAX_PURPOSE_CHARS = 500
MAX_ON_BEHALF_OF_CHARS = 128
DEFAULT_MAX_CANDIDATES = 20
MAX_CANDIDATES = 100
MAX_WITHDRAW_REFERENCES = 100_000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: A GetLinkResult page stops before this many bytes of clusters (under gRPC's 4 MiB default);
#: a single larger cluster is still sent whole, alone on its page.
MAX_PAGE_BYTES = 3 * 2**20
DEFAULT_MIN_PROBABILITY = 0.5
REBUILD_CHUNK = 10_000
#: Records (drawn at random, fixed seed) the on-demand model fit of the first Match uses.
MODEL_FIT_RECORDS = 100_000
MODEL_FIT_SEED = 20_260_101
#: The sliding window of the enumeration alert and of the hard cap on Match calls.
MATCH_WINDOW_S = 3600.0

_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
_PAGE_TOKEN = re.compile(r"^([0-9a-f]{32}):([0-9]{1,12})$")


def _version() -> str:
    try:
        return metadata.version("jigsaw-linkage")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------- page tokens


def encode_page_token(result_id: str, offset: int) -> str:
    """Opaque page token: unpadded URL-safe base64 of ``"<result_id>:<offset>"``."""
    raw = f"{result_id}:{offset}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(token: str, result_id: str, total: int) -> int:
    """The cluster offset of ``token`` ("" = 0); RequestError unless it belongs to this result."""
    if not token:
        return 0
    invalid = RequestError(
        "page_token", "not a page token of this result; pass next_page_token back unchanged"
    )
    if len(token) > 80:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise invalid from None
    match = _PAGE_TOKEN.match(raw)
    if match is None or match.group(1) != result_id:
        raise invalid
    offset = int(match.group(2))
    if not 0 < offset <= total:
        raise invalid
    return offset


# ---------------------------------------------------------------------------- link jobs


@dataclass
class _LinkJob:
    """One link run's hand-off between the worker thread and the response stream."""

    min_probability: float
    actor: str
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)

    def progress(self, stage: str, done: int, total: int) -> None:
        self.events.put(("progress", (stage, int(done), int(total))))


def build_clusters(
    result: pipeline.ClusterResult,
    members: Sequence[tuple[str, str]],
    threshold: float,
    *,
    schema: Schema | None = None,
    salt_tags: NDArray[np.uint64] | None = None,
    present: NDArray[np.bool_] | None = None,
) -> list[StoredCluster]:
    """Clusters with at least 2 members, members sorted by (agency, reference), with their edges.

    ``members[i]`` is the (agency, reference) of record ``i`` of the clustered concatenation.
    Edges are the scored pairs at or above ``threshold`` inside a cluster, each with its
    per-field (level label, weight) evidence. Clusters are ordered by their first member.
    With ``schema`` and that concatenation's ``salt_tags`` and ``present`` (field presence),
    a salted field both records hold under different salt values is labelled
    ``not_compared`` (weight 0), as lookups say.
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
        if schema is not None and salt_tags is not None and present is not None:
            left, right = scored.left[edge_rows], scored.right[edge_rows]
            not_compared = (
                present[left]
                & present[right]
                & ~salt_comparable(schema, salt_tags[left], salt_tags[right])
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
        records.sort(key=lambda r: members[r])
        position = {record: i for i, record in enumerate(records)}
        edges = tuple(
            StoredEdge(
                left=position[left],
                right=position[right],
                probability=probability,
                evidence=evidence_of[evidence],
            )
            for left, right, probability, evidence in edges_of.get(label, [])
        )
        member_tuple = tuple(members[r] for r in records)
        clusters.append((member_tuple[0], StoredCluster(members=member_tuple, edges=edges)))
    clusters.sort(key=lambda item: item[0])
    return [cluster for _, cluster in clusters]


def _label_tables(model: FellegiSunterModel) -> list[dict[int, str]]:
    return [
        {level: level_label(level, count) for level in range(-1, count)} for count in model.n_levels
    ]


def candidates_to_proto(
    found: Sequence[IndexedCandidate],
    model: FellegiSunterModel,
    *,
    reveal_probability: bool,
    table: EvidenceTable | None = None,
) -> list[jigsaw_pb2.Candidate]:
    """``candidate_to_proto`` of every candidate, with evidence from the model's table.

    The per-candidate ``model.explain`` (one small numpy round trip each) was a tenth of a
    millisecond per candidate of every Match; a model's evidence messages are all known in
    advance (:class:`~server.matcher_convert.EvidenceTable`), so pass ``table`` (built once
    per model) to skip even the one ``match_weights`` call. Gives the same messages.
    """
    if not found:
        return []
    if table is None or table.model is not model:
        table = evidence_table(model)
    return candidates_from_table(found, table, reveal_probability=reveal_probability)


# ---------------------------------------------------------------------------- match limits


@dataclass(frozen=True)
class MatchLimits:
    """The limits ``Match`` applies per calling node identity (``identity.name``)."""

    rate: RateLimiter
    guard: EnumerationGuard
    cap: WindowCap

    @classmethod
    def from_config(cls, limits: MatchLimitConfig, *, clock: Clock = time.monotonic) -> MatchLimits:
        """Bucket, alert and hourly cap as ``[match_limits]`` sets them, on ``clock``."""
        return cls(
            rate=RateLimiter(limits.matches_per_minute, limits.burst, clock=clock),
            guard=EnumerationGuard(limits.enumeration_alert_per_hour, MATCH_WINDOW_S, clock=clock),
            cap=WindowCap(limits.max_matches_per_hour, MATCH_WINDOW_S, clock=clock),
        )


# ---------------------------------------------------------------------------- servicer


class MatcherServicer(jigsaw_pb2_grpc.MatcherServicer):
    """The Matcher service over one store, index, model and audit log."""

    def __init__(
        self,
        config: MatcherConfig,
        *,
        store: MatcherStore,
        index: MatchIndex,
        audit: AuditLog,
        model: FellegiSunterModel | None,
        limits: MatchLimits | None = None,
    ) -> None:
        self._config = config
        self._limits = (
            limits if limits is not None else MatchLimits.from_config(config.match_limits)
        )
        self._schema = config.schema
        self._key_version = config.key_version
        self._store = store
        self._index = index
        self._audit = audit
        self._model = model
        self._evidence: EvidenceTable | None = None  # of the model last used by a Match
        self._model_lock = threading.Lock()
        self._write_lock = threading.Lock()  # keeps store and index in step
        self._link_lock = threading.Lock()  # one link run at a time
        self._link_threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()

    @property
    def model(self) -> FellegiSunterModel | None:
        return self._model

    @property
    def indexed_records(self) -> int:
        return len(self._index)

    # ------------------------------------------------------------------ Publish

    @grpc_errors
    def Publish(
        self,
        request_iterator: Iterator[jigsaw_pb2.PublishRequest],
        context: grpc.ServicerContext,
    ) -> jigsaw_pb2.PublishResponse:
        identity = current_identity(context)
        agency = identity.agency  # from the certificate, never from the message
        totals = {"messages": 0, "received": 0, "inserted": 0, "replaced": 0, "unchanged": 0}
        outcome = "ok"
        try:
            for number, request in enumerate(request_iterator):
                if number == 0:
                    check_header(request, self._schema, self._key_version)
                self._publish_message(agency, request, totals)
                # not kept past its use: the parsed message (up to a few MiB) would otherwise
                # stay alive while the trim below runs, and its freed chunks stay resident
                del request
        except BaseException as exc:
            outcome = _outcome_of(exc)
            raise
        finally:
            _release_free_memory()
            self._audit.append(
                actor=identity.name,
                action="publish",
                outcome=outcome,
                details={"agency": agency, **totals},
            )
            logger.info(
                "publish from %s: %s, %d messages, %d received, %d inserted, %d replaced",
                identity.name, outcome, totals["messages"], totals["received"],
                totals["inserted"], totals["replaced"],
            )  # fmt: skip
        return jigsaw_pb2.PublishResponse(
            received=totals["received"],
            inserted=totals["inserted"],
            replaced=totals["replaced"],
            unchanged=totals["unchanged"],
        )

    def _publish_message(
        self, agency: str, request: jigsaw_pb2.PublishRequest, totals: dict[str, int]
    ) -> None:
        columnar = request.HasField("columns")
        if columnar and request.records:
            raise RequestError("columns", "a message carries records or columns, not both")
        form = "columns.references" if columnar else "records"
        count = len(request.columns.references) if columnar else len(request.records)
        limit = self._config.max_publish_batch
        if count > limit:
            raise RequestError(form, f"at most {limit} records per message, got {count}")
        if columnar:  # validated even with no rows: an empty column set must still be sound
            batch, references = columns_message_to_encoded(
                request.columns, self._schema, key_version=self._key_version
            )
        elif count:
            batch, references = records_to_encoded(
                request.records, self._schema, key_version=self._key_version
            )
        if count:
            with self._write_lock:
                counts = self._store.upsert(agency, references, batch)  # committed here
                if counts.changed_rows:
                    rows = list(counts.changed_rows)
                    if rows == list(range(count)):  # every record new or changed: no copy
                        self._index.upsert(agency, references, batch)
                    else:
                        self._index.upsert(agency, [references[r] for r in rows], batch.take(rows))
            totals["inserted"] += counts.inserted
            totals["replaced"] += counts.replaced
            totals["unchanged"] += counts.unchanged
        totals["messages"] += 1
        totals["received"] += count

    # ------------------------------------------------------------------ Withdraw

    @grpc_errors
    def Withdraw(
        self, request: jigsaw_pb2.WithdrawRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.WithdrawResponse:
        identity = current_identity(context)
        count = len(request.references)
        if count > MAX_WITHDRAW_REFERENCES:
            raise RequestError(
                "references", f"at most {MAX_WITHDRAW_REFERENCES} per call, got {count}"
            )
        references = [
            require_reference(reference, f"references[{i}]")
            for i, reference in enumerate(request.references)
        ]
        with self._write_lock:
            withdrawn = self._store.delete(identity.agency, references)
            self._index.remove(identity.agency, references)
        self._audit.append(
            actor=identity.name,
            action="withdraw",
            outcome="ok",
            details={"agency": identity.agency, "requested": count, "withdrawn": withdrawn},
        )
        return jigsaw_pb2.WithdrawResponse(withdrawn=withdrawn)

    # ------------------------------------------------------------------ Match

    @grpc_errors
    def Match(
        self, request: jigsaw_pb2.MatchRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.MatchResponse:
        identity = current_identity(context)
        details: dict[str, str | int] = {"caller_agency": identity.agency}
        purpose = ""
        try:
            self._check_match_limits(identity.name, identity.agency)  # before any decoding
            purpose = require_text(request.purpose, "purpose", MAX_PURPOSE_CHARS)
            details["on_behalf_of"] = require_text(
                request.on_behalf_of, "on_behalf_of", MAX_ON_BEHALF_OF_CHARS
            )
            check_header(request, self._schema, self._key_version)
            max_candidates = request.max_candidates or DEFAULT_MAX_CANDIDATES
            if max_candidates > MAX_CANDIDATES:
                raise RequestError("max_candidates", f"at most {MAX_CANDIDATES}")
            if not request.HasField("query"):
                raise RequestError("query", "required (one encoded record)")
            query = query_to_encoded(request.query, self._schema, key_version=self._key_version)
            candidates: list[jigsaw_pb2.Candidate] = []
            if len(self._index):
                model = self._ensure_model()
                # the full scan only when blocking found no confident candidate
                # (linkage.index docstring: measured to lose no record)
                found = self._index.query(
                    query,
                    model,
                    max_candidates=max_candidates,
                    min_probability=DEFAULT_MIN_PROBABILITY,
                    confident_probability=CONFIDENT_PROBABILITY,
                )
                # Raw probabilities only in benchmark mode and only for operators; Match is a
                # node-only RPC (MATCHER_POLICY), so nodes always receive probability 0.
                reveal = self._config.benchmark_mode and identity.role == "operator"
                table = self._evidence
                if table is None or table.model is not model:
                    table = self._evidence = evidence_table(model)  # a new model: once
                candidates = candidates_from_table(found, table, reveal_probability=reveal)
        except BaseException as exc:
            self._audit.append(
                actor=identity.name,
                action="match",
                purpose=purpose,
                outcome=_outcome_of(exc),
                details=details,
            )
            raise
        details["candidates"] = len(candidates)
        self._audit.append(
            actor=identity.name, action="match", purpose=purpose, outcome="ok", details=details
        )
        return jigsaw_pb2.MatchResponse(candidates=candidates)

    def _check_match_limits(self, caller: str, agency: str) -> None:
        """Raise RateLimitedError when ``caller`` is over its bucket or hourly cap; alert once.

        The guard counts every call the bucket lets through, answered or refused by the cap,
        so a node that keeps hitting the cap (which may equal the threshold) is still alerted.
        """
        limits = self._limits
        retry_after = limits.rate.acquire(caller)
        if retry_after is not None:
            raise RateLimitedError(retry_after)
        if limits.guard.observe(caller):
            logger.warning("enumeration alert: caller %s over the match threshold", caller)
            self._audit.append(
                actor=caller,
                action="enumeration_alert",
                outcome="alert",
                details={
                    "caller_agency": agency,
                    "matches_in_window": limits.guard.count(caller),
                    "threshold": limits.guard.threshold,
                    "window_seconds": int(MATCH_WINDOW_S),
                },
            )
        retry_after = limits.cap.acquire(caller)
        if retry_after is not None:
            raise RateLimitedError(retry_after)

    def _ensure_model(self) -> FellegiSunterModel:
        """The current model, fitted on the index (and stored) if there is none yet.

        The fit uses at most :data:`MODEL_FIT_RECORDS` records drawn at random: scoring every
        blocked pair of a million-record index takes more memory than a matcher host has, and
        m and u probabilities are proportions that a sample of this size estimates well. A
        ``Link`` refits on everything it links.
        """
        with self._model_lock:
            if self._model is None:
                batch, _, _ = self._index.snapshot(sample=MODEL_FIT_RECORDS, seed=MODEL_FIT_SEED)
                if len(batch) < 2:
                    raise ModelError("no fitted model: at least 2 published records are needed")
                started = time.perf_counter()
                model = pipeline.score_pairs(self._schema, batch, None).model
                self._store.save_model(model.to_dict())
                self._model = model
                logger.info(
                    "fitted the model on %d records in %.2f s",
                    len(batch), time.perf_counter() - started,
                )  # fmt: skip
            return self._model

    # ------------------------------------------------------------------ Link

    @grpc_errors
    def Link(
        self, request: jigsaw_pb2.LinkRequest, context: grpc.ServicerContext
    ) -> Iterator[jigsaw_pb2.LinkProgress]:
        identity = current_identity(context)
        min_probability = request.min_probability or DEFAULT_MIN_PROBABILITY
        if not (math.isfinite(min_probability) and 0.0 < min_probability < 1.0):
            raise RequestError(
                "min_probability", "expected a number between 0 and 1 (0 = the model's 0.5)"
            )
        if len(self._index) < 2:
            raise ModelError("link needs at least 2 published records")
        job = _LinkJob(min_probability=min_probability, actor=identity.name)
        worker = threading.Thread(
            target=self._run_link, args=(job,), name="matcher-link", daemon=False
        )
        with self._threads_lock:
            self._link_threads = [t for t in self._link_threads if t.is_alive()] + [worker]
            worker.start()
        while True:
            kind, payload = job.events.get()
            if kind == "progress":
                stage, done, total = payload
                yield jigsaw_pb2.LinkProgress(stage=stage, done=done, total=total)
            elif kind == "done":
                result_id, clusters = payload
                yield jigsaw_pb2.LinkProgress(
                    stage="done", done=clusters, total=clusters, result_id=result_id
                )
                return
            else:
                raise payload

    def _run_link(self, job: _LinkJob) -> None:
        """Worker thread: snapshot, cluster, store the result and the refitted model."""
        result_id = ""
        try:
            job.progress("queued", 0, 1)
            with self._link_lock:
                result_id = self._store.begin_link(min_probability=job.min_probability)
                started = time.perf_counter()
                job.progress("snapshot", 0, 1)
                batch, codes, references = self._index.snapshot()
                job.progress("snapshot", 1, 1)
                if len(batch) < 2:
                    raise ModelError("link needs at least 2 published records")
                order: list[int] = []
                datasets = []
                agency_codes = sorted(
                    np.unique(codes).tolist(), key=lambda c: self._index.agency_name(int(c))
                )
                for code in agency_codes:
                    rows = np.flatnonzero(codes == code)
                    datasets.append(batch.take(rows))
                    order.extend(rows.tolist())
                members = [(self._index.agency_name(int(codes[r])), references[r]) for r in order]
                result = pipeline.cluster_datasets(
                    self._schema,
                    datasets,
                    options=pipeline.LinkageOptions(min_probability=job.min_probability),
                    progress=job.progress,
                )
                job.progress("storing", 0, 1)
                clusters = build_clusters(
                    result,
                    members,
                    job.min_probability,
                    schema=self._schema,
                    salt_tags=batch.salt_tags[order],  # the clustered order, not a copy of
                    present=batch.field_present[order],  # every filter of the snapshot
                )
                self._store.finish_link(result_id, clusters, total_records=len(batch))
                model = result.scored.model
                with self._model_lock:
                    self._store.save_model(model.to_dict())
                    self._model = model
                job.progress("storing", 1, 1)
            self._audit.append(
                actor=job.actor,
                action="link",
                outcome="ok",
                details={
                    "result_id": result_id,
                    "records": len(batch),
                    "clusters": len(clusters),
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
            logger.info("link %s: %d records, %d clusters", result_id, len(batch), len(clusters))
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
                    outcome=_outcome_of(exc),
                    details={"result_id": result_id},
                )
            finally:
                job.events.put(("error", exc if isinstance(exc, Exception) else RuntimeError()))

    def join_links(self, timeout: float | None = None) -> None:
        """Wait for running link threads (used at shutdown)."""
        with self._threads_lock:
            threads = list(self._link_threads)
        for thread in threads:
            thread.join(timeout)

    # ------------------------------------------------------------------ GetLinkResult

    @grpc_errors
    def GetLinkResult(
        self, request: jigsaw_pb2.GetLinkResultRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.GetLinkResultResponse:
        result_id = request.result_id
        if not _RESULT_ID.match(result_id):
            raise RequestError("result_id", "expected 32 lowercase hex characters")
        info = self._store.link_result(result_id)
        if info is None or info.status != "complete":
            raise NotFoundError("result_id: no completed link result with this id")
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if page_size > MAX_PAGE_SIZE:
            raise RequestError("page_size", f"at most {MAX_PAGE_SIZE}")
        offset = decode_page_token(request.page_token, result_id, info.total_clusters)
        stored = self._store.link_clusters(result_id, offset=offset, limit=page_size)
        clusters: list[jigsaw_pb2.Cluster] = []
        page_bytes = 0
        for i, cluster in enumerate(stored):
            message = cluster_to_proto(
                f"{result_id}-{offset + i}", cluster, self._schema.field_names
            )
            page_bytes += message.ByteSize()
            if clusters and page_bytes > MAX_PAGE_BYTES:
                break  # the page ends early; next_page_token continues from this cluster
            clusters.append(message)
        end = offset + len(clusters)
        return jigsaw_pb2.GetLinkResultResponse(
            clusters=clusters,
            next_page_token=encode_page_token(result_id, end) if end < info.total_clusters else "",
            total_clusters=info.total_clusters,
            total_records=info.total_records,
        )

    # ------------------------------------------------------------------ Status

    @grpc_errors
    def Status(
        self, request: jigsaw_pb2.MatcherStatusRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.MatcherStatusResponse:
        counts = self._index.counts_by_agency()
        return jigsaw_pb2.MatcherStatusResponse(
            schema_fingerprint=self._schema.fingerprint(),
            key_version=self._key_version,
            agencies=[
                jigsaw_pb2.AgencyCount(agency=agency, records=count)
                for agency, count in sorted(counts.items())
                if count
            ],
            indexed_records=len(self._index),
            version=_version(),
        )


def _load_libc() -> Any:
    """The C library through ctypes, or None when it cannot be loaded."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()
_MALLOC_TRIM: Callable[[int], int] | None = getattr(_LIBC, "malloc_trim", None)
_MALLOPT: Callable[[int, int], int] | None = getattr(_LIBC, "mallopt", None)
_M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
_MMAP_THRESHOLD_BYTES = 256 * 1024


def _fix_mmap_threshold() -> None:
    """Keep glibc serving large blocks with mmap, so freeing one returns it at once (glibc only).

    glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
    which the arrays of every Publish message come from the heap and their freed space stays
    resident. A fixed threshold keeps the matcher's memory close to what its index holds.
    """
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def _release_free_memory() -> None:
    """Hand the heap's free pages back to the operating system (glibc only).

    A Publish stream parses megabytes of messages into short-lived arrays on a gRPC worker
    thread; glibc keeps the freed chunks in that thread's arena, so without this the matcher's
    resident memory stays far above what the index holds. Costs a few milliseconds per stream.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _outcome_of(exc: BaseException) -> str:
    """Audit outcome word for a failed call: the status code name, lower case.

    A refusal by the match limits is "rate_limited", the word the node's audit uses.
    """
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    if isinstance(exc, JigsawError):
        code: grpc.StatusCode = status_for(exc)[0]
        return str(code.name).lower()
    return "error"


# ---------------------------------------------------------------------------- server


@dataclass
class MatcherRuntime:
    """A built (not yet started) matcher server and the resources it owns."""

    server: grpc.Server
    port: int
    servicer: MatcherServicer
    store: MatcherStore
    audit: AuditLog

    def close(self) -> None:
        """Wait for link runs, then release the store and audit log (after the server stopped)."""
        self.servicer.join_links()
        self.audit.close()
        self.store.close()


def rebuild_index(store: MatcherStore, *, chunk_size: int = REBUILD_CHUNK) -> MatchIndex:
    """A MatchIndex holding every record in ``store``."""
    started = time.perf_counter()
    index = MatchIndex(store.schema, key_version=store.key_version, capacity=store.count())
    for agency, references, batch in store.iter_encodings(chunk_size=chunk_size):
        index.upsert(agency, references, batch)
    # the store's chunks were parsed into short-lived objects on the heap: hand their pages
    # back (measured at 200 k records: 440 -> 420 bytes of resident memory a record)
    _release_free_memory()
    logger.info(
        "rebuilt the index: %d records in %.2f s", len(index), time.perf_counter() - started
    )
    return index


def _load_model(store: MatcherStore, config: MatcherConfig) -> FellegiSunterModel | None:
    data = store.load_model()
    if data is None:
        return None
    try:
        model = FellegiSunterModel.from_dict(data)
    except ModelError:
        logger.warning("the stored model is unusable; it will be refitted")
        return None
    thresholds = tuple(tuple(spec.levels) for spec in config.schema.fields)
    if model.field_names != config.schema.field_names or model.thresholds != thresholds:
        logger.warning("the stored model does not fit the served schema; it will be refitted")
        return None
    return model


def build_matcher(config: MatcherConfig, *, clock: Clock = time.monotonic) -> MatcherRuntime:
    """Build the matcher server bound to ``config.listen`` with mutual TLS, ready to start.

    ``clock`` (monotonic seconds) drives the match limits; tests pass a fake one.
    """
    _fix_mmap_threshold()
    store = MatcherStore(config.store, schema=config.schema, key_version=config.key_version)
    audit: AuditLog | None = None
    try:
        index = rebuild_index(store)
        audit = AuditLog(config.audit_log)
        servicer = MatcherServicer(
            config,
            store=store,
            index=index,
            audit=audit,
            model=_load_model(store, config),
            limits=MatchLimits.from_config(config.match_limits, clock=clock),
        )
        server, port = build_grpc_server(
            role="matcher",
            service_name=SERVICE_NAME,
            policy=MATCHER_POLICY,
            add_servicer=lambda srv: jigsaw_pb2_grpc.add_MatcherServicer_to_server(  # type: ignore[no-untyped-call]
                servicer, srv
            ),
            listen=config.listen,
            tls=config.tls,
            max_workers=MAX_WORKERS,
        )
    except BaseException:
        if audit is not None:
            audit.close()
        store.close()
        raise
    return MatcherRuntime(server, port, servicer, store, audit)


def create_server(config: MatcherConfig) -> tuple[grpc.Server, int]:
    """The matcher server (not started) and its bound port.

    Use :func:`build_matcher` to also get the resources for an orderly close.
    """
    runtime = build_matcher(config)
    return runtime.server, runtime.port


def serve(config: MatcherConfig, *, on_started: Callable[[int], None] | None = None) -> None:
    """Run the matcher until SIGTERM or SIGINT, then stop gracefully (5 s grace).

    A link run in progress is allowed to finish and be stored before the process exits.
    """
    runtime = build_matcher(config)

    def started(port: int) -> None:
        logger.info(
            "matcher serving on port %d (schema %s, key version %d, %d records)",
            port, config.schema.fingerprint(), config.key_version,
            runtime.servicer.indexed_records,
        )  # fmt: skip
        if on_started is not None:
            on_started(port)

    try:
        serve_until_signal(runtime, on_started=started, grace_s=SHUTDOWN_GRACE_S)
    finally:
        logger.info("matcher stopped")


__all__ = [
    "MatchLimits",
    "MatcherRuntime",
    "MatcherServicer",
    "build_clusters",
    "build_matcher",
    "create_server",
    "decode_page_token",
    "encode_page_token",
    "rebuild_index",
    "serve",
]
