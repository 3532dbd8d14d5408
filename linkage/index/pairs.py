"""Scoring a lookup's (query row, candidate) pairs: per-field Dice, and the ranked answer.

Role: the arithmetic of :meth:`~linkage.index.MatchIndex.query_rows` once the candidates'
rows are copied out of the store: Dice of every field of every pair at once, on rows that
hold all fields side by side (:class:`~linkage.index.store._FieldLayout`); the schema's
comparison-level cut-offs, checked once per index; and the ranking that turns the scored
pairs of all the query rows into one answer.

Contract:

* :func:`_dice_fields` gives, per pair and field, exactly ``similarity.dice_pairs`` on that
  field's filters (:func:`_dice_to_one_reference` is that reference, for tests). Every step
  is elementwise per pair, so a pair's value does not depend on which other pairs share the
  batch: scoring all rows of a lookup at once gives each pair the value a lookup of its row
  alone gives it.
* :func:`_rank_rows` ranks as :func:`linkage.solve.rank_candidates` ranks one row's candidates
  (probability descending, then the candidate's place: blocking candidates by slot, then the
  scan's by slot), keeps each row's first ``max_candidates`` at ``min_probability`` or more,
  and merges the rows' lists as a caller merging lookups of one row each would: every
  candidate once, at its best probability (the earlier row, then the better place, on a tie),
  best first.

Nothing here takes the index's lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import scoring, similarity
from linkage.encode import EncodedBatch
from linkage.errors import ModelError
from linkage.index.store import _FieldLayout, _Gathered
from linkage.schema import Schema


@dataclass(frozen=True)
class _QueryFields:
    """A lookup's query rows with their field filters side by side (one row per query row,
    columns as the index holds a slot's) and the number of bits set in each field."""

    rows: NDArray[np.uint64]  # (query rows, total words)
    bits: NDArray[np.int64]  # (query rows, fields)

    @classmethod
    def of(cls, query: EncodedBatch, layout: _FieldLayout) -> _QueryFields:
        if not layout.words:  # no field has a word: every field empty
            return cls(
                np.zeros((len(query), 0), np.uint64),
                np.zeros((len(query), layout.widths.size), np.int64),
            )
        rows = np.concatenate(query.field_filters, axis=1)
        return cls(rows, layout.sum_by_field(np.bitwise_count(rows)))


@dataclass(frozen=True)
class _Pairs:
    """(query row, record) pairs to score, aligned: the query row, the record's slot, whether
    the scan (not blocking) proposed it, and a copy of the record's rows."""

    query_rows: NDArray[np.int64]
    slots: NDArray[np.int64]
    scanned: NDArray[np.bool_]
    records: _Gathered

    def __len__(self) -> int:
        return int(self.slots.size)

    def take(self, rows: NDArray[Any]) -> _Pairs:
        """The pairs ``rows`` selects (a boolean mask or indices)."""
        return _Pairs(
            self.query_rows[rows], self.slots[rows], self.scanned[rows], self.records.take(rows)
        )


@dataclass(frozen=True)
class _Scored:
    """Scored pairs, aligned: which query row and slot, the candidate's agency code and
    reference, the comparison levels and not-compared flags, the match probability."""

    query_rows: NDArray[np.int64]
    slots: NDArray[np.int64]
    scanned: NDArray[np.bool_]
    agency_codes: NDArray[np.int16]
    references: NDArray[np.uint8]
    levels: NDArray[np.int8]
    not_compared: NDArray[np.bool_]
    probabilities: NDArray[np.float64]


def _dice_fields(
    query: _QueryFields,
    query_rows: NDArray[np.int64],
    candidates: NDArray[np.uint64],
    layout: _FieldLayout,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Dice of each candidate row with its query row (``query.rows[query_rows[i]]``) per
    field, and whether the candidate's filter of the field is non-empty.

    ``candidates`` is (pairs, total words), every field's filter side by side (``layout``).
    Returns two (pairs, fields) arrays: per field the same values as ``similarity.dice_pairs``
    on that field's columns (``2·|q∧c| / (|q| + |c|)``, 0.0 when both are empty;
    :func:`_dice_to_one_reference`). In a handful of numpy calls for every pair and field at
    once: a lookup scores a few hundred pairs, where the kernel's argument checks and task
    set-up (or a call per field or query row) cost more than counting.
    """
    candidate_bits = layout.sum_by_field(np.bitwise_count(candidates))
    common = layout.sum_by_field(np.bitwise_count(candidates & query.rows[query_rows]))
    total = candidate_bits + query.bits[query_rows]
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
    and which rows are non-empty (the reference for :func:`_dice_fields` in tests)."""
    rows = np.arange(candidates.shape[0], dtype=np.int64)
    dice = similarity.dice_pairs(query.reshape(1, -1), candidates, np.zeros_like(rows), rows)
    present: NDArray[np.bool_] = np.asarray(candidates.any(axis=1), dtype=bool)
    return dice, present


def _confident_rows(scored: _Scored, probability: float | None, rows: int) -> NDArray[np.int64]:
    """Per query row, how many of its scored pairs reach ``probability`` (all 0 when it is
    None: always scan)."""
    if probability is None:
        return np.zeros(rows, dtype=np.int64)
    reached = scored.query_rows[scored.probabilities >= probability]
    return np.bincount(reached, minlength=rows).astype(np.int64)


def _concatenate_scores(first: _Scored, second: _Scored) -> _Scored:
    return _Scored(
        query_rows=np.concatenate([first.query_rows, second.query_rows]),
        slots=np.concatenate([first.slots, second.slots]),
        scanned=np.concatenate([first.scanned, second.scanned]),
        agency_codes=np.concatenate([first.agency_codes, second.agency_codes]),
        references=np.concatenate([first.references, second.references]),
        levels=np.concatenate([first.levels, second.levels]),
        not_compared=np.concatenate([first.not_compared, second.not_compared]),
        probabilities=np.concatenate([first.probabilities, second.probabilities]),
    )


def _rank_rows(scored: _Scored, min_probability: float, max_candidates: int) -> NDArray[np.int64]:
    """The scored pairs of the answer (module docstring), best first, as positions in
    ``scored``: each query row's first ``max_candidates`` at ``min_probability`` or more,
    merged, each slot once at its best."""
    if max_candidates < 0:
        raise ModelError("top_k must be non-negative")  # as rank_candidates
    probability = scored.probabilities
    kept = np.flatnonzero(probability >= min_probability)
    # each row's ranking, rows in order: probability descending, then blocking candidates
    # before the scan's, each by slot (the order a lookup of the row alone scores them in)
    by_row = kept[
        np.lexsort(
            (
                scored.slots[kept],
                scored.scanned[kept],
                -probability[kept],
                scored.query_rows[kept],
            )
        )
    ]
    rows = scored.query_rows[by_row]
    firsts = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
    place = np.arange(by_row.size) - np.repeat(firsts, np.diff(np.append(firsts, by_row.size)))
    chain = by_row[place < max_candidates]  # the rows' lists one after another
    # merged: best first, a tie kept in chain order, each slot at its first (best) entry
    merged = chain[np.argsort(-probability[chain], kind="stable")]
    _, first = np.unique(scored.slots[merged], return_index=True)
    answer: NDArray[np.int64] = merged[np.sort(first)]
    return answer
