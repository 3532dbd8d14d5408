"""Tests for server.matcher.service: a real matcher on loopback, mutual TLS, real SQLite."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from linkage import forms, pipeline
from linkage.encode import EncodedBatch, encode_records
from linkage.index import MatchIndex
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from linkage.synthetic import DEFAULT_AGENCIES, generate_population
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from proto.jigsaw.v1.transport import retry_after_from_metadata
from server.common.anchor import Signer
from server.common.audit import verify_audit_log
from server.common.pki import init_pki
from server.common.status import RequestError
from server.common.tls import secure_channel, tls_files_for
from server.common.wire import encoded_to_columns, encoded_to_proto, proto_to_encoded
from server.matcher.config import AnchorLimitConfig, ConfigError, parse_matcher_config
from server.matcher.pages import decode_page_token, encode_page_token
from server.matcher.wire import candidate_to_proto, candidates_from_table, evidence_table
from tests.helpers.matcher import FakeClock, Running, matcher_config, tls_section

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


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    init_pki(out, agencies=list(AGENCIES), staff=[("alice", "police")], operators=["olga"])
    return out


@pytest.fixture(scope="module")
def population() -> dict[str, AgencyEncodings]:
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


@pytest.fixture
def matcher(tmp_path: Path, pki_dir: Path) -> Iterator[Running]:
    running = Running(matcher_config(tmp_path, pki_dir, max_batch=500), pki_dir)
    yield running
    running.stop()


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


# ------------------------------------------------------------------------------ config


def test_config_is_strict(tmp_path: Path) -> None:
    text = """
