"""Tests for linkage.similarity: the fast Dice kernel must equal the plain reference exactly."""

from __future__ import annotations

import json
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import kernel as _kernel
from linkage import similarity
from linkage.errors import FilterFormatError
from linkage.similarity import (
    dice_many_to_many,
    dice_many_to_many_reference,
    dice_one_to_many,
    dice_one_to_many_reference,
    dice_pairs,
    dice_pairs_reference,
    dice_reference,
    kernel_name,
    popcounts,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "dice.json").read_text())["cases"]
WORD_COUNTS = [1, 2, 8, 16, 17, 32]
KERNELS = list(similarity._available_kernels())
ALL_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


def random_filters(rng: np.random.Generator, rows: int, words: int, density: float) -> Any:
    """Random packed filters with about ``density`` of their bits set, plus edge rows."""
    bits = rng.random((rows, words * 64)) < density
    filters = np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)
    if rows >= 3:
        filters[0] = 0
        filters[1] = ALL_ONES
        filters[2] = filters[-1]  # an exact duplicate, so ties occur
    return filters


def mixed_filters(rng: np.random.Generator, rows: int, words: int) -> Any:
    """Rows of varied density, so popcount bounds both skip and keep pairs."""
    densities = rng.choice([0.05, 0.3, 0.5, 0.9], size=rows)
    return np.concatenate([random_filters(rng, 1, words, float(density)) for density in densities])


