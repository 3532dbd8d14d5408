"""Unsupervised Fellegi-Sunter scoring: Dice similarities to calibrated match probabilities.

Role: after ``similarity`` has computed, for every candidate pair from ``blocking``, a Dice
similarity per field (``sim[:, f]``, float64 in [0, 1]) and a presence mask
(``both_present[:, f]``, False when either record lacks the field), this module

1. cuts each field's similarity into *comparison levels* (:func:`comparison_levels`),
2. estimates the per-level probabilities without labels: ``u`` (probability of a level among
   non-matches) from random pairs (:func:`estimate_u`), ``m`` (probability among matches) and
   the prior proportion of matches ``λ`` by expectation-maximisation over the candidate pairs'
   comparison vectors (:func:`fit_fellegi_sunter`, :func:`fit_latent_classes`), assuming the
   fields are conditionally independent given the class. A pair selected through blocking
   rules on a field (``blocked_on``) does not inform that field's m, and Dirichlet priors
   (:func:`m_prior`) keep every level's m a real estimate, never zero,
3. turns a comparison vector into per-field weights ``log2(m / u)``, a calibrated match
   probability and a per-field explanation (:class:`FellegiSunterModel`), which ``solve``
   then ranks, assigns or clusters.

Invariants: a missing field (:data:`MISSING_LEVEL`) carries weight 0, neutral, never counted as
disagreement, and is skipped in the EM likelihood for that field. Fitting is deterministic. The
module holds no state and logs nothing; it never sees an identifier, only similarities.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.errors import ModelError, as_float_array

__all__ = [
    "MAX_LATENT_CLASSES",
    "MISSING_LEVEL",
    "M_PRIOR_DECAY",
    "M_PRIOR_NOT_EXACT",
    "M_PRIOR_PAIRS",
    "M_PRIOR_SHARE",
    "PROBABILITY_FLOOR",
    "SHARE_PSEUDO_COUNT",
    "FellegiSunterModel",
    "FieldEvidence",
    "LatentClassFit",
    "SharedValueUFit",
    "comparison_levels",
    "estimate_u",
    "estimate_u_among_matches",
    "fit_fellegi_sunter",
    "fit_latent_classes",
    "level_label",
    "m_prior",
    "priors_by_kind",
]

MISSING_LEVEL = -1
"""Comparison level of a pair in which either record lacks the field."""

PROBABILITY_FLOOR = 1e-6
"""m, u and λ are clamped to [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR] so no weight is infinite.
A guard against arithmetic, never an estimate: EM's pseudo-counts (:func:`m_prior`) keep every
fitted probability above it."""

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

_MODEL_FORMAT = "jigsaw.fellegi_sunter"
_MODEL_VERSION = 1
_MODEL_KEYS = frozenset(
    {"format", "version", "field_names", "thresholds", "m", "u", "prior", "iterations", "converged"}
)
_MAX_LEVELS = 127  # levels are int8
_MAX_KEY_PLACES_SHOWN = 10  # places of unknown keys listed in a from_dict error


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


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldEvidence:
    """The contribution of one field to one pair's score."""

    field: str
    level: int
    level_label: str
    weight: float
    """log2(m / u) for the level; 0.0 when the field is missing (neutral)."""


def _weight_table(
    probabilities: tuple[tuple[float, ...], ...], numerator: tuple[tuple[float, ...], ...] | None
) -> NDArray[np.float64]:
    """Table (n_fields, max_levels + 1) of log2 values, last column 0.0 for MISSING_LEVEL.

    With ``numerator`` the entries are log2(numerator / probabilities), otherwise
    log2(probabilities). Indexing the table with level -1 hits the last column, so a missing
    field contributes 0.0 without a branch.
    """
    max_levels = max(len(field) for field in probabilities)
    table = np.zeros((len(probabilities), max_levels + 1), dtype=np.float64)
    for field_index, field_probabilities in enumerate(probabilities):
        values = np.log2(np.asarray(field_probabilities, dtype=np.float64))
        if numerator is not None:
            values = np.log2(np.asarray(numerator[field_index], dtype=np.float64)) - values
        table[field_index, : len(field_probabilities)] = values
    return table


def _stable_sigmoid(natural_log_odds: NDArray[np.float64]) -> NDArray[np.float64]:
    """1 / (1 + exp(-x)) without overflow for large |x|."""
    result = np.empty_like(natural_log_odds)
    positive = natural_log_odds >= 0
    result[positive] = 1.0 / (1.0 + np.exp(-natural_log_odds[positive]))
    exp_negative = np.exp(natural_log_odds[~positive])
    result[~positive] = exp_negative / (1.0 + exp_negative)
    return result


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


