"""Fuzzing, bounded: malformed RPCs to every method of a real matcher and a real police node
(mutual TLS on loopback), and malformed CSV rows through ingest, generated with Hypothesis.

The generators, the servers and the properties are those of ``benchmarks/fuzz.py`` (its
docstring says what is generated and checked): no call ends outside the expected statuses and
both servers keep serving, no planted canary identifier reaches a status message, a log record
or an audit line, and ingest stores every good row with read = stored + superseded + rejected.
Here a few hundred derandomised examples run, shrinking any failure to a small one; the long
run (``python -m benchmarks.fuzz --inputs 100000 --report``) reports its figures in
benchmarks/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.internal.cache import LRUCache
from hypothesis.internal.conjecture import providers
from hypothesis.internal.constants_ast import Constants

from benchmarks import fuzz
from linkage.schema import load_schema
from proto.jigsaw.v1 import jigsaw_pb2

pytestmark = pytest.mark.slow

RPC_EXAMPLES = 250
CSV_EXAMPLES = 150


@pytest.fixture(autouse=True)
def examples_independent_of_the_loaded_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The derandomised runs draw the same examples in any process: Hypothesis otherwise mixes
    in constants from every local module loaded so far (which tests a pytest-xdist worker or
    a collection happened to import), and the run's coverage checks below changed with them."""
    monkeypatch.setattr(providers, "_get_local_constants", Constants)
    monkeypatch.setattr(providers, "CONSTANTS_CACHE", LRUCache(1024))


@pytest.fixture(scope="module")
def logs() -> Iterator[fuzz.CapturedLogs]:
    with fuzz.captured_logs() as handler:
        yield handler


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, logs: fuzz.CapturedLogs
) -> Iterator[fuzz.Federation]:
    fed = fuzz.Federation(tmp_path_factory.mktemp("fuzz"))
    logs.take()
    yield fed
    fed.close()


def test_the_leak_check_finds_a_canary_in_any_case() -> None:
    assert fuzz.leaked(f"field 'x': bad value {fuzz.CANARY_GIVEN.upper()}") == [
        fuzz.CANARY_GIVEN.lower()
    ]
    assert fuzz.leaked("field 'x': expected an opaque reference") == []


def test_every_rpc_of_both_services_is_fuzzed() -> None:
    declared = {
        (service.name, method.name)
        for service in jigsaw_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    fuzzed = {("AgencyNode", m) for m in fuzz.NODE_CALLERS} | {
        ("Matcher", m) for m in fuzz.MATCHER_CALLERS
    }
    assert fuzzed == declared


TRUNCATED = b"\x0a\x10abc"  # field 1, 16 bytes long, 3 sent
BAD_TAG = b"\xff"
BAD_UTF8 = b"\x0a\x04\xff\xfe" + fuzz.CANARY_GIVEN.encode()[:2]  # field 1 (a string)


@pytest.mark.parametrize(
    ("service", "method", "identity", "payload"),
    [
        ("AgencyNode", "Lookup", "alice", TRUNCATED),
        ("AgencyNode", "Disclose", "alice", BAD_UTF8),
        ("AgencyNode", "Status", "olga", BAD_TAG),
        ("Matcher", "Match", "police-node", TRUNCATED),
        ("Matcher", "Publish", "police-node", TRUNCATED),
        ("Matcher", "Link", "olga", BAD_TAG),
        ("Matcher", "GetLinkResult", "olga", BAD_UTF8),
    ],
)
def test_a_request_that_does_not_parse_is_invalid_argument(
    federation: fuzz.Federation, service: str, method: str, identity: str, payload: bytes
) -> None:
    """gRPC itself answers undecodable bytes with INTERNAL; the interceptor refuses them."""
    code, details = federation.call(service, method, identity, [payload])
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a well-formed" in details and not fuzz.leaked(details)


def test_an_undecodable_request_is_refused_after_the_role_check(
    federation: fuzz.Federation,
) -> None:
    code, _ = federation.call("Matcher", "Match", "alice", [b"\x0a\x10abc"])
    assert code is grpc.StatusCode.PERMISSION_DENIED


def test_an_unknown_lookup_key_is_not_echoed(federation: fuzz.Federation) -> None:
    request = jigsaw_pb2.LookupRequest(
        identifiers={fuzz.CANARY_FAMILY: "x", "given_name": "Amy"},
        purpose_code="s47_enquiry",
        note="n",
    )
    code, details = federation.call("AgencyNode", "Lookup", "alice", [request.SerializeToString()])
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "identifiers" in details and not fuzz.leaked(details)


def test_a_foreign_schema_fingerprint_is_not_echoed(federation: fuzz.Federation) -> None:
    request = jigsaw_pb2.MatchRequest(
        header=jigsaw_pb2.EncodingHeader(schema_fingerprint=fuzz.CANARY_DOB, key_version=1),
        purpose_code="s47_enquiry",
        on_behalf_of="alice",
    )
    request.queries.add().ParseFromString(federation.valid_queries[0])
    code, details = federation.call(
        "Matcher", "Match", "police-node", [request.SerializeToString()]
    )
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "not a schema fingerprint" in details and not fuzz.leaked(details)


def test_malformed_rpcs_never_crash_or_leak(
    federation: fuzz.Federation, logs: fuzz.CapturedLogs
) -> None:
    findings = fuzz.Findings()

    @fuzz.hypothesis_settings(RPC_EXAMPLES, search=False)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        problems = fuzz.check_rpc(
            federation, logs, findings, data.draw(fuzz.rpc_request(federation))
        )
        assert not problems

    run()
    assert federation.serving()
    assert findings.rpc_calls >= RPC_EXAMPLES
    # the run reached the servicers, not only the parsers and the role checks
    codes = {key.split()[1] for key in findings.codes}
    assert {"OK", "INVALID_ARGUMENT", "PERMISSION_DENIED"} <= codes


def test_malformed_csv_rows_never_crash_leak_or_lose_a_good_row(
    tmp_path: Path, logs: fuzz.CapturedLogs
) -> None:
    findings = fuzz.Findings()
    schema = load_schema(fuzz.SCHEMA_NAME)
    logs.take()

    @fuzz.hypothesis_settings(CSV_EXAMPLES, search=False)
    @given(fuzz.csv_file())
    def run(case: fuzz.CsvCase) -> None:
        assert not fuzz.check_csv(tmp_path, schema, logs, findings, case)

    run()
    assert findings.csv_good_rows > 0 and findings.csv_rows > findings.csv_good_rows
