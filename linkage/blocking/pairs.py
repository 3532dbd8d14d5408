"""Candidate pairs from block keys, vectorised: no Python loop over blocks or records.

Contract: :func:`candidate_pairs_link` and :func:`candidate_pairs_dedupe` expand every block
of every rule in one go and merge the rules' pairs, unique and sorted; oversized blocks are
skipped whole and counted, large deduplication blocks pruned with a :class:`BlockPruning`;
:func:`count_block_pairs_link` and :func:`count_block_pairs_dedupe` count without expanding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import similarity
from linkage.errors import IncompatibleEncodingError, JigsawError

IndexArray = NDArray[np.int64]
KeyArray = NDArray[np.uint64]

_MAX_PAIR_CODE = (1 << 63) - 1


@dataclass(frozen=True, eq=False)
class CandidatePairs:
    """Candidate pairs, unique and sorted by ``(left, right)``.

    ``left`` and ``right`` are ``int64`` row indices of equal length, made read-only.
    ``skipped_blocks`` holds, per rule (in column order), the number of blocks skipped for
    exceeding ``max_block_size``. ``largest_block`` is the largest pair count of any block,
    skipped or not (0 if none). Equality is identity (``eq=False``): comparing arrays
    field by field has no single truth value; compare ``left`` and ``right`` explicitly.
    """

    left: IndexArray
    right: IndexArray
    skipped_blocks: tuple[int, ...]
    largest_block: int

    def __post_init__(self) -> None:
        if self.left.shape != self.right.shape or self.left.ndim != 1:
            raise JigsawError("left and right must be one-dimensional arrays of equal length")
        self.left.flags.writeable = False
        self.right.flags.writeable = False

    def __len__(self) -> int:
        return int(self.left.shape[0])


@dataclass(frozen=True)
class BlockCounts:
    """Pair counts of a blocking, computed without materialising the pairs.

    ``pairs_per_rule`` is, per rule, the number of pairs the rule emits after skipping
    oversized blocks. Pairs found by several rules are counted once per rule, so
    ``pairs_upper_bound`` (their sum) is an upper bound on the distinct candidate pairs and is
    exact for a single rule. ``skipped_blocks`` and ``largest_block`` mean the same as in
    :class:`CandidatePairs`.
    """

    pairs_per_rule: tuple[int, ...]
    skipped_blocks: tuple[int, ...]
    largest_block: int

    @property
    def pairs_upper_bound(self) -> int:
        return sum(self.pairs_per_rule)


# ----------------------------------------------------------------------------------------------
# validation


def _check_keys(keys: Any, name: str) -> KeyArray:
    if not isinstance(keys, np.ndarray):
        raise JigsawError(f"{name} must be a numpy array of dtype uint64")
    if keys.dtype != np.uint64:
        raise JigsawError(f"{name} must have dtype uint64, got {keys.dtype}")
    if keys.ndim != 2:
        raise JigsawError(f"{name} must have shape (n_records, n_rules), got {keys.ndim} dims")
    return keys


def _check_max_block_size(max_block_size: int | None) -> None:
    if max_block_size is None:
        return
    if isinstance(max_block_size, bool) or not isinstance(max_block_size, int | np.integer):
        raise JigsawError("max_block_size must be an integer or None")
    if max_block_size < 1:
        raise JigsawError("max_block_size must be at least 1")


def _check_pair_code_range(n_left: int, n_right: int) -> None:
    if n_left * max(n_right, 1) > _MAX_PAIR_CODE:
        raise JigsawError("too many records: n_left * n_right must fit in a signed 64-bit int")


def _check_link_keys(left_keys: Any, right_keys: Any) -> tuple[KeyArray, KeyArray]:
    left = _check_keys(left_keys, "left_keys")
    right = _check_keys(right_keys, "right_keys")
    if left.shape[1] != right.shape[1]:
        raise IncompatibleEncodingError(
            f"left_keys has {left.shape[1]} blocking rules but right_keys has {right.shape[1]}"
        )
    _check_pair_code_range(left.shape[0], right.shape[0])
    return left, right


# ----------------------------------------------------------------------------------------------
# per-rule block statistics (shared by the pair and the count functions)


def _exclusive_cumsum(counts: IndexArray) -> IndexArray:
    ends = np.cumsum(counts, dtype=np.int64)
    return ends - counts


def _link_block_stats(
    left_column: KeyArray, right_sorted: KeyArray
) -> tuple[KeyArray, IndexArray, IndexArray, IndexArray]:
    """Per distinct left key: the key, its inverse map, and left/right record counts.

    Returns ``(block_keys, inverse, left_counts, right_counts)`` where ``inverse`` maps each
    left record to its index in ``block_keys``. ``right_sorted`` must hold the sorted right
    keys *without* zeros (see :func:`_sorted_nonzero`), so left key 0 finds no right records
    and its block has 0 pairs.
    """
    block_keys, inverse, left_counts = np.unique(
        left_column, return_inverse=True, return_counts=True
    )
    right_counts = np.searchsorted(right_sorted, block_keys, side="right") - np.searchsorted(
        right_sorted, block_keys, side="left"
    )
    return (
        block_keys,
        inverse.astype(np.int64),
        left_counts.astype(np.int64),
        right_counts.astype(np.int64),
    )


def _sorted_nonzero(column: KeyArray) -> tuple[IndexArray, KeyArray]:
    """Stable sort order of a key column with the zero keys (which sort first) removed."""
    order = np.argsort(column, kind="stable").astype(np.int64)
    ordered = column[order]
    first_nonzero = int(np.searchsorted(ordered, np.uint64(0), side="right"))
    return order[first_nonzero:], ordered[first_nonzero:]


def _dedupe_block_stats(column: KeyArray) -> tuple[IndexArray, KeyArray, IndexArray, IndexArray]:
    """Sorted order of a column and, per sorted position, its block's start and end positions.

    Zero keys are included in the order but their block end equals their own position + 1,
    so they have no partners.
    """
    order = np.argsort(column, kind="stable").astype(np.int64)
    ordered = column[order]
    n = ordered.shape[0]
    is_start = np.empty(n, dtype=bool)
    if n:
        is_start[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start).astype(np.int64)
    lengths = np.diff(np.append(starts, n)).astype(np.int64)
    return order, ordered, starts, lengths


def _skip_summary(
    block_pairs: IndexArray, max_block_size: int | None
) -> tuple[NDArray[np.bool_], int, int]:
    """Which blocks are oversized, how many, and the largest block's pair count."""
    largest = int(block_pairs.max()) if block_pairs.size else 0
    if max_block_size is None:
        return np.zeros(block_pairs.shape, dtype=bool), 0, largest
    oversized = block_pairs > max_block_size
    return oversized, int(np.count_nonzero(oversized)), largest


