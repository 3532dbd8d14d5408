"""Tests for linkage.solve: ranking, one-to-one assignment, clustering, pairs from labels."""

from __future__ import annotations

from itertools import combinations
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from linkage import solve
from linkage.errors import ModelError
from linkage.solve import (
    DIRECT_OVERRIDE,
    HardEvidence,
    cluster_records,
    cluster_records_reference,
    cluster_size_bound,
    one_to_one,
    one_to_one_reference,
    pairs_from_labels,
    rank_candidates,
)

# Scores from a small set so that ties are common and the tie-break rules are exercised.
SCORES = st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9, 0.9, 1.0])


@st.composite
def scored_pairs(
    draw: st.DrawFn, max_records: int = 8, max_pairs: int = 40, min_pairs: int = 0
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    pairs = draw(
        st.lists(
            st.tuples(st.integers(0, max_records - 1), st.integers(0, max_records - 1), SCORES),
            min_size=min_pairs,
            max_size=max_pairs,
        )
    )
    left = np.array([pair[0] for pair in pairs], dtype=np.int64)
    right = np.array([pair[1] for pair in pairs], dtype=np.int64)
    scores = np.array([pair[2] for pair in pairs], dtype=np.float64)
    return left, right, scores


# --------------------------------------------------------------------------------------------
# rank_candidates
# --------------------------------------------------------------------------------------------


def test_rank_candidates_order_threshold_and_top_k() -> None:
    indices = np.array([7, 3, 9, 1, 4])
    probabilities = np.array([0.6, 0.9, 0.6, 0.4, 0.5])
    ranked, ranked_probabilities = rank_candidates(indices, probabilities)
    assert ranked.tolist() == [3, 7, 9, 4]
    assert ranked_probabilities.tolist() == [0.9, 0.6, 0.6, 0.5]
    top, _ = rank_candidates(indices, probabilities, threshold=0.55, top_k=2)
    assert top.tolist() == [3, 7]
    none, none_probabilities = rank_candidates(indices, probabilities, threshold=0.95)
    assert none.size == 0
    assert none_probabilities.size == 0


def test_rank_candidates_rejects_bad_input() -> None:
    with pytest.raises(ModelError, match="1-D with 2 entries"):
        rank_candidates(np.array([1, 2]), np.array([0.5]))
    with pytest.raises(ModelError, match="finite"):
        rank_candidates(np.array([1]), np.array([np.nan]))
    with pytest.raises(ModelError, match="non-negative"):
        rank_candidates(np.array([-1]), np.array([0.5]))
    with pytest.raises(ModelError, match="top_k"):
        rank_candidates(np.array([1]), np.array([0.5]), top_k=-1)


# --------------------------------------------------------------------------------------------
# one_to_one
# --------------------------------------------------------------------------------------------


def test_one_to_one_hand_checked() -> None:
    left = np.array([0, 0, 1, 1, 2])
    right = np.array([0, 1, 0, 1, 2])
    scores = np.array([0.9, 0.8, 0.95, 0.7, 0.4])
    # (1,0) 0.95 first; (0,0) blocked by right 0; (0,1) 0.8 kept; (1,1) blocked; (2,2) < 0.5.
    expected = [False, True, True, False, False]
    assert one_to_one(left, right, scores, threshold=0.5).tolist() == expected
    assert one_to_one_reference(left, right, scores, threshold=0.5).tolist() == expected


def test_one_to_one_ties_broken_by_left_then_right() -> None:
    left = np.array([1, 0, 0])
    right = np.array([0, 1, 0])
    scores = np.array([0.8, 0.8, 0.8])
    # Order: (0,0), (0,1), (1,0): (0,0) kept, the others each share a record with it.
    assert one_to_one(left, right, scores, threshold=0.5).tolist() == [False, False, True]


@settings(deadline=None, max_examples=300)
@given(scored_pairs(), st.sampled_from([0.0, 0.5, 0.9]))
def test_one_to_one_properties(
    pairs: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]], threshold: float
) -> None:
    left, right, scores = pairs
    kept = one_to_one(left, right, scores, threshold=threshold)
    # Identical to the plain loop.
    assert kept.tolist() == one_to_one_reference(left, right, scores, threshold=threshold).tolist()
    # Never uses a record twice, never keeps a pair below the threshold.
    assert len(set(left[kept].tolist())) == int(kept.sum())
    assert len(set(right[kept].tolist())) == int(kept.sum())
    assert np.all(scores[kept] >= threshold)
    # Maximal: every pair left out at or above the threshold shares a record with a kept pair.
    used_left, used_right = set(left[kept].tolist()), set(right[kept].tolist())
    for a, b, score, is_kept in zip(left, right, scores, kept, strict=True):
        if not is_kept and score >= threshold:
            assert a in used_left or b in used_right