def assert_same(actual: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ golden vectors


def golden_filter(case: dict[str, Any], key: str) -> Any:
    raw = bytes.fromhex(case[key])
    assert len(raw) * 8 == case["filter_bits"]
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


@pytest.mark.parametrize("case", GOLDEN, ids=[case["name"] for case in GOLDEN])
@pytest.mark.parametrize("kernel", KERNELS)
def test_golden_vectors(case: dict[str, Any], kernel: str) -> None:
    a, b = golden_filter(case, "a"), golden_filter(case, "b")
    expected = Fraction(case["numerator"], case["denominator"])
    assert float(expected) == case["dice"]
    assert dice_reference(a, b) == case["dice"]
    pair = dice_pairs(
        a[None, :], b[None, :], np.zeros(1, np.int64), np.zeros(1, np.int64), kernel=kernel
    )
    assert pair[0] == case["dice"]
    indices, scores = dice_one_to_many(a, b[None, :], kernel=kernel)
    assert indices.tolist() == [0]
    assert scores[0] == case["dice"]


def test_golden_file_covers_the_edge_cases() -> None:
    names = {case["name"] for case in GOLDEN}
    assert {"both_empty_64", "identical_64", "random_1088_17_words"} <= names
    assert len(GOLDEN) >= 10


# ------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("words", WORD_COUNTS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_popcounts_match_python(words: int, kernel: str) -> None:
    rng = np.random.default_rng(words)
    filters = random_filters(rng, 40, words, 0.4)
    expected = [sum(int(word).bit_count() for word in row) for row in filters]
    got = popcounts(filters, kernel=kernel)
    assert got.dtype == np.uint32
    assert got.tolist() == expected


@pytest.mark.parametrize("words", WORD_COUNTS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_pairs_equal_reference(words: int, kernel: str) -> None:
    rng = np.random.default_rng(100 + words)
    left = mixed_filters(rng, 30, words)
    right = random_filters(rng, 25, words, 0.3)
    left_idx = rng.integers(0, 30, size=400)
    right_idx = rng.integers(0, 25, size=400)
    expected = dice_pairs_reference(left, right, left_idx, right_idx)
    got = dice_pairs(left, right, left_idx, right_idx, kernel=kernel)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("words", WORD_COUNTS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.55, 1.0])
def test_many_to_many_equal_reference(words: int, kernel: str, threshold: float) -> None:
    rng = np.random.default_rng(200 + words)
    queries = mixed_filters(rng, 12, words)
    candidates = mixed_filters(rng, 40, words)
    candidates[5] = queries[3]
    expected = dice_many_to_many_reference(queries, candidates, threshold=threshold)
    got = dice_many_to_many(queries, candidates, threshold=threshold, kernel=kernel)
    assert_same(got, expected)
    expected_top = dice_many_to_many_reference(queries, candidates, threshold=threshold, top_k=3)
    got_top = dice_many_to_many(queries, candidates, threshold=threshold, top_k=3, kernel=kernel)
    assert_same(got_top, expected_top)


@pytest.mark.parametrize("words", WORD_COUNTS)
@pytest.mark.parametrize("kernel", KERNELS)
def test_one_to_many_equal_reference(words: int, kernel: str) -> None:
    rng = np.random.default_rng(300 + words)
    candidates = mixed_filters(rng, 60, words)
    for query in (candidates[7], np.zeros(words, np.uint64), np.full(words, ALL_ONES)):
        for threshold, top_k in [(0.0, None), (0.0, 5), (0.4, None), (0.4, 1)]:
            expected = dice_one_to_many_reference(
                query, candidates, threshold=threshold, top_k=top_k
            )
            got = dice_one_to_many(
                query, candidates, threshold=threshold, top_k=top_k, kernel=kernel
            )
            assert_same(got, expected)


@pytest.mark.parametrize("kernel", KERNELS)
def test_popcount_skip_changes_nothing(kernel: str) -> None:
    """The popcount bound (and the division-free rejection) must not drop a qualifying pair."""
    rng = np.random.default_rng(7)
    words = 16
    queries = mixed_filters(rng, 20, words)
    candidates = mixed_filters(rng, 300, words)
    query_counts = popcounts(queries)
    candidate_counts = popcounts(candidates)
    all_scores = dice_many_to_many(queries, candidates, threshold=0.0)[2]
    # Thresholds exactly equal to achieved scores are the boundary cases of `>=`.
    thresholds = [0.0, 1.0, *rng.choice(np.unique(all_scores), size=25).tolist()]
    kernel_id = similarity._KERNEL_IDS[kernel]
    for threshold in thresholds:
        with_skip = similarity._search(
            queries,
            query_counts,
            candidates,
            candidate_counts,
            threshold,
            None,
            1,
            kernel_id,
            use_bound=True,
        )
        without_skip = similarity._search(
            queries,
            query_counts,
            candidates,
            candidate_counts,
            threshold,
            None,
            1,
            kernel_id,
            use_bound=False,
        )
        assert_same(with_skip, without_skip)
        assert threshold in with_skip[2] or threshold in (0.0, 1.0)


def test_popcount_bound_actually_skips() -> None:
    """A sparse query cannot reach 0.8 against dense candidates: those must be skipped (and
    the results still agree with the reference)."""
    rng = np.random.default_rng(8)
    sparse = random_filters(rng, 1, 16, 0.05)[0]
    dense = random_filters(rng, 50, 16, 0.9)
    indices, scores = dice_one_to_many(sparse, dense, threshold=0.8)
    expected = dice_one_to_many_reference(sparse, dense, threshold=0.8)
    assert_same((indices, scores), expected)


# ------------------------------------------------------------------------------ properties

word_counts = st.sampled_from(WORD_COUNTS)


@st.composite
def filter_pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    words = draw(word_counts)
    word = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 2**64 - 1, 1, 2**63]))
    a = np.array(draw(st.lists(word, min_size=words, max_size=words)), dtype=np.uint64)
    b = np.array(draw(st.lists(word, min_size=words, max_size=words)), dtype=np.uint64)
    return a, b


@settings(deadline=None, max_examples=150)
@given(filter_pairs())
def test_dice_properties(pair: tuple[Any, Any]) -> None:
    a, b = pair
    score = dice_reference(a, b)
    assert 0.0 <= score <= 1.0
    assert dice_reference(b, a) == score
    if a.any():
        assert dice_reference(a, a) == 1.0
    stacked = np.stack([a, b])
    for kernel in KERNELS:
        fast = dice_pairs(stacked, stacked, np.array([0, 1, 0]), np.array([1, 0, 0]), kernel=kernel)
        assert fast[0] == score
        assert fast[1] == score
        assert fast[2] == (1.0 if a.any() else 0.0)


