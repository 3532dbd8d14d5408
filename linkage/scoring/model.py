"""The fitted Fellegi-Sunter model: comparison levels to weights, probabilities, evidence.

Contract: a :class:`FellegiSunterModel` holds, per field, ``m`` (P(level | match)) and ``u``
(P(level | non-match)) and the prior λ; a pair's weight per field is ``log2(m / u)``, zero for
a missing field (neutral, never disagreement), and its match probability the logistic of the
summed weights plus the prior log-odds. Probabilities are clamped to
[:data:`PROBABILITY_FLOOR`, 1 - :data:`PROBABILITY_FLOOR`] so no weight is infinite. The stored
form (:meth:`FellegiSunterModel.to_dict`) is parsed strictly by
:meth:`FellegiSunterModel.from_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.errors import ModelError, as_float_array
from linkage.scoring.levels import _check_levels, _check_thresholds, level_label

PROBABILITY_FLOOR = 1e-6
"""m, u and λ are clamped to [PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR] so no weight is infinite.
A guard against arithmetic, never an estimate: EM's pseudo-counts (:func:`m_prior`) keep every
fitted probability above it."""

_MODEL_FORMAT = "jigsaw.fellegi_sunter"
_MODEL_VERSION = 1
_MODEL_KEYS = frozenset(
    {"format", "version", "field_names", "thresholds", "m", "u", "prior", "iterations", "converged"}
)
_MAX_KEY_PLACES_SHOWN = 10  # places of unknown keys listed in a from_dict error


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


def _clamp_and_normalise(probabilities: NDArray[np.float64]) -> NDArray[np.float64]:
    """Clamp each row to [floor, 1 - floor] and renormalise it to sum to 1."""
    clamped = np.clip(probabilities, PROBABILITY_FLOOR, 1.0 - PROBABILITY_FLOOR)
    normalised: NDArray[np.float64] = clamped / clamped.sum(axis=-1, keepdims=True)
    return normalised