def test_one_to_one_long_chain_uses_fallback_and_matches_reference() -> None:
    # A path whose scores rise towards one end: each round only finds one mutual best pair,
    # so the fast path hands over to the loop; the answer must not change.
    n = 2000
    left = np.concatenate([np.arange(n), np.arange(1, n)])
    right = np.concatenate([np.arange(n), np.arange(n - 1)])
    scores = np.concatenate([np.arange(n) * 2.0, np.arange(1, n) * 2.0 - 1.0]) / (4 * n)
    fast = one_to_one(left, right, scores, threshold=0.0)
    assert fast.tolist() == one_to_one_reference(left, right, scores, threshold=0.0).tolist()
    assert int(fast.sum()) == n


def test_one_to_one_large_random_matches_reference() -> None:
    rng = np.random.default_rng(17)
    n_pairs = 200_000
    left = rng.integers(0, 50_000, n_pairs)
    right = rng.integers(0, 50_000, n_pairs)
    scores = np.round(rng.random(n_pairs), 3)  # rounding forces many ties
    fast = one_to_one(left, right, scores, threshold=0.3)
    assert np.array_equal(fast, one_to_one_reference(left, right, scores, threshold=0.3))


def test_one_to_one_empty_and_bad_input() -> None:
    empty = np.zeros(0, dtype=np.int64)
    assert one_to_one(empty, empty, np.zeros(0), threshold=0.5).size == 0
    with pytest.raises(ModelError, match="left_idx has 2 pairs but right_idx has 1"):
        one_to_one(np.array([0, 1]), np.array([0]), np.array([0.5, 0.5]), threshold=0.5)
    with pytest.raises(ModelError, match="integers"):
        one_to_one(np.array([0.5]), np.array([0]), np.array([0.5]), threshold=0.5)


# --------------------------------------------------------------------------------------------
# cluster_records
# --------------------------------------------------------------------------------------------


def test_cluster_simple_components_and_canonical_labels() -> None:
    labels = cluster_records(
        6, np.array([4, 1, 5]), np.array([2, 3, 3]), np.array([0.9, 0.8, 0.2]), threshold=0.5
    ).labels
    assert labels.tolist() == [0, 1, 2, 1, 2, 5]
    assert labels.dtype == np.int64


def test_cluster_support_rule_blocks_chaining() -> None:
    # Records 0 and 1 are one child, 2 another; 1-2 is strong but 0-2 and 1-2's neighbour
    # evidence is against: 2 has one strong and two weak edges into {0, 1, 3}.
    left = np.array([0, 0, 1, 1, 0])
    right = np.array([1, 3, 3, 2, 2])
    scores = np.array([0.99, 0.95, 0.97, 0.6, 0.1])
    edges = (left, right, scores)
    # Without the weak 3-2 edge the support for {0,1,3} + {2} is 1 strong of 2: merged.
    labels = cluster_records(4, *edges, threshold=0.5).labels
    assert labels.tolist() == [0, 0, 0, 0]
    # With it, 1 strong of 3 existing edges: refused.
    with_weak = (np.append(left, 3), np.append(right, 2), np.append(scores, 0.2))
    assert cluster_records(4, *with_weak, threshold=0.5).labels.tolist() == [0, 0, 2, 0]


