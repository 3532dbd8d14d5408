"""Linking and clustering: scored pairs to one-to-one links or clusters of one child each.

Contract: :func:`score_pairs` runs candidates, comparison and fitting and gives every pair a
match probability (the threshold is the model's own, probability >= 0.5 by default);
:func:`link_two` links two datasets one to one; :func:`cluster_datasets` clusters any number
of datasets (duplicates within one agency allowed; two records of one agency with different
NHS numbers never joined through a chain; clusters over
:func:`linkage.solve.cluster_size_bound` split at their weakest merges); :func:`cluster_forms`
does the same for records published as several forms (:mod:`linkage.forms`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from linkage import forms, scoring, solve
from linkage.encode import (
    EncodedBatch,
    concat_batches,
)
from linkage.errors import (
    InvalidArgumentError,
)
from linkage.pipeline.candidates import (
    LinkageOptions,
    Progress,
    _no_progress,
    candidate_pairs,
    check_compatible,
    compare_pairs,
)
from linkage.pipeline.fitting import fit_model, fitting_pairs
from linkage.schema import Schema

log = logging.getLogger(__name__)


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
