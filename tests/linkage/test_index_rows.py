"""A lookup's rows in one pass (``MatchIndex.query_rows``) against loops over its rows.

Two references, each merging the rows' lists as a caller asking row by row does (chained in
row order, sorted best first, stable, each candidate kept at its first, best, entry): each row
queried alone with ``MatchIndex.query``; and each row looked up by a plain loop that uses none
of the index's own lookup code (every record's tokens compared directly, each field by the
Dice kernel's reference, then the library's conflict, comparison, level, scan and ranking
functions, over the index's snapshot). The one pass must give exactly their list: the same
candidates in the same order with the same probabilities, levels and not-compared flags.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import pytest

from linkage import forms, pipeline, scoring, similarity, synthetic
from linkage.compare import compare_fields
from linkage.encode import EncodedBatch, concat_batches, encode_records
from linkage.errors import FilterFormatError, InvalidArgumentError
from linkage.index import (
    CONFIDENT_PROBABILITY,
    IndexedCandidate,
    MatchIndex,
    _dice_to_one_reference,
    narrow_block_keys,
)
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import default_child_schema
from linkage.solve import rank_candidates

SCHEMA = default_child_schema()
KEYS = KeySet(LinkageSecret.for_tests())
PROFILES = {
    "default": synthetic.DEFAULT_AGENCIES,
    "typical": synthetic.PROFILES["typical"],
    "hard": synthetic.PROFILES["hard"],
}
#: (max_candidates, min_probability, confident_probability, scanning rows: "typed" for the
#: query's own rows as the matcher asks, None for every row, or a count)
SETTINGS: tuple[tuple[int, float, float | None, str | int | None], ...] = (
    (20, 0.5, CONFIDENT_PROBABILITY, "typed"),  # the matcher's
    (20, 0.5, None, 0),  # benchmarks.lookups' hypotheses: blocking only
    (3, 0.0, None, None),  # every row scans; short lists: each row's cut matters
    (200, 0.0, CONFIDENT_PROBABILITY, 1),
)


@dataclasses.dataclass(frozen=True)
class World:
    index: MatchIndex
    model: Any
    lookups: list[tuple[EncodedBatch, EncodedBatch | None]]  # (typed rows, hypotheses)


def _world(profile: str) -> World:
    population = synthetic.generate_population(1500, seed=21, agencies=PROFILES[profile])
    # a small merge threshold: an unmerged delta beside the sorted orders
    index = MatchIndex(SCHEMA, key_version=1, merge_threshold=400)
    for code, (agency, data) in enumerate(population.agencies.items()):
        published = forms.encode_forms(SCHEMA, KEYS, data.columns)
        references = [
            forms.form_reference(f"{code:08x}{int(row):024x}", int(form))
            for row, form in zip(published.origin.tolist(), published.form.tolist(), strict=True)
        ]
        index.upsert(agency, references, published.batch)
        if code == 0:  # dead slots, some compacted and reused, some not
            index.remove(agency, references[:40])
            index.compact()
            index.upsert(agency, references[:20], published.batch.take(range(20)))
            index.remove(agency, references[100:130])
    sample, _, _ = index.snapshot(sample=100_000, seed=1)
    model = pipeline.score_pairs(SCHEMA, sample, None).model
    asking = population.agencies["childrens_social_care"]
    lookups = []
    for row in range(0, len(asking.child_id), max(1, len(asking.child_id) // 24)):
        values = {name: asking.columns[name][row] for name in SCHEMA.input_names}
        if row % 3 == 0:
            values["sex"] = None  # one typed row per sex value
        lookups.append(
            (
                forms.encode_query(SCHEMA, KEYS, values),
                forms.encode_date_hypotheses(SCHEMA, KEYS, values),
            )
        )
    return World(index, model, lookups)


@pytest.fixture(scope="module", params=sorted(PROFILES))
def world(request: pytest.FixtureRequest) -> World:
    return _world(request.param)


def _plain_row(
    index: MatchIndex,
    snapshot: tuple[EncodedBatch, Any, list[str]],
    query: EncodedBatch,
    model: Any,
    *,
    max_candidates: int = 10,
    min_probability: float = 0.5,
    confident_probability: float | None = None,
    scan_top_k: int = 20,
) -> list[IndexedCandidate]:
    """One row's lookup written plainly over the snapshot (live records in slot order)."""
    records, codes, references = snapshot
    keys = narrow_block_keys(query.block_keys[0]).astype(np.uint64)
    blocked = np.flatnonzero(((records.block_keys == keys) & (keys != 0)).any(axis=1)).tolist()

    def score(rows: list[int]) -> tuple[list[int], Any, Any, Any]:
        picked = np.asarray(rows, dtype=np.int64)
        query_present = np.repeat(query.field_present[:1], len(rows), axis=0)
        query_tags = np.repeat(narrow_block_keys(query.salt_tags[:1]), len(rows), axis=0)
        conflicts = forms.assumption_conflicts(
            forms.assumable_columns(SCHEMA),
            query_present,
            query_tags,
            records.field_present[picked],
            records.salt_tags[picked],
        )
        picked, query_present, query_tags = (
            picked[~conflicts],
            query_present[~conflicts],
            query_tags[~conflicts],
        )
        sim = np.zeros((picked.size, len(SCHEMA.fields)))
        for f in range(len(SCHEMA.fields)):
            if picked.size:
                sim[:, f], _ = _dice_to_one_reference(
                    query.field_filters[f][0], records.field_filters[f][picked]
                )
        compared = compare_fields(
            SCHEMA,
            sim,
            query_present,
            records.field_present[picked],
            query_tags,
            records.salt_tags[picked],
        )
        levels = scoring.comparison_levels(
            compared.similarity,
            compared.present,
            tuple(f.levels for f in SCHEMA.comparison_specs),
        )
        return picked.tolist(), levels, compared.not_compared, model.match_probability(levels)

    rows, levels, not_compared, probabilities = score(blocked)
    confident = (
        confident_probability is not None
        and np.count_nonzero(probabilities >= confident_probability) >= 1
    )
    if scan_top_k and not confident:
        scan, _ = similarity.dice_one_to_many(
            query.record_filters[0], records.record_filters, threshold=0.5, top_k=scan_top_k
        )
        rows, levels, not_compared, probabilities = score(
            blocked + sorted(set(scan.tolist()) - set(blocked))
        )
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


