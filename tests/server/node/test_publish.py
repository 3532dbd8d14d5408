"""Tests of the publish loop's fast path (server.node.publish, server.node.store paging).

The publisher encodes a whole call's records at once, pages the store by position and reads
and encodes the next group in a thread while the current one is in flight. These tests pin
what must not change because of that: the records sent (as ``EncodedColumns``) equal
encoding message by message, every
pending record is sent once per pass in store order, a record changed during a pass is
re-sent in the same run, and a failure (gRPC, encoding, or a matcher acknowledging fewer
records than were sent) marks nothing it did not send and leaves no thread behind.
Publishing over real gRPC is covered by ``tests/e2e/test_federation_cli.py`` and
``tests/server/node/test_node_service.py``; the older loop tests live in
``tests/server/node/test_node_store.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import server.node.publish as publish_module
from linkage.encode import EncodedBatch
from linkage.forms import NO_FORM, encode_forms, form_reference
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Schema, load_schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.wire import (
    columns_form_of,
    columns_to_encoded,
    encoded_to_columns,
    encoded_to_proto,
    request_references,
)
from server.node.publish import (
    PublishNotAcknowledged,
    encode_messages,
    message_forms,
    publish_pending,
)
from server.node.store import NodeStore, PendingRecord, content_hash

SCHEMA = load_schema("child")

GIVEN = ["amy", "José", "Müller", "nguyễn", "o'brien", "zara", "li", "van der berg"]
FAMILY = ["smith", "okafor", "nguyen", "o'neill", "de la cruz", "brown"]


def varied_rows(
    count: int, *, start: int = 0, without_sex: int = 0
) -> list[tuple[str, dict[str, str | None]]]:
    """Records with repeated and distinct values, a few missing (deterministic); with
    ``without_sex``, every ``without_sex``-th record lacks sex (published as forms)."""
    rows: list[tuple[str, dict[str, str | None]]] = []
    for i in range(start, start + count):
        rows.append(
            (
                f"r{i}",
                {
                    "given_name": GIVEN[i % len(GIVEN)] + ("" if i % 3 else str(i)),
                    "middle_names": None if i % 4 else "lee",
                    "family_name": FAMILY[i % len(FAMILY)],
                    "date_of_birth": f"20{10 + i % 9}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    "sex": None if without_sex and i % without_sex == 0 else "fm"[i % 2],
                    "postcode": None if i % 5 == 0 else f"SW{1 + i % 9}A {i % 10}AA",
                    "nhs_number": None,
                },
            )
        )
    return rows


def records_of(message: jigsaw_pb2.PublishRequest) -> list[jigsaw_pb2.EncodedRecord]:
    """The rows a message carries, one record each (columns decoded, form_of validated, and
    re-encoded)."""
    batch, references = columns_to_encoded(
        message.columns, SCHEMA, fingerprint=SCHEMA.fingerprint(), key_version=1
    )
    columns_form_of(message.columns, references)
    return encoded_to_proto(batch, references)


class FakeMatcher:
    """Records each Publish stream (as serialised records) and can act during a call."""

    def __init__(
        self,
        during_call: Any = None,
        fail_on_call: int | None = None,
        short_by: int = 0,
        forms_short_by: int = 0,
    ) -> None:
        self.streams: list[list[jigsaw_pb2.PublishRequest]] = []
        self.held: dict[str, bytes] = {}
        self.during_call = during_call
        self.fail_on_call = fail_on_call
        self.short_by = short_by  # acknowledge this many records fewer than were sent
        self.forms_short_by = forms_short_by  # ... and this many forms fewer

    def Publish(
        self, requests: Iterator[jigsaw_pb2.PublishRequest], timeout: float
    ) -> jigsaw_pb2.PublishResponse:
        if timeout <= 0:
            raise ValueError("every call needs a deadline")
        if self.fail_on_call is not None and len(self.streams) + 1 == self.fail_on_call:
            raise ConnectionError("matcher went away")
        messages = list(requests)
        self.streams.append(messages)
        for message in messages:
            for record in records_of(message):
                self.held[record.reference] = record.SerializeToString()
        if self.during_call is not None:
            self.during_call(len(self.streams))
        received = sum(len(request_references(m)) for m in messages)
        forms = sum(message_forms(m) for m in messages) - self.forms_short_by
        return jigsaw_pb2.PublishResponse(received=received - self.short_by, forms=forms)

    def Withdraw(
        self, request: jigsaw_pb2.WithdrawRequest, timeout: float
    ) -> jigsaw_pb2.WithdrawResponse:
        return jigsaw_pb2.WithdrawResponse(withdrawn=len(request.references))


def as_stub(fake: FakeMatcher) -> jigsaw_pb2_grpc.MatcherStub:
    return cast(jigsaw_pb2_grpc.MatcherStub, fake)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    with NodeStore(tmp_path / "node.sqlite") as opened:
        yield opened


@pytest.fixture(scope="module")
def schema() -> Schema:
    return SCHEMA


@pytest.fixture(scope="module")
def keys() -> KeySet:
    return KeySet(LinkageSecret.for_tests(), 1)


def _encoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "publish-encoder" and t.is_alive()]


def _record_groups(
    records: list[PendingRecord], schema: Schema, keys: KeySet, batch_size: int
) -> list[list[PendingRecord]]:
    """The records of each message: as many as fit in ``batch_size`` rows (a record's forms
    counted by encoding it alone), a record never split, one alone if it does not fit."""
    groups: list[list[PendingRecord]] = []
    current: list[PendingRecord] = []
    rows = 0
    for record in records:
        alone = encode_forms(schema, keys, {f: [record.fields.get(f)] for f in schema.input_names})
        if current and rows + len(alone) > batch_size:
            groups.append(current)
            current, rows = [], 0
        current.append(record)
        rows += len(alone)
    return [*groups, current] if current else groups


def _message_by_message(
    records: list[PendingRecord],
    schema: Schema,
    keys: KeySet,
    batch_size: int,
    serialise: Callable[[EncodedBatch, list[str], list[str]], list[bytes]],
) -> list[bytes]:
    """The reference: each message's records (and their forms) encoded alone, record by
    record in a plain loop."""
    out: list[bytes] = []
    for group in _record_groups(records, schema, keys, batch_size):
        columns = {name: [r.fields.get(name) for r in group] for name in schema.input_names}
        encoded = encode_forms(schema, keys, columns)
        references, form_of = [], []
        for row in range(len(encoded)):
            record = group[int(encoded.origin[row])]
            form = int(encoded.form[row])
            references.append(form_reference(record.reference, form))
            form_of.append("" if form == NO_FORM else record.reference)
        out.extend(serialise(encoded.batch, references, form_of))
    return out


def _as_records(batch: EncodedBatch, references: list[str], form_of: list[str]) -> list[bytes]:
    return [r.SerializeToString() for r in encoded_to_proto(batch, references)]


def _as_columns(batch: EncodedBatch, references: list[str], form_of: list[str]) -> list[bytes]:
    return [encoded_to_columns(batch, references, form_of).SerializeToString()]


@settings(deadline=None, max_examples=15)
@given(count=st.integers(1, 40), batch_size=st.integers(1, 17), offset=st.integers(0, 50))
def test_encoding_a_group_at_once_sends_the_same_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    schema: Schema,
    keys: KeySet,
    count: int,
    batch_size: int,
    offset: int,
) -> None:
    with NodeStore(tmp_path_factory.mktemp("node") / "node.sqlite") as node:
        # every third record lacks sex: published as three forms, in the same message
        node.upsert_many(varied_rows(count, start=offset, without_sex=3))
        records = node.pending_publish_page(0, 1000)
    header = jigsaw_pb2.EncodingHeader(schema_fingerprint=schema.fingerprint(), key_version=1)
    forms_of = {r.reference: 3 if r.fields.get("sex") is None else 1 for r in records}
    sizes = [
        sum(forms_of[r.reference] for r in group)
        for group in _record_groups(records, schema, keys, batch_size)
    ]
    expected_records = _message_by_message(records, schema, keys, batch_size, _as_records)

    messages = encode_messages(records, schema, keys, header, batch_size)
    assert [len(m.columns.references) for m in messages] == sizes
    assert messages[0].header == header
    assert not any(m.HasField("header") for m in messages[1:])
    sent = [m.columns.SerializeToString() for m in messages]
    assert sent == _message_by_message(records, schema, keys, batch_size, _as_columns)
    # and the columns carry exactly the rows of encoding record by record
    decoded = [record.SerializeToString() for m in messages for record in records_of(m)]
    assert decoded == expected_records


def test_pages_cover_each_pending_record_once_in_store_order(store: NodeStore) -> None:
    store.upsert_many(varied_rows(23))
    first = store.pending_publish_page(0, 5)
    store.mark_published_rows(first[:2])
    seen: list[PendingRecord] = []
    after = 0
    while page := store.pending_publish_page(after, 4):
        seen.extend(page)
        after = page[-1].row
    assert [r.local_id for r in seen] == [f"r{i}" for i in range(2, 23)]
    assert [r.row for r in seen] == sorted(r.row for r in seen)
    # the page's hash is the hash of the fields it returns
    assert all(r.content_hash == content_hash(r.fields) for r in seen)
    assert store.pending_publish_page(seen[-1].row, 10) == []
    assert store.pending_publish_page(0, 0) == []


def test_marking_by_position_checks_the_reference(store: NodeStore) -> None:
    store.upsert_many(varied_rows(3))
    page = store.pending_publish_page(0, 10)
    moved = PendingRecord(page[0].row, "x", "0" * 32, {}, page[0].content_hash)
    assert store.mark_published_rows([moved]) == 0
    assert store.counts().pending == 3
    assert store.mark_published_rows(page) == 3
    assert store.counts().pending == 0


def test_publish_sends_every_record_once_and_marks_them(
    store: NodeStore, schema: Schema, keys: KeySet
) -> None:
    store.upsert_many(varied_rows(57))
    matcher = FakeMatcher()
    report = publish_pending(
        store, schema, keys, as_stub(matcher), batch_size=5, batches_per_call=3
    )
    assert (report.published, report.calls) == (57, 4)  # 15 + 15 + 15 + 12
    assert [sum(len(request_references(m)) for m in s) for s in matcher.streams] == [
        15,
        15,
        15,
        12,
    ]
    assert len(matcher.held) == 57 and store.counts().pending == 0
    again = publish_pending(store, schema, keys, as_stub(matcher), batch_size=5)
    assert (again.published, again.calls) == (0, 0)
    assert _encoder_threads() == []


def test_a_record_changed_during_a_pass_is_resent_in_the_same_run(
    store: NodeStore, schema: Schema, keys: KeySet
) -> None:
    store.upsert_many(varied_rows(20))
    reference = store.pending_publish_page(0, 1)[0].reference
    changed = ("r0", {**varied_rows(1)[0][1], "family_name": "changed"})

    def change_r0(call: int) -> None:
        if call == 1:  # r0 was sent in this call, with its old content
            store.upsert_many([changed])

    matcher = FakeMatcher(during_call=change_r0)
    report = publish_pending(
        store, schema, keys, as_stub(matcher), batch_size=4, batches_per_call=2
    )
    assert report.published == 21 and report.calls == 4  # 8 + 8 + 4, then r0 again
    assert store.counts().pending == 0
    assert request_references(matcher.streams[-1][0]) == [reference]
    first_sent = records_of(matcher.streams[0][0])[0]
    assert first_sent.reference == reference
    assert matcher.held[reference] != first_sent.SerializeToString()  # the new content won


def test_a_failed_call_marks_nothing_and_stops_the_encoder(
    store: NodeStore, schema: Schema, keys: KeySet
) -> None:
    store.upsert_many(varied_rows(30))
    failing = FakeMatcher(fail_on_call=2)
    with pytest.raises(ConnectionError):
        publish_pending(store, schema, keys, as_stub(failing), batch_size=5, batches_per_call=2)
    assert store.counts().published == 10 and store.counts().pending == 20
    assert _encoder_threads() == []
    working = FakeMatcher()
    report = publish_pending(store, schema, keys, as_stub(working), batch_size=5)
    assert report.published == 20 and set(working.held).isdisjoint(failing.held)


def test_a_call_acknowledging_fewer_records_marks_nothing(
    store: NodeStore, schema: Schema, keys: KeySet
) -> None:
    store.upsert_many(varied_rows(12))
    matcher = FakeMatcher(short_by=1)
    with pytest.raises(PublishNotAcknowledged, match=r"acknowledged 9 of 10 rows"):
        publish_pending(store, schema, keys, as_stub(matcher), batch_size=5, batches_per_call=2)
    assert store.counts().published == 0 and store.counts().pending == 12
    assert _encoder_threads() == []


def test_forms_count_in_the_acknowledgement(store: NodeStore, schema: Schema, keys: KeySet) -> None:
    # 5 of 10 records lack sex: 5 + 5 * 3 rows. A matcher acknowledging one row per record
    # (dropping the forms) has not stored what was sent.
    store.upsert_many(varied_rows(10, without_sex=2))
    matcher = FakeMatcher(short_by=10)
    with pytest.raises(
        PublishNotAcknowledged, match=r"acknowledged 10 of 20 rows sent .10 records"
    ):
        publish_pending(store, schema, keys, as_stub(matcher), batch_size=5, batches_per_call=2)
    assert store.counts().published == 0
    report = publish_pending(store, schema, keys, as_stub(FakeMatcher()), batch_size=5)
    assert report.published == 10 and store.counts().pending == 0


def test_a_matcher_that_takes_forms_as_records_marks_nothing(
    store: NodeStore, schema: Schema, keys: KeySet
) -> None:
    # a matcher that acknowledges every row but reports no forms would hold each form as a
    # record of its own, which lookups would then name
    store.upsert_many(varied_rows(10, without_sex=2))
    matcher = FakeMatcher(forms_short_by=15)
    with pytest.raises(PublishNotAcknowledged, match=r"took 0 of the 15 forms"):
        publish_pending(store, schema, keys, as_stub(matcher), batch_size=100)
    assert store.counts().published == 0 and store.counts().pending == 10
    assert _encoder_threads() == []


def test_an_encoding_error_propagates_and_marks_nothing_more(
    store: NodeStore, schema: Schema, keys: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.upsert_many(varied_rows(30))
    calls = {"encode": 0}
    real = encode_forms

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["encode"] += 1
        if calls["encode"] == 2:
            raise RuntimeError("encoder failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(publish_module, "encode_forms", flaky)
    matcher = FakeMatcher()
    with pytest.raises(RuntimeError, match="encoder failed"):
        publish_pending(store, schema, keys, as_stub(matcher), batch_size=5, batches_per_call=2)
    assert store.counts().published == 10 and len(matcher.streams) == 1
    assert _encoder_threads() == []


def test_the_encoder_reads_at_most_one_group_ahead(
    store: NodeStore, schema: Schema, keys: KeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.upsert_many(varied_rows(40))
    pages: list[int] = []
    real = store.pending_publish_page

    def counted(after_row: int, limit: int) -> list[PendingRecord]:
        pages.append(after_row)
        return real(after_row, limit)

    monkeypatch.setattr(store, "pending_publish_page", counted)
    read_during_call: list[int] = []

    def slow_call(call: int) -> None:
        time.sleep(0.2)  # time for a runaway producer to read further
        read_during_call.append(len(pages))

    matcher = FakeMatcher(during_call=slow_call)
    publish_pending(store, schema, keys, as_stub(matcher), batch_size=5, batches_per_call=1)
    assert len(matcher.streams) == 8
    # while call n is in flight, pages n and n + 1 at most have been read
    assert all(read <= call + 1 for call, read in enumerate(read_during_call, start=1))
