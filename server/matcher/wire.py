"""Matcher-side proto <-> domain conversions that ``server.common.wire`` does not already cover.

Role in the pipeline: the matcher servicer stays thin by calling these helpers to check an
``EncodingHeader`` against the served schema and key version, turn each row of
``MatchRequest.queries`` into a one-row :class:`~linkage.encode.EncodedBatch`, and turn index
candidates and stored link-result clusters into ``Candidate`` / ``Cluster`` messages. Published
columns are parsed and validated by :func:`server.common.wire.columns_to_encoded` and query rows
by :func:`server.common.wire.proto_to_encoded` (the one module where filter bytes are read), and
the ``form_of`` of published rows (which record each row is a form of, :mod:`linkage.forms`) by
:func:`server.common.wire.columns_form_of`; bands and
agreements come from :func:`server.common.wire.band_for` and
:func:`server.common.wire.agreement_for`.

Nothing converted here is an identifier: filters, opaque references, agency ids, level labels
and weights only. Error messages name fields (``queries[0].field_filters[2]``) and
expectations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from linkage.encode import EncodedBatch
from linkage.errors import IncompatibleEncodingError
from linkage.index import IndexedCandidate
from linkage.schema import Schema
from linkage.scoring import MISSING_LEVEL, FellegiSunterModel, level_label
from proto.jigsaw.v1 import jigsaw_pb2
from server.common.status import RequestError
from server.common.wire import (
    agreement_for,
    band_for,
    columns_form_of,
    columns_to_encoded,
    proto_to_encoded,
)
from server.matcher.results import StoredCluster

#: The shape of a schema fingerprint (:meth:`linkage.schema.Schema.fingerprint`).
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


def check_header(
    message: jigsaw_pb2.PublishRequest | jigsaw_pb2.MatchRequest,
    schema: Schema,
    key_version: int,
) -> None:
    """Require ``message.header`` and that it names the served fingerprint and key version.

    Missing header → :class:`RequestError`; a different fingerprint or key version →
    :class:`IncompatibleEncodingError` saying which differs (fingerprints and versions are not
    identifiers, so both values are shown; a sent fingerprint is shown only when it has a
    fingerprint's shape, ``sha256:`` and 64 hex digits, since the field could hold any text).
    """
    if not message.HasField("header"):
        raise RequestError("header", "required (schema_fingerprint and key_version)")
    header = message.header
    problems = []
    fingerprint = schema.fingerprint()
    if header.schema_fingerprint != fingerprint:
        sent = header.schema_fingerprint
        shown = repr(sent) if _FINGERPRINT.fullmatch(sent) else "(not a schema fingerprint)"
        problems.append(
            f"header.schema_fingerprint: encodings made with schema {shown}, "
            f"this matcher serves {fingerprint!r}"
        )
    if header.key_version != key_version:
        problems.append(
            f"header.key_version: encodings made with key version {header.key_version}, "
            f"this matcher serves {key_version}"
        )
    if problems:
        raise IncompatibleEncodingError("; ".join(problems))


def columns_message_to_encoded(
    columns: jigsaw_pb2.EncodedColumns, schema: Schema, *, key_version: int
) -> tuple[EncodedBatch, list[str], list[str]]:
    """Validated (batch, references, form_of) of published columns (errors name
    ``columns...``); ``form_of[i]`` is "" for a record published as itself."""
    batch, references = columns_to_encoded(
        columns, schema, fingerprint=schema.fingerprint(), key_version=key_version
    )
    return batch, references, columns_form_of(columns, references)


def queries_to_encoded(
    queries: Sequence[jigsaw_pb2.EncodedRecord],
    schema: Schema,
    *,
    key_version: int,
    field: str = "queries",
) -> EncodedBatch:
    """The validated rows of a ``MatchRequest`` list (``field``: ``queries`` or
    ``hypotheses``; errors name ``<field>[i]...``) as one batch. They are hypotheses about one
    person and share the lookup's reference, so the uniqueness a published message needs does
    not apply."""
    batch, _ = proto_to_encoded(
        queries,
        schema,
        fingerprint=schema.fingerprint(),
        key_version=key_version,
        field_prefix=field,
        unique_references=False,
    )
    return batch


def evidence_to_proto(
    field_names: Sequence[str], evidence: Sequence[tuple[str, float]]
) -> list[jigsaw_pb2.FieldEvidence]:
    """``FieldEvidence`` per field from (level label, weight) pairs in schema field order."""
    return [
        jigsaw_pb2.FieldEvidence(field=name, agreement=agreement_for(label), weight=weight)
        for name, (label, weight) in zip(field_names, evidence, strict=True)
    ]


@dataclass(frozen=True)
class EvidenceTable:
    """The ``FieldEvidence`` message of every (field, comparison level) of one model.

    A field's weight depends only on its own level (``match_weights`` reads one table cell per
    field), so every evidence message a Match can send is known once the model is: the
    matcher builds this table once per model and each candidate then takes its messages from
    it instead of a ``match_weights`` round trip and fresh messages per Match.
    ``by_field[f][level]`` for ``level`` in ``-1 .. n_levels[f] - 1``.
    """

    model: FellegiSunterModel
    by_field: tuple[Mapping[int, jigsaw_pb2.FieldEvidence], ...]
    #: per field, the message for "held on both sides, not compared" (salts differ): weight 0
    not_compared: tuple[jigsaw_pb2.FieldEvidence, ...]


def evidence_table(model: FellegiSunterModel) -> EvidenceTable:
    """Build the :class:`EvidenceTable` of ``model`` (one ``match_weights`` call)."""
    n_fields = len(model.field_names)
    rows: list[list[int]] = []
    for f, count in enumerate(model.n_levels):
        for level in range(-1, count):
            row = [MISSING_LEVEL] * n_fields
            row[f] = level
            rows.append(row)
    weights = model.match_weights(np.asarray(rows, dtype=np.int64)).tolist()
    by_field: list[dict[int, jigsaw_pb2.FieldEvidence]] = [{} for _ in range(n_fields)]
    row_number = 0
    for f, (name, count) in enumerate(zip(model.field_names, model.n_levels, strict=True)):
        for level in range(-1, count):
            by_field[f][level] = jigsaw_pb2.FieldEvidence(
                field=name,
                agreement=agreement_for(level_label(level, count)),
                weight=weights[row_number][f],
            )
            row_number += 1
    not_compared = tuple(
        jigsaw_pb2.FieldEvidence(
            field=name, agreement=jigsaw_pb2.AGREEMENT_NOT_COMPARED, weight=0.0
        )
        for name in model.field_names
    )
    return EvidenceTable(model=model, by_field=tuple(by_field), not_compared=not_compared)


def candidates_from_table(
    found: Sequence[IndexedCandidate], table: EvidenceTable, *, reveal_probability: bool
) -> list[jigsaw_pb2.Candidate]:
    """``candidate_to_proto`` of every candidate, with evidence messages from ``table``."""
    by_field = table.by_field
    return [
        jigsaw_pb2.Candidate(
            agency=candidate.agency,
            reference=candidate.reference,
            band=band_for(candidate.probability),
            evidence=[
                table.not_compared[f] if candidate.not_compared[f] else by_field[f][level]
                for f, level in enumerate(candidate.levels)
            ],
            probability=candidate.probability if reveal_probability else 0.0,
        )
        for candidate in found
    ]


def candidate_to_proto(
    candidate: IndexedCandidate, model: FellegiSunterModel, *, reveal_probability: bool
) -> jigsaw_pb2.Candidate:
    """A ``Candidate`` with band and per-field evidence; probability only if revealed."""
    explained = model.explain(list(candidate.levels))
    evidence = [
        ("not_compared", 0.0) if candidate.not_compared[f] else (item.level_label, item.weight)
        for f, item in enumerate(explained)
    ]
    return jigsaw_pb2.Candidate(
        agency=candidate.agency,
        reference=candidate.reference,
        band=band_for(candidate.probability),
        evidence=evidence_to_proto(model.field_names, evidence),
        probability=candidate.probability if reveal_probability else 0.0,
    )


def cluster_to_proto(
    cluster_id: str, cluster: StoredCluster, field_names: Sequence[str]
) -> jigsaw_pb2.Cluster:
    """A stored link-result cluster as a ``Cluster`` message."""
    return jigsaw_pb2.Cluster(
        cluster_id=cluster_id,
        members=[
            jigsaw_pb2.ClusterMember(agency=agency, reference=reference)
            for agency, reference in cluster.members
        ],
        edges=[
            jigsaw_pb2.ClusterEdge(
                left=edge.left,
                right=edge.right,
                band=band_for(edge.probability),
                probability=edge.probability,
                evidence=evidence_to_proto(field_names, edge.evidence),
            )
            for edge in cluster.edges
        ],
    )


def linked_records(
    cluster_id: str, cluster: StoredCluster, agency: str
) -> list[jigsaw_pb2.LinkedRecord]:
    """``agency``'s members of ``cluster`` that records of other agencies share it with, each
    with those agencies and a band per agency (``LinkedAgency.band``: the strongest direct
    edge, else the cluster's weakest edge); never another agency's reference."""
    members = cluster.members
    others = sorted({a for a, _ in members if a != agency})
    own = [index for index, (a, _) in enumerate(members) if a == agency]
    if not own or not others:
        return []
    weakest = min((edge.probability for edge in cluster.edges), default=0.0)
    best: dict[tuple[int, str], float] = {}
    for edge in cluster.edges:
        for mine, theirs in ((edge.left, edge.right), (edge.right, edge.left)):
            key = (mine, members[theirs][0])
            best[key] = max(best.get(key, 0.0), edge.probability)
    return [
        jigsaw_pb2.LinkedRecord(
            reference=members[index][1],
            cluster_id=cluster_id,
            agencies=[
                jigsaw_pb2.LinkedAgency(
                    agency=other, band=band_for(best.get((index, other), weakest))
                )
                for other in others
            ],
        )
        for index in own
    ]