def _loop_over_rows(
    index: MatchIndex,
    rows: EncodedBatch,
    model: Any,
    scanning: int,
    snapshot: tuple[EncodedBatch, Any, list[str]] | None = None,
    **settings: Any,
) -> list[IndexedCandidate]:
    """Each row alone (``MatchIndex.query``, or with ``snapshot`` the plain loop), the lists
    merged: every candidate once, at its best (earlier row and place on a tie), best first."""
    lists = [
        (
            index.query(rows.take([row]), model, **settings, **blocking_only)
            if snapshot is None
            else _plain_row(index, snapshot, rows.take([row]), model, **settings, **blocking_only)
        )
        for row in range(len(rows))
        for blocking_only in [{} if row < scanning else {"scan_top_k": 0}]
    ]
    ranked = sorted(itertools.chain.from_iterable(lists), key=lambda c: -c.probability)
    merged: list[IndexedCandidate] = []
    seen: set[tuple[str, str]] = set()
    for candidate in ranked:
        if (candidate.agency, candidate.reference) not in seen:
            seen.add((candidate.agency, candidate.reference))
            merged.append(candidate)
    return merged


@pytest.mark.parametrize("hypotheses", [False, True], ids=["typed", "hypotheses"])
def test_one_pass_equals_the_loop_over_rows(world: World, hypotheses: bool) -> None:
    compared = found = 0
    snapshot = world.index.snapshot()
    for typed, extra in world.lookups:
        rows = concat_batches([typed, extra]) if hypotheses and extra is not None else typed
        for max_candidates, min_probability, confident, scanning in SETTINGS:
            count: int | None = (
                len(typed)
                if scanning == "typed"
                else int(scanning)
                if scanning is not None
                else None
            )
            settings: dict[str, Any] = {
                "max_candidates": max_candidates,
                "min_probability": min_probability,
                "confident_probability": confident,
            }
            fast = world.index.query_rows(rows, world.model, scanning_rows=count, **settings)
            scanning_rows = len(rows) if count is None else int(count)
            loop = _loop_over_rows(world.index, rows, world.model, scanning_rows, **settings)
            plain = _loop_over_rows(
                world.index, rows, world.model, scanning_rows, snapshot, **settings
            )
            assert fast == loop == plain
            compared += 1
            found += len(fast)
    assert compared == len(world.lookups) * len(SETTINGS)
    assert found > compared  # the lookups do find candidates


