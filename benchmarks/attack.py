"""Re-identification attack benchmark: how much an honest-but-curious matcher can learn.

Role: measures the hardening options of :mod:`linkage.harden` (and salting) against the
attacks the literature runs on Bloom-filter encodings, beside the linkage quality they cost,
so that the default hardening is chosen from one table. ``python -m benchmarks.attack`` prints
one JSON object per line and setting; ``--large`` uses 50 000 records; ``--plot PATH``
draws :func:`plot_tradeoff`. Figures: ``benchmarks/RESULTS.md``.

Threat model: the attacker is the matcher. It sees every published encoding (field filters
and the record-level filter, after hardening) and the published schema, never the linkage
secret. Data: the health agency's records of a seeded synthetic child population, one record
per child, encoded with the real encoder and the shipped child schema, as shipped or
modified per setting (:func:`setting_schema`, :func:`publish_setting`: exactly as a node
publishes them, forms included). The attacker encodes its own population with the same
schema and its own secret.

Attacks:

1. frequency alignment of names (:func:`frequency_attack`), plain, salt-aware and with every
   salt known (an upper bound on what the salt tags could add);
2. graph matching (:func:`graph_attack`: :func:`structural_attack`, then
   :func:`decode_and_match`) at several overlaps between the attacker's plaintext and the
   encoded records, and the group co-occurrence attack (:func:`cooccurrence_attack`), which
   reads only which records share a filter, blocking key or salt tag;
3. insider probing of a real matcher through ``Match`` (:mod:`benchmarks.insider`);
4. the linkage quality of the same settings (``pipeline.cluster_datasets`` on the
   four-agency synthetic population, ``pipeline.link_two`` on FEBRL4-half).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from linkage import blocking, evaluate, harden, pipeline, similarity, synthetic
from linkage import normalise as norm
from linkage.encode import EncodedBatch, blocking_value, encode_records, raw_values, tokenise
from linkage.errors import InvalidValueError
from linkage.forms import Forms, encode_forms
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import (
    Hardening,
    Schema,
    default_child_schema,
    febrl_schema,
    schema_from_dict,
)

log = logging.getLogger(__name__)

NAME_FIELDS = ("given_name", "family_name")
#: Name fields salted by the ``salt`` settings, in the child and the FEBRL schema.
SALTED_FIELDS = ("given_name", "middle_names", "family_name", "surname")
SALT = "date_of_birth.value"
OVERLAPS = (0.2, 0.5, 0.8, 1.0)
#: The attacker's own secret (it never has the agencies' one).
ATTACKER_SECRET = LinkageSecret(bytes(range(100, 132)))


@dataclass(frozen=True)
class Setting:
    """One hardening configuration: salting of the name fields plus :class:`Hardening`.

    ``hardening`` applies to every field-level filter and, unless ``record_hardening`` says
    otherwise, to the record-level filter alike. ``as_shipped`` measures the schema exactly as
    shipped instead (its salts, hardening and blocking rules untouched; the other options are
    then ignored): the child schema, and for FEBRL4-half its analogue
    (:func:`shipped_febrl_schema`).
    """

    name: str
    as_shipped: bool = False
    salt: bool = False
    hardening: Hardening = dataclasses.field(default_factory=Hardening)
    record_hardening: Hardening | None = None
    #: the salt (``"<field>.<transform>"``) of the name fields when ``salt`` is set
    salt_source: str = SALT


SETTINGS: tuple[Setting, ...] = (
    Setting("shipped", as_shipped=True),
    Setting("none"),
    Setting("salt", salt=True),
    Setting("balance", hardening=Hardening(balance=True)),
    Setting("xor_fold", hardening=Hardening(balance=True, xor_fold=True)),
    Setting("blip_eps8", hardening=Hardening(blip_epsilon=8.0)),
    Setting("blip_eps4", hardening=Hardening(blip_epsilon=4.0)),
    Setting("diffusion_t3", hardening=Hardening(diffusion_t=3)),
    Setting("diffusion_t5", hardening=Hardening(diffusion_t=5)),
    Setting("salt+diffusion_t3", salt=True, hardening=Hardening(diffusion_t=3)),
    Setting("balance+diffusion_t3", hardening=Hardening(balance=True, diffusion_t=3)),
)
"""``shipped`` is the child schema as shipped: names and postcode salted with the full date of
birth, the date of birth with sex, keyed diffusion (t = 3) on every filter, blocking rules of
``filter`` parts. The other settings start from it with every salt removed (then the name
fields salted with :data:`SALT` by the ``salt`` ones) and its hardening replaced; they keep its
blocking rules. ``xor_fold`` is run on balanced filters: the 64-bit ``sex`` filter cannot be
folded alone."""


# --------------------------------------------------------------------------- encoding


def setting_schema(base: Schema, setting: Setting) -> Schema:
    """``base`` hardened as ``setting`` says: ``base`` itself for an ``as_shipped`` setting;
    otherwise every salt of ``base`` removed (the shipped child schema salts), then its name
    fields salted with the setting's ``salt_source`` (:data:`SALT` unless ``--salt`` chose
    another) when the setting salts, and its hardening replaced by the setting's. Blocking
    rules are kept.

    Built with :meth:`Schema.with_hardening`, so the encoder itself hardens (and the schema
    fingerprint, which the matcher and the attacker see, names the hardening).
    """
    if setting.as_shipped:
        return base
    schema = base.with_salt("")
    if setting.salt:
        schema = schema.with_salt(setting.salt_source, SALTED_FIELDS)
    record = setting.hardening if setting.record_hardening is None else setting.record_hardening
    return schema.with_hardening(record=record, fields=setting.hardening)


def filter_blocking(schema: Schema) -> Schema:
    """``schema`` with every blocking rule's parts replaced by ``"<field>.filter"`` for the
    distinct fields the rule names (in order), identical rules after that dropped (the first
    one's name kept): the records a rule groups are then exactly those whose published
    filters of its fields are equal, as in the shipped child schema. Validated as a parsed
    file would be (:func:`schema_from_dict`)."""
    data = schema.to_dict()
    rules: dict[tuple[str, ...], str] = {}
    for rule in schema.blocking:
        parts = tuple(f"{name}.filter" for name in dict.fromkeys(f for f, _ in rule.parts))
        rules.setdefault(parts, rule.name)
    data["blocking"] = [{"name": name, "parts": list(parts)} for parts, name in rules.items()]
    return schema_from_dict(data)


#: FEBRL fields salted in :func:`shipped_febrl_schema`, as the child schema salts the names and
#: the postcode.
FEBRL_SALTED_FIELDS = ("given_name", "surname", "postcode")


def shipped_febrl_schema() -> Schema:
    """The FEBRL analogue of the shipped child schema (FEBRL4-half quality of ``shipped``):
    given name, surname and postcode salted with the full date of birth, keyed diffusion
    (t = 3) on the record filter and every field filter, blocking on equal filters
    (:func:`filter_blocking`). FEBRL has no sex field, so its date of birth stays unsalted."""
    diffusion = Hardening(diffusion_t=3)
    schema = febrl_schema().with_salt(SALT, FEBRL_SALTED_FIELDS)
    return filter_blocking(schema.with_hardening(record=diffusion, fields=diffusion))


def encode_setting(
    base: Schema,
    setting: Setting,
    columns: dict[str, list[str | None]],
    secret: LinkageSecret,
) -> tuple[Schema, EncodedBatch]:
    """Encode ``columns`` as an agency node would under ``setting`` (schema for the matcher).

    The attacker calls this too, on its own population with its own secret: it knows the
    published schema, hardening included, but not the agencies' key.
    """
    schema = setting_schema(base, setting)
    return schema, encode_records(schema, KeySet(secret), columns)


def publish_setting(
    base: Schema,
    setting: Setting,
    columns: dict[str, list[str | None]],
    secret: LinkageSecret,
) -> tuple[Schema, Forms]:
    """What an agency node publishes under ``setting``: :func:`encode_setting`'s encodings,
    a record lacking an assumable salt field once per value (:mod:`linkage.forms`)."""
    schema = setting_schema(base, setting)
    return schema, encode_forms(schema, KeySet(secret), columns)


# --------------------------------------------------------------------------- data


def one_record_per_child(
    n_records: int, seed: int
) -> tuple[dict[str, list[str | None]], NDArray[np.int64]]:
    """``n_records`` health-agency records of distinct children, in a seeded random order."""
    data = synthetic.generate_population(int(n_records / 0.9) + 200, seed=seed)
    health = data.agencies["health"]
    _, first = np.unique(health.child_id, return_index=True)
    order = np.random.default_rng(seed).permutation(first)[:n_records]
    columns = {c: [health.columns[c][int(i)] for i in order] for c in health.columns}
    return columns, health.child_id[order]


def attacker_population(n_records: int, overlap: float, seed: int) -> NDArray[np.int64]:
    """Rows of the pool (:func:`one_record_per_child` of ``n_records * (2 - overlap)`` or more)
    the attacker holds: ``overlap`` of the encoded rows ``0..n_records-1`` and rows beyond
    them, ``n_records`` in all, in a seeded order."""
    shared = round(overlap * n_records)
    rows = np.arange(n_records - shared, 2 * n_records - shared, dtype=np.int64)
    return np.random.default_rng(seed + 1).permutation(rows)


def take_columns(
    columns: dict[str, list[str | None]], rows: NDArray[np.int64]
) -> dict[str, list[str | None]]:
    return {c: [values[int(i)] for i in rows] for c, values in columns.items()}


def normalised_values(schema: Schema, field: str, values: Sequence[str | None]) -> list[str | None]:
    """The shipped normaliser's output per value (None where missing or invalid)."""
    spec = schema.field(field)
    normaliser = norm.NORMALISERS[spec.kind]
    out: list[str | None] = []
    for value in values:
        try:
            out.append(
                normaliser(value, field=field, day_first=schema.day_first, years=schema.date_range)
            )
        except InvalidValueError:
            out.append(None)
    return out


# --------------------------------------------------------------------------- attack 1


def frequency_attack(
    filters: NDArray[np.uint64],
    present: NDArray[np.bool_],
    true_values: Sequence[str | None],
    attacker_values: Sequence[str | None],
    attacker_salts: Sequence[str] | None = None,
    encoded_salts: Sequence[str] | None = None,
) -> tuple[float, float]:
    """Rank-align identical-filter groups with the attacker's name list.

    Without ``attacker_salts`` the attacker ranks values alone. With them (the attacker knows
    from the published schema that the field is salted, and with what), it ranks the
    (salt, value) combinations of its own population, since a salted encoding groups records
    by that combination, and labels a group with the value of the combination of equal rank.
    With ``encoded_salts`` too (the salt value of every encoded record: an upper bound on what
    the published salt tags give away, since they tell which records share a salt value but
    not which value), it ranks groups and combinations within each salt value separately.
    Either way a record counts as re-identified when its group is labelled with its true value.

    Returns (share of present encodings re-identified, share of distinct true values of
    which at least one group was labelled correctly).
    """
    rows = np.flatnonzero(present)
    if rows.size == 0:
        return 0.0, 0.0
    view = np.ascontiguousarray(filters[rows]).view(np.dtype((np.void, filters.shape[1] * 8)))
    _, group, sizes = np.unique(view.ravel(), return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    first_seen = np.full(sizes.shape[0], rows.size, dtype=np.int64)
    np.minimum.at(first_seen, group, np.arange(rows.size))
    salts = attacker_salts if attacker_salts is not None else [""] * len(attacker_values)
    public = Counter((v, salt) for v, salt in zip(attacker_values, salts, strict=True) if v)
    # the salt value a group is ranked within ("" for one ranking over every group)
    group_salt = [""] * sizes.shape[0]
    if encoded_salts is not None:
        for g, r in zip(group.tolist(), rows.tolist(), strict=True):
            group_salt[g] = encoded_salts[r]
    ranked_by_salt: dict[str, list[str]] = {}
    for (name, salt), _ in sorted(public.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        ranked_by_salt.setdefault(salt if encoded_salts is not None else "", []).append(name)
    guess: list[str | None] = [None] * sizes.shape[0]
    next_rank: dict[str, int] = {}
    # groups in order: size descending, then first appearance; each takes the next name of
    # its salt's ranking
    for g in np.lexsort((first_seen, -sizes)).tolist():
        ranking = ranked_by_salt.get(group_salt[g], [])
        rank = next_rank.get(group_salt[g], 0)
        next_rank[group_salt[g]] = rank + 1
        guess[g] = ranking[rank] if rank < len(ranking) else None
    truth = [true_values[int(r)] for r in rows]
    hit = np.array([guess[int(g)] == t for g, t in zip(group, truth, strict=True)], dtype=bool)
    distinct = {t for t in truth if t}
    found = {t for t, h in zip(truth, hit, strict=True) if h}
    return float(hit.mean()), len(found) / max(1, len(distinct))


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


def graph_attack(
    encoded: EncodedBatch,
    attacker: EncodedBatch,
    *,
    schema: Schema | None = None,
    attacker_columns: dict[str, list[str | None]] | None = None,
    seed_share: float = 0.3,
    encoded_side: GraphSide | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The attacker's claimed matches (encoded index, attacker index), one-to-one.

    Structural stage (:func:`structural_attack`); when the attacker's plaintext is given, the
    decoding stage (:func:`decode_and_match`) runs twice: once seeded by the structural
    stage's ``seed_share`` most confident matches (which override the value seeds: right when
    the overlap is large), once from the value seeds alone (which need no overlap: at 0.2 most
    structural seeds are wrong and poison the decoder). The attacker keeps the run with more
    claims, a self-check it computes without ground truth (every claim already has at least
    three decoded fields agreeing and at most one disagreeing). Decoded matches come first;
    structural matches fill in rows and columns left free only when the structurally seeded
    run won, since otherwise the structural stage is evidently unreliable and its claims would
    only cost precision. ``encoded_side`` is :func:`graph_side` of ``encoded`` when built.

    The group co-occurrence run (:func:`cooccurrence_attack`) is the third candidate: its
    claims go first and the run above fills the rows and columns they left free (each of its
    claims is mutual best with an eccentricity test on exact group equalities, so they are
    the most precise)."""
    left, right, margin = structural_attack(encoded_side or encoded, attacker)
    if schema is None or attacker_columns is None:
        return left, right
    best = np.argsort(-margin, kind="stable")[: int(seed_share * left.shape[0])]
    seeded_left, seeded_right, _ = decode_and_match(
        encoded, attacker, schema, attacker_columns, seed_pairs=(left[best], right[best])
    )
    value_left, value_right, _ = decode_and_match(
        encoded, attacker, schema, attacker_columns, rounds=12
    )
    if value_left.shape[0] > seeded_left.shape[0]:
        chosen = value_left, value_right
    else:
        free = ~np.isin(left, seeded_left) & ~np.isin(right, seeded_right)
        chosen = (
            np.concatenate([seeded_left, left[free]]),
            np.concatenate([seeded_right, right[free]]),
        )
    group_left, group_right, _ = cooccurrence_attack(
        encoded, schema, attacker_columns, attacker=attacker
    )
    # co-occurrence claims first: each is mutual best with an eccentricity test on exact
    # group equalities; ranking the runs by claim count instead put the decoding run's
    # ~6,000 mostly wrong claims on salt+diffusion_t3 at overlap 1.0 first (11.65 %
    # re-identified, precision 0.33, against 20.75 % for the co-occurrence run alone)
    first, second = (group_left, group_right), chosen
    free = ~np.isin(second[0], first[0]) & ~np.isin(second[1], first[1])
    return np.concatenate([first[0], second[0][free]]), np.concatenate([first[1], second[1][free]])


def graph_attack_rate(
    encoded: EncodedBatch,
    attacker: EncodedBatch,
    encoded_ids: NDArray[np.int64],
    attacker_ids: NDArray[np.int64],
    *,
    schema: Schema | None = None,
    attacker_columns: dict[str, list[str | None]] | None = None,
    encoded_side: GraphSide | None = None,
) -> tuple[float, float]:
    """(correct matches / overlap, precision of the claimed matches)."""
    left, right = graph_attack(
        encoded,
        attacker,
        schema=schema,
        attacker_columns=attacker_columns,
        encoded_side=encoded_side,
    )
    overlap = int(np.isin(encoded_ids, attacker_ids).sum())
    correct = int((encoded_ids[left] == attacker_ids[right]).sum())
    return correct / max(1, overlap), correct / max(1, left.shape[0])


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
#: Largest dense (values x filters) cost matrix computed for one field's value alignment.
_DENSE_LIMIT = 6_000_000


@dataclass(frozen=True)
class _PlainField:
    """The attacker's plaintext of one field: distinct (salted) values and their tokens."""

    row_value: NDArray[np.int64]  # row -> distinct value, -1 where missing
    tokens: sparse.csr_matrix  # (distinct values, vocabulary) incidence, float32
    counts: NDArray[np.int64]  # rows per distinct value


@dataclass(frozen=True)
class _CipherField:
    """The encoded side of one field: distinct filters (equal values give equal filters)."""

    row_group: NDArray[np.int64]  # row -> distinct filter, -1 where missing
    packed: NDArray[np.uint64]  # (distinct, words)
    bits: NDArray[np.float32]  # (distinct, filter bits) 0/1
    counts: NDArray[np.int64]  # rows per distinct filter
    hashes: int  # positions per token (published with the schema)


def frequency_shares(
    schema: Schema,
    encoded: EncodedBatch,
    encoded_columns: dict[str, list[str | None]],
    public_columns: dict[str, list[str | None]],
) -> dict[str, float]:
    """The frequency attack on each of :data:`NAME_FIELDS`: ``frequency_<field>[_salted |
    _salt_known]_records`` and ``..._values`` (see :func:`run_attack`). A field published in
    views is attacked view by view; the best view counts."""
    row: dict[str, float] = {}
    for field in NAME_FIELDS:
        truth = normalised_values(schema, field, encoded_columns[field])
        public = normalised_values(schema, field, public_columns[field])
        for view in (spec.name for spec in schema.fields if spec.input_name == field):
            index = encoded.field_names.index(view)
            filters, present = encoded.field_filters[index], encoded.field_present[:, index]
            found = {"": frequency_attack(filters, present, truth, public)}
            # salt-aware: (value, salt) combinations ranked (the same when unsalted)
            salts = salt_values(schema, view, public_columns)
            found["_salted"] = frequency_attack(filters, present, truth, public, salts)
            # salt-known: ranked within each salt value (what salt tags could give away)
            known = salt_values(schema, view, encoded_columns)
            found["_salt_known"] = frequency_attack(filters, present, truth, public, salts, known)
            for kind, (share, distinct) in found.items():
                if share >= row.get(f"frequency_{field}{kind}_records", -1.0):
                    row[f"frequency_{field}{kind}_records"] = share
                    row[f"frequency_{field}{kind}_values"] = distinct
    return row


def filter_index(batch: EncodedBatch, field: str) -> int:
    """The column of ``field``'s published filter in ``batch``: the field itself, or the
    first view of a field published in views (the attacks that read one filter per field)."""
    if field in batch.field_names:
        return batch.field_names.index(field)
    return next(i for i, name in enumerate(batch.field_names) if name.startswith(field + "@"))


def salt_values(schema: Schema, field: str, columns: dict[str, list[str | None]]) -> list[str]:
    """Per row, the salt the encoder mixes into ``field`` ("" when the field is unsalted; "~"
    where the salting value is missing, as the encoder writes it)."""
    spec = schema.field(field)
    rows = len(raw_values(spec, columns))
    if not spec.salt:
        return [""] * rows
    salt_field, transform = spec.salt.split(".")
    salt_kind = schema.field(salt_field).kind
    values = normalised_values(schema, salt_field, columns[salt_field])
    return [(blocking_value(salt_kind, transform, s) if s else "") or "~" for s in values]


def _plain_field(schema: Schema, field: str, columns: dict[str, list[str | None]]) -> _PlainField:
    """Normalise and tokenise the attacker's column exactly as the production encoder does."""
    spec = schema.field(field)
    values = normalised_values(schema, spec.input_name, raw_values(spec, columns))
    salts = salt_values(schema, field, columns)
    index: dict[tuple[str, str], int] = {}
    row_value = np.full(len(values), -1, dtype=np.int64)
    for row, (value, salt) in enumerate(zip(values, salts, strict=True)):
        if value is not None:
            row_value[row] = index.setdefault((salt, value), len(index))
    vocabulary: dict[str, int] = {}
    owners: list[int] = []
    columns_of: list[int] = []
    for slot, (salt, value) in enumerate(index):
        for token in tokenise(spec, value):
            owners.append(slot)
            columns_of.append(vocabulary.setdefault(f"{salt}|{token}" if salt else token,
                                                    len(vocabulary)))  # fmt: skip
    tokens = sparse.csr_matrix(
        (np.ones(len(owners), dtype=np.float32), (owners, columns_of)),
        shape=(len(index), max(1, len(vocabulary))),
    )
    counts = np.bincount(row_value[row_value >= 0], minlength=len(index)).astype(np.int64)
    return _PlainField(row_value, tokens, counts)


def _cipher_field(batch: EncodedBatch, field: str, hashes: int) -> _CipherField:
    index = filter_index(batch, field)
    filters = batch.field_filters[index]
    present = batch.field_present[:, index]
    rows = np.flatnonzero(present)
    view = np.ascontiguousarray(filters[rows]).view(np.dtype((np.void, filters.shape[1] * 8)))
    _, first, group, counts = np.unique(
        view.ravel(), return_index=True, return_inverse=True, return_counts=True
    )
    row_group = np.full(filters.shape[0], -1, dtype=np.int64)
    row_group[rows] = group.reshape(-1)
    packed = np.ascontiguousarray(filters[rows[first]])
    return _CipherField(row_group, packed, _unpacked(packed), counts.astype(np.int64), hashes)


def _pack(bits: NDArray[np.bool_]) -> NDArray[np.uint64]:
    packed = np.packbits(bits, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64)


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
#: Passes of value seeding over :data:`_SEEDED_FIELDS` (from the second, given names are
#: seeded in the context of the family names decoded before); a fourth pass adds little
#: (measured while the attack was built, figures in the git history).
_SEED_PASSES = 3


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


def _decoded_rows(cipher: _CipherField, aligned: NDArray[np.int64]) -> NDArray[np.int64]:
    """Per encoded row, the plain value its filter decodes to (-1 when none)."""
    out = np.full(cipher.row_group.shape[0], -1, dtype=np.int64)
    present = cipher.row_group >= 0
    out[present] = aligned[cipher.row_group[present]]
    return out


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


# --------------------------------------------------------------------------- quality


def quality_synthetic(setting: Setting, n_children: int, seed: int) -> dict[str, float]:
    """Pairwise precision / recall / F1 of clustering the four agencies under ``setting``."""
    from benchmarks.quality import synthetic_population

    columns, truth = synthetic_population(n_children, seed)
    published = []
    schema = default_child_schema()
    for cols in columns:
        schema, forms = publish_setting(default_child_schema(), setting, cols, _test_secret())
        published.append(forms)
    result = pipeline.cluster_forms(schema, published)
    ti, tj = evaluate.true_pairs_from_entities(truth)
    from linkage.solve import pairs_from_labels

    pi, pj = pairs_from_labels(result.labels)
    q = evaluate.pairwise_quality(pi, pj, ti, tj, ordered=False)
    return {"precision": q.precision, "recall": q.recall, "f1": q.f1}


def quality_febrl4_half(setting: Setting, seed: int) -> dict[str, float]:
    """Precision / recall / F1 of linking FEBRL4-half under ``setting`` (``salt`` salts the
    FEBRL name fields with the same date-of-birth transform as the child schema's; an
    ``as_shipped`` setting encodes under :func:`shipped_febrl_schema`)."""
    from benchmarks.quality import _columns, _febrl4

    a, b, ti, tj = _febrl4(True, seed)
    base = shipped_febrl_schema() if setting.as_shipped else febrl_schema()
    schema, left = encode_setting(base, setting, _columns(a), _test_secret())
    _, right = encode_setting(base, setting, _columns(b), _test_secret())
    result = pipeline.link_two(schema, left, right, one_to_one=True)
    q = evaluate.pairwise_quality(result.left, result.right, ti, tj, ordered=True)
    return {"precision": q.precision, "recall": q.recall, "f1": q.f1}


def _test_secret() -> LinkageSecret:
    return LinkageSecret.for_tests()


# --------------------------------------------------------------------------- driver


def run_attack(
    settings: Sequence[Setting] = SETTINGS,
    *,
    n_records: int = 10_000,
    overlaps: Sequence[float] = OVERLAPS,
    seed: int = 7,
    quality: bool = True,
    graph: bool = True,
    quality_children: int = 5_000,
    emit: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Run every attack (and the quality measurement) per setting; yields one row each."""
    base = default_child_schema()
    pool_size = math.ceil(n_records * (2 - min(overlaps))) if overlaps else n_records
    columns, child_ids = one_record_per_child(pool_size, seed)
    public_columns, _ = one_record_per_child(n_records, seed + 1000)
    encoded_rows = np.arange(n_records, dtype=np.int64)
    for setting in settings:
        started = time.perf_counter()
        encoded_columns = take_columns(columns, encoded_rows)
        schema, encoded = encode_setting(base, setting, encoded_columns, _test_secret())
        row: dict[str, Any] = {"setting": setting.name, "records": n_records}
        if setting.as_shipped:
            # salt sources and record hardening as the schema ships them
            row["salt"] = ",".join(schema.salt_sources)
            row["hardening"] = schema.hardening.to_dict() | {"salt": bool(schema.salt_sources)}
            # the attacks read each record's encoding; a node publishes a record lacking sex
            # as forms (linkage.forms) instead: how many of the attacked records that concerns
            _, published = publish_setting(base, setting, encoded_columns, _test_secret())
            row["records_published_as_forms"] = int((published.form == 0).sum())
        else:
            row["salt"] = setting.salt_source if setting.salt else ""
            row["hardening"] = dataclasses.asdict(setting.hardening) | {"salt": setting.salt}
        row |= frequency_shares(schema, encoded, encoded_columns, public_columns)
        encoded_side = graph_side(encoded) if graph else None
        for overlap in overlaps if graph else ():
            attacker_rows = attacker_population(n_records, overlap, seed)
            attacker_columns = take_columns(columns, attacker_rows)
            attacker_schema, attacker = encode_setting(
                base, setting, attacker_columns, ATTACKER_SECRET
            )
            rate, precision = graph_attack_rate(
                encoded,
                attacker,
                child_ids[encoded_rows],
                child_ids[attacker_rows],
                schema=attacker_schema,
                attacker_columns=attacker_columns,
                encoded_side=encoded_side,
            )
            row[f"graph_{overlap}"] = rate
            row[f"graph_{overlap}_precision"] = precision
        if graph:
            row["graph_max"] = max((row[f"graph_{o}"] for o in overlaps), default=0.0)
        row["frequency_max"] = max(
            row[f"frequency_{f}{kind}_records"]
            for f in NAME_FIELDS
            for kind in ("", "_salted", "_salt_known")
        )
        if quality:
            for key, value in quality_synthetic(setting, quality_children, seed).items():
                row[f"synthetic_{key}"] = value
            for key, value in quality_febrl4_half(setting, seed).items():
                row[f"febrl4_half_{key}"] = value
        row["seconds"] = time.perf_counter() - started
        if emit:
            emit(row)
        yield row


def plot_tradeoff(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Two panels: max re-identification rate vs synthetic F1, and graph rate vs overlap.
    The ``shipped`` row (the schema as shipped) is drawn as a star, labelled as such."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    for row in rows:
        reid = max(row.get("graph_max", 0.0), row.get("frequency_max", 0.0))
        f1 = row.get("synthetic_f1", float("nan"))
        shipped = row["setting"] == "shipped"
        label = "shipped (default schema)" if shipped else row["setting"]
        left.scatter([f1], [reid], marker="*" if shipped else "o", s=120 if shipped else None)
        left.annotate(label, (f1, reid), fontsize=7, fontweight="bold" if shipped else None)
        overlaps = sorted(
            float(k.split("_")[1])
            for k in row
            if k.startswith("graph_") and k.count("_") == 1 and k != "graph_max"
        )
        right.plot(overlaps, [row[f"graph_{o}"] for o in overlaps],
                   marker="*" if shipped else "o", label=label,
                   linewidth=2.5 if shipped else None)  # fmt: skip
    left.set_xlabel("F1, synthetic four-agency clustering")
    left.set_ylabel("re-identification (max of graph and frequency attacks)")
    left.set_title("Privacy / quality trade-off per setting")
    right.set_xlabel("overlap of the attacker's plaintext with the encoded data")
    right.set_ylabel("graph-matching re-identification (correct / overlap)")
    right.set_title("Graph matching attack")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--large", action="store_true", help="50 000 records (slow)")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--settings", default="", help="comma-separated setting names")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--quality-only", action="store_true", help="only the F1 columns")
    parser.add_argument("--quality-children", type=int, default=5_000)
    parser.add_argument(
        "--no-graph", action="store_true", help="skip the graph attack (same population drawn)"
    )
    parser.add_argument("--plot", default="", help="write the trade-off plot to this PNG")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--salt",
        default=SALT,
        help=f"salt of the name fields in the salting settings (default {SALT}; e.g. "
        "date_of_birth.value for the full date of birth)",
    )
    args = parser.parse_args(argv)
    wanted = {s for s in args.settings.split(",") if s}
    chosen = [
        dataclasses.replace(s, salt_source=args.salt)
        for s in SETTINGS
        if not wanted or s.name in wanted
    ]
    n_records = args.records or (50_000 if args.large else 10_000)
    if args.quality_only:
        for setting in chosen:
            row: dict[str, Any] = {"setting": setting.name}
            for key, value in quality_synthetic(setting, args.quality_children, args.seed).items():
                row[f"synthetic_{key}"] = value
            for key, value in quality_febrl4_half(setting, args.seed).items():
                row[f"febrl4_half_{key}"] = value
            print(json.dumps(row), flush=True)
        return
    rows = list(
        run_attack(
            chosen,
            n_records=n_records,
            seed=args.seed,
            quality=not args.no_quality,
            graph=not args.no_graph,
            quality_children=args.quality_children,
            emit=lambda r: print(json.dumps(r), flush=True),
        )
    )
    if args.plot:
        plot_tradeoff(rows, args.plot)


if __name__ == "__main__":
    main()


def run_cli(args: Any, *, emit: Callable[[dict[str, Any]], None]) -> int:
    """``jigsaw bench attack``: every setting at 10 k records (50 k with ``--large``), then
    insider probing against a real matcher (:mod:`benchmarks.insider`)."""
    from pathlib import Path

    from benchmarks.insider import run_insider

    n_records = 50_000 if args.large else 10_000
    rows = list(run_attack(SETTINGS, n_records=n_records, seed=args.seed, emit=emit))
    insider = run_insider(seed=args.seed, emit=emit)
    if args.report:
        write_attack_report(
            rows, Path(args.report), "jigsaw bench attack --json --report", insider=insider
        )
    return 0


#: Columns of the trade-off table in RESULTS.md (every figure is also in the JSON lines).
REPORT_COLUMNS = (
    ("setting", "setting"),
    ("frequency_max", "frequency (records)"),
    ("graph_0.2", "graph 0.2"),
    ("graph_0.5", "graph 0.5"),
    ("graph_0.5_precision", "graph 0.5 precision"),
    ("graph_0.8", "graph 0.8"),
    ("graph_1.0", "graph 1.0"),
    ("synthetic_precision", "synthetic P"),
    ("synthetic_recall", "synthetic R"),
    ("synthetic_f1", "synthetic F1"),
    ("febrl4_half_f1", "FEBRL4-half F1"),
    ("seconds", "s"),
)


def write_attack_report(
    rows: Sequence[dict[str, Any]],
    path: Any,
    command: str,
    *,
    insider: dict[str, Any] | None = None,
) -> None:
    """The attack section of RESULTS.md: provenance, the trade-off table, the plot, and the
    insider-probing figures when measured."""
    from pathlib import Path

    from benchmarks.insider import insider_report
    from benchmarks.report import PLOTS_DIR, markdown_table, provenance, write_section

    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    plot = PLOTS_DIR / "attack_tradeoff.png"
    plot_tradeoff(rows, str(plot))
    table_rows = [{label: row.get(key, "") for key, label in REPORT_COLUMNS} for row in rows]
    records = rows[0]["records"] if rows else 0
    as_forms = [
        row["records_published_as_forms"] for row in rows if "records_published_as_forms" in row
    ]
    forms_note = (
        " The attacks read each record's encoding; a node publishes a record that lacks sex"
        " (its date of birth salted with sex) once per sex value instead (`linkage.forms`):"
        f" {as_forms[0]:,} of the {records:,} attacked records under `shipped`. The quality"
        " columns link what nodes publish, forms included."
        if as_forms
        else ""
    )
    body = (
        "## Re-identification attacks (privacy)\n\n"
        + provenance(command)
        + f"\nSeeded synthetic population, {records:,} encoded records (one per child), encoded"
        " with the production encoder under each setting. `shipped` is the child schema"
        " exactly as shipped (names and postcode salted with the full date of birth, the date"
        " of birth with sex, keyed diffusion t = 3 on every filter, blocking on equal"
        " filters; for FEBRL4-half its analogue, names and postcode salted with the date of"
        " birth). Every other setting is that schema with its salts removed and its hardening"
        " replaced (record and every field filter hardened alike), its blocking rules kept;"
        " those named `salt` salt the name fields with the full date of birth and publish"
        " salt tags. Frequency: share of given- or family-name encodings that rank"
        " alignment re-identifies (the largest of value-only ranking, salt-aware ranking of"
        " (value, salt) combinations, and ranking within each salt value by an attacker told"
        " every encoding's salt). Graph: share of the overlap re-identified when"
        " the attacker's own population overlaps the encoded one at 0.2 / 0.5 / 0.8 / 1.0"
        " (structural graph matching, then pattern-mining decoding seeded by it). Quality:"
        " batch link of the four-agency synthetic set (5,000 children) and FEBRL4-half under"
        " the same setting."
        + forms_note
        + "\n\n"
        + markdown_table(table_rows, [label for _, label in REPORT_COLUMNS])
        + f"\n\n![trade-off]({Path(plot).relative_to(Path(path).resolve().parent)})\n"
        + (f"\n{insider_report(insider)}" if insider else "")
    )
    write_section("attack", body, path=Path(path))
