"""The batch pipeline end to end on a seeded synthetic population: blocking, comparison,
the unsupervised model and clustering (quality figures are the benchmark's; these tests pin
behaviour and fail if linkage quality collapses)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from linkage import evaluate, pipeline, scoring, solve, synthetic
from linkage.encode import EncodedBatch, concat_batches, encode_records
from linkage.errors import ModelError
from linkage.index import MatchIndex
from linkage.keys import KeySet, LinkageSecret
from linkage.pipeline import candidates, fitting
from linkage.schema import Schema, default_child_schema
from tests.helpers.schemas import DATE_SALTED

SCHEMA = DATE_SALTED


@pytest.fixture(scope="module")
def population() -> tuple[list[EncodedBatch], NDArray[np.int64]]:
    data = synthetic.generate_population(1500, seed=21)
    keys = KeySet(LinkageSecret.for_tests())
    batches = [encode_records(SCHEMA, keys, a.columns) for a in data.agencies.values()]
    truth = np.concatenate([a.child_id for a in data.agencies.values()])
    return batches, truth


def _f1(labels: NDArray[np.int64], truth: NDArray[np.int64]) -> float:
    ti, tj = evaluate.true_pairs_from_entities(truth)
    pi, pj = solve.pairs_from_labels(labels)
    return evaluate.pairwise_quality(pi, pj, ti, tj, ordered=False).f1


def test_clustering_four_agencies_finds_the_children(
    population: tuple[list[EncodedBatch], NDArray[np.int64]],
) -> None:
    batches, truth = population
    result = pipeline.cluster_datasets(SCHEMA, batches)
    assert _f1(result.labels, truth) > 0.95
    assert 0.0 < result.scored.model.prior < 0.01  # a prior over all pairs, not candidates


def test_compare_pairs_in_chunks_equals_one_pass(
    population: tuple[list[EncodedBatch], NDArray[np.int64]], monkeypatch: pytest.MonkeyPatch
) -> None:
    combined = concat_batches(population[0])
    pairs = pipeline.candidate_pairs(combined, None, pipeline.LinkageOptions())
    whole = pipeline.compare_pairs(SCHEMA, combined, combined, pairs.left, pairs.right)
    monkeypatch.setattr(candidates, "COMPARE_CHUNK_PAIRS", 1000)
    chunked = pipeline.compare_pairs(SCHEMA, combined, combined, pairs.left, pairs.right)
    assert len(pairs) > 2000 and np.array_equal(whole, chunked)  # several chunks


def test_block_pruning_keeps_the_true_pairs_it_can(
    population: tuple[list[EncodedBatch], NDArray[np.int64]],
) -> None:
    combined = concat_batches(population[0])
    truth = population[1]
    full = pipeline.candidate_pairs(combined, None, pipeline.LinkageOptions(large_block=None))
    pruned = pipeline.candidate_pairs(
        combined, None, pipeline.LinkageOptions(large_block=4, block_neighbours=3)
    )  # blocks here hold at most 7 records (four agencies; dates salted with sex)
    full_set = set(zip(full.left.tolist(), full.right.tolist(), strict=True))
    pruned_set = set(zip(pruned.left.tolist(), pruned.right.tolist(), strict=True))
    assert pruned_set < full_set  # a strict subset: something was pruned, nothing invented
    true_full = sum(truth[a] == truth[b] for a, b in full_set)
    true_pruned = sum(truth[a] == truth[b] for a, b in pruned_set)
    assert true_pruned >= 0.99 * true_full


def test_latent_classes_are_the_default_and_two_classes_still_work(
    population: tuple[list[EncodedBatch], NDArray[np.int64]],
) -> None:
    batches, truth = population
    assert pipeline.LinkageOptions().em_classes == 4
    two = pipeline.cluster_datasets(
        SCHEMA, batches, options=dataclasses.replace(pipeline.LinkageOptions(), em_classes=2)
    )
    assert _f1(two.labels, truth) > 0.95


def test_rule_columns_count_the_salt_of_a_filter_part() -> None:
    columns = {
        rule.name: cols
        for rule, cols in zip(SCHEMA.blocking, pipeline.rule_columns(SCHEMA), strict=True)
    }
    index = {name: i for i, name in enumerate(SCHEMA.field_names)}
    dob, sex = index["date_of_birth"], index["sex"]
    assert columns["date_of_birth"] == {dob, sex}  # the date's filter is salted with sex
    assert columns["nhs_number"] == {index["nhs_number"]}
    for name in ("given_name", "family_name", "postcode"):  # salted with the date
        assert columns[name] == {index[name], dob}


def _blocked_on_reference(
    found: NDArray[np.bool_], rules: list[set[int]], n_fields: int, k: int
) -> NDArray[np.bool_]:
    """fitting_pairs' blocked_on, one pair and column at a time: informed by f when some
    column h whose rules include f's has the pair share min(k, rules without h) keys of the
    rules without h."""
    out = np.ones((found.shape[0], n_fields), dtype=np.bool_)
    for p in range(found.shape[0]):
        for f in range(n_fields):
            for h in range(n_fields):
                if not all(h in cols for cols in rules if f in cols):
                    continue
                without = [r for r, cols in enumerate(rules) if h not in cols]
                needed = min(k, len(without))
                if needed and sum(bool(found[p, r]) for r in without) >= needed:
                    out[p, f] = False
    return out


def test_em_fits_on_pairs_sharing_two_blocking_keys_and_on_pairs_found_without_a_field(
    population: tuple[list[EncodedBatch], NDArray[np.int64]],
) -> None:
    combined = concat_batches(population[0])
    opts = pipeline.LinkageOptions()
    pairs = pipeline.candidate_pairs(combined, None, opts)
    fit = pipeline.fitting_pairs(SCHEMA, combined, combined, pairs.left, pairs.right, opts)
    assert 0 < len(fit.rows) < len(pairs)
    assert fit.blocked_on.shape == (len(fit.rows), len(SCHEMA.fields))
    a, b = combined.block_keys[pairs.left], combined.block_keys[pairs.right]
    found = (a == b) & (a != 0)
    shared = found.sum(axis=1)
    two = np.flatnonzero(shared >= 2)
    assert np.all(np.isin(two, fit.rows))
    # the rows added are found by the NHS number alone: the date of birth's m learns from them
    nhs = [rule.name for rule in SCHEMA.blocking].index("nhs_number")
    dob = SCHEMA.field_names.index("date_of_birth")
    added = ~np.isin(fit.rows, two)
    assert added.any() and np.all(found[fit.rows[added]].nonzero()[1] == nhs)
    assert not fit.blocked_on[added, dob].any()
    rules = pipeline.rule_columns(SCHEMA)
    sample = np.arange(0, len(fit.rows), 7)
    expected = _blocked_on_reference(found[fit.rows[sample]], rules, len(SCHEMA.fields), 2)
    assert np.array_equal(fit.blocked_on[sample], expected)
    # a pair sharing only the date and a name key was selected on both: blocked on both
    date_and_name = np.flatnonzero(
        (shared[fit.rows] == 2) & found[fit.rows, 0] & found[fit.rows, 2]
    )
    given = SCHEMA.field_names.index("given_name")
    assert date_and_name.size and fit.blocked_on[date_and_name][:, [dob, given]].all()
    # too few rows sharing two keys, or k = 1: every candidate, blocked on f when every rule
    # that found it involves f
    too_few = dataclasses.replace(opts, fit_min_pairs=len(pairs) + 1)
    every = dataclasses.replace(opts, fit_min_shared_keys=1)
    for options in (too_few, every):
        fit_all = pipeline.fitting_pairs(
            SCHEMA, combined, combined, pairs.left, pairs.right, options
        )
        assert np.array_equal(fit_all.rows, np.arange(len(pairs)))
        plain = np.stack(
            [
                ~(found & ~np.array([f in cols for cols in rules])).any(axis=1)
                for f in range(len(SCHEMA.fields))
            ],
            axis=1,
        )
        assert np.array_equal(fit_all.blocked_on, plain)


def raw_random_pair_u(schema: Schema, batch: EncodedBatch) -> tuple[tuple[float, ...], ...]:
    """u straight from the fit's random pairs, before any correction (the contaminated one)."""
    options = pipeline.LinkageOptions()
    left, right = pipeline.random_pairs(
        len(batch), len(batch), options.u_sample_pairs, seed=options.seed, distinct=True
    )
    return scoring.estimate_u(
        pipeline.compare_pairs(schema, batch, batch, left, right), pipeline.n_levels_of(schema)
    )


