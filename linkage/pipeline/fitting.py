"""Fitting the model without labels: u from random pairs, m and the prior by EM.

Contract: :func:`fit_model` estimates u from the comparison levels of uniformly random record
pairs, then m and the match prior by EM over the fitting pairs (:func:`fitting_pairs`: the
candidates sharing several blocking keys, each comparison's m learnt without the pairs blocked
on it). A salted field whose random pairs are too few or too rich in matches gets its u by EM
over same-salt pairs instead (:func:`salted_u_by_em`). An EM that stops at its iteration cap
is logged as a warning (:func:`reported`). Deterministic for a seed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import scoring
from linkage.encode import (
    EncodedBatch,
)
from linkage.errors import (
    ModelError,
)
from linkage.pipeline.candidates import (
    COMPARE_CHUNK_PAIRS,
    LinkageOptions,
    compare_pairs,
    n_levels_of,
    random_pairs,
    rule_columns,
    thresholds_of,
)
from linkage.schema import Schema

log = logging.getLogger(__name__)


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
#: date of birth scoring low), a second round settles it (tests/linkage/test_pipeline.py), and
#: further rounds change nothing.
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
    u_final = identifier_u(schema, left, right, final(u_final), compared_pairs.tolist())
    return reported(final(u_final), candidate_levels.shape[0])


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


#: Field kinds whose value identifies one person (a valid NHS number is one child's): two
#: different people share a value only where one of them was keyed as the other's.
IDENTIFIER_KINDS = ("nhs_number",)


#: An identifier's exact u is re-estimated (:func:`identifier_u`) only where the random pairs
#: that compared it would hold fewer agreeing non-matches than this: the sample cannot show it.
UNRESOLVED_AGREEMENTS = 3.0


def identifier_u(
    schema: Schema,
    left: EncodedBatch,
    right: EncodedBatch,
    model: scoring.FellegiSunterModel,
    compared_pairs: Sequence[int],
) -> tuple[tuple[float, ...], ...]:
    """The model's u, with an identifier's exact level (:data:`IDENTIFIER_KINDS`) estimated
    from how often the identifier is keyed wrongly, where the random pairs cannot resolve it
    (``compared_pairs``: per comparison, how many of them compared it) and that is lower.

    Two records of different people agree on an identifier only when one holds the other's
    value by mistake: per pair, about P(the value differs | match), m of the levels below
    exact, over the number of distinct values held. In a large population random pairs
    cannot show a probability that small: the few agreeing pairs among them are nearly all
    matches, so their estimate stops near one over the sample, and the identifier alone could
    never outweigh the prior. In a small one the sample resolves it and is kept."""
    u = [list(field) for field in model.u]
    for c, spec in enumerate(schema.comparison_specs):
        if spec.kind not in IDENTIFIER_KINDS or spec.view_of or spec.combines:
            continue
        if u[c][-1] * compared_pairs[c] >= UNRESOLVED_AGREEMENTS:
            continue
        f = schema.field_names.index(spec.name)
        batches = [left] if right is left else [left, right]  # dedupe: one batch
        held = [batch.field_filters[f][batch.field_present[:, f]] for batch in batches]
        filters = np.ascontiguousarray(np.concatenate(held))
        if filters.shape[0] == 0:
            continue
        distinct = np.unique(
            filters.view(np.dtype((np.void, filters.dtype.itemsize * filters.shape[1])))
        )
        keyed_wrongly = float(sum(model.m[c][:-1]))
        estimate = max(keyed_wrongly, scoring.PROBABILITY_FLOOR) / distinct.shape[0]
        if estimate < u[c][-1]:
            rest = 1.0 - u[c][-1]
            u[c] = [value * (1.0 - estimate) / rest for value in u[c][:-1]] + [estimate]
    return tuple(tuple(field) for field in u)
