"""Comparison levels: per-field Dice similarities cut into the levels the model weighs.

Contract: a field's levels are the number of its descending Dice cut-offs a similarity
reaches (:func:`comparison_levels`); :data:`MISSING_LEVEL` marks a pair where either record
lacks the field. Levels are int8 arrays ``(n_pairs, n_fields)``; the labels used in
explanations come from :func:`level_label`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.errors import ModelError, as_float_array

MISSING_LEVEL = -1
"""Comparison level of a pair in which either record lacks the field."""
_MAX_LEVELS = 127  # levels are int8


# --------------------------------------------------------------------------------------------
# Comparison levels
# --------------------------------------------------------------------------------------------


def _check_thresholds(thresholds: Sequence[Sequence[float]]) -> tuple[tuple[float, ...], ...]:
    """Return the thresholds as tuples of floats, or raise ModelError naming every bad field."""
    problems: list[str] = []
    checked: list[tuple[float, ...]] = []
    for field_index, field_thresholds in enumerate(thresholds):
        values = tuple(
            as_float_array(list(field_thresholds), f"thresholds[{field_index}]").tolist()
        )
        if not values:
            problems.append(f"field {field_index}: needs at least one threshold")
        elif len(values) + 1 > _MAX_LEVELS:
            problems.append(f"field {field_index}: at most {_MAX_LEVELS - 1} thresholds")
        elif not all(0.0 <= value <= 1.0 for value in values):
            problems.append(f"field {field_index}: thresholds must lie in [0, 1]")
        elif any(later >= earlier for earlier, later in itertools.pairwise(values)):
            problems.append(f"field {field_index}: thresholds must be strictly descending")
        checked.append(values)
    if problems:
        raise ModelError("invalid comparison thresholds: " + "; ".join(problems))
    return tuple(checked)


def comparison_levels(
    sim: NDArray[np.float64],
    both_present: NDArray[np.bool_],
    thresholds: Sequence[Sequence[float]],
) -> NDArray[np.int8]:
    """Cut per-field Dice similarities into comparison levels.

    A field with descending Dice cut-offs ``(t_1 > t_2 > ... > t_k)`` has ``k + 1`` levels.
    Level ``k`` ("exact") means ``sim >= t_1``; level ``k - i`` means ``t_(i+1) <= sim <
    t_i``; level 0 ("disagrees") means ``sim < t_k``: the level is the number of cut-offs the
    similarity reaches. :data:`MISSING_LEVEL` (-1) marks a pair where either record lacks
    the field.

    ``sim`` and ``both_present`` have shape (n_pairs, n_fields); ``thresholds[f]`` are field
    f's strictly descending cut-offs. Returns int8 levels of the same shape, with
    :data:`MISSING_LEVEL` wherever ``both_present`` is False.
    """
    sim = as_float_array(sim, "similarities")
    both_present = np.asarray(both_present)
    if sim.ndim != 2:
        raise ModelError(f"similarities must be 2-D (pairs, fields), got {sim.ndim}-D")
    if both_present.shape != sim.shape:
        raise ModelError(
            f"presence mask shape {both_present.shape} differs from similarity shape {sim.shape}"
        )
    if both_present.dtype != np.bool_:
        raise ModelError("presence mask must be boolean")
    checked = _check_thresholds(thresholds)
    n_fields = sim.shape[1]
    if len(checked) != n_fields:
        raise ModelError(f"got thresholds for {len(checked)} fields, similarities have {n_fields}")
    present_values = sim[both_present]
    if not np.all(np.isfinite(present_values)):
        raise ModelError("similarities of present fields must be finite")
    if present_values.size and (present_values.min() < 0.0 or present_values.max() > 1.0):
        raise ModelError("similarities of present fields must lie in [0, 1]")

    return levels_from_cut_offs(sim, both_present, level_cut_offs(checked))


def level_cut_offs(thresholds: Sequence[Sequence[float]]) -> tuple[NDArray[np.float64], ...]:
    """The checked ``thresholds`` by rank, for :func:`levels_from_cut_offs`: item k holds
    every field's k-th cut-off (+inf for a field with fewer, which no similarity reaches).
    Raises ModelError for invalid thresholds (as :func:`comparison_levels` does)."""
    checked = _check_thresholds(thresholds)
    if not checked:
        return ()
    cut_offs = np.full((len(checked), max(len(t) for t in checked)), np.inf)
    for field_index, field_thresholds in enumerate(checked):
        cut_offs[field_index, : len(field_thresholds)] = field_thresholds
    return tuple(np.ascontiguousarray(column) for column in cut_offs.T)


def levels_from_cut_offs(
    sim: NDArray[np.float64],
    both_present: NDArray[np.bool_],
    cut_offs: tuple[NDArray[np.float64], ...],
) -> NDArray[np.int8]:
    """The cutting step of :func:`comparison_levels`, for inputs already checked (a lookup
    scores tens of pairs with one schema's cut-offs, where checking them each time costs more
    than cutting): per field the number of cut-offs the similarity reaches, ``MISSING_LEVEL``
    where not both present. One comparison of all fields per cut-off rank."""
    if not cut_offs:
        return np.full(sim.shape, MISSING_LEVEL, dtype=np.int8)
    reached = (sim >= cut_offs[0]).view(np.int8)  # a fresh array: counted into in place
    for rank_cut_offs in cut_offs[1:]:
        reached += (sim >= rank_cut_offs).view(np.int8)
    reached[~both_present] = MISSING_LEVEL
    return reached


def level_label(level: int, n_levels: int) -> str:
    """The human label of ``level`` for a field with ``n_levels`` levels.

    Used in explanations: level 0 is ``"disagrees"``, the top level ``"exact"``, and the levels
    in between, from the top down, ``"strong"``, ``"moderate"``, ``"weak"`` when there are at
    most three of them (one middle level is ``"strong"``, two are ``"strong"``/``"weak"``);
    with more middle levels they are called ``"similar_<level>"``. :data:`MISSING_LEVEL` is
    ``"missing"``.
    """
    if n_levels < 2:
        raise ModelError(f"a field needs at least 2 levels, got {n_levels}")
    if level == MISSING_LEVEL:
        return "missing"
    if not 0 <= level < n_levels:
        raise ModelError(f"level {level} outside 0..{n_levels - 1}")
    if level == 0:
        return "disagrees"
    if level == n_levels - 1:
        return "exact"
    n_middle = n_levels - 2
    from_top = n_levels - 2 - level  # 0 for the level just below "exact"
    names = {1: ("strong",), 2: ("strong", "weak"), 3: ("strong", "moderate", "weak")}
    if n_middle in names:
        return names[n_middle][from_top]
    return f"similar_{level}"


def _check_levels(levels: NDArray[Any], n_levels: Sequence[int]) -> NDArray[np.int8]:
    """Validate a (n_pairs, n_fields) level array against the per-field level counts."""
    levels = np.asarray(levels)
    if levels.ndim != 2:
        raise ModelError(f"levels must be 2-D (pairs, fields), got {levels.ndim}-D")
    if not np.issubdtype(levels.dtype, np.integer):
        raise ModelError(f"levels must be integers, got dtype {levels.dtype}")
    if levels.shape[1] != len(n_levels):
        raise ModelError(f"levels have {levels.shape[1]} fields, expected {len(n_levels)}")
    if levels.shape[0]:
        lowest = levels.min(axis=0)
        highest = levels.max(axis=0)
        bad = [
            str(field_index)
            for field_index, count in enumerate(n_levels)
            if lowest[field_index] < MISSING_LEVEL or highest[field_index] >= count
        ]
        if bad:
            raise ModelError(
                "levels out of range for fields " + ", ".join(bad) + " (expected -1..levels-1)"
            )
    return levels.astype(np.int8, copy=False)