# ----------------------------------------------------------------------------------------------
# fast pair generation


def _link_rule_codes(
    left_column: KeyArray, right_column: KeyArray, n_right: int, max_block_size: int | None
) -> tuple[IndexArray, int, int]:
    right_order, right_sorted = _sorted_nonzero(right_column)
    _, inverse, left_counts, right_counts = _link_block_stats(left_column, right_sorted)
    oversized, skipped, largest = _skip_summary(left_counts * right_counts, max_block_size)
    # Per left record (in index order): where its block starts in the sorted right keys, and
    # how many right records it pairs with.
    starts = np.searchsorted(right_sorted, left_column, side="left").astype(np.int64)
    counts = right_counts[inverse]
    if skipped:
        counts = np.where(oversized[inverse], 0, counts)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64), skipped, largest
    positions = np.repeat(starts - _exclusive_cumsum(counts), counts)
    positions += np.arange(total, dtype=np.int64)
    codes = right_order[positions]
    codes += np.repeat(np.arange(left_column.shape[0], dtype=np.int64) * n_right, counts)
    return codes, skipped, largest


def _large_block_codes(
    order: IndexArray,
    starts: IndexArray,
    lengths: IndexArray,
    pruned: NDArray[np.bool_],
    pruning: BlockPruning,
) -> IndexArray:
    """Pair codes of the pruned blocks: each record with its nearest block members.

    Per pruned block (only blocks above ``pruning.large_block`` records are visited, so the
    loop is short): the Dice of every member pair by the popcount kernel, in row chunks of at
    most :data:`_PRUNE_CHUNK_CELLS` cells; each row stably sorted by descending Dice (ties: the
    lower record index first, as block members are in index order); the first ``neighbours``
    other members kept. Codes ``min * n + max``, sorted and unique.
    """
    filters = pruning.filters
    n = filters.shape[0]
    runs: list[IndexArray] = []
    for start, length in zip(starts[pruned].tolist(), lengths[pruned].tolist(), strict=True):
        members = order[start : start + length]
        block = np.ascontiguousarray(filters[members])
        keep = min(pruning.neighbours, length - 1)
        step = max(1, _PRUNE_CHUNK_CELLS // length)
        columns = np.arange(length, dtype=np.int64)
        for row_start in range(0, length, step):
            rows = np.arange(row_start, min(row_start + step, length), dtype=np.int64)
            dice = similarity.dice_pairs(
                block, block, np.repeat(rows, length), np.tile(columns, rows.shape[0])
            ).reshape(rows.shape[0], length)
            dice[np.arange(rows.shape[0]), rows] = -1.0  # never a record with itself
            nearest = np.argsort(-dice, axis=1, kind="stable")[:, :keep]
            a = np.repeat(members[rows], keep)
            b = members[nearest.ravel()]
            runs.append(np.minimum(a, b) * n + np.maximum(a, b))
    if not runs:
        return np.empty(0, dtype=np.int64)
    return np.unique(np.concatenate(runs))


#: Dice cells (pairs) computed at once per pruned block in :func:`_large_block_codes`.
_PRUNE_CHUNK_CELLS = 1 << 21


def _dedupe_rule_codes(
    column: KeyArray, max_block_size: int | None, pruning: BlockPruning | None = None
) -> tuple[IndexArray, int, int]:
    n = column.shape[0]
    order, ordered, starts, lengths = _dedupe_block_stats(column)
    block_pairs = lengths * (lengths - 1) // 2
    block_pairs[ordered[starts] == 0] = 0
    oversized, skipped, largest = _skip_summary(block_pairs, max_block_size)
    pruned_codes: IndexArray | None = None
    if pruning is not None:
        pruned = (lengths > pruning.large_block) & (ordered[starts] != 0)
        if pruned.any():
            pruned_codes = _large_block_codes(order, starts, lengths, pruned, pruning)
            skipped -= int(np.count_nonzero(oversized & pruned))
            oversized = oversized | pruned  # not expanded in full below
    codes, skipped, largest = _expand_dedupe(
        n, order, ordered, starts, lengths, oversized, skipped, largest
    )
    if pruned_codes is not None and pruned_codes.size:
        codes = _merge_codes([codes, pruned_codes])
    return codes, skipped, largest


def _expand_dedupe(
    n: int,
    order: IndexArray,
    ordered: KeyArray,
    starts: IndexArray,
    lengths: IndexArray,
    oversized: NDArray[np.bool_],
    skipped: int,
    largest: int,
) -> tuple[IndexArray, int, int]:
    """Every pair of every block not ``oversized``, as sorted ``left * n + right`` codes."""
    # Per sorted position s: partners are the sorted positions s+1 .. block_end-1.
    block_ends = np.repeat(starts + lengths, lengths)
    sorted_positions = np.arange(n, dtype=np.int64)
    partner_counts = block_ends - sorted_positions - 1
    excluded = np.repeat((ordered[starts] == 0) | oversized, lengths)
    partner_counts[excluded] = 0
    # Visit records in index order so the pairs come out sorted by (left, right).
    position_of = np.empty(n, dtype=np.int64)
    position_of[order] = sorted_positions
    counts = partner_counts[position_of]
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64), skipped, largest
    positions = np.repeat(position_of + 1 - _exclusive_cumsum(counts), counts)
    positions += np.arange(total, dtype=np.int64)
    codes = order[positions]
    codes += np.repeat(np.arange(n, dtype=np.int64) * n, counts)
    return codes, skipped, largest


