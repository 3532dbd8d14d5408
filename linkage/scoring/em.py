"""m and the match prior by expectation-maximisation over comparison vectors, no labels.

Contract: :func:`fit_fellegi_sunter` (two classes) and :func:`fit_latent_classes` (up to
:data:`MAX_LATENT_CLASSES`) fit the candidates' comparison vectors under conditional
independence given the class. A pair selected through blocking on a field (``blocked_on``)
does not inform that field's m; Dirichlet priors (:func:`m_prior`) keep every level's m a real
estimate, never zero. Identical comparison vectors are collapsed into weighted patterns, so
the cost grows with the distinct patterns, not the pairs. Deterministic.
:func:`priors_by_kind` re-estimates the prior per kind of pair with m and u held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.errors import ModelError
from linkage.scoring.levels import _check_levels, _check_thresholds
from linkage.scoring.model import (
    PROBABILITY_FLOOR,
    FellegiSunterModel,
    _check_probability_vectors,
    _clamp_and_normalise,
    _stable_sigmoid,
)

M_PRIOR_NOT_EXACT = 0.1
"""Prior mean share of true matches whose field is below "exact" (:func:`m_prior`). Real records
carry an error in about one identifier in ten (dates of birth differ between agencies for a
sizeable share of true pairs; names are changed, swapped and mistyped as often)."""

M_PRIOR_DECAY = 0.5
"""Each level further from "exact" gets this share of the prior mass of the level above it."""

M_PRIOR_PAIRS = 10.0
"""Strength of the Dirichlet prior on m, in pseudo-pairs: it weighs as much as this many pairs
(a level's m moves by at most 10 / (n + 10) with n pairs informing the field) ..."""

M_PRIOR_SHARE = 1e-3
"""... or as this share of the pairs informing the field, whichever is more, so that the least
likely level keeps a mass (at least about M_PRIOR_SHARE times its prior mean, 6.7e-6 for five
levels) above :data:`PROBABILITY_FLOOR` however many pairs there are."""

SHARE_PSEUDO_COUNT = 1.0
"""Pseudo-count per class on λ and the latent-class shares (a Dirichlet(1, ..., 1) prior)."""


def priors_by_kind(
    log2_odds: NDArray[np.float64],
    kind: NDArray[np.integer[Any]],
    population_pairs: Sequence[float],
    prior: float,
    *,
    pseudo_matches: float = 10.0,
    iterations: int = 200,
) -> tuple[NDArray[np.float64], tuple[float, ...]]:
    """Posterior match probabilities under one prior per kind of pair, and those priors.

    A model's single prior λ says how often a pair is a match whatever pairs it joins; but two
    records of one agency are far less often one child than a record of each of two agencies
    (a duplicate within an agency is the exception; a child known to two agencies, the rule).
    With m and u held, EM estimates each kind's prior: λ_k = the sum of the match
    probabilities of the candidate pairs of kind k over ``population_pairs[k]``, every pair of
    that kind (pairs that never became candidates count as non-matches), from ``prior`` until
    it settles. A Beta prior centred on ``prior``, as strong as ``pseudo_matches`` matches,
    keeps a kind with few pairs near the model's prior (one pair alone would otherwise talk
    itself into a match) and is negligible beside thousands of matches.

    ``log2_odds`` are the pairs' posterior log2 odds under ``prior``
    (:meth:`FellegiSunterModel.match_log2_odds`), ``kind`` each pair's kind (0..k-1).
    """
    kinds = len(population_pairs)
    start = math.log2(prior) - math.log2(1.0 - prior)
    evidence = log2_odds - start  # the Bayes factor, log2: what the fields say
    out = np.empty_like(log2_odds)
    priors: list[float] = []
    for k in range(kinds):
        mask = kind == k
        total = float(population_pairs[k])
        lam = prior
        if mask.any() and total > 0:
            factor = evidence[mask] * math.log(2.0)
            for _ in range(iterations):
                odds = math.log(lam) - math.log1p(-lam)
                matches = float(_stable_sigmoid(factor + odds).sum()) + pseudo_matches
                new = float(np.clip(matches / (total + pseudo_matches / prior), 1e-12, 0.5))
                if abs(new - lam) <= 1e-9 * lam:
                    lam = new
                    break
                lam = new
        odds = math.log(lam) - math.log1p(-lam)
        out[mask] = evidence[mask] + odds / math.log(2.0)
        priors.append(lam)
    return _stable_sigmoid(out * math.log(2.0)), tuple(priors)


def _collapse_patterns(
    levels: NDArray[np.int8], n_levels: Sequence[int], blocked: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.int8], NDArray[np.bool_], NDArray[np.float64]]:
    """Distinct (comparison vector, blocked-on mask) rows, their blocked-on masks and how many
    pairs have each (sorted, deterministic). Without ``blocked`` no pair is blocked.

    Each row is packed into one int64 in mixed radix (level + 1 per field, so missing is
    digit 0, then a binary digit per field for ``blocked``) when the product of radices fits;
    np.unique on that 1-D key is much faster than on rows. Otherwise np.unique over rows.
    """
    n_fields = len(n_levels)
    if blocked is None:
        blocked = np.zeros(levels.shape, dtype=np.bool_)
    radices = [count + 1 for count in n_levels] + [2] * n_fields
    digits = np.concatenate([levels.astype(np.int64) + 1, blocked.astype(np.int64)], axis=1)
    if math.prod(radices) < 2**62:
        keys = np.zeros(levels.shape[0], dtype=np.int64)
        for column, radix in enumerate(radices):
            keys *= radix
            keys += digits[:, column]
        unique_keys, counts = np.unique(keys, return_counts=True)
        rows = np.empty((unique_keys.size, len(radices)), dtype=np.int64)
        remainder = unique_keys.copy()
        for column in range(len(radices) - 1, -1, -1):
            rows[:, column] = remainder % radices[column]
            remainder //= radices[column]
    else:
        rows, counts = np.unique(digits, axis=0, return_counts=True)
    patterns = (rows[:, :n_fields] - 1).astype(np.int8)
    return patterns, rows[:, n_fields:].astype(np.bool_), counts.astype(np.float64)


