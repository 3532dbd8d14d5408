"""Fast paths of the publish and lookup code agree with their plain counterparts.

``server.common.wire.proto_to_encoded`` converts well-formed records column by column and falls back
to its record-by-record loop (which names the first bad record) otherwise; the index folds its
unsorted delta into the sorted permutation by insertion instead of a full re-sort. Both must
give exactly what the plain code gives.
"""

from __future__ import annotations

import numpy as np
import pytest

from linkage.encode import EncodedBatch, encode_records
from linkage.index import MatchIndex, _SortedKeys
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from proto.jigsaw.v1 import jigsaw_pb2
from server.common import wire as convert
from server.common.status import RequestError

SCHEMA = load_schema("child")
FINGERPRINT = SCHEMA.fingerprint()


def _batch(rows: int, seed: int) -> EncodedBatch:
    rng = np.random.default_rng(seed)
    given = ["Amy", "José", "Li", None, "Ola"]
    family = ["Smith", "Müller", "O'Brien", "Nguyễn", None]
    columns: dict[str, list[str | None]] = {
        "given_name": [given[i] for i in rng.integers(0, 5, rows)],
        "middle_names": [None] * rows,
        "family_name": [family[i] for i in rng.integers(0, 5, rows)],
        "date_of_birth": [f"{d:02d}/03/2014" for d in rng.integers(1, 28, rows)],
        "sex": ["F" if x else None for x in rng.integers(0, 2, rows)],
        "postcode": ["SW1A 1AA"] * rows,
        "nhs_number": [None] * rows,
    }
    return encode_records(SCHEMA, KeySet(LinkageSecret.for_tests(), 1), columns)


def _plain(
    records: list[jigsaw_pb2.EncodedRecord], monkeypatch: pytest.MonkeyPatch
) -> tuple[EncodedBatch, list[str]]:
    with monkeypatch.context() as patch:
        patch.setattr(convert, "_proto_to_encoded_fast", lambda *args: None)
        return convert.proto_to_encoded(records, SCHEMA, fingerprint=FINGERPRINT, key_version=1)


def _same(a: EncodedBatch, b: EncodedBatch) -> None:
    for fa, fb in zip(a.field_filters, b.field_filters, strict=True):
        np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(a.field_present, b.field_present)
    np.testing.assert_array_equal(a.record_filters, b.record_filters)
    np.testing.assert_array_equal(a.block_keys, b.block_keys)
    assert a.block_keys.dtype == b.block_keys.dtype == np.uint64


@pytest.mark.parametrize("rows", [0, 1, 37])
def test_proto_to_encoded_fast_equals_record_loop(
    rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _batch(rows, seed=rows)
    references = [f"{i + 1:032x}" for i in range(rows)]
    records = convert.encoded_to_proto(batch, references)
    assert convert._proto_to_encoded_fast(records, SCHEMA, FINGERPRINT, 1) is not None
    fast, fast_refs = convert.proto_to_encoded(
        records, SCHEMA, fingerprint=FINGERPRINT, key_version=1
    )
    plain, plain_refs = _plain(records, monkeypatch)
    assert fast_refs == plain_refs == references
    _same(fast, plain)


def test_proto_to_encoded_fast_path_defers_errors_to_the_loop() -> None:
    batch = _batch(5, seed=3)
    records = convert.encoded_to_proto(batch, [f"{i + 1:032x}" for i in range(5)])
    del records[3].field_filters[:]
    records[3].field_filters.extend([b"\x01"] * len(SCHEMA.fields))
    assert convert._proto_to_encoded_fast(records, SCHEMA, FINGERPRINT, 1) is None
    with pytest.raises(RequestError) as info:
        convert.proto_to_encoded(records, SCHEMA, fingerprint=FINGERPRINT, key_version=1)
    assert info.value.field == "records[3].field_filters[0]"


def test_rows_of_one_lookup_may_share_a_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup's rows share its reference: refused as a repeat by default, accepted with
    ``unique_references=False`` on the fast path and the record loop alike, which still
    name a malformed row by its position."""
    batch = _batch(6, seed=5)
    records = convert.encoded_to_proto(batch, ["a" * 32] * 6)
    with pytest.raises(RequestError) as info:
        convert.proto_to_encoded(records, SCHEMA, fingerprint=FINGERPRINT, key_version=1)
    assert info.value.field == "records[1].reference"
    fast, refs = convert.proto_to_encoded(
        records, SCHEMA, fingerprint=FINGERPRINT, key_version=1, unique_references=False
    )
    assert refs == ["a" * 32] * 6
    with monkeypatch.context() as patch:
        patch.setattr(convert, "_proto_to_encoded_fast", lambda *args: None)
        plain, _ = convert.proto_to_encoded(
            records, SCHEMA, fingerprint=FINGERPRINT, key_version=1, unique_references=False
        )
    _same(fast, plain)
    records[4].record_filter = b"\x00" * 3
    with pytest.raises(RequestError) as info:
        convert.proto_to_encoded(
            records,
            SCHEMA,
            fingerprint=FINGERPRINT,
            key_version=1,
            field_prefix="hypotheses",
            unique_references=False,
        )
    assert info.value.field == "hypotheses[4].record_filter"


def test_sorted_keys_insertion_merge_equals_full_sort() -> None:
    rng = np.random.default_rng(11)
    keys_of = rng.integers(0, 50, 3000, dtype=np.uint64)  # many repeated keys
    fast, full = _SortedKeys(merge_threshold=10**9), _SortedKeys(merge_threshold=10**9)
    for start in range(0, 3000, 250):
        slots = np.arange(start, start + 250, dtype=np.int64)
        fast.add(slots, keys_of)
        full.add(slots, keys_of)
        fast.merge(keys_of)
        full.merge(keys_of, drop=np.array([-1], dtype=np.int64))  # forces the full re-sort
        np.testing.assert_array_equal(keys_of[fast.order], keys_of[full.order])
        assert sorted(fast.order.tolist()) == sorted(full.order.tolist())
    for key in range(50):
        np.testing.assert_array_equal(fast.find(key, keys_of), full.find(key, keys_of))


def test_index_sample_snapshot_is_a_seeded_subset() -> None:
    batch = _batch(40, seed=5)
    index = MatchIndex(SCHEMA, key_version=1)
    references = [f"{i + 1:032x}" for i in range(40)]
    index.upsert("police", references, batch)
    _, _, all_refs = index.snapshot()
    sample, codes, refs = index.snapshot(sample=10, seed=2)
    assert len(sample) == len(codes) == len(refs) == 10
    assert set(refs) <= set(all_refs)
    assert index.snapshot(sample=10, seed=2)[2] == refs
    assert index.snapshot(sample=100, seed=2)[2] == all_refs
