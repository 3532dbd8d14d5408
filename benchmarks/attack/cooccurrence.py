"""Attack 2, group co-occurrence: the exact equality classes the matcher sees, aligned."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.attack.fields import _cipher_field, _plain_field
from linkage import blocking, harden
from linkage.encode import EncodedBatch, raw_values
from linkage.schema import (
    Schema,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------- attack 2: co-occurrence

#: A size rank is a seed when it stands this many sampling standard deviations (the square root
#: of a count) clear of both neighbouring ranks, on both sides (:func:`separated_ranks`).
_SEED_GAP = 3.0
#: Largest block (encoded rows x attacker rows sharing a labelled key) that yields candidates.
_COOCCUR_BLOCK = 2_500
#: A record pair is accepted when it is mutual best and its eccentricity (best minus second
#: best score over the standard deviation of the row's scores, every attacker record counted)
#: reaches this on both sides.
_ECCENTRICITY = 2.0
#: A group is labelled from the profile of its records when the best value's evidence (nats)
#: is at least this much above the runner-up's and at least twice it.
_PROFILE_MARGIN = 5.0
_COOCCUR_ROUNDS = 10
#: Rounds of colour refinement tried for seeds (:func:`_colours`).
_COLOUR_ROUNDS = 3


def separated_ranks(counts: NDArray[np.integer[Any]], gap: float = _SEED_GAP) -> NDArray[np.int64]:
    """Size ranks (0 = largest) that stand clear of both neighbours: the next larger size
    exceeds it by more than ``gap`` times the square root of that size and it exceeds the next
    smaller one (0 after the last) by more than ``gap`` times its own square root. The square
    root of a count is its sampling noise, so such a rank holds the same value in another
    sample of the same population, whatever the sample's size."""
    sizes = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    if sizes.size == 0:
        return np.zeros(0, dtype=np.int64)
    above = np.ones(sizes.size, dtype=bool)
    above[1:] = sizes[:-1] - sizes[1:] > gap * np.sqrt(sizes[:-1])
    below = sizes - np.r_[sizes[1:], 0.0] > gap * np.sqrt(sizes)
    return np.flatnonzero(above & below).astype(np.int64)


