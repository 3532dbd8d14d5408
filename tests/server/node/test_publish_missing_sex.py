"""How the node publishes a record that lacks sex (server.node.publish with linkage.forms).

The shipped schema salts the date of birth with sex, so a record holding a date of birth but
no sex is published as one *form* per sex value, each under a reference derived from the
record's and with ``form_of`` naming it; a record with sex (or with nothing salted by it) is
one row under its own reference. These tests pin the rows and references the node sends, that
a record's forms never straddle two messages, and, against a real matcher (mutual TLS, SQLite
store), that republishing is idempotent and that a record which gains or loses sex, or is
deleted, leaves the matcher holding exactly its current rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from linkage.forms import form_reference
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.pki import init_pki
from server.common.tls import secure_channel, tls_files_for
from server.common.wire import columns_to_encoded, request_form_of, request_references
from server.matcher.service import MatcherRuntime, build_matcher
from server.node.publish import encode_messages, publish_pending
from server.node.store import NodeStore, PendingRecord
from tests.helpers import matcher as matcher_harness

SCHEMA = load_schema("child")
KEYS = KeySet(LinkageSecret.for_tests(), 1)
HEADER = jigsaw_pb2.EncodingHeader(schema_fingerprint=SCHEMA.fingerprint(), key_version=1)
AGENCY = "health"
TIMEOUT = 30

WITH_SEX = {"given_name": "Amy", "family_name": "Smith", "date_of_birth": "2014-03-02", "sex": "F"}
WITHOUT_SEX = {"given_name": "Ben", "family_name": "Okafor", "date_of_birth": "2013-07-19"}
NO_DATE = {"given_name": "Cara", "family_name": "Nguyen", "postcode": "LS6 2AB"}


def pending(store: NodeStore, rows: dict[str, dict[str, str]]) -> list[PendingRecord]:
    store.upsert_many([(local_id, dict(fields)) for local_id, fields in rows.items()])
    return store.pending_publish_page(0, 1000)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    with NodeStore(tmp_path / "node.sqlite") as opened:
        yield opened


# ------------------------------------------------------------------ the rows a node sends


def test_a_record_without_sex_is_published_as_its_forms(store: NodeStore) -> None:
    records = pending(store, {"a": WITH_SEX, "b": WITHOUT_SEX, "c": NO_DATE})
    a, b, c = (r.reference for r in records)
    messages = encode_messages(records, SCHEMA, KEYS, HEADER, 100)
    assert len(messages) == 1
    references = request_references(messages[0])
    form_of = request_form_of(messages[0])
    forms_of_b = [form_reference(b, number) for number in range(3)]
    # a record with sex, and one with nothing salted by sex (no date), are themselves
    assert references == [a, *forms_of_b, c]
    assert form_of == ["", b, b, b, ""]
    assert len(set(references)) == 5 and b not in references
    assert all(len(r) == 32 and set(r) <= set("0123456789abcdef") for r in forms_of_b)

    batch, _ = columns_to_encoded(
        messages[0].columns, SCHEMA, fingerprint=SCHEMA.fingerprint(), key_version=1
    )
    sex = SCHEMA.field_names.index("sex")
    dob = SCHEMA.field_names.index("date_of_birth")
    sex_tag = SCHEMA.salt_sources.index("sex.value")
    # the forms: sex published as missing, the date present under three sex salts
    assert batch.field_present[1:4, sex].tolist() == [False] * 3
    assert batch.field_present[1:4, dob].tolist() == [True] * 3
    assert len(set(batch.salt_tags[1:4, sex_tag].tolist()) - {0}) == 3


def test_a_record_and_its_forms_travel_in_one_message(store: NodeStore) -> None:
    rows = {f"r{i}": dict(WITHOUT_SEX if i % 2 else WITH_SEX, given_name=f"n{i}") for i in range(5)}
    records = pending(store, rows)
    # batch_size counts rows (the matcher's max_publish_batch does); a message ends early
    # rather than split a record, and a record with more forms than batch_size goes alone
    sizes = {
        size: [
            len(request_references(m)) for m in encode_messages(records, SCHEMA, KEYS, HEADER, size)
        ]
        for size in (1, 2, 4, 9)
    }
    assert sizes == {1: [1, 3, 1, 3, 1], 2: [1, 3, 1, 3, 1], 4: [1 + 3, 1 + 3, 1], 9: [9]}
    messages = encode_messages(records, SCHEMA, KEYS, HEADER, 4)
    assert messages[0].HasField("header") and not messages[1].HasField("header")
    for message in messages:
        references = set(request_references(message))
        # every form names a record of its own message, never one sent elsewhere
        own = {r.reference for r in records if form_reference(r.reference, 0) in references}
        assert set(request_form_of(message)) - {""} == own


# ------------------------------------------------------------------ against a real matcher


class Recording:
    """A matcher stub that keeps each Publish response (to read inserted / unchanged)."""

    def __init__(self, stub: jigsaw_pb2_grpc.MatcherStub) -> None:
        self._stub = stub
        self.responses: list[jigsaw_pb2.PublishResponse] = []

    def Publish(self, requests: Any, timeout: float) -> jigsaw_pb2.PublishResponse:
        response: jigsaw_pb2.PublishResponse = self._stub.Publish(requests, timeout=timeout)
        self.responses.append(response)
        return response

    def Withdraw(self, request: Any, timeout: float) -> jigsaw_pb2.WithdrawResponse:
        response: jigsaw_pb2.WithdrawResponse = self._stub.Withdraw(request, timeout=timeout)
        return response

    def totals(self) -> dict[str, int]:
        out = {"received": 0, "inserted": 0, "replaced": 0, "unchanged": 0}
        for response in self.responses:
            for key in out:
                out[key] += getattr(response, key)
        self.responses.clear()
        return out


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    init_pki(out, agencies=[AGENCY], staff=[], operators=["olga"])
    return out


@pytest.fixture
def matcher(tmp_path: Path, pki_dir: Path) -> Iterator[tuple[MatcherRuntime, Recording]]:
    config = matcher_harness.matcher_config(tmp_path, pki_dir)
    with (
        build_matcher(config) as runtime,
        secure_channel(
            f"127.0.0.1:{runtime.port}", tls_files_for(pki_dir, f"{AGENCY}-node")
        ) as channel,
    ):
        yield runtime, Recording(jigsaw_pb2_grpc.MatcherStub(channel))  # type: ignore[no-untyped-call]


def held(runtime: MatcherRuntime) -> set[str]:
    """The references of the rows the matcher stores for the agency (read from its file)."""
    con = sqlite3.connect(runtime.store.path, timeout=10)
    try:
        rows = con.execute("SELECT reference FROM encodings WHERE agency = ?", (AGENCY,))
        return {str(row[0]) for row in rows}
    finally:
        con.close()


def publish(store: NodeStore, stub: Recording) -> int:
    return publish_pending(store, SCHEMA, KEYS, stub, batch_size=2).published  # type: ignore[arg-type]


def test_republishing_forms_is_idempotent(
    store: NodeStore, matcher: tuple[MatcherRuntime, Recording]
) -> None:
    runtime, stub = matcher
    records = pending(store, {"a": WITH_SEX, "b": WITHOUT_SEX, "c": NO_DATE})
    a, b, c = (r.reference for r in records)
    expected = {a, c, *(form_reference(b, number) for number in range(3))}
    assert publish(store, stub) == 3
    assert stub.totals() == {"received": 5, "inserted": 5, "replaced": 0, "unchanged": 0}
    assert held(runtime) == expected
    # a re-send of everything (as after a crash before marking) changes nothing
    store.reset_publication()
    assert publish(store, stub) == 3
    assert stub.totals() == {"received": 5, "inserted": 0, "replaced": 0, "unchanged": 5}
    assert held(runtime) == expected


def test_a_record_that_gains_or_loses_sex_replaces_its_rows(
    store: NodeStore, matcher: tuple[MatcherRuntime, Recording]
) -> None:
    runtime, stub = matcher
    records = pending(store, {"a": WITH_SEX, "b": WITHOUT_SEX})
    a, b = (r.reference for r in records)
    forms_of_b = {form_reference(b, number) for number in range(3)}
    publish(store, stub)
    assert held(runtime) == {a, *forms_of_b}

    store.upsert_many([("b", {**WITHOUT_SEX, "sex": "M"})])  # sex recorded later
    assert publish(store, stub) == 1
    assert held(runtime) == {a, b}  # one row for b, not its own and three forms

    store.upsert_many([("b", dict(WITHOUT_SEX))])  # and erased again
    assert publish(store, stub) == 1
    assert held(runtime) == {a, *forms_of_b}

    store.mark_deleted(["b"])  # withdrawn by its own reference: the forms go with it
    report = publish_pending(store, SCHEMA, KEYS, stub, batch_size=2)  # type: ignore[arg-type]
    assert report.withdrawn == 1
    assert held(runtime) == {a}
