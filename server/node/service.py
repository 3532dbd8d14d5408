"""The agency node's gRPC server: lookups, disclosures, linked records and status for staff and
operators.

Role in the pipeline: steps 3 and 4 of the data flow. A staff member asks their own node
``Lookup`` with raw identifiers; the node encodes them with the agency's keys (they never
leave the node) and asks the matcher once (:mod:`server.node.lookup`), passing the person's
name and purpose code (the free-text ``note`` stays in this node's audit log), and remembers
which references it returned to whom (:class:`~server.common.ratelimit.RecentAnswers`). The
person then asks ``Disclose`` for one of them: the node releases its own agency's record or
relays the request to the holder's node (:mod:`server.node.disclose`). ``FetchLinked``,
``ListLinked`` and ``ResolveReference`` bring a link result back to the agency
(:mod:`server.node.linked`); ``Status`` reports counts and data quality. The agency's staff
console calls as the person it verified (:mod:`server.node.acting`).

This module parses, authorises and converts; the work is done by the modules named above.

Contract:

- every call passes :class:`server.common.auth.AuthInterceptor` with
  :data:`server.common.auth.NODE_POLICY` first (Lookup: staff; Disclose: staff, and nodes
  relaying; Status, ListLinked: operator, staff, console; ResolveReference: operator, staff;
  FetchLinked: operator), built with the node's agency: another agency's staff are refused;
- lookups and disclosures are rate-limited per person (``RESOURCE_EXHAUSTED`` with
  ``retry-after-s``; a holder limits a relaying agency's people by agency and name), a
  lookup the matcher's limits refused, or a disclosure the holder's refused, is given back
  to the person's limit, and every
  attempt counts towards the enumeration alerts (:class:`server.common.guard.Watch`); a
  disclosure no recent lookup by the same person at this node led to is
  ``FAILED_PRECONDITION``;
- every lookup and disclosure attempt is audited once (actor, purpose, outcome, counts, ids,
  released field *names*), except calls refused by the interceptor, a rate limit (the
  node's, the matcher's or a holder's) or as malformed before any limit was asked (a disclosure, a
  ``ResolveReference``, an ``on_behalf_of`` the caller may not set), which the
  :class:`~server.common.refusals.RefusalTally` counts; no
  identifier value is ever logged, audited or put in a status message;
- errors map to status codes through :mod:`server.common.status`; the matcher or a holder
  failing is :mod:`server.node.upstream`'s status (``UNAVAILABLE`` when unreachable).

:func:`build_node` opens the store, audit log and channels and binds the server; the
:class:`NodeRuntime` it returns closes them all.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import metadata

import grpc

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.anchor import ANCHOR_INTERVAL_S, Anchorer, AnchorError, Signer, load_ca, pages
from server.common.audit import AuditLog
from server.common.auth import NODE_POLICY, Identity, current_identity
from server.common.guard import Watch
from server.common.limits import DEFAULT_MAX_CANDIDATES, MAX_CANDIDATES, MAX_PURPOSE_CHARS
from server.common.pki import UNIT_AGENCY, server_name
from server.common.purposes import require_purpose_code
from server.common.ratelimit import EnumerationGuard, RateLimiter, RecentAnswers
from server.common.refusals import RefusalTally
from server.common.serving import Runtime, build_grpc_server, serve_until_signal
from server.common.status import (
    NotFoundError,
    PreconditionFailed,
    RateLimitedError,
    RequestError,
    grpc_errors,
    require_reference,
    require_text,
)
from server.common.tls import secure_channel
from server.node.acting import MAX_NAME_CHARS, acting_person
from server.node.config import NodeConfig, read_linkage_keys
from server.node.disclose import DISCLOSURE_PRIORITIES, Disclosures
from server.node.linked import fetch_linked, linked_to_proto
from server.node.lookup import Lookups
from server.node.quality import data_quality
from server.node.store import NodeStore
from server.node.upstream import (
    UpstreamError,
    code_of,
    matcher_failure,
    rate_limited,
    upstream_errors,
)

logger = logging.getLogger(__name__)

SERVICE_NAME = jigsaw_pb2.DESCRIPTOR.services_by_name["AgencyNode"].full_name
MAX_NOTE_CHARS = 500
ENUMERATION_WINDOW_S = 3600.0
DEFAULT_LINKED_PAGE = 500
MAX_LINKED_PAGE = 5000
RESULT_ID_RE = re.compile(r"[0-9a-f]{32}")


def _version() -> str:
    try:
        return metadata.version("jigsaw-linkage")
    except metadata.PackageNotFoundError:
        return "unknown"


class AgencyNodeServicer(jigsaw_pb2_grpc.AgencyNodeServicer):
    """The AgencyNode service over one store, key set, audit log and matcher channel."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        store: NodeStore,
        audit: AuditLog,
        lookups: Lookups,
        disclosures: Disclosures,
        matcher: jigsaw_pb2_grpc.MatcherStub,
        limiter: RateLimiter,
        guard: EnumerationGuard,
        disclosure_limiter: RateLimiter,
        disclosure_guard: EnumerationGuard,
        answers: RecentAnswers,
        anchorer: Anchorer,
        refusals: RefusalTally,
    ) -> None:
        self._config = config
        self._fingerprint = config.schema.fingerprint()
        self._store = store
        self._audit = audit
        self._lookups = lookups
        self._disclosures = disclosures
        self._matcher = matcher
        self._limiter = limiter
        self._lookup_watch = Watch(
            guard,
            audit,
            action="enumeration_alert",
            count_field="lookups_in_window",
            warning="enumeration alert: caller %s over the lookup threshold",
        )
        self._disclosure_limiter = disclosure_limiter
        self._disclosure_watch = Watch(
            disclosure_guard,
            audit,
            action="disclosure_alert",
            count_field="disclosures_in_window",
            warning="disclosure alert: %s over the disclosure threshold",
        )
        self._answers = answers
        self._anchorer = anchorer
        self._refusals = refusals

    # ------------------------------------------------------------------ Lookup

    @grpc_errors
    @upstream_errors
    def Lookup(
        self, request: jigsaw_pb2.LookupRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.LookupResponse:
        caller = current_identity(context)
        lookup_id = secrets.token_hex(16)
        base: dict[str, str | int] = {"lookup_id": lookup_id, "caller_agency": caller.agency}
        try:
            identity = acting_person(caller, request.on_behalf_of)
        except RequestError:  # before any limit: counted, not audited one by one
            self._refusals.count(caller.name, "lookup", "invalid_argument")
            raise
        if identity is not caller:
            base["via"] = caller.name
        # every attempt counts towards the alert, refused or not
        self._lookup_watch.check(
            identity.name,
            self._limiter.acquire(identity.name),
            actor=identity.name,
            details=base,
            refuse=lambda: self._refusals.count(identity.name, "lookup", "rate_limited"),
        )
        try:
            purpose = require_purpose_code(
                request.purpose_code, "purpose_code", self._config.purposes
            )
            note = require_text(request.note, "note", MAX_NOTE_CHARS)
            lookup = self._lookups.encode(request.identifiers, lookup_id)
        except RequestError:
            self._audit_lookup(identity, "", "invalid_argument", base)
            raise
        base["note"] = note  # the staff member's words: this audit log only, never the matcher
        if len(lookup.queries) > 1:
            base["queries"] = len(lookup.queries)
        max_candidates = min(request.max_candidates or DEFAULT_MAX_CANDIDATES, MAX_CANDIDATES)
        try:
            candidates = self._lookups.match(
                lookup, max_candidates=max_candidates, purpose=purpose, person=identity.name
            )
        except RateLimitedError:
            # the matcher's [match_limits] for this node or this person: staff get the same
            # status and its retry-after, as for the node's own limits; a lookup nobody
            # answered costs the person nothing here, and is counted, not audited one by one
            self._limiter.refund(identity.name)
            self._refusals.count(identity.name, "lookup", "matcher_rate_limited")
            raise
        except UpstreamError:
            self._audit_lookup(identity, purpose, "matcher_error", base)
            raise
        self._answers.record(identity.name, ((c.agency, c.reference) for c in candidates))
        found = len(candidates)
        self._audit_lookup(identity, purpose, "ok", {**base, "candidates": found})
        # debug, not info: every lookup is in the audit log already
        logger.debug("lookup %s: %d candidates", lookup_id, found)
        return jigsaw_pb2.LookupResponse(
            lookup_id=lookup_id, candidates=candidates, notes=lookup.notes
        )

    def _audit_lookup(
        self,
        identity: Identity,
        purpose: str,
        outcome: str,
        details: Mapping[str, str | int],
    ) -> None:
        self._audit.append(
            actor=identity.name, action="lookup", purpose=purpose, outcome=outcome, details=details
        )

    # ------------------------------------------------------------------ Disclose

    @grpc_errors
    @upstream_errors
    def Disclose(
        self, request: jigsaw_pb2.DiscloseRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.DiscloseResponse:
        identity = current_identity(context)
        disclosure_id = secrets.token_hex(16)
        relayed = identity.role == "node"
        actor = identity.name  # until a relaying node's on_behalf_of is known to be sound
        role = identity.role
        base: dict[str, str | int] = {
            "disclosure_id": disclosure_id,
            "caller_agency": identity.agency,
            "caller_role": "staff" if identity.role in ("node", "console") else identity.role,
        }
        if identity.role in ("node", "console"):
            base["via"] = identity.name
        try:
            if relayed:
                require_text(request.on_behalf_of, "on_behalf_of", MAX_NAME_CHARS)
            else:
                acting = acting_person(identity, request.on_behalf_of)
                actor, role = acting.name, acting.role
            reference = require_reference(request.reference, "reference")
            purpose = require_purpose_code(
                request.purpose_code, "purpose_code", self._config.purposes
            )
            if relayed and request.note:
                raise RequestError("note", "kept on the requesting node; never relayed")
            note = require_text(request.note, "note", MAX_NOTE_CHARS, allow_empty=True)
            if request.priority not in DISCLOSURE_PRIORITIES:
                raise RequestError(
                    "priority",
                    "expected one of " + ", ".join(p for p in DISCLOSURE_PRIORITIES if p),
                )
        except RequestError:
            self._refusals.count(actor, "disclose", "invalid_argument")
            raise
        if note:
            base["note"] = note  # the staff member's words: this node's audit log only
        if request.priority:
            base["priority"] = request.priority
        if relayed:
            actor = request.on_behalf_of  # the relaying node's staff member is the actor
        base["reference"] = reference
        # the holder limits each relaying agency's people apart from its own staff
        person = f"{identity.agency}/{actor}" if relayed else actor
        self._disclosure_watch.check(  # every attempt, refused or not
            person,
            self._disclosure_limiter.acquire(person),
            actor=actor,
            details=base,
            refuse=lambda: self._refusals.count(person, "disclose", "rate_limited"),
        )
        if relayed:
            # the requesting node checked that its staff member's lookup returned the reference
            return self._disclosures.release(actor, "staff", purpose, reference, base)
        holder = self._answers.holder_of(actor, reference)
        if holder is None:
            self._disclosures.audit(actor, purpose, "no_lookup", base)
            raise PreconditionFailed(
                "reference: no lookup of yours at this node returned it in the last "
                f"{self._answers.window_seconds / 60:g} minutes; look the child up first"
            )
        if holder == self._config.agency:
            return self._disclosures.release(actor, role, purpose, reference, base)
        try:
            return self._disclosures.relay(actor, holder, purpose, reference, base)
        except RateLimitedError:
            # the holder's limit for this person: nothing was released, so it costs the
            # person nothing here, and is counted, not audited one by one
            self._disclosure_limiter.refund(person)
            self._refusals.count(actor, "disclose", "holder_rate_limited")
            raise

    # ------------------------------------------------------------------ linked records

    @grpc_errors
    @upstream_errors
    def FetchLinked(
        self, request: jigsaw_pb2.FetchLinkedRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.FetchLinkedResponse:
        identity = current_identity(context)
        if request.result_id and not RESULT_ID_RE.fullmatch(request.result_id):
            raise RequestError("result_id", "expected 32 lowercase hex characters or empty")
        try:
            result_id, count = fetch_linked(self._store, self._matcher, request.result_id)
        except grpc.RpcError as exc:
            self._audit.append(actor=identity.name, action="fetch_linked", outcome="error")
            if code_of(exc) == grpc.StatusCode.NOT_FOUND:
                raise PreconditionFailed(
                    "the matcher holds no such completed link result; run a link first"
                ) from None
            raise matcher_failure(exc, self._config.matcher) from None
        self._audit.append(
            actor=identity.name,
            action="fetch_linked",
            outcome="ok",
            details={"result_id": result_id, "linked_records": count},
        )
        return jigsaw_pb2.FetchLinkedResponse(result_id=result_id, linked_records=count)

    @grpc_errors
    def ListLinked(
        self, request: jigsaw_pb2.ListLinkedRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.ListLinkedResponse:
        caller = current_identity(context)
        base: dict[str, str | int] = {"caller_agency": caller.agency}
        try:
            identity = acting_person(caller, request.on_behalf_of)
        except RequestError:  # counted, not audited one by one
            self._refusals.count(caller.name, "list_linked", "invalid_argument")
            raise
        if identity is not caller:
            base["via"] = caller.name
        page_size = request.page_size or DEFAULT_LINKED_PAGE
        if page_size > MAX_LINKED_PAGE:
            raise RequestError("page_size", f"at most {MAX_LINKED_PAGE}")
        total = self._store.linked_count()
        # a token is a position in the list that this node handed out (the last record of the
        # previous page; positions run 1..total without a gap, so it is also the page's offset
        # and a page is one keyset range of the store's index): nothing else is taken (nor
        # written to the audit log, where a caller's number could be anything)
        token = request.page_token
        if token and not (token.isdigit() and len(token) <= 12 and int(token) <= total):
            raise RequestError("page_token", "pass next_page_token back unchanged")
        offset = int(token or 0)
        rows = self._store.linked_page(offset, page_size)
        end = offset + len(rows)
        self._audit.append(
            actor=identity.name,
            action="list_linked",
            outcome="ok",
            details={**base, "offset": offset, "records": len(rows)},
        )
        return jigsaw_pb2.ListLinkedResponse(
            result_id=self._store.get_meta("linked_result_id") or "",
            fetched_at=self._store.get_meta("linked_fetched_at") or "",
            records=[linked_to_proto(row) for row in rows],
            next_page_token=str(end) if rows and end < total else "",
            total_records=total,
        )

    @grpc_errors
    def ResolveReference(
        self, request: jigsaw_pb2.ResolveReferenceRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.ResolveReferenceResponse:
        identity = current_identity(context)
        base: dict[str, str | int] = {"caller_agency": identity.agency}
        try:
            reference = require_reference(request.reference, "reference")
            purpose = require_text(request.purpose, "purpose", MAX_PURPOSE_CHARS)
        except RequestError:  # counted, not audited one by one
            self._refusals.count(identity.name, "resolve", "invalid_argument")
            raise
        base["reference"] = reference
        record = self._store.get_by_reference(reference)
        outcome = "not_found" if record is None or record.deleted else "ok"
        # the local id is an identifier: the audit entry names the reference only
        self._audit.append(
            actor=identity.name, action="resolve", purpose=purpose, outcome=outcome, details=base
        )
        if record is None or record.deleted:
            raise NotFoundError(
                f"reference: no record with this reference at {self._config.agency}"
            )
        return jigsaw_pb2.ResolveReferenceResponse(reference=reference, local_id=record.local_id)

    # ------------------------------------------------------------------ Status

    @grpc_errors
    def Status(
        self, request: jigsaw_pb2.NodeStatusRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.NodeStatusResponse:
        counts = self._store.counts()
        return jigsaw_pb2.NodeStatusResponse(
            agency=self._config.agency,
            records=counts.records,
            published=counts.published,
            pending=counts.pending,
            schema_fingerprint=self._fingerprint,
            key_version=self._config.key_version,
            version=_version(),
            quality=data_quality(self._store, self._config.schema),
        )

    # ------------------------------------------------------------------ audit anchoring

    @grpc_errors
    @upstream_errors
    def AnchorAudit(
        self, request: jigsaw_pb2.AnchorAuditRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.AnchorAuditResponse:
        """Anchor this node's audit head with the matcher now (server.common.anchor)."""
        try:
            receipt, seq = self._anchorer.anchor_now()
        except grpc.RpcError as exc:
            limited = rate_limited(exc)  # the matcher's [anchor_limits] for this node
            if limited is not None:
                raise limited from None
            raise matcher_failure(exc, self._config.matcher) from None
        except AnchorError as exc:
            raise PreconditionFailed(f"the matcher's answer to the anchoring: {exc}") from None
        response = jigsaw_pb2.AnchorAuditResponse(seq=seq)
        if receipt is not None:
            response.receipt.CopyFrom(receipt.to_proto())
        return response

    @grpc_errors
    def GetAnchors(
        self, request: jigsaw_pb2.GetAnchorsRequest, context: grpc.ServicerContext
    ) -> Iterator[jigsaw_pb2.GetAnchorsResponse]:
        """The matcher's audit heads this node holds, with its receipts, in pages."""
        owner = require_text(request.owner, "owner", MAX_NAME_CHARS)
        yield from pages(self._anchorer.witness.held(owner))


# ---------------------------------------------------------------------------- server


@dataclass
class NodeRuntime(Runtime):
    """A built (not yet started) node server and the resources it owns; closing writes the
    refused calls counted, anchors the final audit head, then closes the channels, the audit
    log and the store."""

    servicer: AgencyNodeServicer
    store: NodeStore
    audit: AuditLog
    refusals: RefusalTally
    anchorer: Anchorer


def build_node(config: NodeConfig, *, anchor_interval_s: float = ANCHOR_INTERVAL_S) -> NodeRuntime:
    """Build the node server bound to ``config.listen`` with mutual TLS, ready to start.

    Its audit head is anchored with the matcher every ``anchor_interval_s`` seconds (when it
    moved) from now on, and at close (:class:`server.common.anchor.Anchorer`).
    """
    keys = read_linkage_keys(config)
    stack = ExitStack()  # every resource, registered as it is opened
    try:
        store = NodeStore(config.store)
        stack.callback(store.close)
        audit = AuditLog(config.audit_log)
        stack.callback(audit.close)
        channel = secure_channel(
            config.matcher, config.tls, expect=server_name("matcher", UNIT_AGENCY)
        )
        stack.callback(channel.close)
        peers: dict[str, jigsaw_pb2_grpc.AgencyNodeStub] = {}
        for agency, address in config.peers.items():
            peer = secure_channel(address, config.tls, expect=server_name("node", agency))
            stack.callback(peer.close)
            peers[agency] = jigsaw_pb2_grpc.AgencyNodeStub(peer)  # type: ignore[no-untyped-call]
        refusals = RefusalTally(audit)
        stack.callback(refusals.close)
        matcher = jigsaw_pb2_grpc.MatcherStub(channel)  # type: ignore[no-untyped-call]
        anchorer = Anchorer(
            audit,
            Signer.from_tls(config.tls),
            load_ca(config.tls.ca_cert),
            matcher,
            interval_s=anchor_interval_s,
        )
        limits = config.rate_limits
        servicer = AgencyNodeServicer(
            config,
            store=store,
            audit=audit,
            lookups=Lookups(config.schema, keys, matcher, config.matcher),
            disclosures=Disclosures(config, store, audit, peers),
            matcher=matcher,
            limiter=RateLimiter(limits.lookups_per_minute, limits.burst),
            guard=EnumerationGuard(limits.enumeration_alert_per_hour, ENUMERATION_WINDOW_S),
            disclosure_limiter=RateLimiter(limits.disclosures_per_minute, limits.disclosure_burst),
            disclosure_guard=EnumerationGuard(
                limits.disclosure_alert_per_hour, ENUMERATION_WINDOW_S
            ),
            answers=RecentAnswers(limits.disclosure_window_minutes * 60.0),
            anchorer=anchorer,
            refusals=refusals,
        )
        server, port = build_grpc_server(
            role="node",
            service_name=SERVICE_NAME,
            policy=NODE_POLICY,
            add_servicer=lambda srv: jigsaw_pb2_grpc.add_AgencyNodeServicer_to_server(  # type: ignore[no-untyped-call]
                servicer, srv
            ),
            listen=config.listen,
            tls=config.tls,
            agency=config.agency,
            refusals=refusals,
        )
        anchorer.start()
        stack.callback(anchorer.close)  # the final head, while the channel is open
        stack.callback(refusals.flush)  # the refused calls counted, before the final head
        resources = stack.pop_all()
        return NodeRuntime(server, port, resources, servicer, store, audit, refusals, anchorer)
    except BaseException:
        stack.close()  # a failed build closes what it had opened
        raise


def serve(config: NodeConfig, *, on_started: Callable[[int], None] | None = None) -> None:
    """Run the node until SIGTERM or SIGINT, then stop gracefully.

    ``on_started(port)`` is called once the node is serving (the CLI writes its port file).
    """
    runtime = build_node(config)

    def started(port: int) -> None:
        logger.info(
            "agency node %s serving on port %d (schema %s, key version %d)",
            config.agency, port, config.schema.fingerprint(), config.key_version,
        )  # fmt: skip
        if on_started is not None:
            on_started(port)

    try:
        serve_until_signal(runtime, on_started=started)
    finally:
        logger.info("agency node %s stopped", config.agency)


__all__ = ["AgencyNodeServicer", "NodeRuntime", "build_node", "serve"]