def test_u_of_a_salted_field_has_the_matches_among_random_pairs_taken_out() -> None:
    # 600 children, about 2,400 records: a salted name is compared only within a birth
    # month, where a large share of random pairs are the same child; without taking them
    # out, u of "given names agree" comes out tens of times too high
    schema = DATE_SALTED
    assert schema.field("given_name").salt
    data = synthetic.generate_population(600, seed=3).all_records()
    batch = encode_records(schema, KeySet(LinkageSecret.for_tests()), data.columns)
    model = pipeline.score_pairs(schema, batch, None).model
    raw = raw_random_pair_u(schema, batch)
    given = schema.field_names.index("given_name")
    unsalted = schema.field_names.index("sex")
    assert raw[given][-1] > 0.1  # contaminated: "agree exactly" among same-month pairs
    assert model.u[given][-1] < 0.05
    # an unsalted field is compared in nearly every random pair: barely changed
    np.testing.assert_allclose(model.u[unsalted], raw[unsalted], rtol=0.05, atol=1e-4)


# --- u of a salted field by EM among pairs sharing the salt value ---------------------------

# the names alone salted with the full date of birth (the shipped schema also salts the
# postcode with it and the date with sex, which makes most same-salt random pairs twins)
FULL_DATE_SALT = (
    default_child_schema()
    .with_salt("")
    .with_salt("date_of_birth.value", ("given_name", "middle_names", "family_name"))
)


