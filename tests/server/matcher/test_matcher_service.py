"""Tests for server.matcher.service: a real matcher on loopback, mutual TLS, real SQLite: its
config, publish and match, withdraw and restart, and link jobs."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.audit import verify_audit_log
from server.common.status import RequestError
from server.common.wire import encoded_to_columns
from server.matcher.config import ConfigError, parse_matcher_config
from server.matcher.pages import decode_page_token, encode_page_token
from tests.helpers.matcher import Running, matcher_config
from tests.helpers.matcher_population import (
    CANARY_GIVEN,
    SCHEMA,
    TIMEOUT,
    AgencyEncodings,
    as_columns,
    audit_entries,
    error_of,
    header,
    input_present,
    match,
    publish,
    publish_all,
    status,
)

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
