"""Ranking and one-to-one assignment: decisions on scored pairs where no record repeats.

Contract: :func:`rank_candidates` orders a lookup's candidates best first above a threshold;
:func:`one_to_one` assigns greedily best first so that no record is used twice, in vectorised
"mutual best" rounds, identical to the plain loop :func:`one_to_one_reference`;
:func:`pairs_from_labels` lists every within-cluster pair. Ties break on the smaller index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.errors import ModelError, as_float_array


def _as_index_array(name: str, values: NDArray[Any]) -> NDArray[np.int64]:
    """A 1-D int64 array of non-negative indices, or ModelError."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ModelError(f"{name} must be 1-D, got {array.ndim}-D")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ModelError(f"{name} must hold integers, got dtype {array.dtype}")
    result = array.astype(np.int64, copy=False)
    if result.size and result.min() < 0:
        raise ModelError(f"{name} must hold non-negative indices")
    return result


def _as_score_array(name: str, values: NDArray[Any], expected_length: int) -> NDArray[np.float64]:
    """A 1-D finite float64 array of the expected length, or ModelError."""
    array = as_float_array(values, name)
    if array.ndim != 1 or array.shape[0] != expected_length:
        raise ModelError(f"{name} must be 1-D with {expected_length} entries, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ModelError(f"{name} must be finite (no NaN or infinity)")
    return array


# --------------------------------------------------------------------------------------------
# Ranking (lookup)
# --------------------------------------------------------------------------------------------


def rank_candidates(
    candidate_idx: NDArray[Any],
    probabilities: NDArray[Any],
    *,
    threshold: float = 0.5,
    top_k: int | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Candidates with probability >= threshold, by probability descending then index ascending.

    Returns (indices, probabilities), at most ``top_k`` of them when given.
    """
    indices = _as_index_array("candidate_idx", candidate_idx)
    scores = _as_score_array("probabilities", probabilities, indices.shape[0])
    if top_k is not None and top_k < 0:
        raise ModelError("top_k must be non-negative")
    keep = np.flatnonzero(scores >= threshold)
    order = keep[np.lexsort((indices[keep], -scores[keep]))]
    if top_k is not None:
        order = order[:top_k]
    return indices[order], scores[order]


# --------------------------------------------------------------------------------------------
# One-to-one assignment (two-dataset linkage)
# --------------------------------------------------------------------------------------------


def _best_first_order(
    left: NDArray[np.int64], right: NDArray[np.int64], scores: NDArray[np.float64], threshold: float
) -> NDArray[np.intp]:
    """Positions of pairs with score >= threshold, by score desc, then left asc, then right asc."""
    keep = np.flatnonzero(scores >= threshold)
    order: NDArray[np.intp] = keep[np.lexsort((right[keep], left[keep], -scores[keep]))]
    return order


def _check_pairs(
    left_idx: NDArray[Any], right_idx: NDArray[Any], scores: NDArray[Any]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    left = _as_index_array("left_idx", left_idx)
    right = _as_index_array("right_idx", right_idx)
    if right.shape != left.shape:
        raise ModelError(f"left_idx has {left.shape[0]} pairs but right_idx has {right.shape[0]}")
    return left, right, _as_score_array("scores", scores, left.shape[0])


def one_to_one_reference(
    left_idx: NDArray[Any], right_idx: NDArray[Any], scores: NDArray[Any], *, threshold: float
) -> NDArray[np.bool_]:
    """Plain-loop greedy best-first assignment; the reference for :func:`one_to_one`."""
    left, right, score_array = _check_pairs(left_idx, right_idx, scores)
    kept = np.zeros(left.shape[0], dtype=np.bool_)
    used_left: set[int] = set()
    used_right: set[int] = set()
    for position in _best_first_order(left, right, score_array, threshold).tolist():
        left_record, right_record = int(left[position]), int(right[position])
        if left_record in used_left or right_record in used_right:
            continue
        used_left.add(left_record)
        used_right.add(right_record)
        kept[position] = True
    return kept


def one_to_one(
    left_idx: NDArray[Any], right_idx: NDArray[Any], scores: NDArray[Any], *, threshold: float
) -> NDArray[np.bool_]:
    """Greedy best-first one-to-one assignment; returns the mask of kept pairs.

    Pairs at or above ``threshold`` are considered in the order score desc, left asc, right asc;
    a pair is kept when neither record is already used. Computed in vectorised rounds: in each
    round every remaining pair that comes first in that order among the remaining pairs of both
    its records ("mutual best") is kept - greedy would keep exactly these, since nothing before
    them can take their records - and every remaining pair touching a kept record is dropped.
    When a round keeps few pairs (long chains of nested preferences), the rest is finished by
    the plain greedy loop, which continues from the same state and so gives the same answer.
    """
    left, right, score_array = _check_pairs(left_idx, right_idx, scores)
    kept = np.zeros(left.shape[0], dtype=np.bool_)
    order = _best_first_order(left, right, score_array, threshold)
    if order.size == 0:
        return kept
    # Compact record ids to 0..n-1 so that "used" flags are plain boolean arrays.
    _, left_ids = np.unique(left[order], return_inverse=True)
    _, right_ids = np.unique(right[order], return_inverse=True)
    used_left = np.zeros(int(left_ids.max()) + 1, dtype=np.bool_)
    used_right = np.zeros(int(right_ids.max()) + 1, dtype=np.bool_)
    alive = np.arange(order.size)  # positions in `order`, ascending = best first
    while alive.size:
        alive_left, alive_right = left_ids[alive], right_ids[alive]
        best_of_left = np.full(used_left.shape, order.size, dtype=np.int64)
        best_of_right = np.full(used_right.shape, order.size, dtype=np.int64)
        np.minimum.at(best_of_left, alive_left, alive)
        np.minimum.at(best_of_right, alive_right, alive)
        mutual = (best_of_left[alive_left] == alive) & (best_of_right[alive_right] == alive)
        winners = alive[mutual]
        kept[order[winners]] = True
        used_left[left_ids[winners]] = True
        used_right[right_ids[winners]] = True
        alive = alive[~(used_left[alive_left] | used_right[alive_right])]
        if winners.size * 64 < alive.size:  # slow progress: finish with the plain loop
            for position in alive.tolist():
                left_record, right_record = left_ids[position], right_ids[position]
                if used_left[left_record] or used_right[right_record]:
                    continue
                used_left[left_record] = True
                used_right[right_record] = True
                kept[order[position]] = True
            break
    return kept


def pairs_from_labels(labels: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every within-cluster pair (i, j) with i < j, sorted by i then j."""
    label_array = np.asarray(labels)
    if label_array.ndim != 1:
        raise ModelError(f"labels must be 1-D, got {label_array.ndim}-D")
    n_records = label_array.shape[0]
    if n_records == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    members = np.argsort(label_array, kind="stable").astype(np.int64)  # by label, then index
    sorted_labels = label_array[members]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    ends = np.r_[starts[1:], n_records]
    cluster_end = np.repeat(ends, ends - starts)
    positions = np.arange(n_records, dtype=np.int64)
    partners = cluster_end - 1 - positions  # later members of the same cluster
    first_positions = np.repeat(positions, partners)
    offsets = np.arange(first_positions.size, dtype=np.int64) - np.repeat(
        np.cumsum(partners) - partners, partners
    )
    first = members[first_positions]
    second = members[first_positions + 1 + offsets]
    order = np.lexsort((second, first))
    return first[order], second[order]
