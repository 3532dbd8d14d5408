"""Attack 2, decoding stage: token positions learned from aligned values, then records matched.

Role: :func:`decode_and_match`, the pattern-mining stage of the graph attack
(:mod:`.combined`): seeded by value-level graph matching (:mod:`.seeding`) and optionally by
known record pairs, it learns each token's filter positions from aligned (filter, value)
pairs, predicts the filter of every plaintext value, and matches records on the decoded
fields, the surest matches aligning more values for the next round.

Invariants: the attacker reads only the published filters and schema and its own plaintext
(never the truth, never the linkage secret); matches are one-to-one, most confident first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from benchmarks.attack.fields import (
    _DENSE_LIMIT,
    _cipher_field,
    _CipherField,
    _decoded_rows,
    _pack,
    _plain_field,
    _PlainField,
)
from benchmarks.attack.graph import _unpacked
from benchmarks.attack.seeding import _seed_context, _value_seeds
from benchmarks.attack.settings import filter_index
from linkage import blocking
from linkage.encode import EncodedBatch
from linkage.schema import (
    Schema,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- attack 2: decoding

#: Fields whose filters the pattern-mining stage decodes (exact identifiers such as the NHS
#: number have one token per value, which no other value shares, so nothing generalises).
_DECODED_FIELDS = ("given_name", "middle_names", "family_name", "date_of_birth", "sex", "postcode")
_SEEDED_FIELDS = ("given_name", "family_name")
#: Field pairs whose aligned values form the candidate blocks of the record-matching step.
_CANDIDATE_RULES = (
    ("given_name", "family_name"),
    ("given_name", "date_of_birth"),
    ("family_name", "date_of_birth"),
)
#: A position belongs to a token when at least this share of aligned values holding the
#: token set it (tolerates a few wrong alignments).
_POSITION_RATE = 0.8
#: A token no position of which reaches :data:`_POSITION_RATE` is still learned when at least
#: ``_GAP_SUPPORT`` aligned values hold it and its best positions (up to ``hashes``, each set
#: in at least 45 % of them) exceed the next by ``_GAP_RATE``: a date token aligned through
#: record matches of which half are wrong still stands clear of the background.
_GAP_SUPPORT = 8
_GAP_RATE = 0.25
#: Cost at or below which a field agrees, above which (times 2) it disagrees.
_AGREE_COST = 2.0
#: Matches below this confidence (agreeing minus disagreeing fields, less a hundredth of the
#: total cost) do not align their values for the next round's decoders.
_ALIGN_SCORE = 3.5


@dataclass(frozen=True)
class _Decoder:
    """Token -> positions learned for one field of the encoded side, applied to the plaintext."""

    predicted: NDArray[np.bool_]  # (plain values, filter bits)
    unknown: NDArray[np.float32]  # tokens of each plain value whose positions are not known


def _learn_decoder(
    plain: _PlainField, cipher: _CipherField, groups: NDArray[np.int64], values: NDArray[np.int64]
) -> _Decoder:
    """Pattern mining (Christen et al. 2017): a token's positions are those set in (nearly)
    every aligned filter whose value holds the token; a token is known when at most
    ``hashes`` positions remain. Other values are then predicted from their known tokens."""
    incidence = plain.tokens[values]
    support = np.asarray(incidence.sum(axis=0)).ravel()
    shared = np.asarray(incidence.T @ cipher.bits[groups])
    rate = shared / np.maximum(support, 1.0)[:, None]
    positions = rate >= _POSITION_RATE
    size = positions.sum(axis=1)
    known = (support > 0) & (size >= 1) & (size <= cipher.hashes)
    # where no position reaches the rate (many wrong alignments), a token well supported
    # whose best positions stand clear of the rest still gets them (see _GAP_RATE)
    hashes = min(cipher.hashes, rate.shape[1] - 1)
    candidates = np.flatnonzero(~known & (support >= _GAP_SUPPORT))
    if candidates.size and hashes >= 1:
        order = np.argsort(-rate[candidates], axis=1)[:, : hashes + 1]
        top = np.take_along_axis(rate[candidates], order, axis=1)
        gaps = top[:, :-1] - top[:, 1:]
        cut = np.argmax(gaps, axis=1)  # keep positions 0..cut
        gap = gaps[np.arange(cut.size), cut]
        floor = top[np.arange(cut.size), cut]
        clear = (gap >= _GAP_RATE) & (floor >= 0.45)
        tokens = candidates[clear]
        kept = np.arange(hashes + 1)[None, :] <= cut[clear, None]
        positions[tokens] = False
        positions[np.broadcast_to(tokens[:, None], kept.shape)[kept], order[clear][kept]] = True
        known[tokens] = True
    learned = (positions & known[:, None]).astype(np.float32)
    predicted = np.asarray(plain.tokens @ learned) > 0
    unknown = np.asarray(plain.tokens @ (~known).astype(np.float32)).ravel()
    return _Decoder(predicted, unknown.astype(np.float32))


def _cost(
    inter: NDArray[np.float32],
    predicted_count: NDArray[np.float32],
    filter_count: NDArray[np.float32],
    unknown: NDArray[np.float32],
    hashes: int,
    filter_bits: int,
) -> NDArray[np.float32]:
    """How badly a filter fits a value's prediction: predicted bits it lacks (twice), plus the
    distance, in tokens, between its unexplained bits and those the unknown tokens would set."""
    missing = predicted_count - inter
    excess = filter_count - inter
    expected = unknown * hashes * (1.0 - filter_count / filter_bits)
    cost: NDArray[np.float32] = (2.0 * missing + np.abs(excess - expected) / hashes).astype(
        np.float32
    )
    return cost


def _align_values(plain: _PlainField, cipher: _CipherField, decoder: _Decoder) -> NDArray[np.int64]:
    """Per distinct filter, the plain value it decodes to (-1 when not confident).

    Dense fields: mutual-lowest cost with a margin of one unit. Larger fields: exact equality
    of the filter with a fully predicted value."""
    filter_bits = cipher.bits.shape[1]
    aligned = np.full(cipher.packed.shape[0], -1, dtype=np.int64)
    if plain.counts.size * cipher.counts.size <= _DENSE_LIMIT:
        predicted = decoder.predicted.astype(np.float32)
        inter = predicted @ cipher.bits.T
        cost = _cost(
            inter,
            predicted.sum(axis=1)[:, None],
            cipher.bits.sum(axis=1)[None, :],
            decoder.unknown[:, None],
            cipher.hashes,
            filter_bits,
        )
        if cost.shape[0] < 2 or cost.shape[1] < 2:
            return aligned
        by_value = np.argmin(cost, axis=1)
        by_filter = np.argmin(cost, axis=0)
        two_v = np.partition(cost, 1, axis=1)[:, :2]
        two_f = np.partition(cost, 1, axis=0)[:2, :]
        values = np.flatnonzero(by_filter[by_value] == np.arange(cost.shape[0]))
        groups = by_value[values]
        ok = (
            (two_v[values, 0] <= _AGREE_COST)
            & (two_v[values, 1] - two_v[values, 0] >= 1.0)
            & (two_f[1, groups] - two_f[0, groups] >= 1.0)
        )
        aligned[groups[ok]] = values[ok]
        return aligned
    full = np.flatnonzero(decoder.unknown == 0)
    if full.size == 0:
        return aligned
    words = cipher.packed.shape[1]
    guess = _pack(decoder.predicted[full])
    joined = np.ascontiguousarray(np.vstack([cipher.packed, guess]))
    _, inverse, counts = np.unique(
        joined.view(np.dtype((np.void, words * 8))).ravel(),
        return_inverse=True,
        return_counts=True,
    )
    inverse = inverse.reshape(-1)
    n_filters = cipher.packed.shape[0]
    # one filter and one fully predicted value per group: an unambiguous decoding
    pair_groups = counts[inverse[n_filters:]] == 2
    slot = np.full(counts.shape[0], -1, dtype=np.int64)
    slot[inverse[:n_filters]] = np.arange(n_filters)
    targets = slot[inverse[n_filters:]]
    ok = pair_groups & (targets >= 0)
    aligned[targets[ok]] = full[ok]
    return aligned


def _dice_dense(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    dice: NDArray[np.float32] = (
        2 * (a @ b.T) / np.maximum(a.sum(axis=1)[:, None] + b.sum(axis=1)[None, :], 1.0)
    ).astype(np.float32)
    return dice


#: Passes of value seeding over :data:`_SEEDED_FIELDS` (from the second, given names are
#: seeded in the context of the family names decoded before); a fourth pass adds little
#: (measured while the attack was built, figures in the git history).
_SEED_PASSES = 3


def _pair_costs(
    plain: _PlainField,
    cipher: _CipherField,
    decoder: _Decoder,
    left: NDArray[np.int64],
    right: NDArray[np.int64],
) -> NDArray[np.float32]:
    """Cost of each candidate record pair on one field (NaN where either side is missing)."""
    group = cipher.row_group[left]
    value = plain.row_value[right]
    both = (group >= 0) & (value >= 0)
    out = np.full(left.shape[0], np.nan, dtype=np.float32)
    if not both.any():
        return out
    predicted = _pack(decoder.predicted)
    a = cipher.packed[group[both]]
    b = predicted[value[both]]
    inter = np.bitwise_count(a & b).sum(axis=1).astype(np.float32)
    out[both] = _cost(
        inter,
        np.bitwise_count(b).sum(axis=1).astype(np.float32),
        np.bitwise_count(a).sum(axis=1).astype(np.float32),
        decoder.unknown[value[both]],
        cipher.hashes,
        cipher.bits.shape[1],
    )
    return out


def _match_records(
    plains: dict[str, _PlainField],
    ciphers: dict[str, _CipherField],
    decoders: dict[str, _Decoder],
    alignments: dict[str, NDArray[np.int64]],
    n_left: int,
    n_right: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """One-to-one record matches from decoded fields, most confident first.

    Candidates share decoded values on one of :data:`_CANDIDATE_RULES`; a pair is scored by
    agreeing minus disagreeing fields and kept when at least three fields agree and at most
    one disagrees; then greedy one-to-one by score (ties: lower total cost)."""
    left_keys = np.zeros((n_left, len(_CANDIDATE_RULES)), dtype=np.uint64)
    right_keys = np.zeros((n_right, len(_CANDIDATE_RULES)), dtype=np.uint64)
    for r, (first, second) in enumerate(_CANDIDATE_RULES):
        width = plains[second].counts.size + 1
        for keys, a, b in (
            (left_keys, _decoded_rows(ciphers[first], alignments[first]),
             _decoded_rows(ciphers[second], alignments[second])),
            (right_keys, plains[first].row_value, plains[second].row_value),
        ):  # fmt: skip
            ok = (a >= 0) & (b >= 0)
            keys[ok, r] = (a[ok] * width + b[ok] + 1).astype(np.uint64)
    pairs = blocking.candidate_pairs_link(left_keys, right_keys, max_block_size=10_000)
    left, right = pairs.left.astype(np.int64), pairs.right.astype(np.int64)
    costs = np.stack(
        [_pair_costs(plains[f], ciphers[f], decoders[f], left, right) for f in decoders], axis=1
    )
    agree = (costs <= _AGREE_COST).sum(axis=1)
    disagree = (costs > 2 * _AGREE_COST).sum(axis=1)
    keep = (agree >= 3) & (disagree <= 1)
    left, right = left[keep], right[keep]
    score = (agree - disagree)[keep].astype(np.float64)
    total = np.nansum(costs[keep], axis=1)
    order = np.lexsort((total, -score))
    used_left = np.zeros(n_left, dtype=bool)
    used_right = np.zeros(n_right, dtype=bool)
    chosen: list[int] = []
    for pair in order.tolist():
        i, j = int(left[pair]), int(right[pair])
        if not used_left[i] and not used_right[j]:
            used_left[i] = used_right[j] = True
            chosen.append(pair)
    picked = np.asarray(chosen, dtype=np.int64)
    confidence = score[picked] - total[picked] / 100.0
    return left[picked], right[picked], confidence


def decode_and_match(
    encoded: EncodedBatch,
    attacker: EncodedBatch,
    schema: Schema,
    attacker_columns: dict[str, list[str | None]],
    *,
    seed_pairs: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
    seed_values: int = 60,
    rounds: int = 4,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Pattern-mining seeds: (encoded index, attacker index, confidence), most confident first.

    1. Seed the given names by value-level graph matching (:func:`_value_seeds`, no record
       overlap needed) and decode them (step 2); then seed the family names the same way, in
       the context of the decoded given names (:func:`_seed_context`), and decode them; then
       each again in the context of the other, :data:`_SEED_PASSES` passes in all.
    2. Learn each token's positions from the aligned (filter, value) pairs (:func:`_learn_decoder`),
       predict the filter of every plaintext value, re-align values by lowest cost; repeat.
    3. Match records on decoded fields (:func:`_match_records`); the matches of confidence at
       least :data:`_ALIGN_SCORE` align the values of every field (dates, postcodes, sex,
       middle names too), which refines the decoders; repeat ``rounds`` times.

    What each step adds was measured while the attack was built (figures in the git history).
    """
    n_left = len(encoded)
    n_right = len(attacker_columns[_DECODED_FIELDS[0]])
    # a field published in views is decoded through its first view (filter_index)
    inputs = {name.split("@")[0] for name in encoded.field_names}
    fields = [f for f in _DECODED_FIELDS if f in inputs]
    plains = {f: _plain_field(schema, f, attacker_columns) for f in fields}
    ciphers = {f: _cipher_field(encoded, f, schema.field(f).hashes_per_token) for f in fields}
    alignments: dict[str, NDArray[np.int64]] = {}
    for f in fields:
        alignments[f] = np.full(ciphers[f].packed.shape[0], -1, dtype=np.int64)
    own_bits: dict[str, NDArray[np.float32]] = {}
    for f in (f for f in _SEEDED_FIELDS if f in fields):
        first = np.full(plains[f].counts.size, -1, dtype=np.int64)
        rows = np.flatnonzero(plains[f].row_value >= 0)
        first[plains[f].row_value[rows[::-1]]] = rows[::-1]
        own_bits[f] = _unpacked(attacker.field_filters[filter_index(attacker, f)][first])
    seeded: list[str] = []
    for _ in range(_SEED_PASSES):
        for f in own_bits:
            # each field is seeded in the context of the other fields decoded so far
            others = [other for other in seeded if other != f]
            context = _seed_context(plains, ciphers, alignments, f, others)
            alignments[f] = _value_seeds(
                plains[f], ciphers[f], own_bits[f], seed_values, context=context
            )
            for _ in range(3):
                groups = np.flatnonzero(alignments[f] >= 0)
                decoder = _learn_decoder(plains[f], ciphers[f], groups, alignments[f][groups])
                refined = _align_values(plains[f], ciphers[f], decoder)
                alignments[f] = np.where(refined >= 0, refined, alignments[f])
            if f not in seeded:
                seeded.append(f)
    if seed_pairs is not None:
        for f in fields:
            group = ciphers[f].row_group[seed_pairs[0]]
            value = plains[f].row_value[seed_pairs[1]]
            ok = (group >= 0) & (value >= 0)
            alignments[f][group[ok]] = value[ok]
    empty = np.zeros(0, dtype=np.int64)
    left, right, confidence = empty, empty, np.zeros(0)
    for _ in range(rounds):
        decoders: dict[str, _Decoder] = {}
        for f in fields:
            for _ in range(3 if f in _SEEDED_FIELDS else 1):
                groups = np.flatnonzero(alignments[f] >= 0)
                decoders[f] = _learn_decoder(plains[f], ciphers[f], groups, alignments[f][groups])
                refined = _align_values(plains[f], ciphers[f], decoders[f])
                alignments[f] = np.where(refined >= 0, refined, alignments[f])
        left, right, confidence = _match_records(
            plains, ciphers, decoders, alignments, n_left, n_right
        )
        sure = confidence >= _ALIGN_SCORE
        for f in fields:
            group = ciphers[f].row_group[left[sure]]
            value = plains[f].row_value[right[sure]]
            ok = (group >= 0) & (value >= 0)
            alignments[f][group[ok]] = value[ok]
    return left, right, confidence
