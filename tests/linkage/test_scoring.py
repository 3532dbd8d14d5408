"""Tests for linkage.scoring: comparison levels, u from random pairs, EM on a simulated world
with known m, u and prior, and the model's JSON round trip."""

from __future__ import annotations

import json

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
    comparison_levels,
    estimate_u,
    fit_fellegi_sunter,
    level_label,
    m_prior,
)
from tests.helpers.scoring import max_difference

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


def test_round_trip_through_json(
    simulation: tuple[NDArray[np.int8], NDArray[np.bool_], tuple[tuple[float, ...], ...]],
) -> None:
    levels, _, u = simulation
    model = fit(levels, u=u)
    restored = FellegiSunterModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert restored == model
    assert np.array_equal(restored.match_probability(levels), model.match_probability(levels))


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
