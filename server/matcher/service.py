"""The matcher's gRPC server: Publish, Withdraw, Match, Link, GetLinkResult, GetLinkedRecords
and Status.

Role in the pipeline: steps 2, 3 and 5 of the data flow. Agency nodes stream their encodings in
(``Publish``) and withdraw them (``Withdraw``); a node asks ``Match`` on behalf of a staff
member, once per lookup, with the lookup's encoded query rows (hypotheses about one person, at
most :data:`MAX_QUERY_ROWS`) and gets one ranked list of candidates across every agency (its
own included: staff want to know about every record, wherever it is held); an operator runs a
batch ``Link`` over everything published and pages through the stored clusters
(``GetLinkResult``); each node then fetches its own records of a result that share a cluster
with another agency's (``GetLinkedRecords``: the other agencies' names and bands, never their
references; the agency is the ``O`` of the node's certificate). The matcher sees encodings,
opaque references, agency ids, fingerprints, purpose codes (from a closed list,
:mod:`server.common.purposes`; never free text) and counts only — it has no linkage secret and no
identifier value ever reaches it.

State: a :class:`~server.matcher.store.MatcherStore` (SQLite, the durable copy) and a
:class:`~linkage.index.MatchIndex` (in memory, rebuilt from the store at start). Every Publish
message is committed to the store in its own transaction and then applied to the index, so a
``kill -9`` loses only the message in flight, which the node re-sends (upserts are idempotent).
Forms (:mod:`linkage.forms`): a record lacking sex is published as one row per sex value,
each with ``form_of`` naming the record. The servicer keeps a :class:`FormMap` (form ->
record, per agency; rebuilt from the store with the index, updated by Publish and Withdraw
under the same write lock) and treats a record's forms as that record: Publish drops from the
index the forms and own rows the store replaced, Withdraw of a record drops its forms, Match
queries the index with all its rows in one pass (``MatchIndex.query_rows``) and reports a
form under its record's reference (each record once, at its best candidate over every row
and form; the index is asked for ``max_forms`` times as many candidates per row, then
trimmed), Link clusters records
(``pipeline.cluster_datasets(record=...)``; each cluster member is a record, once) and Status
counts records, not rows.
The Fellegi-Sunter model is loaded from the store at start; if there is none, it is fitted at
the first Match on a random sample of at most ``MODEL_FIT_RECORDS`` indexed records
(``pipeline.score_pairs(schema, sample, None).model``) and stored; every Link refits it on
everything published and stores it again. Link's clusters never join two records of one
agency with different NHS numbers through a chain (the stored encodings are compared), and
how many merges that refused and how many the cluster-size bound undid go to the log and
the audit entry as counts (LinkProgress has no field for them).

Security: every call passes :class:`server.common.auth.AuthInterceptor` with
:data:`server.common.auth.MATCHER_POLICY` first (Publish, Withdraw, Match, GetLinkedRecords: node;
Link, GetLinkResult, Status: operator). The publishing agency is the ``O`` of the node's
certificate, never a message field. Match answers carry a band and per-field evidence; the raw
probability is filled only in benchmark mode *and* for an operator caller — Match is a
node-only RPC, so in practice nodes always get probability 0. Publish streams, withdrawals,
matches and link runs are audited (who, agency, purpose, counts, ids). Message contents are
never logged.

Match limits (``[match_limits]`` of the config, :mod:`server.matcher.config`): the matcher
limits each calling node identity itself, because the node's own per-staff limits are set by
the node's operator and do not bind a node that holds the linkage secret and probes the
matcher with guessed identities; inside a node's budget each person it acts for
(``on_behalf_of``) gets at most ``person_share`` of it, so one person cannot lock colleagues
out. One Match is one lookup, counted once whatever its rows. Before any decoding or index
work (``on_behalf_of`` aside), ``Match`` needs a token of the node's and of the person's
:class:`~server.common.ratelimit.RateLimiter` and a slot of the node's and the person's hourly
:class:`~server.common.ratelimit.WindowCap`, all or nothing
(:class:`~server.common.ratelimit.AllOrNothing`:
a refused call is charged to none). A call past the buckets is counted by an
:class:`~server.common.ratelimit.EnumerationGuard` per node (over the hourly threshold: one
"enumeration_alert" audit entry and a warning naming the caller). A refusal is
``RESOURCE_EXHAUSTED`` with trailing metadata ``retry-after-s`` (the longest wait of the
limits that refused), counted as a "match" refused for "rate_limited" in the matcher's
:class:`~server.common.audit.RefusalTally` (one entry per node per interval, as for the calls the
interceptor refuses). Publish, Withdraw and
Link are not lookups and are not limited.

Errors go through :mod:`server.common.status` (``@grpc_errors``): a header whose fingerprint or key
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
import dataclasses
import itertools
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

from linkage import compare, forms, pipeline
from linkage.encode import EncodedBatch, concat_batches
from linkage.errors import JigsawError, ModelError
from linkage.index import CONFIDENT_PROBABILITY, IndexedCandidate, MatchIndex
from linkage.schema import Schema
from linkage.scoring import FellegiSunterModel, level_label
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.anchor import (
    AnchorError,
    ReceiptFile,
    Signed,
    Signer,
    Witness,
    load_ca,
    pages,
)
from server.common.audit import AuditLog, RefusalTally
from server.common.auth import MATCHER_POLICY, current_identity
from server.common.purposes import require_purpose_code
from server.common.ratelimit import AllOrNothing, Clock, EnumerationGuard, RateLimiter, WindowCap
from server.common.serving import build_grpc_server, serve_until_signal
from server.common.status import (
    NotFoundError,
    RateLimitedError,
    RequestError,
    grpc_errors,
    require_reference,
    require_text,
    status_for,
)
from server.matcher.config import MatcherConfig, MatchLimitConfig
from server.matcher.store import MatcherStore, StoredCluster, StoredEdge
from server.matcher.wire import (
    EvidenceTable,
    candidates_from_table,
    check_header,
    cluster_to_proto,
    columns_message_to_encoded,
    evidence_table,
    linked_records,
    queries_to_encoded,
    records_to_encoded,
)

logger = logging.getLogger(__name__)

SERVICE_NAME = jigsaw_pb2.DESCRIPTOR.services_by_name["Matcher"].full_name
MAX_WORKERS = 16
SHUTDOWN_GRACE_S = 5.0
MAX_ON_BEHALF_OF_CHARS = 128
DEFAULT_MAX_CANDIDATES = 20
MAX_CANDIDATES = 100
#: Query rows one Match may carry: a lookup's hypotheses about one person (one row per value
#: of the salt fields of few values it lacks), with room to spare over the shipped schema's.
MAX_QUERY_ROWS = 32
#: Date hypotheses one Match may carry (:func:`linkage.forms.encode_date_hypotheses`: each
#: usual error of the date under each form of the query), with room to spare.
MAX_HYPOTHESIS_ROWS = 64
MAX_WITHDRAW_REFERENCES = 100_000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: A GetLinkResult page stops before this many bytes of clusters (under gRPC's 4 MiB default);
#: a single larger cluster is still sent whole, alone on its page.
MAX_PAGE_BYTES = 3 * 2**20
DEFAULT_MIN_PROBABILITY = 0.5
#: A lookup's candidates go down to this probability: staff judge each answer, and a child whose
#: family name changed and who moved house scores below the batch link's 0.5 on given name,
#: date of birth and sex alone. Below 0.5 a candidate is in the band "low".
LOOKUP_MIN_PROBABILITY = 0.1
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


class FormMap:
    """Which published rows are forms, and of which record, per agency (thread-safe).

    A row not held here is a record published as itself. Holds only the forms (a record
    lacking sex: about one in a hundred at scale), so it costs nothing for the others.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._record: dict[str, dict[str, str]] = {}  # agency -> form reference -> record
        self._forms: dict[str, dict[str, int]] = {}  # agency -> record -> how many forms

    def __len__(self) -> int:
        with self._lock:
            return sum(len(held) for held in self._record.values())

    def record_of(self, agency: str, reference: str) -> str:
        """The record ``reference`` is a form of, or ``reference`` itself."""
        held = self._record.get(agency)
        return reference if held is None else held.get(reference, reference)

    def assign(self, agency: str, references: Sequence[str], form_of: Sequence[str]) -> None:
        """Row ``references[i]`` is a form of ``form_of[i]`` ("" = a record itself)."""
        with self._lock:
            held = self._record.setdefault(agency, {})
            counts = self._forms.setdefault(agency, {})
            for reference, record in zip(references, form_of, strict=True):
                self._drop(held, counts, reference)
                if record:
                    held[reference] = record
                    counts[record] = counts.get(record, 0) + 1

    def discard(self, agency: str, references: Sequence[str]) -> None:
        """Forget these rows (withdrawn or replaced); references that are no form are ignored."""
        with self._lock:
            held = self._record.get(agency)
            if held:
                counts = self._forms[agency]
                for reference in references:
                    self._drop(held, counts, reference)

    @staticmethod
    def _drop(held: dict[str, str], counts: dict[str, int], reference: str) -> None:
        record = held.pop(reference, None)
        if record is not None:
            counts[record] -= 1
            if not counts[record]:
                del counts[record]

    def surplus_rows(self) -> dict[str, int]:
        """Per agency, rows minus records: forms held, less the records they belong to."""
        with self._lock:
            return {
                agency: len(held) - len(self._forms[agency])
                for agency, held in self._record.items()
            }

    def records(self, agency_of: Sequence[str], references: Sequence[str]) -> list[str]:
        """``record_of`` of each (agency, reference) pair."""
        return [
            self.record_of(agency, reference)
            for agency, reference in zip(agency_of, references, strict=True)
        ]


