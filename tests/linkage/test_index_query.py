"""Tests for linkage.index queries against plain references: the Dice of side-by-side fields,
the whole query, narrow block keys, salted fields and forms."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import forms, scoring, similarity
from linkage.compare import compare_fields
from linkage.encode import EncodedBatch, encode_records
from linkage.errors import ModelError
from linkage.index import (
    CONFIDENT_PROBABILITY,
    IndexedCandidate,
    MatchIndex,
    _dice_fields,
    _dice_to_one_reference,
    _FieldLayout,
    _level_cut_offs,
    _QueryFields,
    narrow_block_keys,
)
from linkage.solve import rank_candidates
from tests.helpers.index import KEYS, SCHEMA, index_population, population_model, refs


@pytest.fixture(scope="module")
def encoded() -> tuple[EncodedBatch, np.ndarray]:
    return index_population()


@pytest.fixture(scope="module")
def model(encoded: tuple[EncodedBatch, np.ndarray]) -> object:
    return population_model()


def _random_filters(rng: np.random.Generator, count: int, words: int, density: float) -> Any:
    bits = rng.random((count, words * 64)) < density * rng.random((count, 1))
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)


@settings(max_examples=40, deadline=None)
@given(
    widths=st.lists(st.integers(0, 9), min_size=1, max_size=6),
    rows=st.integers(0, 60),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_dice_of_side_by_side_fields_equals_the_kernel_per_field(
    widths: list[int], rows: int, density: float, seed: int
) -> None:
    """Dice of every field at once, on rows of all fields side by side, gives exactly the
    kernel's value on each field's own filters (and their presence); a zero-word field (no
    schema file can state one) is empty."""
    rng = np.random.default_rng(seed)
    layout = _FieldLayout.of(widths)
    candidates = _random_filters(rng, rows, layout.words, density)
    query_row = _random_filters(rng, 1, layout.words, density)[0]
    for start, stop in layout.columns():
        candidates[rng.random(rows) < 0.2, start:stop] = 0  # missing fields
    query = _QueryFields(query_row[None, :], layout.sum_by_field(np.bitwise_count(query_row))[None])
    fast, fast_present = _dice_fields(query, np.zeros(rows, np.int64), candidates, layout)
    assert fast.shape == fast_present.shape == (rows, len(widths))
    for f, (start, stop) in enumerate(layout.columns()):
        field = np.ascontiguousarray(candidates[:, start:stop])
        if start == stop:  # the kernel refuses zero-word filters
            assert fast[:, f].tolist() == [0.0] * rows
            assert not fast_present[:, f].any()
            continue
        slow, slow_present = _dice_to_one_reference(query_row[start:stop], field)
        assert fast[:, f].tolist() == slow.tolist()
        assert fast_present[:, f].tolist() == slow_present.tolist()
        assert fast_present[:, f].tolist() == [bool(row.any()) for row in field]


def test_invalid_schema_levels_still_raise_scoring_s_error(
    encoded: tuple[EncodedBatch, np.ndarray], model: Any
) -> None:
    """Levels ``scoring`` refuses are refused at every lookup, as before: no fast path."""
    fields = list(SCHEMA.fields)
    fields[0] = dataclasses.replace(fields[0], levels=(0.5, 0.7))  # ascending: invalid
    schema = dataclasses.replace(SCHEMA, fields=tuple(fields))
    assert _level_cut_offs(schema) is None
    batch = dataclasses.replace(encoded[0].take([0]), schema_fingerprint=schema.fingerprint())
    index = MatchIndex(schema, key_version=1)
    index.upsert("health", refs(1), batch)
    with pytest.raises(ModelError, match="strictly descending"):
        index.query(batch, model)


def _reference_query(
    index: MatchIndex,
    query: EncodedBatch,
    model: Any,
    *,
    max_candidates: int,
    min_probability: float,
    confident_probability: float | None,
    scan_top_k: int = 20,
    scan_threshold: float = 0.5,
) -> list[IndexedCandidate]:
    """``MatchIndex.query`` written plainly over the index's snapshot (live records in slot
    order): every rule's tokens compared with every record, each field scored by the kernel
    reference, ``scoring.comparison_levels``, the scan over all record filters."""
    records, codes, references = index.snapshot()
    schema = index.schema
    query_keys = narrow_block_keys(query.block_keys[0]).astype(np.uint64)
    blocked = np.flatnonzero(
        ((records.block_keys == query_keys) & (query_keys != 0)).any(axis=1)
    ).tolist()

    def score(rows: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        picked = np.asarray(rows, dtype=np.int64)
        sim = np.zeros((len(rows), len(schema.fields)))
        both = np.zeros(sim.shape, dtype=bool)
        for f in range(len(schema.fields)):
            if rows:
                sim[:, f], _ = _dice_to_one_reference(
                    query.field_filters[f][0], records.field_filters[f][picked]
                )
            both[:, f] = query.field_present[0, f] & records.field_present[picked, f]
        compared = compare_fields(
            schema,
            sim,
            query.field_present[:1],
            records.field_present[picked],
            np.repeat(narrow_block_keys(query.salt_tags[:1]), len(rows), axis=0),
            records.salt_tags[picked],
        )
        levels = scoring.comparison_levels(
            compared.similarity,
            compared.present,
            tuple(f.levels for f in schema.comparison_specs),
        )
        return levels, compared.not_compared, model.match_probability(levels)

    rows = blocked
    levels, not_compared, probabilities = score(rows)
    confident = (
        confident_probability is not None
        and np.count_nonzero(probabilities >= confident_probability) >= 1
    )
    if scan_top_k and not confident:
        scan, _ = similarity.dice_one_to_many(
            query.record_filters[0],
            records.record_filters,
            threshold=scan_threshold,
            top_k=scan_top_k,
        )
        rows = blocked + sorted(set(scan.tolist()) - set(blocked))
        levels, not_compared, probabilities = score(rows)
    order, chosen = rank_candidates(
        np.arange(len(rows)), probabilities, threshold=min_probability, top_k=max_candidates
    )
    return [
        IndexedCandidate(
            agency=index.agency_name(int(codes[rows[i]])),
            reference=references[rows[i]],
            probability=float(p),
            levels=tuple(int(x) for x in levels[i]),
            not_compared=tuple(bool(x) for x in not_compared[i]),
        )
        for i, p in zip(order.tolist(), chosen.tolist(), strict=True)
    ]


@pytest.mark.parametrize("confident_probability", [None, CONFIDENT_PROBABILITY])
def test_query_equals_a_plain_reference(
    encoded: tuple[EncodedBatch, np.ndarray], model: Any, confident_probability: float | None
) -> None:
    """Lookups give exactly the plain reference's candidates, in order, with the same
    probabilities, levels and not-compared flags: over two agencies, withdrawn and replaced
    records (dead slots, reused slots after compaction), and an unmerged delta."""
    batch, _ = encoded
    index = MatchIndex(SCHEMA, key_version=1, merge_threshold=150)
    half = len(batch) // 2
    index.upsert("health", refs(half), batch.take(range(half)))
    index.upsert("police", refs(len(batch) - half), batch.take(range(half, len(batch))))
    index.remove("health", refs(40, start=10))
    index.compact()  # those slots are free again
    moved = batch.take(range(half, half + 30))  # police records re-published with other tokens
    moved = dataclasses.replace(moved, block_keys=batch.block_keys[:30])
    assert index.upsert("police", refs(30), moved) == (0, 30)
    index.upsert("schools", refs(45, start=1000), batch.take(range(300, 345)))  # reuses slots
    assert index.remove("police", refs(5, start=100)) == 5  # dead, not yet compacted
    damaged = dataclasses.replace(
        batch.take([7]), block_keys=np.zeros((1, len(SCHEMA.blocking)), np.uint64)
    )
    queries = [batch.take([row]) for row in range(0, len(batch), 11)] + [damaged]
    for query in queries:
        for max_candidates, min_probability in [(10, 0.5), (200, 0.0)]:
            fast = index.query(
                query,
                model,
                max_candidates=max_candidates,
                min_probability=min_probability,
                confident_probability=confident_probability,
            )
            slow = _reference_query(
                index,
                query,
                model,
                max_candidates=max_candidates,
                min_probability=min_probability,
                confident_probability=confident_probability,
            )
            assert fast == slow


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=30))
def test_narrow_block_keys_keep_missing_and_equal_tokens(tokens: list[int]) -> None:
    """0 (missing) stays 0, a present token stays present, equal tokens stay equal, and the
    narrow form is the low 32 bits unless those are all zero."""
    keys = np.asarray(tokens, dtype=np.uint64)
    narrow = narrow_block_keys(keys)
    assert narrow.dtype == np.uint32 and narrow.shape == keys.shape
    for token, small in zip(tokens, narrow.tolist(), strict=True):
        assert (small == 0) == (token == 0)
        assert small == ((token & 0xFFFF_FFFF) or (1 if token else 0))
    assert narrow_block_keys(keys.reshape(-1, 1)).reshape(-1).tolist() == narrow.tolist()


def test_narrow_block_keys_known_values() -> None:
    keys = np.array([[0, 1, 2**32, 2**32 + 5, 2**64 - 1, 0xDEADBEEF_00000000]], np.uint64)
    assert narrow_block_keys(keys).tolist() == [[0, 1, 1, 5, 2**32 - 1, 1]]


def test_a_narrow_key_collision_only_adds_a_candidate(
    encoded: tuple[EncodedBatch, np.ndarray], model: Any
) -> None:
    """Two different 64-bit tokens with the same low 32 bits both come back as candidates,
    and the result is still right.

    Reference: the same index where the stranger shares no token with the query. With the
    collision, the stranger is one more candidate, scored as the stranger it is; every other
    candidate keeps its probability and levels.
    """
    batch, child = encoded
    query_row = 5
    stranger = int(np.flatnonzero(child != child[query_row])[0])
    rule = 0
    query_key = int(batch.block_keys[query_row, rule])
    assert query_key != 0
    keys = batch.block_keys.copy()
    # the stranger shares no token with the query ...
    keys[stranger] = np.arange(1, keys.shape[1] + 1, dtype=np.uint64) * np.uint64(2**40 + 7)
    unrelated = dataclasses.replace(batch, block_keys=keys.copy())
    # ... except, on one rule, a different token with the same low 32 bits
    keys[stranger, rule] = query_key ^ (1 << 45)
    assert int(keys[stranger, rule]) != query_key
    colliding = dataclasses.replace(batch, block_keys=keys)
    assert (
        narrow_block_keys(keys[[stranger, query_row], rule]).tolist()
        == [query_key & 0xFFFF_FFFF] * 2
    )

    def lookup(published: EncodedBatch) -> list[Any]:
        index = MatchIndex(SCHEMA, key_version=1, merge_threshold=100)
        index.upsert("health", refs(len(batch)), published)
        options: dict[str, Any] = {"max_candidates": 10**6, "min_probability": 0.0, "scan_top_k": 0}
        return index.query(batch.take([query_row]), model, **options)

    reference = lookup(unrelated)
    found = lookup(colliding)
    stranger_ref = refs(len(batch))[stranger]
    assert stranger_ref not in {c.reference for c in reference}
    extra = [c for c in found if c not in set(reference)]
    assert [c.reference for c in extra] == [stranger_ref]  # both tokens came back
    assert set(found) - set(extra) == set(reference)  # nothing lost, nothing rescored
    assert found[0] == reference[0]  # still right: the query's own record leads
    assert found[0].reference == refs(len(batch))[query_row]
    assert extra[0].probability < 0.5  # the stranger is scored as a stranger


def test_snapshot_holds_narrow_tokens_and_high_bits_do_not_move_a_slot(
    encoded: tuple[EncodedBatch, np.ndarray],
) -> None:
    batch, _ = encoded
    index = MatchIndex(SCHEMA, key_version=1, merge_threshold=50)
    index.upsert("health", refs(len(batch)), batch)
    snap, _, references = index.snapshot()
    assert references == refs(len(batch))
    assert snap.block_keys.dtype == np.uint64
    assert snap.block_keys.tolist() == narrow_block_keys(batch.block_keys).tolist()
    size = index._size
    # republished with tokens that differ only above bit 31: the held keys are unchanged
    high = dataclasses.replace(
        batch.take([3]), block_keys=batch.block_keys[[3]] ^ np.uint64(1 << 40)
    )
    assert index.upsert("health", [refs(4)[3]], high) == (0, 1)
    assert index._size == size and not index._dead
    # tokens whose low bits differ move the record to a fresh slot
    low = dataclasses.replace(batch.take([3]), block_keys=batch.block_keys[[3]] ^ np.uint64(1))
    assert index.upsert("health", [refs(4)[3]], low) == (0, 1)
    assert index._size == size + 1 and len(index._dead) == 1


def test_a_field_salted_with_the_date_is_not_compared_where_the_date_differs_and_falls_back(
    model: object,
) -> None:
    records: dict[str, list[str | None]] = {
        "given_name": ["Olivia"] * 4,
        "middle_names": ["Rose", "Rose", "Rose", None],
        "family_name": ["Okafor"] * 4,
        # the query; the month off; the date missing; the same date
        "date_of_birth": ["14/03/2015", "14/04/2015", None, "14/03/2015"],
        "sex": ["F"] * 4,
        "postcode": ["LS6 2AB"] * 4,
        # the NHS number puts every record in the query's block
        "nhs_number": ["943 476 5919"] * 4,
    }
    batch = encode_records(SCHEMA, KEYS, records)
    index = MatchIndex(SCHEMA, key_version=1)
    index.upsert("health", refs(3), batch.take([1, 2, 3]))
    found = index.query(batch.take([0]), model, min_probability=0.0)  # type: ignore[arg-type]
    by_ref = {c.reference: c for c in found}
    assert set(by_ref) == set(refs(3))
    month_off, no_date, same = (by_ref[r] for r in refs(3))
    date_salted = {f.name for f in SCHEMA.fields if f.salt == "date_of_birth.value"}
    assert date_salted == {"given_name", "middle_names", "family_name", "postcode"}
    combined = {spec.input_name for spec in SCHEMA.fields if spec.combines}
    assert combined == {"full_name"}
    assert len(month_off.levels) == len(SCHEMA.comparison_names)
    for c, name in enumerate(SCHEMA.comparison_names):
        top = len(SCHEMA.field(name).levels)
        # one part of the date off: the names and postcode (salted with the whole date) are
        # "not compared"; their fallbacks are compared, exact (the year-and-day views are
        # equal filters); the date is lifted to the level just below exact
        if name in date_salted:
            assert month_off.not_compared[c] and month_off.levels[c] == -1, name
        else:
            assert not month_off.not_compared[c], name
            expected = top - 1 if name == "date_of_birth" else top
            assert month_off.levels[c] == expected, name
        # the date missing on one side: nothing salted with it is compared; the inputs are
        # "not compared", a fallback never is; the date itself is held on one side only
        # (missing, not "not compared"); the other fields are compared as usual
        assert no_date.not_compared[c] == (name in date_salted), name
        if name in date_salted | combined | {"date_of_birth"}:
            assert no_date.levels[c] == -1, name
        else:
            assert no_date.levels[c] == top, name
        # same date: compared as usual, the fallbacks not (never counted twice); middle_names
        # is missing there, not "not compared"
        assert not same.not_compared[c], name
        missing = name == "middle_names" or name in combined
        assert same.levels[c] == (-1 if missing else top), name


def test_a_form_the_query_contradicts_is_no_candidate(model: object) -> None:
    row = {
        "given_name": "Amira", "middle_names": None, "family_name": "O'Brien",
        "date_of_birth": "2016-11-30", "sex": None, "postcode": "LS1 4AP", "nhs_number": None,
    }  # fmt: skip
    published = forms.encode_forms(SCHEMA, KEYS, {k: [v] for k, v in row.items()})
    assert published.form.tolist() == [0, 1, 2]  # one form per sex value
    form_refs = refs(3, 900)
    index = MatchIndex(SCHEMA, key_version=1)
    index.upsert("health", form_refs, published.batch)
    sex_tag = SCHEMA.salt_sources.index("sex.value")
    by_tag = {
        int(tag): form_refs[i]
        for i, tag in enumerate(narrow_block_keys(published.batch.salt_tags[:, sex_tag]))
    }
    for sex in ("F", "M"):
        query = encode_records(
            SCHEMA, KEYS, {k: [sex if k == "sex" else v] for k, v in row.items()}
        )
        found = index.query(query, model, max_candidates=10, min_probability=0.0)  # type: ignore[arg-type]
        # only the form assuming the query's sex is compared (and found, as the same child)
        tag = int(narrow_block_keys(query.salt_tags[:, sex_tag])[0])
        assert [f.reference for f in found] == [by_tag[tag]]
        assert found[0].probability >= 0.99
    # a query without sex contradicts no form: all three are candidates
    lacking = encode_records(SCHEMA, KEYS, {k: [v] for k, v in row.items()})
    found = index.query(lacking, model, max_candidates=10, min_probability=0.0)  # type: ignore[arg-type]
    assert sorted(f.reference for f in found) == form_refs


@settings(deadline=None, max_examples=50)
@given(st.integers(0, 2**32 - 1))
def test_assumption_conflicts_of_one_query_row_broadcast(seed: int) -> None:
    # the index passes the query as one row against every gathered row
    rng = np.random.default_rng(seed)
    rows, fields, sources = 12, len(SCHEMA.fields), len(SCHEMA.salt_sources)
    columns = forms.assumable_columns(SCHEMA)
    query_present = rng.random(fields) < 0.5
    query_tags = rng.integers(0, 3, size=sources).astype(np.uint32)  # 0 = missing; collisions
    present = rng.random((rows, fields)) < 0.5
    tags = rng.integers(0, 3, size=(rows, sources)).astype(np.uint32)
    expected = forms.assumption_conflicts(
        columns,
        np.repeat(query_present[None], rows, axis=0),
        np.repeat(query_tags[None], rows, axis=0),
        present,
        tags,
    )
    got = forms.assumption_conflicts(columns, query_present[None], query_tags[None], present, tags)
    np.testing.assert_array_equal(got, expected)
