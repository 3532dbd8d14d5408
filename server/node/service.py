"""The agency node's gRPC server: lookups, disclosures, linked records and status for staff and
operators.

Role in the pipeline: steps 3 and 4 of the data flow. A staff member asks their own node
``Lookup`` with raw identifiers; the node validates them, encodes them locally with the
agency's keys (the identifiers never leave the node) and asks the matcher ``Match`` once, over
mutual TLS with its own node certificate, with every query row of the lookup, passing the staff
member's name (for the matcher's per-person limits and audit log) and purpose code (a code of
``[node] purposes``, :mod:`server.common.purposes`; the staff member's free-text ``note`` stays in
this node's audit log); it returns the matcher's ranked candidates (agency, opaque reference,
band, per-field evidence) and remembers, per person, which references it returned
(:class:`~server.common.ratelimit.RecentAnswers`, for ``[rate_limits] disclosure_window_minutes``).
The staff member then asks the same node ``Disclose`` for one of those references: the node
releases its own agency's record, or relays the request as itself (``on_behalf_of`` = the
person) to the holding agency's node named in its ``[peers]`` table and passes the answer back.
The holder releases only the fields its ``[disclosure]`` policy allows for the person's role
(staff) and names the withheld ones. ``Status`` reports store counts and the agency's data
quality (server.node.quality).

The agency's staff console (:mod:`server.console`, a ``console`` certificate of this agency)
calls ``Lookup``, ``Disclose`` and ``ListLinked`` with ``on_behalf_of`` = the staff member
whose browser certificate it verified: the node then treats that person as the caller (audit
actor, limits, lookup-before-disclosure, the staff disclosure policy), with ``via`` = the
console in every audit entry. Only a console may set it on ``Lookup`` and ``ListLinked``; on
``Disclose``, a console or a relaying node. The console also reads ``Status`` as itself (counts
and versions, no record), to show the agency's operators.

Link results come back to the agency (:mod:`server.node.linked`): an operator's ``FetchLinked``
makes the node fetch from the matcher, as itself, its own records that share a cluster with
another agency's (their agency and band, never their references) into its store;
``ListLinked`` pages through them by local id, and ``ResolveReference`` turns one of the
node's references into its local id — both for the node's own staff and operators, audited
(counts, the reference and purpose; a local id never reaches the audit log).

Security: every call passes :class:`server.common.auth.AuthInterceptor` with
:data:`server.common.auth.NODE_POLICY` first (Lookup: staff; Disclose: staff, and nodes relaying;
Status, ListLinked: operator, staff, console; ResolveReference: operator, staff;
FetchLinked: operator), built with
the node's agency: staff of another agency are refused every method. Lookups and disclosures
are rate-limited per person (``RESOURCE_EXHAUSTED`` with ``retry-after-s``; a holder limits a
relaying agency's people by agency and name) and watched by
:class:`~server.common.ratelimit.EnumerationGuard` instances whose alerts are audited as
``enumeration_alert`` and ``disclosure_alert``. A disclosure no recent lookup by the same
person at this node led to is ``FAILED_PRECONDITION``. Every attempt, refused by a limit or
not, counts towards the alerts. Every lookup and disclosure attempt is audited (actor,
purpose, outcome, counts, ids, released field *names*; a relayed disclosure on both nodes),
one entry each, except calls refused by the interceptor, by a rate limit or (a disclosure)
as malformed, which a :class:`~server.common.audit.RefusalTally` counts per identity per interval.
No identifier value is ever logged, audited or put in a status message.

Servicer errors map to status codes through :mod:`server.common.status`; the matcher (or a holding
node) being unreachable or too slow is ``UNAVAILABLE``.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, NoReturn

import grpc

from linkage import forms
from linkage.encode import EncodedBatch
from linkage.keys import KeySet
from linkage.normalise import FINITE_VALUES
from linkage.schema import Schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.anchor import ANCHOR_INTERVAL_S, Anchorer, AnchorError, Signer, load_ca, pages
from server.common.audit import AuditLog, RefusalTally
from server.common.auth import NODE_POLICY, Identity, current_identity
from server.common.pki import IDENTITY_NAME_RE, UNIT_AGENCY, server_name
from server.common.purposes import require_purpose_code
from server.common.ratelimit import EnumerationGuard, RateLimiter, RecentAnswers
from server.common.serving import build_grpc_server, serve_until_signal
from server.common.status import (
    NotFoundError,
    PolicyDenied,
    PreconditionFailed,
    RateLimitedError,
    RequestError,
    grpc_errors,
    require_reference,
    require_text,
    retry_after_from_metadata,
)
from server.common.tls import WrongServerError, raise_if_wrong_server, secure_channel
from server.common.wire import encoded_to_proto
from server.node.config import NodeConfig, read_linkage_keys
from server.node.linked import fetch_linked, linked_to_proto
from server.node.quality import data_quality
from server.node.store import NodeStore

logger = logging.getLogger(__name__)

SERVICE_NAME = jigsaw_pb2.DESCRIPTOR.services_by_name["AgencyNode"].full_name
MAX_PURPOSE_CHARS = 500
MAX_NOTE_CHARS = 500
#: A disclosure's priority (MASH practice: red within hours, amber within a day, green within
#: days), or none stated.
DISCLOSURE_PRIORITIES = ("", "red", "amber", "green")
MAX_NAME_CHARS = 64
MAX_VALUE_CHARS = 200
DEFAULT_MAX_CANDIDATES = 20
MAX_CANDIDATES = 100
MATCH_TIMEOUT_S = 5.0
MAX_WORKERS = 16
SHUTDOWN_GRACE_S = 5.0
ENUMERATION_WINDOW_S = 3600.0
RELAY_TIMEOUT_S = 5.0
DEFAULT_LINKED_PAGE = 500
MAX_LINKED_PAGE = 5000
RESULT_ID_RE = re.compile(r"[0-9a-f]{32}")
#: Statuses of the holding node that reach staff as they came (with the holder named).
RELAYED_CODES = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
#: Field kinds that identify a person on their own; ``sex`` alone does not.
NON_IDENTIFYING_KINDS = frozenset({"sex"})


def _version() -> str:
    try:
        return metadata.version("jigsaw-linkage")
    except metadata.PackageNotFoundError:
        return "unknown"


def _broken_salts(schema: Schema, batch: EncodedBatch) -> list[tuple[str, str]]:
    """(field, salt field) of each input field a one-record query gives whose salt field it
    lacks (a field published in views once, with each salt field its views lack)."""
    present = dict(zip(schema.field_names, batch.field_present[0].tolist(), strict=True))
    inputs = {spec.input_name: present[spec.name] for spec in schema.fields}
    return list(
        dict.fromkeys(
            (spec.input_name, salt_field)
            for spec in schema.fields
            if spec.salt
            and not spec.combines  # a fallback: the fields it combines are named already
            and present[spec.name]
            and not inputs[salt_field := spec.salt.split(".")[0]]
        )
    )


def lookup_notes(schema: Schema, batch: EncodedBatch) -> list[str]:
    """What a one-record query cannot be compared on as given, one sentence per missing salt
    field, naming fields only (the ``notes`` of a ``LookupResponse``): a field of few values
    is assumed (:func:`linkage.forms.encode_query`), any other leaves what it salts
    comparable only with records that lack it too."""
    kinds = {spec.name: spec.kind for spec in schema.fields}
    salted: dict[str, list[str]] = {}
    for name, salt_field in _broken_salts(schema, batch):
        salted.setdefault(salt_field, []).append(name)
    notes = []
    for salt_field, names in salted.items():
        fields = ", ".join(names)
        if kinds[salt_field] in FINITE_VALUES:
            count = len(FINITE_VALUES[kinds[salt_field]])
            notes.append(
                f"{salt_field} not given: {fields} compared under each of its {count} values "
                f"(salted with {salt_field}); giving it would sharpen the match"
            )
        else:
            notes.append(
                f"{salt_field} not given: {fields} compared only with records that lack "
                f"{salt_field} too (salted with it); give {salt_field} to compare them with "
                "every record"
            )
    return notes


def require_chained_salts(schema: Schema, batch: EncodedBatch) -> None:
    """Refuse a one-record query that gives a salt field (whose tag comes from its published
    filter) but not the field that field is itself salted with, when that field has too many
    values to send the query under each (:func:`linkage.forms.encode_query` covers the
    others): such a query has a filter, and a tag, that only records without that value
    share, and nothing salted with it could be compared."""
    kinds = {spec.name: spec.kind for spec in schema.fields}
    source_fields = {source.split(".")[0] for source in schema.salt_sources}
    for name, salt_field in _broken_salts(schema, batch):
        if name in source_fields and kinds[salt_field] not in FINITE_VALUES:
            dependants = list(  # the fields salted with its published filter
                dict.fromkeys(f.input_name for f in schema.fields if f.salt == f"{name}.value")
            )
            raise RequestError(
                f"identifiers[{salt_field!r}]",
                f"expected a value when {name} is given: the schema salts {name} with it, "
                f"and {', '.join(dependants)} are compared only where {name} (with its salt) "
                "agrees",
            )


def acting_person(caller: Identity, on_behalf_of: str) -> Identity:
    """The person a staff call is made for: ``caller`` itself, or, when the caller is this
    agency's staff console (the interceptor checked its agency), the staff member of that
    agency it names. Only a console may name one (a relaying node is handled apart)."""
    if caller.role != "console":
        if on_behalf_of:
            raise RequestError(
                "on_behalf_of", "set only by the agency's staff console or a relaying node"
            )
        return caller
    require_text(on_behalf_of, "on_behalf_of", MAX_NAME_CHARS)
    if not IDENTITY_NAME_RE.fullmatch(on_behalf_of):
        raise RequestError("on_behalf_of", "expected a staff identity name (a certificate CN)")
    return Identity(name=on_behalf_of, agency=caller.agency, role="staff")


class AgencyNodeServicer(jigsaw_pb2_grpc.AgencyNodeServicer):
    """The AgencyNode service over one store, key set, audit log and matcher channel."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        store: NodeStore,
        keys: KeySet,
        audit: AuditLog,
        matcher: jigsaw_pb2_grpc.MatcherStub,
        limiter: RateLimiter,
        guard: EnumerationGuard,
        disclosure_limiter: RateLimiter,
        disclosure_guard: EnumerationGuard,
        answers: RecentAnswers,
        peers: Mapping[str, jigsaw_pb2_grpc.AgencyNodeStub],
        anchorer: Anchorer,
        refusals: RefusalTally,
    ) -> None:
        self._config = config
        self._schema = config.schema
        self._fingerprint = config.schema.fingerprint()
        self._field_names = frozenset(config.schema.input_names)
        self._identifying_fields = tuple(
            index
            for index, spec in enumerate(config.schema.fields)
            if spec.kind not in NON_IDENTIFYING_KINDS
        )
        self._store = store
        self._keys = keys
        self._audit = audit
        self._matcher = matcher
        self._limiter = limiter
        self._guard = guard
        self._disclosure_limiter = disclosure_limiter
        self._disclosure_guard = disclosure_guard
        self._answers = answers
        self._peers = dict(peers)
        self._anchorer = anchorer
        self._refusals = refusals

    # ------------------------------------------------------------------ Lookup

    @grpc_errors
    def Lookup(
        self, request: jigsaw_pb2.LookupRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.LookupResponse:
        caller = current_identity(context)
        lookup_id = secrets.token_hex(16)
        base: dict[str, str | int] = {"lookup_id": lookup_id, "caller_agency": caller.agency}
        try:
            identity = acting_person(caller, request.on_behalf_of)
        except RequestError:
            self._audit_lookup(caller, "", "invalid_argument", base)
            raise
        if identity is not caller:
            base["via"] = caller.name
        retry_after = self._limiter.acquire(identity.name)
        # every attempt counts towards the alert, refused or not
        if self._guard.observe(identity.name):
            logger.warning("enumeration alert: caller %s over the lookup threshold", identity.name)
            self._audit.append(
                actor=identity.name,
                action="enumeration_alert",
                outcome="alert",
                details={
                    **base,
                    "lookups_in_window": self._guard.count(identity.name),
                    "threshold": self._guard.threshold,
                },
            )
        if retry_after is not None:
            self._refusals.count(identity.name, "lookup", "rate_limited")
            raise RateLimitedError(retry_after)
        try:
            purpose = require_purpose_code(
                request.purpose_code, "purpose_code", self._config.purposes
            )
            note = require_text(request.note, "note", MAX_NOTE_CHARS)
            queries, hypotheses, notes = self._encode_queries(request.identifiers, lookup_id)
        except RequestError:
            self._audit_lookup(identity, "", "invalid_argument", base)
            raise
        base["note"] = note  # the staff member's words: this audit log only, never the matcher
        if len(queries) > 1:
            base["queries"] = len(queries)
        max_candidates = min(request.max_candidates or DEFAULT_MAX_CANDIDATES, MAX_CANDIDATES)
        header = jigsaw_pb2.EncodingHeader(
            schema_fingerprint=self._fingerprint, key_version=self._keys.key_version
        )
        try:
            response = self._matcher.Match(
                jigsaw_pb2.MatchRequest(
                    header=header,
                    queries=queries,
                    hypotheses=hypotheses,
                    max_candidates=max_candidates,
                    purpose_code=purpose,
                    on_behalf_of=identity.name,
                ),
                timeout=MATCH_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                # the matcher's [match_limits] for this node or this person: staff get the
                # same status and its retry-after, as for the node's own limits
                self._audit_lookup(identity, purpose, "matcher_rate_limited", base)
                retry_after = retry_after_from_metadata(exc.trailing_metadata())
                raise RateLimitedError(1.0 if retry_after is None else retry_after) from None
            self._audit_lookup(identity, purpose, "matcher_error", base)
            self._abort_for_matcher(context, exc)
        candidates = list(response.candidates)  # ranked, each record once (the matcher's)
        self._answers.record(identity.name, ((c.agency, c.reference) for c in candidates))
        found = len(candidates)
        self._audit_lookup(identity, purpose, "ok", {**base, "candidates": found})
        # debug, not info: every lookup is in the audit log already, and a log line per
        # lookup is formatting and a write on the hot path
        logger.debug("lookup %s: %d candidates", lookup_id, found)
        return jigsaw_pb2.LookupResponse(lookup_id=lookup_id, candidates=candidates, notes=notes)

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

    def _encode_queries(
        self, identifiers: Mapping[str, str], lookup_id: str
    ) -> tuple[list[jigsaw_pb2.EncodedRecord], list[jigsaw_pb2.EncodedRecord], list[str]]:
        """Validate the identifiers and encode them as the lookup's query rows (reference =
        lookup id), its date hypotheses and its notes (:func:`lookup_notes`): one row, or one
        per form (:func:`linkage.forms.encode_query`) when a salt field of few values is
        missing (the shipped date of birth without sex: each form then meets the records, and
        the forms of records, that have its sex); and the rows under the usual errors of the
        date the names are salted with (:func:`linkage.forms.encode_date_hypotheses`), so that
        a record whose date was keyed a day off, transposed or left out is still met. All rows
        travel in the lookup's one Match call."""
        for key in sorted(identifiers):
            if key not in self._field_names:
                # the key is not echoed: a person can type a name where a field name goes
                raise RequestError(
                    "identifiers",
                    "a key is not a field of the schema; expected keys among "
                    + ", ".join(self._schema.input_names),
                )
            require_text(
                identifiers[key], f"identifiers[{key!r}]", MAX_VALUE_CHARS, allow_empty=True
            )
        batch = forms.encode_query(self._schema, self._keys, identifiers)
        for problem in batch.problems:
            raise RequestError(f"identifiers[{problem.field!r}]", problem.reason)
        present = batch.field_present[0].tolist()
        if not any(present[index] for index in self._identifying_fields):
            raise RequestError(
                "identifiers", "expected at least one identifying field with a value"
            )
        require_chained_salts(self._schema, batch)
        notes = lookup_notes(self._schema, batch)
        extra = forms.encode_date_hypotheses(self._schema, self._keys, identifiers)
        hypotheses = [] if extra is None else encoded_to_proto(extra, [lookup_id] * len(extra))
        return encoded_to_proto(batch, [lookup_id] * len(batch)), hypotheses, notes

    def _abort_for_matcher(self, context: grpc.ServicerContext, exc: grpc.RpcError) -> NoReturn:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        logger.warning("matcher call failed: %s", code.name if code else "unknown")
        try:
            raise_if_wrong_server(exc, self._config.matcher, role="matcher", agency=UNIT_AGENCY)
        except WrongServerError as wrong:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(wrong))
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the matcher at {self._config.matcher} is unreachable or did not answer in "
                f"{MATCH_TIMEOUT_S:g} s; try again later",
            )
        # the matcher never sees identifiers, so its status details cannot carry any
        details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
        context.abort(
            grpc.StatusCode.FAILED_PRECONDITION
            if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
            else grpc.StatusCode.UNAVAILABLE,
            f"the matcher refused the lookup ({code.name if code else 'unknown'}): {details}",
        )
        raise RuntimeError("grpc.ServicerContext.abort returned")  # pragma: no cover

    # ------------------------------------------------------------------ Disclose

    @grpc_errors
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
        retry_after = self._disclosure_limiter.acquire(person)
        if self._disclosure_guard.observe(person):  # every attempt, refused or not
            logger.warning("disclosure alert: %s over the disclosure threshold", actor)
            self._audit.append(
                actor=actor,
                action="disclosure_alert",
                outcome="alert",
                details={
                    **base,
                    "disclosures_in_window": self._disclosure_guard.count(person),
                    "threshold": self._disclosure_guard.threshold,
                },
            )
        if retry_after is not None:
            self._refusals.count(person, "disclose", "rate_limited")
            raise RateLimitedError(retry_after)
        if relayed:
            # the requesting node checked that its staff member's lookup returned the reference
            return self._release(actor, "staff", purpose, reference, base)
        holder = self._answers.holder_of(actor, reference)
        if holder is None:
            self._audit_disclose(actor, purpose, "no_lookup", base)
            raise PreconditionFailed(
                "reference: no lookup of yours at this node returned it in the last "
                f"{self._answers.window_seconds / 60:g} minutes; look the child up first"
            )
        if holder == self._config.agency:
            return self._release(actor, role, purpose, reference, base)
        return self._relay(context, actor, holder, purpose, reference, base)

    def _release(
        self,
        actor: str,
        role: str,
        purpose: str,
        reference: str,
        base: dict[str, str | int],
    ) -> jigsaw_pb2.DiscloseResponse:
        """This agency's record behind ``reference``, as its policy releases it to ``role``."""
        record = self._store.get_by_reference(reference)
        if record is None or record.deleted:
            self._audit_disclose(actor, purpose, "not_found", base)
            raise NotFoundError(
                f"reference: no record with this reference at {self._config.agency}"
            )
        if role not in self._config.disclosure:
            self._audit_disclose(actor, purpose, "denied", base)
            raise PolicyDenied(
                f"the {self._config.agency} disclosure policy releases nothing to role {role}"
            )
        allowed = self._config.released_fields(role)
        known = list(dict.fromkeys([*self._schema.input_names, *record.fields]))
        released = {
            name: value
            for name in allowed
            if isinstance(value := record.fields.get(name), str) and value
        }
        withheld = [name for name in known if name not in allowed]
        self._audit_disclose(
            actor,
            purpose,
            "ok",
            {**base, "released": ",".join(released), "withheld": ",".join(withheld)},
        )
        logger.info(
            "disclosure %s: %d fields released, %d withheld",
            base["disclosure_id"], len(released), len(withheld),
        )  # fmt: skip
        return jigsaw_pb2.DiscloseResponse(
            disclosure_id=str(base["disclosure_id"]),
            agency=self._config.agency,
            reference=reference,
            fields=released,
            withheld_fields=withheld,
        )

    def _relay(
        self,
        context: grpc.ServicerContext,
        actor: str,
        holder: str,
        purpose: str,
        reference: str,
        base: dict[str, str | int],
    ) -> jigsaw_pb2.DiscloseResponse:
        """Ask the holding agency's node for the record, as this node, for ``actor``."""
        base = {**base, "holder": holder}
        peer = self._peers.get(holder)
        if peer is None:
            self._audit_disclose(actor, purpose, "no_peer", base)
            raise PreconditionFailed(
                f"reference: held by {holder}, whose node this node has no address for "
                f"(its [peers] table)"
            )
        try:
            response: jigsaw_pb2.DiscloseResponse = peer.Disclose(
                jigsaw_pb2.DiscloseRequest(
                    reference=reference,
                    purpose_code=purpose,
                    priority=str(base.get("priority", "")),
                    on_behalf_of=actor,
                ),
                timeout=RELAY_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            self._audit_disclose(actor, purpose, f"holder_{code.name.lower()}", base)
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                retry_after = retry_after_from_metadata(exc.trailing_metadata())
                raise RateLimitedError(1.0 if retry_after is None else retry_after) from None
            # the holder's status details name fields and expectations, never values
            details = (exc.details() if isinstance(exc, grpc.Call) else "") or ""
            if code in RELAYED_CODES:
                context.abort(code, f"{holder} node: {details}")
            logger.warning("disclosure relay to %s failed: %s", holder, code.name)
            try:
                raise_if_wrong_server(exc, self._config.peers[holder], role="node", agency=holder)
            except WrongServerError as wrong:
                context.abort(grpc.StatusCode.UNAVAILABLE, str(wrong))
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the {holder} node did not answer the disclosure ({code.name}); try again later",
            )
            raise RuntimeError("grpc.ServicerContext.abort returned") from None  # pragma: no cover
        self._audit_disclose(
            actor,
            purpose,
            "ok",
            {
                **base,
                "holder_disclosure_id": response.disclosure_id,
                "released": ",".join(response.fields),
                "withheld": ",".join(response.withheld_fields),
            },
        )
        return response

    def _audit_disclose(
        self,
        actor: str,
        purpose: str,
        outcome: str,
        details: Mapping[str, str | int],
    ) -> None:
        self._audit.append(
            actor=actor,
            action="disclose",
            purpose=purpose,
            outcome=outcome,
            details=details,
        )

    # ------------------------------------------------------------------ linked records

    @grpc_errors
    def FetchLinked(
        self, request: jigsaw_pb2.FetchLinkedRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.FetchLinkedResponse:
        identity = current_identity(context)
        if request.result_id and not RESULT_ID_RE.fullmatch(request.result_id):
            raise RequestError("result_id", "expected 32 lowercase hex characters or empty")
        try:
            result_id, count = fetch_linked(self._store, self._matcher, request.result_id)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            self._audit.append(actor=identity.name, action="fetch_linked", outcome="error")
            if code == grpc.StatusCode.NOT_FOUND:
                raise PreconditionFailed(
                    "the matcher holds no such completed link result; run a link first"
                ) from None
            self._abort_for_matcher(context, exc)
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
        except RequestError:
            self._audit.append(
                actor=caller.name, action="list_linked", outcome="invalid_argument", details=base
            )
            raise
        if identity is not caller:
            base["via"] = caller.name
        page_size = request.page_size or DEFAULT_LINKED_PAGE
        if page_size > MAX_LINKED_PAGE:
            raise RequestError("page_size", f"at most {MAX_LINKED_PAGE}")
        total = self._store.linked_count()
        # a token is an offset into the list that this node handed out: nothing else is taken
        # (nor written to the audit log, where a caller's number could be anything)
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
        except RequestError:
            self._audit.append(actor=identity.name, action="resolve", outcome="invalid_argument")
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
            key_version=self._keys.key_version,
            version=_version(),
            quality=data_quality(self._store, self._config.schema),
        )

    # ------------------------------------------------------------------ audit anchoring

    @grpc_errors
    def AnchorAudit(
        self, request: jigsaw_pb2.AnchorAuditRequest, context: grpc.ServicerContext
    ) -> jigsaw_pb2.AnchorAuditResponse:
        """Anchor this node's audit head with the matcher now (server.common.anchor)."""
        try:
            receipt, seq = self._anchorer.anchor_now()
        except grpc.RpcError as exc:
            self._abort_for_matcher(context, exc)
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


