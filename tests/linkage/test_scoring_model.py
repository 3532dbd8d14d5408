"""Tests for linkage.scoring's fitted model: weights, probabilities and explanations checked by
hand, and its strict stored form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from linkage.errors import ModelError
from linkage.scoring import (
    MISSING_LEVEL,
    FellegiSunterModel,
    FieldEvidence,
)

# --------------------------------------------------------------------------------------------
# Weights, probabilities, explanations
# --------------------------------------------------------------------------------------------

HAND_MODEL = FellegiSunterModel(
    field_names=("surname", "postcode"),
    thresholds=((0.95, 0.85, 0.7), (0.9,)),
    m=((0.05, 0.05, 0.1, 0.8), (0.2, 0.8)),
    u=((0.8, 0.1, 0.05, 0.05), (0.8, 0.2)),
    prior=0.2,
    iterations=7,
    converged=True,
)


def test_match_weights_hand_checked() -> None:
    levels = np.array([[3, 1], [0, 0], [2, MISSING_LEVEL]], dtype=np.int8)
    weights = HAND_MODEL.match_weights(levels)
    np.testing.assert_allclose(weights, [[4.0, 2.0], [-4.0, -2.0], [1.0, 0.0]])


def test_missing_is_neutral() -> None:
    with_missing = np.array([[3, MISSING_LEVEL]], dtype=np.int8)
    weights = HAND_MODEL.match_weights(with_missing)
    assert weights[0, 1] == 0.0
    # Probability equals the one computed from the present field alone: prior odds 1/4, 2**4.
    assert HAND_MODEL.match_probability(with_missing)[0] == pytest.approx(4 / 5)
    # ...and lies strictly between the agree and disagree probabilities of that field.
    agree, disagree = HAND_MODEL.match_probability(np.array([[3, 1], [3, 0]], dtype=np.int8))
    assert disagree < 4 / 5 < agree


def test_match_probability_hand_checked_and_stable() -> None:
    levels = np.array([[3, 1], [0, 0]], dtype=np.int8)
    # log2 odds = log2(0.25) + 6 = 4 -> 16/17; log2(0.25) - 6 = -8 -> 1/257.
    assert HAND_MODEL.match_probability(levels).tolist() == pytest.approx([16 / 17, 1 / 257])
    extreme = FellegiSunterModel(
        field_names=tuple(f"f{k}" for k in range(200)),
        thresholds=((0.9,),) * 200,
        m=((1e-6, 1 - 1e-6),) * 200,
        u=((1 - 1e-6, 1e-6),) * 200,
        prior=0.5,
    )
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        probabilities = extreme.match_probability(
            np.stack([np.ones(200), np.zeros(200)]).astype(np.int8)
        )
    assert probabilities.tolist() == [1.0, 0.0]


def test_explain() -> None:
    evidence = HAND_MODEL.explain(np.array([2, MISSING_LEVEL], dtype=np.int8))
    assert evidence[0].weight == pytest.approx(1.0)
    assert evidence == (
        FieldEvidence(field="surname", level=2, level_label="strong", weight=evidence[0].weight),
        FieldEvidence(field="postcode", level=-1, level_label="missing", weight=0.0),
    )
    with pytest.raises(ModelError, match="1-D"):
        HAND_MODEL.explain(np.zeros((1, 2), dtype=np.int8))


def test_match_weights_reject_out_of_range_levels() -> None:
    with pytest.raises(ModelError, match="fields 1"):
        HAND_MODEL.match_weights(np.array([[3, 2]], dtype=np.int8))


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


def test_from_dict_reports_unknown_keys_by_count_and_place() -> None:
    stored = {"lambda": 0.2, **HAND_MODEL.to_dict(), "priors": 0.1, "m_probabilities": []}
    with pytest.raises(ModelError) as info:
        FellegiSunterModel.from_dict(stored)
    expected = ", ".join(sorted(HAND_MODEL.to_dict()))
    assert str(info.value) == (
        f"invalid stored model: 3 unknown keys (keys 1, 11, 12 of the mapping), "
        f"expected keys: {expected}"
    )
    for key in ("lambda", "priors", "m_probabilities"):
        assert key not in str(info.value)


def test_from_dict_lists_at_most_ten_unknown_key_places() -> None:
    stored = {**HAND_MODEL.to_dict(), **{f"extra_{i}": i for i in range(12)}}
    with pytest.raises(ModelError, match=r"12 unknown keys \(keys 10, 11, .*, 19, \.\.\. of"):
        FellegiSunterModel.from_dict(stored)


@pytest.mark.parametrize("version", [True, 1.0, "1", [1]])
def test_from_dict_wants_the_integer_version(version: object) -> None:
    with pytest.raises(ModelError, match="version must be 1"):
        FellegiSunterModel.from_dict({**HAND_MODEL.to_dict(), "version": version})


def test_from_dict_is_strict() -> None:
    stored = HAND_MODEL.to_dict()
    with pytest.raises(ModelError, match=r"1 unknown key \(key 10 of the mapping\)"):
        FellegiSunterModel.from_dict({**stored, "lambda": 0.2})
    without_prior = {key: value for key, value in stored.items() if key != "prior"}
    with pytest.raises(ModelError, match="missing keys prior"):
        FellegiSunterModel.from_dict(without_prior)
    with pytest.raises(ModelError, match="version"):
        FellegiSunterModel.from_dict({**stored, "version": 2})
    with pytest.raises(ModelError, match="converged"):
        FellegiSunterModel.from_dict({**stored, "converged": "yes"})
    with pytest.raises(ModelError, match="sum to 1"):
        FellegiSunterModel.from_dict({**stored, "m": [[0.5, 0.1, 0.1, 0.1], [0.2, 0.8]]})
    with pytest.raises(ModelError, match="wrong value type"):
        FellegiSunterModel.from_dict({**stored, "prior": "high"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"field_names": ()}, "at least one field"),
        ({"field_names": ("a", "a")}, "unique"),
        ({"prior": 0.0}, "prior"),
        ({"prior": math.nan}, "prior"),
        ({"u": ((0.5, 0.5, 0.0, 0.0), (0.5, 0.5))}, r"\(0, 1\]"),
        ({"thresholds": ((0.9,),)}, "1 threshold lists for 2 fields"),
    ],
)
def test_model_validation(changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "field_names": HAND_MODEL.field_names,
        "thresholds": HAND_MODEL.thresholds,
        "m": HAND_MODEL.m,
        "u": HAND_MODEL.u,
        "prior": HAND_MODEL.prior,
    }
    arguments.update(changes)
    with pytest.raises(ModelError, match=message):
        FellegiSunterModel(**arguments)  # type: ignore[arg-type]