def test_cluster_support_counts_only_scored_pairs() -> None:
    # A chain 0-1-2-3 of strong edges with no other pair scored is one cluster: unscored
    # (blocked-out) pairs are no evidence against a merge.
    labels = cluster_records(
        4, np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([0.9, 0.8, 0.7]), threshold=0.5
    ).labels
    assert labels.tolist() == [0, 0, 0, 0]


def test_cluster_one_per_source() -> None:
    # Records 0, 1 from agency "police", 2 from "health". 0-2 strongest, then 1-2.
    source = np.array(["police", "police", "health"])
    left, right, scores = np.array([0, 1]), np.array([2, 2]), np.array([0.9, 0.8])
    assert cluster_records(3, left, right, scores, threshold=0.5).labels.tolist() == [0, 0, 0]
    labels = cluster_records(
        3, left, right, scores, threshold=0.5, source=source, one_per_source=True
    ).labels
    assert labels.tolist() == [0, 1, 0]
    with pytest.raises(ModelError, match="needs the source"):
        cluster_records(3, left, right, scores, threshold=0.5, one_per_source=True)
    with pytest.raises(ModelError, match="one entry per record"):
        cluster_records(
            3, left, right, scores, threshold=0.5, source=source[:2], one_per_source=True
        )


def test_cluster_duplicate_pair_uses_highest_score_and_self_pairs_ignored() -> None:
    labels = cluster_records(
        3, np.array([0, 1, 2]), np.array([1, 0, 2]), np.array([0.2, 0.9, 1.0]), threshold=0.5
    ).labels
    assert labels.tolist() == [0, 0, 2]


def test_cluster_bad_input() -> None:
    with pytest.raises(ModelError, match="below n_records=2"):
        cluster_records(2, np.array([0]), np.array([2]), np.array([0.9]), threshold=0.5)
    with pytest.raises(ModelError, match="finite"):
        cluster_records(2, np.array([0]), np.array([1]), np.array([np.nan]), threshold=0.5)


def check_canonical(labels: NDArray[np.int64]) -> None:
    for record, label in enumerate(labels.tolist()):
        members = np.flatnonzero(labels == label)
        assert label == members.min()
        assert label <= record


@settings(deadline=None, max_examples=200)
@given(
    scored_pairs(max_records=9, min_pairs=12, max_pairs=30),
    st.lists(st.integers(0, 2), min_size=9, max_size=9),
    st.booleans(),
)
def test_cluster_properties(
    pairs: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]],
    source_list: list[int],
    one_per_source: bool,
) -> None:
    left, right, scores = pairs
    source = np.array(source_list)
    options = {"threshold": 0.5, "source": source, "one_per_source": one_per_source}
    labels = cluster_records(9, left, right, scores, **options).labels  # type: ignore[arg-type]
    check_canonical(labels)
    # Same as the plain reference.
    reference = cluster_records_reference(9, left, right, scores, **options).labels  # type: ignore[arg-type]
    assert labels.tolist() == reference.tolist()
    # Deterministic under permutation of the edge list and swapping of the two ends.
    permutation = np.random.default_rng(len(left)).permutation(len(left))
    swapped = cluster_records(
        9,
        right[permutation],
        left[permutation],
        scores[permutation],
        **options,  # type: ignore[arg-type]
    ).labels
    assert swapped.tolist() == labels.tolist()
    # Clusters are joined only through strong edges, and respect one_per_source.
    for label in set(labels.tolist()):
        members = np.flatnonzero(labels == label)
        if one_per_source:
            assert len(set(source[members].tolist())) == len(members)
        if len(members) > 1:
            touching = np.isin(left, members) & np.isin(right, members) & (scores >= 0.5)
            assert touching.any()


# --------------------------------------------------------------------------------------------
# cluster_records: hard evidence (cannot-link) and the size bound
# --------------------------------------------------------------------------------------------


def nhs_evidence(nhs: list[int | None]) -> HardEvidence:
    """Test evidence: ``nhs[r]`` a stand-in NHS number (None: absent); conflicts where they
    differ. Checks it is only asked about pairs that both hold one."""
    values = np.array([-1 if value is None else value for value in nhs], dtype=np.int64)
    holds = values >= 0

    def conflicts(first: NDArray[np.int64], second: NDArray[np.int64]) -> NDArray[np.bool_]:
        assert first.shape == second.shape
        assert holds[first].all() and holds[second].all()
        different: NDArray[np.bool_] = values[first] != values[second]
        return different

    return HardEvidence(holds=holds, conflicts=conflicts)


