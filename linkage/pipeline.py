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
   labels anywhere. Each field's m is estimated without the candidates that blocking
   selected through that field (:func:`fitting_pairs`, :func:`rule_columns`); an EM that
   stops at its iteration cap is logged as a warning (:func:`reported`). A salted field
   whose compared random pairs are mostly matches (a fine salt in a small population) gets
   its u by EM over pairs sharing the salt value instead (:func:`salted_u_by_em`). The
   threshold is the model's own: match probability >= 0.5.
4. **Solving**: one-to-one assignment for two datasets without duplicates, clustering for
   deduplication and for many agencies (duplicates within one agency allowed; two records of
   one agency with different NHS numbers never joined through a chain, clusters over
   :func:`linkage.solve.cluster_size_bound` split at their weakest merges).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import blocking, forms, scoring, similarity, solve
from linkage.compare import compare_fields
from linkage.encode import (
    EncodedBatch,
    concat_batches,
    validate_filters,
    validate_salt_tags,
)
from linkage.errors import (
    FilterFormatError,
    IncompatibleEncodingError,
    InvalidArgumentError,
    ModelError,
)
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
    #: More than two: at scale, two classes call a class of different people who share a
    #: name and birth year the match class; extra classes absorb such near-matches.
    em_classes: int = 4
    #: EM fits on the candidates sharing this many blocking keys (:func:`fitting_pairs`) when
    #: there are at least ``fit_min_pairs`` of them; 1 or less: on every candidate
    fit_min_shared_keys: int = 2
    fit_min_pairs: int = 1000
    #: estimate each comparison's m without the fitting pairs blocked on it
    #: (:func:`fitting_pairs`' ``blocked_on``). Off: in large populations it leads the latent
    #: classes to a match class of many non-matches, while the priors on m alone keep every
    #: level off the floor.
    mask_blocked_fields: bool = False
    #: when clustering several datasets, a prior for pairs within one dataset and another for
    #: pairs across two (:func:`linkage.scoring.priors_by_kind`) instead of the model's one
    prior_by_pair_kind: bool = True
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
    """Per comparison (:attr:`Schema.comparison_names`), its Dice cut-offs."""
    return tuple(f.levels for f in schema.comparison_specs)


