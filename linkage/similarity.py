"""Dice similarity of packed Bloom filters: the comparison step of the linkage pipeline.

Every comparison in Jigsaw — an online lookup against the matcher's in-memory index, the
blocked pairs of a batch linkage, the candidate check after LSH — scores two field-level Bloom
filters with the Dice coefficient::

    Dice(a, b) = 2 * |a AND b| / (|a| + |b|)        (0.0 when both filters are all-zero)

Filter layout (the library-wide contract): a filter of ``filter_bits`` bits (a multiple of 64)
is stored as ``filter_bits // 64`` little-endian uint64 words; bit ``i`` lives in word
``i // 64`` at bit ``i % 64`` (equivalently byte ``i // 8``, bit ``i % 8``, least significant
bit first). A batch of ``n`` filters is a C-contiguous numpy array of dtype uint64 and shape
``(n, words)``. Scores are float64, computed as ``2 * and_count / (count_a + count_b)`` in
double precision, so every function here returns bit-for-bit the same floats as the plain
reference implementations at the end of this module (``dice_reference`` and friends), which
the tests hold the fast kernel to.

The fast path is the compiled kernel behind :mod:`linkage.kernel`: it picks an AVX-512
VPOPCNTDQ, a POPCNT or a portable loop at import (``kernel_name()``), tiles candidates for
the cache, skips pairs whose popcounts alone rule out the threshold (``Dice <= 2 * min(|a|,
|b|) / (|a| + |b|)``; the skip never changes a result) and releases the GIL, so ``threads=2``
runs on two cores through a ``ThreadPoolExecutor``. Where the extension is not built, the
same calls run in numpy (path ``"numpy"``), with the same results. Thresholded searches emit
their results in bounded chunks; no ``n x m`` score matrix is ever allocated.

Errors: malformed filters, popcounts or indices raise ``FilterFormatError`` naming the
argument and the expectation (shapes and dtypes only, never filter contents). Bad settings
(``threshold``, ``top_k``, ``threads``) raise ``InvalidArgumentError`` or ``ArgumentTypeError``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from linkage import kernel as _kernel
from linkage.errors import ArgumentTypeError, FilterFormatError, InvalidArgumentError

__all__ = [
    "dice_many_to_many",
    "dice_many_to_many_reference",
    "dice_one_to_many",
    "dice_one_to_many_reference",
    "dice_pairs",
    "dice_pairs_reference",
    "dice_reference",
    "kernel_name",
    "popcounts",
]

# Kernel ids understood by the kernel module in use: positions in its list of CPU paths
# (the C module's three, or the numpy module's one).
_KERNEL_IDS = {"portable": 0, "popcnt": 1, "avx512-vpopcntdq": 2, "numpy": 0}
# Pairs written per call of the kernel's scan before control returns to Python (bounds memory).
_CHUNK_PAIRS = 1 << 18
# Queries per task of a many-to-many search.
_QUERY_BLOCK = 2048
# Smallest candidate range worth a task of its own when splitting across threads.
_MIN_CANDIDATES_PER_TASK = 8192
# Smallest number of explicit pairs worth a thread of its own in dice_pairs.
_MIN_PAIRS_PER_THREAD = 65536

_Result = TypeVar("_Result")

IndexArray = NDArray[np.int64]
ScoreArray = NDArray[np.float64]


def kernel_name() -> str:
    """Name of the CPU path in use: ``"avx512-vpopcntdq"``, ``"popcnt"`` or ``"portable"``
    (compiled), or ``"numpy"`` (where the extension is not in use, :mod:`linkage.kernel`)."""
    return _kernel.kernel_name()


def _available_kernels() -> tuple[str, ...]:
    """Every CPU path this machine can run (used by tests to check each against the reference)."""
    return _kernel.available_kernels()


# ------------------------------------------------------------------------------ validation


def _check_filters(value: object, name: str, words: int | None = None) -> NDArray[np.uint64]:
    """``value`` as an aligned C-contiguous (n, words) uint64 array, copied only if needed."""
    expected_shape = f"(n, {words})" if words is not None else "(n, words)"
    expectation = f"{name}: expected uint64 array of shape {expected_shape}"
    if not isinstance(value, np.ndarray):
        raise FilterFormatError(f"{expectation}, got {type(value).__name__}")
    if value.dtype != np.dtype(np.uint64):
        raise FilterFormatError(f"{expectation}, got dtype {value.dtype.str}")
    if value.ndim != 2:
        raise FilterFormatError(f"{expectation}, got {value.ndim} dimension(s)")
    if value.shape[1] == 0:
        raise FilterFormatError(f"{expectation} with at least one word, got shape (n, 0)")
    if words is not None and value.shape[1] != words:
        raise FilterFormatError(f"{expectation}, got shape (n, {value.shape[1]})")
    return cast(NDArray[np.uint64], np.require(value, requirements=["C", "A"]))


def _check_query(value: object, name: str) -> NDArray[np.uint64]:
    """Return one filter as an aligned contiguous (1, words) uint64 array."""
    expectation = f"{name}: expected uint64 array of shape (words,)"
    if not isinstance(value, np.ndarray):
        raise FilterFormatError(f"{expectation}, got {type(value).__name__}")
    if value.dtype != np.dtype(np.uint64):
        raise FilterFormatError(f"{expectation}, got dtype {value.dtype.str}")
    if value.ndim != 1 or value.shape[0] == 0:
        raise FilterFormatError(f"{expectation} with words >= 1, got shape {value.shape}")
    return cast(NDArray[np.uint64], np.require(value.reshape(1, -1), requirements=["C", "A"]))


def _check_popcounts(
    value: object, name: str, filters: NDArray[np.uint64], kernel: int
) -> NDArray[np.uint32]:
    """Validate caller-supplied popcounts, or compute them when ``value`` is None."""
    if value is None:
        return _popcounts(filters, kernel)
    expectation = f"{name}: expected uint32 array of shape ({filters.shape[0]},)"
    if not isinstance(value, np.ndarray):
        raise FilterFormatError(f"{expectation}, got {type(value).__name__}")
    if value.dtype != np.dtype(np.uint32):
        raise FilterFormatError(f"{expectation}, got dtype {value.dtype.str}")
    if value.shape != (filters.shape[0],):
        raise FilterFormatError(f"{expectation}, got shape {value.shape}")
    return cast(NDArray[np.uint32], np.require(value, requirements=["C", "A"]))


def _check_indices(value: object, name: str) -> IndexArray:
    """Return a 1-D integer index array as contiguous int64 (range is checked by the kernel)."""
    expectation = f"{name}: expected 1-D integer array"
    if not isinstance(value, np.ndarray):
        raise FilterFormatError(f"{expectation}, got {type(value).__name__}")
    if value.dtype.kind not in "iu":
        raise FilterFormatError(f"{expectation}, got dtype {value.dtype.str}")
    if value.ndim != 1:
        raise FilterFormatError(f"{expectation}, got {value.ndim} dimension(s)")
    # Unsigned values >= 2**63 wrap to negative int64 and are then rejected as out of range.
    as_int64 = value.astype(np.int64, copy=False)
    return cast(IndexArray, np.require(as_int64, requirements=["C", "A"]))


def _check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ArgumentTypeError(
            f"threshold: expected a real number, got {type(threshold).__name__}"
        )
    value = float(threshold)
    if not (0.0 <= value <= 1.0):
        raise InvalidArgumentError("threshold: expected a number in [0, 1]")
    return value


def _check_top_k(top_k: object) -> int | None:
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
        raise ArgumentTypeError(f"top_k: expected None or an int, got {type(top_k).__name__}")
    if int(top_k) < 1:
        raise InvalidArgumentError("top_k: expected None or an int >= 1")
    return int(top_k)


def _check_threads(threads: object) -> int:
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise ArgumentTypeError(f"threads: expected an int, got {type(threads).__name__}")
    if int(threads) < 1:
        raise InvalidArgumentError("threads: expected an int >= 1")
    return int(threads)


def _kernel_id(kernel: str | None) -> int:
    name = kernel_name() if kernel is None else kernel
    if name not in _available_kernels():
        raise InvalidArgumentError(f"kernel: expected one of {_available_kernels()}, got {name!r}")
    return _KERNEL_IDS[name]


def _run_tasks(tasks: Sequence[Callable[[], _Result]], threads: int) -> list[_Result]:
    """Run tasks in order on ``threads`` threads (the C calls release the GIL)."""
    if threads == 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as executor:
        return list(executor.map(lambda task: task(), tasks))


# ------------------------------------------------------------------------------ popcounts


def _popcounts(filters: NDArray[np.uint64], kernel: int) -> NDArray[np.uint32]:
    out = np.empty(filters.shape[0], dtype=np.uint32)
    try:
        _kernel.popcounts(filters, out, kernel)
    except (TypeError, ValueError) as error:
        raise FilterFormatError(str(error)) from error
    return out


def popcounts(filters: NDArray[np.uint64], *, kernel: str | None = None) -> NDArray[np.uint32]:
    """Number of set bits of every filter in an (n, words) uint64 batch, as uint32.

    Pass the result as ``*_popcounts`` to the search functions to avoid recounting a batch
    (for example the matcher's in-memory index) on every call. ``kernel`` selects a CPU path
    by name for testing; the default is the fastest (``kernel_name()``).
    """
    return _popcounts(_check_filters(filters, "filters"), _kernel_id(kernel))


# ------------------------------------------------------------------------------ searches


def _sort_pairs(
    query_idx: IndexArray, cand_idx: IndexArray, scores: ScoreArray, top_k: int | None
) -> tuple[IndexArray, IndexArray, ScoreArray]:
    """Order by query asc, score desc, candidate asc; keep the first top_k of each query."""
    if top_k is not None and len(scores) > top_k and query_idx.min() == query_idx.max():
        # One query only (the lookup case): keep the scores tied with or above the k-th best
        # before the full sort. Exact: every pair in the top k survives the cut.
        kth_best = np.partition(scores, len(scores) - top_k)[len(scores) - top_k]
        keep = scores >= kth_best
        query_idx, cand_idx, scores = query_idx[keep], cand_idx[keep], scores[keep]
    order = np.lexsort((cand_idx, -scores, query_idx))
    query_idx, cand_idx, scores = query_idx[order], cand_idx[order], scores[order]
    if top_k is not None and len(scores) > top_k:
        starts = np.flatnonzero(np.r_[True, query_idx[1:] != query_idx[:-1]])
        group_sizes = np.diff(np.r_[starts, len(query_idx)])
        rank = np.arange(len(query_idx)) - np.repeat(starts, group_sizes)
        keep = rank < top_k
        query_idx, cand_idx, scores = query_idx[keep], cand_idx[keep], scores[keep]
    return query_idx, cand_idx, scores


def _empty_pairs() -> tuple[IndexArray, IndexArray, ScoreArray]:
    return (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))


def _scan_range(
    queries: NDArray[np.uint64],
    query_counts: NDArray[np.uint32],
    candidates: NDArray[np.uint64],
    candidate_counts: NDArray[np.uint32],
    threshold: float,
    query_range: tuple[int, int],
    candidate_range: tuple[int, int],
    top_k: int | None,
    use_bound: bool,
    kernel: int,
) -> tuple[IndexArray, IndexArray, ScoreArray]:
    """All pairs of the two ranges at or above threshold, in chunks of bounded size.

    The result is sorted (and cut to top_k per query) only when top_k is given; otherwise it
    is in kernel order and the caller sorts.
    """
    out_query = np.empty(_CHUNK_PAIRS, dtype=np.int64)
    out_candidate = np.empty(_CHUNK_PAIRS, dtype=np.int64)
    out_score = np.empty(_CHUNK_PAIRS, dtype=np.float64)
    query_start, query_stop = query_range
    candidate_start, candidate_stop = candidate_range
    block, query = candidate_start, query_start
    pieces: list[tuple[IndexArray, IndexArray, ScoreArray]] = []
    while block < candidate_stop and query_start < query_stop:
        count, block, query = _kernel.scan(
            queries,
            query_counts,
            candidates,
            candidate_counts,
            threshold,
            query_start,
            query_stop,
            candidate_start,
            candidate_stop,
            block,
            query,
            out_query,
            out_candidate,
            out_score,
            use_bound,
            kernel,
        )
        if count == 0:
            continue
        piece = (out_query[:count].copy(), out_candidate[:count].copy(), out_score[:count].copy())
        if top_k is not None:
            # Keep memory bounded by queries * top_k plus one chunk.
            merged = (*pieces, piece) if pieces else (piece,)
            pieces = [_sort_pairs(*_concatenate(merged), top_k)]
        else:
            pieces.append(piece)
    if not pieces:
        return _empty_pairs()
    return _concatenate(pieces)


def _concatenate(
    pieces: Sequence[tuple[IndexArray, IndexArray, ScoreArray]],
) -> tuple[IndexArray, IndexArray, ScoreArray]:
    if len(pieces) == 1:
        return pieces[0]
    return (
        np.concatenate([piece[0] for piece in pieces]),
        np.concatenate([piece[1] for piece in pieces]),
        np.concatenate([piece[2] for piece in pieces]),
    )


def _search(
    queries: NDArray[np.uint64],
    query_counts: NDArray[np.uint32],
    candidates: NDArray[np.uint64],
    candidate_counts: NDArray[np.uint32],
    threshold: float,
    top_k: int | None,
    threads: int,
    kernel: int,
    use_bound: bool = True,
) -> tuple[IndexArray, IndexArray, ScoreArray]:
    """Thresholded all-pairs search; output independent of ``threads``."""
    query_total, candidate_total = queries.shape[0], candidates.shape[0]
    if query_total == 0 or candidate_total == 0:
        return _empty_pairs()
    query_blocks = [
        (start, min(start + _QUERY_BLOCK, query_total))
        for start in range(0, query_total, _QUERY_BLOCK)
    ]
    # With few query blocks, split the candidates too so that every thread has work.
    ranges_wanted = math.ceil(4 * threads / len(query_blocks)) if threads > 1 else 1
    range_count = max(1, min(ranges_wanted, candidate_total // _MIN_CANDIDATES_PER_TASK))
    bounds = np.linspace(0, candidate_total, range_count + 1).astype(np.int64)
    candidate_ranges = [(int(bounds[i]), int(bounds[i + 1])) for i in range(range_count)]

    def make_task(
        query_range: tuple[int, int], candidate_range: tuple[int, int]
    ) -> Callable[[], tuple[IndexArray, IndexArray, ScoreArray]]:
        return lambda: _scan_range(
            queries,
            query_counts,
            candidates,
            candidate_counts,
            threshold,
            query_range,
            candidate_range,
            top_k,
            use_bound,
            kernel,
        )

    tasks = [make_task(qr, cr) for qr in query_blocks for cr in candidate_ranges]
    results = _run_tasks(tasks, threads)
    per_block = []
    for block_number in range(len(query_blocks)):
        block_results = results[block_number * range_count : (block_number + 1) * range_count]
        non_empty = [result for result in block_results if len(result[2])]
        if non_empty:
            per_block.append(_sort_pairs(*_concatenate(non_empty), top_k))
    if not per_block:
        return _empty_pairs()
    return _concatenate(per_block)


def dice_one_to_many(
    query: NDArray[np.uint64],
    candidates: NDArray[np.uint64],
    *,
    threshold: float = 0.0,
    top_k: int | None = None,
    threads: int = 1,
    candidate_popcounts: NDArray[np.uint32] | None = None,
    kernel: str | None = None,
) -> tuple[IndexArray, ScoreArray]:
    """Candidates scoring at least ``threshold`` against one query filter.

    ``query`` is a (words,) uint64 filter, ``candidates`` an (n, words) batch. Returns
    (candidate indices, scores) sorted by score descending then index ascending, cut to the
    first ``top_k`` if given. ``candidate_popcounts`` (from ``popcounts(candidates)``) saves
    recounting a fixed index on every lookup; it must match ``candidates``.
    """
    threshold_value = _check_threshold(threshold)
    top_k_value = _check_top_k(top_k)
    thread_count = _check_threads(threads)
    kernel_id = _kernel_id(kernel)
    queries = _check_query(query, "query")
    candidate_array = _check_filters(candidates, "candidates", queries.shape[1])
    candidate_counts = _check_popcounts(
        candidate_popcounts, "candidate_popcounts", candidate_array, kernel_id
    )
    _, cand_idx, scores = _search(
        queries,
        _popcounts(queries, kernel_id),
        candidate_array,
        candidate_counts,
        threshold_value,
        top_k_value,
        thread_count,
        kernel_id,
    )
    return cand_idx, scores


def dice_many_to_many(
    queries: NDArray[np.uint64],
    candidates: NDArray[np.uint64],
    *,
    threshold: float,
    top_k: int | None = None,
    threads: int = 1,
    query_popcounts: NDArray[np.uint32] | None = None,
    candidate_popcounts: NDArray[np.uint32] | None = None,
    kernel: str | None = None,
) -> tuple[IndexArray, IndexArray, ScoreArray]:
    """Every (query, candidate) pair scoring at least ``threshold``.

    Returns (query indices, candidate indices, scores) ordered by query ascending, score
    descending, candidate ascending; with ``top_k``, only the first ``top_k`` pairs of each
    query. ``threads`` > 1 splits the work across cores; the output does not depend on it.
    Results are produced in bounded chunks, so memory grows with the number of pairs
    returned, not with ``len(queries) * len(candidates)``.
    """
    threshold_value = _check_threshold(threshold)
    top_k_value = _check_top_k(top_k)
    thread_count = _check_threads(threads)
    kernel_id = _kernel_id(kernel)
    query_array = _check_filters(queries, "queries")
    candidate_array = _check_filters(candidates, "candidates", query_array.shape[1])
    return _search(
        query_array,
        _check_popcounts(query_popcounts, "query_popcounts", query_array, kernel_id),
        candidate_array,
        _check_popcounts(candidate_popcounts, "candidate_popcounts", candidate_array, kernel_id),
        threshold_value,
        top_k_value,
        thread_count,
        kernel_id,
    )


def dice_pairs(
    left: NDArray[np.uint64],
    right: NDArray[np.uint64],
    left_idx: NDArray[np.integer[Any]],
    right_idx: NDArray[np.integer[Any]],
    *,
    threads: int = 1,
    left_popcounts: NDArray[np.uint32] | None = None,
    right_popcounts: NDArray[np.uint32] | None = None,
    kernel: str | None = None,
) -> ScoreArray:
    """Dice of explicit pairs: ``scores[k] = Dice(left[left_idx[k]], right[right_idx[k]])``.

    The workhorse of blocked linkage. Indices may be any integer dtype; an index outside its
    batch raises ``FilterFormatError`` naming ``left_idx`` or ``right_idx``.
    """
    thread_count = _check_threads(threads)
    kernel_id = _kernel_id(kernel)
    left_array = _check_filters(left, "left")
    right_array = _check_filters(right, "right", left_array.shape[1])
    left_indices = _check_indices(left_idx, "left_idx")
    right_indices = _check_indices(right_idx, "right_idx")
    if left_indices.shape != right_indices.shape:
        raise FilterFormatError(
            f"right_idx: expected shape {left_indices.shape} like left_idx, "
            f"got {right_indices.shape}"
        )
    left_counts = _check_popcounts(left_popcounts, "left_popcounts", left_array, kernel_id)
    right_counts = _check_popcounts(right_popcounts, "right_popcounts", right_array, kernel_id)
    pair_total = left_indices.shape[0]
    scores = np.empty(pair_total, dtype=np.float64)
    part_count = max(1, min(thread_count, pair_total // _MIN_PAIRS_PER_THREAD))
    bounds = np.linspace(0, pair_total, part_count + 1).astype(np.int64)

    def make_task(start: int, stop: int) -> Callable[[], None]:
        def task() -> None:
            _kernel.pairs(
                left_array,
                left_counts,
                right_array,
                right_counts,
                left_indices,
                right_indices,
                start,
                stop,
                scores[start:stop],
                kernel_id,
            )

        return task

    tasks = [make_task(int(bounds[i]), int(bounds[i + 1])) for i in range(part_count)]
    try:
        _run_tasks(tasks, thread_count)
    except (IndexError, TypeError, ValueError) as error:
        raise FilterFormatError(str(error)) from error
    return scores


# ------------------------------------------------------------------------------ references


def _filter_as_int(filter_words: NDArray[np.uint64]) -> int:
    """A filter as one Python int: bit i of the int is bit i of the filter."""
    return int.from_bytes(np.asarray(filter_words, dtype="<u8").tobytes(), "little")


def dice_reference(a: NDArray[np.uint64], b: NDArray[np.uint64]) -> float:
    """Plain-Python Dice of two (words,) filters; the definition the fast kernel must match."""
    if np.shape(a) != np.shape(b):
        raise FilterFormatError("b: expected the same shape as a")
    a_bits, b_bits = _filter_as_int(a), _filter_as_int(b)
    denominator = a_bits.bit_count() + b_bits.bit_count()
    if denominator == 0:
        return 0.0
    return 2 * (a_bits & b_bits).bit_count() / denominator


def dice_pairs_reference(
    left: NDArray[np.uint64],
    right: NDArray[np.uint64],
    left_idx: NDArray[np.integer[Any]],
    right_idx: NDArray[np.integer[Any]],
) -> ScoreArray:
    """Plain-Python ``dice_pairs``."""
    return np.array(
        [
            dice_reference(left[int(i)], right[int(j)])
            for i, j in zip(left_idx, right_idx, strict=True)
        ],
        dtype=np.float64,
    )


def dice_one_to_many_reference(
    query: NDArray[np.uint64],
    candidates: NDArray[np.uint64],
    *,
    threshold: float = 0.0,
    top_k: int | None = None,
) -> tuple[IndexArray, ScoreArray]:
    """Plain-Python ``dice_one_to_many``: score everything, filter, sort, cut."""
    scored = [(dice_reference(query, candidate), i) for i, candidate in enumerate(candidates)]
    kept = sorted(((-score, i) for score, i in scored if score >= threshold))
    if top_k is not None:
        kept = kept[:top_k]
    return (
        np.array([i for _, i in kept], dtype=np.int64),
        np.array([-negated for negated, _ in kept], dtype=np.float64),
    )


def dice_many_to_many_reference(
    queries: NDArray[np.uint64],
    candidates: NDArray[np.uint64],
    *,
    threshold: float,
    top_k: int | None = None,
) -> tuple[IndexArray, IndexArray, ScoreArray]:
    """Plain-Python ``dice_many_to_many``: ``dice_one_to_many_reference`` per query."""
    query_idx: list[int] = []
    cand_idx: list[int] = []
    scores: list[float] = []
    for q, query in enumerate(queries):
        indices, query_scores = dice_one_to_many_reference(
            query, candidates, threshold=threshold, top_k=top_k
        )
        query_idx.extend([q] * len(indices))
        cand_idx.extend(int(i) for i in indices)
        scores.extend(float(s) for s in query_scores)
    return (
        np.array(query_idx, dtype=np.int64),
        np.array(cand_idx, dtype=np.int64),
        np.array(scores, dtype=np.float64),
    )
