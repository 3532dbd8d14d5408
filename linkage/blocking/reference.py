"""Plain references for candidate pairs: a dictionary of blocks, a loop over its pairs.

Contract: :func:`candidate_pairs_link_reference` and :func:`candidate_pairs_dedupe_reference`
give exactly the pairs, skipped blocks and largest block of the fast functions (without
pruning); the tests hold the fast paths to them. Slow on purpose: obviously correct.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from linkage.blocking.pairs import (
    CandidatePairs,
    _check_keys,
    _check_link_keys,
    _check_max_block_size,
)

KeyArray = NDArray[np.uint64]

# ----------------------------------------------------------------------------------------------
# plain reference implementations (dicts and sets; for tests only, not for speed)


def _reference_blocks(column: KeyArray) -> dict[int, list[int]]:
    blocks: dict[int, list[int]] = {}
    for row, key in enumerate(column.tolist()):
        if key != 0:
            blocks.setdefault(key, []).append(row)
    return blocks


def _reference_result(
    found: set[tuple[int, int]], skipped: list[int], largest: int
) -> CandidatePairs:
    ordered = sorted(found)
    left = np.array([pair[0] for pair in ordered], dtype=np.int64)
    right = np.array([pair[1] for pair in ordered], dtype=np.int64)
    return CandidatePairs(left, right, tuple(skipped), largest)


def candidate_pairs_link_reference(
    left_keys: KeyArray, right_keys: KeyArray, *, max_block_size: int | None = None
) -> CandidatePairs:
    """Plain-Python equivalent of :func:`candidate_pairs_link` (same result, exactly)."""
    left, right = _check_link_keys(left_keys, right_keys)
    _check_max_block_size(max_block_size)
    found: set[tuple[int, int]] = set()
    skipped: list[int] = []
    largest = 0
    for rule in range(left.shape[1]):
        left_blocks = _reference_blocks(left[:, rule])
        right_blocks = _reference_blocks(right[:, rule])
        rule_skipped = 0
        for key, left_rows in left_blocks.items():
            right_rows = right_blocks.get(key, [])
            block_pairs = len(left_rows) * len(right_rows)
            largest = max(largest, block_pairs)
            if max_block_size is not None and block_pairs > max_block_size:
                rule_skipped += 1
                continue
            for i in left_rows:
                for j in right_rows:
                    found.add((i, j))
        skipped.append(rule_skipped)
    return _reference_result(found, skipped, largest)


def candidate_pairs_dedupe_reference(
    keys: KeyArray, *, max_block_size: int | None = None
) -> CandidatePairs:
    """Plain-Python equivalent of :func:`candidate_pairs_dedupe` (same result, exactly)."""
    checked = _check_keys(keys, "keys")
    _check_max_block_size(max_block_size)
    found: set[tuple[int, int]] = set()
    skipped: list[int] = []
    largest = 0
    for rule in range(checked.shape[1]):
        rule_skipped = 0
        for rows in _reference_blocks(checked[:, rule]).values():
            block_pairs = len(rows) * (len(rows) - 1) // 2
            largest = max(largest, block_pairs)
            if max_block_size is not None and block_pairs > max_block_size:
                rule_skipped += 1
                continue
            for position, i in enumerate(rows):
                for j in rows[position + 1 :]:
                    found.add((i, j))
        skipped.append(rule_skipped)
    return _reference_result(found, skipped, largest)
