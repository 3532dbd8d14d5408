"""Tests for linkage.evaluate: pair keys, pairwise, blocking and cluster quality."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from linkage.errors import ModelError
from linkage.evaluate import (
    BlockingQuality,
    ClusterQuality,
    PairQuality,
    blocking_quality,
    cluster_quality,
    pair_keys,
    pairwise_quality,
)

IndexArray = NDArray[np.int64]


def two(first: list[int], second: list[int]) -> tuple[IndexArray, IndexArray]:
    return np.array(first, dtype=np.int64), np.array(second, dtype=np.int64)


def four(
    a: list[int], b: list[int], c: list[int], d: list[int]
) -> tuple[IndexArray, IndexArray, IndexArray, IndexArray]:
    return (*two(a, b), *two(c, d))


def test_pair_keys() -> None:
    assert pair_keys(np.array([0, 2, 3]), np.array([1, 0, 3]), 4).tolist() == [1, 8, 15]
    with pytest.raises(ModelError, match="below n=4"):
        pair_keys(np.array([4]), np.array([0]), 4)
    with pytest.raises(ModelError, match="fit in int64"):
        pair_keys(np.array([0]), np.array([0]), 2**40)
    with pytest.raises(ModelError, match="non-negative"):
        pair_keys(np.array([-1]), np.array([0]), 4)
    with pytest.raises(ModelError, match="i has 2 entries but j has 1"):
        pair_keys(np.array([0, 1]), np.array([0]), 4)


def test_pairwise_quality_hand_checked_unordered() -> None:
    # Predicted {(0,1), (1,2), (3,4)} (with (1,0) and (2,1) as duplicates in other order);
    # true {(0,1), (2,1)->(1,2), (4,5), (5,6)}: TP 2, FP 1, FN 2.
    predicted_i, predicted_j, true_i, true_j = four(
        [0, 1, 2, 1, 3], [1, 0, 1, 2, 4], [0, 2, 4, 6], [1, 1, 5, 5]
    )
    quality = pairwise_quality(predicted_i, predicted_j, true_i, true_j)
    assert quality.as_dict() == pytest.approx(
        PairQuality(
            precision=2 / 3,
            recall=2 / 4,
            f1=4 / 7,
            true_positives=2,
            false_positives=1,
            false_negatives=2,
        ).as_dict()
    )
    assert quality.true_positives == 2


def test_pairwise_quality_ordered_keeps_direction() -> None:
    # Two datasets: (left 1, right 0) is not (left 0, right 1); (2, 2) is an ordinary pair.
    predicted_i, predicted_j, true_i, true_j = four([1, 2], [0, 2], [0, 2], [1, 2])
    ordered = pairwise_quality(predicted_i, predicted_j, true_i, true_j, ordered=True)
    assert (ordered.true_positives, ordered.false_positives, ordered.false_negatives) == (1, 1, 1)
    assert ordered.precision == 0.5
    with pytest.raises(ModelError, match="two different records"):
        pairwise_quality(predicted_i, predicted_j, true_i, true_j)


def test_pairwise_quality_empty_conventions() -> None:
    empty = np.zeros(0, dtype=np.int64)
    true_i, true_j = two([0], [1])
    nothing_predicted = pairwise_quality(empty, empty, true_i, true_j)
    assert nothing_predicted == PairQuality(0.0, 0.0, 0.0, 0, 0, 1)
    nothing_true = pairwise_quality(true_i, true_j, empty, empty)
    assert nothing_true == PairQuality(0.0, 0.0, 0.0, 0, 1, 0)
    both_empty = pairwise_quality(empty, empty, empty, empty)
    assert both_empty == PairQuality(0.0, 0.0, 0.0, 0, 0, 0)
    perfect = pairwise_quality(true_i, true_j, true_j, true_i)
    assert perfect == PairQuality(1.0, 1.0, 1.0, 1, 0, 0)


def test_pairwise_quality_bad_input() -> None:
    with pytest.raises(ModelError, match="predicted: i has 2 entries but j has 1"):
        pairwise_quality(*four([0, 1], [2], [0], [1]))
    with pytest.raises(ModelError, match="integers"):
        pairwise_quality(np.array([0.5]), np.array([1]), *two([0], [1]))


@settings(deadline=None, max_examples=100)
@given(
    st.sets(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=30),
    st.sets(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=30),
)
def test_pairwise_quality_matches_python_sets(
    predicted: set[tuple[int, int]], truth: set[tuple[int, int]]
) -> None:
    predicted_pairs = {tuple(sorted(pair)) for pair in predicted if pair[0] != pair[1]}
    true_pairs = {tuple(sorted(pair)) for pair in truth if pair[0] != pair[1]}
    # Feed them in a scrambled direction: unordered evaluation must not care.
    predicted_list = [(b, a) for a, b in sorted(predicted_pairs)]
    true_list = sorted(true_pairs)
    quality = pairwise_quality(
        np.array([p[0] for p in predicted_list], dtype=np.int64),
        np.array([p[1] for p in predicted_list], dtype=np.int64),
        np.array([p[0] for p in true_list], dtype=np.int64),
        np.array([p[1] for p in true_list], dtype=np.int64),
    )
    true_positives = len(predicted_pairs & true_pairs)
    assert quality.true_positives == true_positives
    assert quality.false_positives == len(predicted_pairs - true_pairs)
    assert quality.false_negatives == len(true_pairs - predicted_pairs)
    if predicted_pairs:
        assert quality.precision == pytest.approx(true_positives / len(predicted_pairs))


def test_blocking_quality_hand_checked() -> None:
    # 10 records: 45 possible pairs. Candidates {(0,1), (2,3), (4,5), (1,0) duplicate};
    # true {(0,1), (6,7)}: completeness 1/2, reduction 1 - 3/45.
    quality = blocking_quality(*four([0, 2, 4, 1], [1, 3, 5, 0], [0, 6], [1, 7]), 45)
    assert quality.as_dict() == pytest.approx(
        BlockingQuality(
            pair_completeness=0.5,
            reduction_ratio=1 - 3 / 45,
            candidate_pairs=3,
            true_pairs=2,
            true_pairs_found=1,
        ).as_dict()
    )
    assert set(quality.as_dict()) == {
        "pair_completeness",
        "reduction_ratio",
        "candidate_pairs",
        "true_pairs",
        "true_pairs_found",
    }


def test_blocking_quality_ordered_and_edges() -> None:
    ordered = blocking_quality(*four([0, 1], [0, 0], [0], [0]), 4, ordered=True)
    assert (ordered.pair_completeness, ordered.reduction_ratio) == (1.0, 0.5)
    empty = np.zeros(0, dtype=np.int64)
    no_truth = blocking_quality(*two([0], [1]), empty, empty, 1)
    assert (no_truth.pair_completeness, no_truth.reduction_ratio) == (0.0, 0.0)
    with pytest.raises(ModelError, match="positive"):
        blocking_quality(*four([0], [1], [0], [1]), 0)
    with pytest.raises(ModelError, match="more distinct candidate pairs"):
        blocking_quality(*four([0, 0], [1, 2], [0], [1]), 1)


def test_cluster_quality_hand_checked() -> None:
    # Truth: {0,1,2} {3,4} {5}. Predicted: {0,1} {2,3,4} {5}.
    predicted = np.array([0, 0, 2, 2, 2, 5])
    truth = np.array([7, 7, 7, 8, 8, 9])
    quality = cluster_quality(predicted, truth)
    # Precision per record: 1, 1, 1/3, 2/3, 2/3, 1 -> 14/3 / 6 = 7/9.
    # Recall per record: 2/3, 2/3, 1/3, 1, 1, 1 -> 14/3 / 6 = 7/9.
    assert quality.as_dict() == pytest.approx(
        ClusterQuality(
            bcubed_precision=7 / 9,
            bcubed_recall=7 / 9,
            bcubed_f1=7 / 9,
            exact_cluster_share=1 / 3,
            predicted_clusters=3,
            true_clusters=3,
        ).as_dict()
    )


def test_cluster_quality_extremes() -> None:
    truth = np.array(["a", "a", "b", "c"])
    perfect = cluster_quality(np.array([3, 3, 1, 0]), truth)
    assert (perfect.bcubed_precision, perfect.bcubed_recall, perfect.exact_cluster_share) == (
        1.0,
        1.0,
        1.0,
    )
    lumped = cluster_quality(np.zeros(4, dtype=np.int64), truth)
    assert lumped.bcubed_recall == 1.0
    assert lumped.bcubed_precision == pytest.approx((2 * 0.5 + 0.25 + 0.25) / 4)
    assert lumped.exact_cluster_share == 0.0
    split = cluster_quality(np.arange(4), truth)
    assert split.bcubed_precision == 1.0
    assert split.bcubed_recall == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)
    assert split.exact_cluster_share == pytest.approx(2 / 3)
    with pytest.raises(ModelError, match="at least one record"):
        cluster_quality(np.zeros(0), np.zeros(0))
    with pytest.raises(ModelError, match="equally long"):
        cluster_quality(np.zeros(3), np.zeros(2))


@settings(deadline=None, max_examples=100)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=20),
)
def test_cluster_quality_matches_brute_force(label_pairs: list[tuple[int, int]]) -> None:
    predicted = [pair[0] for pair in label_pairs]
    truth = [pair[1] for pair in label_pairs]
    records = range(len(label_pairs))
    precision = recall = 0.0
    for record in records:
        same_predicted = {r for r in records if predicted[r] == predicted[record]}
        same_true = {r for r in records if truth[r] == truth[record]}
        precision += len(same_predicted & same_true) / len(same_predicted)
        recall += len(same_predicted & same_true) / len(same_true)
    true_clusters = {frozenset(r for r in records if truth[r] == t) for t in truth}
    predicted_clusters = {frozenset(r for r in records if predicted[r] == p) for p in predicted}
    quality = cluster_quality(np.array(predicted), np.array(truth))
    assert quality.bcubed_precision == pytest.approx(precision / len(label_pairs))
    assert quality.bcubed_recall == pytest.approx(recall / len(label_pairs))
    assert quality.exact_cluster_share == pytest.approx(
        len(true_clusters & predicted_clusters) / len(true_clusters)
    )
    assert quality.predicted_clusters == len(predicted_clusters)
    assert quality.true_clusters == len(true_clusters)