[matcher]
schema = "child"
key_version = "one"
stor = "x.sqlite"
benchmark_mode = 1
max_publish_batch = 0
[tls]
ca_cert = "ca.pem"
cert = "m.pem"
"""
    with pytest.raises(ConfigError) as caught:
        parse_matcher_config(text, base_dir=tmp_path)
    problems = "\n".join(caught.value.problems)
    for expected in (
        "matcher.key_version: expected an integer",
        "matcher: unknown key (key 3 of the table), expected one of: ",
        "matcher.store: required key is missing",
        "matcher.audit_log: required key is missing",
        "matcher.benchmark_mode: expected a boolean",
        "matcher.max_publish_batch: expected an integer from 1",
        "tls.key: required key is missing",
    ):
        assert expected in problems
    assert "stor " not in problems and "'stor'" not in problems  # the unknown key is not echoed


def test_config_defaults_and_paths(tmp_path: Path, pki_dir: Path) -> None:
    config = matcher_config(tmp_path, pki_dir)
    assert config.store == (tmp_path / "matcher.sqlite").resolve()
    assert config.max_publish_batch == 5000
    assert config.benchmark_mode is True
    assert config.schema.fingerprint() == SCHEMA.fingerprint()


# ------------------------------------------------------------------------------ publish, match


def test_publish_match_republish(matcher: Running, population: dict[str, AgencyEncodings]) -> None:
    publish_all(matcher, population)
    counts = status(matcher)
    assert counts == {name: len(e.references) for name, e in population.items()}

    police = population["police"]
    for row in range(3):
        found = match(matcher, "health-node", police.records([row])[0]).candidates
        assert found, "the published record itself must come back"
        # the record itself, in the top band: other records of the same child may tie with it
        # (a date one part off falls back to the full name, and the probability saturates)
        (best,) = [
            c for c in found if (c.agency, c.reference) == ("police", police.references[row])
        ]
        assert best.band == found[0].band
        assert best.band in (
            jigsaw_pb2.PROBABILITY_BAND_VERY_HIGH,
            jigsaw_pb2.PROBABILITY_BAND_HIGH,
        )
        # benchmark mode is on, but the caller is a node: never a raw probability
        assert all(c.probability == 0.0 for c in found)
        assert [e.field for e in best.evidence] == list(SCHEMA.comparison_names)
        present = input_present(police.batch, row)
        for evidence, has_value in zip(best.evidence, present, strict=True):
            if has_value:
                assert evidence.agreement == jigsaw_pb2.AGREEMENT_EXACT
                assert evidence.weight > 0
            else:
                assert evidence.agreement == jigsaw_pb2.AGREEMENT_MISSING
                assert evidence.weight == 0.0

    again = publish(matcher.stub("police-node"), police.records())
    assert (again.inserted, again.replaced, again.unchanged) == (0, 0, len(police.references))
    assert status(matcher) == counts
    # the model was fitted lazily and stored
    assert matcher.runtime.store.load_model() is not None

    entries = [line for line in matcher.config.audit_log.read_text("utf-8").splitlines() if line]
    assert any('"action":"match"' in e and '"purpose":"s47_enquiry"' in e for e in entries)
    assert any('"on_behalf_of":"alice"' in e for e in entries)
    assert verify_audit_log(matcher.config.audit_log).ok


def test_publishing_agency_comes_from_the_certificate(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    # health's node publishes police's records: they are filed under health, not police
    publish(matcher.stub("health-node"), population["police"].records(range(5)))
    assert status(matcher) == {"health": 5}


def test_wrong_fingerprint_or_key_version(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    records = population["police"].records(range(3))
    stub = matcher.stub("police-node")
    with pytest.raises(grpc.RpcError) as caught:
        publish(stub, records, first_header=header("0" * 64))
    assert error_of(caught.value).code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "schema_fingerprint" in caught.value.details()
    assert "key_version" not in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        publish(stub, records, first_header=header(key_version=2))
    assert error_of(caught.value).code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "key version 2" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        match(matcher, "police-node", records[0], header=header(key_version=7))
    assert error_of(caught.value).code() is grpc.StatusCode.FAILED_PRECONDITION
    assert status(matcher) == {}


def test_malformed_records_are_refused(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    stub = matcher.stub("police-node")
    records = population["police"].records(range(3))
    short = population["police"].columns(range(3))
    short.block_keys = short.block_keys[:-8]
    with pytest.raises(grpc.RpcError) as caught:
        publish_columns(stub, [jigsaw_pb2.PublishRequest(columns=short)])
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "columns.block_keys" in caught.value.details()

    no_header = iter([jigsaw_pb2.PublishRequest(columns=as_columns(records))])
    with pytest.raises(grpc.RpcError) as caught:
        stub.Publish(no_header, timeout=TIMEOUT)
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "header" in caught.value.details()

    bad_query = jigsaw_pb2.EncodedRecord()
    bad_query.CopyFrom(records[0])
    bad_query.record_filter = b"\x00" * 3
    with pytest.raises(grpc.RpcError) as caught:
        match(matcher, "police-node", bad_query)
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "queries[0].record_filter" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:  # a later row is named by its position
        match(matcher, "police-node", records[0], queries=[records[0], records[1], bad_query])
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "queries[2].record_filter" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:  # hypotheses are named as such
        match(matcher, "police-node", records[0], hypotheses=[records[1], bad_query])
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "hypotheses[1].record_filter" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        match(matcher, "police-node", records[0], hypotheses=[records[1]] * 65)
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "hypotheses" in caught.value.details() and "at most 64" in caught.value.details()
    assert status(matcher) == {}


def test_a_flood_of_refused_publish_streams_writes_few_entries(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    """A stream refused before it changed anything is counted, not audited one by one (the
    matcher does not limit Publish); one that stored records keeps its own entry."""
    stub = matcher.stub("police-node")
    records = population["police"].records(range(3))
    for _ in range(100):
        with pytest.raises(grpc.RpcError) as caught:
            publish(stub, records, first_header=header(fingerprint="0" * 64))
        assert error_of(caught.value).code() is grpc.StatusCode.FAILED_PRECONDITION
    assert publish(stub, records).inserted == 3
    entries = audit_entries(matcher)
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("publish", "ok"),
        ("refused", "refused"),
    ]
    assert entries[1]["details"]["publish.failed_precondition"] == 100  # type: ignore[index]
    assert verify_audit_log(matcher.config.audit_log).ok


def publish_columns(
    stub: jigsaw_pb2_grpc.MatcherStub, messages: list[jigsaw_pb2.PublishRequest]
) -> jigsaw_pb2.PublishResponse:
    """One Publish stream of ``messages``, the first given the header."""
    first = jigsaw_pb2.PublishRequest()
    first.CopyFrom(messages[0])
    first.header.CopyFrom(header())
    response: jigsaw_pb2.PublishResponse = stub.Publish(
        iter([first, *messages[1:]]), timeout=TIMEOUT
    )
    return response


def test_columns_publish_and_republish(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    police = population["police"]
    n = len(police.references)
    stub = matcher.stub("police-node")
    messages = [
        jigsaw_pb2.PublishRequest(columns=police.columns(range(start, min(start + 40, n))))
        for start in range(0, n, 40)
    ]
    response = publish_columns(stub, messages)
    assert (response.received, response.inserted) == (n, n)
    # the same encodings in other messages are recognised as unchanged: identical rows stored
    again = publish(stub, police.records())
    assert (again.received, again.unchanged, again.replaced) == (n, n, 0)
    # and one columns message over records published in several is unchanged too
    publish(matcher.stub("health-node"), population["health"].records())
    health = population["health"]
    repeat = publish_columns(
        matcher.stub("health-node"), [jigsaw_pb2.PublishRequest(columns=health.columns())]
    )
    assert repeat.unchanged == len(health.references) and repeat.inserted == 0
    # an empty columns message is valid and counts nothing
    empty = publish_columns(stub, [jigsaw_pb2.PublishRequest(columns=police.columns([]))])
    assert (empty.received, empty.inserted) == (0, 0)
    assert status(matcher) == {"police": n, "health": len(health.references)}
    found = match(matcher, "school-node", police.records([4])[0]).candidates
    assert (found[0].agency, found[0].reference) == ("police", police.references[4])


def test_malformed_or_oversized_columns_are_refused(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    police = population["police"]
    stub = matcher.stub("police-node")
    bad = police.columns(range(3))
    bad.field_filters[2] = bad.field_filters[2][:-8]
    with pytest.raises(grpc.RpcError) as caught:
        publish_columns(stub, [jigsaw_pb2.PublishRequest(columns=bad)])
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    width = SCHEMA.fields[2].published_words * 8
    assert "columns.field_filters[2]" in caught.value.details()
    assert f"expected {3 * width} bytes" in caught.value.details()

    repeated = police.columns(range(3))
    repeated.references[2] = repeated.references[0]
    with pytest.raises(grpc.RpcError) as caught:
        publish_columns(stub, [jigsaw_pb2.PublishRequest(columns=repeated)])
    assert "field 'columns.references[2]': must be unique" in caught.value.details()

    # the batch limit counts rows of the columnar form too (the fixture allows 500)
    rows = [i % len(police.references) for i in range(501)]
    big = encoded_to_columns(police.batch.take(rows), [f"{i:032x}" for i in range(501)])
    with pytest.raises(grpc.RpcError) as caught:
        publish_columns(stub, [jigsaw_pb2.PublishRequest(columns=big)])
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "columns.references" in caught.value.details()
    assert "at most 500 records per message, got 501" in caught.value.details()
    assert status(matcher) == {}

    # a stream whose third message is malformed keeps the first two
    good = [jigsaw_pb2.PublishRequest(columns=police.columns(range(i, i + 5))) for i in (0, 5)]
    with pytest.raises(grpc.RpcError):
        publish_columns(stub, [*good, jigsaw_pb2.PublishRequest(columns=bad)])
    assert status(matcher) == {"police": 10}


def test_roles_are_enforced(matcher: Running, population: dict[str, AgencyEncodings]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        publish(matcher.stub("alice"), population["police"].records(range(2)))
    assert error_of(caught.value).code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        match(matcher, "olga", population["police"].records([0])[0])
    assert error_of(caught.value).code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        matcher.stub("police-node").Status(jigsaw_pb2.MatcherStatusRequest(), timeout=TIMEOUT)
    assert error_of(caught.value).code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as caught:
        list(matcher.stub("alice").Link(jigsaw_pb2.LinkRequest(), timeout=TIMEOUT))
    assert error_of(caught.value).code() is grpc.StatusCode.PERMISSION_DENIED
    health = health_pb2_grpc.HealthStub(matcher.channel("alice"))
    answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert status(matcher) == {}


def test_match_validates_purpose_and_limits(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    for extra, field in (
        ({"purpose_code": ""}, "purpose_code"),
        ({"purpose_code": "s47 re " + CANARY_GIVEN}, "expected a purpose code, one of s47_enquiry"),
        ({"purpose_code": "court_order"}, "'purpose_code': expected a purpose code, one of"),
        ({"on_behalf_of": ""}, "on_behalf_of"),
        ({"max_candidates": 101}, "max_candidates"),
        ({"queries": []}, "'queries': expected 1 to 32 encoded rows, got 0"),
        ({"queries": [query] * 33}, "'queries': expected 1 to 32 encoded rows, got 33"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            match(matcher, "police-node", query, **extra)
        assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in caught.value.details()
        assert CANARY_GIVEN not in caught.value.details()
    assert match(matcher, "police-node", query).candidates == []  # empty index
    entries = audit_entries(matcher)
    assert {e["purpose"] for e in entries if e["action"] == "match"} == {"", "s47_enquiry"}
    assert CANARY_GIVEN not in matcher.config.audit_log.read_text("utf-8")
    publish(matcher.stub("police-node"), population["police"].records([0]))
    with pytest.raises(grpc.RpcError) as caught:  # one record: nothing to fit a model on
        match(matcher, "police-node", query)
    assert error_of(caught.value).code() is grpc.StatusCode.FAILED_PRECONDITION


# ------------------------------------------------------------------------------ withdraw, restart


def test_withdraw_and_restart(
    tmp_path: Path, pki_dir: Path, population: dict[str, AgencyEncodings]
) -> None:
    config = matcher_config(tmp_path, pki_dir)
    first = Running(config, pki_dir)
    try:
        publish_all(first, population)
        police = population["police"]
        gone = police.references[:5]
        # another agency's node cannot withdraw police's records
        other = first.stub("health-node").Withdraw(
            jigsaw_pb2.WithdrawRequest(references=gone), timeout=TIMEOUT
        )
        assert other.withdrawn == 0
        response = first.stub("police-node").Withdraw(
            jigsaw_pb2.WithdrawRequest(references=gone), timeout=TIMEOUT
        )
        assert response.withdrawn == 5
        with pytest.raises(grpc.RpcError) as caught:
            first.stub("police-node").Withdraw(
                jigsaw_pb2.WithdrawRequest(references=["ABC"]), timeout=TIMEOUT
            )
        assert "references[0]" in caught.value.details()
        counts = status(first)
        assert counts["police"] == len(police.references) - 5
        found = match(first, "school-node", police.records([0])[0]).candidates
        assert all(c.reference not in gone for c in found)
        first_model = first.runtime.servicer.model
    finally:
        first.stop()

    second = Running(config, pki_dir)
    try:
        assert status(second) == counts
        assert second.runtime.servicer.model == first_model  # loaded, not refitted
        found = match(second, "school-node", police.records([7])[0]).candidates
        assert (found[0].agency, found[0].reference) == ("police", police.references[7])
    finally:
        second.stop()


# ------------------------------------------------------------------------------ link


def test_link_progress_result_and_pages(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    publish_all(matcher, population)
    messages = list(matcher.stub("olga").Link(jigsaw_pb2.LinkRequest(), timeout=120))
    stages = [m.stage for m in messages]
    assert "comparing" in stages and "clustering" in stages
    assert all(not m.result_id for m in messages[:-1])
    final = messages[-1]
    assert len(final.result_id) == 32

    stub = matcher.stub("olga")
    clusters: list[jigsaw_pb2.Cluster] = []
    token = ""
    pages = 0
    while True:
        page = stub.GetLinkResult(
            jigsaw_pb2.GetLinkResultRequest(
                result_id=final.result_id, page_size=7, page_token=token
            ),
            timeout=TIMEOUT,
        )
        assert len(page.clusters) <= 7
        clusters.extend(page.clusters)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    total_records = sum(len(e.references) for e in population.values())
    assert page.total_clusters == len(clusters) == final.done
    assert page.total_records == total_records
    assert pages == -(-len(clusters) // 7)
    assert len({c.cluster_id for c in clusters}) == len(clusters)

    child_of = {
        (name, ref): int(child)
        for name, e in population.items()
        for ref, child in zip(e.references, e.child_id, strict=True)
    }
    pure = 0
    for cluster in clusters:
        assert len(cluster.members) >= 2
        assert cluster.edges
        for edge in cluster.edges:
            assert edge.left < len(cluster.members) and edge.right < len(cluster.members)
            assert edge.probability >= 0.5
            assert [e.field for e in edge.evidence] == list(SCHEMA.comparison_names)
        children = {child_of[(m.agency, m.reference)] for m in cluster.members}
        pure += len(children) == 1
    assert len(clusters) >= 30
    assert pure / len(clusters) > 0.9
    # the link's splits are audited as counts (LinkProgress has no field for them)
    (link,) = [e for e in audit_entries(matcher) if e["action"] == "link"]
    details = link["details"]
    assert isinstance(details, dict)
    assert isinstance(details["refused_unions"], int) and isinstance(details["size_splits"], int)

    for token, code in (
        ("garbage!", grpc.StatusCode.INVALID_ARGUMENT),
        (encode_page_token("f" * 32, 1), grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetLinkResult(
                jigsaw_pb2.GetLinkResultRequest(result_id=final.result_id, page_token=token),
                timeout=TIMEOUT,
            )
        assert error_of(caught.value).code() is code
        assert "page_token" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetLinkResult(
            jigsaw_pb2.GetLinkResultRequest(result_id=final.result_id, page_size=1001),
            timeout=TIMEOUT,
        )
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetLinkResult(jigsaw_pb2.GetLinkResultRequest(result_id="0" * 32), timeout=TIMEOUT)
    assert error_of(caught.value).code() is grpc.StatusCode.NOT_FOUND


def test_link_completes_when_the_client_goes_away(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    publish_all(matcher, population)
    call = matcher.stub("olga").Link(jigsaw_pb2.LinkRequest(min_probability=0.9), timeout=120)
    next(call)  # the first progress message
    call.cancel()
    deadline = time.monotonic() + 60
    rows: list[tuple[str, str]] = []
    while time.monotonic() < deadline:
        conn = sqlite3.connect(matcher.config.store)
        try:
            rows = conn.execute("SELECT result_id, status FROM link_results").fetchall()
        finally:
            conn.close()
        if rows and rows[0][1] != "running":
            break
        time.sleep(0.1)
    assert len(rows) == 1 and rows[0][1] == "complete"
    page = matcher.stub("olga").GetLinkResult(
        jigsaw_pb2.GetLinkResultRequest(result_id=rows[0][0]), timeout=TIMEOUT
    )
    assert page.total_clusters > 0
    assert all(e.probability >= 0.9 for c in page.clusters for e in c.edges)


def test_link_needs_records(matcher: Running) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(matcher.stub("olga").Link(jigsaw_pb2.LinkRequest(), timeout=TIMEOUT))
    assert error_of(caught.value).code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as caught:
        list(matcher.stub("olga").Link(jigsaw_pb2.LinkRequest(min_probability=1.5), timeout=5))
    assert error_of(caught.value).code() is grpc.StatusCode.INVALID_ARGUMENT


def test_page_tokens_round_trip() -> None:
    token = encode_page_token("a" * 32, 200)
    assert decode_page_token(token, "a" * 32, 300) == 200
    assert decode_page_token("", "a" * 32, 0) == 0
    for bad, total in ((token, 199), (encode_page_token("a" * 32, 0), 300), ("%%%", 300)):
        with pytest.raises(RequestError):
            decode_page_token(bad, "a" * 32, total)


# ------------------------------------------------------------------------------ privacy

ALLOWED_STRING_FIELDS = {
    "reference",
    "references",
    "form_of",  # the opaque reference of the record a published row is a form of
    "schema_fingerprint",
    "purpose_code",  # a code of a closed list (server.common.purposes), checked by the matcher
    "on_behalf_of",
    "agency",
    "stage",
    "result_id",
    "page_token",
    "next_page_token",
    "cluster_id",
    "field",
    "version",
    "owner",  # an identity name whose audit heads an operator asks for
}
ALLOWED_BYTES_FIELDS = {
    "field_filters",
    "record_filter",
    # a signed audit head or receipt: the matcher refuses a statement with any key or value
    # outside the head format (server.common.anchor), a signature, a CA-issued certificate
    "statement",
    "signature",
    "certificate",
}
# The columnar Publish form: every bytes field, by full name, with why it carries no identifier.
# Checked by full name (not just by field name) so a new bytes field anywhere else still fails.
ALLOWED_COLUMN_FIELDS = {
    "jigsaw.v1.EncodedColumns.references": "opaque random references, as EncodedRecord.reference",
    "jigsaw.v1.EncodedColumns.field_filters": "keyed Bloom filters, as EncodedRecord.field_filters",
    "jigsaw.v1.EncodedColumns.field_present": "one bit per (record, field): value missing or not",
    "jigsaw.v1.EncodedColumns.record_filters": "keyed record filters, as EncodedRecord's",
    "jigsaw.v1.EncodedColumns.block_keys": "keyed HMAC blocking tokens, as EncodedRecord's fixed64",
    "jigsaw.v1.EncodedColumns.salt_tags": "keyed HMAC salt tags, as EncodedRecord's fixed64",
    "jigsaw.v1.EncodedColumns.form_of": "opaque references: the record a row is a form of",
}
SAFE_SCALARS = {
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_DOUBLE,
    FieldDescriptor.TYPE_ENUM,
}


def _reachable(descriptor: Descriptor, seen: dict[str, Descriptor]) -> None:
    if descriptor.full_name in seen:
        return
    seen[descriptor.full_name] = descriptor
    for field in descriptor.fields:
        if field.message_type is not None:
            _reachable(field.message_type, seen)


def test_no_matcher_message_can_carry_raw_identifiers() -> None:
    service = jigsaw_pb2.DESCRIPTOR.services_by_name["Matcher"]
    seen: dict[str, Descriptor] = {}
    for method in service.methods:
        _reachable(method.input_type, seen)
        _reachable(method.output_type, seen)
    assert "jigsaw.v1.EncodedRecord" in seen and "jigsaw.v1.ClusterEdge" in seen
    assert "jigsaw.v1.EncodedColumns" in seen
    columns = seen["jigsaw.v1.EncodedColumns"]
    # the allow-list is exactly the message's fields: a new one needs a reason here first
    assert {f.full_name for f in columns.fields} == set(ALLOWED_COLUMN_FIELDS)
    assert "jigsaw.v1.LookupRequest" not in seen
    assert "jigsaw.v1.DiscloseResponse" not in seen
    problems = []
    for name, descriptor in seen.items():
        assert descriptor.GetOptions().map_entry is False, f"{name} is a map"
        for field in descriptor.fields:
            where = f"{name}.{field.name}"
            if field.full_name in ALLOWED_COLUMN_FIELDS:
                if field.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
                    problems.append(f"{where}: expected a string or bytes column")
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    problems.append(f"{where}: map field")
            elif field.type == FieldDescriptor.TYPE_STRING:
                if field.name not in ALLOWED_STRING_FIELDS:
                    problems.append(f"{where}: unexpected string field")
            elif field.type == FieldDescriptor.TYPE_BYTES:
                if field.name not in ALLOWED_BYTES_FIELDS:
                    problems.append(f"{where}: unexpected bytes field")
            elif field.type == FieldDescriptor.TYPE_FIXED64:
                if field.name not in ("block_keys", "salt_tags"):  # keyed HMAC tokens
                    problems.append(f"{where}: unexpected fixed64 field")
            elif field.type not in SAFE_SCALARS:
                problems.append(f"{where}: unexpected field type {field.type}")
    assert problems == []


def test_store_and_audit_hold_no_canary(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    columns: dict[str, list[str | None]] = {
        "given_name": [CANARY_GIVEN, CANARY_GIVEN, "Amy"],
        "middle_names": [CANARY_FAMILY, None, None],
        "family_name": [CANARY_FAMILY, CANARY_FAMILY, "Smith"],
        "date_of_birth": ["2015-02-03", "2015-02-03", "2014-01-01"],
        "sex": ["F", "F", "F"],
        "postcode": ["SW1A 1AA", "SW1A 1AA", None],
        "nhs_number": [None, None, None],
    }
    batch = encode_records(SCHEMA, KEYS, columns)
    references = [reference_of("canary", str(i)) for i in range(3)]
    records = encoded_to_proto(batch, references)
    publish_all(matcher, population)
    publish(matcher.stub("police-node"), records)
    found = match(matcher, "health-node", records[0]).candidates
    assert found[0].reference == references[0]
    list(matcher.stub("olga").Link(jigsaw_pb2.LinkRequest(), timeout=120))

    needles = {
        form.encode("utf-8")
        for word in (CANARY_GIVEN, CANARY_FAMILY)
        for form in (word, word.lower(), word.upper())
    }
    dumped = b""
    conn = sqlite3.connect(matcher.config.store)
    try:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in conn.execute(f"SELECT * FROM {table}"):
                dumped += repr(row).encode("utf-8")
    finally:
        conn.close()
    assert len(dumped) > 10_000
    store_dir = matcher.config.store.parent
    files = [p for p in store_dir.iterdir() if p.is_file()]
    assert any(p.name.endswith(".sqlite-wal") or p.suffix == ".sqlite" for p in files)
    for needle in needles:
        assert needle not in dumped
        for path in files:
            try:
                content = path.read_bytes()
            except FileNotFoundError:  # e.g. a -wal/-shm file removed by a checkpoint since
                continue
            assert needle not in content, path.name


# ------------------------------------------------------------------------------ match limits


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(tmp_path: Path, pki_dir: Path, clock: FakeClock) -> Iterator[Running]:
    """A matcher with small match limits on a fake clock: burst 3 at 60 a minute (one a
    second), an alert above 5 calls an hour, a cap of 8 answered calls an hour, and all of it
    open to one person (the per-person shares have tests of their own)."""
    limits = (
        "matches_per_minute = 60\nburst = 3\n"
        "enumeration_alert_per_hour = 5\nmax_matches_per_hour = 8\nperson_share = 1.0"
    )
    running = Running(matcher_config(tmp_path, pki_dir, match_limits=limits), pki_dir, clock=clock)
    yield running
    running.stop()


def audit_entries(matcher: Running) -> list[dict[str, object]]:
    matcher.runtime.refusals.flush()  # the refused calls counted so far (nothing once closed)
    lines = matcher.config.audit_log.read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line]


def refused_matches(entries: list[dict[str, Any]], person: str | None = None) -> int:
    """Match calls refused by the limits, as the refusal entries count them."""
    return sum(
        e["details"].get("match.rate_limited", 0)
        for e in entries
        if e["action"] == "refused"
        and (person is None or e["details"].get("on_behalf_of") == person)
    )


def refused(matcher: Running, identity: str, query: jigsaw_pb2.EncodedRecord) -> float:
    """Match as ``identity`` expecting RESOURCE_EXHAUSTED; the retry-after delay it carries."""
    with pytest.raises(grpc.RpcError) as caught:
        match(matcher, identity, query)
    error = error_of(caught.value)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in (error.details() or "")
    retry_after = retry_after_from_metadata(error.trailing_metadata())
    assert retry_after is not None and retry_after > 0
    return retry_after


def test_match_over_burst_is_refused_with_retry_after_and_audited(
    limited: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    for _ in range(3):  # the burst (an empty index answers with no candidates)
        assert match(limited, "police-node", query).candidates == []
    assert refused(limited, "police-node", query) == pytest.approx(1.0)
    # checked before any decoding: a malformed request over the limit is refused the same way
    with pytest.raises(grpc.RpcError) as caught:
        match(limited, "police-node", query, purpose_code="")
    assert error_of(caught.value).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    clock.advance(1.0)  # one token back
    assert match(limited, "police-node", query).candidates == []
    assert refused(limited, "police-node", query) == pytest.approx(1.0)

    entries = audit_entries(limited)
    matches = [e for e in entries if e["action"] == "match"]
    assert [e["outcome"] for e in matches] == ["ok"] * 4  # refusals are counted, not listed
    for entry in matches:
        assert entry["actor"] == "police-node"
        assert entry["details"]["caller_agency"] == "police"  # type: ignore[index]
    assert refused_matches(entries) == 3
    assert {e["actor"] for e in entries if e["action"] == "refused"} == {"police-node"}
    assert verify_audit_log(limited.config.audit_log).ok


def test_enumeration_alert_is_written_once_per_burst(
    limited: Running,
    clock: FakeClock,
    population: dict[str, AgencyEncodings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    query = population["police"].records([0])[0]
    caplog.set_level(logging.WARNING, logger="server.matcher.service")
    for _ in range(8):  # a second apart: the bucket never refuses; 6th call crosses 5
        match(limited, "police-node", query)
        clock.advance(1.0)
    alerts = [e for e in audit_entries(limited) if e["action"] == "enumeration_alert"]
    assert len(alerts) == 1
    assert alerts[0]["actor"] == "police-node"
    assert alerts[0]["outcome"] == "alert"
    assert alerts[0]["details"] == {
        "caller_agency": "police",
        "matches_in_window": 6,
        "threshold": 5,
        "window_seconds": 3600,
    }
    entries = audit_entries(limited)
    first_alert = next(i for i, e in enumerate(entries) if e["action"] == "enumeration_alert")
    assert sum(e["action"] == "match" for e in entries[:first_alert]) == 5
    warnings = [r.getMessage() for r in caplog.records if "enumeration alert" in r.getMessage()]
    assert warnings == ["enumeration alert: caller police-node over the match threshold"]

    clock.advance(3600.0)  # the hour slides past the burst: the next burst alerts again
    for _ in range(6):
        match(limited, "police-node", query)
        clock.advance(1.0)
    alerts = [e for e in audit_entries(limited) if e["action"] == "enumeration_alert"]
    assert len(alerts) == 2


def test_refused_calls_count_towards_the_enumeration_alert(
    limited: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    for _ in range(3):  # the burst, answered
        match(limited, "police-node", query)
    for _ in range(2):  # refused by the bucket on a frozen clock: 5 attempts, at the threshold
        refused(limited, "police-node", query)
    assert not [e for e in audit_entries(limited) if e["action"] == "enumeration_alert"]
    refused(limited, "police-node", query)  # the 6th attempt crosses it, answered or not
    refused(limited, "police-node", query)  # one alert per burst
    entries = audit_entries(limited)
    alerts = [e for e in entries if e["action"] == "enumeration_alert"]
    assert [(e["actor"], e["details"]["matches_in_window"]) for e in alerts] == [  # type: ignore[index]
        ("police-node", 6)
    ]
    # the refusals are still counted per node and person per interval (each read above
    # closed an interval), not written one entry each
    assert [e["outcome"] for e in entries if e["action"] == "match"] == ["ok"] * 3
    assert sum(e["action"] == "refused" for e in entries) == 2
    assert refused_matches(entries) == 4


def test_hourly_cap_refuses_until_a_slot_frees(
    limited: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    for _ in range(8):  # the cap: 8 answered calls, 10 s apart (t = 0 .. 70)
        match(limited, "health-node", query)
        clock.advance(10.0)
    # at t = 80 the bucket is full again, but the hour is not over: the call at t = 0 leaves
    # the window at t = 3600
    assert refused(limited, "health-node", query) == pytest.approx(3520.0)
    clock.advance(10.0)
    assert refused(limited, "health-node", query) == pytest.approx(3510.0)
    clock.advance(3510.0)
    assert match(limited, "health-node", query).candidates == []  # one slot freed
    assert refused(limited, "health-node", query) == pytest.approx(10.0)  # the next at t = 10

    entries = audit_entries(limited)
    outcomes = [e["outcome"] for e in entries if e["action"] == "match"]
    assert outcomes == ["ok"] * 9 and refused_matches(entries) == 3
    # calls refused by the cap still count towards the alert: one alert, at the 6th call
    assert sum(e["action"] == "enumeration_alert" for e in entries) == 1


def test_alert_comes_even_when_the_cap_equals_the_threshold(
    tmp_path: Path, pki_dir: Path, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    limits = (
        "burst = 100\nenumeration_alert_per_hour = 4\nmax_matches_per_hour = 4\nperson_share = 1.0"
    )
    running = Running(matcher_config(tmp_path, pki_dir, match_limits=limits), pki_dir, clock=clock)
    try:
        query = population["police"].records([0])[0]
        for _ in range(4):
            match(running, "school-node", query)
        assert audit_entries(running)[-1]["action"] == "match"
        refused(running, "school-node", query)
        refused(running, "school-node", query)
        entries = audit_entries(running)
        actions = [(e["action"], e["outcome"]) for e in entries]
        assert actions[4:] == [("enumeration_alert", "alert"), ("refused", "refused")]
        assert refused_matches(entries) == 2
    finally:
        running.stop()


def test_one_node_over_its_limits_does_not_limit_another(
    limited: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    for _ in range(3):
        match(limited, "police-node", query)
    refused(limited, "police-node", query)
    for _ in range(3):  # health's node has its own bucket
        assert match(limited, "health-node", query).candidates == []
    refused(limited, "health-node", query)
    for _ in range(5):  # police's node runs into its hourly cap (8) ...
        clock.advance(1.0)
        match(limited, "police-node", query)
    clock.advance(60.0)
    refused(limited, "police-node", query)
    for _ in range(3):  # ... and health's node still has all but 3 of its 8
        match(limited, "health-node", query)
    entries = audit_entries(limited)
    alerts = [e["actor"] for e in entries if e["action"] == "enumeration_alert"]
    assert alerts == ["police-node", "health-node"]  # each at its own 6th counted call


@pytest.fixture
def shared(tmp_path: Path, pki_dir: Path, clock: FakeClock) -> Iterator[Running]:
    """A matcher whose nodes' budgets are shared by their people on a fake clock: per node a
    burst of 4 at 60 a minute and a cap of 8 calls an hour; per person a quarter of each (a
    burst of 1 at 15 a minute, 2 calls an hour)."""
    limits = (
        "matches_per_minute = 60\nburst = 4\n"
        "enumeration_alert_per_hour = 8\nmax_matches_per_hour = 8\nperson_share = 0.25"
    )
    running = Running(matcher_config(tmp_path, pki_dir, match_limits=limits), pki_dir, clock=clock)
    yield running
    running.stop()


def match_as(
    matcher: Running, person: str, query: jigsaw_pb2.EncodedRecord, rows: int = 1
) -> jigsaw_pb2.MatchResponse:
    """A lookup by ``person`` through the police node, of ``rows`` query rows."""
    return match(matcher, "police-node", query, on_behalf_of=person, queries=[query] * rows)


def refused_as(matcher: Running, person: str, query: jigsaw_pb2.EncodedRecord) -> float:
    with pytest.raises(grpc.RpcError) as caught:
        match_as(matcher, person, query)
    error = error_of(caught.value)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after = retry_after_from_metadata(error.trailing_metadata())
    assert retry_after is not None and retry_after > 0
    return retry_after


def test_one_person_flooding_cannot_refuse_a_colleagues_first_lookup(
    shared: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    match_as(shared, "alice", query)
    for _ in range(20):  # alice floods: her own bucket (one call) refuses her, not the node's
        assert refused_as(shared, "alice", query) == pytest.approx(4.0)  # 15 a minute
    match_as(shared, "bob", query)  # colleagues' first lookups are answered
    match_as(shared, "carol", query)
    clock.advance(4.0)
    match_as(shared, "alice", query)  # her hourly share (2) is spent ...
    for _ in range(20):
        clock.advance(4.0)
        assert refused_as(shared, "alice", query) > 3000  # ... until the hour moves on
    for person in ("dave", "erin"):  # the node still has room for the others
        match_as(shared, person, query)
    entries = audit_entries(shared)
    assert refused_matches(entries) == refused_matches(entries, "alice") == 40


def test_a_refused_lookup_charges_no_budget(
    shared: Running, clock: FakeClock, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    people = ("alice", "bob", "carol", "dave")
    for person in people:  # a lookup is one call whatever its rows (3: no sex given)
        match_as(shared, person, query, rows=3)
    refusals = 0
    for _ in range(10):  # refused by the buckets (theirs and the node's), on a frozen clock
        for person in people:
            refused_as(shared, person, query)
            refusals += 1
    clock.advance(4.0)
    for person in people:  # the node's hourly budget (8) is as the refusals found it: 4 left
        match_as(shared, person, query, rows=3)
    # now the node's cap is spent: erin is refused by it, until the first calls leave the hour
    wait = refused_as(shared, "erin", query)
    assert wait == pytest.approx(3600.0 - 4.0)
    for _ in range(5):
        clock.advance(4.0)
        refused_as(shared, "erin", query)
    clock.advance(wait)  # the hour has slid past every call: erin's refusals cost her nothing
    match_as(shared, "erin", query)
    clock.advance(4.0)
    match_as(shared, "erin", query)  # her whole share (2)
    entries = audit_entries(shared)
    outcomes = [e["outcome"] for e in entries if e["action"] == "match"]
    assert outcomes.count("ok") == 8 + 2
    assert refused_matches(entries) == refusals + 6


# ------------------------------------------------------------------------------ anchor limits


def test_anchor_head_is_limited_per_node_with_an_alert(
    tmp_path: Path, pki_dir: Path, clock: FakeClock
) -> None:
    config = replace(
        matcher_config(tmp_path, pki_dir),
        anchor_limits=AnchorLimitConfig(anchors_per_minute=6.0, burst=2, alert_per_hour=3),
    )
    running = Running(config, pki_dir, clock=clock)
    try:

        def anchor(identity: str, seq: int) -> jigsaw_pb2.AnchorHeadResponse:
            head = Signer.from_tls(tls_files_for(pki_dir, identity)).sign_head(seq, "ab" * 32)
            request = jigsaw_pb2.AnchorHeadRequest(head=head.to_proto())
            response: jigsaw_pb2.AnchorHeadResponse = running.stub(identity).AnchorHead(
                request, timeout=TIMEOUT
            )
            return response

        def refused_anchor(request: jigsaw_pb2.AnchorHeadRequest) -> float:
            with pytest.raises(grpc.RpcError) as caught:
                running.stub("police-node").AnchorHead(request, timeout=TIMEOUT)
            error = error_of(caught.value)
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            wait = retry_after_from_metadata(error.trailing_metadata())
            assert wait is not None
            return wait

        anchor("police-node", 1)
        anchor("police-node", 2)  # the burst
        signed = Signer.from_tls(tls_files_for(pki_dir, "police-node")).sign_head(3, "cd" * 32)
        assert refused_anchor(
            jigsaw_pb2.AnchorHeadRequest(head=signed.to_proto())
        ) == pytest.approx(10.0)  # 6 a minute
        # checked before the head is read: a malformed one over the limit is refused the same
        assert refused_anchor(jigsaw_pb2.AnchorHeadRequest()) == pytest.approx(10.0)
        assert anchor("health-node", 1).HasField("receipt")  # each node has its own bucket
        clock.advance(10.0)
        assert anchor("police-node", 3).HasField("receipt")

        entries = audit_entries(running)
        anchored = [(e["actor"], e["outcome"]) for e in entries if e["action"] == "audit_anchor"]
        assert anchored == [("police-node", "ok")] * 2 + [
            ("health-node", "ok"),
            ("police-node", "ok"),
        ]
        refusals = [e["details"] for e in entries if e["action"] == "refused"]
        assert [r.get("audit_anchor.rate_limited") for r in refusals] == [2]  # type: ignore[attr-defined]
        # the 4th attempt of police-node (refused or not) went above 3 an hour
        alerts = [e for e in entries if e["action"] == "anchor_alert"]
        assert [(e["actor"], e["details"]["anchors_in_window"]) for e in alerts] == [  # type: ignore[index]
            ("police-node", 4)
        ]
        assert verify_audit_log(config.audit_log).ok
    finally:
        running.stop()


def test_publish_and_withdraw_are_not_limited(
    limited: Running, population: dict[str, AgencyEncodings]
) -> None:
    police = population["police"]
    stub = limited.stub("police-node")
    for _ in range(5):  # more than the burst of 3, on a frozen clock
        assert publish(stub, police.records(range(2))).received == 2
        stub.Withdraw(jigsaw_pb2.WithdrawRequest(references=police.references[:1]), timeout=TIMEOUT)
    assert status(limited) == {"police": 1}


def test_default_limits_allow_a_burst_of_sixty_fifteen_a_person(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    query = population["police"].records([0])[0]
    started = time.monotonic()
    for _ in range(15):  # a person's share of the burst (a quarter) ...
        match(matcher, "police-node", query)
    refused(matcher, "police-node", query)
    for person in ("bob", "carol", "dave"):  # ... and the node's whole burst, shared
        for _ in range(15):
            match(matcher, "police-node", query, on_behalf_of=person)
    granted = 60
    while granted < 200:  # then only what the real clock refilled (2 a second)
        try:
            match(matcher, "police-node", query, on_behalf_of=f"person-{granted}")
        except grpc.RpcError as exc:
            assert error_of(exc).code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            break
        granted += 1
    assert granted <= 60 + 2 * (time.monotonic() - started) + 1


# ------------------------------------------------------------------------------ serve()

_SERVE = (
    "import sys; sys.path.insert(0, sys.argv[2]);"
    "from server.matcher.service import serve;"
    "from server.matcher.config import load_matcher_config;"
    "serve(load_matcher_config(sys.argv[1]), on_started=lambda port: print(port, flush=True))"
)


def test_serve_stops_gracefully_on_sigterm(tmp_path: Path, pki_dir: Path) -> None:
    config_path = tmp_path / "matcher.toml"
    config_path.write_text(
        f"""
