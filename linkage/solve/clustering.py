"""Clustering: scored edges to clusters of records, one cluster per child.

Contract: :func:`cluster_records` runs a constrained union-find over strong edges in
descending score order (support, one record per source, hard evidence and a size bound are
its constraints, stated in its docstring), identical to the plain
:func:`cluster_records_reference`; :class:`Clustering` carries the canonical labels and the
counts of refused and undone merges. :func:`cluster_size_bound` is the size bound for a
number of sources.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.errors import ModelError
from linkage.solve.ranking import _check_pairs, pairs_from_labels

# --------------------------------------------------------------------------------------------
# Clustering (batch linkage)
# --------------------------------------------------------------------------------------------


def _prepare_edges(
    n_records: int,
    left_idx: NDArray[Any],
    right_idx: NDArray[Any],
    scores: NDArray[Any],
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Unordered edges (low < high), self-pairs removed, one edge per pair with its top score.

    Returned sorted by score desc, low asc, high asc (the visiting order).
    """
    left, right, score_array = _check_pairs(left_idx, right_idx, scores)
    if n_records < 0:
        raise ModelError("n_records must be non-negative")
    if left.size and max(int(left.max()), int(right.max())) >= n_records:
        raise ModelError(f"record indices must be below n_records={n_records}")
    low = np.minimum(left, right)
    high = np.maximum(left, right)
    distinct = low != high
    low, high, score_array = low[distinct], high[distinct], score_array[distinct]
    order = np.lexsort((high, low, -score_array))
    low, high, score_array = low[order], high[order], score_array[order]
    # After this sort the first occurrence of each (low, high) carries its highest score.
    keys = low * np.int64(max(n_records, 1)) + high
    _, first = np.unique(keys, return_index=True)
    first.sort()
    return low[first], high[first], score_array[first]


#: Records one child may have in one source (dataset / agency) before a cluster is held to be
#: several children (:func:`cluster_size_bound`). FEBRL3's generator gives a person up to 6
#: records in one dataset, the synthetic agencies a child up to 2; 8 leaves room for more
#: duplicates than either while a cluster of hundreds (one common name) stays far beyond it.
MAX_RECORDS_PER_SOURCE = 8


def cluster_size_bound(n_sources: int) -> int:
    """Largest cluster :func:`cluster_records` keeps whole over ``n_sources`` sources:
    :data:`MAX_RECORDS_PER_SOURCE` records per source (a child is held at most once per
    agency, bar a few duplicates)."""
    return MAX_RECORDS_PER_SOURCE * max(1, n_sources)


#: Score from which a direct edge joins two records of one source whose hard evidence
#: conflicts (:class:`HardEvidence`): the start of the band "very high"
DIRECT_OVERRIDE = 0.99


@dataclass(frozen=True)
class HardEvidence:
    """Evidence that two records of one source are different people (cannot-link).

    ``holds[r]``: record r carries the evidence (its NHS number is present, hence valid).
    ``conflicts(a, b)``: for pairs of records of one source that both hold it, True where the
    evidence disagrees; called with arrays, once per tested merge. ``direct_override``: a
    pair's own edge at or above this score joins it all the same. Used by
    :func:`cluster_records` (its rule 3)."""

    holds: NDArray[np.bool_]
    conflicts: Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.bool_]]
    direct_override: float = DIRECT_OVERRIDE


@dataclass(frozen=True)
class Clustering:
    """Labels of :func:`cluster_records` and what its rules changed, as counts.

    ``refused_unions``: strong edges whose merge hard evidence refused; ``size_splits``: merges
    undone because the cluster they made exceeded ``max_cluster_size``."""

    labels: NDArray[np.int64]
    refused_unions: int = 0
    size_splits: int = 0


def _check_sources(
    n_records: int, source: NDArray[Any] | None, needed: bool, why: str = "one_per_source=True"
) -> NDArray[np.int64] | None:
    if not needed:
        return None
    if source is None:
        raise ModelError(f"{why} needs the source of every record")
    source_array = np.asarray(source)
    if source_array.shape != (n_records,):
        raise ModelError(f"source must have one entry per record ({n_records})")
    _, codes = np.unique(source_array, return_inverse=True)
    return codes.astype(np.int64).reshape(n_records)


