"""The matcher's in-memory index: upserts, replacements, withdrawals, compaction, queries."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import pipeline
from linkage.encode import EncodedBatch, encode_records
from linkage.errors import FilterFormatError, IncompatibleEncodingError
from linkage.index import MatchIndex
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import default_child_schema
from linkage.synthetic import generate_population

SCHEMA = default_child_schema()
KEYS = KeySet(LinkageSecret.for_tests())


@pytest.fixture(scope="module")
def encoded() -> tuple[EncodedBatch, np.ndarray]:
    data = generate_population(600, seed=3)
    combined = data.all_records()
    batch = encode_records(SCHEMA, KEYS, combined.columns)
    return batch, combined.child_id


@pytest.fixture(scope="module")
def model(encoded: tuple[EncodedBatch, np.ndarray]) -> object:
    return pipeline.score_pairs(SCHEMA, encoded[0], None).model


def refs(n: int, start: int = 0) -> list[str]:
    # deliberately structured references: their first 8 bytes all collide
    return [f"{i:032x}" for i in range(start, start + n)]


def test_upsert_counts_and_idempotence(encoded: tuple[EncodedBatch, np.ndarray]) -> None:
    batch, _ = encoded
    index = MatchIndex(SCHEMA, key_version=1, merge_threshold=50)
    assert index.upsert("health", refs(len(batch)), batch) == (len(batch), 0)
    assert index.upsert("health", refs(len(batch)), batch) == (0, len(batch))
    assert len(index) == len(batch)
    assert index.counts_by_agency() == {"health": len(batch)}
    # the same references under another agency are other records
    assert index.upsert("police", refs(10), batch.take(range(10))) == (10, 0)
    assert len(index) == len(batch) + 10


def test_query_finds_each_record_itself(
    encoded: tuple[EncodedBatch, np.ndarray], model: object
) -> None:
    batch, _ = encoded
    index = MatchIndex(SCHEMA, key_version=1, merge_threshold=100)
    index.upsert("health", refs(len(batch)), batch)
    for i in range(0, len(batch), 37):
        found = index.query(batch.take([i]), model, max_candidates=10)  # type: ignore[arg-type]
        best = [f.reference for f in found if f.probability == found[0].probability]
        assert refs(len(batch))[i] in best  # ties: the same child held twice
        assert found[0].probability >= 0.99


def test_replacement_with_new_tokens_moves_and_old_tokens_find_nothing(
    encoded: tuple[EncodedBatch, np.ndarray], model: object
) -> None:
    batch, _ = encoded
    index = MatchIndex(SCHEMA, key_version=1, merge_threshold=5)
    index.upsert("health", refs(len(batch)), batch)
    # record 0 is republished with record 1's encoding (e.g. corrected identifiers)
    assert index.upsert("health", [refs(1)[0]], batch.take([1])) == (0, 1)
    assert len(index) == len(batch)
    hits = index.query(batch.take([0]), model, max_candidates=50)  # type: ignore[arg-type]
    assert all(h.reference != refs(1)[0] or h.probability < 0.99 for h in hits)
    hits = index.query(batch.take([1]), model, max_candidates=10)  # type: ignore[arg-type]
    best = {h.reference for h in hits if h.probability == hits[0].probability}
    assert {refs(2)[0], refs(2)[1]} <= best
    index.compact()
    assert len(index) == len(batch)


def test_remove_then_reuse_after_compaction(encoded: tuple[EncodedBatch, np.ndarray]) -> None:
    batch, _ = encoded
    index = MatchIndex(SCHEMA, key_version=1, merge_threshold=10_000)
    index.upsert("health", refs(100), batch.take(range(100)))
    assert index.remove("health", refs(30)) == 30
    assert index.remove("health", refs(30)) == 0
    assert index.remove("nobody", refs(3)) == 0
    assert len(index) == 70
    size_before = index._size
    index.compact()
    index.upsert("health", refs(30, start=500), batch.take(range(100, 130)))
    assert index._size == size_before  # freed slots reused
    snap, _agencies, references = index.snapshot()
    assert len(snap) == 100 and len(references) == len(set(references)) == 100


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["up", "rm"]), st.integers(0, 40)), max_size=40))
def test_random_operations_match_a_dict_model(ops: list[tuple[str, int]]) -> None:
    batch = _small_batch()
    index = MatchIndex(SCHEMA, key_version=1, merge_threshold=3)
    model: dict[str, int] = {}
    for op, i in ops:
        ref = f"{i:032x}"
        if op == "up":
            row = (i * 7) % len(batch)
            index.upsert("a", [ref], batch.take([row]))
            model[ref] = row
        else:
            index.remove("a", [ref])
            model.pop(ref, None)
    snap, _, references = index.snapshot()
    assert sorted(references) == sorted(model)
    for ref, row in zip(references, range(len(snap)), strict=True):
        assert np.array_equal(snap.record_filters[row], batch.record_filters[model[ref]])


_CACHE: dict[str, EncodedBatch] = {}


def _small_batch() -> EncodedBatch:
    if "b" not in _CACHE:
        data = generate_population(40, seed=9)
        _CACHE["b"] = encode_records(SCHEMA, KEYS, data.all_records().columns)
    return _CACHE["b"]


def test_incompatible_and_malformed_input_is_refused(
    encoded: tuple[EncodedBatch, np.ndarray],
) -> None:
    batch, _ = encoded
    index = MatchIndex(SCHEMA, key_version=2)
    with pytest.raises(IncompatibleEncodingError, match="key version"):
        index.upsert("a", refs(1), batch.take([0]))
    index = MatchIndex(SCHEMA, key_version=1)
    with pytest.raises(FilterFormatError, match="reference"):
        index.upsert("a", ["not-hex"], batch.take([0]))
    with pytest.raises(FilterFormatError, match="one reference per"):
        index.upsert("a", refs(2), batch.take([0]))


def test_index_memory_per_record_is_bounded(encoded: tuple[EncodedBatch, np.ndarray]) -> None:
    batch, _ = encoded
    index = MatchIndex(SCHEMA, key_version=1, capacity=len(batch))
    index.upsert("a", refs(len(batch)), batch)
    index.compact()
    assert index.nbytes() / len(batch) <= 400