def _merge_codes(runs: list[IndexArray]) -> IndexArray:
    """Merge per-rule sorted, unique pair codes into one sorted, unique array."""
    if not runs:
        return np.empty(0, dtype=np.int64)
    if len(runs) == 1:
        return runs[0]
    merged = np.sort(np.concatenate(runs), kind="stable")
    if merged.size == 0:
        return merged
    keep = np.empty(merged.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(merged[1:], merged[:-1], out=keep[1:])
    return merged[keep]


def _pairs_from_codes(
    codes: IndexArray, width: int, skipped: list[int], largest: int
) -> CandidatePairs:
    if codes.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return CandidatePairs(empty, empty.copy(), tuple(skipped), largest)
    left = codes // width
    right = codes - left * width
    return CandidatePairs(left, right, tuple(skipped), largest)


def candidate_pairs_link(
    left_keys: KeyArray, right_keys: KeyArray, *, max_block_size: int | None = None
) -> CandidatePairs:
    """Every ``(i, j)`` with ``left_keys[i, r] == right_keys[j, r] != 0`` for some rule ``r``.

    Pairs are unique across rules and sorted by ``(i, j)``. Blocks whose pair count
    (left count x right count) exceeds ``max_block_size`` are skipped and counted;
    ``largest_block`` is the largest pair count among all blocks, skipped or not, so a caller
    can see how far over the limit the data went.

    How (per rule): the right-hand keys are sorted once (stable argsort, zeros dropped). Every
    left record finds its block in the sorted right keys with two ``searchsorted`` calls,
    giving a start and a count. The cartesian product of every block is expanded in one go:
    ``np.repeat`` of the left index by its count, plus ``np.repeat(start -
    exclusive_cumsum(count), count) + arange(total)`` for the right positions. Left records
    are visited in index order and a stable sort keeps equal keys in index order, so each
    rule's pairs come out sorted by ``(left, right)``. Pairs of all rules are encoded as
    ``left * n_right + right``, merged with a stable sort (timsort merges the sorted runs) and
    deduplicated with one comparison.
    """
    left, right = _check_link_keys(left_keys, right_keys)
    _check_max_block_size(max_block_size)
    n_right = right.shape[0]
    runs: list[IndexArray] = []
    skipped: list[int] = []
    largest = 0
    for rule in range(left.shape[1]):
        codes, rule_skipped, rule_largest = _link_rule_codes(
            np.ascontiguousarray(left[:, rule]),
            np.ascontiguousarray(right[:, rule]),
            n_right,
            max_block_size,
        )
        runs.append(codes)
        skipped.append(rule_skipped)
        largest = max(largest, rule_largest)
    return _pairs_from_codes(_merge_codes(runs), n_right, skipped, largest)


@dataclass(frozen=True)
class BlockPruning:
    """Neighbourhood pruning of large deduplication blocks.

    ``filters`` are the records' packed record-level filters (row ``i`` = record ``i``);
    a block of more than ``large_block`` records contributes, for each member, only the pairs
    with its ``neighbours`` most Dice-similar members (from the block's Dice matrix, row by
    row; both directions kept): the sorted-neighbourhood idea applied inside a block. Small
    blocks are expanded in full.

    Why: blocks grow with the population ("same family-name code and birth year" holds a
    handful of children in a town and hundreds in a county), so their pairs grow with the
    square of the population while the true pairs grow linearly. Ranks, not a Dice cut-off,
    so it holds for hardened filters whose Dice values sit on another scale.
    """

    filters: NDArray[np.uint64]
    large_block: int = 64
    neighbours: int = 12

    def __post_init__(self) -> None:
        for name in ("large_block", "neighbours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise JigsawError(f"BlockPruning.{name} must be a positive integer")
        if not isinstance(self.filters, np.ndarray) or self.filters.dtype != np.uint64:
            raise JigsawError("BlockPruning.filters must be a uint64 array of packed filters")
        if self.filters.ndim != 2:
            raise JigsawError("BlockPruning.filters must have shape (records, words)")


def candidate_pairs_dedupe(
    keys: KeyArray, *, max_block_size: int | None = None, pruning: BlockPruning | None = None
) -> CandidatePairs:
    """Every ``(i, j)``, ``i < j``, with ``keys[i, r] == keys[j, r] != 0`` for some rule ``r``.

    Pairs are unique across rules and sorted by ``(i, j)``. Blocks of ``n`` records whose pair
    count ``n (n - 1) / 2`` exceeds ``max_block_size`` are skipped and counted. With
    ``pruning``, a block above ``pruning.large_block`` records is never skipped: it gives each
    member's nearest ``pruning.neighbours`` members instead of all its pairs.

    How: as :func:`candidate_pairs_link`, with the partner positions ``s + 1 .. block_end - 1``
    of each sorted position ``s``, which gives ``left < right`` by construction.
    """
    checked = _check_keys(keys, "keys")
    _check_max_block_size(max_block_size)
    if pruning is not None and pruning.filters.shape[0] != checked.shape[0]:
        raise JigsawError("BlockPruning.filters must have one row per record of keys")
    n = checked.shape[0]
    _check_pair_code_range(n, n)
    runs: list[IndexArray] = []
    skipped: list[int] = []
    largest = 0
    for rule in range(checked.shape[1]):
        codes, rule_skipped, rule_largest = _dedupe_rule_codes(
            np.ascontiguousarray(checked[:, rule]), max_block_size, pruning
        )
        runs.append(codes)
        skipped.append(rule_skipped)
        largest = max(largest, rule_largest)
    return _pairs_from_codes(_merge_codes(runs), n, skipped, largest)


def union_pairs(*pairs: CandidatePairs) -> CandidatePairs:
    """The union of several candidate-pair sets over the same records, sorted and unique.

    ``skipped_blocks`` is the concatenation of the inputs' per-rule tuples, in argument order
    (so the rules of the first input come first); ``largest_block`` is the maximum.
    """
    skipped: list[int] = []
    largest = 0
    width = 1
    for candidate in pairs:
        skipped.extend(candidate.skipped_blocks)
        largest = max(largest, candidate.largest_block)
        if candidate.right.size:
            width = max(width, int(candidate.right.max()) + 1)
    height = max((int(c.left.max()) + 1 for c in pairs if c.left.size), default=1)
    _check_pair_code_range(height, width)
    runs = [c.left * width + c.right for c in pairs if c.left.size]
    return _pairs_from_codes(_merge_codes(runs), width, skipped, largest)


# ----------------------------------------------------------------------------------------------
# cheap pre-counts


def count_block_pairs_link(
    left_keys: KeyArray, right_keys: KeyArray, *, max_block_size: int | None = None
) -> BlockCounts:
    """How many pairs :func:`candidate_pairs_link` would emit per rule, without emitting them."""
    left, right = _check_link_keys(left_keys, right_keys)
    _check_max_block_size(max_block_size)
    per_rule: list[int] = []
    skipped: list[int] = []
    largest = 0
    for rule in range(left.shape[1]):
        _, right_sorted = _sorted_nonzero(np.ascontiguousarray(right[:, rule]))
        _, _, left_counts, right_counts = _link_block_stats(
            np.ascontiguousarray(left[:, rule]), right_sorted
        )
        block_pairs = left_counts * right_counts
        oversized, rule_skipped, rule_largest = _skip_summary(block_pairs, max_block_size)
        per_rule.append(int(block_pairs[~oversized].sum()))
        skipped.append(rule_skipped)
        largest = max(largest, rule_largest)
    return BlockCounts(tuple(per_rule), tuple(skipped), largest)


def count_block_pairs_dedupe(keys: KeyArray, *, max_block_size: int | None = None) -> BlockCounts:
    """How many pairs :func:`candidate_pairs_dedupe` would emit per rule, without emitting them."""
    checked = _check_keys(keys, "keys")
    _check_max_block_size(max_block_size)
    per_rule: list[int] = []
    skipped: list[int] = []
    largest = 0
    for rule in range(checked.shape[1]):
        block_keys, lengths = np.unique(checked[:, rule], return_counts=True)
        lengths = lengths.astype(np.int64)
        block_pairs = lengths * (lengths - 1) // 2
        block_pairs[block_keys == 0] = 0
        oversized, rule_skipped, rule_largest = _skip_summary(block_pairs, max_block_size)
        per_rule.append(int(block_pairs[~oversized].sum()))
        skipped.append(rule_skipped)
        largest = max(largest, rule_largest)
    return BlockCounts(tuple(per_rule), tuple(skipped), largest)