def candidates_per_record(
    found: Sequence[Sequence[IndexedCandidate]], form_map: FormMap, limit: int
) -> list[IndexedCandidate]:
    """One lookup's candidates from the ranked lists of its query rows (each best first):
    each record once, at its most probable candidate over every row and every form of it
    (the earlier row on a tie), reported under the record's reference, most probable first,
    at most ``limit`` of them."""
    ranked = sorted(itertools.chain.from_iterable(found), key=lambda c: -c.probability)
    out: list[IndexedCandidate] = []
    seen: set[tuple[str, str]] = set()
    for candidate in ranked:
        record = form_map.record_of(candidate.agency, candidate.reference)
        if (candidate.agency, record) in seen:
            continue
        seen.add((candidate.agency, record))
        if record != candidate.reference:
            candidate = dataclasses.replace(candidate, reference=record)
        out.append(candidate)
        if len(out) == limit:
            break
    return out


def rows_of_lookup(rows: Sequence[EncodedBatch]) -> EncodedBatch:
    """A lookup's validated one-row batches as one batch (the one row as it is)."""
    return rows[0] if len(rows) == 1 else concat_batches(rows)


def record_numbers(members: Sequence[tuple[str, str]]) -> NDArray[np.int64] | None:
    """Per row, a number for its member (record): 0.. in order of first appearance; None
    when every row is its own record (no forms)."""
    numbers: dict[tuple[str, str], int] = {}
    out = np.fromiter(
        (numbers.setdefault(member, len(numbers)) for member in members),
        dtype=np.int64,
        count=len(members),
    )
    return None if len(numbers) == len(members) else out


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
    advance (:class:`~server.matcher.wire.EvidenceTable`), so pass ``table`` (built once
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
        form_map: FormMap | None = None,
        signer: Signer | None = None,
        refusals: RefusalTally | None = None,
    ) -> None:
        self._config = config
        self._refusals = refusals
        # holds the nodes' audit heads, signed with the matcher's key (server.common.anchor)
        self._signer = signer if signer is not None else Signer.from_tls(config.tls)
        self._witness = Witness(
            self._signer, load_ca(config.tls.ca_cert), ReceiptFile.witnessed_of(audit.path)
        )
        self._limits = (
            limits if limits is not None else MatchLimits.from_config(config.match_limits)
        )
        self._schema = config.schema
        self._key_version = config.key_version
        self._store = store
        self._index = index
        # the index's forms and their records (rebuild_index fills it with the index)
        self._forms = form_map if form_map is not None else FormMap()
        self._max_forms = forms.max_forms(config.schema)
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
        """Records held (a record published as forms counts once)."""
        return len(self._index) - sum(self._forms.surplus_rows().values())

    # ------------------------------------------------------------------ Publish

    @grpc_errors
    def Publish(
        self,
        request_iterator: Iterator[jigsaw_pb2.PublishRequest],
        context: grpc.ServicerContext,
    ) -> jigsaw_pb2.PublishResponse:
        identity = current_identity(context)
        agency = identity.agency  # from the certificate, never from the message
        totals = {
            "messages": 0, "received": 0, "inserted": 0, "replaced": 0, "unchanged": 0, "forms": 0
        }  # fmt: skip
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
            forms=totals["forms"],
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
            batch, references, form_of = columns_message_to_encoded(
                request.columns, self._schema, key_version=self._key_version
            )
        elif count:
            batch, references, form_of = records_to_encoded(
                request.records, self._schema, key_version=self._key_version
            )
        if count:
            with self._write_lock:
                counts = self._store.upsert(agency, references, batch, form_of)  # committed
                # the map first, so that a concurrent Match never sees a form it cannot map;
                # the rows the store replaced (a record's old forms, or its own row) go after
                self._forms.assign(agency, references, form_of)
                if counts.removed:
                    self._index.remove(agency, counts.removed)
                    self._forms.discard(agency, counts.removed)
                if counts.changed_rows:
                    rows = list(counts.changed_rows)
                    if rows == list(range(count)):  # every record new or changed: no copy
                        self._index.upsert(agency, references, batch)
                    else:
                        self._index.upsert(agency, [references[r] for r in rows], batch.take(rows))
            totals["inserted"] += counts.inserted
            totals["replaced"] += counts.replaced
            totals["unchanged"] += counts.unchanged
            totals["forms"] += sum(1 for record in form_of if record)
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
            deleted = self._store.delete(identity.agency, references)  # records and forms
            self._index.remove(identity.agency, [*references, *deleted.removed])
            self._forms.discard(identity.agency, deleted.removed)
        withdrawn = deleted.withdrawn
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
            person = require_text(request.on_behalf_of, "on_behalf_of", MAX_ON_BEHALF_OF_CHARS)
            details["on_behalf_of"] = person
            self._check_match_limits(identity.name, identity.agency, person)  # before decoding
            purpose = require_purpose_code(
                request.purpose_code, "purpose_code", self._config.purposes
            )
            check_header(request, self._schema, self._key_version)
            max_candidates = request.max_candidates or DEFAULT_MAX_CANDIDATES
            if max_candidates > MAX_CANDIDATES:
                raise RequestError("max_candidates", f"at most {MAX_CANDIDATES}")
            rows = len(request.queries)
            if not 1 <= rows <= MAX_QUERY_ROWS:
                raise RequestError(
                    "queries", f"expected 1 to {MAX_QUERY_ROWS} encoded rows, got {rows}"
                )
            queries = queries_to_encoded(
                request.queries, self._schema, key_version=self._key_version
            )
            if len(request.hypotheses) > MAX_HYPOTHESIS_ROWS:
                raise RequestError(
                    "hypotheses",
                    f"expected at most {MAX_HYPOTHESIS_ROWS} encoded rows, "
                    f"got {len(request.hypotheses)}",
                )
            hypotheses = queries_to_encoded(
                request.hypotheses,
                self._schema,
                key_version=self._key_version,
                field="hypotheses",
            )
            if rows > 1:
                details["queries"] = rows
            if hypotheses:
                details["hypotheses"] = len(hypotheses)
            candidates: list[jigsaw_pb2.Candidate] = []
            if len(self._index):
                model = self._ensure_model()
                # every row in one pass; the full scan only for the query's rows, and only
                # when blocking found no confident candidate (linkage.index.query docstring:
                # measured to lose no record), the hypotheses through blocking only; a
                # record's forms may take several places: ask each row for enough, keep each
                # record once
                found = candidates_per_record(
                    [
                        self._index.query_rows(
                            rows_of_lookup([*queries, *hypotheses]),
                            model,
                            max_candidates=max_candidates * self._max_forms,
                            min_probability=LOOKUP_MIN_PROBABILITY,
                            confident_probability=CONFIDENT_PROBABILITY,
                            scanning_rows=len(queries),
                        )
                    ],
                    self._forms,
                    max_candidates,
                )
                # Raw probabilities only in benchmark mode and only for operators; Match is a
                # node-only RPC (MATCHER_POLICY), so nodes always receive probability 0.
                reveal = self._config.benchmark_mode and identity.role == "operator"
                table = self._evidence
                if table is None or table.model is not model:
                    table = self._evidence = evidence_table(model)  # a new model: once
                candidates = candidates_from_table(found, table, reveal_probability=reveal)
        except BaseException as exc:
            outcome = _outcome_of(exc)
            if outcome == "rate_limited" and self._refusals is not None:
                self._refusals.count(  # one entry per node and person per interval
                    identity.name,
                    "match",
                    outcome,
                    on_behalf_of=str(details.get("on_behalf_of", "")),
                )
            else:
                self._audit.append(
                    actor=identity.name,
                    action="match",
                    purpose=purpose,
                    outcome=outcome,
                    details=details,
                )
            raise
        details["candidates"] = len(candidates)
        self._audit.append(
            actor=identity.name, action="match", purpose=purpose, outcome="ok", details=details
        )
        return jigsaw_pb2.MatchResponse(candidates=candidates)

    def _check_match_limits(self, caller: str, agency: str, person: str) -> None:
        """Raise RateLimitedError when ``caller`` (a node), or ``person`` at it, is over a
        bucket or an hourly cap, charging none of them; alert once per burst.

        The guard counts every call the buckets would let through, answered or refused by a
        cap, so a node that keeps hitting its cap (which may equal the threshold) is still
        alerted. The retry-after is the longest wait of the limits that refused.
        """
        limits = self._limits
        key = limits.person(caller, person)
        waits = limits.charge.acquire(
            [
                (limits.rate, caller),
                (limits.person_rate, key),
                (limits.cap, caller),
                (limits.person_cap, key),
            ]
        )
        paced = waits is None or (waits[0] is None and waits[1] is None)
        if paced and limits.guard.observe(caller):
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
        if waits is not None:
            raise RateLimitedError(max(wait for wait in waits if wait is not None))

    def _ensure_model(self) -> FellegiSunterModel:
        """The current model, fitted on the index (and stored) if there is none yet.

        The fit uses at most :data:`MODEL_FIT_RECORDS` records drawn at random: scoring every
        blocked pair of a million-record index takes more memory than a matcher host has, and
        m and u probabilities are proportions that a sample of this size estimates well. A
        ``Link`` refits on everything it links.
        """
        with self._model_lock:
            if self._model is None:
                batch, codes, references = self._index.snapshot(
                    sample=MODEL_FIT_RECORDS, seed=MODEL_FIT_SEED
                )
                if len(batch) < 2:
                    raise ModelError("no fitted model: at least 2 published records are needed")
                started = time.perf_counter()
                members = self._members(codes, references)
                # the forms of one record are no pair (and would look like matches)
                record = record_numbers(members)
                model = pipeline.score_pairs(self._schema, batch, None, record=record).model
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
                # a form's member is its record: the forms of a record are clustered as one
                members = self._members(codes[order], [references[r] for r in order])
                record = record_numbers(members)
                total_records = len(set(members))
                result = pipeline.cluster_datasets(
                    self._schema,
                    datasets,
                    options=pipeline.LinkageOptions(min_probability=job.min_probability),
                    progress=job.progress,
                    record=record,
                )
                job.progress("storing", 0, 1)
                clusters = build_clusters(
                    result,
                    members,
                    job.min_probability,
                    schema=self._schema,
                    present=batch.field_present[order],  # the clustered order
                )
                self._store.finish_link(result_id, clusters, total_records=total_records)
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
                    "records": total_records,
                    "clusters": len(clusters),
                    "refused_unions": result.refused_unions,
                    "size_splits": result.size_splits,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )
            # the splits are counts only; LinkProgress has no field for them (proto unchanged)
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
                    outcome=_outcome_of(exc),
                    details={"result_id": result_id},
                )
            finally:
                job.events.put(("error", exc if isinstance(exc, Exception) else RuntimeError()))

    def _members(
        self, codes: NDArray[np.int16], references: Sequence[str]
    ) -> list[tuple[str, str]]:
        """(agency, record reference) of each snapshot row: a form's is its record's."""
        agencies = [self._index.agency_name(int(code)) for code in codes.tolist()]
        return list(zip(agencies, self._forms.records(agencies, references), strict=True))

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
                f"{result_id}-{offset + i}", cluster, self._schema.comparison_names
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

    # ------------------------------------------------------------------ GetLinkedRecords

    @grpc_errors
    def GetLinkedRecords(
        self, request: jigsaw_pb2.GetLinkedRecordsRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.GetLinkedRecordsResponse:
        identity = current_identity(context)
        if request.result_id and not _RESULT_ID.match(request.result_id):
            raise RequestError("result_id", "expected 32 lowercase hex characters or empty")
        info = (
            self._store.link_result(request.result_id)
            if request.result_id
            else self._store.latest_link_result()
        )
        if info is None or info.status != "complete":
            raise NotFoundError("result_id: no completed link result (run a link first)")
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if page_size > MAX_PAGE_SIZE:
            raise RequestError("page_size", f"at most {MAX_PAGE_SIZE}")
        offset = decode_page_token(request.page_token, info.result_id, info.total_clusters)
        records: list[jigsaw_pb2.LinkedRecord] = []
        while offset < info.total_clusters and len(records) < page_size:
            chunk = self._store.link_clusters(info.result_id, offset=offset, limit=page_size)
            for cluster in chunk:  # the agency's own members only (the certificate's O)
                records.extend(
                    linked_records(f"{info.result_id}-{offset}", cluster, identity.agency)
                )
                offset += 1
                if len(records) >= page_size:
                    break
        self._audit.append(
            actor=identity.name,
            action="linked_records",
            outcome="ok",
            details={
                "agency": identity.agency,
                "result_id": info.result_id,
                "records": len(records),
            },
        )
        return jigsaw_pb2.GetLinkedRecordsResponse(
            result_id=info.result_id,
            records=records,
            next_page_token=(
                encode_page_token(info.result_id, offset) if offset < info.total_clusters else ""
            ),
        )

    # ------------------------------------------------------------------ Status

    @grpc_errors
    def Status(
        self, request: jigsaw_pb2.MatcherStatusRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.MatcherStatusResponse:
        counts = self._index.counts_by_agency()
        for agency, surplus in self._forms.surplus_rows().items():  # records, not forms
            counts[agency] = counts.get(agency, 0) - surplus
        return jigsaw_pb2.MatcherStatusResponse(
            schema_fingerprint=self._schema.fingerprint(),
            key_version=self._key_version,
            agencies=[
                jigsaw_pb2.AgencyCount(agency=agency, records=count)
                for agency, count in sorted(counts.items())
                if count
            ],
            indexed_records=sum(counts.values()),
            version=_version(),
        )

    # ------------------------------------------------------------------ audit anchoring

    @grpc_errors
    def AnchorHead(
        self, request: jigsaw_pb2.AnchorHeadRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.AnchorHeadResponse:
        """Hold a node's signed audit head; answer a receipt and the matcher's own head."""
        identity = current_identity(context)
        details: dict[str, str | int] = {"caller_agency": identity.agency}
        try:
            receipt, head, check = self._witness.hold(Signed.from_proto(request.head), identity)
        except AnchorError as exc:
            self._audit.append(
                actor=identity.name,
                action="audit_anchor",
                outcome="invalid_argument",
                details=details,
            )
            raise RequestError("head", f"expected a head signed by the caller: {exc}") from None
        self._audit.append(
            actor=identity.name,
            action="audit_anchor",
            outcome=check,
            details={**details, "owner_seq": head.seq},
        )
        seq, chain_hash = self._audit.durable_head()  # after the entry above
        return jigsaw_pb2.AnchorHeadResponse(
            receipt=receipt.to_proto(),
            matcher_head=self._signer.sign_head(seq, chain_hash).to_proto(),
        )

    @grpc_errors
    def GetAnchors(
        self, request: jigsaw_pb2.GetAnchorsRequest, context: grpc.ServicerContext
    ) -> Iterator[jigsaw_pb2.GetAnchorsResponse]:
        """The heads of one identity the matcher holds, with its receipts, in pages."""
        owner = require_text(request.owner, "owner", MAX_ON_BEHALF_OF_CHARS)
        yield from pages(self._witness.held(owner))


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
    refusals: RefusalTally

    def close(self) -> None:
        """Wait for link runs, then release the store and audit log (after the server stopped)."""
        self.servicer.join_links()
        self.refusals.close()
        self.audit.close()
        self.store.close()


def rebuild_index(
    store: MatcherStore, *, chunk_size: int = REBUILD_CHUNK, form_map: FormMap | None = None
) -> MatchIndex:
    """A MatchIndex holding every row in ``store``; ``form_map``, when given, is told which
    of them are forms of which record."""
    started = time.perf_counter()
    index = MatchIndex(store.schema, key_version=store.key_version, capacity=store.count())
    for chunk in store.iter_encodings(chunk_size=chunk_size):
        if form_map is not None and any(chunk.form_of):
            form_map.assign(chunk.agency, chunk.references, chunk.form_of)
        index.upsert(chunk.agency, chunk.references, chunk.batch)
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
    thresholds = tuple(tuple(spec.levels) for spec in config.schema.comparison_specs)
    if model.field_names != config.schema.comparison_names or model.thresholds != thresholds:
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
    refusals: RefusalTally | None = None
    try:
        form_map = FormMap()
        index = rebuild_index(store, form_map=form_map)
        audit = AuditLog(config.audit_log)
        refusals = RefusalTally(audit)
        servicer = MatcherServicer(
            config,
            store=store,
            index=index,
            audit=audit,
            model=_load_model(store, config),
            limits=MatchLimits.from_config(config.match_limits, clock=clock),
            form_map=form_map,
            refusals=refusals,
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
            refusals=refusals,
        )
    except BaseException:
        if refusals is not None:
            refusals.close()
        if audit is not None:
            audit.close()
        store.close()
        raise
    return MatcherRuntime(server, port, servicer, store, audit, refusals)


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
    "FormMap",
    "MatchLimits",
    "MatcherRuntime",
    "MatcherServicer",
    "build_clusters",
    "build_matcher",
    "candidates_per_record",
    "create_server",
    "decode_page_token",
    "encode_page_token",
    "rebuild_index",
    "record_numbers",
    "serve",
]
