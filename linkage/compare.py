"""Which published filters of a pair are compared, and the one similarity per comparison.

Role in the pipeline: between the Dice kernel (:mod:`linkage.similarity`, one similarity per
published field) and the model (:mod:`linkage.scoring`, one comparison level per input
field). It is the one place that decides "compared" and "not compared"; the batch pipeline
and the lookup index both call it.

Contract, per pair and per published field ``f`` (a field or one view of a field):

* ``f`` is *compared* when both records hold the value and, for a salted field, both were
  encoded under the same salt value (equal salt tags, :func:`linkage.encode.salt_comparable`);
  otherwise its Dice means nothing and is not used.
* A comparison (:attr:`linkage.schema.Schema.input_names`) is present when any of its fields
  is compared; its similarity is the largest Dice among them (views of one value under one
  agreeing salt give the same Dice up to hashing noise, so the choice is symmetric and stable).
* It is *not compared* when both records hold the value but no field of it could be compared
  (every salt differs): missing for the model (neutral, never a disagreement), reported
  apart so a lookup can say what it could not compare.

* A value whose parts salt other fields (the date of birth, when views are salted with its
  year and month, year and day, day and month) is compared by those salt tags too: all equal
  means the value is equal; some equal means one part is off (or day and month are
  transposed), which lifts its similarity to its second cut-off, the level just below exact
  (:func:`part_agreement`). Diffused filters of nearly equal dates are hardly more similar
  than those of unrelated dates; the tags say exactly which parts agree, and show the matcher
  nothing its salt tags did not already show.

For a schema without views, comparisons are fields one to one and the result is the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.schema import Schema


@dataclass(frozen=True)
class Compared:
    """Per pair and comparison: ``similarity`` (meaningful where ``present``), ``present``
    (compared) and ``not_compared`` (both hold the value, no salt of it agreed)."""

    similarity: NDArray[np.float64]
    present: NDArray[np.bool_]
    not_compared: NDArray[np.bool_]


def salt_comparable(
    schema: Schema,
    left_tags: NDArray[np.unsignedinteger[Any]],
    right_tags: NDArray[np.unsignedinteger[Any]],
) -> NDArray[np.bool_]:
    """(n_pairs, n_fields): False where a salted field of the pair was encoded under
    different salt values (its Dice then means nothing), True elsewhere.

    ``left_tags`` and ``right_tags`` are the pairs' salt tags, one row per pair (columns as
    :attr:`Schema.salt_sources`).
    """
    sources = schema.salt_sources
    out = np.ones((left_tags.shape[0], len(schema.fields)), dtype=np.bool_)
    for f_index, spec in enumerate(schema.fields):
        if spec.salt:
            s_index = sources.index(spec.salt)
            out[:, f_index] = left_tags[:, s_index] == right_tags[:, s_index]
    return out


def compare_fields(
    schema: Schema,
    similarity: NDArray[np.float64],
    both_present: NDArray[np.bool_],
    left_tags: NDArray[np.unsignedinteger[Any]],
    right_tags: NDArray[np.unsignedinteger[Any]],
) -> Compared:
    """Per-comparison similarity and presence from per-field ones.

    ``similarity`` and ``both_present`` are ``(n_pairs, n_fields)``, one column per
    :attr:`Schema.fields` entry; ``left_tags``/``right_tags`` the pairs' salt tags (one row per
    pair, or one row broadcast to every pair).
    """
    compared = both_present
    if schema.salt_sources:
        n_pairs = both_present.shape[0]
        compared = both_present & salt_comparable(
            schema,
            np.broadcast_to(left_tags, (n_pairs, left_tags.shape[1])),
            np.broadcast_to(right_tags, (n_pairs, right_tags.shape[1])),
        )
    if len(schema.input_names) == len(schema.fields):  # no views: one field per comparison
        return Compared(
            part_agreement(schema, similarity, compared, left_tags, right_tags),
            compared,
            both_present & ~compared,
        )
    shape = (similarity.shape[0], len(schema.input_names))
    out_sim = np.zeros(shape, dtype=np.float64)
    out_present = np.zeros(shape, dtype=np.bool_)
    out_held = np.zeros(shape, dtype=np.bool_)
    for f, c in enumerate(schema.comparison_of_field):
        np.maximum(
            out_sim[:, c], np.where(compared[:, f], similarity[:, f], 0.0), out=out_sim[:, c]
        )
        out_present[:, c] |= compared[:, f]
        out_held[:, c] |= both_present[:, f]
    out_sim = part_agreement(schema, out_sim, out_present, left_tags, right_tags)
    return Compared(out_sim, out_present, out_held & ~out_present)


def part_sources(schema: Schema) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Per comparison whose value salts other fields by two or more of its parts: (its column
    in :attr:`Schema.input_names`, the columns of those salt sources in the salt tags)."""
    out = []
    for column, name in enumerate(schema.input_names):
        sources = tuple(
            s_index
            for s_index, source in enumerate(schema.salt_sources)
            if source.split(".")[0] == name and source.split(".")[1] != "value"
        )
        if len(sources) >= 2 and len(schema.comparison_specs[column].levels) >= 2:
            out.append((column, sources))
    return tuple(out)


def part_agreement(
    schema: Schema,
    similarity: NDArray[np.float64],
    compared: NDArray[np.bool_],
    left_tags: NDArray[np.unsignedinteger[Any]],
    right_tags: NDArray[np.unsignedinteger[Any]],
) -> NDArray[np.float64]:
    """``similarity`` (per comparison) lifted where the salt tags of a value's parts agree:
    to 1 where all agree, to the comparison's second cut-off where some do."""
    found = part_sources(schema)
    if not found:
        return similarity
    out = similarity.copy()
    for column, sources in found:
        agree = (left_tags[:, sources] == right_tags[:, sources]) & (left_tags[:, sources] != 0)
        count = agree.sum(axis=1)
        lifted = np.where(
            count == len(sources),
            1.0,
            np.where(count > 0, schema.comparison_specs[column].levels[1], 0.0),
        )
        out[:, column] = np.where(compared[:, column], np.maximum(out[:, column], lifted), 0.0)
    return out


def not_compared(
    schema: Schema,
    both_present: NDArray[np.bool_],
    left_tags: NDArray[np.unsignedinteger[Any]],
    right_tags: NDArray[np.unsignedinteger[Any]],
) -> NDArray[np.bool_]:
    """(n_pairs, n_comparisons): both records hold the value but no salt of it agreed
    (:func:`compare_fields` without the similarities)."""
    zeros = np.zeros(both_present.shape, dtype=np.float64)
    return compare_fields(schema, zeros, both_present, left_tags, right_tags).not_compared
