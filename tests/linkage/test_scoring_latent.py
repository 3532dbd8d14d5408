"""Tests for linkage.scoring beyond two classes: latent classes (Winkler), u decontaminated of
matches, and no near-miss made a veto."""

from __future__ import annotations

import itertools
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
    decontaminate_u,
    estimate_u,
    fit_fellegi_sunter,
    fit_latent_classes,
    m_prior,
    priors_by_kind,
)
from tests.helpers.scoring import max_difference

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