def _check_probability_vectors(
    name: str, vectors: Sequence[Sequence[float]], n_levels: Sequence[int]
) -> tuple[tuple[float, ...], ...]:
    """Validate per-field probability vectors against the level counts; return them as tuples."""
    problems: list[str] = []
    if len(vectors) != len(n_levels):
        raise ModelError(f"{name} has {len(vectors)} fields, expected {len(n_levels)}")
    checked: list[tuple[float, ...]] = []
    for field_index, (vector, expected) in enumerate(zip(vectors, n_levels, strict=True)):
        values = tuple(as_float_array(list(vector), f"{name}[{field_index}]").tolist())
        if len(values) != expected:
            problems.append(f"field {field_index}: {len(values)} levels, expected {expected}")
        elif not all(math.isfinite(value) and 0.0 < value <= 1.0 for value in values):
            problems.append(f"field {field_index}: probabilities must lie in (0, 1]")
        elif abs(sum(values) - 1.0) > 1e-6:
            problems.append(f"field {field_index}: probabilities must sum to 1")
        checked.append(values)
    if problems:
        raise ModelError(f"invalid {name} probabilities: " + "; ".join(problems))
    return tuple(checked)


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


@dataclass(frozen=True)
class FellegiSunterModel:
    """A fitted Fellegi-Sunter model over comparison levels (:func:`comparison_levels`).

    ``m[f][level]`` = P(level | match), ``u[f][level]`` = P(level | non-match); ``prior`` is λ,
    the proportion of matches among the candidate pairs the model was fitted on.
    """

    field_names: tuple[str, ...]
    thresholds: tuple[tuple[float, ...], ...]
    m: tuple[tuple[float, ...], ...]
    u: tuple[tuple[float, ...], ...]
    prior: float
    iterations: int = 0
    converged: bool = True

    def __post_init__(self) -> None:
        names = tuple(self.field_names)
        if not names:
            raise ModelError("a model needs at least one field")
        if len(set(names)) != len(names):
            raise ModelError("field names must be unique")
        if not all(isinstance(name, str) and name for name in names):
            raise ModelError("field names must be non-empty strings")
        thresholds = _check_thresholds(self.thresholds)
        if len(thresholds) != len(names):
            raise ModelError(f"{len(thresholds)} threshold lists for {len(names)} fields")
        n_levels = [len(field) + 1 for field in thresholds]
        m = _check_probability_vectors("m", self.m, n_levels)
        u = _check_probability_vectors("u", self.u, n_levels)
        prior = float(self.prior)
        if not (math.isfinite(prior) and 0.0 < prior < 1.0):
            raise ModelError("prior must lie strictly between 0 and 1")
        if int(self.iterations) < 0:
            raise ModelError("iterations must be non-negative")
        object.__setattr__(self, "field_names", names)
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "u", u)
        object.__setattr__(self, "prior", prior)
        object.__setattr__(self, "iterations", int(self.iterations))
        object.__setattr__(self, "converged", bool(self.converged))

    @property
    def n_levels(self) -> tuple[int, ...]:
        """Number of comparison levels per field."""
        return tuple(len(field) + 1 for field in self.thresholds)

    def match_weights(self, levels: NDArray[Any]) -> NDArray[np.float64]:
        """Per-field weights log2(m / u), shape (n_pairs, n_fields); 0.0 for a missing field."""
        checked = _check_levels(levels, self.n_levels)
        table = _weight_table(self.u, self.m)
        field_columns = np.arange(len(self.field_names))[np.newaxis, :]
        weights: NDArray[np.float64] = table[field_columns, checked.astype(np.intp)]
        return weights

    def match_log2_odds(self, levels: NDArray[Any]) -> NDArray[np.float64]:
        """log2 posterior odds of a match: log2(λ / (1 - λ)) + the sum of the field weights."""
        prior_log2_odds = math.log2(self.prior) - math.log2(1.0 - self.prior)
        log2_odds: NDArray[np.float64] = prior_log2_odds + self.match_weights(levels).sum(axis=1)
        return log2_odds

    def match_probability(self, levels: NDArray[Any]) -> NDArray[np.float64]:
        """Posterior match probability per pair (a sigmoid of the log odds, overflow-free)."""
        return _stable_sigmoid(self.match_log2_odds(levels) * math.log(2.0))

    def explain(self, levels_row: NDArray[Any] | Sequence[int]) -> tuple[FieldEvidence, ...]:
        """Per-field evidence for one pair's comparison vector (one level per field)."""
        row = np.asarray(levels_row)
        if row.ndim != 1:
            raise ModelError(f"explain takes one comparison vector (1-D), got {row.ndim}-D")
        weights = self.match_weights(row[np.newaxis, :])[0]
        return tuple(
            FieldEvidence(
                field=name,
                level=int(level),
                level_label=level_label(int(level), count),
                weight=float(weight),
            )
            for name, level, count, weight in zip(
                self.field_names, row, self.n_levels, weights, strict=True
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form of the model.

        Parsed strictly by :meth:`from_dict` (an unknown or missing key is an error)::

            {"format": "jigsaw.fellegi_sunter", "version": 1,
             "field_names": [str, ...],          one per field, in comparison-vector order
             "thresholds": [[float, ...], ...],  per field, strictly descending Dice cut-offs
             "m": [[float, ...], ...],           per field, P(level | match), index = level
             "u": [[float, ...], ...],           per field, P(level | non-match), index = level
             "prior": float,                     λ, proportion of matches among candidate pairs
             "iterations": int,                  EM iterations run
             "converged": bool}                  whether the tolerance was reached
        """
        return {
            "format": _MODEL_FORMAT,
            "version": _MODEL_VERSION,
            "field_names": list(self.field_names),
            "thresholds": [list(field) for field in self.thresholds],
            "m": [list(field) for field in self.m],
            "u": [list(field) for field in self.u],
            "prior": self.prior,
            "iterations": self.iterations,
            "converged": self.converged,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FellegiSunterModel:
        """Parse :meth:`to_dict` output strictly: unknown or missing keys are an error."""
        if not isinstance(data, Mapping):
            raise ModelError("a stored model must be a mapping")
        problems: list[str] = []
        # Unknown keys are counted and placed, never printed: a key may be anything, even an
        # identifier from a record pasted into the model file.
        unknown = [place for place, key in enumerate(data, start=1) if key not in _MODEL_KEYS]
        missing = sorted(_MODEL_KEYS - set(data))
        if unknown:
            shown = ", ".join(str(place) for place in unknown[:_MAX_KEY_PLACES_SHOWN])
            more = ", ..." if len(unknown) > _MAX_KEY_PLACES_SHOWN else ""
            problems.append(
                f"{len(unknown)} unknown key{'s' if len(unknown) > 1 else ''} "
                f"(key{'s' if len(unknown) > 1 else ''} {shown}{more} of the mapping), "
                f"expected keys: {', '.join(sorted(_MODEL_KEYS))}"
            )
        if missing:
            problems.append("missing keys " + ", ".join(missing))
        if not missing:
            model_format = data["format"]
            if not isinstance(model_format, str) or model_format != _MODEL_FORMAT:
                problems.append(f"format must be {_MODEL_FORMAT!r}")
            version = data["version"]
            if (
                isinstance(version, bool)
                or not isinstance(version, int)
                or version != _MODEL_VERSION
            ):
                problems.append(f"version must be {_MODEL_VERSION}")
            if not isinstance(data["converged"], bool):
                problems.append("converged must be a boolean")
            if isinstance(data["iterations"], bool) or not isinstance(data["iterations"], int):
                problems.append("iterations must be an integer")
        if problems:
            raise ModelError("invalid stored model: " + "; ".join(problems))
        try:
            return cls(
                field_names=tuple(data["field_names"]),
                thresholds=tuple(tuple(field) for field in data["thresholds"]),
                m=tuple(tuple(field) for field in data["m"]),
                u=tuple(tuple(field) for field in data["u"]),
                prior=float(data["prior"]),
                iterations=data["iterations"],
                converged=data["converged"],
            )
        except (TypeError, ValueError) as error:
            raise ModelError(
                f"invalid stored model: wrong value type ({type(error).__name__})"
            ) from None


# --------------------------------------------------------------------------------------------
# Estimation
# --------------------------------------------------------------------------------------------


def _clamp_and_normalise(probabilities: NDArray[np.float64]) -> NDArray[np.float64]:
    """Clamp each row to [floor, 1 - floor] and renormalise it to sum to 1."""
    clamped = np.clip(probabilities, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
    normalised: NDArray[np.float64] = clamped / clamped.sum(axis=-1, keepdims=True)
    return normalised


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
    out above 0.1 uncorrected and below 0.05 corrected (``tests/test_pipeline.py``). With ``c``
    the share of matches among the compared pairs (``contamination[f]``), the observed level
    frequencies are ``(1 - c)·u + c·m``, so ``u = (observed - c·m) / (1 - c)``. ``c`` is
    capped at 0.5, and no level goes below one pseudo-count among the field's
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
