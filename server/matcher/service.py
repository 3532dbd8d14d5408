"""The matcher's gRPC server: Publish, Withdraw, Match, Link, GetLinkResult, GetLinkedRecords,
Status and audit anchoring.

Role in the pipeline: steps 2, 3 and 5 of the data flow. Agency nodes stream their encodings
in (``Publish``) and withdraw them (``Withdraw``); a node asks ``Match`` on behalf of a staff
member, once per lookup, with the lookup's encoded query rows and date hypotheses, and gets one
ranked list of candidates across every agency, its own included; an operator runs a batch
``Link`` over everything published and pages through the stored clusters
(``GetLinkResult``); each node then fetches its own records of a result that share a cluster
with another agency's (``GetLinkedRecords``). The matcher sees encodings, opaque references,
agency ids, fingerprints, purpose codes (a closed list, :mod:`server.common.purposes`) and
counts only: it has no linkage secret and no identifier value ever reaches it.

This module parses, authorises and converts; the work is done by
:class:`~server.matcher.records.PublishedRecords` (store, index and form map in step),
:class:`~server.matcher.model.MatchModel`, :class:`~server.matcher.links.Linker`,
:mod:`server.matcher.pages` and :class:`~server.matcher.limits.MatchLimits`.

Contract:

- every call passes :class:`server.common.auth.AuthInterceptor` with
  :data:`server.common.auth.MATCHER_POLICY` first (Publish, Withdraw, Match,
  GetLinkedRecords: node; Link, GetLinkResult, Status: operator); the publishing agency is the
  ``O`` of the node's certificate, never a message field;
- Match answers carry a band and per-field evidence; the raw probability only in benchmark
  mode *and* for an operator caller (so nodes always get 0); Match needs its limits first
  (a refusal is ``RESOURCE_EXHAUSTED`` with ``retry-after-s``, counted in the
  :class:`~server.common.refusals.RefusalTally`, not audited one by one); AnchorHead is paced
  per calling identity in the same way (``[anchor_limits]``, an ``anchor_alert``), before
  the head is read;
- Publish streams, withdrawals, matches, link runs and linked-record reads are audited (who,
  agency, purpose, counts, ids), except a Publish stream refused before it changed anything,
  which the refusal tally counts; message contents are never logged;
- errors go through :mod:`server.common.status`: a header whose fingerprint or key version
  differs is ``FAILED_PRECONDITION`` saying which; a malformed message is
  ``INVALID_ARGUMENT`` naming the field (``columns.field_filters[j]``,
  ``queries[i].field_filters[j]``); an unknown link result is ``NOT_FOUND``.

:func:`build_matcher` opens the store (rebuilding the index from it), the audit log and the
server; the :class:`MatcherRuntime` it returns closes them, after any link run finished.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata

import grpc

from linkage.scoring import FellegiSunterModel
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.anchor import AnchorError, ReceiptFile, Signed, Signer, Witness, load_ca, pages
from server.common.audit import AuditLog
from server.common.auth import MATCHER_POLICY, current_identity
from server.common.guard import Watch, outcome_of
from server.common.limits import DEFAULT_MAX_CANDIDATES, MAX_CANDIDATES
from server.common.purposes import require_purpose_code
from server.common.ratelimit import Clock, EnumerationGuard, RateLimiter
from server.common.refusals import RefusalTally
from server.common.serving import Runtime, build_grpc_server, serve_until_signal
from server.common.status import (
    RequestError,
    grpc_errors,
    require_reference,
    require_text,
)
from server.matcher.config import MatcherConfig
from server.matcher.limits import MATCH_WINDOW_S, MatchLimits
from server.matcher.links import Linker
from server.matcher.memory import fix_mmap_threshold, release_free_memory
from server.matcher.model import MatchModel
from server.matcher.pages import link_result_page, linked_records_page
from server.matcher.records import DEFAULT_MIN_PROBABILITY, PublishedRecords
from server.matcher.store import MatcherStore
from server.matcher.wire import (
    candidates_from_table,
    check_header,
    columns_message_to_encoded,
    queries_to_encoded,
)

logger = logging.getLogger(__name__)

SERVICE_NAME = jigsaw_pb2.DESCRIPTOR.services_by_name["Matcher"].full_name
MAX_ON_BEHALF_OF_CHARS = 128
#: Query rows one Match may carry: a lookup's hypotheses about one person (one row per value
#: of the salt fields of few values it lacks), with room to spare over the shipped schema's.
MAX_QUERY_ROWS = 32
#: Date hypotheses one Match may carry (:func:`linkage.forms.encode_date_hypotheses`: each
#: usual error of the date under each form of the query), with room to spare.
MAX_HYPOTHESIS_ROWS = 64
MAX_WITHDRAW_REFERENCES = 100_000


def _version() -> str:
    try:
        return metadata.version("jigsaw-linkage")
    except metadata.PackageNotFoundError:
        return "unknown"


class MatcherServicer(jigsaw_pb2_grpc.MatcherServicer):
    """The Matcher service over the published records, their model, link runs and audit log."""

    def __init__(
        self,
        config: MatcherConfig,
        *,
        records: PublishedRecords,
        model: MatchModel,
        linker: Linker,
        audit: AuditLog,
        limits: MatchLimits,
        refusals: RefusalTally,
        anchor_limiter: RateLimiter,
        anchor_guard: EnumerationGuard,
        signer: Signer | None = None,
    ) -> None:
        self._config = config
        self._schema = config.schema
        self._key_version = config.key_version
        self._records = records
        self._store = records.store
        self._model = model
        self._linker = linker
        self._audit = audit
        self._limits = limits
        self._refusals = refusals
        self._anchor_limiter = anchor_limiter
        self._anchor_watch = Watch(
            anchor_guard,
            audit,
            action="anchor_alert",
            count_field="anchors_in_window",
            warning="anchor alert: caller %s over the anchoring threshold",
            extra={"window_seconds": int(MATCH_WINDOW_S)},
        )
        # holds the nodes' audit heads, signed with the matcher's key (server.common.anchor)
        self._signer = signer if signer is not None else Signer.from_tls(config.tls)
        self._witness = Witness(
            self._signer, load_ca(config.tls.ca_cert), ReceiptFile.witnessed_of(audit.path)
        )

    @property
    def model(self) -> FellegiSunterModel | None:
        """The model Match scores with (None until fitted or loaded)."""
        return self._model.current

    @property
    def indexed_records(self) -> int:
        """Records held (a record published as forms counts once)."""
        return len(self._records)

    # ------------------------------------------------------------------ Publish, Withdraw

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
            outcome = outcome_of(exc)
            raise
        finally:
            release_free_memory()
            if outcome != "ok" and not (totals["inserted"] or totals["replaced"]):
                # refused before it changed anything: counted, not audited one by one
                self._refusals.count(identity.name, "publish", outcome)
            else:
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
        count = len(request.columns.references)
        limit = self._config.max_publish_batch
        if count > limit:
            raise RequestError(
                "columns.references", f"at most {limit} records per message, got {count}"
            )
        if request.HasField("columns"):  # validated even with no rows: it must still be sound
            batch, references, form_of = columns_message_to_encoded(
                request.columns, self._schema, key_version=self._key_version
            )
        if count:
            counts = self._records.publish(agency, references, batch, form_of)
            totals["inserted"] += counts.inserted
            totals["replaced"] += counts.replaced
            totals["unchanged"] += counts.unchanged
            totals["forms"] += sum(1 for record in form_of if record)
        totals["messages"] += 1
        totals["received"] += count

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
        withdrawn = self._records.withdraw(identity.agency, references)
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
            self._limits.check(self._audit, identity.name, identity.agency, person)
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
                request.hypotheses, self._schema, key_version=self._key_version, field="hypotheses"
            )
            if rows > 1:
                details["queries"] = rows
            if len(hypotheses):
                details["hypotheses"] = len(hypotheses)
            candidates: list[jigsaw_pb2.Candidate] = []
            if self._records.rows:
                model = self._model.ensure()
                found = self._records.query(queries, hypotheses, model, max_candidates)
                # raw probabilities only in benchmark mode and only for operators
                reveal = self._config.benchmark_mode and identity.role == "operator"
                table = self._model.evidence(model)
                candidates = candidates_from_table(found, table, reveal_probability=reveal)
        except BaseException as exc:
            outcome = outcome_of(exc)
            if outcome == "rate_limited":  # one entry per node and person per interval
                person = str(details.get("on_behalf_of", ""))
                self._refusals.count(identity.name, "match", outcome, on_behalf_of=person)
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

    # ------------------------------------------------------------------ Link and its results

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
        for step in self._linker.run(min_probability, identity.name):
            yield jigsaw_pb2.LinkProgress(
                stage=step.stage, done=step.done, total=step.total, result_id=step.result_id
            )

    @grpc_errors
    def GetLinkResult(
        self, request: jigsaw_pb2.GetLinkResultRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.GetLinkResultResponse:
        return link_result_page(self._store, self._schema.comparison_names, request)

    @grpc_errors
    def GetLinkedRecords(
        self, request: jigsaw_pb2.GetLinkedRecordsRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.GetLinkedRecordsResponse:
        identity = current_identity(context)
        # the agency's own members only (the certificate's O)
        response = linked_records_page(self._store, identity.agency, request)
        self._audit.append(
            actor=identity.name,
            action="linked_records",
            outcome="ok",
            details={
                "agency": identity.agency,
                "result_id": response.result_id,
                "records": len(response.records),
            },
        )
        return response

    # ------------------------------------------------------------------ Status

    @grpc_errors
    def Status(
        self, request: jigsaw_pb2.MatcherStatusRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.MatcherStatusResponse:
        counts = self._records.counts_by_agency()
        return jigsaw_pb2.MatcherStatusResponse(
            schema_fingerprint=self._schema.fingerprint(),
            key_version=self._key_version,
            agencies=[
                jigsaw_pb2.AgencyCount(agency=agency, records=count)
                for agency, count in sorted(counts.items())
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
        self._anchor_watch.check(  # every attempt, before the head is read
            identity.name,
            self._anchor_limiter.acquire(identity.name),
            actor=identity.name,
            details=details,
            refuse=lambda: self._refusals.count(identity.name, "audit_anchor", "rate_limited"),
        )
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


# ---------------------------------------------------------------------------- server


@dataclass
class MatcherRuntime(Runtime):
    """A built (not yet started) matcher server and the resources it owns; closing waits for
    a link run in progress, then closes the audit log and the store."""

    servicer: MatcherServicer
    store: MatcherStore
    audit: AuditLog
    refusals: RefusalTally


def build_matcher(config: MatcherConfig, *, clock: Clock = time.monotonic) -> MatcherRuntime:
    """Build the matcher server bound to ``config.listen`` with mutual TLS, ready to start.

    ``clock`` (monotonic seconds) drives the match and anchor limits; tests pass a fake one.
    """
    fix_mmap_threshold()
    stack = ExitStack()  # every resource, registered as it is opened
    try:
        store = MatcherStore(config.store, schema=config.schema, key_version=config.key_version)
        stack.callback(store.close)
        records = PublishedRecords.load(store)
        audit = AuditLog(config.audit_log)
        stack.callback(audit.close)
        refusals = RefusalTally(audit)
        stack.callback(refusals.close)
        model = MatchModel.load(records)
        linker = Linker(records, model, audit, config.schema)
        stack.callback(linker.join)  # a link run in progress finishes and is stored
        servicer = MatcherServicer(
            config,
            records=records,
            model=model,
            linker=linker,
            audit=audit,
            limits=MatchLimits.from_config(config.match_limits, clock=clock),
            refusals=refusals,
            anchor_limiter=RateLimiter(
                config.anchor_limits.anchors_per_minute, config.anchor_limits.burst, clock=clock
            ),
            anchor_guard=EnumerationGuard(
                config.anchor_limits.alert_per_hour, MATCH_WINDOW_S, clock=clock
            ),
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
            refusals=refusals,
        )
        return MatcherRuntime(server, port, stack.pop_all(), servicer, store, audit, refusals)
    except BaseException:
        stack.close()  # a failed build closes what it had opened
        raise


def serve(config: MatcherConfig, *, on_started: Callable[[int], None] | None = None) -> None:
    """Run the matcher until SIGTERM or SIGINT, then stop gracefully.

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
        serve_until_signal(runtime, on_started=started)
    finally:
        logger.info("matcher stopped")


__all__ = ["MatcherRuntime", "MatcherServicer", "build_matcher", "serve"]
