"""Tests of candidate-pair generation and LSH (linkage.blocking).

The fast vectorised functions are checked against the plain dict/set reference
implementations on seeded random keys (many collisions, many zeros) and on Hypothesis-drawn
keys; LSH keys are checked against a pure-Python re-statement of the documented key format.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from linkage.blocking import (
    BlockPruning,
    CandidatePairs,
    candidate_pairs_dedupe,
    candidate_pairs_dedupe_reference,
    candidate_pairs_link,
    candidate_pairs_link_reference,
    count_block_pairs_dedupe,
    count_block_pairs_link,
    lsh_bit_positions,
    lsh_keys,
    union_pairs,
)
from linkage.errors import FilterFormatError, IncompatibleEncodingError, JigsawError
from linkage.similarity import dice_reference

MASK64 = (1 << 64) - 1


def assert_same_pairs(fast: CandidatePairs, reference: CandidatePairs) -> None:
    assert fast.left.dtype == np.int64
    assert fast.right.dtype == np.int64
    np.testing.assert_array_equal(fast.left, reference.left)
    np.testing.assert_array_equal(fast.right, reference.right)
    assert fast.skipped_blocks == reference.skipped_blocks
    assert fast.largest_block == reference.largest_block


def random_keys(
    rng: np.random.Generator, n_records: int, n_rules: int, distinct: int
) -> NDArray[np.uint64]:
    """Keys from a tiny alphabet (so blocks collide a lot); value 0 (missing) is common."""
    alphabet = np.array([0, 1, 2, 2**63, MASK64, 12345678901234567890], dtype=np.uint64)
    alphabet = np.concatenate([alphabet, np.arange(7, 7 + distinct, dtype=np.uint64)])
    return rng.choice(alphabet, size=(n_records, n_rules))


def pair_set(pairs: CandidatePairs) -> set[tuple[int, int]]:
    return set(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True))


# ---------------------------------------------------------------------------- fast == reference


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("max_block_size", [None, 1, 6, 40])
def test_link_equals_reference_on_seeded_keys(seed: int, max_block_size: int | None) -> None:
    rng = np.random.default_rng(seed)
    n_rules = int(rng.integers(1, 5))
    left = random_keys(rng, int(rng.integers(0, 120)), n_rules, int(rng.integers(0, 30)))
    right = random_keys(rng, int(rng.integers(0, 120)), n_rules, int(rng.integers(0, 30)))
    fast = candidate_pairs_link(left, right, max_block_size=max_block_size)
    reference = candidate_pairs_link_reference(left, right, max_block_size=max_block_size)
    assert_same_pairs(fast, reference)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("max_block_size", [None, 1, 6, 40])
def test_dedupe_equals_reference_on_seeded_keys(seed: int, max_block_size: int | None) -> None:
    rng = np.random.default_rng(1000 + seed)
    keys = random_keys(
        rng, int(rng.integers(0, 150)), int(rng.integers(1, 5)), int(rng.integers(0, 40))
    )
    fast = candidate_pairs_dedupe(keys, max_block_size=max_block_size)
    reference = candidate_pairs_dedupe_reference(keys, max_block_size=max_block_size)
    assert_same_pairs(fast, reference)


key_values = st.sampled_from([0, 0, 1, 2, 3, 2**63, MASK64])


def key_arrays(rows: st.SearchStrategy[int], rules: int) -> st.SearchStrategy[NDArray[np.uint64]]:
    return rows.flatmap(lambda n: hnp.arrays(np.uint64, (n, rules), elements=key_values))


@settings(deadline=None, max_examples=60)
@given(
    data=st.data(),
    rules=st.integers(0, 3),
    max_block_size=st.one_of(st.none(), st.integers(1, 30)),
)
def test_link_equals_reference_property(
    data: st.DataObject, rules: int, max_block_size: int | None
) -> None:
    left = data.draw(key_arrays(st.integers(0, 25), rules))
    right = data.draw(key_arrays(st.integers(0, 25), rules))
    fast = candidate_pairs_link(left, right, max_block_size=max_block_size)
    assert_same_pairs(
        fast, candidate_pairs_link_reference(left, right, max_block_size=max_block_size)
    )


@settings(deadline=None, max_examples=60)
@given(
    data=st.data(),
    rules=st.integers(0, 3),
    max_block_size=st.one_of(st.none(), st.integers(1, 30)),
)
def test_dedupe_equals_reference_property(
    data: st.DataObject, rules: int, max_block_size: int | None
) -> None:
    keys = data.draw(key_arrays(st.integers(0, 30), rules))
    fast = candidate_pairs_dedupe(keys, max_block_size=max_block_size)
    assert_same_pairs(fast, candidate_pairs_dedupe_reference(keys, max_block_size=max_block_size))


def test_link_small_known_answer() -> None:
    left = np.array([[5, 0], [7, 9], [5, 9], [0, 0]], dtype=np.uint64)
    right = np.array([[5, 9], [0, 0], [7, 1], [5, 0]], dtype=np.uint64)
    pairs = candidate_pairs_link(left, right)
    # rule 0: key 5 -> left {0, 2} x right {0, 3}; key 7 -> (1, 2). rule 1: key 9 -> {1, 2} x {0}.
    assert list(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True)) == [
        (0, 0),
        (0, 3),
        (1, 0),
        (1, 2),
        (2, 0),
        (2, 3),
    ]
    assert pairs.skipped_blocks == (0, 0)
    assert pairs.largest_block == 4


def test_dedupe_small_known_answer() -> None:
    keys = np.array([[4], [0], [4], [0], [4], [8], [8]], dtype=np.uint64)
    pairs = candidate_pairs_dedupe(keys)
    assert list(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True)) == [
        (0, 2),
        (0, 4),
        (2, 4),
        (5, 6),
    ]
    assert pairs.largest_block == 3


# ---------------------------------------------------------------------------- invariants


def test_zero_keys_never_pair() -> None:
    rng = np.random.default_rng(7)
    left = random_keys(rng, 200, 3, 3)
    right = random_keys(rng, 200, 3, 3)
    pairs = candidate_pairs_link(left, right)
    assert len(pairs) > 0
    # every emitted pair shares a nonzero key under at least one rule
    shared = (left[pairs.left] == right[pairs.right]) & (left[pairs.left] != 0)
    assert shared.any(axis=1).all()
    # records whose keys are all zero never appear
    all_zero_left = np.flatnonzero(~left.any(axis=1))
    assert not np.isin(pairs.left, all_zero_left).any()
    zeros = np.zeros((50, 3), dtype=np.uint64)
    assert len(candidate_pairs_link(zeros, zeros)) == 0
    assert len(candidate_pairs_dedupe(zeros)) == 0


def test_pairs_sorted_unique_and_dedupe_ordered() -> None:
    rng = np.random.default_rng(11)
    keys = random_keys(rng, 3000, 4, 200)
    for pairs in (candidate_pairs_link(keys, keys[::-1].copy()), candidate_pairs_dedupe(keys)):
        codes = pairs.left * 3000 + pairs.right
        assert len(pairs) > 1000
        assert (np.diff(codes) > 0).all()  # strictly increasing: sorted by (i, j) and unique
    dedupe = candidate_pairs_dedupe(keys)
    assert (dedupe.left < dedupe.right).all()


def test_link_of_dataset_with_itself_contains_dedupe_pairs_both_ways() -> None:
    rng = np.random.default_rng(12)
    keys = random_keys(rng, 300, 2, 20)
    linked = pair_set(candidate_pairs_link(keys, keys))
    deduped = pair_set(candidate_pairs_dedupe(keys))
    off_diagonal = {(i, j) for i, j in linked if i != j}
    assert off_diagonal == deduped | {(j, i) for i, j in deduped}


# ---------------------------------------------------------------------------- oversized blocks


def test_max_block_size_skips_whole_blocks_and_counts_them() -> None:
    # rule 0: key 1 is a 3 x 2 block (6 pairs), key 2 a 1 x 1 block; rule 1: key 3 is 2 x 3 (6).
    left = np.array([[1, 3], [1, 3], [1, 0], [2, 0]], dtype=np.uint64)
    right = np.array([[1, 3], [1, 3], [2, 3], [0, 0]], dtype=np.uint64)
    kept = candidate_pairs_link(left, right, max_block_size=6)  # limit is inclusive
    assert kept.skipped_blocks == (0, 0)
    assert pair_set(kept) == {
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 1),
        (3, 2),
    }
    skipped = candidate_pairs_link(left, right, max_block_size=5)
    assert skipped.skipped_blocks == (1, 1)
    assert skipped.largest_block == 6
    assert pair_set(skipped) == {(3, 2)}
    count = count_block_pairs_link(left, right, max_block_size=5)
    assert count.pairs_per_rule == (1, 0)
    assert count.skipped_blocks == (1, 1)
    assert count.largest_block == 6


def test_dedupe_max_block_size_uses_n_choose_two() -> None:
    keys = np.array([[1]] * 4 + [[2]] * 3, dtype=np.uint64)  # blocks of 6 and 3 pairs
    assert candidate_pairs_dedupe(keys, max_block_size=6).skipped_blocks == (0,)
    limited = candidate_pairs_dedupe(keys, max_block_size=5)
    assert limited.skipped_blocks == (1,)
    assert limited.largest_block == 6
    assert pair_set(limited) == {(4, 5), (4, 6), (5, 6)}


@pytest.mark.parametrize("seed", range(5))
def test_counts_match_materialised_pairs(seed: int) -> None:
    rng = np.random.default_rng(2000 + seed)
    left = random_keys(rng, 400, 3, 25)
    right = random_keys(rng, 300, 3, 25)
    for limit in (None, 50):
        count = count_block_pairs_link(left, right, max_block_size=limit)
        per_rule = [
            len(candidate_pairs_link(left[:, [r]], right[:, [r]], max_block_size=limit))
            for r in range(3)
        ]
        pairs = candidate_pairs_link(left, right, max_block_size=limit)
        assert count.pairs_per_rule == tuple(per_rule)
        assert count.skipped_blocks == pairs.skipped_blocks
        assert count.largest_block == pairs.largest_block
        assert len(pairs) <= count.pairs_upper_bound
        dedupe_count = count_block_pairs_dedupe(left, max_block_size=limit)
        dedupe_per_rule = [
            len(candidate_pairs_dedupe(left[:, [r]], max_block_size=limit)) for r in range(3)
        ]
        assert dedupe_count.pairs_per_rule == tuple(dedupe_per_rule)
        assert (
            dedupe_count.skipped_blocks
            == candidate_pairs_dedupe(left, max_block_size=limit).skipped_blocks
        )


# ---------------------------------------------------------------------------- union


@settings(deadline=None, max_examples=40)
@given(data=st.data())
def test_union_of_rule_subsets_equals_all_rules(data: st.DataObject) -> None:
    left = data.draw(key_arrays(st.integers(0, 20), 3))
    right = data.draw(key_arrays(st.integers(0, 20), 3))
    combined = union_pairs(
        candidate_pairs_link(left[:, :1], right[:, :1]),
        candidate_pairs_link(left[:, 1:], right[:, 1:]),
    )
    whole = candidate_pairs_link(left, right)
    np.testing.assert_array_equal(combined.left, whole.left)
    np.testing.assert_array_equal(combined.right, whole.right)
    assert combined.skipped_blocks == whole.skipped_blocks
    assert combined.largest_block == whole.largest_block


def test_union_of_nothing_is_empty() -> None:
    empty = union_pairs()
    assert len(empty) == 0
    assert empty.left.dtype == np.int64
    assert empty.skipped_blocks == ()


# ---------------------------------------------------------------------------- LSH


def random_filters(
    rng: np.random.Generator, n_records: int, filter_bits: int, fill: float
) -> NDArray[np.uint64]:
    bits = rng.random((n_records, filter_bits)) < fill
    return np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)


def splitmix64_finalise(value: int) -> int:
    value ^= value >> 30
    value = (value * 0xBF58476D1CE4E5B9) & MASK64
    value ^= value >> 27
    value = (value * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def lsh_keys_reference(
    filters: NDArray[np.uint64], bands: int, bits_per_band: int, seed: int
) -> list[list[int]]:
    """The key format of lsh_keys' docstring, restated with Python integers."""
    positions = lsh_bit_positions(
        filters.shape[1] * 64, bands=bands, bits_per_band=bits_per_band, seed=seed
    )
    keys = []
    for row in filters.tolist():
        if not any(row):
            keys.append([0] * bands)
            continue
        row_keys = []
        for band in range(bands):
            pattern = 0
            for t, position in enumerate(positions[band].tolist()):
                pattern |= ((row[position // 64] >> (position % 64)) & 1) << t
            key = splitmix64_finalise((pattern + (band + 1) * 0x9E3779B97F4A7C15) & MASK64)
            row_keys.append(key or 1)
        keys.append(row_keys)
    return keys


def test_lsh_matches_python_reference() -> None:
    rng = np.random.default_rng(31)
    filters = random_filters(rng, 40, 256, 0.3)
    filters[3] = 0
    keys = lsh_keys(filters, bands=6, bits_per_band=20, seed=5)
    assert keys.dtype == np.uint64
    assert keys.shape == (40, 6)
    assert keys.tolist() == lsh_keys_reference(filters, 6, 20, 5)
    full = lsh_keys(filters, bands=2, bits_per_band=64, seed=6)
    assert full.tolist() == lsh_keys_reference(filters, 2, 64, 6)


def test_lsh_known_answer_for_an_all_zero_sample() -> None:
    # A nonzero filter whose sampled bits in a band are all zero has pattern 0: its key is the
    # splitmix64 finaliser of (band + 1) * gamma, i.e. the splitmix64 stream from state 0.
    positions = lsh_bit_positions(128, bands=2, bits_per_band=8, seed=3)
    unsampled = sorted(set(range(128)) - set(positions.ravel().tolist()))[0]
    filters = np.zeros((1, 2), dtype=np.uint64)
    filters[0, unsampled // 64] = np.uint64(1) << np.uint64(unsampled % 64)
    keys = lsh_keys(filters, bands=2, bits_per_band=8, seed=3)
    assert keys.tolist() == [[0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]]


def test_lsh_deterministic_for_a_seed() -> None:
    filters = random_filters(np.random.default_rng(32), 100, 1024, 0.3)
    first = lsh_keys(filters, bands=10, bits_per_band=24, seed=99)
    again = lsh_keys(filters.copy(), bands=10, bits_per_band=24, seed=99)
    other = lsh_keys(filters, bands=10, bits_per_band=24, seed=100)
    np.testing.assert_array_equal(first, again)
    assert (first != other).mean() > 0.99
    # band keys of different bands differ even for the same sampled bit pattern
    assert all(len(set(row)) == 10 for row in first.tolist())


def test_lsh_identical_filters_collide_in_every_band() -> None:
    filters = random_filters(np.random.default_rng(33), 50, 1024, 0.3)
    doubled = np.concatenate([filters, filters])
    keys = lsh_keys(doubled, bands=16, bits_per_band=28, seed=1)
    np.testing.assert_array_equal(keys[:50], keys[50:])
    pairs = candidate_pairs_link(keys[:50], keys[50:])
    assert pair_set(pairs) == {(i, i) for i in range(50)}  # random filters never collide


def test_lsh_similar_filters_collide_in_most_bands() -> None:
    rng = np.random.default_rng(34)
    filter_bits, records = 1024, 200
    bits = rng.random((records, filter_bits)) < 0.3
    noisy = bits.copy()
    for row in range(records):  # flip 8 random bits: Dice similarity about 0.97
        flip = rng.choice(filter_bits, size=8, replace=False)
        noisy[row, flip] = ~noisy[row, flip]

    def pack(bit_matrix: NDArray[np.bool_]) -> NDArray[np.uint64]:
        packed = np.packbits(bit_matrix, axis=1, bitorder="little")
        return packed.view("<u8").astype(np.uint64)

    bands, bits_per_band = 20, 24
    original = lsh_keys(pack(bits), bands=bands, bits_per_band=bits_per_band, seed=2)
    perturbed = lsh_keys(pack(noisy), bands=bands, bits_per_band=bits_per_band, seed=2)
    agreeing = (original == perturbed).mean(axis=1)
    # expected per band: (1 - 8/1024) ** 24 ~ 0.83
    assert np.median(agreeing) >= 0.7
    assert (agreeing >= 0.5).mean() > 0.95
    # unrelated filters practically never share a band key
    assert (original == perturbed[::-1]).mean() < 0.001
    pairs = candidate_pairs_link(original, perturbed)
    assert {(i, i) for i in range(records)} <= pair_set(pairs)


def test_lsh_zero_filter_gives_key_zero_and_others_never_do() -> None:
    filters = random_filters(np.random.default_rng(35), 300, 64, 0.02)  # sparse: many 0 patterns
    filters[[0, 17, 299]] = 0
    keys = lsh_keys(filters, bands=8, bits_per_band=16, seed=4)
    missing = ~filters.any(axis=1)
    assert (keys[missing] == 0).all()
    assert (keys[~missing] != 0).all()
    assert len(candidate_pairs_dedupe(keys[missing])) == 0


# ---------------------------------------------------------------------------- validation


def test_key_validation_errors() -> None:
    good = np.zeros((3, 2), dtype=np.uint64)
    with pytest.raises(JigsawError, match="uint64"):
        candidate_pairs_link(good.astype(np.int64), good)
    with pytest.raises(JigsawError, match="shape"):
        candidate_pairs_dedupe(np.zeros(3, dtype=np.uint64))
    with pytest.raises(JigsawError, match="numpy array"):
        candidate_pairs_dedupe([[1, 2]])  # type: ignore[arg-type]
    with pytest.raises(IncompatibleEncodingError, match="rules"):
        candidate_pairs_link(good, np.zeros((3, 3), dtype=np.uint64))
    with pytest.raises(JigsawError, match="max_block_size"):
        candidate_pairs_link(good, good, max_block_size=0)
    with pytest.raises(JigsawError, match="max_block_size"):
        count_block_pairs_dedupe(good, max_block_size=2.5)  # type: ignore[arg-type]


def test_filter_validation_errors() -> None:
    with pytest.raises(FilterFormatError, match="uint64"):
        lsh_keys(np.zeros((2, 4), dtype=np.int64), bands=2, bits_per_band=8, seed=0)
    with pytest.raises(FilterFormatError, match="shape"):
        lsh_keys(np.zeros(4, dtype=np.uint64), bands=2, bits_per_band=8, seed=0)
    with pytest.raises(JigsawError, match="bits_per_band"):
        lsh_keys(np.zeros((2, 4), dtype=np.uint64), bands=2, bits_per_band=65, seed=0)
    with pytest.raises(JigsawError, match="bands"):
        lsh_keys(np.zeros((2, 4), dtype=np.uint64), bands=0, bits_per_band=8, seed=0)


def test_error_messages_carry_no_key_values() -> None:
    canary = 0xC0FFEE12345
    keys = np.full((4, 2), canary, dtype=np.uint64)
    failures: list[Callable[[], object]] = [
        lambda: candidate_pairs_link(keys, keys[:, :1].copy()),
        lambda: candidate_pairs_dedupe(keys.astype(np.int64)),
        lambda: candidate_pairs_dedupe(keys.ravel()),
        lambda: lsh_keys(keys.astype(np.int64), bands=1, bits_per_band=1, seed=0),
    ]
    for fail in failures:
        with pytest.raises(JigsawError) as caught:
            fail()
        message = str(caught.value)
        assert str(canary) not in message and hex(canary) not in message


def test_lsh_computed_zero_key_is_mapped_to_one() -> None:
    # With 64 sampled bits from a 64-bit filter, choose the filter so that band 0's pattern is
    # -gamma mod 2**64: the finaliser maps 0 to 0, so the computed key is 0 and must become 1.
    positions = lsh_bit_positions(64, bands=1, bits_per_band=64, seed=8)
    pattern = (-0x9E3779B97F4A7C15) & MASK64
    word = 0
    for t, position in enumerate(positions[0].tolist()):
        word |= ((pattern >> t) & 1) << position
    filters = np.array([[word]], dtype=np.uint64)
    assert splitmix64_finalise((pattern + 0x9E3779B97F4A7C15) & MASK64) == 0
    assert lsh_keys(filters, bands=1, bits_per_band=64, seed=8).tolist() == [[1]]


def test_candidate_pairs_are_read_only() -> None:
    pairs = candidate_pairs_dedupe(np.array([[1], [1], [1]], dtype=np.uint64))
    with pytest.raises(ValueError, match="read-only"):
        pairs.left[0] = 5
    with pytest.raises(JigsawError, match="equal length"):
        CandidatePairs(np.zeros(2, dtype=np.int64), np.zeros(3, dtype=np.int64), (), 0)


# ----------------------------------------------------------------------------- large blocks


def _pruning_world(seed: int) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """300 records: one block of 200 (key 7), blocks of 3 (keys 100..), random 256-bit filters."""
    rng = np.random.default_rng(seed)
    keys = np.zeros((300, 1), dtype=np.uint64)
    keys[:200, 0] = 7
    keys[200:, 0] = 100 + np.arange(100) // 3
    filters = rng.integers(0, 2**63, size=(300, 4), dtype=np.int64).astype(np.uint64)
    filters &= rng.integers(0, 2**63, size=(300, 4), dtype=np.int64).astype(np.uint64)
    return keys, filters


def test_pruning_keeps_small_blocks_whole_and_each_large_block_member_its_neighbours() -> None:
    keys, filters = _pruning_world(seed=11)
    full = candidate_pairs_dedupe(keys)
    pruned = candidate_pairs_dedupe(
        keys, pruning=BlockPruning(filters, large_block=50, neighbours=5)
    )
    got = set(zip(pruned.left.tolist(), pruned.right.tolist(), strict=True))
    small = {
        (i, j) for i, j in zip(full.left.tolist(), full.right.tolist(), strict=True) if i >= 200
    }
    assert small <= got  # blocks of 3 are expanded in full
    large = {(i, j) for i, j in got if i < 200}
    assert all(j < 200 for _, j in large)
    assert len(large) < 200 * 5 + 1 < 200 * 199 // 2
    # Reference: each member's 5 most similar other members (ties: lower index first).
    for i in range(200):
        scores = sorted((-dice_reference(filters[i], filters[j]), j) for j in range(200) if j != i)
        for _, j in scores[:5]:
            assert (min(i, j), max(i, j)) in large
    assert np.all(pruned.left < pruned.right)
    order = np.lexsort((pruned.right, pruned.left))
    assert np.array_equal(order, np.arange(len(pruned.left)))  # sorted by (left, right)


def test_pruned_blocks_are_not_skipped_as_oversized() -> None:
    keys, filters = _pruning_world(seed=12)
    skipped = candidate_pairs_dedupe(keys, max_block_size=1000)
    assert skipped.skipped_blocks == (1,)
    pruned = candidate_pairs_dedupe(
        keys, max_block_size=1000, pruning=BlockPruning(filters, large_block=50, neighbours=3)
    )
    assert pruned.skipped_blocks == (0,)
    assert np.count_nonzero(pruned.left < 200) > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"large_block": 0}, "large_block"),
        ({"neighbours": True}, "neighbours"),
        ({"filters": np.zeros((300, 4), dtype=np.int64)}, "uint64"),
        ({"filters": np.zeros((299, 4), dtype=np.uint64)}, "one row per record"),
    ],
)
def test_pruning_options_are_checked(kwargs: dict[str, object], message: str) -> None:
    keys, filters = _pruning_world(seed=13)
    options: dict[str, object] = {"filters": filters, **kwargs}
    with pytest.raises(JigsawError, match=message):
        candidate_pairs_dedupe(keys, pruning=BlockPruning(**options))  # type: ignore[arg-type]
