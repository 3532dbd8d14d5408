"""Tests for server.matcher_store: payload layout, idempotent upserts, meta checks, link results."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.encode import EncodedBatch, concat_batches, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Schema, load_schema
from server.matcher_store import (
    MatcherStore,
    MatcherStoreError,
    StoredCluster,
    StoredEdge,
    StoreMismatchError,
    pack_payloads,
    payload_length,
    unpack_payloads,
)

SCHEMA = load_schema("child")
KEYS = KeySet(LinkageSecret.for_tests(), 1)
REPO = Path(__file__).resolve().parent.parent

ROWS = [
    {"given_name": "José", "family_name": "Müller", "date_of_birth": "2014-03-02",
     "sex": "M", "postcode": "SW1A 1AA", "nhs_number": "9434765919", "middle_names": ""},
    {"given_name": "Amira", "family_name": "O'Brien", "date_of_birth": "2016-11-30",
     "sex": "F", "postcode": "", "nhs_number": "", "middle_names": "Rose"},
    {"given_name": "Minh", "family_name": "Nguyễn", "date_of_birth": "2012-07-04",
     "sex": "", "postcode": "LS1 4AP", "nhs_number": "", "middle_names": ""},
    {"given_name": "Pieter", "family_name": "van der Berg", "date_of_birth": "",
     "sex": "M", "postcode": "M1 1AE", "nhs_number": "", "middle_names": "Jan"},
]  # fmt: skip


def encode(rows: list[dict[str, str]], schema: Schema = SCHEMA) -> EncodedBatch:
    columns = {name: [row.get(name) or None for row in rows] for name in schema.field_names}
    return encode_records(schema, KEYS, columns)


def refs(count: int, start: int = 0) -> list[str]:
    return [f"{start + i:032x}" for i in range(count)]


def assert_same_batch(a: EncodedBatch, b: EncodedBatch) -> None:
    assert a.schema_fingerprint == b.schema_fingerprint
    assert a.key_version == b.key_version
    assert a.field_names == b.field_names
    for fa, fb in zip(a.field_filters, b.field_filters, strict=True):
        assert fa.dtype == fb.dtype == np.uint64
        np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(a.field_present, b.field_present)
    np.testing.assert_array_equal(a.record_filters, b.record_filters)
    np.testing.assert_array_equal(a.block_keys, b.block_keys)
    np.testing.assert_array_equal(a.salt_tags, b.salt_tags)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MatcherStore]:
    opened = MatcherStore(tmp_path / "matcher.sqlite", schema=SCHEMA, key_version=1)
    yield opened
    opened.close()


# ------------------------------------------------------------------------------ payloads


def test_payload_round_trip_with_missing_fields() -> None:
    batch = encode(ROWS)
    assert not batch.field_present.all()  # the rows do have missing fields
    payloads = pack_payloads(batch, SCHEMA)
    assert {len(p) for p in payloads} == {payload_length(SCHEMA)}
    assert_same_batch(unpack_payloads(payloads, SCHEMA, key_version=1), batch)


def test_payload_layout_is_the_documented_one() -> None:
    batch = encode(ROWS[:1])
    payload = pack_payloads(batch, SCHEMA)[0]
    n_fields = len(SCHEMA.fields)
    assert payload[0] == 1
    bitmap = int.from_bytes(payload[1 : 1 + (n_fields + 7) // 8], "little")
    assert [bool(bitmap >> f & 1) for f in range(n_fields)] == batch.field_present[0].tolist()
    offset = 1 + (n_fields + 7) // 8
    first = SCHEMA.fields[0]
    words = batch.field_filters[0][0]
    assert payload[offset : offset + first.filter_words * 8] == b"".join(
        int(w).to_bytes(8, "little") for w in words
    )
    tags = 8 * len(SCHEMA.salt_sources)
    assert tags  # the shipped child schema salts its name fields
    keys = payload[-8 * len(SCHEMA.blocking) - tags : -tags]
    assert [int.from_bytes(keys[i : i + 8], "little") for i in range(0, len(keys), 8)] == [
        int(k) for k in batch.block_keys[0]
    ]
    tail = payload[-tags:]
    assert [int.from_bytes(tail[i : i + 8], "little") for i in range(0, len(tail), 8)] == [
        int(t) for t in batch.salt_tags[0]
    ]


@settings(deadline=None, max_examples=25)
@given(st.integers(0, 6), st.integers(0, 2**32 - 1))
def test_payload_round_trip_property(rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    present = rng.random((rows, len(SCHEMA.fields))) < 0.7
    filters = tuple(
        np.where(
            present[:, [f]],
            rng.integers(0, 2**64, size=(rows, spec.filter_words), dtype=np.uint64),
            np.uint64(0),
        ).astype(np.uint64)
        for f, spec in enumerate(SCHEMA.fields)
    )
    batch = EncodedBatch(
        schema_fingerprint=SCHEMA.fingerprint(),
        key_version=3,
        field_names=SCHEMA.field_names,
        field_filters=filters,
        field_present=present,
        record_filters=rng.integers(
            0, 2**64, size=(rows, SCHEMA.record_filter_words), dtype=np.uint64
        ),
        block_keys=rng.integers(0, 2**64, size=(rows, len(SCHEMA.blocking)), dtype=np.uint64),
        salt_tags=rng.integers(0, 2**64, size=(rows, len(SCHEMA.salt_sources)), dtype=np.uint64),
    )
    assert_same_batch(unpack_payloads(pack_payloads(batch, SCHEMA), SCHEMA, key_version=3), batch)


def test_unpack_refuses_a_truncated_payload() -> None:
    payload = pack_payloads(encode(ROWS[:1]), SCHEMA)[0]
    with pytest.raises(MatcherStoreError, match="payload 0"):
        unpack_payloads([payload[:-1]], SCHEMA, key_version=1)


# ------------------------------------------------------------------------------ encodings


def test_upsert_counts_inserted_replaced_unchanged(store: MatcherStore) -> None:
    batch = encode(ROWS)
    first = store.upsert("police", refs(4), batch)
    assert (first.inserted, first.replaced, first.unchanged) == (4, 0, 0)
    assert first.changed_rows == (0, 1, 2, 3)
    again = store.upsert("police", refs(4), batch)
    assert (again.inserted, again.replaced, again.unchanged) == (0, 0, 4)
    assert again.changed_rows == ()
    edited = [dict(row) for row in ROWS]
    edited[2]["postcode"] = "LS2 9JT"
    changed = store.upsert("police", refs(4), encode(edited))
    assert (changed.inserted, changed.replaced, changed.unchanged) == (0, 1, 3)
    assert changed.changed_rows == (2,)
    # same reference under another agency is another record
    other = store.upsert("health", refs(2), batch.take([0, 1]))
    assert other.inserted == 2
    assert store.counts_by_agency() == {"health": 2, "police": 4}


def test_upsert_refuses_foreign_encodings(store: MatcherStore) -> None:
    batch = encode(ROWS)
    foreign = EncodedBatch(**{**batch.__dict__, "key_version": 2})
    with pytest.raises(Exception, match="key version"):
        store.upsert("police", refs(4), foreign)
    assert store.count() == 0


def test_delete_and_iterate(store: MatcherStore) -> None:
    batch = encode(ROWS)
    store.upsert("police", refs(4), batch)
    store.upsert("health", refs(4, 100), batch)
    assert store.delete("police", [refs(4)[1], refs(4)[1], f"{999:032x}"]) == 1
    assert store.delete("health", refs(1)) == 0  # police's reference, not health's
    chunks = list(store.iter_encodings(chunk_size=3))
    assert all(len(references) <= 3 for _, references, _ in chunks)
    seen: dict[str, list[str]] = {}
    for agency, references, chunk in chunks:
        assert len(chunk) == len(references)
        seen.setdefault(agency, []).extend(references)
    assert seen == {"health": refs(4, 100), "police": [refs(4)[i] for i in (0, 2, 3)]}
    police = [c for a, r, c in chunks if a == "police"]
    assert len(police) == 2  # split across pages: one agency per chunk, keyset paging
    assert_same_batch(concat_batches(police), batch.take([0, 2, 3]))


def test_store_refuses_another_key_version_or_schema(tmp_path: Path) -> None:
    path = tmp_path / "matcher.sqlite"
    MatcherStore(path, schema=SCHEMA, key_version=1).close()
    with pytest.raises(StoreMismatchError, match=r"key_version is 1, this matcher serves 2"):
        MatcherStore(path, schema=SCHEMA, key_version=2)
    febrl = load_schema("febrl")
    with pytest.raises(StoreMismatchError, match="schema_fingerprint") as caught:
        MatcherStore(path, schema=febrl, key_version=1)
    assert SCHEMA.fingerprint() in str(caught.value)
    assert febrl.fingerprint() in str(caught.value)
    MatcherStore(path, schema=SCHEMA, key_version=1).close()  # still fine for its own


def test_store_uses_wal(store: MatcherStore) -> None:
    conn = sqlite3.connect(store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


# ------------------------------------------------------------------------------ model, links


def test_model_round_trip(store: MatcherStore) -> None:
    assert store.load_model() is None
    store.save_model({"format": "x", "prior": 0.25})
    store.save_model({"format": "y", "prior": 0.5})
    assert store.load_model() == {"format": "y", "prior": 0.5}


def _cluster(n: int) -> StoredCluster:
    return StoredCluster(
        members=(("health", refs(1, n)[0]), ("police", refs(1, n + 1)[0])),
        edges=(StoredEdge(0, 1, 0.995, (("exact", 7.5), ("missing", 0.0))),),
    )


def test_link_result_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "matcher.sqlite"
    store = MatcherStore(path, schema=SCHEMA, key_version=1)
    done = store.begin_link(min_probability=0.5)
    assert store.link_result(done).status == "running"  # type: ignore[union-attr]
    clusters = [_cluster(i * 10) for i in range(5)]
    store.finish_link(done, clusters, total_records=12)
    info = store.link_result(done)
    assert info is not None
    assert (info.status, info.total_clusters, info.total_records) == ("complete", 5, 12)
    assert store.link_clusters(done, offset=0, limit=2) == clusters[:2]
    assert store.link_clusters(done, offset=4, limit=100) == clusters[4:]
    with pytest.raises(MatcherStoreError):
        store.finish_link(done, clusters, total_records=12)  # not running any more
    crashed = store.begin_link(min_probability=0.5)
    store.close()  # as if the process died mid-link
    reopened = MatcherStore(path, schema=SCHEMA, key_version=1)
    try:
        assert reopened.link_result(crashed).status == "abandoned"  # type: ignore[union-attr]
        assert reopened.link_clusters(crashed, offset=0, limit=10) == []
        assert reopened.link_result(done).status == "complete"  # type: ignore[union-attr]
        failed = reopened.begin_link(min_probability=0.9)
        reopened.fail_link(failed)
        assert reopened.link_result(failed).status == "failed"  # type: ignore[union-attr]
        assert reopened.link_result(f"{0:032x}") is None
    finally:
        reopened.close()


# ------------------------------------------------------------------------------ crash safety

_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from linkage.encode import encode_records
    from linkage.keys import KeySet, LinkageSecret
    from linkage.schema import load_schema
    from server.matcher_store import MatcherStore

    schema = load_schema("child")
    keys = KeySet(LinkageSecret.for_tests(), 1)
    columns = {name: ["Ann", "Bob"] * 100 if "name" in name else [None] * 200
               for name in schema.field_names}
    batch = encode_records(schema, keys, columns)
    store = MatcherStore(Path(sys.argv[1]), schema=schema, key_version=1)
    n = 0
    while True:
        store.upsert("police", [f"{n * 200 + i:032x}" for i in range(200)], batch)
        n += 1
        print(n, flush=True)
    """
)


def test_kill_minus_nine_mid_publish_loses_only_uncommitted(tmp_path: Path) -> None:
    path = tmp_path / "matcher.sqlite"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(REPO)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        acknowledged = 0
        deadline = time.monotonic() + 60
        while acknowledged < 5 and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
        assert acknowledged >= 5, "writer did not commit in time"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    store = MatcherStore(path, schema=SCHEMA, key_version=1)
    try:
        count = store.count()
        assert count % 200 == 0  # whole messages only
        assert count >= acknowledged * 200  # nothing acknowledged was lost
        total = sum(len(r) for _, r, _ in store.iter_encodings(chunk_size=1000))
        assert total == count
    finally:
        store.close()


def test_cluster_json_holds_no_surprises(store: MatcherStore) -> None:
    done = store.begin_link(min_probability=0.5)
    store.finish_link(done, [_cluster(0)], total_records=2)
    conn = sqlite3.connect(store.path)
    try:
        (text,) = conn.execute("SELECT cluster FROM link_clusters").fetchone()
    finally:
        conn.close()
    assert set(json.loads(text)) == {"members", "edges"}
