"""Tests of the node store (server.node.store) and of publishing from it (server.node.publish).

Publishing is driven through a fake in-process matcher stub that records what it was sent;
``tests/server/node/test_node_service.py`` publishes over real mutual-TLS gRPC.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import pytest

from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from proto.jigsaw.v1 import jigsaw_pb2, jigsaw_pb2_grpc
from server.common.wire import request_references
from server.node.publish import message_forms, publish_pending
from server.node.store import NodeStore, StoreFormatError, content_hash

REPO = Path(__file__).resolve().parents[3]


def person(given: str, family: str = "smith", dob: str = "2014-03-02") -> dict[str, str | None]:
    return {"given_name": given, "family_name": family, "date_of_birth": dob, "postcode": None}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NodeStore]:
    with NodeStore(tmp_path / "node.sqlite") as opened:
        yield opened


def test_upsert_counts_and_stable_references(store: NodeStore) -> None:
    first = store.upsert_many([("a", person("amy")), ("b", person("ben"))])
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
    refs = {local_id: ref for local_id, ref, _ in store.pending_publish(10)}
    assert all(len(ref) == 32 and int(ref, 16) >= 0 and ref == ref.lower() for ref in refs.values())
    assert refs["a"] != refs["b"]
    again = store.upsert_many(
        [("a", person("amy")), ("b", person("benjamin")), ("c", person("cy"))]
    )
    assert (again.inserted, again.updated, again.unchanged) == (1, 1, 1)
    after = {local_id: ref for local_id, ref, _ in store.pending_publish(10)}
    assert after["a"] == refs["a"] and after["b"] == refs["b"]
    record = store.get_by_reference(refs["b"])
    assert record is not None and record.fields["given_name"] == "benjamin"
    assert record.content_hash == content_hash(person("benjamin"))
    assert store.counts().records == 3


def test_publish_marks_and_changes(store: NodeStore) -> None:
    store.upsert_many([("a", person("amy")), ("b", person("ben"))])
    pending = store.pending_publish(10)
    assert [p[0] for p in pending] == ["a", "b"]
    assert store.mark_published_rows(store.pending_publish_page(0, 10)) == 2
    assert store.pending_publish(10) == []
    counts = store.counts()
    assert (counts.records, counts.published, counts.pending, counts.deleted) == (2, 2, 0, 0)
    # a change makes the record pending again, under the same reference
    store.upsert_many([("a", person("amelia"))])
    ((local_id, ref, fields),) = store.pending_publish(10)
    assert (local_id, ref) == ("a", pending[0][1]) and fields["given_name"] == "amelia"
    # marking with a stale hash (content changed since it was sent) keeps it pending
    (changed,) = store.pending_publish_page(0, 10)
    assert changed.content_hash == content_hash(person("amelia"))
    stale = dataclasses.replace(changed, content_hash=content_hash(person("amy")))
    assert store.mark_published_rows([stale]) == 1
    assert len(store.pending_publish(10)) == 1
    assert store.pending_publish(0) == []


def test_delete_withdraw_and_purge(store: NodeStore) -> None:
    store.upsert_many([("a", person("amy")), ("b", person("ben")), ("c", person("cy"))])
    pending = store.pending_publish_page(0, 10)
    refs = {record.local_id: record.reference for record in pending}
    store.mark_published_rows(record for record in pending if record.local_id != "c")
    assert store.mark_deleted(["a", "c", "nobody"]) == 2
    assert store.get_by_reference(refs["c"]) is None  # never published: purged at once
    assert store.pending_withdraw() == [refs["a"]]
    deleted = store.get_by_reference(refs["a"])
    assert deleted is not None and deleted.deleted
    assert store.counts().deleted == 1 and store.counts().records == 1
    assert store.mark_withdrawn([refs["a"], refs["b"]]) == 1  # only deleted rows are purged
    assert store.get_by_reference(refs["a"]) is None
    assert store.get_by_reference(refs["b"]) is not None
    assert store.pending_withdraw() == []


def test_reupsert_of_a_deleted_record_restores_it(store: NodeStore) -> None:
    store.upsert_many([("a", person("amy"))])
    (record,) = store.pending_publish_page(0, 10)
    ref = record.reference
    store.mark_published_rows([record])
    store.mark_deleted(["a"])
    counts = store.upsert_many([("a", person("amy"))])
    assert counts.updated == 1
    assert store.pending_withdraw() == [] and store.pending_publish(10) == []
    stored = store.get_by_reference(ref)
    assert stored is not None and not stored.deleted and stored.published


def test_failed_upsert_commits_nothing(store: NodeStore) -> None:
    def rows() -> Iterable[tuple[str, dict[str, str | None]]]:
        yield ("a", person("amy"))
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        store.upsert_many(rows())
    assert store.counts().records == 0
    store.upsert_many([("b", person("ben"))])  # the store is still usable
    assert store.counts().records == 1


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with NodeStore(tmp_path / "s.sqlite") as first:
        first.upsert_many([("a", person("amy"))])
        ref = first.pending_publish(1)[0][1]
        first.set_meta("k", "v")
    with NodeStore(tmp_path / "s.sqlite") as second:
        assert second.upsert_many([("a", person("amy"))]).unchanged == 1
        assert second.pending_publish(1)[0][1] == ref
        assert second.get_meta("k") == "v" and second.get_meta("missing") is None
        mode = second._conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_concurrent_upserts_from_threads(store: NodeStore) -> None:
    def work(thread: int) -> None:
        for batch in range(10):
            store.upsert_many([(f"t{thread}-{batch}-{i}", person(f"n{i}")) for i in range(20)])
            store.counts()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.counts().records == 4 * 10 * 20
    refs = [ref for _, ref, _ in store.pending_publish(10_000)]
    assert len(set(refs)) == len(refs) == 800


_WRITER = """
import sys
from server.node.store import NodeStore
store = NodeStore(sys.argv[1])
chunk = 0
while True:
    store.upsert_many([(f"id{chunk}-{i}", {"given_name": "x" + str(i)}) for i in range(200)])
    print(chunk, flush=True)
    chunk += 1