def n_levels_of(schema: Schema) -> tuple[int, ...]:
    return tuple(len(f.levels) + 1 for f in schema.comparison_specs)


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
    """Comparison levels (n_pairs, n_comparisons) of the given pairs, MISSING_LEVEL where
    absent or not compared (:mod:`linkage.compare`).

    Pairs are compared in chunks of :data:`COMPARE_CHUNK_PAIRS`, so the float similarities
    (8 bytes per pair and field) never exist for more than one chunk: peak memory beyond the
    int8 result stays bounded however many candidates a large population has.
    """
    n_fields = len(schema.fields)
    thresholds = thresholds_of(schema)
    levels = np.empty((left_idx.shape[0], len(thresholds)), dtype=np.int8)
    for start in range(0, left_idx.shape[0], COMPARE_CHUNK_PAIRS):
        chunk_left = left_idx[start : start + COMPARE_CHUNK_PAIRS]
        chunk_right = right_idx[start : start + COMPARE_CHUNK_PAIRS]
        sim = np.empty((chunk_left.shape[0], n_fields), dtype=np.float64)
        for f in range(n_fields):
            sim[:, f] = similarity.dice_pairs(
                left.field_filters[f],
                right.field_filters[f],
                chunk_left,
                chunk_right,
                threads=threads,
            )
        compared = compare_fields(
            schema,
            sim,
            left.field_present[chunk_left],
            right.field_present[chunk_right],
            left.salt_tags[chunk_left],
            right.salt_tags[chunk_right],
        )
        levels[start : start + chunk_left.shape[0]] = scoring.comparison_levels(
            compared.similarity, compared.present, thresholds
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


def _tag_groups(
    tags: NDArray[np.uint64],
) -> tuple[NDArray[np.int64], NDArray[np.uint64], NDArray[np.int64], NDArray[np.int64]]:
    """Records grouped by salt tag, tag 0 (no salt value) left out: (record order, distinct
    tags, start of each tag's run in the order, size of each run)."""
    valid = np.flatnonzero(tags != 0).astype(np.int64)
    order = valid[np.argsort(tags[valid], kind="stable")]
    values, starts, sizes = np.unique(tags[order], return_index=True, return_counts=True)
    return order, values, starts.astype(np.int64), sizes.astype(np.int64)


def same_salt_pairs(
    left_tags: NDArray[np.uint64],
    right_tags: NDArray[np.uint64] | None,
    count: int,
    *,
    seed: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Up to ``count`` distinct pairs drawn uniformly among all pairs that share a salt tag.

    ``left_tags``/``right_tags`` are one column of :attr:`EncodedBatch.salt_tags` (one salt
    source); tag 0 means the record has no salt value and is never paired. ``right_tags=None``
    deduplicates ``left``: pairs ``(a, b)`` with ``a < b``; otherwise every pair is left x
    right. Records are grouped by tag (argsort) and the same-tag pairs numbered group after
    group; ``min(count, total)`` pair numbers are drawn without replacement (so every pair is
    equally likely, and a group is drawn in proportion to its number of pairs) and turned back
    into records. When there are at most ``count`` such pairs, every one is returned once.
    Deterministic for a seed; no pairs (empty arrays) when no tag is shared.
    """
    rng = np.random.default_rng(seed)
    left_order, left_values, left_starts, left_sizes = _tag_groups(left_tags)
    if right_tags is None:
        right_order, right_starts, right_sizes = left_order, left_starts, left_sizes
        pair_counts = left_sizes * (left_sizes - 1) // 2
    else:
        right_order, right_values, all_right_starts, all_right_sizes = _tag_groups(right_tags)
        _, in_left, in_right = np.intersect1d(
            left_values, right_values, assume_unique=True, return_indices=True
        )
        left_starts, left_sizes = left_starts[in_left], left_sizes[in_left]
        right_starts, right_sizes = all_right_starts[in_right], all_right_sizes[in_right]
        pair_counts = left_sizes * right_sizes
    total = int(pair_counts.sum())
    if total == 0 or count <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    numbers = np.sort(rng.choice(total, size=min(count, total), replace=False)).astype(np.int64)
    ends = np.cumsum(pair_counts)
    group = np.searchsorted(ends, numbers, side="right")
    within = numbers - (ends[group] - pair_counts[group])  # pair number inside its group
    if right_tags is None:
        # pair number k <-> members (i, j), i < j, with k = j (j - 1) / 2 + i
        second = ((1.0 + np.sqrt(1.0 + 8.0 * within.astype(np.float64))) // 2).astype(np.int64)
        second -= second * (second - 1) // 2 > within  # guard against rounding up
        second += (second + 1) * second // 2 <= within  # ... and down
        first = within - second * (second - 1) // 2
        a = left_order[left_starts[group] + first]
        b = left_order[left_starts[group] + second]
        return np.minimum(a, b), np.maximum(a, b)
    first, second = np.divmod(within, right_sizes[group])
    return left_order[left_starts[group] + first], right_order[right_starts[group] + second]


#: Share of matches among a salted field's compared random pairs above which
#: :func:`scoring.decontaminate_u` is capped and :func:`fit_model` re-estimates its u by EM.
CONTAMINATION_CAP = 0.5


#: Fewest compared random pairs a salted field's u is estimated on; below it u's one
#: pseudo-count per level (1 / n) swamps the rarer levels (a name's exact agreement is rare
#: among non-match pairs), so :func:`fit_model` re-estimates it by EM over same-salt pairs. A
#: fine salt (a full date of birth) in a large population gets here: few random pairs share it.
MIN_SALTED_COMPARED_PAIRS = 1_000


def salt_sources_over_cap(
    schema: Schema,
    contamination: Sequence[float],
    compared_pairs: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Indices into :attr:`Schema.salt_sources` of the sources with a salted field whose
    share of matches among its compared random pairs exceeds :data:`CONTAMINATION_CAP`, or
    (when ``compared_pairs`` is given) that was compared in fewer than
    :data:`MIN_SALTED_COMPARED_PAIRS` random pairs."""
    counts = (
        [MIN_SALTED_COMPARED_PAIRS] * len(schema.comparison_names)
        if compared_pairs is None
        else [int(n) for n in compared_pairs]
    )
    return tuple(
        s_index
        for s_index, source in enumerate(schema.salt_sources)
        if any(
            salt == source
            and (float(share) > CONTAMINATION_CAP or count < MIN_SALTED_COMPARED_PAIRS)
            for salt, share, count in zip(
                schema.comparison_salts, contamination, counts, strict=True
            )
        )
    )


#: Rounds of (EM for the salted fields' u, then the model's match classes under it) in
#: :func:`fit_model`. The salted u and the match classes depend on each other: a single round
#: can leave a small federation's model unstable under some linkage secrets (an exact name and
#: date of birth scoring low), a second round settles it (tests/test_pipeline.py), and further
#: rounds change nothing.
SALTED_U_ROUNDS = 2


def salted_u_by_em(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch,
    first: scoring.FellegiSunterModel,
    u: tuple[tuple[float, ...], ...],
    sources: Sequence[int],
    contamination: Sequence[float],
    *,
    options: LinkageOptions,
    dedupe: bool,
) -> tuple[tuple[float, ...], ...]:
    """``u`` with the u of the fields salted by ``sources`` re-estimated by EM over random
    pairs that share the salt value (:func:`same_salt_pairs`,
    :func:`scoring.estimate_u_among_matches`).

    m of every field and u of every unsalted field are held at ``first`` (the model fitted
    with u from random pairs, or the previous round's: :data:`SALTED_U_ROUNDS`); a field
    salted by another source keeps its value in ``u`` (the decontaminated one). The source
    field itself (``date_of_birth`` for ``"date_of_birth.value"``) is left out of the
    likelihood: the pairs were selected on it.
    EM starts from the largest raw share of matches (``contamination``, per field) among the
    source's fields. A source with no same-salt pair keeps ``u``.
    """
    out = list(u)
    for s_index in sources:
        source = schema.salt_sources[s_index]
        free = [c for c, salt in enumerate(schema.comparison_salts) if salt == source]
        ignored = [
            c for c, name in enumerate(schema.comparison_names) if name == source.split(".")[0]
        ]
        sa, sb = same_salt_pairs(
            left.salt_tags[:, s_index],
            None if dedupe else right.salt_tags[:, s_index],
            options.u_sample_pairs,
            seed=options.seed + 1 + s_index,
        )
        if sa.shape[0] == 0:
            continue
        levels = compare_pairs(schema, left, right, sa, sb, threads=options.threads)
        start = [  # another source's salted field: its decontaminated u
            u[c] if salt and salt != source else first.u[c]
            for c, salt in enumerate(schema.comparison_salts)
        ]
        compared = (levels[:, free] >= 0).sum(axis=0)
        fit = scoring.estimate_u_among_matches(
            levels,
            first.m,
            start,
            free_fields=free,
            ignored_fields=ignored,
            initial_share=max(float(contamination[f]) for f in free),
        )
        log.info(
            "salt source %d: u of %d salted field(s) by EM over %d same-salt pairs "
            "(%d compared at most), match share %.3f after %d iterations",
            s_index,
            len(free),
            sa.shape[0],
            int(compared.max()),
            fit.share,
            fit.iterations,
        )
        for f in free:
            out[f] = fit.u[f]
    return tuple(out)


def reported(model: scoring.FellegiSunterModel, pairs: int) -> scoring.FellegiSunterModel:
    """``model``, after logging how its EM ended: a warning with the counts when it stopped
    at its iteration cap (the model is then used, but its estimates may still be moving;
    :attr:`~linkage.scoring.FellegiSunterModel.converged` travels with it, in its stored
    form and in every :class:`ScoredPairs`)."""
    if model.converged:
        log.info("EM converged after %d iterations on %d pairs", model.iterations, pairs)
    else:
        log.warning(
            "EM stopped at its cap of %d iterations without converging on %d pairs",
            model.iterations,
            pairs,
        )
    return model


def fit_model(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch,
    candidate_levels: NDArray[np.int8],
    *,
    options: LinkageOptions,
    dedupe: bool,
    blocked_on: NDArray[np.bool_] | None = None,
) -> scoring.FellegiSunterModel:
    """Fit the Fellegi-Sunter model without labels.

    ``candidate_levels`` are the fitting rows' levels and ``blocked_on`` their
    :attr:`FittingPairs.blocked_on` (:func:`fitting_pairs`; None: no row blocked on any
    column): a row does not inform the m of a column it was blocked on.

    Two estimates of u exist and each is right for one job. Among *candidate* pairs the
    non-matches agree on the blocked fields far more often than random pairs do (blocking
    selected them for it), so EM run over the candidates must be free to learn that u, or it
    mistakes "shares a family name" for "is the same child". EM with u free therefore
    separates the classes and gives m and the prior. The final weights use u from uniformly
    random pairs (nearly all non-matches, unbiased by blocking), which is what
    log2(m/u) means: how much more often matches agree at that level than people in general;
    the few matches among the random pairs are then taken out of it
    (:func:`scoring.decontaminate_u`, which matters for salted fields). That correction caps
    the share of matches at :data:`CONTAMINATION_CAP`; for the salt sources where a field's
    share exceeds it (:func:`salt_sources_over_cap`) the salted fields' u comes instead from
    EM over random same-salt pairs (:func:`salted_u_by_em`). Below the cap the result is
    exactly that of the capped correction. ``options.fix_u`` instead holds u at the
    random-pair estimate during EM.
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
        "field_names": schema.comparison_names,
        "thresholds": thresholds_of(schema),
        "u": u_random,
        "initial_prior": prior,
        "max_iterations": options.em_max_iterations,
        "blocked_on": blocked_on,
    }
    if options.fix_u or not options.random_u_weights:
        return reported(
            scoring.fit_fellegi_sunter(candidate_levels, **fit_options, fix_u=options.fix_u),
            candidate_levels.shape[0],
        )
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
    u_final = scoring.decontaminate_u(
        u_random, first.m, contamination.tolist(), compared_pairs.tolist()
    )
    # Where the share of matches among a salted field's compared pairs exceeds the cap (a fine
    # salt such as the full date of birth in a small population: mostly the same child), the
    # capped correction leaves u far too high; where too few random pairs were compared at all
    # (a fine salt at scale), u is mostly pseudo-counts. EM over same-salt pairs fixes both.
    # Otherwise nothing changes.
    over_cap = salt_sources_over_cap(schema, contamination.tolist(), compared_pairs.tolist())
    if over_cap:
        # m comes from the latent classes the model counts as matches, which are chosen with
        # u: a first model under u from random pairs (far too high for a salted field) may
        # count too few classes, give a level that many matches occupy (a nearby postcode) an
        # m of nearly zero, and so make EM over same-salt pairs count those matches as
        # non-matches, inflating u. The u and the classes are therefore estimated in turn.
        held, decontaminated = first, u_final
        for _ in range(SALTED_U_ROUNDS):
            u_final = salted_u_by_em(
                schema,
                left,
                right,
                held,
                decontaminated,
                over_cap,
                contamination.tolist(),
                options=options,
                dedupe=dedupe,
            )
            held = final(u_final)
    return reported(final(u_final), candidate_levels.shape[0])


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


def rule_columns(schema: Schema) -> list[set[int]]:
    """Per blocking rule (``schema.blocking`` order), the comparison columns a pair found by
    the rule was selected on: each part's comparison, and for a ``filter`` part of a field
    salted by ``"<field>.value"`` also that field (equal published filters mean equal salt
    values: the date of birth's filter, salted with sex, is equal only for one sex). A salt of
    part of a value (a view salted with the birth year and month) selects no level of that
    value's comparison. The one place that maps rules to columns; :func:`fitting_pairs` uses
    nothing else of the rules."""
    column = {name: index for index, name in enumerate(schema.comparison_names)}
    out: list[set[int]] = []
    for rule in schema.blocking:
        columns: set[int] = set()
        for field_name, transform in rule.parts:
            spec = schema.field(field_name)
            columns.add(column[spec.input_name])
            columns.update(column[name] for name in spec.combines)  # it agrees on them too
            salt_field, _, salt_transform = spec.salt.partition(".")
            if transform == "filter" and salt_transform == "value":
                columns.add(column[salt_field])
        out.append(columns)
    return out


@dataclass(frozen=True)
class FittingPairs:
    """The candidate rows EM fits on and, per row and comparison column, whether the row was
    selected through that column (``blocked_on``: it must not inform that column's m)."""

    rows: NDArray[np.int64]
    blocked_on: NDArray[np.bool_]


def fitting_pairs(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch,
    left_idx: NDArray[np.int64],
    right_idx: NDArray[np.int64],
    options: LinkageOptions,
) -> FittingPairs:
    """The candidate rows EM fits on, and which columns each row may inform.

    Which rows: those sharing ``k = options.fit_min_shared_keys`` blocking keys. Why: the share
    of true matches among candidates falls as the population grows (blocks grow with it, true
    pairs do not), and once it is small a latent class of different people who share a name
    and birth year outweighs it and EM calls that class the match class. The pairs agreeing
    under two or more blocking rules stay rich in true matches as the population grows. With
    fewer than
    ``options.fit_min_pairs`` such rows, or ``k <= 1``, every candidate is a fitting row and
    ``k`` is 1 below.

    Which columns (no labels; Splink trains each comparison on blocking rules that exclude
    it): a row is *blocked on* column f unless it was selected without looking at f, that is
    unless, for some column h whose rules include every rule involving f (h = f among them),
    the row shares ``min(k, number of rules not involving h)`` keys of the rules not involving
    h (:func:`rule_columns`). With ``k = 1`` that is the plain rule: blocked on f when every
    rule that found the pair involves f. With ``k = 2`` and the shipped child schema, where
    every rule but the NHS number's involves the date of birth (the names and postcode are
    salted with it), the date's m comes from the pairs sharing the NHS number: those whose
    dates differ share one key only, so the rows sharing ``k`` keys are widened by the rows
    selected that way for some column. A column for which no fitting row qualifies is blocked
    on none (it learns from every row, with a warning): a model whose tables were all prior
    would separate nothing.
    """
    involves = np.zeros((len(schema.blocking), len(schema.comparison_names)), dtype=np.bool_)
    for rule_index, columns in enumerate(rule_columns(schema)):
        involves[rule_index, sorted(columns)] = True
    n_rules, n_fields = involves.shape
    excluding = (~involves).astype(np.int64)  # (rules, columns h): rule leaves h out
    serves = np.all(involves[:, :, np.newaxis] <= involves[:, np.newaxis, :], axis=0)  # (f, h)

    def select(k: int) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
        needed = np.minimum(k, excluding.sum(axis=0))  # per h
        rows: list[NDArray[np.int64]] = []
        informs: list[NDArray[np.bool_]] = []
        for start in range(0, left_idx.shape[0], COMPARE_CHUNK_PAIRS):
            a = left.block_keys[left_idx[start : start + COMPARE_CHUNK_PAIRS]]
            b = right.block_keys[right_idx[start : start + COMPARE_CHUNK_PAIRS]]
            found = (a == b) & (a != 0)
            route = (found.astype(np.int64) @ excluding >= needed) & (needed > 0)
            chunk_informs = (route.astype(np.int64) @ serves.T.astype(np.int64)) > 0
            keep = (found.sum(axis=1) >= k) | chunk_informs.any(axis=1) if k > 1 else None
            if keep is None:
                rows.append(np.arange(start, start + a.shape[0], dtype=np.int64))
                informs.append(chunk_informs)
            else:
                rows.append(start + np.flatnonzero(keep).astype(np.int64))
                informs.append(chunk_informs[keep])
        return (
            np.concatenate(rows) if rows else np.zeros(0, np.int64),
            np.concatenate(informs) if informs else np.zeros((0, n_fields), np.bool_),
        )

    if n_rules == 0:  # candidates from LSH alone: selected on every field alike
        every = np.arange(left_idx.shape[0], dtype=np.int64)
        return FittingPairs(every, np.zeros((every.shape[0], n_fields), dtype=np.bool_))
    k = options.fit_min_shared_keys
    rows, informs = (None, None)
    if k > 1 and n_rules >= k:
        rows, informs = select(k)
        if rows.shape[0] < options.fit_min_pairs:
            rows, informs = (None, None)
    if rows is None or informs is None:
        rows, informs = select(1)
    blocked_on = ~informs
    uninformed = np.flatnonzero(~informs.any(axis=0)) if rows.shape[0] else np.zeros(0, np.intp)
    if uninformed.size:
        log.warning(
            "no fitting pair was selected without blocking on %d comparison column(s) %s: "
            "their m is fitted on pairs selected for agreeing on them",
            uninformed.size,
            ", ".join(schema.comparison_names[f] for f in uninformed),
        )
        blocked_on[:, uninformed] = False
    return FittingPairs(rows, blocked_on)


def _conflicting_pairs(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch,
    left_idx: NDArray[np.int64],
    right_idx: NDArray[np.int64],
) -> NDArray[np.bool_]:
    """Mask of the candidate pairs :func:`linkage.forms.assumption_conflicts` drops, checked
    only for the pairs with a form on a side (about one row in a hundred is a form)."""
    drop = np.zeros(left_idx.shape[0], dtype=np.bool_)
    columns = forms.assumable_columns(schema)
    if not columns:
        return drop
    left_forms = forms.assuming_rows(columns, left.field_present, left.salt_tags)
    right_forms = (
        left_forms
        if right is left
        else forms.assuming_rows(columns, right.field_present, right.salt_tags)
    )
    involved = np.flatnonzero(left_forms[left_idx] | right_forms[right_idx])
    if involved.size:
        a, b = left_idx[involved], right_idx[involved]
        drop[involved] = forms.assumption_conflicts(
            columns, left.field_present[a], left.salt_tags[a],
            right.field_present[b], right.salt_tags[b],
        )  # fmt: skip
    return drop


def score_pairs(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch | None,
    *,
    options: LinkageOptions | None = None,
    progress: Progress = _no_progress,
    model: scoring.FellegiSunterModel | None = None,
    record: NDArray[np.int64] | None = None,
) -> ScoredPairs:
    """Candidates, comparison levels, model (fitted unless given) and probabilities.

    Candidates where one side is a form whose assumed salt the other contradicts are dropped
    (:func:`linkage.forms.assumption_conflicts`). With ``record`` (deduplication only: the
    record each row is a form of, :class:`linkage.forms.Forms`), pairs inside one record are
    dropped before fitting and, between two records, only the most probable pair is kept.
    """
    opts = options or LinkageOptions()
    other = left if right is None else right
    check_compatible(schema, left, other)
    if record is not None and right is not None:
        raise InvalidArgumentError("record: forms are grouped only when deduplicating (right=None)")
    progress("blocking", 0, 1)
    pairs = candidate_pairs(left, right, opts)
    progress("blocking", 1, 1)
    log.info("blocking produced %d candidate pairs", len(pairs))
    pl, pr = pairs.left, pairs.right
    drop = _conflicting_pairs(schema, left, other, pl, pr)
    if record is not None:
        drop |= record[pl] == record[pr]
    if drop.any():
        pl, pr = pl[~drop], pr[~drop]
    progress("comparing", 0, len(pl))
    levels = compare_pairs(schema, left, other, pl, pr, threads=opts.threads)
    progress("comparing", len(pl), len(pl))
    if model is None:
        progress("fitting", 0, 1)
        fit = fitting_pairs(schema, left, other, pl, pr, opts)
        model = fit_model(
            schema,
            left,
            other,
            levels[fit.rows],
            options=opts,
            dedupe=right is None,
            blocked_on=fit.blocked_on if opts.mask_blocked_fields else None,
        )
        progress("fitting", 1, 1)
    probability = model.match_probability(levels)
    if record is not None:
        best = forms.best_per_record(pl, pr, probability, record)
        pl, pr, levels, probability = pl[best], pr[best], levels[best], probability[best]
    return ScoredPairs(pl, pr, levels, probability, model, len(pairs))


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
    #: strong edges whose merge hard evidence refused (two NHS numbers in one agency) and
    #: merges undone in clusters over the size bound (:class:`linkage.solve.Clustering`)
    refused_unions: int = 0
    size_splits: int = 0

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
    record: NDArray[np.int64] | None = None,
) -> ClusterResult:
    """Cluster the records of several datasets (agencies) together.

    Rows are numbered over the concatenation in the order given; duplicates inside one
    dataset are allowed unless ``one_per_source``. With ``record`` (per row, the record it is
    a form of, numbered 0.. over the concatenation; a record's forms lie in one dataset),
    records rather than rows are clustered (:func:`score_pairs`) and every form of a record
    gets its record's label. Two records of one dataset whose NHS numbers disagree are never
    joined through a chain (:func:`nhs_evidence`), and a cluster of more than
    :func:`linkage.solve.cluster_size_bound` records is split at its weakest merges; how
    often each happened is in the result and the log (counts only).
    """
    opts = options or LinkageOptions()
    check_compatible(schema, *datasets)
    combined = concat_batches(list(datasets))
    sizes = np.array([len(d) for d in datasets], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    source = np.repeat(np.arange(len(datasets), dtype=np.int64), sizes)
    scored = score_pairs(
        schema, combined, None, options=opts, progress=progress, model=model, record=record
    )
    progress("clustering", 0, 1)
    if record is None:
        nodes, left, right, node_source = len(combined), scored.left, scored.right, source
    else:
        nodes = int(record.max()) + 1 if record.size else 0
        left, right = record[scored.left], record[scored.right]
        node_source = np.zeros(nodes, dtype=np.int64)
        node_source[record] = source
    # a node (record) is compared through its first row (form): an unsalted field such as
    # the NHS number is the same in every form; a salted one compares where the salts agree
    first_row = np.arange(len(combined), dtype=np.int64)
    if record is not None:
        first_row = np.zeros(nodes, dtype=np.int64)
        first_row[record[::-1]] = np.arange(len(record), dtype=np.int64)[::-1]
    if opts.prior_by_pair_kind and len(datasets) > 1:
        scored = _prior_within_and_across(scored, left, right, node_source, len(datasets))
    clustering = solve.cluster_records(
        nodes,
        left,
        right,
        scored.probability,
        threshold=opts.min_probability,
        source=node_source,
        one_per_source=one_per_source,
        hard_evidence=nhs_evidence(schema, combined, scored.model, first_row, threads=opts.threads),
        max_cluster_size=solve.cluster_size_bound(len(datasets)),
    )
    labels = clustering.labels if record is None else clustering.labels[record]
    log.info(
        "clustering: %d merges refused on hard evidence, %d undone in clusters over %d records",
        clustering.refused_unions,
        clustering.size_splits,
        solve.cluster_size_bound(len(datasets)),
    )
    progress("clustering", 1, 1)
    return ClusterResult(
        labels, source, offsets, scored, clustering.refused_unions, clustering.size_splits
    )


def _prior_within_and_across(
    scored: ScoredPairs,
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    node_source: NDArray[np.int64],
    n_sources: int,
) -> ScoredPairs:
    """``scored`` with its probabilities under one prior for pairs of nodes within one dataset
    and another for pairs across two (:func:`linkage.scoring.priors_by_kind`)."""
    per_source = np.bincount(node_source, minlength=n_sources).astype(np.float64)
    within = float((per_source * (per_source - 1)).sum() / 2)
    across = float((per_source.sum() ** 2 - (per_source**2).sum()) / 2)
    kind = (node_source[left] != node_source[right]).astype(np.int64)
    probability, priors = scoring.priors_by_kind(
        scored.model.match_log2_odds(scored.levels), kind, (within, across), scored.model.prior
    )
    log.info("prior: %.3g within one dataset, %.3g across two", priors[0], priors[1])
    return replace(scored, probability=probability)


#: Field kinds whose disagreement between two records of one agency is hard evidence of two
#: children (:func:`nhs_evidence`): an NHS number is validated (modulus 11) at normalisation,
#: so one present is a valid one, and a child has one.
HARD_EVIDENCE_KINDS = ("nhs_number",)


def nhs_evidence(
    schema: Schema,
    batch: EncodedBatch,
    model: scoring.FellegiSunterModel,
    rows: NDArray[np.int64],
    *,
    threads: int = 1,
) -> solve.HardEvidence | None:
    """Cannot-link evidence for :func:`linkage.solve.cluster_records` over nodes
    0..len(rows)-1, node ``k`` being ``batch`` row ``rows[k]``; None when the schema has no
    NHS-number field.

    A node holds the evidence when its NHS number is present; two nodes conflict when their
    NHS numbers are compared (:func:`compare_pairs`, the one comparison of the pipeline; found
    by field name among the model's fields) and fall below the field's lowest level threshold
    (level 0). Not compared (a salt differs) is no conflict.
    """
    names = [spec.name for spec in schema.fields if spec.kind in HARD_EVIDENCE_KINDS]
    columns = [
        model.field_names.index(schema.field(name).input_name)
        for name in names
        if schema.field(name).input_name in model.field_names
    ]
    if not columns:
        return None
    present = batch.field_present[:, [schema.field_names.index(name) for name in names]]
    holds = np.asarray(present[rows].any(axis=1), dtype=np.bool_)

    def conflicts(first: NDArray[np.int64], second: NDArray[np.int64]) -> NDArray[np.bool_]:
        # only the rows asked about: the comparison's cost then follows the pairs, not the batch
        needed, at = np.unique(np.concatenate([rows[first], rows[second]]), return_inverse=True)
        part, at = batch.take(needed), at.reshape(-1).astype(np.int64)
        n_pairs = first.shape[0]
        levels = compare_pairs(schema, part, part, at[:n_pairs], at[n_pairs:], threads=threads)
        disagree: NDArray[np.bool_] = (levels[:, columns] == 0).any(axis=1)
        return disagree

    return solve.HardEvidence(holds=holds, conflicts=conflicts)


def cluster_forms(
    schema: Schema,
    datasets: Sequence[forms.Forms],
    *,
    options: LinkageOptions | None = None,
    progress: Progress = _no_progress,
    one_per_source: bool = False,
    model: scoring.FellegiSunterModel | None = None,
) -> ClusterResult:
    """:func:`cluster_datasets` over published forms (:func:`linkage.forms.encode_forms`),
    reported per record: labels, sources, offsets and the scored pairs (one per pair of
    records, its most probable consistent form pair) index the datasets' records,
    concatenated in the order given, not their forms."""
    counts = [int(d.origin.max()) + 1 if len(d) else 0 for d in datasets]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    record = np.concatenate(
        [d.origin + start for d, start in zip(datasets, starts[:-1].tolist(), strict=True)]
        or [np.zeros(0, np.int64)]
    ).astype(np.int64)
    result = cluster_datasets(
        schema,
        [d.batch for d in datasets],
        options=options,
        progress=progress,
        one_per_source=one_per_source,
        model=model,
        record=record,
    )
    labels = np.zeros(int(starts[-1]), dtype=np.int64)
    labels[record] = result.labels
    s = result.scored
    scored = ScoredPairs(
        record[s.left], record[s.right], s.levels, s.probability, s.model, s.candidates
    )
    source = np.repeat(np.arange(len(datasets), dtype=np.int64), counts)
    return ClusterResult(labels, source, starts, scored, result.refused_unions, result.size_splits)