def _check_evidence(
    n_records: int,
    source: NDArray[Any] | None,
    one_per_source: bool,
    hard_evidence: HardEvidence | None,
    max_cluster_size: int | None,
) -> tuple[NDArray[np.int64] | None, NDArray[np.bool_] | None]:
    """Source codes (when a rule needs them) and the evidence holders, checked."""
    if max_cluster_size is not None and max_cluster_size < 1:
        raise ModelError("max_cluster_size must be at least 1")
    why = "one_per_source=True" if one_per_source else "hard_evidence"
    sources = _check_sources(n_records, source, one_per_source or hard_evidence is not None, why)
    if hard_evidence is None:
        return sources, None
    holds = np.asarray(hard_evidence.holds)
    if holds.shape != (n_records,) or holds.dtype != np.bool_:
        raise ModelError(f"hard_evidence.holds must be a boolean array of {n_records} entries")
    return sources, holds


def _edge_keys(
    low: NDArray[np.int64], high: NDArray[np.int64], n_records: int
) -> NDArray[np.int64]:
    keys: NDArray[np.int64] = low * np.int64(max(n_records, 1)) + high
    return keys


#: Evidence holders of one source in one connected component of the strong edges up to which
#: :func:`cluster_records` tests all their pairs in one call before clustering (any two may
#: meet in a cluster); in a larger group (a chain of hundreds of records) pairs are tested
#: per merge, only between the two clusters' holders.
PREFETCH_GROUP_HOLDERS = 64


def _real_conflicts(
    hard_evidence: HardEvidence,
    first: NDArray[np.int64],
    second: NDArray[np.int64],
    direct_keys: NDArray[np.int64],
    n_records: int,
) -> NDArray[np.bool_]:
    """Mask of the pairs (first[k], second[k]) that conflict and have no edge of their own at
    or above the override (``direct_keys``: sorted :func:`_edge_keys` of those edges)."""
    mask = np.asarray(hard_evidence.conflicts(first, second), dtype=np.bool_)
    if mask.shape != first.shape:
        raise ModelError(f"hard_evidence.conflicts gave {mask.shape} for {first.shape[0]} pairs")
    keys = _edge_keys(np.minimum(first, second), np.maximum(first, second), n_records)
    at = np.minimum(np.searchsorted(direct_keys, keys), max(direct_keys.shape[0] - 1, 0))
    if direct_keys.size:
        mask &= direct_keys[at] != keys
    return mask


