"""Attack 2, value seeding: distinct values of a field aligned with no record overlap.

Role: the start of the decoding stage (:func:`.decoding.decode_and_match`). Graph matching at
value level (:func:`_value_seeds`) aligns the encoded side's distinct filters of a field with
the attacker's distinct plaintext values from key-independent features alone (token counts,
frequencies, estimated shared tokens); :func:`_seed_context` adds the record context of
fields decoded before, so given names and family names seed each other.

Invariants: only the attacker's plaintext and the published filters are read (never the
truth, never the secret); a field too large for the dense matrices (:data:`_DENSE_LIMIT`)
gets no seeds rather than a partial answer; an alignment is one-to-one (mutual best).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from benchmarks.attack.fields import _DENSE_LIMIT, _CipherField, _decoded_rows, _PlainField


def _shared_tokens(
    a: NDArray[np.float32], b: NDArray[np.float32], hashes: int
) -> NDArray[np.float32]:
    """Estimated tokens shared by every filter of ``a`` and of ``b``: common bits / ``hashes``.

    Unhardened, a token sets ``hashes`` positions under any key, so this is the q-gram overlap
    of the two values up to a few colliding bits: a key-independent edge weight."""
    shared: NDArray[np.float32] = ((a @ b.T) / float(hashes)).astype(np.float32)
    return shared


def _value_features(
    bits: NDArray[np.float32], counts: NDArray[np.int64], hashes: int
) -> NDArray[np.float64]:
    """Key-independent description of each distinct value of one side: its token count, its
    frequency, and how many values (and records) share at least 1..5 tokens with it."""
    shared = np.rint(_shared_tokens(bits, bits, hashes))
    np.fill_diagonal(shared, 0.0)
    weights = counts.astype(np.float64)
    columns = [bits.sum(axis=1) / hashes, np.log(weights)]
    for least in range(1, 6):
        near = shared >= least
        columns.append(np.log1p(near.sum(axis=1)))
        columns.append(np.log1p(near @ weights))
    return np.stack(columns, axis=1)


#: Weights of the record context in :func:`_value_seeds` (start, rounds): a round weight
#: near 1 overrides the token structure (measured while the attack was built; figures in the
#: git history).
_CONTEXT_START = 4.0
_CONTEXT_ROUND = 0.3


def _value_seeds(
    plain: _PlainField,
    cipher: _CipherField,
    own_bits: NDArray[np.float32],
    top: int,
    rounds: int = 12,
    context: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
) -> NDArray[np.int64]:
    """Seed alignment of distinct values of one field (graph matching at value level), needing
    no record overlap: only a plaintext whose values are distributed like the encoded ones.

    Start: values of both sides are described by :func:`_value_features` (standardised over
    both sides together) and the ``top`` mutual nearest pairs by Euclidean distance, largest
    margin first, become anchors. Then every value is described by its estimated shared-token
    count with each anchor of its own side (:func:`_shared_tokens`), and values are re-aligned
    by mutual-best cosine of those profiles with a margin, penalised by frequency-share and
    popcount differences; the anchors grow each round. (Frequency rank alone gets too few
    values right to grow from: measured while the attack was built, figures in the git history.)

    ``context`` (encoded-group and plain-value rows of unit length, from
    :func:`_seed_context`) adds ``_CONTEXT_START`` times their cosine to the start's
    closeness and ``_CONTEXT_ROUND`` times it to every round's score.
    """
    aligned = np.full(cipher.packed.shape[0], -1, dtype=np.int64)
    if plain.counts.size < 2 or cipher.counts.size < 2:
        return aligned
    if plain.counts.size * cipher.counts.size > _DENSE_LIMIT:
        return aligned
    hashes = cipher.hashes
    group_features = _value_features(cipher.bits, cipher.counts, hashes)
    value_features = _value_features(own_bits, plain.counts, hashes)
    both = np.vstack([group_features, value_features])
    centre, spread = both.mean(axis=0), both.std(axis=0) + 1e-9
    group_features = (group_features - centre) / spread
    value_features = (value_features - centre) / spread
    distance = (
        (group_features**2).sum(axis=1)[:, None]
        + (value_features**2).sum(axis=1)[None, :]
        - 2 * group_features @ value_features.T
    )
    agreement = np.zeros_like(distance)
    if context is not None:
        agreement = (context[0] @ context[1].T).astype(np.float64)
        distance -= _CONTEXT_START * agreement
    nearest = np.argmin(distance, axis=1)
    mutual = np.flatnonzero(np.argmin(distance, axis=0)[nearest] == np.arange(nearest.size))
    two = np.partition(distance, 1, axis=1)[:, :2]
    first = mutual[np.argsort(-(two[mutual, 1] - two[mutual, 0]), kind="stable")][:top]
    aligned[first] = nearest[first]
    group_share = np.log(cipher.counts / max(1, cipher.counts.sum()))
    value_share = np.log(plain.counts / max(1, plain.counts.sum()))
    group_pop = cipher.bits.sum(axis=1)
    value_pop = own_bits.sum(axis=1)
    for _ in range(rounds):
        anchors = np.flatnonzero(aligned >= 0)
        if anchors.size < 5:
            break
        left = _shared_tokens(cipher.bits, cipher.bits[anchors], hashes)
        right = _shared_tokens(own_bits, own_bits[aligned[anchors]], hashes)
        left -= left.mean(axis=1, keepdims=True)
        right -= right.mean(axis=1, keepdims=True)
        left /= np.maximum(np.linalg.norm(left, axis=1, keepdims=True), 1e-6)
        right /= np.maximum(np.linalg.norm(right, axis=1, keepdims=True), 1e-6)
        score = left @ right.T
        score -= 0.05 * np.abs(group_share[:, None] - value_share[None, :])
        score -= 0.02 * np.abs(group_pop[:, None] - value_pop[None, :])
        score += _CONTEXT_ROUND * agreement
        best_value = np.argmax(score, axis=1)
        best_group = np.argmax(score, axis=0)
        top_two = np.partition(score, -2, axis=1)[:, -2:]
        mutual = np.flatnonzero(best_group[best_value] == np.arange(score.shape[0]))
        margin = top_two[mutual, 1] - top_two[mutual, 0]
        keep = mutual[margin >= 0.02]
        order = keep[np.argsort(-(top_two[keep, 1] - top_two[keep, 0]))]
        grown = np.full_like(aligned, -1)
        limit = min(order.size, max(2 * anchors.size, 50))
        grown[order[:limit]] = best_value[order[:limit]]
        aligned = grown
    return aligned


def _context_profiles(
    row_group: NDArray[np.int64], groups: int, row_context: NDArray[np.int64], contexts: int
) -> NDArray[np.float32]:
    """Per group, the unit-length square-root profile of the context values of its rows."""
    ok = (row_group >= 0) & (row_context >= 0)
    counts = sparse.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (row_group[ok], row_context[ok])),
        shape=(groups, max(1, contexts)),
    ).toarray()
    profile = np.sqrt(counts)
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-6)
    out: NDArray[np.float32] = profile.astype(np.float32)
    return out


def _seed_context(
    plains: dict[str, _PlainField],
    ciphers: dict[str, _CipherField],
    alignments: dict[str, NDArray[np.int64]],
    field: str,
    decoded: Sequence[str],
) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
    """Record context of ``field``'s values from fields already decoded: per encoded group
    and per plain value, the profile of the decoded (plain) values its records hold in those
    fields. Key-independent wherever the decoding is right: given names follow the family's
    cultural naming group, so a family name's given-name profile places it in its group."""
    groups, values = ciphers[field].counts.size, plains[field].counts.size
    if not decoded or groups * values > _DENSE_LIMIT:
        return None  # no value seeds for this field (see _value_seeds)
    if any(max(groups, values) * plains[f].counts.size > _DENSE_LIMIT for f in decoded):
        return None
    encoded_parts, plain_parts = [], []
    for other in decoded:
        size = plains[other].counts.size
        encoded_parts.append(
            _context_profiles(
                ciphers[field].row_group,
                groups,
                _decoded_rows(ciphers[other], alignments[other]),
                size,
            )
        )
        plain_parts.append(
            _context_profiles(plains[field].row_value, values, plains[other].row_value, size)
        )
    scale = 1.0 / math.sqrt(len(decoded))
    return np.hstack(encoded_parts) * scale, np.hstack(plain_parts) * scale