def frequency_seeds(
    group_counts: NDArray[np.int64], value_counts: NDArray[np.int64], gap: float = _SEED_GAP
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Seed labels of one field: (group, value) of equal size rank where the rank is
    :func:`separated_ranks` on both sides and the two relative frequencies (the overlap is
    unknown, so shares, not counts) agree within ``gap`` standard errors."""
    ranks = np.intersect1d(separated_ranks(group_counts, gap), separated_ranks(value_counts, gap))
    groups = np.argsort(-group_counts, kind="stable")[ranks]
    values = np.argsort(-value_counts, kind="stable")[ranks]
    n_groups, n_values = max(1, int(group_counts.sum())), max(1, int(value_counts.sum()))
    share_g, share_v = group_counts[groups] / n_groups, value_counts[values] / n_values
    noise = np.sqrt(group_counts[groups] / n_groups**2 + value_counts[values] / n_values**2)
    ok = np.abs(share_g - share_v) <= gap * noise
    return groups[ok].astype(np.int64), values[ok].astype(np.int64)


def _best_two(
    rows: NDArray[np.int64], cols: NDArray[np.int64], score: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Per row with entries: (row, its best column, best score, second best score), where a
    column without an entry scores 0 (so the second best is at least 0)."""
    order = np.lexsort((-score, rows))
    r, c, s = rows[order], cols[order], score[order]
    first = np.flatnonzero(np.r_[True, r[1:] != r[:-1]]) if r.size else np.zeros(0, np.int64)
    nxt = first + 1
    has_second = nxt < r.size
    has_second[has_second] = r[nxt[has_second]] == r[first[has_second]]
    second = np.zeros(first.size)
    second[has_second] = s[nxt[has_second]]
    return r[first], c[first], s[first], np.maximum(second, 0.0)


def _eccentric_pairs(
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    score: NDArray[np.float64],
    n_left: int,
    n_right: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Mutual-best pairs (positive score) with their eccentricity, the smaller of the two
    sides': (best - second) / standard deviation of the row's scores over every record of the
    other side (those without a candidate pair score 0) (Narayanan & Shmatikov 2009)."""
    out: list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]] = []
    for rows, cols, n_rows, n_cols in (
        (left, right, n_left, n_right),
        (right, left, n_right, n_left),
    ):
        row, col, best, second = _best_two(rows, cols, score)
        mean = np.bincount(rows, score, n_rows)[row] / n_cols
        square = np.bincount(rows, score * score, n_rows)[row] / n_cols
        spread = np.sqrt(np.maximum(square - mean * mean, 1e-12))
        out.append((row, col, (best - second) / spread * (best > 0)))
    (l_row, l_col, l_ecc), (r_row, r_col, r_ecc) = out
    back = np.full(n_right, -1, dtype=np.int64)
    back[r_row] = r_col
    back_ecc = np.zeros(n_right)
    back_ecc[r_row] = r_ecc
    mutual = back[l_col] == l_row
    ecc = np.minimum(l_ecc, back_ecc[l_col])
    return l_row[mutual], l_col[mutual], ecc[mutual]


@dataclass(frozen=True)
class _GroupField:
    """One field on both sides: encoded row -> group (identical filters), attacker row -> key
    (normalised value, with its salt value when the field is salted), key weights."""

    row_group: NDArray[np.int64]
    group_counts: NDArray[np.int64]
    row_value: NDArray[np.int64]
    value_counts: NDArray[np.int64]

    @property
    def weight(self) -> NDArray[np.float64]:
        """-log(share of the attacker's records holding each key)."""
        weight: NDArray[np.float64] = -np.log(
            self.value_counts / max(1, int(self.value_counts.sum()))
        )
        return weight


def _classes(values: NDArray[np.uint64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(row -> class, -1 where the value is 0 (missing); class sizes) of a key column."""
    row_class = np.full(values.shape[0], -1, dtype=np.int64)
    present = values != 0
    uniq, inverse = np.unique(values[present], return_inverse=True)
    row_class[present] = inverse.reshape(-1)
    return row_class, np.bincount(row_class[present], minlength=uniq.size).astype(np.int64)


def _key_field(encoded_keys: NDArray[np.uint64], attacker_keys: NDArray[np.uint64]) -> _GroupField:
    """A blocking rule (or a salt source) as a :class:`_GroupField`: the classes of equal keys
    (tags) on each side."""
    row_group, group_counts = _classes(encoded_keys)
    return _GroupField(row_group, group_counts, *_classes(attacker_keys))


def _same_partition(a: NDArray[np.int64], b: NDArray[np.int64]) -> bool:
    """Whether two row -> class columns (-1 missing) group the rows identically."""
    present = a >= 0
    if not np.array_equal(present, b >= 0):
        return False
    if not present.any():
        return True
    pairs = int(np.unique(np.stack([a[present], b[present]], axis=1), axis=0).shape[0])
    return pairs == int(np.unique(a[present]).size) == int(np.unique(b[present]).size)


def _informative(field: _GroupField, others: Sequence[_GroupField]) -> bool:
    """A group field worth reading: some class on each side (an all-missing column has no
    key weights to score with), and not the same classes on both sides as one already read
    (a ``filter`` blocking part or a ``<field>.value`` salt tag repeats its field's filter
    classes; reading it twice would count the same evidence twice)."""
    if field.group_counts.size == 0 or field.value_counts.size == 0:
        return False
    return not any(
        _same_partition(field.row_group, other.row_group)
        and _same_partition(field.row_value, other.row_value)
        for other in others
    )


def published_group_fields(
    schema: Schema, encoded: EncodedBatch, attacker: EncodedBatch
) -> dict[str, _GroupField]:
    """The equality classes the matcher sees besides the field filters, as group fields: one
    per blocking rule (``"block:<rule>"``, classes of equal keys) and one per salt source
    (``"tag:<source>"``, classes of equal salt tags). Keys and tags are keyed hashes, so the
    attacker's own, computed under its own secret on its own population (``attacker``), class
    its records exactly as the agencies' class theirs. 0 (a part or the salt missing) is no
    class; a column with no class on either side is left out."""
    out: dict[str, _GroupField] = {}
    for r, rule in enumerate(schema.blocking):
        out[f"block:{rule.name}"] = _key_field(encoded.block_keys[:, r], attacker.block_keys[:, r])
    for t, source in enumerate(schema.salt_sources):
        out[f"tag:{source}"] = _key_field(encoded.salt_tags[:, t], attacker.salt_tags[:, t])
    return {
        name: field
        for name, field in out.items()
        if field.group_counts.size and field.value_counts.size
    }


def _row_labels(field: _GroupField, labels: NDArray[np.int64]) -> NDArray[np.int64]:
    present = field.row_group >= 0
    out = np.full(field.row_group.shape[0], -1, dtype=np.int64)
    out[present] = labels[field.row_group[present]]
    return out


def _score_pairs(
    fields: dict[str, _GroupField], labels: dict[str, NDArray[np.int64]], n_left: int, n_right: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Candidate record pairs (sharing a labelled key, or two, in blocks of at most
    :data:`_COOCCUR_BLOCK` pairs) and, per field, +weight where the encoded group's label is
    the attacker's key, -weight where both are known and differ (pairs x fields)."""
    names = list(fields)
    row_labels = {f: _row_labels(fields[f], labels[f]) for f in names}
    rules = [(f,) for f in names] + [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    left_keys = np.zeros((n_left, len(rules)), dtype=np.uint64)
    right_keys = np.zeros((n_right, len(rules)), dtype=np.uint64)
    for r, rule in enumerate(rules):
        for keys, columns in (
            (left_keys, [row_labels[f] for f in rule]),
            (right_keys, [fields[f].row_value for f in rule]),
        ):
            code = np.zeros(keys.shape[0], dtype=np.int64)
            ok = np.ones(keys.shape[0], dtype=bool)
            for f, column in zip(rule, columns, strict=True):
                code = code * (fields[f].value_counts.size + 1) + column + 1
                ok &= column >= 0
            keys[ok, r] = code[ok].astype(np.uint64)
    pairs = blocking.candidate_pairs_link(left_keys, right_keys, max_block_size=_COOCCUR_BLOCK)
    left, right = pairs.left.astype(np.int64), pairs.right.astype(np.int64)
    parts = np.zeros((left.size, len(names)))
    for k, f in enumerate(names):
        label, value = row_labels[f][left], fields[f].row_value[right]
        known = (label >= 0) & (value >= 0)
        weight = fields[f].weight[np.where(known, label, 0)]
        parts[:, k] = np.where(known, np.where(label == value, weight, -weight), 0.0)
    return left, right, parts


def _one_to_one(
    groups: NDArray[np.int64], values: NDArray[np.int64], strength: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Keep, per value, the strongest group claiming it (equal values give one group)."""
    order = np.lexsort((-strength, values))
    keep = order[np.r_[True, values[order][1:] != values[order][:-1]]] if order.size else order
    return groups[keep], values[keep]


def _vote_labels(
    field: _GroupField, labels: NDArray[np.int64], left: NDArray[np.int64], right: NDArray[np.int64]
) -> NDArray[np.int64]:
    """Relabel the groups of accepted record pairs by majority vote of their matched records'
    keys (more than half of the group's accepted records); other groups keep their label
    unless a voted group took their key."""
    group, value = field.row_group[left], field.row_value[right]
    ok = (group >= 0) & (value >= 0)
    group, value = group[ok], value[ok]
    out = labels.copy()
    if group.size == 0:
        return out
    width = field.value_counts.size
    codes, votes = np.unique(group * width + value, return_counts=True)
    voted_group, voted_value = codes // width, codes % width
    total = np.bincount(voted_group, votes, labels.size)
    row, winner, best, _ = _best_two(voted_group, voted_value, votes.astype(np.float64))
    majority = 2 * best > total[row]
    g, v = _one_to_one(row[majority], winner[majority], best[majority])
    out[np.isin(out, v)] = -1
    out[g] = v
    return out


def _profile_labels(
    field: _GroupField,
    labels: NDArray[np.int64],
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    evidence: NDArray[np.float64],
) -> NDArray[np.int64]:
    """Label unlabelled groups by the co-occurrence profile of their records over the labelled
    groups of the other fields: a group's evidence for a key is the sum over its records of
    their best ``evidence`` (record-pair score without this field) against a record holding
    the key; a group takes the key whose evidence beats the runner-up by
    :data:`_PROFILE_MARGIN` and twice over, when the key's best group is that group too."""
    group, value = field.row_group[left], field.row_value[right]
    taken = np.zeros(field.value_counts.size + 1, dtype=bool)
    taken[labels[labels >= 0]] = True
    ok = (group >= 0) & (value >= 0) & (evidence > 0)
    ok[ok] = (labels[group[ok]] < 0) & ~taken[value[ok]]
    out = labels.copy()
    if not ok.any():
        return out
    width = field.value_counts.size
    rows, value, evidence, group = left[ok], value[ok], evidence[ok], group[ok]
    # a record's evidence for a key: its best pair with a record holding the key
    order = np.lexsort((-evidence, value, rows))
    first = order[np.r_[True, (np.diff(rows[order]) != 0) | (np.diff(value[order]) != 0)]]
    codes, inverse = np.unique(group[first] * width + value[first], return_inverse=True)
    total = np.bincount(inverse.reshape(-1), evidence[first]).astype(np.float64)
    groups, values = codes // width, codes % width
    g, best_v, best, second = _best_two(groups, values, total)
    v, best_g, _, _ = _best_two(values, groups, total)
    back = np.full(width, -1, dtype=np.int64)
    back[v] = best_g
    sure = (best - second >= _PROFILE_MARGIN) & (best >= 2 * second) & (back[best_v] == g)
    out[g[sure]] = best_v[sure]
    return out


def _mix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64 (one step: add the golden gamma, then the output mix), elementwise."""
    return harden.splitmix64_mix(x + harden.GOLDEN_GAMMA)


def _colours(
    row_groups: Sequence[NDArray[np.int64]], sizes: Sequence[NDArray[np.int64]], rounds: int
) -> NDArray[np.uint64]:
    """Colour refinement (1-dimensional Weisfeiler-Lehman) of one side's record-group graph:
    a record starts coloured by the exact sizes of its groups (0 where the field is missing),
    then each round a group is coloured by the multiset of its records' colours (an
    order-free sum of their hashes) and a record by its colour and its groups' colours. The
    same function of either side's groups, so equal colours mean equal neighbourhoods."""
    n = row_groups[0].shape[0]
    colour = np.full(n, np.uint64(len(row_groups)), dtype=np.uint64)
    for rows, size in zip(row_groups, sizes, strict=True):
        present = rows >= 0
        own = np.zeros(n, dtype=np.uint64)
        own[present] = size[rows[present]].astype(np.uint64) + np.uint64(1)
        colour = _mix(colour * np.uint64(1_000_003) + own)
    for _ in range(rounds):
        hashed = _mix(colour)
        following = colour
        for k, (rows, size) in enumerate(zip(row_groups, sizes, strict=True)):
            present = rows >= 0
            total = np.zeros(size.shape[0], dtype=np.uint64)
            np.add.at(total, rows[present], hashed[present])
            group = np.zeros(n, dtype=np.uint64)
            group[present] = _mix(total[rows[present]] + np.uint64(k))
            following = _mix(following * np.uint64(1_000_003) + group)
        colour = following
    return colour


def colour_seeds(
    left_colours: NDArray[np.uint64], right_colours: NDArray[np.uint64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Record pairs whose colour is held by exactly one record on each side."""
    values_l, index_l, counts_l = np.unique(left_colours, return_index=True, return_counts=True)
    values_r, index_r, counts_r = np.unique(right_colours, return_index=True, return_counts=True)
    _, at_l, at_r = np.intersect1d(values_l, values_r, return_indices=True)
    unique = (counts_l[at_l] == 1) & (counts_r[at_r] == 1)
    return index_l[at_l[unique]].astype(np.int64), index_r[at_r[unique]].astype(np.int64)


def cooccurrence_attack(
    encoded: EncodedBatch,
    schema: Schema,
    attacker_columns: dict[str, list[str | None]],
    *,
    seed_pairs: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
    rounds: int = _COOCCUR_ROUNDS,
    attacker: EncodedBatch | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Group co-occurrence (seed-and-propagate) attack: (encoded index, attacker index,
    eccentricity), one-to-one. Needs no filter bit: only which records share a field's filter.

    Deterministic encodings, hardened or not, give equal values equal field filters, so per
    published field (every view and combined field too) the matcher sees the equality classes
    (groups) of the values; a salted field's class is the (value, salt value) combination.
    The attacker keys its own records the way the encoder groups them (:func:`_plain_field`:
    normalised value, with the salt value where the published schema salts) and aligns groups
    with keys:

    1. Seeds: per field, groups and keys of equal size rank where the rank is well separated
       on both sides (:func:`frequency_seeds`); record pairs of equal exact colour
       (:func:`_colours`, :func:`colour_seeds`: the round among the first
       :data:`_COLOUR_ROUNDS` with most pairs) and ``seed_pairs`` (record pairs known by
       other means) label their groups by majority vote on top.
    2. Record pairs sharing a labelled key are scored by the sum over fields of
       +-w (agree / disagree), w = -log(share of the attacker's records holding the key);
       a pair is accepted when mutual best with eccentricity at least :data:`_ECCENTRICITY`
       (:func:`_eccentric_pairs`).
    3. Groups are relabelled by majority vote of their accepted records' keys
       (:func:`_vote_labels`); unlabelled groups whose records' co-occurrence over the
       labelled groups of the other fields fits one key far better than any other take it
       (:func:`_profile_labels`). Steps 2-3 repeat until no label changes (``rounds`` at most).

    Exact colour refinement seeds only where the two populations are the same; the size-rank
    rule and the structural stage seed too little on the synthetic populations, and
    propagation from a few known record pairs (``seed_pairs``, auxiliary knowledge) is
    strong (measured while the attack was built; figures in the git history).

    With ``attacker`` (its own population encoded under its own secret) everything else the
    matcher sees with equality semantics is read as equality classes too
    (:func:`published_group_fields`): one per blocking rule (keyed hashes of value
    combinations) and one per salt source (keyed salt tags), so the attacker's own keys and
    tags class its records exactly as the agencies' class theirs. A column with no class on
    either side is skipped, and so is one whose classes, on both sides, are those of a field
    already read (a rule of ``filter`` parts of one field, a ``<field>.value`` salt tag):
    it adds no evidence, and counting it twice would weigh that field double. Rules over
    transformed values combine unsalted values that salting was meant to split, which is why
    the shipped schema blocks on ``filter`` parts only (measured while the attack was built;
    figures in the git history).
    """
    # every published filter is an equality class: each view, each combined field
    present = list(encoded.field_names)
    n_left = len(encoded)
    n_right = len(raw_values(schema.field(present[0]), attacker_columns))
    fields: dict[str, _GroupField] = {}
    labels: dict[str, NDArray[np.int64]] = {}
    empty = np.zeros(0, dtype=np.int64)
    candidates: dict[str, _GroupField] = {}
    for f in present:
        cipher = _cipher_field(encoded, f, schema.field(f).hashes_per_token)
        plain = _plain_field(schema, f, attacker_columns)
        candidates[f] = _GroupField(cipher.row_group, cipher.counts, plain.row_value, plain.counts)
    if attacker is not None:
        # the published blocking keys and salt tags are equality classes too
        candidates |= published_group_fields(schema, encoded, attacker)
    for f, field in candidates.items():
        if _informative(field, list(fields.values())):
            fields[f] = field
    names = list(fields)
    if not names:
        return empty, empty, np.zeros(0)
    for f in names:
        labels[f] = np.full(fields[f].group_counts.size, -1, dtype=np.int64)
        groups, values = frequency_seeds(fields[f].group_counts, fields[f].value_counts)
        labels[f][groups] = values
        if seed_pairs is not None:
            labels[f] = _vote_labels(fields[f], labels[f], *seed_pairs)
    # exact colour refinement: the most record pairs any of the first rounds makes unique
    left_sides = [fields[f].row_group for f in names], [fields[f].group_counts for f in names]
    right_sides = [fields[f].row_value for f in names], [fields[f].value_counts for f in names]
    colour_left, colour_right = empty, empty
    for colour_round in range(_COLOUR_ROUNDS + 1):
        pair = colour_seeds(
            _colours(*left_sides, colour_round), _colours(*right_sides, colour_round)
        )
        if pair[0].size > colour_left.size:
            colour_left, colour_right = pair
    for f in names:
        labels[f] = _vote_labels(fields[f], labels[f], colour_left, colour_right)
    log.info(
        "co-occurrence seeds (%d record pairs of equal colour): %s",
        colour_left.size,
        {f: int((labels[f] >= 0).sum()) for f in names},
    )
    left, right, eccentricity = colour_left, colour_right, np.zeros(0)
    for round_ in range(rounds + 1):
        pairs_left, pairs_right, parts = _score_pairs(fields, labels, n_left, n_right)
        # records matched last round compete only for their own partner (matched nodes
        # leave the graph, as in Narayanan & Shmatikov's propagation)
        partner_left = np.full(n_left, -1, dtype=np.int64)
        partner_right = np.full(n_right, -1, dtype=np.int64)
        partner_left[left], partner_right[right] = right, left
        free = ((partner_left[pairs_left] < 0) | (partner_left[pairs_left] == pairs_right)) & (
            (partner_right[pairs_right] < 0) | (partner_right[pairs_right] == pairs_left)
        )
        pairs_left, pairs_right, parts = pairs_left[free], pairs_right[free], parts[free]
        left, right, eccentricity = _eccentric_pairs(
            pairs_left, pairs_right, parts.sum(axis=1), n_left, n_right
        )
        sure = eccentricity >= _ECCENTRICITY
        left, right, eccentricity = left[sure], right[sure], eccentricity[sure]
        if round_ == rounds:
            break
        changed = False
        total = parts.sum(axis=1)
        for k, f in enumerate(names):
            relabelled = _vote_labels(fields[f], labels[f], left, right)
            relabelled = _profile_labels(
                fields[f], relabelled, pairs_left, pairs_right, total - parts[:, k]
            )
            changed |= not np.array_equal(relabelled, labels[f])
            labels[f] = relabelled
        log.info(
            "co-occurrence round %d: %d pairs accepted, labelled %s",
            round_,
            left.size,
            {f: int((labels[f] >= 0).sum()) for f in names},
        )
        if not changed:
            break
    order = np.argsort(-eccentricity, kind="stable")
    return left[order], right[order], eccentricity[order]
