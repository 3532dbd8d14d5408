"""Attack 2 as the attacker runs it: the structural, decoding and co-occurrence stages combined."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from benchmarks.attack.cooccurrence import cooccurrence_attack
from benchmarks.attack.decoding import decode_and_match
from benchmarks.attack.graph import GraphSide, graph_side, structural_attack
from benchmarks.attack.settings import ATTACKER_SECRET, attacker_population, take_columns
from linkage.encode import EncodedBatch, encode_records
from linkage.keys import KeySet
from linkage.schema import (
    Schema,
)

log = logging.getLogger(__name__)


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


def graph_attack_by_overlap(
    encoded: EncodedBatch,
    pool_columns: dict[str, list[str | None]],
    child_ids: NDArray[np.int64],
    overlaps: Sequence[float],
    seed: int,
    encode_attacker: Callable[[dict[str, list[str | None]]], tuple[Schema, EncodedBatch]],
    progress: Callable[[str], None] | None = None,
    label: str = "",
) -> dict[float, tuple[float, float]]:
    """:func:`graph_attack_rate` at each overlap: ``encoded`` is rows ``0..n-1`` of the pool
    (``pool_columns``, true children ``child_ids``), the attacker holds
    :func:`~benchmarks.attack.settings.attacker_population` of it, encoded by
    ``encode_attacker`` (its schema and batch); the encoded side's graph is built once.
    ``progress`` is told "<label> at overlap <overlap>" before each."""
    n = len(encoded)
    side = graph_side(encoded)
    out: dict[float, tuple[float, float]] = {}
    for overlap in overlaps:
        if progress is not None:
            progress(f"{label} at overlap {overlap}")
        rows = attacker_population(n, overlap, seed)
        columns = take_columns(pool_columns, rows)
        schema, attacker = encode_attacker(columns)
        out[overlap] = graph_attack_rate(
            encoded,
            attacker,
            child_ids[:n],
            child_ids[rows],
            schema=schema,
            attacker_columns=columns,
            encoded_side=side,
        )
    return out


def attacker_encoder(
    schema: Schema,
) -> Callable[[dict[str, list[str | None]]], tuple[Schema, EncodedBatch]]:
    """An ``encode_attacker`` for :func:`graph_attack_by_overlap`: the attacker encodes its
    records under ``schema`` with its own secret."""

    def encode(columns: dict[str, list[str | None]]) -> tuple[Schema, EncodedBatch]:
        return schema, encode_records(schema, KeySet(ATTACKER_SECRET), columns)

    return encode
