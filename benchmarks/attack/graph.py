"""Attack 2: graph matching, the structural stage (similarity-graph features of every record)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.attack.settings import filter_index
from linkage import similarity
from linkage.encode import EncodedBatch

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- attack 2


def _top_k_matrix(filters: NDArray[np.uint64], k: int) -> NDArray[np.float64]:
    """(n, k) Dice similarities of each node's k nearest other nodes, descending.

    Dense float32 products of the unpacked bits in row chunks, then a partial sort: exact, and
    its cost does not depend on the similarity distribution. (The packed kernel with a low
    threshold returns, and sorts, nearly all n^2 pairs once filters are balanced, where every
    Dice is near 0.8; measured while the attack was built, figures in the git history.)
    """
    bits = _unpacked(filters)
    counts = bits.sum(axis=1)
    n = bits.shape[0]
    out = np.zeros((n, k))
    if n < 2:
        return out
    width = min(k, n - 1)
    for start in range(0, n, 2048):
        stop = min(n, start + 2048)
        dice = 2 * (bits[start:stop] @ bits.T)
        dice /= np.maximum(counts[start:stop, None] + counts[None, :], 1.0)
        dice[np.arange(stop - start), np.arange(start, stop)] = -1.0  # not its own neighbour
        top = np.partition(dice, n - width, axis=1)[:, n - width :]
        out[start:stop, :width] = -np.sort(-top, axis=1)
    return out


#: Field combinations whose equal-filter group size is a node feature: how many records share
#: this record's exact encoding of those fields. Deterministic encodings keep equal values
#: equal under any key, so these counts are the same on the attacker's side.
_EQUALITY_GROUPS: tuple[tuple[str, ...], ...] = (
    ("given_name",),
    ("family_name",),
    ("date_of_birth",),
    ("postcode",),
    ("given_name", "family_name"),
    ("family_name", "postcode"),
    ("family_name", "date_of_birth"),
)


def _equal_group_sizes(batch: EncodedBatch, fields: tuple[str, ...]) -> NDArray[np.float64]:
    """Per record, how many records have the same filters on ``fields`` (0 when missing)."""
    index = [filter_index(batch, f) for f in fields]
    joined = np.ascontiguousarray(np.hstack([batch.field_filters[i] for i in index]))
    present = batch.field_present[:, index].all(axis=1)
    view = joined.view(np.dtype((np.void, joined.shape[1] * 8))).ravel()
    _, group, sizes = np.unique(view, return_inverse=True, return_counts=True)
    return np.where(present, sizes[group.reshape(-1)], 0).astype(np.float64)


def _node_features(batch: EncodedBatch, k: int) -> NDArray[np.float64]:
    top = _top_k_matrix(batch.record_filters, k)
    degrees = np.stack([(top >= t).sum(axis=1) for t in (0.5, 0.6, 0.7, 0.8, 0.9)], axis=1)
    counts = [similarity.popcounts(batch.record_filters)]
    counts += [similarity.popcounts(f) for f in batch.field_filters]
    equal = [_equal_group_sizes(batch, fields) for fields in _EQUALITY_GROUPS]
    features = np.hstack(
        [
            top,
            degrees,
            np.stack(counts, axis=1).astype(np.float64),
            np.log1p(np.stack(equal, axis=1)),
        ]
    )
    spread = features.std(axis=0)
    scaled: NDArray[np.float64] = (features - features.mean(axis=0)) / np.where(
        spread > 0, spread, 1.0
    )
    return scaled


def _normalised_rows(values: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    norms = np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
    out: NDArray[np.float32] = (values / norms).astype(np.float32)
    return out


def _mutual(
    left: NDArray[np.floating[Any]], right: NDArray[np.floating[Any]]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Mutual-best pairs by cosine (left index, right index, best minus second best of the
    left row), from one pass over the score matrix in row chunks (column bests kept as it
    goes), so each product is computed once."""
    a, b = _normalised_rows(left), _normalised_rows(right)
    n_left = a.shape[0]
    forward = np.empty(n_left, dtype=np.int64)
    margin = np.empty(n_left, dtype=np.float32)
    column_best = np.full(b.shape[0], -np.inf, dtype=np.float32)
    backward = np.zeros(b.shape[0], dtype=np.int64)
    chunk = 2048
    for start in range(0, n_left, chunk):
        scores = a[start : start + chunk] @ b.T
        rows = np.arange(scores.shape[0])
        best = np.argmax(scores, axis=1)
        top = scores[rows, best]
        forward[start : start + chunk] = best
        column = np.argmax(scores, axis=0)
        column_top = scores[column, np.arange(scores.shape[1])]
        better = column_top > column_best
        column_best[better] = column_top[better]
        backward[better] = column[better] + start
        if scores.shape[1] > 1:
            scores[rows, best] = -np.inf
            margin[start : start + chunk] = top - scores.max(axis=1)
        else:
            margin[start : start + chunk] = top
    mutual = np.flatnonzero(backward[forward] == np.arange(n_left))
    return mutual, forward[mutual], margin[mutual]