def _check_blocked_on(blocked_on: NDArray[Any] | None, shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """The (n_pairs, n_fields) blocked-on mask, all False when None."""
    if blocked_on is None:
        return np.zeros(shape, dtype=np.bool_)
    mask = np.asarray(blocked_on)
    if mask.dtype != np.bool_:
        raise ModelError("blocked_on must be boolean")
    if mask.shape != shape:
        raise ModelError(f"blocked_on has shape {mask.shape}, levels {shape}")
    return mask


def m_prior(n_levels: int) -> tuple[float, ...]:
    """Prior mean of P(level | match) for a field with ``n_levels`` levels (index = level).

    An error model: a true match is below "exact" with probability :data:`M_PRIOR_NOT_EXACT`,
    and each level further from "exact" is :data:`M_PRIOR_DECAY` times as likely as the one
    above it (a typo is likelier than a changed name). Every level gets a real mass: five
    levels give 0.9, 0.053, 0.027, 0.013, 0.0067 from "exact" down.
    """
    if n_levels < 2:
        raise ModelError(f"a field needs at least 2 levels, got {n_levels}")
    below = M_PRIOR_DECAY ** np.arange(n_levels - 1)  # index 0: the level just below exact
    below = M_PRIOR_NOT_EXACT * below / below.sum()
    return tuple(float(v) for v in [*below[::-1], 1.0 - M_PRIOR_NOT_EXACT])


def _m_prior_table(n_levels: Sequence[int]) -> NDArray[np.float64]:
    table = np.zeros((len(n_levels), max(n_levels)), dtype=np.float64)
    for field_index, count in enumerate(n_levels):
        table[field_index, :count] = m_prior(count)
    return table


def _prior_strength(informs: NDArray[np.bool_], counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per field, the Dirichlet prior's weight in pseudo-pairs: :data:`M_PRIOR_PAIRS`, or
    :data:`M_PRIOR_SHARE` of the pairs that inform the field if that is more. Fixed for a fit
    (it depends on the pairs, not on EM's estimates), so EM maximises one posterior."""
    informing = (informs * counts[:, np.newaxis]).sum(axis=0)
    strength: NDArray[np.float64] = np.maximum(M_PRIOR_PAIRS, M_PRIOR_SHARE * informing)
    return strength


def _level_sums(
    patterns: NDArray[np.int8],
    weights: NDArray[np.float64],
    max_levels: int,
    informs: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """Sum of ``weights`` per (field, level) over the cells that ``informs`` (not missing, not
    blocked on the field), shape (fields, max_levels)."""
    n_fields = patterns.shape[1]
    flat = np.arange(n_fields)[np.newaxis, :] * max_levels + patterns.astype(np.intp)
    cell_weights = np.broadcast_to(weights[:, np.newaxis], patterns.shape)
    sums = np.bincount(
        flat[informs], weights=cell_weights[informs], minlength=n_fields * max_levels
    )
    return np.asarray(sums, dtype=np.float64).reshape(n_fields, max_levels)


def _m_step(
    level_sums: NDArray[np.float64],
    prior_mean: NDArray[np.float64],
    strength: NDArray[np.float64],
    n_levels: Sequence[int],
) -> NDArray[np.float64]:
    """Per field, the posterior mean of a Dirichlet prior (``prior_mean`` times ``strength``
    pseudo-pairs) updated with the weighted level counts (MAP under Dirichlet(1 + αp) is the
    same up to those ones); a field no pair informs gets its prior mean."""
    updated = np.zeros_like(prior_mean)
    for field_index, count in enumerate(n_levels):
        pseudo = strength[field_index] * prior_mean[field_index, :count]
        field_sums = level_sums[field_index, :count] + pseudo
        updated[field_index, :count] = _clamp_and_normalise(field_sums / field_sums.sum())
    return updated


def _initial_m(n_levels: Sequence[int]) -> NDArray[np.float64]:
    """Starting m: P(level | match) ∝ 4**level, so matches start out agreeing at high levels."""
    table = np.zeros((len(n_levels), max(n_levels)), dtype=np.float64)
    for field_index, count in enumerate(n_levels):
        values = 4.0 ** np.arange(count)
        table[field_index, :count] = values / values.sum()
    return table


@dataclass(frozen=True)
class _Patterns:
    """The distinct rows EM runs over (:func:`_collapse_patterns`) and what each cell does.

    ``e_index`` indexes a :func:`_log_table` in the E-step: the level, or -1 (its 0.0 column)
    where the field is missing. ``informs`` marks the cells the M-step counts: present and not
    blocked on the field. ``strength``: per field, the prior's pseudo-pairs.
    """

    levels: NDArray[np.int8]
    counts: NDArray[np.float64]
    informs: NDArray[np.bool_]
    e_index: NDArray[np.intp]
    strength: NDArray[np.float64]


def _prepare_patterns(
    checked_levels: NDArray[np.int8], n_levels: Sequence[int], blocked_on: NDArray[Any] | None
) -> _Patterns:
    blocked = _check_blocked_on(blocked_on, checked_levels.shape)
    patterns, blocked_patterns, counts = _collapse_patterns(checked_levels, n_levels, blocked)
    informs = (patterns >= 0) & ~blocked_patterns
    # The E-step uses every present field, blocked or not: leaving a blocked field out of it
    # does not improve the fit and keeps EM from converging within its iteration cap.
    e_index = patterns.astype(np.intp)
    return _Patterns(patterns, counts, informs, e_index, _prior_strength(informs, counts))


def _shares_step(weights: NDArray[np.float64]) -> NDArray[np.float64]:
    """Class shares from summed responsibilities (columns = classes), with the Dirichlet
    prior of :data:`SHARE_PSEUDO_COUNT` per class, clamped like every probability."""
    totals = weights.sum(axis=0) + SHARE_PSEUDO_COUNT
    shares: NDArray[np.float64] = np.clip(
        totals / totals.sum(), PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR
    )
    return shares


def _log_table(probabilities: NDArray[np.float64], n_levels: Sequence[int]) -> NDArray[np.float64]:
    """Natural-log table with an extra last column of 0.0 that level -1 (missing) indexes."""
    table = np.zeros((probabilities.shape[0], probabilities.shape[1] + 1), dtype=np.float64)
    for field_index, count in enumerate(n_levels):
        table[field_index, :count] = np.log(probabilities[field_index, :count])
    return table


def _check_fit_input(
    levels: NDArray[Any], field_names: Sequence[str], thresholds: Sequence[Sequence[float]]
) -> tuple[tuple[str, ...], tuple[tuple[float, ...], ...], tuple[int, ...], NDArray[np.int8]]:
    """Names, checked thresholds, levels per field and checked comparison levels for EM."""
    names = tuple(field_names)
    checked_thresholds = _check_thresholds(thresholds)
    if len(names) != len(checked_thresholds):
        raise ModelError(f"{len(names)} field names but {len(checked_thresholds)} threshold lists")
    n_levels = tuple(len(field) + 1 for field in checked_thresholds)
    level_array = np.asarray(levels)
    if level_array.ndim == 2 and level_array.shape[0] == 0:
        raise ModelError("cannot fit a model on zero candidate pairs")
    return names, checked_thresholds, n_levels, _check_levels(level_array, n_levels)


#: Most latent classes :func:`fit_latent_classes` fits (each adds a table of level probabilities).
MAX_LATENT_CLASSES = 5


def _table_to_tuples(
    table: NDArray[np.float64], n_levels: Sequence[int]
) -> tuple[tuple[float, ...], ...]:
    return tuple(
        tuple(float(value) for value in table[field_index, :count])
        for field_index, count in enumerate(n_levels)
    )


def _agreement_score(table: NDArray[np.float64], n_levels: Sequence[int]) -> float:
    """Mean over fields of the expected level divided by the top level (1.0 = always exact)."""
    scores = [
        float(np.dot(table[field_index, :count], np.arange(count)) / (count - 1))
        for field_index, count in enumerate(n_levels)
    ]
    return sum(scores) / len(scores)


@dataclass(frozen=True)
class LatentClassFit:
    """A latent-class model of candidate pairs' comparison vectors (:func:`fit_latent_classes`).

    ``tables[k]`` is (fields, max levels): P(level | class k), zero past a field's levels;
    ``shares[k]`` the proportion of candidate pairs in class k. Classes are ordered by
    :func:`_agreement_score`, most agreeing first.
    """

    field_names: tuple[str, ...]
    thresholds: tuple[tuple[float, ...], ...]
    n_levels: tuple[int, ...]
    tables: tuple[NDArray[np.float64], ...]
    shares: tuple[float, ...]
    iterations: int
    converged: bool

    def expected_weight(self, k: int, m: NDArray[np.float64], u: NDArray[np.float64]) -> float:
        """Mean total match weight sum_f log2(m/u) of a class-k pair whose fields are present."""
        total = 0.0
        for field_index, count in enumerate(self.n_levels):
            weights = np.log2(m[field_index, :count] / u[field_index, :count])
            total += float(np.dot(self.tables[k][field_index, :count], weights))
        return total

    def match_model(
        self, u: Sequence[Sequence[float]], *, candidate_pairs: int, population_pairs: float
    ) -> FellegiSunterModel:
        """The Fellegi-Sunter model whose match class is a union of latent classes.

        The most agreeing class is a match class. Any other class joins while its typical pair
        would itself be called a match by the resulting model: its :meth:`expected_weight`
        (m of the match classes, ``u`` from random pairs) plus the log2 prior odds of a match
        among all ``population_pairs`` is positive. A class of noisy true matches (many fields
        agreeing, a few not) passes; a class of different people who share a common name and
        birth year does not, because its weight from the names is cancelled by disagreeing
        dates and postcodes and the prior over all pairs is tiny. m is the share-weighted mix
        of the match classes; the prior is their pairs over ``population_pairs``.
        """
        u_table = np.zeros_like(self.tables[0])
        for field_index, field_u in enumerate(_check_probability_vectors("u", u, self.n_levels)):
            u_table[field_index, : len(field_u)] = field_u
        chosen = [0]
        while True:
            share = sum(self.shares[k] for k in chosen)
            m_table = np.sum([self.shares[k] * self.tables[k] for k in chosen], axis=0) / share
            prior = float(np.clip(share * candidate_pairs / max(population_pairs, 1.0), 1e-12, 0.5))
            log_prior_odds = math.log2(prior) - math.log2(1.0 - prior)
            joining = [
                k
                for k in range(len(self.tables))
                if k not in chosen
                and self.expected_weight(k, m_table, u_table) + log_prior_odds > 0.0
            ]
            if not joining:
                break
            chosen.extend(joining)
        return FellegiSunterModel(
            field_names=self.field_names,
            thresholds=self.thresholds,
            m=_table_to_tuples(np.asarray(m_table, dtype=np.float64), self.n_levels),
            u=_table_to_tuples(u_table, self.n_levels),
            prior=prior,
            iterations=self.iterations,
            converged=self.converged,
        )


def fit_latent_classes(
    levels: NDArray[Any],
    *,
    field_names: Sequence[str],
    thresholds: Sequence[Sequence[float]],
    u: Sequence[Sequence[float]],
    classes: int = 3,
    initial_prior: float = 0.1,
    max_iterations: int = 500,
    tolerance: float = 1e-6,
    blocked_on: NDArray[np.bool_] | None = None,
) -> LatentClassFit:
    """EM for a latent-class model of candidate pairs with ``classes`` classes (no labels).

    Why more than two classes (Winkler 1993, "Improved decision rules in the Fellegi-Sunter
    model of record linkage", which adds a class for members of one household): blocked
    candidates of a large population hold pairs that agree on many fields without being the
    same person — children with a common given and family name born in the same year agree on
    names, sex and birth year and on nothing personal. That class grows with the square of the
    population while true matches grow linearly, so once it outnumbers them a two-class EM
    (conditional independence) calls *it* the match class. With more classes it gets a class
    of its own, and :meth:`LatentClassFit.match_model` decides which classes are matches. More
    classes alone do not hold at every scale (on every candidate of a large population the
    near-match classes still crowd the match class out); the pipeline also fits on a
    match-rich subset of the candidates (:func:`linkage.pipeline.fitting_pairs`).

    Start: class 0 at m ∝ 4**level (agrees), the last class at ``u`` (random pairs), class
    ``c`` in between at the blend ``((C-1-c) * m + c * u) / (C-1)``; class 0 has share
    ``initial_prior``, the others share the rest equally. Priors: class ``c``'s table of a
    field is Dirichlet with mean the same blend of :func:`m_prior` and ``u`` and the strength
    of :func:`_prior_strength`, so that no level of any class (and so of the match model)
    collapses to zero; the shares have :data:`SHARE_PSEUDO_COUNT` per class.

    ``blocked_on`` (n_pairs, n_fields), True where the pair was selected through blocking
    rules on that field (:func:`linkage.pipeline.fitting_pairs`): such a cell is left out of
    the M-step of that field (its level says how the pair was found, not how matches err),
    and still counts in the E-step. Identical rows are collapsed; a missing level is skipped
    for its field; probabilities are clamped like :func:`fit_fellegi_sunter`. EM stops when
    no share or table entry moves by more than ``tolerance``. Deterministic.
    """
    names, checked_thresholds, n_levels, checked_levels = _check_fit_input(
        levels, field_names, thresholds
    )
    if isinstance(classes, bool) or not isinstance(classes, int):
        raise ModelError("classes must be an integer")
    if not 2 <= classes <= MAX_LATENT_CLASSES:
        raise ModelError(f"classes must be between 2 and {MAX_LATENT_CLASSES}")
    if max_iterations < 1:
        raise ModelError("max_iterations must be at least 1")
    if not (math.isfinite(tolerance) and tolerance > 0.0):
        raise ModelError("tolerance must be a positive number")
    prior = float(initial_prior)
    if not (math.isfinite(prior) and 0.0 < prior < 1.0):
        raise ModelError("initial_prior must lie strictly between 0 and 1")

    m_start = _initial_m(n_levels)
    u_start = np.zeros_like(m_start)
    for field_index, field_u in enumerate(_check_probability_vectors("u", u, n_levels)):
        u_start[field_index, : len(field_u)] = _clamp_and_normalise(
            np.asarray(field_u, dtype=np.float64)
        )
    last = classes - 1
    tables = [((last - c) * m_start + c * u_start) / last for c in range(classes)]
    m_mean = _m_prior_table(n_levels)
    prior_means = [((last - c) * m_mean + c * u_start) / last for c in range(classes)]
    shares = np.array([prior] + [(1.0 - prior) / last] * last)
    data = _prepare_patterns(checked_levels, n_levels, blocked_on)
    field_columns = np.arange(len(n_levels))[np.newaxis, :]
    max_levels = m_start.shape[1]

    iterations = 0
    converged = False
    while iterations < max_iterations:
        iterations += 1
        log_joint = np.stack(
            [
                math.log(shares[k])
                + _log_table(tables[k], n_levels)[field_columns, data.e_index].sum(axis=1)
                for k in range(classes)
            ],
            axis=1,
        )
        log_joint -= log_joint.max(axis=1, keepdims=True)
        responsibility = np.exp(log_joint)
        responsibility /= responsibility.sum(axis=1, keepdims=True)
        weights = responsibility * data.counts[:, np.newaxis]
        new_shares = _shares_step(weights)
        new_tables = [
            _m_step(
                _level_sums(data.levels, weights[:, k], max_levels, data.informs),
                prior_means[k],
                data.strength,
                n_levels,
            )
            for k in range(classes)
        ]
        change = max(
            float(np.max(np.abs(new_shares - shares))),
            max(float(np.max(np.abs(a - b))) for a, b in zip(new_tables, tables, strict=True)),
        )
        shares, tables = new_shares, new_tables
        if change < tolerance:
            converged = True
            break

    order = sorted(range(classes), key=lambda k: (-_agreement_score(tables[k], n_levels), k))
    return LatentClassFit(
        field_names=names,
        thresholds=checked_thresholds,
        n_levels=n_levels,
        tables=tuple(tables[k] for k in order),
        shares=tuple(float(shares[k]) for k in order),
        iterations=iterations,
        converged=converged,
    )


def fit_fellegi_sunter(
    levels: NDArray[Any],
    *,
    field_names: Sequence[str],
    thresholds: Sequence[Sequence[float]],
    u: Sequence[Sequence[float]] | None = None,
    initial_prior: float | None = None,
    max_iterations: int = 100,
    tolerance: float = 1e-6,
    fix_u: bool = True,
    blocked_on: NDArray[np.bool_] | None = None,
) -> FellegiSunterModel:
    """Fit m and λ (and u, unless fixed) by EM on candidate pairs' comparison vectors.

    ``levels`` is (n_pairs, n_fields) from :func:`comparison_levels`. When ``u`` is given (the
    Splink approach: estimated from random pairs with :func:`estimate_u`) it is held fixed if
    ``fix_u`` is True and only used as the starting point otherwise; without ``u``, u starts as
    the mirror image of the starting m (low levels likely) and is estimated by EM. λ starts at
    ``initial_prior`` (default 0.1). Identical comparison vectors are collapsed first, so EM
    runs over the distinct patterns weighted by their counts; missing levels are skipped in the
    likelihood for their field.

    Priors (so that no level's m collapses to zero, and the clamp to
    [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR] never stands in for an estimate): m of each
    field is Dirichlet with mean :func:`m_prior` and the strength of :func:`_prior_strength`;
    a free u likewise with mean its starting value; λ is Beta(1 + 1, 1 + 1)-like, one
    pseudo-count (:data:`SHARE_PSEUDO_COUNT`) per class. ``blocked_on`` as in
    :func:`fit_latent_classes`: a pair blocked on a field does not inform that field's m (or
    free u), and still counts in the E-step. EM stops when no m, u or λ value moves by more
    than ``tolerance`` or after ``max_iterations``. Deterministic.
    """
    names, checked_thresholds, n_levels, checked_levels = _check_fit_input(
        levels, field_names, thresholds
    )
    if max_iterations < 1:
        raise ModelError("max_iterations must be at least 1")
    if not (math.isfinite(tolerance) and tolerance > 0.0):
        raise ModelError("tolerance must be a positive number")
    prior = 0.1 if initial_prior is None else float(initial_prior)
    if not (math.isfinite(prior) and 0.0 < prior < 1.0):
        raise ModelError("initial_prior must lie strictly between 0 and 1")

    max_levels = max(n_levels)
    m_table = _initial_m(n_levels)
    if u is None:
        u_table = np.zeros_like(m_table)
        for field_index, count in enumerate(n_levels):
            u_table[field_index, :count] = m_table[field_index, :count][::-1]
        update_u = True
    else:
        given_u = _check_probability_vectors("u", u, n_levels)
        u_table = np.zeros_like(m_table)
        for field_index, field_u in enumerate(given_u):
            values = np.asarray(field_u, dtype=np.float64)
            if values.min() < PROBABILITY_FLOOR or values.max() > 1.0 - PROBABILITY_FLOOR:
                values = _clamp_and_normalise(values)  # otherwise kept bit for bit
            u_table[field_index, : len(field_u)] = values
        update_u = not fix_u
    m_mean = _m_prior_table(n_levels)
    u_mean = u_table.copy()

    data = _prepare_patterns(checked_levels, n_levels, blocked_on)
    field_columns = np.arange(len(n_levels))[np.newaxis, :]
    log_u_sum = _log_table(u_table, n_levels)[field_columns, data.e_index].sum(axis=1)

    iterations = 0
    converged = False
    while iterations < max_iterations:
        iterations += 1
        # E-step: posterior probability that each pattern is a match.
        log_m_sum = _log_table(m_table, n_levels)[field_columns, data.e_index].sum(axis=1)
        log_odds = math.log(prior) - math.log1p(-prior) + log_m_sum - log_u_sum
        match_share = _stable_sigmoid(log_odds)
        match_weight = data.counts * match_share
        non_match_weight = data.counts - match_weight
        # M-step.
        new_prior = float(_shares_step(np.stack([match_weight, non_match_weight], axis=1))[0])
        new_m = _m_step(
            _level_sums(data.levels, match_weight, max_levels, data.informs),
            m_mean,
            data.strength,
            n_levels,
        )
        change = max(abs(new_prior - prior), float(np.max(np.abs(new_m - m_table))))
        if update_u:
            new_u = _m_step(
                _level_sums(data.levels, non_match_weight, max_levels, data.informs),
                u_mean,
                data.strength,
                n_levels,
            )
            change = max(change, float(np.max(np.abs(new_u - u_table))))
            u_table = new_u
            log_u_sum = _log_table(u_table, n_levels)[field_columns, data.e_index].sum(axis=1)
        prior, m_table = new_prior, new_m
        if change < tolerance:
            converged = True
            break

    return FellegiSunterModel(
        field_names=names,
        thresholds=checked_thresholds,
        m=_table_to_tuples(m_table, n_levels),
        u=_table_to_tuples(u_table, n_levels),
        prior=prior,
        iterations=iterations,
        converged=converged,
    )