def test_cluster_chain_with_two_nhs_numbers_splits_at_weakest_edge() -> None:
    # Health records 0 (NHS 111) and 2 (NHS 222), police record 1; 0 and 2 were never a
    # candidate pair. The chain 0-1 (0.95) then 1-2 (0.7) would join them: 1-2 is refused.
    source = np.array(["health", "police", "health"])
    left, right, scores = np.array([0, 1]), np.array([1, 2]), np.array([0.95, 0.7])
    plain = cluster_records(3, left, right, scores, threshold=0.5)
    assert plain.labels.tolist() == [0, 0, 0]
    assert plain.refused_unions == 0
    evidence = nhs_evidence([111, None, 222])
    for solver in (cluster_records, cluster_records_reference):
        result = solver(
            3, left, right, scores, threshold=0.5, source=source, hard_evidence=evidence
        )
        assert result.labels.tolist() == [0, 0, 2]
        assert result.refused_unions == 1
        assert result.size_splits == 0
    # the weakest link is where it splits, whichever end it is at
    result = cluster_records(
        3, left, right, np.array([0.7, 0.95]), threshold=0.5, source=source, hard_evidence=evidence
    )
    assert result.labels.tolist() == [0, 1, 1]
    with pytest.raises(ModelError, match="hard_evidence needs the source"):
        cluster_records(3, left, right, scores, threshold=0.5, hard_evidence=evidence)


def test_cluster_same_agency_duplicates_without_conflict_still_cluster() -> None:
    # Health 0 and 2 hold one NHS number, health 3 none, school 1: a duplicate within health
    # with the same number, or without one, is no hard evidence.
    source = np.array(["health", "school", "health", "health"])
    left, right = np.array([0, 1, 0]), np.array([1, 2, 3])
    scores = np.array([0.95, 0.7, 0.6])
    evidence = nhs_evidence([111, None, 111, None])
    for solver in (cluster_records, cluster_records_reference):
        result = solver(
            4, left, right, scores, threshold=0.5, source=source, hard_evidence=evidence
        )
        assert result.labels.tolist() == [0, 0, 0, 0]
        assert result.refused_unions == 0


def test_cluster_direct_very_high_edge_may_join_a_conflicting_pair() -> None:
    # 0 and 2 disagree on the NHS number, but their own edge is very high (everything else
    # agrees; the score already weighs the disagreement): joined. Record 3, another child of
    # health with a third number, still cannot come in through 1.
    source = np.array(["health", "police", "health", "health"])
    left, right = np.array([0, 0, 1]), np.array([2, 1, 3])
    scores = np.array([DIRECT_OVERRIDE, 0.9, 0.6])
    evidence = nhs_evidence([111, None, 222, 333])
    for solver in (cluster_records, cluster_records_reference):
        result = solver(
            4, left, right, scores, threshold=0.5, source=source, hard_evidence=evidence
        )
        assert result.labels.tolist() == [0, 0, 0, 3]
        assert result.refused_unions == 1


@pytest.mark.parametrize("score", [0.5, 0.9, np.nextafter(DIRECT_OVERRIDE, 0)])
def test_cluster_direct_strong_edge_below_the_override_is_refused(score: float) -> None:
    # Two children of health with different numbers who share a given name, a date of birth
    # and a sex: their own edge is strong but below the override, so they stay apart, and the
    # police record joins the stronger of them.
    source = np.array(["health", "police", "health"])
    left, right = np.array([0, 0, 1]), np.array([2, 1, 2])
    scores = np.array([score, 0.995, 0.6])
    evidence = nhs_evidence([111, None, 222])
    for solver in (cluster_records, cluster_records_reference):
        result = solver(
            3, left, right, scores, threshold=0.5, source=source, hard_evidence=evidence
        )
        assert result.labels.tolist() == [0, 0, 2]
        assert result.refused_unions >= 1
    overridden = HardEvidence(evidence.holds, evidence.conflicts, direct_override=score)
    for solver in (cluster_records, cluster_records_reference):
        result = solver(
            3, left, right, scores, threshold=0.5, source=source, hard_evidence=overridden
        )
        assert result.labels.tolist() == [0, 0, 0]


