"""Tests for server.matcher.service: no message can carry a raw identifier, nothing identifying
reaches its store or audit log, it stops on SIGTERM, and its candidate wire form."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from linkage import forms, pipeline
from linkage.encode import encode_records
from linkage.index import MatchIndex
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from linkage.synthetic import generate_population
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.tls import secure_channel, tls_files_for
from server.common.wire import encoded_to_proto
from server.matcher.wire import candidate_to_proto, candidates_from_table, evidence_table
from tests.helpers.matcher import Running, tls_section
from tests.helpers.matcher_population import (
    CANARY_FAMILY,
    CANARY_GIVEN,
    KEYS,
    SCHEMA,
    TIMEOUT,
    AgencyEncodings,
    match,
    publish,
    publish_all,
    reference_of,
)

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