class _OwningServer(grpc.Server):  # type: ignore[misc]
    """A grpc.Server that releases the node's resources once it has stopped.

    Delegates every call to the real server; ``stop`` additionally closes the store, audit
    log and matcher channel (on a helper thread) when the stop has completed.
    """

    def __init__(self, inner: grpc.Server, on_stopped: Callable[[], None]) -> None:
        self._inner = inner
        self._on_stopped = on_stopped

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        self._inner.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        self._inner.add_registered_method_handlers(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        return int(self._inner.add_insecure_port(address))

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return int(self._inner.add_secure_port(address, server_credentials))

    def start(self) -> None:
        self._inner.start()

    def stop(self, grace: float | None) -> threading.Event:
        stopped: threading.Event = self._inner.stop(grace)

        def release() -> None:
            stopped.wait()
            self._on_stopped()

        threading.Thread(target=release, name="node-release", daemon=True).start()
        return stopped

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self._inner.wait_for_termination(timeout))


@dataclass
class NodeRuntime:
    """A built (not yet started) node server and the resources it owns.

    ``server.stop(...)`` releases the resources once the server has stopped; :meth:`close`
    does it at once (idempotent) for callers that want it synchronous.
    """

    server: grpc.Server
    port: int
    servicer: AgencyNodeServicer
    store: NodeStore
    audit: AuditLog
    matcher_channel: grpc.Channel
    anchorer: Anchorer
    refusals: RefusalTally
    peer_channels: Sequence[grpc.Channel] = ()
    _closed: bool = False
    _close_lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        """Release the store, audit log and matcher channel (after the server stopped)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self.refusals.close()  # the refused calls counted, before the final head
            self.anchorer.close()  # the final head, while the channel is open
            self.matcher_channel.close()
            for channel in self.peer_channels:
                channel.close()
            self.audit.close()
            self.store.close()


def build_node(config: NodeConfig, *, anchor_interval_s: float = ANCHOR_INTERVAL_S) -> NodeRuntime:
    """Build the node server bound to ``config.listen`` with mutual TLS, ready to start.

    Its audit head is anchored with the matcher every ``anchor_interval_s`` seconds (when it
    moved) from now on, and at close (:class:`server.common.anchor.Anchorer`).
    """
    keys = read_linkage_keys(config)
    store = NodeStore(config.store)
    audit = AuditLog(config.audit_log)
    channel = secure_channel(config.matcher, config.tls, expect=server_name("matcher", UNIT_AGENCY))
    peer_channels = {
        agency: secure_channel(address, config.tls, expect=server_name("node", agency))
        for agency, address in config.peers.items()
    }
    anchorer: Anchorer | None = None
    refusals = RefusalTally(audit)
    try:
        anchorer = Anchorer(
            audit,
            Signer.from_tls(config.tls),
            load_ca(config.tls.ca_cert),
            jigsaw_pb2_grpc.MatcherStub(channel),  # type: ignore[no-untyped-call]
            interval_s=anchor_interval_s,
        )
        limits = config.rate_limits
        servicer = AgencyNodeServicer(
            config,
            store=store,
            keys=keys,
            audit=audit,
            matcher=jigsaw_pb2_grpc.MatcherStub(channel),  # type: ignore[no-untyped-call]
            limiter=RateLimiter(limits.lookups_per_minute, limits.burst),
            guard=EnumerationGuard(limits.enumeration_alert_per_hour, ENUMERATION_WINDOW_S),
            disclosure_limiter=RateLimiter(limits.disclosures_per_minute, limits.disclosure_burst),
            disclosure_guard=EnumerationGuard(
                limits.disclosure_alert_per_hour, ENUMERATION_WINDOW_S
            ),
            answers=RecentAnswers(limits.disclosure_window_minutes * 60.0),
            peers={
                agency: jigsaw_pb2_grpc.AgencyNodeStub(peer)  # type: ignore[no-untyped-call]
                for agency, peer in peer_channels.items()
            },
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
            max_workers=MAX_WORKERS,
            agency=config.agency,
            refusals=refusals,
        )
    except BaseException:
        refusals.close()
        channel.close()
        for peer in peer_channels.values():
            peer.close()
        audit.close()
        store.close()
        raise
    runtime = NodeRuntime(
        server,
        port,
        servicer,
        store,
        audit,
        channel,
        anchorer,
        refusals,
        tuple(peer_channels.values()),
    )
    runtime.server = _OwningServer(server, runtime.close)
    anchorer.start()
    return runtime


def create_server(config: NodeConfig) -> tuple[grpc.Server, int]:
    """The node server (not started) and its bound port.

    Stopping the server also closes the node's store, audit log and matcher channel; use
    :func:`build_node` to get at those resources directly.
    """
    runtime = build_node(config)
    return runtime.server, runtime.port


def serve(config: NodeConfig, *, on_started: Callable[[int], None] | None = None) -> None:
    """Run the node until SIGTERM or SIGINT, then stop gracefully (5 s grace).

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
        serve_until_signal(runtime, on_started=started, grace_s=SHUTDOWN_GRACE_S)
    finally:
        logger.info("agency node %s stopped", config.agency)


__all__ = [
    "AgencyNodeServicer",
    "NodeRuntime",
    "build_node",
    "create_server",
    "serve",
]