def test_cluster_other_agencies_numbers_are_no_conflict() -> None:
    # Different sources may disagree (the number is compared by the model, not here).
    source = np.array(["health", "care"])
    evidence = nhs_evidence([111, 222])
    result = cluster_records(
        2, np.array([0]), np.array([1]), np.array([0.9]), threshold=0.5, source=source,
        hard_evidence=evidence,
    )  # fmt: skip
    assert result.labels.tolist() == [0, 0]


def test_cluster_big_weak_cluster_is_split() -> None:
    # 60 children of 3 records each (one per agency, strong edges 0.99) all share a common
    # name: a chain of weak-but-above-threshold edges (0.55-0.6) joins them into one cluster.
    children, per_child = 60, 3
    n_records = children * per_child
    rng = np.random.default_rng(5)
    true_left, true_right = [], []
    for child in range(children):
        first = child * per_child
        true_left += [first, first + 1]
        true_right += [first + 1, first + 2]
    weak_left = rng.integers(0, n_records, 400)
    weak_right = rng.integers(0, n_records, 400)
    chain_left = np.arange(0, n_records - per_child, per_child)  # child k to child k + 1
    left = np.concatenate([true_left, chain_left, weak_left]).astype(np.int64)
    right = np.concatenate([true_right, chain_left + per_child, weak_right]).astype(np.int64)
    scores = np.concatenate(
        [np.full(len(true_left), 0.99), np.full(chain_left.size, 0.6), rng.uniform(0.55, 0.6, 400)]
    )
    whole = cluster_records(n_records, left, right, scores, threshold=0.5)
    assert np.unique(whole.labels).size < children // 2  # chained into few big clusters
    bound = cluster_size_bound(per_child)
    assert bound == 24
    result = cluster_records(n_records, left, right, scores, threshold=0.5, max_cluster_size=bound)
    assert np.bincount(result.labels).max() <= bound
    assert result.size_splits > 0
    # every child's own records stay together: only the weak edges were undone
    by_child = result.labels.reshape(children, per_child)
    assert (by_child == by_child[:, :1]).all()
    # a bound of one child's size keeps exactly the children
    exact = cluster_records(n_records, left, right, scores, threshold=0.5, max_cluster_size=3)
    assert exact.labels.tolist() == np.repeat(np.arange(0, n_records, per_child), 3).tolist()


def test_cluster_size_bound_and_evidence_bad_input() -> None:
    left, right, scores = np.array([0]), np.array([1]), np.array([0.9])
    with pytest.raises(ModelError, match="max_cluster_size"):
        cluster_records(2, left, right, scores, threshold=0.5, max_cluster_size=0)
    bad = HardEvidence(holds=np.array([1, 1]), conflicts=lambda a, b: a != b)
    with pytest.raises(ModelError, match="holds must be a boolean array"):
        cluster_records(
            2, left, right, scores, threshold=0.5, source=np.zeros(2), hard_evidence=bad
        )


