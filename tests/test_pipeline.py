"""The batch pipeline end to end on a seeded synthetic population: blocking, comparison,
the unsupervised model and clustering (quality figures are the benchmark's; these tests pin
behaviour and fail if linkage quality collapses)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from numpy.typing import NDArray

from linkage import evaluate, pipeline, scoring, solve, synthetic
from linkage.encode import EncodedBatch, concat_batches, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import default_child_schema

SCHEMA = default_child_schema()


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
    monkeypatch.setattr(pipeline, "COMPARE_CHUNK_PAIRS", 1000)
    chunked = pipeline.compare_pairs(SCHEMA, combined, combined, pairs.left, pairs.right)
    assert len(pairs) > 3000 and np.array_equal(whole, chunked)


def test_block_pruning_keeps_the_true_pairs_it_can(
    population: tuple[list[EncodedBatch], NDArray[np.int64]],
) -> None:
    combined = concat_batches(population[0])
    truth = population[1]
    full = pipeline.candidate_pairs(combined, None, pipeline.LinkageOptions(large_block=None))
    pruned = pipeline.candidate_pairs(
        combined, None, pipeline.LinkageOptions(large_block=8, block_neighbours=4)
    )
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


def test_em_fits_on_pairs_sharing_two_blocking_keys(
    population: tuple[list[EncodedBatch], NDArray[np.int64]],
) -> None:
    combined = concat_batches(population[0])
    opts = pipeline.LinkageOptions()
    pairs = pipeline.candidate_pairs(combined, None, opts)
    rows = pipeline.fitting_pairs(combined, combined, pairs.left, pairs.right, opts)
    assert rows is not None and 0 < len(rows) < len(pairs)
    shared = pipeline.shared_block_keys(combined, combined, pairs.left, pairs.right)
    assert np.array_equal(rows, np.flatnonzero(shared >= 2))
    a, b = combined.block_keys[pairs.left[rows]], combined.block_keys[pairs.right[rows]]
    assert np.all(((a == b) & (a != 0)).sum(axis=1) >= 2)
    too_few = dataclasses.replace(opts, fit_min_pairs=len(pairs) + 1)
    assert pipeline.fitting_pairs(combined, combined, pairs.left, pairs.right, too_few) is None
    every = dataclasses.replace(opts, fit_min_shared_keys=1)
    assert pipeline.fitting_pairs(combined, combined, pairs.left, pairs.right, every) is None


def test_u_of_a_salted_field_has_the_matches_among_random_pairs_taken_out() -> None:
    # 600 children, about 2,400 records: a salted name is compared only within a birth
    # month, where a large share of random pairs are the same child; without taking them
    # out, u of "given names agree" comes out tens of times too high
    schema = default_child_schema()
    assert schema.field("given_name").salt
    data = synthetic.generate_population(600, seed=3).all_records()
    batch = encode_records(schema, KeySet(LinkageSecret.for_tests()), data.columns)
    model = pipeline.score_pairs(schema, batch, None).model
    options = pipeline.LinkageOptions()
    left, right = pipeline.random_pairs(
        len(batch), len(batch), options.u_sample_pairs, seed=options.seed, distinct=True
    )
    raw = scoring.estimate_u(
        pipeline.compare_pairs(schema, batch, batch, left, right), pipeline.n_levels_of(schema)
    )
    given = schema.field_names.index("given_name")
    unsalted = schema.field_names.index("sex")
    assert raw[given][-1] > 0.1  # contaminated: "agree exactly" among same-month pairs
    assert model.u[given][-1] < 0.05
    # an unsalted field is compared in nearly every random pair: barely changed
    np.testing.assert_allclose(model.u[unsalted], raw[unsalted], rtol=0.05, atol=1e-4)