@settings(deadline=None, max_examples=40)
@given(
    words=word_counts,
    seed=st.integers(0, 2**32 - 1),
    threshold=st.floats(0.0, 1.0),
    top_k=st.one_of(st.none(), st.integers(1, 6)),
)
def test_many_to_many_property(words: int, seed: int, threshold: float, top_k: int | None) -> None:
    rng = np.random.default_rng(seed)
    queries = mixed_filters(rng, 6, words)
    candidates = mixed_filters(rng, 20, words)
    expected = dice_many_to_many_reference(queries, candidates, threshold=threshold, top_k=top_k)
    for threads in (1, 2):
        got = dice_many_to_many(
            queries, candidates, threshold=threshold, top_k=top_k, threads=threads
        )
        assert_same(got, expected)


# ------------------------------------------------------------------------------ semantics


def test_threshold_is_inclusive_and_order_is_score_then_index() -> None:
    query = np.array([0b1111], dtype=np.uint64)
    candidates = np.array([[0b0011], [0b1111], [0b0001], [0b0011], [0b1111]], dtype=np.uint64)
    # Scores: 2*2/6 = 2/3, 1, 2/5, 2/3, 1.
    indices, scores = dice_one_to_many(query, candidates, threshold=2 / 3)
    assert indices.tolist() == [1, 4, 0, 3]
    assert scores.tolist() == [1.0, 1.0, 2 / 3, 2 / 3]
    indices, scores = dice_one_to_many(query, candidates, threshold=2 / 3, top_k=3)
    assert indices.tolist() == [1, 4, 0]
    indices, _ = dice_one_to_many(query, candidates, threshold=np.nextafter(2 / 3, 1))
    assert indices.tolist() == [1, 4]
    indices, _ = dice_one_to_many(query, candidates)
    assert indices.tolist() == [1, 4, 0, 3, 2]


def test_many_to_many_order_and_top_k_per_query() -> None:
    queries = np.array([[0b0011], [0b1111]], dtype=np.uint64)
    candidates = np.array([[0b1111], [0b0011], [0b0001]], dtype=np.uint64)
    query_idx, cand_idx, scores = dice_many_to_many(queries, candidates, threshold=0.5, top_k=2)
    assert query_idx.tolist() == [0, 0, 1, 1]
    assert cand_idx.tolist() == [1, 0, 0, 1]  # ties at 2/3 broken by candidate index
    assert scores.tolist() == [1.0, 2 / 3, 1.0, 2 / 3]


