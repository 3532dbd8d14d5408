"""u, the non-match probabilities of each comparison level, estimated without labels.

Contract: :func:`estimate_u` takes the levels of uniformly random record pairs (nearly all
non-matches); :func:`decontaminate_u` removes the matches a small population puts among them;
:func:`estimate_u_among_matches` re-estimates a salted field's u by EM over pairs sharing the
salt value, where random pairs are too few or too rich in matches. Every estimate is a
probability vector per field, clamped above the model's floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.errors import ModelError
from linkage.scoring.levels import _MAX_LEVELS, _check_levels
from linkage.scoring.model import (
    PROBABILITY_FLOOR,
    _check_probability_vectors,
    _clamp_and_normalise,
    _stable_sigmoid,
)


def estimate_u(
    levels_random_pairs: NDArray[Any], n_levels_per_field: Sequence[int]
) -> tuple[tuple[float, ...], ...]:
    """u probabilities per field from the comparison levels of RANDOM record pairs.

    Random pairs are nearly all non-matches, so the level frequencies estimate
    P(level | non-match). Laplace smoothing (one pseudo-count per level) keeps every level
    possible; missing levels are skipped for that field.
    """
    n_levels = tuple(int(count) for count in n_levels_per_field)
    if not n_levels or any(count < 2 or count > _MAX_LEVELS for count in n_levels):
        raise ModelError(f"each field needs between 2 and {_MAX_LEVELS} levels")
    levels = _check_levels(levels_random_pairs, n_levels)
    if levels.shape[0] == 0:
        raise ModelError("estimate_u needs at least one random pair")
    u: list[tuple[float, ...]] = []
    for field_index, count in enumerate(n_levels):
        column = levels[:, field_index]
        counts = np.bincount(column[column >= 0], minlength=count).astype(np.float64) + 1.0
        u.append(tuple(float(value) for value in _clamp_and_normalise(counts / counts.sum())))
    return tuple(u)


def decontaminate_u(
    u: Sequence[Sequence[float]],
    m: Sequence[Sequence[float]],
    contamination: Sequence[float],
    compared_pairs: Sequence[int],
) -> tuple[tuple[float, ...], ...]:
    """u with the share of matches among the random pairs it was estimated on taken out.

    A field's u counts only the random pairs in which the field was compared. For most
    fields those are nearly all non-matches, but a *salted* field is compared only between
    records sharing the salt value (e.g. the birth month), and that subset is enriched in
    matches: with about 2,400 records of 600 children, u of "given names agree exactly" comes
    out above 0.1 uncorrected and below 0.05 corrected (``tests/linkage/test_pipeline.py``).
    With ``c`` the share of matches among the compared pairs (``contamination[f]``), the
    observed level frequencies are ``(1 - c)·u + c·m``, so ``u = (observed - c·m) / (1 - c)``.
    ``c`` is capped at 0.5, and no level goes below one pseudo-count among the field's
    ``compared_pairs[f]`` compared random pairs (the smoothing of :func:`estimate_u`): m is
    itself an estimate, and a level whose u were driven to zero would get an unbounded weight.
    """
    out: list[tuple[float, ...]] = []
    for u_f, m_f, c, n in zip(u, m, contamination, compared_pairs, strict=True):
        share = min(max(float(c), 0.0), 0.5)
        observed = np.asarray(u_f, dtype=np.float64)
        cleaned = (observed - share * np.asarray(m_f, dtype=np.float64)) / (1.0 - share)
        floor = 1.0 / (max(int(n), 0) + observed.shape[0])
        out.append(tuple(float(v) for v in _clamp_and_normalise(np.maximum(cleaned, floor))))
    return tuple(out)


@dataclass(frozen=True)
class SharedValueUFit:
    """u re-estimated by EM on pairs rich in matches (:func:`estimate_u_among_matches`).

    ``u`` covers every field (the fixed ones as given); ``share`` is the fitted share of
    matches among the pairs; ``iterations`` and ``converged`` as in EM elsewhere.
    """

    u: tuple[tuple[float, ...], ...]
    share: float
    iterations: int
    converged: bool


def estimate_u_among_matches(
    levels: NDArray[Any],
    m: Sequence[Sequence[float]],
    u: Sequence[Sequence[float]],
    *,
    free_fields: Sequence[int],
    ignored_fields: Sequence[int] = (),
    initial_share: float,
    max_iterations: int = 50,
    tolerance: float = 1e-6,
) -> SharedValueUFit:
    """u of ``free_fields`` by EM over pairs of which a large, unknown share are matches.

    Used for a salted field, which is compared only between records sharing the salt value:
    in a small population most of those pairs are the same person, so the level frequencies
    among them are mostly m, and taking a capped share of m out of them
    (:func:`decontaminate_u`) is not enough. Here m of every field and u of every field not in
    ``free_fields`` are held fixed; each pair's posterior match probability comes from them,
    the current u of the free fields and the current share (E-step); the share becomes the
    mean posterior and each free field's u its level frequencies weighted by the posterior
    non-match probability, one pseudo-count per level as in :func:`estimate_u`, missing
    levels skipped (M-step). ``ignored_fields`` (e.g. the field the pairs were selected on)
    take no part in the likelihood and keep their u. Stops after ``max_iterations`` or when
    neither the share nor any free u moves by more than ``tolerance``.
    """
    n_levels = [len(field) for field in u]
    checked = _check_levels(levels, n_levels)
    m_table = _check_probability_vectors("m", m, n_levels)
    u_table = [
        np.asarray(field, dtype=np.float64)
        for field in _check_probability_vectors("u", u, n_levels)
    ]
    free = sorted({int(f) for f in free_fields})
    ignored = {int(f) for f in ignored_fields}
    if any(f < 0 or f >= len(n_levels) for f in [*free, *ignored]) or ignored & set(free):
        raise ModelError("free and ignored fields must be distinct field indices")
    if checked.shape[0] == 0:
        raise ModelError("estimate_u_among_matches needs at least one pair")
    log_m = [np.log(np.asarray(field, dtype=np.float64)) for field in m_table]
    # fixed part of each pair's log-likelihood ratio (missing levels are neutral)
    fixed_weight = np.zeros(checked.shape[0], dtype=np.float64)
    for f in range(len(n_levels)):
        if f in ignored or f in free:
            continue
        column = checked[:, f]
        present = column >= 0
        ratio = log_m[f] - np.log(u_table[f])
        fixed_weight[present] += ratio[column[present]]
    share = float(np.clip(initial_share, 0.01, 0.99))
    converged = False
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        weight = fixed_weight + math.log(share) - math.log(1.0 - share)
        for f in free:
            column = checked[:, f]
            present = column >= 0
            ratio = log_m[f] - np.log(u_table[f])
            weight[present] += ratio[column[present]]
        posterior = _stable_sigmoid(weight)
        non_match = 1.0 - posterior
        new_share = float(np.clip(posterior.mean(), PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR))
        change = abs(new_share - share)
        for f in free:
            column = checked[:, f]
            present = column >= 0
            counts = np.bincount(column[present], weights=non_match[present], minlength=n_levels[f])
            updated = _clamp_and_normalise((counts + 1.0) / (counts.sum() + n_levels[f]))
            change = max(change, float(np.abs(updated - u_table[f]).max()))
            u_table[f] = updated
        share = new_share
        if change < tolerance:
            converged = True
            break
    return SharedValueUFit(
        u=tuple(tuple(float(v) for v in field) for field in u_table),
        share=share,
        iterations=iterations,
        converged=converged,
    )
