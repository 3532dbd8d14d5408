"""Tests for server.matcher.store: payload layout, idempotent upserts, meta checks, link results."""

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

from linkage import forms
from linkage.encode import EncodedBatch, concat_batches, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Schema, load_schema
from server.matcher import store as matcher_store
from server.matcher.results import StoredCluster, StoredEdge
from server.matcher.store import (
    MatcherStore,
    MatcherStoreError,
    StoreMismatchError,
    pack_payloads,
    payload_length,
    unpack_payloads,
)

SCHEMA = load_schema("child")
KEYS = KeySet(LinkageSecret.for_tests(), 1)
REPO = Path(__file__).resolve().parents[3]

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
    columns = {name: [row.get(name) or None for row in rows] for name in schema.input_names}
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
    deleted = store.delete("police", [refs(4)[1], refs(4)[1], f"{999:032x}"])
    assert (deleted.withdrawn, deleted.removed) == (1, (refs(4)[1],))
    assert store.delete("health", refs(1)).withdrawn == 0  # police's reference, not health's
    chunks = list(store.iter_encodings(chunk_size=3))
    assert all(len(chunk.references) <= 3 for chunk in chunks)
    seen: dict[str, list[str]] = {}
    for agency, references, chunk, form_of in chunks:
        assert len(chunk) == len(references) == len(form_of)
        assert set(form_of) == {""}  # every row a record published as itself
        seen.setdefault(agency, []).extend(references)
    assert seen == {"health": refs(4, 100), "police": [refs(4)[i] for i in (0, 2, 3)]}
    police = [chunk.batch for chunk in chunks if chunk.agency == "police"]
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
    from server.matcher.store import MatcherStore

    schema = load_schema("child")
    keys = KeySet(LinkageSecret.for_tests(), 1)
    columns = {name: ["Ann", "Bob"] * 100 if "name" in name else [None] * 200
               for name in schema.input_names}
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
        total = sum(len(chunk.references) for chunk in store.iter_encodings(chunk_size=1000))
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


# ------------------------------------------------------------------------------ forms


def published_forms(rows: list[dict[str, str]], references: list[str]) -> tuple[
    EncodedBatch, list[str], list[str]
]:  # fmt: skip
    """(batch, row references, form_of) as a node publishes ``rows`` (forms where sex lacks)."""
    columns = {name: [row.get(name) or None for row in rows] for name in SCHEMA.input_names}
    published = forms.encode_forms(SCHEMA, KEYS, columns)
    origin, number = published.origin.tolist(), published.form.tolist()
    row_refs = [forms.form_reference(references[o], f) for o, f in zip(origin, number, strict=True)]
    form_of = [
        references[o] if f != forms.NO_FORM else "" for o, f in zip(origin, number, strict=True)
    ]
    return published.batch, row_refs, form_of


def stored_rows(store: MatcherStore) -> dict[str, str]:
    """Every stored row: reference -> the record it is a form of ("" for a record itself)."""
    return {
        reference: record
        for chunk in store.iter_encodings()
        for reference, record in zip(chunk.references, chunk.form_of, strict=True)
    }


@pytest.mark.parametrize("chunk", [500, 2])  # 2: every query split across IN (...) chunks
def test_forms_replace_a_record_both_ways(
    store: MatcherStore, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(matcher_store, "_SQL_CHUNK", chunk)
    a, b = refs(2, 500)
    batch, row_refs, form_of = published_forms([ROWS[0], ROWS[2]], [a, b])  # ROWS[2] lacks sex
    b_forms = [forms.form_reference(b, i) for i in range(forms.max_forms(SCHEMA))]
    assert row_refs == [a, *b_forms] and form_of == ["", b, b, b]
    first = store.upsert("police", row_refs, batch, form_of)
    assert (first.inserted, first.removed) == (4, ())
    assert stored_rows(store) == {a: "", **dict.fromkeys(b_forms, b)}
    # the record's sex became known: published as itself, its forms go
    known = dict(ROWS[2], sex="F")
    itself, itself_refs, itself_form_of = published_forms([known], [b])
    assert itself_form_of == [""]
    again = store.upsert("police", itself_refs, itself, itself_form_of)
    assert (again.inserted, again.removed) == (1, tuple(sorted(b_forms)))
    assert stored_rows(store) == {a: "", b: ""}
    # its sex was erased again: published as forms, its own row goes
    lacking, lacking_refs, lacking_form_of = published_forms([ROWS[2]], [b])
    erased = store.upsert("police", lacking_refs, lacking, lacking_form_of)
    assert (erased.inserted, erased.removed) == (3, (b,))
    assert stored_rows(store) == {a: "", **dict.fromkeys(b_forms, b)}
    # republished unchanged: nothing removed; with fewer forms: the ones not carried go
    same = store.upsert("police", lacking_refs, lacking, lacking_form_of)
    assert (same.unchanged, same.removed) == (3, ())
    fewer = store.upsert("police", lacking_refs[:2], lacking.take([0, 1]), lacking_form_of[:2])
    assert (fewer.unchanged, fewer.removed) == (2, (b_forms[2],))
    assert stored_rows(store) == {a: "", b_forms[0]: b, b_forms[1]: b}
    # another agency's record of the same reference is untouched by any of it
    store.upsert("health", [b], itself)
    assert store.counts_by_agency() == {"health": 1, "police": 3}


def test_withdraw_removes_forms_and_a_reopened_store_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "matcher.sqlite"
    store = MatcherStore(path, schema=SCHEMA, key_version=1)
    a, b, c = refs(3, 700)
    batch, row_refs, form_of = published_forms([ROWS[0], ROWS[2], ROWS[2]], [a, b, c])
    store.upsert("police", row_refs, batch, form_of)
    store.close()
    store = MatcherStore(path, schema=SCHEMA, key_version=1)
    try:
        assert stored_rows(store) == dict(zip(row_refs, form_of, strict=True))
        deleted = store.delete("police", [b, a, f"{999:032x}"])
        b_forms = [r for r, record in zip(row_refs, form_of, strict=True) if record == b]
        assert deleted.withdrawn == 2
        assert deleted.removed == tuple(sorted([a, *b_forms]))
        assert stored_rows(store) == {
            r: c for r, f in zip(row_refs, form_of, strict=True) if f == c
        }
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("SELECT COUNT(*) FROM forms").fetchone()[0] == 3  # c's only
        finally:
            conn.close()
    finally:
        store.close()


def test_a_store_made_before_forms_opens(tmp_path: Path) -> None:
    path = tmp_path / "matcher.sqlite"
    store = MatcherStore(path, schema=SCHEMA, key_version=1)
    store.upsert("police", refs(2), encode(ROWS[:2]))
    store.close()
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TABLE forms")  # as a store written before forms existed
        conn.commit()
    finally:
        conn.close()
    store = MatcherStore(path, schema=SCHEMA, key_version=1)
    try:
        assert stored_rows(store) == dict.fromkeys(refs(2), "")
    finally:
        store.close()


def test_upsert_refuses_a_form_of_a_row_of_the_call(store: MatcherStore) -> None:
    with pytest.raises(MatcherStoreError, match="form_of"):
        store.upsert("police", refs(2), encode(ROWS[:2]), ["", refs(1)[0]])
    with pytest.raises(MatcherStoreError, match="form_of"):
        store.upsert("police", refs(2), encode(ROWS[:2]), [""])
    assert store.count() == 0
