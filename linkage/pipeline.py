"""Batch linkage wired end to end: candidates -> field Dice -> levels -> EM -> probabilities.

Role in the pipeline: the one place where ``blocking``, ``similarity``, ``scoring`` and
``solve`` are put together, used alike by the matcher (online index and batch Link), the
benchmarks and the demo. Everything here works on :class:`~linkage.encode.EncodedBatch`
encodings only — no identifier, no key.

Steps for a batch link or deduplication:

1. **Candidates**: records that share a keyed blocking token for some rule, united with
   pairs that share a band of bit-sampling LSH keys on the record-level filters (when
   ``lsh_bands > 0``).
2. **Comparison**: per field, the Dice coefficient of the two field filters (fast kernel);
   a pair where either side lacks the field, or whose salted field was encoded under two
   different salt values (salt tags differ), is marked missing, not dissimilar.
3. **Model**: u from the comparison levels of uniformly random record pairs (nearly all
   non-matches); m and the match prior by EM over the candidates' comparison vectors; no
   labels anywhere. The threshold is the model's own: match probability >= 0.5.
4. **Solving**: one-to-one assignment for two datasets without duplicates, clustering for
   deduplication and for many agencies (duplicates within one agency allowed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import blocking, scoring, similarity, solve
from linkage.encode import (
    EncodedBatch,
    concat_batches,
    salt_comparable,
    validate_filters,
    validate_salt_tags,
)
from linkage.errors import FilterFormatError, IncompatibleEncodingError, ModelError
from linkage.schema import Schema

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class LinkageOptions:
    """Knobs of a batch linkage run (defaults suit every shipped schema)."""

    min_probability: float = 0.5
    max_block_size: int | None = 2_000_000
    #: deduplication blocks above this many records keep only each record's nearest
    #: ``block_neighbours`` members (:class:`linkage.blocking.BlockPruning`); None: all pairs
    large_block: int | None = 64
    block_neighbours: int = 12
    lsh_bands: int = 0
    lsh_bits_per_band: int = 28
    lsh_seed: int = 20261126
    u_sample_pairs: int = 300_000
    em_max_iterations: int = 500
    #: latent classes in EM (:func:`linkage.scoring.fit_latent_classes` when more than 2).
    #: Fitting on the pairs that share blocking keys (below) does most of the work at scale;
    #: four classes add a little (``python -m benchmarks.em_scale``, RESULTS.md "Model at
    #: scale": pairwise precision 0.983 against 0.980 with two at 1.02 M records).
    em_classes: int = 4
    #: EM fits on the candidates sharing this many blocking keys (:func:`fitting_pairs`) when
    #: there are at least ``fit_min_pairs`` of them; 1 or less: on every candidate
    fit_min_shared_keys: int = 2
    fit_min_pairs: int = 1000
    fix_u: bool = False
    random_u_weights: bool = True
    seed: int = 1
    threads: int = 1


@dataclass(frozen=True)
class ScoredPairs:
    """Candidate pairs with their comparison levels and match probabilities."""

    left: NDArray[np.int64]
    right: NDArray[np.int64]
    levels: NDArray[np.int8]
    probability: NDArray[np.float64]
    model: scoring.FellegiSunterModel
    candidates: int

    def above(self, threshold: float) -> NDArray[np.bool_]:
        return self.probability >= threshold


def check_compatible(schema: Schema, *batches: EncodedBatch) -> None:
    """Refuse to compare encodings made with another schema or key version.

    Also checks every filter array against the schema's *published* widths
    (:attr:`~linkage.schema.FieldSpec.published_words`,
    :attr:`~linkage.schema.Schema.published_record_words`: the widths after hardening) and
    raises :class:`~linkage.errors.FilterFormatError` on a mismatch.
    """
    fingerprint = schema.fingerprint()
    versions = {b.key_version for b in batches}
    for b in batches:
        if b.schema_fingerprint != fingerprint:
            raise IncompatibleEncodingError(
                "encodings were made with schema fingerprint "
                f"{b.schema_fingerprint}, expected {fingerprint}"
            )
    if len(versions) > 1:
        raise IncompatibleEncodingError(
            f"encodings were made with different key versions {sorted(versions)}"
        )
    for b in batches:
        n = len(b)
        if len(b.field_filters) != len(schema.fields):
            raise FilterFormatError(
                f"field_filters: expected {len(schema.fields)} filter arrays (one per schema "
                f"field), got {len(b.field_filters)}"
            )
        for spec, filters in zip(schema.fields, b.field_filters, strict=True):
            validate_filters(f"field_filters[{spec.name}]", filters, n, spec.published_words)
        validate_filters("record_filters", b.record_filters, n, schema.published_record_words)
        validate_salt_tags(b.salt_tags, n, len(schema.salt_sources))


def thresholds_of(schema: Schema) -> tuple[tuple[float, ...], ...]:
    return tuple(f.levels for f in schema.fields)


def n_levels_of(schema: Schema) -> tuple[int, ...]:
    return tuple(len(f.levels) + 1 for f in schema.fields)


#: Pairs compared per chunk in :func:`compare_pairs` (about 70 MB of temporaries per chunk).
COMPARE_CHUNK_PAIRS = 1 << 20


def compare_pairs(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch,
    left_idx: NDArray[np.int64],
    right_idx: NDArray[np.int64],
    *,
    threads: int = 1,
) -> NDArray[np.int8]:
    """Comparison levels (n_pairs, n_fields) of the given pairs, MISSING_LEVEL where absent.

    Pairs are compared in chunks of :data:`COMPARE_CHUNK_PAIRS`, so the float similarities
    (8 bytes per pair and field) never exist for more than one chunk: peak memory beyond the
    int8 result stays bounded however many candidates a large population has.
    """
    n_fields = len(schema.fields)
    thresholds = thresholds_of(schema)
    levels = np.empty((left_idx.shape[0], n_fields), dtype=np.int8)
    for start in range(0, left_idx.shape[0], COMPARE_CHUNK_PAIRS):
        chunk_left = left_idx[start : start + COMPARE_CHUNK_PAIRS]
        chunk_right = right_idx[start : start + COMPARE_CHUNK_PAIRS]
        sim = np.empty((chunk_left.shape[0], n_fields), dtype=np.float64)
        both = left.field_present[chunk_left] & right.field_present[chunk_right]
        if schema.salt_sources:  # a salted field under two salt values is not compared
            both &= salt_comparable(
                schema, left.salt_tags[chunk_left], right.salt_tags[chunk_right]
            )
        for f in range(n_fields):
            sim[:, f] = similarity.dice_pairs(
                left.field_filters[f],
                right.field_filters[f],
                chunk_left,
                chunk_right,
                threads=threads,
            )
        levels[start : start + chunk_left.shape[0]] = scoring.comparison_levels(
            sim, both, thresholds
        )
    return levels


def random_pairs(
    n_left: int, n_right: int, count: int, *, seed: int, distinct: bool
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Uniformly random record pairs (``distinct``: never a record with itself)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_left, size=count, dtype=np.int64)
    b = rng.integers(0, n_right, size=count, dtype=np.int64)
    if distinct:
        keep = a != b
        a, b = a[keep], b[keep]
    return a, b


def fit_model(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch,
    candidate_levels: NDArray[np.int8],
    *,
    options: LinkageOptions,
    dedupe: bool,
) -> scoring.FellegiSunterModel:
    """Fit the Fellegi-Sunter model without labels.

    Two estimates of u exist and each is right for one job. Among *candidate* pairs the
    non-matches agree on the blocked fields far more often than random pairs do (blocking
    selected them for it), so EM run over the candidates must be free to learn that u, or it
    mistakes "shares a family name" for "is the same child". EM with u free therefore
    separates the classes and gives m and the prior. The final weights use u from uniformly
    random pairs (nearly all non-matches, unbiased by blocking), which is what
    log2(m/u) means: how much more often matches agree at that level than people in general;
    the few matches among the random pairs are then taken out of it
    (:func:`scoring.decontaminate_u`, which matters for salted fields).
    ``options.fix_u`` instead holds u at the random-pair estimate during EM.
    """
    if candidate_levels.shape[0] == 0:
        raise ModelError("no candidate pairs to fit the model on")
    ra, rb = random_pairs(
        len(left), len(right), options.u_sample_pairs, seed=options.seed, distinct=dedupe
    )
    random_levels = compare_pairs(schema, left, right, ra, rb)
    u_random = scoring.estimate_u(random_levels, n_levels_of(schema))
    expected_matches = min(len(left), len(right)) if not dedupe else len(left) / 2
    prior = float(np.clip(expected_matches / candidate_levels.shape[0], 1e-4, 0.5))
    n_total = len(left) * (len(left) - 1) / 2 if dedupe else len(left) * len(right)
    fit_options: dict[str, Any] = {
        "field_names": schema.field_names,
        "thresholds": thresholds_of(schema),
        "u": u_random,
        "initial_prior": prior,
        "max_iterations": options.em_max_iterations,
    }
    if options.fix_u or not options.random_u_weights:
        return scoring.fit_fellegi_sunter(candidate_levels, **fit_options, fix_u=options.fix_u)
    # The final weights use u from random pairs, from which the matches among them are taken
    # out (scoring.decontaminate_u): negligible for most fields, but a salted field is
    # compared only within a salt value, where matches are far more common.
    compared_pairs = (random_levels >= 0).sum(axis=0)
    compared = np.maximum(compared_pairs, 1) / max(1, len(ra))
    if options.em_classes > 2:
        latent = scoring.fit_latent_classes(
            candidate_levels, **fit_options, classes=options.em_classes
        )

        def final(u: tuple[tuple[float, ...], ...]) -> scoring.FellegiSunterModel:
            return latent.match_model(
                u, candidate_pairs=candidate_levels.shape[0], population_pairs=n_total
            )
    else:
        fitted = scoring.fit_fellegi_sunter(candidate_levels, **fit_options)
        matches = fitted.prior * candidate_levels.shape[0]

        def final(u: tuple[tuple[float, ...], ...]) -> scoring.FellegiSunterModel:
            return scoring.FellegiSunterModel(
                field_names=fitted.field_names,
                thresholds=fitted.thresholds,
                m=fitted.m,
                u=u,
                prior=float(np.clip(matches / max(n_total, 1.0), 1e-12, 0.5)),
                iterations=fitted.iterations,
                converged=fitted.converged,
            )

    first = final(u_random)
    contamination = first.prior / compared  # prior: the share of matches among all pairs
    return final(
        scoring.decontaminate_u(u_random, first.m, contamination.tolist(), compared_pairs.tolist())
    )


def candidate_pairs(
    left: EncodedBatch, right: EncodedBatch | None, options: LinkageOptions
) -> blocking.CandidatePairs:
    """Keyed-token blocking united with LSH on record filters (``right=None``: dedupe)."""
    if right is None:
        pruning = None
        if options.large_block is not None:
            pruning = blocking.BlockPruning(
                left.record_filters,
                large_block=options.large_block,
                neighbours=options.block_neighbours,
            )
        pairs = blocking.candidate_pairs_dedupe(
            left.block_keys, max_block_size=options.max_block_size, pruning=pruning
        )
    else:
        pairs = blocking.candidate_pairs_link(
            left.block_keys, right.block_keys, max_block_size=options.max_block_size
        )
    if options.lsh_bands:
        lk = blocking.lsh_keys(
            left.record_filters,
            bands=options.lsh_bands,
            bits_per_band=options.lsh_bits_per_band,
            seed=options.lsh_seed,
        )
        if right is None:
            lsh = blocking.candidate_pairs_dedupe(lk, max_block_size=options.max_block_size)
        else:
            rk = blocking.lsh_keys(
                right.record_filters,
                bands=options.lsh_bands,
                bits_per_band=options.lsh_bits_per_band,
                seed=options.lsh_seed,
            )
            lsh = blocking.candidate_pairs_link(lk, rk, max_block_size=options.max_block_size)
        pairs = blocking.union_pairs(pairs, lsh)
    return pairs


def shared_block_keys(
    left: EncodedBatch,
    right: EncodedBatch,
    left_idx: NDArray[np.int64],
    right_idx: NDArray[np.int64],
) -> NDArray[np.int8]:
    """Per pair, how many blocking rules put both records in one block (chunked)."""
    shared = np.empty(left_idx.shape[0], dtype=np.int8)
    for start in range(0, left_idx.shape[0], COMPARE_CHUNK_PAIRS):
        a = left.block_keys[left_idx[start : start + COMPARE_CHUNK_PAIRS]]
        b = right.block_keys[right_idx[start : start + COMPARE_CHUNK_PAIRS]]
        shared[start : start + a.shape[0]] = ((a == b) & (a != 0)).sum(axis=1)
    return shared


def fitting_pairs(
    left: EncodedBatch,
    right: EncodedBatch,
    left_idx: NDArray[np.int64],
    right_idx: NDArray[np.int64],
    options: LinkageOptions,
) -> NDArray[np.int64] | None:
    """The candidate rows EM fits on: those sharing ``options.fit_min_shared_keys`` blocking
    keys, or None (every candidate) when there are fewer than ``options.fit_min_pairs``.

    Why: the share of true matches among candidates falls as the population grows (blocks
    grow with it, true pairs do not), and once it is small a latent class of different people
    who share a name and birth year outweighs it and EM calls that class the match class.
    The pairs agreeing under two or more blocking rules stay rich in true matches as the
    population grows (87 % at 45 k records, 34 % at 1.02 M). Measured by
    ``python -m benchmarks.em_scale --children 450000`` (1.02 M records,
    RESULTS.md "Model at scale"): EM on every candidate (2.4 % matches) gives pairwise
    precision 0.10 with two classes and 0.63 with four; on the shared-keys subset (34 %
    matches, 97 % of the true pairs) 0.98 at recall 0.97 with two, three or four. The
    rule uses no labels. The model then scores every candidate.
    """
    if options.fit_min_shared_keys <= 1 or left.block_keys.shape[1] < options.fit_min_shared_keys:
        return None
    shared = shared_block_keys(left, right, left_idx, right_idx)
    rows = np.flatnonzero(shared >= options.fit_min_shared_keys)
    return rows if rows.shape[0] >= options.fit_min_pairs else None


def score_pairs(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch | None,
    *,
    options: LinkageOptions | None = None,
    progress: Progress = _no_progress,
    model: scoring.FellegiSunterModel | None = None,
) -> ScoredPairs:
    """Candidates, comparison levels, model (fitted unless given) and probabilities."""
    opts = options or LinkageOptions()
    other = left if right is None else right
    check_compatible(schema, left, other)
    progress("blocking", 0, 1)
    pairs = candidate_pairs(left, right, opts)
    progress("blocking", 1, 1)
    log.info("blocking produced %d candidate pairs", len(pairs))
    progress("comparing", 0, len(pairs))
    levels = compare_pairs(schema, left, other, pairs.left, pairs.right, threads=opts.threads)
    progress("comparing", len(pairs), len(pairs))
    if model is None:
        progress("fitting", 0, 1)
        fit_rows = fitting_pairs(left, other, pairs.left, pairs.right, opts)
        model = fit_model(
            schema,
            left,
            other,
            levels if fit_rows is None else levels[fit_rows],
            options=opts,
            dedupe=right is None,
        )
        progress("fitting", 1, 1)
    probability = model.match_probability(levels)
    return ScoredPairs(pairs.left, pairs.right, levels, probability, model, len(pairs))


@dataclass(frozen=True)
class LinkResult:
    """Matched pairs of a two-dataset linkage (after the one-to-one rule when asked)."""

    left: NDArray[np.int64]
    right: NDArray[np.int64]
    probability: NDArray[np.float64]
    scored: ScoredPairs


def link_two(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch,
    *,
    one_to_one: bool = True,
    options: LinkageOptions | None = None,
    progress: Progress = _no_progress,
) -> LinkResult:
    """Link two datasets; ``one_to_one`` when neither holds duplicates."""
    opts = options or LinkageOptions()
    scored = score_pairs(schema, left, right, options=opts, progress=progress)
    keep = scored.above(opts.min_probability)
    if one_to_one:
        keep = solve.one_to_one(
            scored.left, scored.right, scored.probability, threshold=opts.min_probability
        )
    return LinkResult(scored.left[keep], scored.right[keep], scored.probability[keep], scored)


@dataclass(frozen=True)
class ClusterResult:
    """Clusters over the concatenation of several datasets (one cluster = one person)."""

    labels: NDArray[np.int64]
    source: NDArray[np.int64]
    offsets: NDArray[np.int64]
    scored: ScoredPairs

    def edges(self, threshold: float) -> NDArray[np.bool_]:
        """Mask of scored pairs at or above ``threshold`` that lie inside one cluster."""
        s = self.scored
        mask: NDArray[np.bool_] = (s.probability >= threshold) & (
            self.labels[s.left] == self.labels[s.right]
        )
        return mask


def cluster_datasets(
    schema: Schema,
    datasets: Sequence[EncodedBatch],
    *,
    options: LinkageOptions | None = None,
    progress: Progress = _no_progress,
    one_per_source: bool = False,
    model: scoring.FellegiSunterModel | None = None,
) -> ClusterResult:
    """Cluster the records of several datasets (agencies) together.

    Records are numbered over the concatenation in the order given; duplicates inside one
    dataset are allowed unless ``one_per_source``.
    """
    opts = options or LinkageOptions()
    check_compatible(schema, *datasets)
    combined = concat_batches(list(datasets))
    sizes = np.array([len(d) for d in datasets], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    source = np.repeat(np.arange(len(datasets), dtype=np.int64), sizes)
    scored = score_pairs(schema, combined, None, options=opts, progress=progress, model=model)
    progress("clustering", 0, 1)
    labels = solve.cluster_records(
        len(combined),
        scored.left,
        scored.right,
        scored.probability,
        threshold=opts.min_probability,
        source=source,
        one_per_source=one_per_source,
    )
    progress("clustering", 1, 1)
    return ClusterResult(labels, source, offsets, scored)