[matcher]
schema = "child"
store = "matcher.sqlite"
audit_log = "matcher-audit.jsonl"
{tls_section(pki_dir, "matcher")}
""",
        encoding="utf-8",
    )
    repo = Path(__file__).resolve().parents[3]
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(config_path), str(repo)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        with secure_channel(f"127.0.0.1:{port}", tls_files_for(pki_dir, "olga")) as channel:
            answer = jigsaw_pb2_grpc.MatcherStub(channel).Status(  # type: ignore[no-untyped-call]
                jigsaw_pb2.MatcherStatusRequest(), timeout=TIMEOUT
            )
        assert answer.schema_fingerprint == SCHEMA.fingerprint()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_candidates_from_table_equals_the_per_candidate_reference() -> None:
    """The batched conversion of Match answers gives exactly candidate_to_proto's messages."""
    schema = load_schema("child")
    data = generate_population(150, seed=12)
    batch = encode_records(schema, KeySet(LinkageSecret.for_tests()), data.all_records().columns)
    model = pipeline.score_pairs(schema, batch, None).model
    index = MatchIndex(schema, key_version=1)
    index.upsert("health", [f"{i:032x}" for i in range(len(batch))], batch)
    table = evidence_table(model)
    compared = not_compared_seen = 0
    levels_seen: set[tuple[int, int]] = set()
    for row in range(0, len(batch), 9):
        found = index.query(batch.take([row]), model, max_candidates=20, min_probability=0.0)
        for reveal in (False, True):
            expected = [candidate_to_proto(c, model, reveal_probability=reveal) for c in found]
            assert candidates_from_table(found, table, reveal_probability=reveal) == expected
        compared += len(found)
        levels_seen.update((f, level) for c in found for f, level in enumerate(c.levels))
        not_compared_seen += sum(any(c.not_compared) for c in found)
    assert compared > 50
    assert len(levels_seen) > 2 * len(schema.input_names)  # several levels of most fields
    assert not_compared_seen  # names salted under no agreeing pair of date parts, both paths agree
    assert candidates_from_table([], table, reveal_probability=False) == []
    assert all(
        set(by_level) == set(range(-1, count))
        for by_level, count in zip(table.by_field, model.n_levels, strict=True)
    )