def _unpacked(filters: NDArray[np.uint64]) -> NDArray[np.float32]:
    bits = np.unpackbits(filters.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    return bits.astype(np.float32)


def _anchor_profile(
    bits: NDArray[np.float32], counts: NDArray[np.float32], anchors: NDArray[np.int64]
) -> NDArray[np.float32]:
    """Dice of every node to each anchor of its own side, centred per node.

    Not randomly projected: a random projection of the anchors made seed-and-extend collapse
    (measured while the attack was built, figures in the git history)."""
    shared = bits @ bits[anchors].T
    dice = 2 * shared / np.maximum(counts[:, None] + counts[anchors][None, :], 1.0)
    centred: NDArray[np.float32] = (dice - dice.mean(axis=1, keepdims=True)).astype(np.float32)
    return centred


@dataclass(frozen=True)
class GraphSide:
    """What the structural stage derives from one side's encodings alone: standardised node
    features, unpacked record-filter bits and their popcounts. The encoded side is the same
    for every overlap of a setting, so :func:`run_attack` builds it once (a per-job value)."""

    features: NDArray[np.float64]
    bits: NDArray[np.float32]
    counts: NDArray[np.float32]


def graph_side(batch: EncodedBatch, top_k: int = 20) -> GraphSide:
    bits = _unpacked(batch.record_filters)
    return GraphSide(_node_features(batch, top_k), bits, bits.sum(axis=1))


def structural_attack(
    encoded: EncodedBatch | GraphSide,
    attacker: EncodedBatch | GraphSide,
    *,
    top_k: int = 20,
    first_anchors: int = 200,
    max_anchors: int = 1000,
    rounds: int = 6,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Feature matching then anchor-profile seed-and-extend on record filters: claimed matches
    (encoded index, attacker index, margin), one-to-one. Either side may be given as a
    prepared :class:`GraphSide`.

    After Vidanage et al. (CIKM 2020) and Schäfer et al. (ACSAC 2024). On each side, the top-k
    Dice neighbour graph of the record-level filters; node features are the sorted top-k
    similarities, degrees at several thresholds and the popcounts of every field-level and
    record-level filter, standardised per side. Nodes are matched by cosine similarity of the
    features (mutual best); then the most confident mutual matches become anchors, every node
    is re-described by its Dice similarity to the anchors of its own side, nodes are
    re-matched on those vectors, and the anchor set grows from the new mutual matches for a
    few rounds."""
    left_side = encoded if isinstance(encoded, GraphSide) else graph_side(encoded, top_k)
    right_side = attacker if isinstance(attacker, GraphSide) else graph_side(attacker, top_k)
    left, right, margin = _mutual(left_side.features, right_side.features)
    anchors = first_anchors
    previous: set[tuple[int, int]] = set()
    for _ in range(rounds):
        chosen = np.argsort(-margin, kind="stable")[:anchors]
        left_profile = _anchor_profile(left_side.bits, left_side.counts, left[chosen])
        right_profile = _anchor_profile(right_side.bits, right_side.counts, right[chosen])
        left, right, margin = _mutual(left_profile, right_profile)
        current = set(zip(left.tolist(), right.tolist(), strict=True))
        if current == previous and anchors >= max_anchors:
            break
        previous = current
        anchors = min(max_anchors, int(anchors * 2.5))
    return left, right, margin
