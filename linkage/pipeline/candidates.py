"""Candidate pairs and their comparison: the options of a run, blocking, per-field Dice.

Contract: :func:`candidate_pairs` unites the pairs sharing a keyed blocking token for some
rule with, when ``lsh_bands > 0``, the pairs sharing an LSH band of the record-level filters;
:func:`compare_pairs` gives each pair its per-comparison similarity and presence through
:func:`linkage.compare.compare_fields` (the one owner of "not compared"), in chunks of
:data:`COMPARE_CHUNK_PAIRS` so memory stays bounded. :func:`check_compatible` refuses batches
of another schema fingerprint, key version or width before anything is compared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from linkage import blocking, scoring, similarity
from linkage.compare import compare_fields
from linkage.encode import (
    EncodedBatch,
    validate_filters,
    validate_salt_tags,
)
from linkage.errors import (
    FilterFormatError,
    IncompatibleEncodingError,
)
from linkage.schema import Schema

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
