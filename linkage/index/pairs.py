"""Scoring a lookup's candidates: per-field Dice on side-by-side rows, levels, ranking.

Role: the arithmetic of :meth:`~linkage.index.MatchIndex.query` once the candidates' rows
are copied out of the store: Dice of every field at once on rows that hold all fields side by
side (:class:`~linkage.index.store._FieldLayout`), the schema's comparison-level cut-offs
checked once per index, and the ranking of scored candidates.

Contract: every value here equals what the batch pipeline computes for the same pair —
:func:`_dice_fields_to_one` gives, per field, exactly ``similarity.dice_pairs`` on that
field's filters (:func:`_dice_to_one_reference` is that reference, for tests); levels come
from :func:`linkage.scoring.levels_from_cut_offs` with the cut-offs
:func:`linkage.scoring.comparison_levels` would check. Nothing here takes the index's lock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from linkage import scoring, similarity
from linkage.errors import ModelError
from linkage.index.store import _FieldLayout
from linkage.schema import Schema


@dataclass(frozen=True)
class _QueryFields:
    """A query's field filters side by side (one row, columns as the index's) and the number
    of bits set in each field."""

    row: NDArray[np.uint64]
    bits: NDArray[np.int64]


def _dice_fields_to_one(
    query: _QueryFields, candidates: NDArray[np.uint64], layout: _FieldLayout
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Dice of the query with each candidate row, per field, and which fields are non-empty.

    ``candidates`` is (rows, total words), every field's filter side by side (``layout``).
    Returns two (rows, fields) arrays: per field the same values as ``similarity.dice_pairs``
    on that field's columns (``2·|q∧c| / (|q| + |c|)``, 0.0 when both are empty;
    :func:`_dice_to_one_reference`), and whether the candidate's filter has any bit set. In
    a handful of numpy calls for all fields at once: a lookup scores tens of rows, where the
    kernel's argument checks and task set-up (or a call per field) cost more than counting.
    """
    candidate_bits = layout.sum_by_field(np.bitwise_count(candidates))
    common = layout.sum_by_field(np.bitwise_count(candidates & query.row))
    total = candidate_bits + query.bits
    dice = np.divide(2.0 * common, total, out=np.zeros(total.shape), where=total > 0)
    return dice, candidate_bits > 0


def _level_cut_offs(schema: Schema) -> tuple[NDArray[np.float64], ...] | None:
    """``scoring.level_cut_offs`` of the schema's comparisons, checked once per index; None when
    they are invalid (or there are no fields), so each query raises as
    ``scoring.comparison_levels`` does."""
    if not schema.fields:
        return None
    try:
        return scoring.level_cut_offs(tuple(tuple(spec.levels) for spec in schema.comparison_specs))
    except ModelError:
        return None


def _dice_to_one_reference(
    query: NDArray[np.uint64], candidates: NDArray[np.uint64]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Dice of one filter with each row of ``candidates`` through ``similarity.dice_pairs``,
    and which rows are non-empty (the reference for :func:`_dice_fields_to_one` in tests)."""
    rows = np.arange(candidates.shape[0], dtype=np.int64)
    dice = similarity.dice_pairs(query.reshape(1, -1), candidates, np.zeros_like(rows), rows)
    present: NDArray[np.bool_] = np.asarray(candidates.any(axis=1), dtype=bool)
    return dice, present


@dataclass(frozen=True)
class _Scored:
    """Scored candidates of one query, row-aligned."""

    agency_codes: NDArray[np.int16]
    references: NDArray[np.uint8]
    levels: NDArray[np.int8]
    not_compared: NDArray[np.bool_]
    probabilities: NDArray[np.float64]


def _count_confident(scored: _Scored, probability: float | None) -> int:
    """How many scored candidates reach ``probability`` (0 when it is None: always scan)."""
    if probability is None:
        return 0
    return int(np.count_nonzero(scored.probabilities >= probability))


def _concatenate_scores(first: _Scored, second: _Scored) -> _Scored:
    return _Scored(
        agency_codes=np.concatenate([first.agency_codes, second.agency_codes]),
        references=np.concatenate([first.references, second.references]),
        levels=np.concatenate([first.levels, second.levels]),
        not_compared=np.concatenate([first.not_compared, second.not_compared]),
        probabilities=np.concatenate([first.probabilities, second.probabilities]),
    )


def _rank(
    prob: NDArray[np.float64], threshold: float, top_k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    from linkage.solve import rank_candidates

    return rank_candidates(np.arange(prob.size), prob, threshold=threshold, top_k=top_k)