def test_one_row_is_a_lookup_of_that_row(world: World) -> None:
    typed, _ = world.lookups[1]
    one = typed.take([0])
    assert world.index.query_rows(one, world.model) == world.index.query(one, world.model)


def test_rows_and_scanning_rows_are_checked(world: World) -> None:
    typed, _ = world.lookups[0]
    with pytest.raises(FilterFormatError, match="at least one"):
        world.index.query_rows(typed.take([]), world.model)
    with pytest.raises(InvalidArgumentError, match="scanning_rows"):
        world.index.query_rows(typed, world.model, scanning_rows=len(typed) + 1)
    with pytest.raises(FilterFormatError, match="exactly one"):
        world.index.query(concat_batches([typed, typed]), world.model)


def test_an_empty_index_and_rows_without_tokens_find_nothing_or_the_scan(world: World) -> None:
    typed, extra = world.lookups[2]
    assert extra is not None
    rows = concat_batches([typed, extra])
    empty = MatchIndex(SCHEMA, key_version=1)
    assert empty.query_rows(rows, world.model) == []
    no_tokens = dataclasses.replace(rows, block_keys=np.zeros_like(rows.block_keys))
    assert world.index.query_rows(no_tokens, world.model, scan_top_k=0) == []
    scanned = world.index.query_rows(no_tokens, world.model, scanning_rows=len(typed))
    assert scanned == _loop_over_rows(world.index, no_tokens, world.model, len(typed))


@pytest.fixture(scope="module")
def small() -> tuple[EncodedBatch, Any]:
    data = synthetic.generate_population(300, seed=4)
    batch = encode_records(SCHEMA, KEYS, data.all_records().columns)
    return batch, pipeline.score_pairs(SCHEMA, batch, None).model


def _no_tokens(batch: EncodedBatch) -> EncodedBatch:
    return dataclasses.replace(batch, block_keys=np.zeros_like(batch.block_keys))


def test_on_a_tie_a_row_ranks_its_blocking_candidates_before_its_scan_s(
    small: tuple[EncodedBatch, Any],
) -> None:
    """Two copies of one record, the one in the lower slot without tokens: the same
    probability, the blocking candidate first, as a lookup of the row alone ranks them."""
    batch, model = small
    index = MatchIndex(SCHEMA, key_version=1)
    record = batch.take([7])
    index.upsert("health", ["a" * 32], _no_tokens(record))  # slot 0: the scan finds it
    index.upsert("health", ["b" * 32], record)  # slot 1: blocking finds it
    index.upsert("police", [f"{i:032x}" for i in range(50)], batch.take(range(50, 100)))
    rows = concat_batches([record, batch.take([3])])
    found = index.query_rows(rows, model, max_candidates=2)
    copies = [c for c in found if c.agency == "health"]
    assert [c.reference for c in copies] == ["b" * 32, "a" * 32]
    assert copies[0].probability == copies[1].probability
    assert found.index(copies[1]) == found.index(copies[0]) + 1
    assert found == _loop_over_rows(index, rows, model, len(rows), max_candidates=2)


def test_a_row_scores_what_its_scan_finds_though_another_row_blocked_it(
    small: tuple[EncodedBatch, Any],
) -> None:
    """Row 0 meets the record only through its scan, row 1 (another child's record with the
    record's tokens) through blocking: the record is ranked at row 0's probability."""
    batch, model = small
    index = MatchIndex(SCHEMA, key_version=1)
    index.upsert("health", [f"{i:032x}" for i in range(len(batch))], batch)
    record, other = batch.take([11]), batch.take([12])
    rows = concat_batches(
        [_no_tokens(record), dataclasses.replace(other, block_keys=record.block_keys)]
    )
    found = index.query_rows(rows, model, min_probability=0.0, max_candidates=50)
    alone = index.query(_no_tokens(record), model)
    assert alone[0].reference == f"{11:032x}"
    best = {c.reference: c.probability for c in found}
    assert best[f"{11:032x}"] == alone[0].probability
    assert found == _loop_over_rows(
        index, rows, model, len(rows), min_probability=0.0, max_candidates=50
    )