@settings(deadline=None, max_examples=300)
@given(
    scored_pairs(max_records=9, min_pairs=8, max_pairs=30),
    st.lists(st.integers(0, 1), min_size=9, max_size=9),
    st.lists(st.one_of(st.none(), st.integers(0, 2)), min_size=9, max_size=9),
    st.one_of(st.none(), st.integers(1, 5)),
    st.booleans(),
    st.sampled_from([1, 2, 64]),
)
def test_cluster_hard_evidence_properties(
    pairs: tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]],
    source_list: list[int],
    nhs: list[int | None],
    max_cluster_size: int | None,
    one_per_source: bool,
    prefetch_group: int,
) -> None:
    left, right, scores = pairs
    source = np.array(source_list)
    options = {
        "threshold": 0.5,
        "source": source,
        "one_per_source": one_per_source,
        "hard_evidence": nhs_evidence(nhs),
        "max_cluster_size": max_cluster_size,
    }
    # groups of holders up to prefetch_group are tested before clustering, larger per merge
    with mock.patch.object(solve, "PREFETCH_GROUP_HOLDERS", prefetch_group):
        result = cluster_records(9, left, right, scores, **options)  # type: ignore[arg-type]
    check_canonical(result.labels)
    reference = cluster_records_reference(9, left, right, scores, **options)  # type: ignore[arg-type]
    assert result.labels.tolist() == reference.labels.tolist()
    assert result.refused_unions == reference.refused_unions
    assert result.size_splits == reference.size_splits
    # Never a conflicting pair of one source in one cluster, unless their own edge is strong.
    strong = {
        (min(a, b), max(a, b))
        for a, b, s in zip(left.tolist(), right.tolist(), scores.tolist(), strict=True)
        if s >= 0.5
    }
    for x, y in combinations(range(9), 2):
        if result.labels[x] != result.labels[y] or source[x] != source[y]:
            continue
        if nhs[x] is not None and nhs[y] is not None and nhs[x] != nhs[y]:
            assert (x, y) in strong
    if max_cluster_size is not None:
        assert np.bincount(result.labels).max() <= max_cluster_size
    # Without the new rules, nothing changes.
    plain = cluster_records(
        9, left, right, scores, threshold=0.5, source=source, one_per_source=one_per_source
    )
    if result.refused_unions == 0 and result.size_splits == 0:
        assert plain.labels.tolist() == result.labels.tolist()


def test_cluster_a_large_random_graph() -> None:
    rng = np.random.default_rng(23)
    n_records = 20_000
    # true pairs (two in five records) plus twice as many random weak edges and some
    # random strong noise
    n_true, n_noise = n_records * 2 // 5, n_records * 2
    true_left = rng.integers(0, n_records, n_true)
    true_right = rng.integers(0, n_records, n_true)
    noise_left = rng.integers(0, n_records, n_noise)
    noise_right = rng.integers(0, n_records, n_noise)
    left = np.concatenate([true_left, noise_left])
    right = np.concatenate([true_right, noise_right])
    scores = np.concatenate([rng.uniform(0.6, 1.0, n_true), rng.uniform(0.0, 0.55, n_noise)])
    labels = cluster_records(n_records, left, right, scores, threshold=0.5).labels
    check_canonical(labels[:1000])
    assert np.all(labels <= np.arange(n_records))
    # with hard evidence (one record in five holds a number, four sources) and the size bound
    nhs: list[int | None] = [
        int(v) if v < 200_000 else None for v in rng.integers(0, 10**6, n_records)
    ]
    source = rng.integers(0, 4, n_records)
    constrained = cluster_records(
        n_records, left, right, scores, threshold=0.5, source=source,
        hard_evidence=nhs_evidence(nhs), max_cluster_size=cluster_size_bound(4),
    )  # fmt: skip
    check_canonical(constrained.labels[:1000])
    assert constrained.refused_unions > 0 and constrained.size_splits > 0


# --------------------------------------------------------------------------------------------
# pairs_from_labels
# --------------------------------------------------------------------------------------------


def test_pairs_from_labels_hand_checked() -> None:
    first, second = pairs_from_labels(np.array([0, 1, 0, 3, 1, 0]))
    assert list(zip(first.tolist(), second.tolist(), strict=True)) == [
        (0, 2),
        (0, 5),
        (1, 4),
        (2, 5),
    ]
    empty_first, empty_second = pairs_from_labels(np.zeros(0, dtype=np.int64))
    assert empty_first.size == 0
    assert empty_second.size == 0


@settings(deadline=None, max_examples=100)
@given(st.lists(st.integers(0, 5), max_size=25))
def test_pairs_from_labels_matches_brute_force(label_list: list[int]) -> None:
    first, second = pairs_from_labels(np.array(label_list, dtype=np.int64))
    expected = [
        (i, j) for i, j in combinations(range(len(label_list)), 2) if label_list[i] == label_list[j]
    ]
    assert list(zip(first.tolist(), second.tolist(), strict=True)) == expected