def test_date_hypotheses_meet_a_record_whose_date_the_query_has_wrong(
    matcher: Running, population: dict[str, AgencyEncodings]
) -> None:
    # police holds a child without a date of birth; a health lookup gives the date: its names
    # are salted with that date, so only a hypothesis ("no date held") meets the record
    publish_all(matcher, population)
    child = {
        "given_name": "Ottoline",
        "family_name": "Marchbanks",
        "sex": "F",
        "postcode": "LS6 2QE",
        "date_of_birth": None,
    }
    held = encode_records(SCHEMA, KEYS, {n: [child.get(n)] for n in SCHEMA.input_names})
    publish(matcher.stub("police-node"), encoded_to_proto(held, ["ab" * 16]))
    typed = {**child, "date_of_birth": "14/09/2016"}
    query = encoded_to_proto(forms.encode_query(SCHEMA, KEYS, typed), ["cd" * 16])
    extra = forms.encode_date_hypotheses(SCHEMA, KEYS, typed)
    assert extra is not None
    hypotheses = encoded_to_proto(extra, ["cd" * 16] * len(extra))

    def found(**rows: object) -> list[str]:
        response = match(matcher, "health-node", query[0], queries=query, **rows)
        return [c.reference for c in response.candidates if c.agency == "police"]

    assert "ab" * 16 not in found()
    assert "ab" * 16 in found(hypotheses=hypotheses)
