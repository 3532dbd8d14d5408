"""A seeded three-agency population encoded for a matcher, and the calls tests make to a
running matcher (:class:`tests.helpers.matcher.Running`): publish, status, match."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from linkage.encode import EncodedBatch, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from linkage.synthetic import DEFAULT_AGENCIES, generate_population
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.pki import init_pki
from server.common.wire import encoded_to_columns, encoded_to_proto, proto_to_encoded
from tests.helpers.matcher import Running

TIMEOUT = 30
SCHEMA = load_schema("child")
KEYS = KeySet(LinkageSecret.for_tests(), 1)
AGENCIES = ("police", "health", "school")
CANARY_GIVEN = "Zebulonqx"
CANARY_FAMILY = "Quackenbushcanary"


@dataclass(frozen=True)
class AgencyEncodings:
    agency: str
    references: list[str]
    child_id: np.ndarray
    batch: EncodedBatch

    def records(self, rows: Sequence[int] | None = None) -> list[jigsaw_pb2.EncodedRecord]:
        picked = list(range(len(self.references))) if rows is None else list(rows)
        return encoded_to_proto(self.batch.take(picked), [self.references[i] for i in picked])

    def columns(self, rows: Sequence[int] | None = None) -> jigsaw_pb2.EncodedColumns:
        picked = list(range(len(self.references))) if rows is None else list(rows)
        return encoded_to_columns(self.batch.take(picked), [self.references[i] for i in picked])


def input_present(batch: EncodedBatch, row: int) -> list[bool]:
    """Per comparison (evidence order): whether the record compared with itself is compared
    on it: any filter (view) of it holds a value, and, for a combined field, no field it
    combines does (a fallback is compared only where they are not)."""
    present = [False] * len(SCHEMA.comparison_names)
    for f, c in enumerate(SCHEMA.comparison_of_field):
        present[c] = present[c] or bool(batch.field_present[row, f])
    for c, spec in enumerate(SCHEMA.comparison_specs):
        if spec.combines:
            inputs = [SCHEMA.comparison_names.index(name) for name in spec.combines]
            present[c] = present[c] and not any(present[i] for i in inputs)
    return present


def reference_of(agency: str, record_id: str) -> str:
    return hashlib.sha256(f"test:{agency}:{record_id}".encode()).hexdigest()[:32]


def header(fingerprint: str | None = None, key_version: int = 1) -> jigsaw_pb2.EncodingHeader:
    return jigsaw_pb2.EncodingHeader(
        schema_fingerprint=fingerprint or SCHEMA.fingerprint(), key_version=key_version
    )


def as_columns(records: Sequence[jigsaw_pb2.EncodedRecord]) -> jigsaw_pb2.EncodedColumns:
    """The published form of well-formed ``records``."""
    batch, references = proto_to_encoded(
        records, SCHEMA, fingerprint=SCHEMA.fingerprint(), key_version=1
    )
    return encoded_to_columns(batch, references)


def publish(
    stub: jigsaw_pb2_grpc.MatcherStub,
    records: list[jigsaw_pb2.EncodedRecord],
    *,
    per_message: int = 40,
    first_header: jigsaw_pb2.EncodingHeader | None = None,
) -> jigsaw_pb2.PublishResponse:
    """One Publish stream of ``records``, as columns of at most ``per_message`` rows after a
    header-only first message."""

    def requests() -> Iterator[jigsaw_pb2.PublishRequest]:
        yield jigsaw_pb2.PublishRequest(header=first_header or header())
        for start in range(0, len(records), per_message):
            chunk = records[start : start + per_message]
            yield jigsaw_pb2.PublishRequest(columns=as_columns(chunk))

    response: jigsaw_pb2.PublishResponse = stub.Publish(requests(), timeout=TIMEOUT)
    return response


def publish_all(matcher: Running, population: dict[str, AgencyEncodings]) -> None:
    for name, encodings in population.items():
        response = publish(matcher.stub(f"{name}-node"), encodings.records())
        assert response.received == response.inserted == len(encodings.references)


def status(matcher: Running) -> dict[str, int]:
    response = matcher.stub("olga").Status(jigsaw_pb2.MatcherStatusRequest(), timeout=TIMEOUT)
    assert response.schema_fingerprint == SCHEMA.fingerprint()
    assert response.key_version == 1
    counts = {a.agency: a.records for a in response.agencies}
    assert sum(counts.values()) == response.indexed_records
    return counts


def match(
    matcher: Running, identity: str, query: jigsaw_pb2.EncodedRecord, **extra: object
) -> jigsaw_pb2.MatchResponse:
    request = jigsaw_pb2.MatchRequest(
        header=header(),
        queries=[query],
        max_candidates=10,
        purpose_code="s47_enquiry",
        on_behalf_of="alice",
    )
    for key, value in extra.items():
        if isinstance(value, jigsaw_pb2.EncodingHeader):
            getattr(request, key).CopyFrom(value)
        elif key in ("queries", "hypotheses"):
            rows = getattr(request, key)
            del rows[:]
            rows.extend(value)
        else:
            setattr(request, key, value)
    response: jigsaw_pb2.MatchResponse = matcher.stub(identity).Match(request, timeout=TIMEOUT)
    return response


def error_of(call: object) -> grpc.RpcError:
    assert isinstance(call, grpc.RpcError)
    return call


def matcher_pki(directory: Path) -> Path:
    """A test PKI for :data:`AGENCIES`, a staff member (alice, police) and an operator (olga)."""
    init_pki(directory, agencies=list(AGENCIES), staff=[("alice", "police")], operators=["olga"])
    return directory


def encoded_population() -> dict[str, AgencyEncodings]:
    """200 seeded children of :data:`AGENCIES`, encoded under the shipped schema."""
    profiles = [p for p in DEFAULT_AGENCIES if p.name in AGENCIES]
    data = generate_population(200, seed=20261126, agencies=profiles)
    out: dict[str, AgencyEncodings] = {}
    for name, agency in data.agencies.items():
        columns = {field: agency.columns[field] for field in SCHEMA.input_names}
        out[name] = AgencyEncodings(
            agency=name,
            references=[reference_of(name, str(r)) for r in agency.columns["record_id"]],
            child_id=agency.child_id,
            batch=encode_records(SCHEMA, KEYS, columns),
        )
    return out


def audit_entries(matcher: Running) -> list[dict[str, object]]:
    matcher.runtime.refusals.flush()  # the refused calls counted so far (nothing once closed)
    lines = matcher.config.audit_log.read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line]
