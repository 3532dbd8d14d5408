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
        return Compared(similarity, compared, both_present & ~compared)
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
    return Compared(out_sim, out_present, out_held & ~out_present)


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