def _components(
    n_records: int, low: NDArray[np.int64], high: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Connected-component id of every record under the edges (low[k], high[k]).

    Min-label propagation with pointer jumping, all in numpy: each round every record takes
    the smallest label among itself and its edges' other ends, then follows its label's label.
    The id is the smallest record index of the component.
    """
    label = np.arange(n_records, dtype=np.int64)
    while True:
        smaller = np.minimum(label[low], label[high])
        updated = label.copy()
        np.minimum.at(updated, low, smaller)
        np.minimum.at(updated, high, smaller)
        updated = updated[updated]
        if np.array_equal(updated, label):
            return label
        label = updated


def _canonical_labels(roots: NDArray[np.int64]) -> NDArray[np.int64]:
    """Relabel so that each record's label is the smallest record index in its cluster."""
    n_records = roots.shape[0]
    smallest = np.full(n_records, n_records, dtype=np.int64)
    np.minimum.at(smallest, roots, np.arange(n_records, dtype=np.int64))
    labels: NDArray[np.int64] = smallest[roots]
    return labels


def cluster_records(
    n_records: int,
    left_idx: NDArray[Any],
    right_idx: NDArray[Any],
    scores: NDArray[Any],
    *,
    threshold: float,
    source: NDArray[Any] | None = None,
    one_per_source: bool = False,
    hard_evidence: HardEvidence | None = None,
    max_cluster_size: int | None = None,
) -> Clustering:
    """Cluster records 0..n_records-1 from scored edges.

    Rule. Edges are the scored pairs (i, j), i != j, unordered; when a pair is given
    more than once its highest score is used. Edges with score >= ``threshold`` ("strong" edges)
    are visited strongest first (a greedy agglomerative clustering); an edge merges the clusters A
    and B of its two records unless

    1. *support* (guard against chaining two children through one weak edge): fewer than half of
       the scored edges between A and B (every scored edge, strong or not, with one end in A and
       the other in B) are strong. Pairs that were never scored (blocked out) are no evidence
       either way. A merge of two singletons always has support 1/1; adding a record to a cluster
       where it has one strong and one weak edge has support 1/2 and is allowed; with one strong
       and two weak edges (1/3) it is refused; or
    2. *one record per source* (only with ``one_per_source=True``): the merged cluster would
       hold two records with the same ``source`` (dataset / agency), which is impossible when
       the sources have no internal duplicates; or
    3. *hard evidence* (only with ``hard_evidence``, :class:`HardEvidence`): some record of A and
       some record of B have the same ``source``, both hold the evidence (an NHS number) and it
       disagrees, and their own edge is below ``hard_evidence.direct_override`` (the band
       "very high"). Such a pair is never put together through a chain, nor by a merely strong
       edge of its own: the cluster is split at its weakest link (the chain's strongest edges
       have already merged by the time its weakest one is refused). A *direct* edge at or
       above the override joins them: the model has weighed the disagreement in that edge's
       score (an NHS number keyed wrongly into another child's valid one, with everything else
       agreeing) and the rest outweighs it, so no field is a gate (DESIGN.md); a chain carries
       no such weighing. Within one agency two valid numbers are seldom one child's (each
       agency traces its own), while two children who share a given name, a date of birth
       and a sex are common enough to make a strong edge below the override; the figures are
       in RESULTS.md ("Where recall is lost").
       Conflicts are found between records that were never a candidate pair: any two holders of
       one source in one connected component of the strong edges may meet, so all their pairs are
       tested in one vectorised call before clustering (in a component holding more than
       :data:`PREFETCH_GROUP_HOLDERS` of one source, instead, the cross pairs of each merge); a
       conflict is remembered between the two clusters as they grow. Each refused edge counts
       once in :attr:`Clustering.refused_unions`.

    Then *size* (only with ``max_cluster_size``): the merges form a tree per cluster; a cluster of
    more records than the bound is split by undoing its last (weakest) merge, again and again for
    any part still too large, so every part is a cluster the greedy had built from stronger edges
    alone (single linkage cut per part). Equivalently, a merge is kept iff the cluster it made has
    at most ``max_cluster_size`` records. A child has few records per agency, so a cluster far
    beyond :func:`cluster_size_bound` holds several children joined by the weakest of its edges
    (hundreds of records sharing one common name). Each undone merge counts once in
    :attr:`Clustering.size_splits`.

    Returns the labels (int64, label = smallest record index in the cluster) and the counts of
    refused and undone merges. Union-find with union by size; each cluster root keeps a map of
    neighbouring clusters to (strong, total, conflict) counts and, with ``one_per_source``, the
    set of sources it holds, with ``hard_evidence`` its evidence holders by source; maps are
    merged smaller into larger. The loop runs over strong edges only. ``source`` is needed by
    ``one_per_source`` and ``hard_evidence``.
    """
    sources, holds = _check_evidence(
        n_records, source, one_per_source, hard_evidence, max_cluster_size
    )
    low, high, score_array = _prepare_edges(n_records, left_idx, right_idx, scores)
    parent = np.arange(n_records, dtype=np.int64)
    strong = score_array >= threshold
    n_strong = int(np.count_nonzero(strong))  # strong edges come first in the visiting order
    if n_strong == 0:
        return Clustering(parent)

    parent_list = parent.tolist()
    size = [1] * n_records
    # Clusters only ever merge along strong edges, so they never leave a connected component
    # of the strong-edge graph: an edge whose records lie in different components (or touch a
    # record with no strong edge at all) can never be "between two clusters that could merge"
    # and is never counted. Keeping only the rest bounds the bookkeeping below by the edges
    # inside components (a few per child) instead of every scored pair, which at scale are
    # far more numerous, nearly all of them weak and across components.
    component = _components(n_records, low[:n_strong], high[:n_strong])
    relevant = component[low] == component[high]
    neighbours: dict[int, dict[int, list[int]]] = {}
    for a, b, is_strong in zip(
        low[relevant].tolist(), high[relevant].tolist(), strong[relevant].tolist(), strict=True
    ):
        counts = [1 if is_strong else 0, 1, 0]  # one list shared by both directions
        neighbours.setdefault(a, {})[b] = counts
        neighbours.setdefault(b, {})[a] = counts
    held: dict[int, set[int]] | None = None
    if one_per_source and sources is not None:
        source_list = sources.tolist()
        held = {record: {source_list[record]} for record in neighbours}
    # With hard evidence, the holders of one source in one component may meet in a cluster:
    # in a small group all their pairs are tested at once, and a conflict is entered as a
    # third count between the two records; in a large group, per root its holders by source
    # (roots holding none absent), tested at each merge.
    holders: dict[int, dict[int, list[int]]] = {}
    direct_keys = np.zeros(0, dtype=np.int64)
    if hard_evidence is not None and holds is not None and sources is not None:
        n_direct = int(
            np.count_nonzero(score_array >= max(threshold, hard_evidence.direct_override))
        )  # a prefix: edges are visited strongest first
        direct_keys = np.sort(_edge_keys(low[:n_direct], high[:n_direct], n_records))
        in_play = np.fromiter(neighbours, dtype=np.int64, count=len(neighbours))
        in_play = in_play[holds[in_play]]
        _, group, group_size = np.unique(
            component[in_play] * np.int64(n_records) + sources[in_play],
            return_inverse=True,
            return_counts=True,
        )
        small = group_size[group.reshape(-1)] <= PREFETCH_GROUP_HOLDERS
        tested = in_play[small]
        i, j = pairs_from_labels(group.reshape(-1)[small])
        if i.size:
            first, second = tested[i], tested[j]
            found = _real_conflicts(hard_evidence, first, second, direct_keys, n_records)
            for x, y in zip(first[found].tolist(), second[found].tolist(), strict=True):
                known = neighbours[x].get(y)
                if known is None:
                    known = [0, 0, 1]
                    neighbours[x][y] = known
                    neighbours[y][x] = known
                known[2] = 1
        large = in_play[~small]
        for record, record_source in zip(large.tolist(), sources[large].tolist(), strict=True):
            holders[record] = {record_source: [record]}
    refused = 0
    merged_low: list[int] = []  # the edges of the merges made, in order,
    merged_high: list[int] = []
    kept_merge: list[bool] = []  # and whether the cluster each made fits max_cluster_size

    def find(record: int) -> int:
        root = record
        while parent_list[root] != root:
            root = parent_list[root]
        while parent_list[record] != root:  # path compression
            parent_list[record], record = root, parent_list[record]
        return root

    for a, b in zip(low[:n_strong].tolist(), high[:n_strong].tolist(), strict=True):
        root_a, root_b = find(a), find(b)
        if root_a == root_b:
            continue
        between = neighbours[root_a][root_b]
        if 2 * between[0] < between[1]:
            continue
        if held is not None and not held[root_a].isdisjoint(held[root_b]):
            continue
        if hard_evidence is not None:
            if between[2]:  # a conflict found earlier between parts of these clusters
                refused += 1
                continue
            holders_a, holders_b = holders.get(root_a), holders.get(root_b)
            if holders_a and holders_b:
                shared = sorted(holders_a.keys() & holders_b.keys())
                if shared:
                    first = np.concatenate(
                        [np.repeat(holders_a[s], len(holders_b[s])) for s in shared]
                    ).astype(np.int64)
                    second = np.concatenate(
                        [np.tile(holders_b[s], len(holders_a[s])) for s in shared]
                    ).astype(np.int64)
                    if _real_conflicts(hard_evidence, first, second, direct_keys, n_records).any():
                        between[2] = 1
                        refused += 1
                        continue
        if size[root_a] < size[root_b]:
            root_a, root_b = root_b, root_a
        # Merge root_b into root_a.
        parent_list[root_b] = root_a
        size[root_a] += size[root_b]
        merged_low.append(a)
        merged_high.append(b)
        kept_merge.append(max_cluster_size is None or size[root_a] <= max_cluster_size)
        into = neighbours[root_a]
        del into[root_b]
        for other, counts in neighbours.pop(root_b).items():
            if other == root_a:
                continue
            other_map = neighbours[other]
            del other_map[root_b]
            existing = into.get(other)
            if existing is None:
                into[other] = counts
                other_map[root_a] = counts  # the same list object on both sides
            else:
                existing[0] += counts[0]
                existing[1] += counts[1]
                existing[2] |= counts[2]
        if held is not None:
            held[root_a] |= held.pop(root_b)
        moving = holders.pop(root_b, None)
        if moving:
            staying = holders.setdefault(root_a, {})
            for record_source, members in moving.items():
                staying.setdefault(record_source, []).extend(members)

    undone = kept_merge.count(False)
    if undone:
        # The merges kept are those whose cluster fits: the parts are their components.
        kept = np.array(kept_merge, dtype=np.bool_)
        parts = _components(
            n_records,
            np.array(merged_low, dtype=np.int64)[kept],
            np.array(merged_high, dtype=np.int64)[kept],
        )
        return Clustering(parts, refused, undone)
    roots = np.array(parent_list, dtype=np.int64)
    while True:  # pointer jumping until every record points at its root
        grandparents = roots[roots]
        if np.array_equal(grandparents, roots):
            break
        roots = grandparents
    return Clustering(_canonical_labels(roots), refused, 0)


def cluster_records_reference(
    n_records: int,
    left_idx: NDArray[Any],
    right_idx: NDArray[Any],
    scores: NDArray[Any],
    *,
    threshold: float,
    source: NDArray[Any] | None = None,
    one_per_source: bool = False,
    hard_evidence: HardEvidence | None = None,
    max_cluster_size: int | None = None,
) -> Clustering:
    """Plain reference for :func:`cluster_records`: recounts edges between clusters and tests
    every cross pair for hard evidence (one pair per call) at each merge; then splits each
    oversize cluster top-down by undoing the merge that made it."""
    sources, holds = _check_evidence(
        n_records, source, one_per_source, hard_evidence, max_cluster_size
    )
    low, high, score_array = _prepare_edges(n_records, left_idx, right_idx, scores)
    labels = list(range(n_records))
    edges = list(zip(low.tolist(), high.tolist(), score_array.tolist(), strict=True))
    overriding = max(threshold, hard_evidence.direct_override) if hard_evidence else threshold
    strong_pairs = {(x, y) for x, y, score in edges if score >= overriding}
    made: dict[frozenset[int], tuple[frozenset[int], frozenset[int]]] = {}  # cluster -> parts
    refused = 0
    for a, b, score in edges:
        if score < threshold or labels[a] == labels[b]:
            continue
        cluster_a, cluster_b = labels[a], labels[b]
        between = [
            other_score
            for x, y, other_score in edges
            if {labels[x], labels[y]} == {cluster_a, cluster_b}
        ]
        if 2 * sum(other_score >= threshold for other_score in between) < len(between):
            continue
        members_a = [r for r in range(n_records) if labels[r] == cluster_a]
        members_b = [r for r in range(n_records) if labels[r] == cluster_b]
        if one_per_source and sources is not None:
            sources_a = {int(sources[r]) for r in members_a}
            sources_b = {int(sources[r]) for r in members_b}
            if sources_a & sources_b:
                continue
        if hard_evidence is not None and holds is not None and sources is not None:
            conflict = any(
                sources[x] == sources[y]
                and holds[x]
                and holds[y]
                and (min(x, y), max(x, y)) not in strong_pairs
                and bool(hard_evidence.conflicts(np.array([x]), np.array([y]))[0])
                for x in members_a
                for y in members_b
            )
            if conflict:
                refused += 1
                continue
        made[frozenset(members_a) | frozenset(members_b)] = (
            frozenset(members_a),
            frozenset(members_b),
        )
        labels = [cluster_a if label == cluster_b else label for label in labels]
    clusters = [
        frozenset(r for r in range(n_records) if labels[r] == label) for label in set(labels)
    ]
    undone = 0
    while max_cluster_size is not None and any(len(c) > max_cluster_size for c in clusters):
        too_big = next(c for c in clusters if len(c) > max_cluster_size)
        clusters.remove(too_big)
        clusters.extend(made[too_big])  # the two clusters its last, weakest merge joined
        undone += 1
    for number, cluster in enumerate(clusters):
        for record in cluster:
            labels[record] = number
    return Clustering(_canonical_labels(np.asarray(labels, dtype=np.int64)), refused, undone)