def test_empty_inputs_give_typed_empty_outputs() -> None:
    none = np.zeros((0, 16), dtype=np.uint64)
    some = np.ones((3, 16), dtype=np.uint64)
    for result in (
        dice_many_to_many(none, some, threshold=0.5),
        dice_many_to_many(some, none, threshold=0.5),
        dice_one_to_many(some[0], none),
    ):
        assert all(len(array) == 0 for array in result)
        assert [array.dtype for array in result][-1] == np.float64
    empty_pairs = dice_pairs(some, some, np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert empty_pairs.shape == (0,)
    assert popcounts(none).shape == (0,)


def test_supplied_popcounts_are_used() -> None:
    rng = np.random.default_rng(11)
    queries = random_filters(rng, 5, 16, 0.3)
    candidates = random_filters(rng, 30, 16, 0.3)
    plain = dice_many_to_many(queries, candidates, threshold=0.2)
    supplied = dice_many_to_many(
        queries,
        candidates,
        threshold=0.2,
        query_popcounts=popcounts(queries),
        candidate_popcounts=popcounts(candidates),
    )
    assert_same(supplied, plain)


def test_chunking_and_task_splitting_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny chunk, block and task sizes force every resume and merge path."""
    rng = np.random.default_rng(12)
    queries = mixed_filters(rng, 23, 16)
    candidates = mixed_filters(rng, 97, 16)
    expected = dice_many_to_many_reference(queries, candidates, threshold=0.2)
    expected_top = dice_many_to_many_reference(queries, candidates, threshold=0.2, top_k=4)
    monkeypatch.setattr(similarity, "_CHUNK_PAIRS", 7)
    monkeypatch.setattr(similarity, "_QUERY_BLOCK", 5)
    monkeypatch.setattr(similarity, "_MIN_CANDIDATES_PER_TASK", 10)
    for threads in (1, 2, 3):
        assert_same(
            dice_many_to_many(queries, candidates, threshold=0.2, threads=threads), expected
        )
        assert_same(
            dice_many_to_many(queries, candidates, threshold=0.2, top_k=4, threads=threads),
            expected_top,
        )
    single = dice_one_to_many(queries[0], candidates, threshold=0.2, top_k=4, threads=2)
    assert_same(single, dice_one_to_many_reference(queries[0], candidates, threshold=0.2, top_k=4))


def test_threads_give_identical_output_at_default_sizes() -> None:
    rng = np.random.default_rng(13)
    queries = random_filters(rng, 2100, 16, 0.3)
    candidates = random_filters(rng, 20000, 16, 0.3)
    candidates[100:150] = queries[:50]
    one = dice_many_to_many(queries, candidates, threshold=0.5, threads=1)
    two = dice_many_to_many(queries, candidates, threshold=0.5, threads=2)
    assert len(one[0]) >= 50
    assert_same(two, one)
    lookup_one = dice_one_to_many(queries[0], candidates, top_k=20, threads=1)
    lookup_two = dice_one_to_many(queries[0], candidates, top_k=20, threads=2)
    assert_same(lookup_two, lookup_one)
    left_idx = rng.integers(0, 2100, size=200_000)
    right_idx = rng.integers(0, 20000, size=200_000)
    np.testing.assert_array_equal(
        dice_pairs(queries, candidates, left_idx, right_idx, threads=2),
        dice_pairs(queries, candidates, left_idx, right_idx, threads=1),
    )


def test_pairs_threads_and_index_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(similarity, "_MIN_PAIRS_PER_THREAD", 10)
    rng = np.random.default_rng(14)
    left = random_filters(rng, 20, 17, 0.3)
    right = random_filters(rng, 30, 17, 0.3)
    left_idx = rng.integers(0, 20, size=100)
    right_idx = rng.integers(0, 30, size=100)
    expected = dice_pairs_reference(left, right, left_idx, right_idx)
    for dtype in (np.int64, np.int32, np.uint16, np.uint64):
        got = dice_pairs(left, right, left_idx.astype(dtype), right_idx.astype(dtype), threads=2)
        np.testing.assert_array_equal(got, expected)


def test_non_contiguous_input_is_accepted() -> None:
    rng = np.random.default_rng(15)
    wide = random_filters(rng, 40, 32, 0.3)
    strided = wide[::2, ::2]  # 20 filters of 16 words, neither row nor column contiguous
    fortran = np.asfortranarray(wide[:20, :16])
    assert not strided.flags.c_contiguous and not fortran.flags.c_contiguous
    for candidates in (strided, fortran):
        contiguous = np.ascontiguousarray(candidates)
        assert_same(
            dice_one_to_many(contiguous[3], candidates, threshold=0.1),
            dice_one_to_many(contiguous[3], contiguous, threshold=0.1),
        )
    query = wide[0, ::2]
    assert_same(
        dice_one_to_many(query, np.ascontiguousarray(strided)),
        dice_one_to_many_reference(query, strided),
    )


def test_kernel_name_is_one_of_the_paths() -> None:
    if _kernel.IMPLEMENTATION == "numpy":
        assert KERNELS == ["numpy"] == [kernel_name()]
        return
    assert kernel_name() in {"avx512-vpopcntdq", "popcnt", "portable"}
    assert kernel_name() == KERNELS[-1]
    assert "portable" in KERNELS


# ------------------------------------------------------------------------------ errors


def test_wrong_word_count_names_argument_and_shapes() -> None:
    queries = np.zeros((2, 16), dtype=np.uint64)
    candidates = np.zeros((3, 8), dtype=np.uint64)
    with pytest.raises(FilterFormatError) as info:
        dice_many_to_many(queries, candidates, threshold=0.5)
    assert str(info.value) == "candidates: expected uint64 array of shape (n, 16), got shape (n, 8)"
    with pytest.raises(FilterFormatError, match=r"^candidates: .*\(n, 16\)"):
        dice_one_to_many(queries[0], candidates)
    with pytest.raises(FilterFormatError, match=r"^right: .*\(n, 16\)"):
        dice_pairs(queries, candidates, np.zeros(1, np.int64), np.zeros(1, np.int64))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((3, 16), dtype=np.int64), r"^candidates: .*got dtype <i8"),
        (np.zeros((3, 16), dtype=">u8"), r"^candidates: .*got dtype >u8"),
        (np.zeros((3, 32), dtype=np.uint32), r"^candidates: .*got dtype"),
        (np.zeros(16, dtype=np.uint64), r"^candidates: .*got 1 dimension"),
        (np.zeros((2, 3, 16), dtype=np.uint64), r"^candidates: .*got 3 dimension"),
        (np.zeros((3, 0), dtype=np.uint64), r"^candidates: .*at least one word"),
        ([[0] * 16], r"^candidates: .*got list"),
    ],
)
def test_malformed_candidates_raise_filter_format_error(bad: Any, message: str) -> None:
    with pytest.raises(FilterFormatError, match=message):
        dice_many_to_many(np.zeros((1, 16), dtype=np.uint64), bad, threshold=0.5)


def test_malformed_query_and_popcounts() -> None:
    candidates = np.zeros((3, 16), dtype=np.uint64)
    with pytest.raises(FilterFormatError, match=r"^query: .*shape \(words,\)"):
        dice_one_to_many(np.zeros((1, 16), dtype=np.uint64), candidates)
    with pytest.raises(FilterFormatError, match=r"^candidate_popcounts: .*shape \(3,\)"):
        dice_one_to_many(
            candidates[0], candidates, candidate_popcounts=np.zeros(2, dtype=np.uint32)
        )
    with pytest.raises(FilterFormatError, match=r"^candidate_popcounts: .*dtype"):
        dice_one_to_many(candidates[0], candidates, candidate_popcounts=np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize("bad_index", [-1, 5, 2**63, 2**64 - 1])
def test_indices_out_of_range(bad_index: int) -> None:
    filters = np.zeros((5, 16), dtype=np.uint64)
    good = np.zeros(4, dtype=np.uint64)
    bad = np.array([0, 1, bad_index, 2], dtype=np.int64 if bad_index < 0 else np.uint64)
    with pytest.raises(FilterFormatError, match=r"^left_idx: .*outside \[0, 5\)"):
        dice_pairs(filters, filters, bad, good)
    with pytest.raises(FilterFormatError, match=r"^right_idx: .*outside \[0, 5\)"):
        dice_pairs(filters, filters, good, bad)


def test_index_arrays_must_match_and_be_integers() -> None:
    filters = np.zeros((5, 16), dtype=np.uint64)
    with pytest.raises(FilterFormatError, match=r"^right_idx: expected shape \(3,\)"):
        dice_pairs(filters, filters, np.zeros(3, np.int64), np.zeros(4, np.int64))
    with pytest.raises(FilterFormatError, match=r"^left_idx: .*integer"):
        dice_pairs(filters, filters, np.zeros(3, np.float64), np.zeros(3, np.int64))


def test_bad_settings_raise() -> None:
    filters = np.zeros((2, 16), dtype=np.uint64)
    for threshold in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError, match=r"^threshold"):
            dice_many_to_many(filters, filters, threshold=threshold)
    with pytest.raises(TypeError, match=r"^threshold"):
        dice_many_to_many(filters, filters, threshold="0.5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^top_k"):
        dice_many_to_many(filters, filters, threshold=0.5, top_k=0)
    with pytest.raises(ValueError, match=r"^threads"):
        dice_pairs(filters, filters, np.zeros(1, np.int64), np.zeros(1, np.int64), threads=0)
    with pytest.raises(ValueError, match=r"^kernel"):
        popcounts(filters, kernel="quantum")


def test_kernel_validates_buffers_itself() -> None:
    """Defence in depth: the kernel (C or numpy) checks format, shape and contiguity itself."""
    filters = np.zeros((4, 16), dtype=np.uint64)
    out = np.zeros(4, dtype=np.uint32)
    kernel = similarity._KERNEL_IDS[kernel_name()]
    with pytest.raises(ValueError, match=r"^filters: expected uint64"):
        _kernel.popcounts(filters.view(np.int64), out, kernel)
    with pytest.raises(ValueError, match=r"^filters: expected a C-contiguous"):
        _kernel.popcounts(np.zeros((4, 32), dtype=np.uint64)[:, ::2], out, kernel)
    with pytest.raises(ValueError, match=r"^out: expected a C-contiguous writable"):
        readonly = np.zeros(4, dtype=np.uint32)
        readonly.flags.writeable = False
        _kernel.popcounts(filters, readonly, kernel)
    with pytest.raises(ValueError, match=r"^out: expected one entry per filter"):
        _kernel.popcounts(filters, np.zeros(3, dtype=np.uint32), kernel)
    with pytest.raises(TypeError, match=r"^filters: expected a uint64 buffer"):
        _kernel.popcounts(object(), out, kernel)
    with pytest.raises(ValueError, match=r"^kernel"):
        _kernel.popcounts(filters, out, 99)


def test_errors_carry_no_filter_content() -> None:
    """Filters are encodings of identifiers: messages may name shapes, never contents."""
    canary = np.full((2, 8), 0xDEADBEEFCAFEF00D, dtype=np.uint64)
    query = np.zeros((1, 16), dtype=np.uint64)
    messages = []
    for call in (
        lambda: dice_many_to_many(query, canary, threshold=0.5),
        lambda: dice_pairs(canary, canary, np.array([7]), np.array([0])),
        lambda: dice_one_to_many(canary, canary),
    ):
        with pytest.raises(FilterFormatError) as info:
            call()
        messages.append(str(info.value))
    for message in messages:
        for token in ("deadbeef", str(0xDEADBEEFCAFEF00D), "16045690984503098381"):
            assert token not in message.lower()


@pytest.mark.skipif(
    _kernel.IMPLEMENTATION != "c",
    reason="a promise of the compiled kernel: its loops run without the GIL",
)
def test_kernel_releases_the_gil() -> None:
    """While one thread is inside a long kernel call, another Python thread keeps running."""
    rng = np.random.default_rng(16)
    queries = rng.integers(0, 2**64, size=(400, 16), dtype=np.uint64)
    candidates = rng.integers(0, 2**64, size=(50_000, 16), dtype=np.uint64)
    counts = popcounts(queries), popcounts(candidates)

    def one_call() -> None:
        # Threshold 0.9 on random filters: no output, so this is a single C call.
        dice_many_to_many(
            queries,
            candidates,
            threshold=0.9,
            query_popcounts=counts[0],
            candidate_popcounts=counts[1],
        )

    started = time.perf_counter()
    one_call()
    call_seconds = time.perf_counter() - started
    worker = threading.Thread(target=one_call)
    gaps = []
    last = time.perf_counter()  # before start(): start() itself waits for the GIL
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    gaps.append(time.perf_counter() - last)  # the wait inside the final is_alive() counts too
    worker.join()
    # Holding the GIL through the C loop would stall this loop for the whole call.
    assert call_seconds > 0.05
    assert len(gaps) > 100
    assert max(gaps) < call_seconds / 2
