"""A lookup's encoding and its one Match call: the node side of step 3 of the data flow.

Role: a staff member's raw identifiers are validated and encoded here, with the agency's keys
(they never leave the node), as the lookup's query rows (reference = the lookup id): one row,
or one per form (:func:`linkage.forms.encode_query`) when a salt field of few values is
missing (the shipped date of birth without sex: each form meets the records, and the forms of
records, that have its sex); and the date hypotheses, the rows under the usual errors of the
date the names are salted with (:func:`linkage.forms.encode_date_hypotheses`), so a record
whose date was keyed a day off, transposed or left out is still met.

Contract: every row of a lookup travels in one ``Match`` call (:meth:`Lookups.match`); the
matcher answers one ranked list, each record once (it owns the merge of the rows' lists), and
the node passes it on as it came. The salt rules: a query that gives a salt field but not the
field that salts it, when that field has too many values to send the query under each, is
refused (:func:`require_chained_salts`); anything else it cannot compare as given is said in
the response's ``notes`` (:func:`lookup_notes`), naming fields only, never a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from linkage import forms
from linkage.encode import EncodedBatch
from linkage.keys import KeySet
from linkage.normalise import FINITE_VALUES
from linkage.schema import Schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.status import RequestError, require_text
from server.common.wire import encoded_to_proto
from server.node.upstream import MATCH_TIMEOUT_S, matcher_failure, rate_limited

#: The longest value of one identifier.
MAX_VALUE_CHARS = 200
#: Field kinds that identify a person on their own; ``sex`` alone does not.
NON_IDENTIFYING_KINDS = frozenset({"sex"})


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


@dataclass(frozen=True)
class EncodedLookup:
    """A lookup's query rows, date hypotheses and notes, ready for one Match call."""

    queries: list[jigsaw_pb2.EncodedRecord]
    hypotheses: list[jigsaw_pb2.EncodedRecord]
    notes: list[str]


class Lookups:
    """Encodes lookups with the agency's keys and asks the matcher, one Match each."""

    def __init__(
        self,
        schema: Schema,
        keys: KeySet,
        matcher: jigsaw_pb2_grpc.MatcherStub,
        matcher_address: str,
    ) -> None:
        self._schema = schema
        self._keys = keys
        self._matcher = matcher
        self._address = matcher_address
        self._field_names = frozenset(schema.input_names)
        self._identifying_fields = tuple(
            index
            for index, spec in enumerate(schema.fields)
            if spec.kind not in NON_IDENTIFYING_KINDS
        )
        self._header = jigsaw_pb2.EncodingHeader(
            schema_fingerprint=schema.fingerprint(), key_version=keys.key_version
        )

    def encode(self, identifiers: Mapping[str, str], lookup_id: str) -> EncodedLookup:
        """Validate ``identifiers`` (RequestError naming the field, never echoing a value) and
        encode them (module docstring)."""
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
        return EncodedLookup(encoded_to_proto(batch, [lookup_id] * len(batch)), hypotheses, notes)

    def match(
        self, lookup: EncodedLookup, *, max_candidates: int, purpose: str, person: str
    ) -> list[jigsaw_pb2.Candidate]:
        """The matcher's ranked candidates for ``lookup``, asked for ``person``.

        Raises RateLimitedError (with the matcher's retry-after) when the matcher's limits
        for this node or this person refused, and UpstreamError when the call failed.
        """
        try:
            response = self._matcher.Match(
                jigsaw_pb2.MatchRequest(
                    header=self._header,
                    queries=lookup.queries,
                    hypotheses=lookup.hypotheses,
                    max_candidates=max_candidates,
                    purpose_code=purpose,
                    on_behalf_of=person,
                ),
                timeout=MATCH_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            limited = rate_limited(exc)
            if limited is not None:
                raise limited from None
            raise matcher_failure(exc, self._address) from None
        return list(response.candidates)


__all__ = [
    "MAX_VALUE_CHARS",
    "EncodedLookup",
    "Lookups",
    "lookup_notes",
    "require_chained_salts",
]
