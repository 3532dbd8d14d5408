"""Evaluation of linkage against ground truth: pairs, blocking and clusters.

Role in the pipeline: the last stage, used by tests and ``benchmarks/`` on synthetic data whose
true links are known. Everything is computed with vectorised set operations on pair keys.

- :func:`pair_keys` encodes a pair (i, j) of record indices below ``n`` as the int64 ``i * n + j``
  so that pair sets can be compared with ``np.isin`` / ``np.intersect1d``.
- :func:`pairwise_quality` - precision, recall and F1 of predicted pairs. By default pairs are
  unordered (deduplication: (i, j) and (j, i) are the same pair, normalised to i < j, and a
  self-pair is an error); with ``ordered=True`` they are (left, right) across two datasets and
  i == j is an ordinary pair.
- :func:`blocking_quality` - pair completeness (share of true pairs among the candidates) and
  reduction ratio (1 - candidates / all possible pairs).
- :func:`cluster_quality` - B-cubed precision / recall / F1 over records, and the share of true
  clusters reproduced exactly.

Conventions: duplicate pairs count once. A ratio whose denominator is zero is 0.0 (the
"zero_division=0" convention): precision is 0.0 when nothing is predicted, recall and pair
completeness are 0.0 when there are no true pairs, F1 is 0.0 when precision + recall is 0.

All results are frozen dataclasses with ``as_dict()``. Malformed inputs raise
:class:`linkage.errors.ModelError`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.errors import ModelError
from linkage.solve import pairs_from_labels

__all__ = [
    "BlockingQuality",
    "ClusterQuality",
    "PairQuality",
    "blocking_quality",
    "cluster_quality",
    "pair_keys",
    "pairwise_quality",
]

_MAX_KEY_BASE = 3_037_000_499  # floor(sqrt(2**63 - 1)): i * n + j must fit in int64


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def _f1(precision: float, recall: float) -> float:
    return _ratio(2.0 * precision * recall, precision + recall)


def _index_array(name: str, values: NDArray[Any]) -> NDArray[np.int64]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ModelError(f"{name} must be 1-D, got {array.ndim}-D")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ModelError(f"{name} must hold integers, got dtype {array.dtype}")
    result = array.astype(np.int64, copy=False)
    if result.size and result.min() < 0:
        raise ModelError(f"{name} must hold non-negative indices")
    return result


def pair_keys(i: NDArray[Any], j: NDArray[Any], n: int) -> NDArray[np.int64]:
    """Encode pairs as int64 keys ``i * n + j``; every index must be below ``n``."""
    first = _index_array("i", i)
    second = _index_array("j", j)
    if first.shape != second.shape:
        raise ModelError(f"i has {first.shape[0]} entries but j has {second.shape[0]}")
    if not 0 < n <= _MAX_KEY_BASE:
        raise ModelError(f"n must lie in 1..{_MAX_KEY_BASE} so that keys fit in int64")
    if first.size and max(int(first.max()), int(second.max())) >= n:
        raise ModelError(f"pair indices must be below n={n}")
    keys: NDArray[np.int64] = first * np.int64(n) + second
    return keys


def _pair_key_sets(
    pair_sets: list[tuple[str, NDArray[Any], NDArray[Any]]], *, ordered: bool
) -> list[NDArray[np.int64]]:
    """Unique sorted keys for each (name, i, j) set, with one shared key base."""
    arrays: list[tuple[NDArray[np.int64], NDArray[np.int64]]] = []
    for name, first_values, second_values in pair_sets:
        first = _index_array(f"{name} i", first_values)
        second = _index_array(f"{name} j", second_values)
        if first.shape != second.shape:
            raise ModelError(f"{name}: i has {first.shape[0]} entries but j has {second.shape[0]}")
        if not ordered:
            if np.any(first == second):
                raise ModelError(f"{name}: unordered pairs must join two different records")
            first, second = np.minimum(first, second), np.maximum(first, second)
        arrays.append((first, second))
    base = 1 + max((int(max(a.max(), b.max())) for a, b in arrays if a.size), default=0)
    return [np.unique(pair_keys(first, second, base)) for first, second in arrays]


@dataclass(frozen=True)
class PairQuality:
    """Pairwise precision, recall and F1 with the counts behind them."""

    precision: float
    recall: float
    f1: float
    true_positives: int
    false_positives: int
    false_negatives: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pairwise_quality(
    predicted_i: NDArray[Any],
    predicted_j: NDArray[Any],
    true_i: NDArray[Any],
    true_j: NDArray[Any],
    *,
    ordered: bool = False,
) -> PairQuality:
    """Compare predicted pairs with true pairs (unordered unless ``ordered``; module docstring)."""
    predicted, truth = _pair_key_sets(
        [("predicted", predicted_i, predicted_j), ("true", true_i, true_j)], ordered=ordered
    )
    true_positives = int(np.intersect1d(predicted, truth, assume_unique=True).size)
    false_positives = int(predicted.size) - true_positives
    false_negatives = int(truth.size) - true_positives
    precision = _ratio(true_positives, predicted.size)
    recall = _ratio(true_positives, truth.size)
    return PairQuality(
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        true_positives=true_positives,
        false_positives=false_positives,
        false_negatives=false_negatives,
    )


@dataclass(frozen=True)
class BlockingQuality:
    """How well blocking kept the true pairs and how much comparison work it saved."""

    pair_completeness: float
    reduction_ratio: float
    candidate_pairs: int
    true_pairs: int
    true_pairs_found: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def blocking_quality(
    candidate_i: NDArray[Any],
    candidate_j: NDArray[Any],
    true_i: NDArray[Any],
    true_j: NDArray[Any],
    n_total_pairs: int,
    *,
    ordered: bool = False,
) -> BlockingQuality:
    """Pair completeness and reduction ratio of a candidate pair set.

    ``n_total_pairs`` is the number of pairs without blocking: n * (n - 1) / 2 for
    deduplication of n records, n_left * n_right for two datasets.
    """
    if n_total_pairs <= 0:
        raise ModelError("n_total_pairs must be positive")
    candidates, truth = _pair_key_sets(
        [("candidate", candidate_i, candidate_j), ("true", true_i, true_j)], ordered=ordered
    )
    if candidates.size > n_total_pairs:
        raise ModelError("more distinct candidate pairs than n_total_pairs")
    found = int(np.intersect1d(candidates, truth, assume_unique=True).size)
    return BlockingQuality(
        pair_completeness=_ratio(found, truth.size),
        reduction_ratio=1.0 - candidates.size / n_total_pairs,
        candidate_pairs=int(candidates.size),
        true_pairs=int(truth.size),
        true_pairs_found=found,
    )


@dataclass(frozen=True)
class ClusterQuality:
    """B-cubed measures over records and exact reproduction of true clusters."""

    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float
    exact_cluster_share: float
    """Share of true clusters that appear, with exactly the same records, among the predicted."""
    predicted_clusters: int
    true_clusters: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cluster_quality(predicted_labels: NDArray[Any], true_labels: NDArray[Any]) -> ClusterQuality:
    """B-cubed precision/recall/F1 and exact-cluster share of a clustering against the truth.

    For record r with predicted cluster C(r) and true cluster T(r): precision(r) =
    |C(r) ∩ T(r)| / |C(r)|, recall(r) = |C(r) ∩ T(r)| / |T(r)|, each averaged over records;
    F1 is their harmonic mean. Labels may be any values; only equality matters.
    """
    predicted = np.asarray(predicted_labels)
    truth = np.asarray(true_labels)
    if predicted.ndim != 1 or truth.shape != predicted.shape:
        raise ModelError(
            f"label arrays must be 1-D and equally long, got {predicted.shape} and {truth.shape}"
        )
    n_records = predicted.shape[0]
    if n_records == 0:
        raise ModelError("cluster_quality needs at least one record")
    _, predicted_codes, predicted_sizes = np.unique(
        predicted, return_inverse=True, return_counts=True
    )
    _, true_codes, true_sizes = np.unique(truth, return_inverse=True, return_counts=True)
    predicted_codes = predicted_codes.reshape(n_records).astype(np.int64)
    true_codes = true_codes.reshape(n_records).astype(np.int64)
    cells, cell_sizes = np.unique(
        predicted_codes * np.int64(true_sizes.size) + true_codes, return_counts=True
    )
    cell_predicted = cells // true_sizes.size
    cell_true = cells % true_sizes.size
    overlap_squared = cell_sizes.astype(np.float64) ** 2
    precision = float(np.sum(overlap_squared / predicted_sizes[cell_predicted])) / n_records
    recall = float(np.sum(overlap_squared / true_sizes[cell_true])) / n_records
    exact = (cell_sizes == predicted_sizes[cell_predicted]) & (cell_sizes == true_sizes[cell_true])
    return ClusterQuality(
        bcubed_precision=precision,
        bcubed_recall=recall,
        bcubed_f1=_f1(precision, recall),
        exact_cluster_share=int(np.count_nonzero(exact)) / int(true_sizes.size),
        predicted_clusters=int(predicted_sizes.size),
        true_clusters=int(true_sizes.size),
    )


def true_pairs_from_entities(entity: NDArray[Any]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every pair i < j of records that carry the same ground-truth entity id (vectorised)."""
    ids = np.asarray(entity)
    uniq, inverse = np.unique(ids, return_inverse=True)
    first_index = np.full(uniq.size, ids.size, dtype=np.int64)
    np.minimum.at(first_index, inverse, np.arange(ids.size, dtype=np.int64))
    return pairs_from_labels(first_index[inverse])
