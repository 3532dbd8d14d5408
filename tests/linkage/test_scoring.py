"""Tests for linkage.scoring: comparison levels, EM recovery, calibration, weights, storage."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from linkage.errors import ModelError
from linkage.scoring import (
    MISSING_LEVEL,
    PROBABILITY_FLOOR,
    FellegiSunterModel,
    FieldEvidence,
    comparison_levels,
    decontaminate_u,
    estimate_u,
    fit_fellegi_sunter,
    fit_latent_classes,
    level_label,
    m_prior,
    priors_by_kind,
)

# A simulated world: 4 fields with 2, 3, 4 and 3 levels, known m, u and λ.
FIELD_NAMES = ("sex", "first_name", "surname", "date_of_birth")
THRESHOLDS = ((0.9,), (0.9, 0.7), (0.95, 0.85, 0.7), (0.9, 0.7))
TRUE_M = ((0.05, 0.95), (0.03, 0.07, 0.90), (0.02, 0.05, 0.13, 0.80), (0.10, 0.20, 0.70))
TRUE_U = ((0.55, 0.45), (0.70, 0.20, 0.10), (0.60, 0.20, 0.12, 0.08), (0.80, 0.15, 0.05))
TRUE_PRIOR = 0.2
MISSING_SHARE = 0.05


def simulate_levels(
    n_pairs: int, prior: float, seed: int
) -> tuple[NDArray[np.int8], NDArray[np.bool_]]:
    """Comparison vectors drawn from TRUE_M / TRUE_U, conditionally independent, 5% missing."""
    rng = np.random.default_rng(seed)
    is_match = rng.random(n_pairs) < prior
    levels = np.empty((n_pairs, len(FIELD_NAMES)), dtype=np.int8)
    for field_index, (m, u) in enumerate(zip(TRUE_M, TRUE_U, strict=True)):
        if_match = rng.choice(len(m), size=n_pairs, p=m)
        if_non_match = rng.choice(len(u), size=n_pairs, p=u)
        levels[:, field_index] = np.where(is_match, if_match, if_non_match)
    levels[rng.random(levels.shape) < MISSING_SHARE] = MISSING_LEVEL
    return levels, is_match


@pytest.fixture(scope="module")
def simulation() -> tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]]:
    levels, is_match = simulate_levels(40_000, TRUE_PRIOR, seed=20240601)
    random_levels, _ = simulate_levels(100_000, 0.0, seed=20240602)
    u = estimate_u(random_levels, [len(field) + 1 for field in THRESHOLDS])
    return levels, is_match, u


def fit(levels: NDArray[np.int8], **options: object) -> FellegiSunterModel:
    return fit_fellegi_sunter(
        levels,
        field_names=FIELD_NAMES,
        thresholds=THRESHOLDS,
        **options,  # type: ignore[arg-type]
    )


def max_difference(
    estimate: tuple[tuple[float, ...], ...], truth: tuple[tuple[float, ...], ...]
) -> float:
    return max(
        abs(a - b)
        for estimate_field, true_field in zip(estimate, truth, strict=True)
        for a, b in zip(estimate_field, true_field, strict=True)
    )


# --------------------------------------------------------------------------------------------
# comparison_levels
# --------------------------------------------------------------------------------------------


def test_comparison_levels_cut_offs_and_missing() -> None:
    sim = np.array(
        [
            [1.0, 0.95],
            [0.95, 0.949],
            [0.9, 0.85],
            [0.7, 0.5],
            [0.69, 0.0],
            [0.99, 0.99],
        ]
    )
    present = np.ones_like(sim, dtype=bool)
    present[5, 1] = False
    levels = comparison_levels(sim, present, [(0.95, 0.85, 0.7), (0.95,)])
    assert levels.dtype == np.int8
    assert levels.tolist() == [[3, 1], [3, 0], [2, 0], [1, 0], [0, 0], [3, MISSING_LEVEL]]


@settings(deadline=None, max_examples=50)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30),
    st.lists(st.floats(0.01, 1.0), min_size=1, max_size=4, unique=True),
)
def test_comparison_levels_count_reached_thresholds(values: list[float], cuts: list[float]) -> None:
    cut_offs = sorted(cuts, reverse=True)
    sim = np.array(values)[:, np.newaxis]
    levels = comparison_levels(sim, np.ones_like(sim, dtype=bool), [cut_offs])
    expected = [sum(value >= cut for cut in cut_offs) for value in values]
    assert levels[:, 0].tolist() == expected


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(0, 50),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(
        st.lists(st.floats(0.01, 1.0), min_size=1, max_size=4, unique=True),
        min_size=1,
        max_size=7,
    ),
)
def test_comparison_levels_of_many_fields_equal_a_plain_count(
    rows: int, seed: int, cuts: list[list[float]]
) -> None:
    """Fields with different numbers of cut-offs, similarities on a cut-off exactly, missing
    pairs: each level is the count of its own field's cut-offs reached (the cutting runs one
    rank of cut-offs at a time over all fields, padded with +inf)."""
    rng = np.random.default_rng(seed)
    thresholds = [sorted(c, reverse=True) for c in cuts]
    sim = rng.random((rows, len(cuts)))
    on_a_cut_off = rng.random(sim.shape) < 0.3
    every_cut = np.concatenate([np.asarray(c) for c in cuts] + [np.array([0.0, 1.0])])
    sim[on_a_cut_off] = rng.choice(every_cut, size=int(on_a_cut_off.sum()))
    present = rng.random(sim.shape) < 0.8
    levels = comparison_levels(sim, present, thresholds)
    expected = [
        [
            sum(value >= cut for cut in thresholds[f]) if present[r, f] else MISSING_LEVEL
            for f, value in enumerate(row)
        ]
        for r, row in enumerate(sim.tolist())
    ]
    assert levels.dtype == np.int8
    assert levels.tolist() == expected


@pytest.mark.parametrize(
    ("sim", "present", "thresholds", "message"),
    [
        (np.zeros((2, 2)), np.ones((2, 3), dtype=bool), [(0.9,), (0.9,)], "shape"),
        (np.zeros((2, 2)), np.ones((2, 2), dtype=bool), [(0.9,)], "thresholds for 1 fields"),
        (np.zeros((2, 1)), np.ones((2, 1), dtype=bool), [(0.7, 0.9)], "strictly descending"),
        (np.zeros((2, 1)), np.ones((2, 1), dtype=bool), [()], "at least one threshold"),
        (np.zeros((2, 1)), np.ones((2, 1), dtype=bool), [(1.5,)], r"\[0, 1\]"),
        (np.full((2, 1), np.nan), np.ones((2, 1), dtype=bool), [(0.9,)], "finite"),
        (np.full((2, 1), 1.2), np.ones((2, 1), dtype=bool), [(0.9,)], "lie in"),
        (np.zeros(2), np.ones(2, dtype=bool), [(0.9,)], "2-D"),
        (np.zeros((2, 1)), np.ones((2, 1)), [(0.9,)], "boolean"),
    ],
)
def test_comparison_levels_rejects_bad_input(
    sim: NDArray[np.float64], present: NDArray[np.bool_], thresholds: object, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        comparison_levels(sim, present, thresholds)  # type: ignore[arg-type]


def test_nan_similarity_allowed_where_missing() -> None:
    sim = np.array([[np.nan], [0.95]])
    levels = comparison_levels(sim, np.array([[False], [True]]), [(0.9,)])
    assert levels[:, 0].tolist() == [MISSING_LEVEL, 1]


def test_level_labels() -> None:
    assert [level_label(level, 4) for level in (-1, 0, 1, 2, 3)] == [
        "missing",
        "disagrees",
        "weak",
        "strong",
        "exact",
    ]
    assert [level_label(level, 2) for level in (0, 1)] == ["disagrees", "exact"]
    assert [level_label(level, 3) for level in (0, 1, 2)] == ["disagrees", "strong", "exact"]
    assert level_label(2, 5) == "moderate"
    assert level_label(3, 6) == "similar_3"
    with pytest.raises(ModelError):
        level_label(4, 4)


# --------------------------------------------------------------------------------------------
# estimate_u and EM
# --------------------------------------------------------------------------------------------


def test_estimate_u_laplace_smoothing_and_missing_skipped() -> None:
    levels = np.array([[0, -1], [0, 1], [1, 1], [0, -1]], dtype=np.int8)
    u = estimate_u(levels, [2, 3])
    assert u[0] == pytest.approx((4 / 6, 2 / 6))
    assert u[1] == pytest.approx((1 / 5, 3 / 5, 1 / 5))


def test_estimate_u_recovers_truth(
    simulation: tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]],
) -> None:
    _, _, u = simulation
    assert max_difference(u, TRUE_U) < 0.01


@pytest.mark.parametrize("u_given", [True, False], ids=["u_from_random_pairs", "u_by_em"])
def test_em_recovers_m_and_prior(
    simulation: tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]],
    u_given: bool,
) -> None:
    levels, _, u = simulation
    model = fit(levels, u=u) if u_given else fit(levels)
    assert model.converged
    assert max_difference(model.m, TRUE_M) < 0.03
    assert abs(model.prior - TRUE_PRIOR) < 0.02
    if u_given:
        assert model.u == u  # fixed, not re-estimated
    else:
        assert max_difference(model.u, TRUE_U) < 0.03


def test_em_probabilities_are_calibrated(
    simulation: tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]],
) -> None:
    levels, is_match, u = simulation
    probabilities = fit(levels, u=u).match_probability(levels)
    bins = np.minimum((probabilities * 10).astype(int), 9)
    checked = 0
    for decile in range(10):
        in_bin = bins == decile
        if np.count_nonzero(in_bin) < 200:
            continue
        checked += 1
        assert abs(probabilities[in_bin].mean() - is_match[in_bin].mean()) < 0.05, decile
    assert checked >= 3
    # And the model separates: most pairs are confidently classified, and correctly.
    assert np.mean((probabilities >= 0.5) == is_match) > 0.95


def test_em_with_u_not_fixed_uses_it_as_start(
    simulation: tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]],
) -> None:
    levels, _, u = simulation
    model = fit(levels, u=u, fix_u=False)
    assert model.u != u
    assert max_difference(model.m, TRUE_M) < 0.03
    assert max_difference(model.u, TRUE_U) < 0.03


def test_em_is_deterministic_and_order_free(
    simulation: tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]],
) -> None:
    levels, _, u = simulation
    shuffled = levels[np.random.default_rng(5).permutation(levels.shape[0])]
    assert fit(levels, u=u) == fit(levels, u=u)
    first, second = fit(levels, u=u), fit(shuffled, u=u)
    assert first.m == second.m
    assert first.prior == second.prior


def test_em_clamps_probabilities() -> None:
    # Every pair agrees exactly on both fields: unclamped EM would drive m of level 0 to zero.
    levels = np.ones((500, 2), dtype=np.int8)
    model = fit_fellegi_sunter(
        levels,
        field_names=("a", "b"),
        thresholds=((0.9,), (0.9,)),
        u=((0.9, 0.1), (0.9, 0.1)),
        max_iterations=500,
    )
    for field in model.m:
        assert min(field) >= PROBABILITY_FLOOR * 0.999
    assert PROBABILITY_FLOOR * 0.999 <= model.prior <= 1 - PROBABILITY_FLOOR
    assert np.all(np.isfinite(model.match_weights(levels)))


def test_em_field_always_missing_gets_its_prior_mean() -> None:
    rng = np.random.default_rng(3)
    levels = np.stack([rng.integers(0, 2, 1000), np.full(1000, MISSING_LEVEL)], axis=1).astype(
        np.int8
    )
    model = fit_fellegi_sunter(
        levels, field_names=("a", "b"), thresholds=((0.9,), (0.9,)), u=((0.9, 0.1), (0.9, 0.1))
    )
    assert model.m[1] == pytest.approx(m_prior(2))  # no pair informs it: the prior mean
    assert np.all(model.match_weights(levels)[:, 1] == 0.0)


def test_em_max_iterations_reports_not_converged(
    simulation: tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]],
) -> None:
    levels, _, u = simulation
    model = fit(levels, u=u, max_iterations=1)
    assert model.iterations == 1
    assert not model.converged


def test_em_many_fields_fall_back_to_row_unique() -> None:
    # 30 fields of 5 levels: the packed key would not fit int64, so rows are collapsed directly.
    rng = np.random.default_rng(11)
    n_fields = 30
    levels = rng.integers(-1, 5, size=(2000, n_fields)).astype(np.int8)
    thresholds = [(0.95, 0.9, 0.8, 0.7)] * n_fields
    model = fit_fellegi_sunter(
        levels, field_names=[f"f{k}" for k in range(n_fields)], thresholds=thresholds
    )
    assert len(model.m) == n_fields
    assert np.all(np.isfinite(model.match_probability(levels)))


@pytest.mark.parametrize(
    ("levels", "options", "message"),
    [
        (np.zeros((0, 4), dtype=np.int8), {}, "zero candidate pairs"),
        (np.zeros((5, 3), dtype=np.int8), {}, "3 fields, expected 4"),
        (np.zeros(5, dtype=np.int8), {}, "2-D"),
        (np.full((5, 4), 3, dtype=np.int8), {}, "out of range for fields 0, 1, 3"),
        (np.full((5, 4), -2, dtype=np.int8), {}, "out of range"),
        (np.zeros((5, 4)), {}, "integers"),
        (np.zeros((5, 4), dtype=np.int8), {"u": ((0.5, 0.5),)}, "u has 1 fields"),
        (
            np.zeros((5, 4), dtype=np.int8),
            {"u": ((0.5, 0.5), (0.5, 0.5), (0.25,) * 4, (0.4, 0.4, 0.2))},
            "field 1: 2 levels, expected 3",
        ),
        (np.zeros((5, 4), dtype=np.int8), {"initial_prior": 1.0}, "initial_prior"),
        (np.zeros((5, 4), dtype=np.int8), {"max_iterations": 0}, "max_iterations"),
        (np.zeros((5, 4), dtype=np.int8), {"tolerance": 0.0}, "tolerance"),
    ],
)
def test_fit_rejects_bad_input(
    levels: NDArray[np.int8], options: dict[str, object], message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        fit(levels, **options)


def test_fit_rejects_mismatched_names_and_thresholds() -> None:
    with pytest.raises(ModelError, match="2 field names but 1 threshold"):
        fit_fellegi_sunter(
            np.zeros((3, 1), dtype=np.int8), field_names=("a", "b"), thresholds=[(0.9,)]
        )


def test_estimate_u_rejects_bad_input() -> None:
    with pytest.raises(ModelError, match="at least one random pair"):
        estimate_u(np.zeros((0, 1), dtype=np.int8), [2])
    with pytest.raises(ModelError, match="between 2 and"):
        estimate_u(np.zeros((3, 1), dtype=np.int8), [1])
    with pytest.raises(ModelError, match="out of range"):
        estimate_u(np.full((3, 1), 2, dtype=np.int8), [2])


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


def test_round_trip_through_json(
    simulation: tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]],
) -> None:
    levels, _, u = simulation
    model = fit(levels, u=u)
    restored = FellegiSunterModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored == model
    assert np.array_equal(restored.match_probability(levels), model.match_probability(levels))


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


def test_em_converges_on_many_pairs() -> None:
    # (its speed on a million pairs is a benchmark figure, not a unit test's)
    levels, _ = simulate_levels(200_000, 0.05, seed=99)
    model = fit(levels)
    assert model.converged


@pytest.mark.parametrize("initial_prior", [0.01, 0.9])
def test_em_result_does_not_depend_on_starting_prior(
    simulation: tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]],
    initial_prior: float,
) -> None:
    levels, _, _ = simulation
    model = fit(levels, initial_prior=initial_prior)
    assert abs(model.prior - TRUE_PRIOR) < 0.02
    assert max_difference(model.m, TRUE_M) < 0.03


# ----------------------------------------------------------------- latent classes (Winkler)

# Five fields of three levels. Matches agree on everything; "namesakes" (different people with
# the same common name, blocked together) agree on the name fields and are random on the
# others; "others" are random everywhere. Namesakes outnumber matches 15 to 1 (2 % matches,
# as among the blocked candidates of a 200 k-record child population).
LC_THRESHOLDS = ((0.9, 0.7),) * 5
LC_NAMES = ("given", "family", "date", "postcode", "middle")
_AGREE = (0.03, 0.07, 0.90)
_RANDOM = (0.85, 0.12, 0.03)
LC_MATCH = (_AGREE,) * 5
LC_NAMESAKE = (_AGREE, _AGREE, _RANDOM, _RANDOM, _RANDOM)
LC_OTHER = (_RANDOM,) * 5


def _draw(
    tables: tuple[tuple[float, ...], ...], count: int, rng: np.random.Generator
) -> NDArray[np.int8]:
    columns = [rng.choice(len(t), size=count, p=t) for t in tables]
    return np.stack(columns, axis=1).astype(np.int8)


def _latent_world(seed: int) -> NDArray[np.int8]:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            _draw(LC_MATCH, 2_000, rng),
            _draw(LC_NAMESAKE, 30_000, rng),
            _draw(LC_OTHER, 68_000, rng),
        ]
    )


def test_two_classes_mistake_namesakes_for_matches_three_do_not() -> None:
    levels = _latent_world(seed=3)
    two = fit_fellegi_sunter(
        levels, field_names=LC_NAMES, thresholds=LC_THRESHOLDS, u=LC_OTHER, fix_u=False,
        initial_prior=0.05, max_iterations=500,
    )  # fmt: skip
    # The two-class fit's "match" class is matches + namesakes: the date no longer agrees.
    assert two.m[2][2] < 0.5 and two.m[3][2] < 0.5
    fit3 = fit_latent_classes(
        levels, field_names=LC_NAMES, thresholds=LC_THRESHOLDS, u=LC_OTHER, classes=3,
        initial_prior=0.05,
    )  # fmt: skip
    assert len(fit3.tables) == 3 and abs(sum(fit3.shares) - 1.0) < 1e-9
    scores = [np.mean([np.dot(t[f, :3], np.arange(3)) / 2 for f in range(3)]) for t in fit3.tables]
    assert scores == sorted(scores, reverse=True)  # most agreeing class first
    # A population of 2,000 records: ~2 M pairs, so the prior odds are small and namesakes
    # (names agree, date random) stay out of the match class.
    model = fit3.match_model(LC_OTHER, candidate_pairs=len(levels), population_pairs=2.0e6)
    assert max_difference(model.m, LC_MATCH) < 0.03
    assert abs(model.prior * 2.0e6 - 2_000) < 100
    assert model.u == tuple(tuple(float(x) for x in row) for row in LC_OTHER)


def test_a_class_of_noisy_matches_joins_the_match_class() -> None:
    rng = np.random.default_rng(5)
    noisy = ((0.10, 0.30, 0.60), (0.40, 0.30, 0.30), (0.05, 0.15, 0.80), _AGREE, _RANDOM)
    levels = np.concatenate(
        [_draw(LC_MATCH, 6_000, rng), _draw(noisy, 4_000, rng), _draw(LC_OTHER, 20_000, rng)]
    )
    fit3 = fit_latent_classes(
        levels, field_names=LC_NAMES, thresholds=LC_THRESHOLDS, u=LC_OTHER, classes=3
    )
    model = fit3.match_model(LC_OTHER, candidate_pairs=len(levels), population_pairs=1.0e5)
    # both match-like classes are in: the prior counts all 10,000 of their pairs
    assert abs(model.prior - 10_000 / 1.0e5) < 0.01
    mixed = tuple(
        tuple(0.6 * a + 0.4 * b for a, b in zip(ra, rb, strict=True))
        for ra, rb in zip(LC_MATCH, noisy, strict=True)
    )
    assert max_difference(model.m, mixed) < 0.05


def test_latent_class_fit_is_deterministic() -> None:
    levels = _latent_world(seed=4)[::7]
    fits = [
        fit_latent_classes(levels, field_names=LC_NAMES, thresholds=LC_THRESHOLDS, u=LC_OTHER)
        for _ in range(2)
    ]
    assert fits[0].shares == fits[1].shares
    assert all(np.array_equal(a, b) for a, b in zip(fits[0].tables, fits[1].tables, strict=True))


@pytest.mark.parametrize("classes", [1, 6, True, 2.0])
def test_latent_classes_count_is_checked(classes: object) -> None:
    with pytest.raises(ModelError, match="classes"):
        fit_latent_classes(
            _latent_world(seed=1)[:100], field_names=LC_NAMES, thresholds=LC_THRESHOLDS,
            u=LC_OTHER, classes=classes,  # type: ignore[arg-type]
        )  # fmt: skip


def test_latent_classes_reject_empty_input() -> None:
    with pytest.raises(ModelError, match="zero candidate pairs"):
        fit_latent_classes(
            np.zeros((0, 3), dtype=np.int8), field_names=LC_NAMES, thresholds=LC_THRESHOLDS,
            u=LC_OTHER,
        )  # fmt: skip


def test_decontaminate_u_takes_the_matches_out_of_random_pairs() -> None:
    u_true = np.array([0.90, 0.07, 0.02, 0.01])
    m = np.array([0.01, 0.02, 0.07, 0.90])
    share = 0.25  # a quarter of the compared random pairs are matches
    observed = (1 - share) * u_true + share * m
    (cleaned,) = decontaminate_u([observed.tolist()], [m.tolist()], [share], [10**9])
    np.testing.assert_allclose(cleaned, u_true, atol=1e-6)
    # no contamination: unchanged
    (same,) = decontaminate_u([observed.tolist()], [m.tolist()], [0.0], [10**9])
    np.testing.assert_allclose(same, observed, atol=1e-9)


def test_decontaminate_u_keeps_one_pseudo_count_per_level() -> None:
    # m overstates a level: the subtraction would drive its u to zero (unbounded weight)
    observed = [0.90, 0.09, 0.001, 0.009]
    m = [0.0, 0.0, 0.5, 0.5]
    (cleaned,) = decontaminate_u([observed], [m], [0.2], [996])
    # the two emptied levels keep one pseudo-count in 996 + 4 each, before renormalising
    assert cleaned[2] == cleaned[3] and 1 / 1000 / 1.2 < cleaned[2] < 1 / 1000
    assert abs(sum(cleaned) - 1.0) < 1e-9
    # the share is capped at one half
    (capped,) = decontaminate_u([observed], [m], [0.9], [996])
    (half,) = decontaminate_u([observed], [m], [0.5], [996])
    assert capped == half


# --------------------------------------------------------------------------------------------
# No near-miss is a veto (issue 14): a model fitted on blocked candidates of a mixture in which
# the date of birth and the names sometimes err, with each field's m kept from the pairs
# blocked on it (blocked_on) and Dirichlet priors on m.

VETO_NAMES = ("given_name", "family_name", "date_of_birth", "sex", "postcode", "nhs_number")
VETO_THRESHOLDS = (
    (0.95, 0.8, 0.6, 0.4), (0.95, 0.8, 0.6, 0.4), (0.95, 0.6, 0.45, 0.3), (0.9,),
    (0.95, 0.6, 0.35), (0.9,),
)  # fmt: skip
# P(level | match), index = level: a date one component off (level 3), transposed (2), a
# year off (1), unrelated (0); names with nicknames, typos and changed names.
VETO_M = (
    (0.02, 0.03, 0.03, 0.04, 0.88), (0.04, 0.02, 0.02, 0.04, 0.88),
    (0.01, 0.03, 0.03, 0.05, 0.88), (0.01, 0.99), (0.10, 0.05, 0.02, 0.83), (0.01, 0.99),
)  # fmt: skip
# P(level | non-match): the child schema's random-pair u of the synthetic benchmark.
VETO_U = (
    (0.90, 0.092, 0.0029, 0.0002, 0.0049), (0.86, 0.13, 0.0009, 0.0002, 0.0089),
    (0.18, 0.696, 0.12, 0.0036, 0.0004), (0.498, 0.502), (0.134, 0.86, 0.0014, 0.0046),
    (0.99999, 0.00001),
)  # fmt: skip
VETO_RULES = ({2, 3}, {5}, {0, 2}, {1, 2}, {4, 2})  # the child schema's rules' columns
VETO_POPULATION_PAIRS = 2.0e8  # 20,000 records
NHS_SHARE = 0.4  # of pairs with an NHS number on both sides


def _veto_world(seed: int) -> tuple[NDArray[np.int8], NDArray[np.bool_], NDArray[np.bool_]]:
    """Candidate levels, blocked_on and truth: 3,000 matches and 400,000 non-matches drawn
    from VETO_M / VETO_U (of which 4,000 born on the same day, 1,000 of them with the same
    given name too), kept when a rule finds them (every column of the rule exact), as blocking
    on equal filters does; blocked on a column when every rule that found the pair involves it
    (pipeline.fitting_pairs with k = 1)."""
    rng = np.random.default_rng(seed)
    parts = []
    for tables, count, is_match in ((VETO_M, 3_000, True), (VETO_U, 400_000, False)):
        drawn = _draw(tables, count, rng)
        drawn[rng.random(count) > NHS_SHARE, 5] = MISSING_LEVEL
        if not is_match:
            drawn[:4_000, 2:4] = (4, 1)
            drawn[:1_000, 0] = 4
        parts.append((drawn, np.full(count, is_match)))
    levels = np.concatenate([p[0] for p in parts])
    truth = np.concatenate([p[1] for p in parts])
    top = np.array([len(t) for t in VETO_THRESHOLDS])
    exact = levels == top
    found = np.stack([exact[:, sorted(rule)].all(axis=1) for rule in VETO_RULES], axis=1)
    keep = found.any(axis=1)
    involves = np.array([[f in rule for f in range(len(VETO_NAMES))] for rule in VETO_RULES])
    blocked = np.stack(
        [~(found & ~involves[:, f]).any(axis=1) for f in range(len(VETO_NAMES))], axis=1
    )
    return levels[keep], blocked[keep], truth[keep]


@pytest.fixture(scope="module")
def veto_models() -> dict[str, FellegiSunterModel]:
    levels, blocked, _ = _veto_world(seed=14)
    random_levels = _draw(VETO_U, 300_000, np.random.default_rng(15))
    u = estimate_u(random_levels, [len(t) + 1 for t in VETO_THRESHOLDS])
    common: dict[str, Any] = {"field_names": VETO_NAMES, "thresholds": VETO_THRESHOLDS, "u": u}
    latent = fit_latent_classes(
        levels,
        **common,
        classes=4,
        initial_prior=0.3,
        blocked_on=blocked,
    )
    two = fit_fellegi_sunter(
        levels, **common, fix_u=False, initial_prior=0.3, max_iterations=500, blocked_on=blocked,
    )  # fmt: skip
    return {
        "latent": latent.match_model(
            u, candidate_pairs=len(levels), population_pairs=VETO_POPULATION_PAIRS
        ),
        "two": FellegiSunterModel(
            field_names=two.field_names,
            thresholds=two.thresholds,
            m=two.m,
            u=u,
            prior=two.prior * len(levels) / VETO_POPULATION_PAIRS,
            iterations=two.iterations,
            converged=two.converged,
        ),
    }


_ = MISSING_LEVEL  # rows below: given, family, date of birth, sex, postcode, NHS number


@pytest.mark.parametrize("kind", ["latent", "two"])
@pytest.mark.parametrize("date_level", [0, 1, 2, 3])
def test_exact_nhs_and_names_link_across_a_wrong_date(
    veto_models: dict[str, FellegiSunterModel], kind: str, date_level: int
) -> None:
    row = (4, 4, date_level, 1, _, 1)
    assert veto_models[kind].match_probability(np.array([row], dtype=np.int8))[0] >= 0.5


@pytest.mark.parametrize("kind", ["latent", "two"])
def test_a_date_one_level_off_with_the_rest_agreeing_scores_high(
    veto_models: dict[str, FellegiSunterModel], kind: str
) -> None:
    row = (4, 4, 3, 1, 3, _)  # no NHS number on one side
    assert veto_models[kind].match_probability(np.array([row], dtype=np.int8))[0] >= 0.9


@pytest.mark.parametrize("kind", ["latent", "two"])
@pytest.mark.parametrize("given_level", [0, 1, 2, 3])
def test_a_given_name_disagreeing_with_the_rest_exact_still_links(
    veto_models: dict[str, FellegiSunterModel], kind: str, given_level: int
) -> None:
    row = (given_level, 4, 4, 1, 3, _)
    assert veto_models[kind].match_probability(np.array([row], dtype=np.int8))[0] >= 0.5


@pytest.mark.parametrize("kind", ["latent", "two"])
def test_no_fitted_m_is_the_floor(veto_models: dict[str, FellegiSunterModel], kind: str) -> None:
    model = veto_models[kind]
    assert min(min(field) for field in model.m) > 10 * PROBABILITY_FLOOR
    assert model.converged


def test_m_prior_puts_decreasing_real_mass_below_exact() -> None:
    for count in (2, 4, 5):
        mean = m_prior(count)
        assert abs(sum(mean) - 1.0) < 1e-12 and mean[-1] == pytest.approx(0.9)
        assert all(a < b for a, b in itertools.pairwise(mean))
        assert min(mean) > 1e-3


def test_the_floor_never_stands_in_for_an_estimate_without_data_for_a_level() -> None:
    # 200,000 pairs, every one exact on both fields: m of "disagrees" comes from the prior.
    levels = np.ones((200_000, 2), dtype=np.int8)
    model = fit_fellegi_sunter(
        levels, field_names=("a", "b"), thresholds=((0.9,), (0.9,)), u=((0.9, 0.1), (0.9, 0.1))
    )
    assert min(min(field) for field in model.m) > 10 * PROBABILITY_FLOOR


@pytest.mark.parametrize("kind", ["latent", "two"])
def test_blocked_pairs_do_not_inform_the_m_of_their_field(kind: str) -> None:
    # 2,000 matches (every field agrees but "date", a clear class of their own) and 8,000
    # non-matches. Half the matches were found only by a rule on the date, so their dates are
    # all exact; among the others a date is exact in 70 % of matches.
    rng = np.random.default_rng(9)
    names, thresholds = ("a", "b", "c", "date"), ((0.9,), (0.9,), (0.9,), (0.9,))
    matches = np.ones((2_000, 4), dtype=np.int8)
    matches[1_000:, 3] = (rng.random(1_000) < 0.7).astype(np.int8)
    non_matches = (rng.random((8_000, 4)) < 0.05).astype(np.int8)
    non_matches[:, 3] = 1  # found by the date rule too
    levels = np.concatenate([matches, non_matches])
    blocked = np.zeros(levels.shape, dtype=np.bool_)
    blocked[:1_000, 3] = True
    blocked[2_000:, 3] = True
    u = ((0.95, 0.05),) * 4
    fits: list[tuple[float, ...]] = []
    for mask in (blocked, None):
        if kind == "two":
            model = fit_fellegi_sunter(
                levels, field_names=names, thresholds=thresholds, u=u, fix_u=False,
                blocked_on=mask,
            )  # fmt: skip
            fits.append(model.m[3])
        else:
            latent = fit_latent_classes(
                levels, field_names=names, thresholds=thresholds, u=u, classes=3, blocked_on=mask
            )
            fits.append(
                latent.match_model(u, candidate_pairs=len(levels), population_pairs=1e5).m[3]
            )
    with_mask, without = fits
    assert abs(with_mask[1] - 0.7) < 0.03  # the unbiased share
    assert without[1] > 0.8  # the blocked matches pull it towards exact


def test_blocked_on_is_checked() -> None:
    levels = np.ones((10, 2), dtype=np.int8)
    options = {"field_names": ("a", "b"), "thresholds": ((0.9,), (0.9,))}
    with pytest.raises(ModelError, match="blocked_on has shape"):
        fit_fellegi_sunter(levels, **options, blocked_on=np.zeros((10, 3), dtype=np.bool_))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="boolean"):
        fit_fellegi_sunter(levels, **options, blocked_on=np.zeros((10, 2)))  # type: ignore[arg-type]


@given(
    st.lists(st.floats(-40.0, 40.0), min_size=1, max_size=40),
    st.lists(st.integers(0, 1), min_size=40, max_size=40),
    st.floats(1e3, 1e9),
    st.floats(1e3, 1e9),
)
@settings(max_examples=60, deadline=None)
def test_priors_by_kind_settle_where_each_prior_explains_its_pairs(
    odds: list[float], kinds: list[int], within: float, across: float
) -> None:
    log2_odds = np.array(odds)
    kind = np.array(kinds[: len(odds)], dtype=np.int64)
    probability, priors = priors_by_kind(log2_odds, kind, (within, across), 1e-4)
    for k, total in enumerate((within, across)):
        mask = kind == k
        if not mask.any():
            assert priors[k] == 1e-4  # no candidate of this kind: the model's prior stands
            continue
        # EM's fixed point: the prior is the expected share of matches among all such pairs,
        # with the Beta prior's pseudo-matches (10) at the model's prior
        matches = probability[mask].sum() + 10.0
        expected = float(np.clip(matches / (total + 10.0 / 1e-4), 1e-12, 0.5))
        assert math.isclose(priors[k], expected, rel_tol=1e-6)
    # the fields' evidence is kept: within a kind, the order of the pairs is unchanged
    for k in (0, 1):
        mask = kind == k
        order = np.argsort(log2_odds[mask], kind="stable")
        assert np.all(np.diff(probability[mask][order]) >= 0)


def test_a_rare_kind_of_pair_gets_a_lower_prior_and_lower_probabilities() -> None:
    # the same evidence for ten pairs of each kind; kind 0 has a hundred times more pairs in
    # the population, so the same matches are a hundred times rarer among them
    log2_odds = np.full(20, 3.0)
    kind = np.repeat(np.array([0, 1], dtype=np.int64), 10)
    probability, (within, across) = priors_by_kind(
        log2_odds, kind, (1e6, 1e4), 1e-3, pseudo_matches=1.0
    )
    assert within < across
    assert np.all(probability[:10] < probability[10:])