@pytest.fixture(scope="module")
def full_date_salted() -> EncodedBatch:
    data = synthetic.generate_population(600, seed=3).all_records()
    return encode_records(FULL_DATE_SALT, KeySet(LinkageSecret.for_tests()), data.columns)


def test_u_of_a_field_salted_with_the_full_date_of_birth_is_fitted_by_em(
    full_date_salted: EncodedBatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    # within one date of birth most random pairs are the same child (share ~0.9): the capped
    # correction left u of "given names agree exactly" at ~0.47
    schema, batch = FULL_DATE_SALT, full_date_salted
    calls: list[tuple[int, ...]] = []
    em = pipeline.salted_u_by_em

    def spy(*args: object, **kwargs: object) -> tuple[tuple[float, ...], ...]:
        calls.append(tuple(args[5]))  # type: ignore[arg-type]
        return em(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fitting, "salted_u_by_em", spy)
    model = pipeline.score_pairs(schema, batch, None).model
    assert calls == [(0,)] * pipeline.SALTED_U_ROUNDS
    raw = raw_random_pair_u(schema, batch)
    given = schema.field_names.index("given_name")
    family = schema.field_names.index("family_name")
    assert raw[given][-1] > 0.1 and raw[family][-1] > 0.1
    assert model.u[given][-1] < 0.05 and model.u[family][-1] < 0.05
    unsalted = schema.field_names.index("sex")
    np.testing.assert_allclose(model.u[unsalted], raw[unsalted], rtol=0.05, atol=1e-4)
    index = MatchIndex(schema, key_version=1, merge_threshold=100)
    references = [f"{i:032x}" for i in range(len(batch))]
    index.upsert("health", references, batch)
    for i in range(0, len(batch), 97):
        found = index.query(batch.take([i]), model, max_candidates=10)
        best = [f.reference for f in found if f.probability == found[0].probability]
        assert references[i] in best  # ties: the same child held twice
        assert found[0].probability >= 0.99


@pytest.mark.parametrize("draw", [0, 1, 2])
def test_a_small_federation_scores_an_exact_match_high_under_any_secret(draw: int) -> None:
    """400 children (the end-to-end federation): same-salt pairs are 95 % matches. With one
    round of salted-u EM, under the first of these secrets (about one in ten) an exact given
    name, family name, date of birth and sex scored 0.85-0.88 (u of an exact given name ~0.5):
    the first model counted too few latent classes as matches and put the many matches at a
    nearby postcode among the non-matches (pipeline.SALTED_U_ROUNDS)."""
    from linkage import forms

    schema = default_child_schema()
    data = synthetic.generate_population(400, seed=11)
    secret = np.random.default_rng(1).bytes(32 * (draw + 1))[-32:]
    keys = KeySet(LinkageSecret(secret))
    published = [forms.encode_forms(schema, keys, a.columns) for a in data.agencies.values()]
    counts = [int(p.origin.max()) + 1 for p in published]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    record = np.concatenate([p.origin + s for p, s in zip(published, starts, strict=True)])
    batch = concat_batches([p.batch for p in published])
    model = pipeline.score_pairs(schema, batch, None, record=record).model
    # one level per comparison (the combined fallbacks missing, as where the names compare)
    levels = np.full((1, len(schema.comparison_names)), scoring.MISSING_LEVEL, dtype=np.int8)
    for name in ("given_name", "family_name", "date_of_birth", "sex"):
        levels[0, schema.comparison_names.index(name)] = len(schema.field(name).levels)
    assert model.match_probability(levels)[0] >= 0.99


def test_em_is_not_run_when_the_cap_does_not_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    # year-and-month salt on the given and family names only, 600 children: the share of
    # matches among their compared random pairs is ~0.18, under the cap, so fit_model must
    # take the old path (decontaminate_u) and nothing else; the shipped schema (salted with
    # the full date of birth, middle names too) does bind at this size
    def refuse(*args: object, **kwargs: object) -> tuple[tuple[float, ...], ...]:
        raise AssertionError("EM over same-salt pairs was run")

    monkeypatch.setattr(fitting, "salted_u_by_em", refuse)
    data = synthetic.generate_population(600, seed=3).all_records()
    keys = KeySet(LinkageSecret.for_tests())
    under_cap = (
        default_child_schema()
        .with_salt("")
        .with_salt("date_of_birth.year_month", ("given_name", "family_name"))
    )
    assert under_cap.field("given_name").salt and under_cap.field("family_name").salt
    batch = encode_records(under_cap, keys, data.columns)
    model = pipeline.score_pairs(under_cap, batch, None).model
    assert model.u[under_cap.field_names.index("given_name")][-1] < 0.05
    unsalted = default_child_schema().with_salt("")
    pipeline.score_pairs(unsalted, encode_records(unsalted, keys, data.columns), None)
    shipped = DATE_SALTED
    with pytest.raises(AssertionError, match="EM over same-salt pairs"):
        pipeline.score_pairs(shipped, encode_records(shipped, keys, data.columns), None)


def test_salt_sources_over_cap() -> None:
    schema = DATE_SALTED  # names and postcode salted with the date, the date with sex
    names = schema.field_names
    assert schema.salt_sources == ("date_of_birth.value", "sex.value")
    date_share = dict.fromkeys(names, 0.2) | {"date_of_birth": 0.6}
    assert pipeline.salt_sources_over_cap(schema, [date_share[n] for n in names]) == (1,)
    share = dict.fromkeys(names, 0.2)
    assert pipeline.salt_sources_over_cap(schema, [share[n] for n in names]) == ()
    share["middle_names"] = 0.51
    assert pipeline.salt_sources_over_cap(schema, [share[n] for n in names]) == (0,)
    share["middle_names"] = 0.5  # at the cap: the capped correction is exact
    share["sex"] = 3.0  # an unsalted field never counts
    assert pipeline.salt_sources_over_cap(schema, [share[n] for n in names]) == ()
    # too few compared random pairs for a salted field (a fine salt at scale) also counts
    enough = dict.fromkeys(names, pipeline.MIN_SALTED_COMPARED_PAIRS)
    shares = [share[n] for n in names]
    assert pipeline.salt_sources_over_cap(schema, shares, [enough[n] for n in names]) == ()
    enough["sex"] = 0  # unsalted: never counts
    assert pipeline.salt_sources_over_cap(schema, shares, [enough[n] for n in names]) == ()
    enough["given_name"] = pipeline.MIN_SALTED_COMPARED_PAIRS - 1
    assert pipeline.salt_sources_over_cap(schema, shares, [enough[n] for n in names]) == (0,)


def _same_tag_pairs_by_loops(
    left: NDArray[np.uint64], right: NDArray[np.uint64] | None
) -> set[tuple[int, int]]:
    if right is None:
        return {
            (a, b)
            for a in range(len(left))
            for b in range(a + 1, len(left))
            if left[a] == left[b] != 0
        }
    return {(a, b) for a in range(len(left)) for b in range(len(right)) if left[a] == right[b] != 0}


tag_arrays = st.lists(st.integers(0, 4), min_size=0, max_size=30).map(
    lambda tags: np.array(tags, dtype=np.uint64)
)


@settings(deadline=None, max_examples=60)
@given(left=tag_arrays, right=st.none() | tag_arrays, count=st.integers(1, 500))
def test_same_salt_pairs_are_same_tag_pairs(
    left: NDArray[np.uint64], right: NDArray[np.uint64] | None, count: int
) -> None:
    a, b = pipeline.same_salt_pairs(left, right, count, seed=5)
    everything = _same_tag_pairs_by_loops(left, right)
    drawn = list(zip(a.tolist(), b.tolist(), strict=True))
    assert len(drawn) == min(count, len(everything))
    assert len(set(drawn)) == len(drawn)  # without replacement
    assert set(drawn) <= everything  # same tag, never tag 0, never (i, i), a < b when deduping
    if count >= len(everything):
        assert set(drawn) == everything
    again = pipeline.same_salt_pairs(left, right, count, seed=5)
    assert np.array_equal(a, again[0]) and np.array_equal(b, again[1])


def test_same_salt_pairs_draw_groups_in_proportion_to_their_pairs() -> None:
    # dedupe: 201 records of tag 1 (20,100 pairs), 143 of tag 2 (10,153 pairs), tag 0 ignored
    tags = np.repeat(np.array([0, 1, 2, 0], dtype=np.uint64), [50, 201, 143, 50])
    tags = tags[np.random.default_rng(0).permutation(len(tags))]
    a, b = pipeline.same_salt_pairs(tags, None, 3000, seed=11)
    assert len(a) == 3000 and np.all(a < b) and np.all(tags[a] == tags[b])
    assert np.all(tags[a] != 0)
    share = float(np.mean(tags[a] == 1))
    assert abs(share - 20_100 / 30_253) < 0.03
    # every member of a group turns up (the pair numbering reaches all of them)
    assert set(np.concatenate([a, b]).tolist()) == set(np.flatnonzero(tags != 0).tolist())
    other = pipeline.same_salt_pairs(tags, None, 3000, seed=12)
    assert not np.array_equal(a, other[0])
    # link: 100 x 200 pairs of tag 1, 100 x 100 of tag 2, tag 3 on the left only
    left = np.repeat(np.array([1, 2, 3], dtype=np.uint64), [100, 100, 40])
    right = np.repeat(np.array([2, 1, 0], dtype=np.uint64), [100, 200, 40])
    a, b = pipeline.same_salt_pairs(left, right, 3000, seed=11)
    assert np.all(left[a] == right[b]) and np.all(right[b] != 0)
    assert abs(float(np.mean(left[a] == 1)) - 2 / 3) < 0.03


def test_same_salt_pairs_in_a_huge_group_are_distinct_members() -> None:
    # 200,000 records of one tag: pair numbers near 2e10 must unrank without rounding errors
    tags = np.ones(200_000, dtype=np.uint64)
    a, b = pipeline.same_salt_pairs(tags, None, 20_000, seed=3)
    assert np.all(a < b) and a.min() >= 0 and b.max() < len(tags)
    assert b.max() > 190_000 and a.min() < 10_000


def test_u_among_matches_recovers_a_known_mixture() -> None:
    # two fixed fields (m, u known) and one free field whose u is to be found, 80 % matches
    rng = np.random.default_rng(4)
    n, share = 20_000, 0.8
    m = ((0.05, 0.95), (0.1, 0.9), (0.05, 0.15, 0.8))
    u = ((0.9, 0.1), (0.7, 0.3), (0.6, 0.3, 0.1))
    match = rng.random(n) < share
    levels = np.empty((n, 3), dtype=np.int8)
    for field in range(3):
        levels[match, field] = rng.choice(len(m[field]), size=int(match.sum()), p=m[field])
        levels[~match, field] = rng.choice(len(u[field]), size=int((~match).sum()), p=u[field])
    levels[rng.random(n) < 0.1, 2] = scoring.MISSING_LEVEL
    start = (u[0], u[1], (0.1, 0.2, 0.7))  # as contaminated as a salted field's raw u
    fit = scoring.estimate_u_among_matches(
        levels, m, start, free_fields=[2], initial_share=0.5, max_iterations=200
    )
    assert fit.converged and abs(fit.share - share) < 0.03
    np.testing.assert_allclose(fit.u[2], u[2], atol=0.03)
    assert fit.u[:2] == (u[0], u[1])
    # an ignored field takes no part: pure noise there changes nothing
    noisy = levels.copy()
    noisy[:, 0] = rng.integers(0, 2, size=n)
    with_noise = scoring.estimate_u_among_matches(
        np.concatenate([levels, noisy[:, :1]], axis=1),
        (*m, (0.5, 0.5)),
        (*start, (0.5, 0.5)),
        free_fields=[2],
        ignored_fields=[3],
        initial_share=0.5,
        max_iterations=200,
    )
    np.testing.assert_allclose(with_noise.u[2], fit.u[2], rtol=1e-9)
    with pytest.raises(ModelError):
        scoring.estimate_u_among_matches(
            levels, m, start, free_fields=[2], ignored_fields=[2], initial_share=0.5
        )


def _columns(rows: list[dict[str, str]]) -> dict[str, list[str | None]]:
    return {name: [row.get(name) for row in rows] for name in SCHEMA.field_names}


def test_clusters_never_chain_two_nhs_numbers_of_one_agency(
    population: tuple[list[EncodedBatch], NDArray[np.int64]],
) -> None:
    batches, _ = population
    result = pipeline.cluster_datasets(SCHEMA, batches)
    # On the population: two records of one agency in one cluster with two NHS numbers that
    # the comparison tells apart are joined by a strong edge of their own, never by a chain.
    combined = concat_batches(batches)
    evidence = pipeline.nhs_evidence(
        SCHEMA, combined, result.scored.model, np.arange(len(combined), dtype=np.int64)
    )
    assert evidence is not None
    first, second = solve.pairs_from_labels(result.labels)
    same = (result.source[first] == result.source[second]) & evidence.holds[first]
    same &= evidence.holds[second]
    first, second = first[same], second[same]
    conflicting = evidence.conflicts(first, second)
    strong = result.scored.above(0.5)
    direct = set(
        zip(
            np.minimum(result.scored.left, result.scored.right)[strong].tolist(),
            np.maximum(result.scored.left, result.scored.right)[strong].tolist(),
            strict=True,
        )
    )
    for a, b in zip(first[conflicting].tolist(), second[conflicting].tolist(), strict=True):
        assert (a, b) in direct
    assert result.refused_unions >= 0 and result.size_splits == 0  # no cluster near 32 here

    # A constructed chain: two health records of one name and birth, different NHS numbers
    # (two children), and a police record without one that matches both strongly. The
    # health pair scores low (the numbers disagree), yet the chain would join them.
    keys = KeySet(LinkageSecret.for_tests())
    child = {"given_name": "Oliver", "family_name": "Smith", "date_of_birth": "2013-03-25"}
    child |= {"sex": "M", "postcode": "NN1 9SQ"}
    health = encode_records(
        SCHEMA,
        keys,
        _columns(
            [
                child | {"nhs_number": "9067370983"},
                child | {"nhs_number": "9627573353", "postcode": "LS6 2AB"},
            ]
        ),
    )
    police = encode_records(SCHEMA, keys, _columns([child]))
    # a model under which disagreeing NHS numbers outweigh the rest (the fitted one lets a
    # number keyed wrongly be outweighed by everything else agreeing)
    fitted = result.scored.model
    nhs = fitted.field_names.index("nhs_number")
    m = [list(row) for row in fitted.m]
    m[nhs][0], m[nhs][-1] = 1e-9, 1 - 1e-9
    model = dataclasses.replace(fitted, m=tuple(tuple(row) for row in m))
    chain = pipeline.cluster_datasets(SCHEMA, [health, police], model=model)
    scored = dict(
        zip(
            zip(chain.scored.left.tolist(), chain.scored.right.tolist(), strict=True),
            chain.scored.probability.tolist(),
            strict=True,
        )
    )
    assert scored[(0, 1)] < 0.5 and scored[(0, 2)] > 0.5 and scored[(1, 2)] > 0.5
    # split at the weaker police edge: the police record stays with the closer health record
    assert chain.labels.tolist() == [0, 1, 0]
    assert chain.refused_unions == 1
    # the same health records without the second number: one child, all three together
    health_dup = encode_records(
        SCHEMA,
        keys,
        _columns([child | {"nhs_number": "9067370983"}, child | {"postcode": "LS6 2AB"}]),
    )
    together = pipeline.cluster_datasets(SCHEMA, [health_dup, police], model=model)
    assert together.labels.tolist() == [0, 0, 0] and together.refused_unions == 0


def test_pairs_within_one_agency_are_scored_under_a_prior_of_their_own(
    population: tuple[list[EncodedBatch], NDArray[np.int64]],
) -> None:
    batches, truth = population
    one = pipeline.cluster_datasets(
        SCHEMA, batches, options=pipeline.LinkageOptions(prior_by_pair_kind=False)
    )
    two = pipeline.cluster_datasets(SCHEMA, batches)
    assert np.array_equal(one.scored.left, two.scored.left)
    assert np.array_equal(one.scored.levels, two.scored.levels)
    within = one.source[one.scored.left] == one.source[one.scored.right]
    # a child is known to several agencies far more often than twice to one: the same
    # evidence counts for less within an agency and for more across two
    assert np.all(two.scored.probability[within] <= one.scored.probability[within])
    assert np.all(two.scored.probability[~within] >= one.scored.probability[~within])
    assert _f1(two.labels, truth) >= _f1(one.labels, truth)


def test_an_identifiers_exact_u_comes_from_how_often_it_is_keyed_wrongly(
    population: tuple[list[EncodedBatch], NDArray[np.int64]],
) -> None:
    batches, _ = population
    combined = concat_batches(batches)
    model = pipeline.score_pairs(SCHEMA, combined, None).model
    nhs = SCHEMA.comparison_names.index("nhs_number")
    f = SCHEMA.field_names.index("nhs_number")
    held = combined.field_filters[f][combined.field_present[:, f]]
    distinct = len({row.tobytes() for row in held})
    # the fitted model already carries it: P(keyed wrongly) over the values held
    assert model.u[nhs][-1] == pytest.approx(sum(model.m[nhs][:-1]) / distinct)
    assert sum(model.u[nhs]) == pytest.approx(1.0)
    # never raised: a u already lower than that estimate stands
    lower = [list(field) for field in model.u]
    lower[nhs] = [1.0 - 1e-12, 1e-12]
    low_model = dataclasses.replace(model, u=tuple(tuple(x) for x in lower))
    never = pipeline.identifier_u(SCHEMA, combined, combined, low_model, [10**9] * len(model.u))
    assert never[nhs] == (1.0 - 1e-12, 1e-12)