"""


def test_kill_minus_9_loses_no_committed_chunk(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite"
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    committed = -1
    for line in process.stdout:
        committed = int(line)
        if committed >= 5:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    with NodeStore(path) as reopened:
        records = reopened.counts().records
        assert records >= (committed + 1) * 200 and records % 200 == 0
        ok = reopened._conn.execute("PRAGMA integrity_check").fetchone()[0]
        assert ok == "ok"
        # a re-run of the same chunks never duplicates
        again = reopened.upsert_many(
            [(f"id0-{i}", {"given_name": "x" + str(i)}) for i in range(200)]
        )
        assert again.unchanged == 200 and reopened.counts().records == records
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(DISTINCT reference) FROM records").fetchone()[0] == records
    conn.close()


# --------------------------------------------------------------------------- publishing


class FakeMatcher:
    """Records Publish streams and Withdraw calls like a matcher that upserts by reference."""

    def __init__(self, fail_publish_after: int | None = None) -> None:
        self.streams: list[list[jigsaw_pb2.PublishRequest]] = []
        self.held: dict[str, jigsaw_pb2.PublishRequest] = {}  # reference -> message it came in
        self.withdrawn: list[str] = []
        self.fail_publish_after = fail_publish_after

    def Publish(
        self, requests: Iterator[jigsaw_pb2.PublishRequest], timeout: float
    ) -> jigsaw_pb2.PublishResponse:
        assert timeout > 0
        if self.fail_publish_after is not None and len(self.streams) >= self.fail_publish_after:
            raise ConnectionError("matcher went away")
        messages = list(requests)
        self.streams.append(messages)
        for message in messages:
            for reference in request_references(message):  # columns or records
                self.held[reference] = message
        received = sum(len(request_references(m)) for m in messages)
        forms = sum(message_forms(m) for m in messages)
        return jigsaw_pb2.PublishResponse(received=received, forms=forms)

    def Withdraw(
        self, request: jigsaw_pb2.WithdrawRequest, timeout: float
    ) -> jigsaw_pb2.WithdrawResponse:
        self.withdrawn.extend(request.references)
        for reference in request.references:
            self.held.pop(reference, None)
        return jigsaw_pb2.WithdrawResponse(withdrawn=len(request.references))


def as_stub(fake: FakeMatcher) -> jigsaw_pb2_grpc.MatcherStub:
    return cast(jigsaw_pb2_grpc.MatcherStub, fake)


def child_rows(count: int) -> list[tuple[str, dict[str, str | None]]]:
    return [
        (
            f"r{i}",
            {
                "given_name": f"name{i}",
                "middle_names": None,
                "family_name": "okafor",
                "date_of_birth": f"2015-01-{1 + i % 28:02d}",
                "sex": "f",
                "postcode": "SW1A 1AA",
                "nhs_number": None,
            },
        )
        for i in range(count)
    ]


def test_publish_pending_streams_batches_and_is_idempotent(store: NodeStore) -> None:
    schema = load_schema("child")
    keys = KeySet(LinkageSecret.for_tests(), 1)
    store.upsert_many(child_rows(25))
    matcher = FakeMatcher()
    report = publish_pending(
        store, schema, keys, as_stub(matcher), batch_size=4, batches_per_call=3
    )
    assert (report.published, report.withdrawn, report.calls) == (25, 0, 3)
    assert [len(s) for s in matcher.streams] == [3, 3, 1]  # 12 + 12 + 1 records
    for stream in matcher.streams:
        assert stream[0].header.schema_fingerprint == schema.fingerprint()
        assert stream[0].header.key_version == 1
        assert all(not m.HasField("header") for m in stream[1:])
    assert len(matcher.held) == 25
    assert store.counts().pending == 0
    # nothing pending: no call at all
    assert publish_pending(store, schema, keys, as_stub(matcher), batch_size=4).calls == 0
    # a change is re-sent under the same reference; a deletion is withdrawn
    refs = {local_id: ref for local_id, ref in _all_refs(store)}
    store.upsert_many([("r3", {**child_rows(4)[3][1], "given_name": "changed"})])
    store.mark_deleted(["r5"])
    report = publish_pending(store, schema, keys, as_stub(matcher), batch_size=4)
    assert (report.published, report.withdrawn, report.calls) == (1, 1, 2)
    assert request_references(matcher.streams[-1][0]) == [refs["r3"]]
    assert matcher.withdrawn == [refs["r5"]]
    assert len(matcher.held) == 24 and store.counts().records == 24


def test_publish_resumes_after_a_failed_call(store: NodeStore) -> None:
    schema = load_schema("child")
    keys = KeySet(LinkageSecret.for_tests(), 1)
    store.upsert_many(child_rows(10))
    failing = FakeMatcher(fail_publish_after=1)
    with pytest.raises(ConnectionError):
        publish_pending(store, schema, keys, as_stub(failing), batch_size=5, batches_per_call=1)
    assert store.counts().published == 5 and store.counts().pending == 5
    working = FakeMatcher()
    report = publish_pending(store, schema, keys, as_stub(working), batch_size=5)
    assert report.published == 5
    assert set(working.held).isdisjoint(failing.held)
    assert store.counts().pending == 0


def test_key_version_change_republishes_everything(store: NodeStore) -> None:
    schema = load_schema("child")
    store.upsert_many(child_rows(6))
    matcher = FakeMatcher()
    publish_pending(
        store, schema, KeySet(LinkageSecret.for_tests(), 1), as_stub(matcher), batch_size=10
    )
    report = publish_pending(
        store,
        schema,
        KeySet(LinkageSecret.for_tests(), 2),
        as_stub(matcher),
        batch_size=10,
    )
    assert report.published == 6
    assert matcher.streams[-1][0].header.key_version == 2


def _all_refs(store: NodeStore) -> list[tuple[str, str]]:
    rows = store._conn.execute("SELECT local_id, reference FROM records").fetchall()
    return [(str(a), str(b)) for a, b in rows]


def test_store_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "node" / "store.sqlite"
    with NodeStore(path) as store:
        store.upsert_many([("a", {"given_name": "Amy"})])
        files = [path, path.with_name("store.sqlite-wal"), path.with_name("store.sqlite-shm")]
        for found in files:
            assert stat.S_IMODE(os.stat(found).st_mode) == 0o600, found.name
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    path.chmod(0o644)
    with NodeStore(path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # a widened store is narrowed


def test_a_store_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with NodeStore(path) as store:
        store.set_meta("store_format", "1")
    with pytest.raises(StoreFormatError, match="format 1"):
        NodeStore(path)
