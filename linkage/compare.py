"""Which published filters of a pair are compared, and the one similarity per comparison.

Role in the pipeline: between the Dice kernel (:mod:`linkage.similarity`, one similarity per
published field) and the model (:mod:`linkage.scoring`, one comparison level per input
field). It is the one place that decides "compared" and "not compared"; the batch pipeline
and the lookup index both call it.

Contract, per pair and per published field ``f`` (a field or one view of a field):

* ``f`` is *compared* when both records hold the value and, for a field with a salt of its
  own, both were encoded under the same salt value (equal salt tags, :func:`salt_comparable`);
  otherwise its Dice means nothing and is not used.
* A view publishes no salt tag: a tag would group records by the salt value (a birth year and
  month), a grouping its filters do not show, and an attacker reproduces it on a population of
  its own. Views of a field are therefore always compared where both records hold the value;
  a view under another salt gives the Dice of unrelated filters.
* A comparison (:attr:`linkage.schema.Schema.comparison_names`) is present when any of its fields
  is compared; its similarity is the largest Dice among them: the view whose salt agrees
  where one does, so an error in one part of the date leaves the field compared as usual.
* It is *not compared* when both records hold the value but no field of it could be compared
  (its salt differs): missing for the model (neutral, never a disagreement), reported apart
  so a lookup can say what it could not compare (:func:`not_compared`).

* A *combined* field (the full name: given and family names joined) is compared only where
  each field it combines was not compared or disagrees (its salt, the date, differs; or the
  names are in another order): evidence of last resort, never counted beside a field that
  agrees even in part.

For a schema without views or combined fields, comparisons are fields one to one and the
result is the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.schema import Schema
from linkage.scoring import MISSING_LEVEL


@dataclass(frozen=True)
class Compared:
    """Per pair and comparison: ``similarity`` (meaningful where ``present``), ``present``
    (compared) and ``not_compared`` (both hold the value, but it could not be compared)."""

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
        if spec.salt and not spec.view_of:
            s_index = sources.index(spec.salt)
            out[:, f_index] = left_tags[:, s_index] == right_tags[:, s_index]
    return out


def compare_fields(
    schema: Schema,
    similarity: NDArray[np.float64],
    left_present: NDArray[np.bool_],
    right_present: NDArray[np.bool_],
    left_tags: NDArray[np.unsignedinteger[Any]],
    right_tags: NDArray[np.unsignedinteger[Any]],
) -> Compared:
    """Per-comparison similarity and presence from per-field ones.

    ``similarity`` is ``(n_pairs, n_fields)``, one column per :attr:`Schema.fields` entry;
    ``left_present``/``right_present`` each side's field presence and ``left_tags``/
    ``right_tags`` its salt tags (one row per pair, or one row broadcast to every pair).
    """
    n_pairs = similarity.shape[0]
    both_present = np.asarray(left_present & right_present, dtype=np.bool_)
    both_present = np.broadcast_to(both_present, similarity.shape)
    compared = np.array(both_present)  # a writable copy
    if schema.salt_sources:
        compared &= salt_comparable(
            schema,
            np.broadcast_to(left_tags, (n_pairs, left_tags.shape[1])),
            np.broadcast_to(right_tags, (n_pairs, right_tags.shape[1])),
        )
    for f, source in view_salt_sources(schema):
        # a view is encoded under its salt's value, or under "missing": it compares only with
        # a record that has the salting value exactly when this one has it
        compared[:, f] &= left_present[..., source] == right_present[..., source]
    if len(schema.comparison_names) == len(schema.fields):  # no views: one field per comparison
        out = Compared(similarity, compared, both_present & ~compared)
    else:
        out = _compare_views(schema, similarity, compared, both_present)
    return _fall_back(schema, out)


def _fall_back(schema: Schema, out: Compared) -> Compared:
    """A combined field compared only where each field it combines was not compared or
    disagrees (below its lowest cut-off)."""
    combined = [
        (c, [schema.comparison_names.index(name) for name in spec.combines])
        for c, spec in enumerate(schema.comparison_specs)
        if spec.combines
    ]
    if not combined:
        return out
    present, not_compared = out.present.copy(), out.not_compared.copy()
    for c, parts in combined:
        # where every field it combines disagrees or was not compared (names in another
        # order: given against family), the combined field tells more than they do
        floors = np.array([schema.comparison_specs[p].levels[-1] for p in parts])
        told = out.present[:, parts] & (out.similarity[:, parts] >= floors)
        present[:, c] &= ~told.any(axis=1)
        not_compared[:, c] = False  # the fields it combines say what was not compared
    return Compared(out.similarity, present, not_compared)


def view_salt_sources(schema: Schema) -> tuple[tuple[int, int], ...]:
    """Per view: (its field index, the field index of its salt's field)."""
    return tuple(
        (f, schema.field_names.index(spec.salt.split(".")[0]))
        for f, spec in enumerate(schema.fields)
        if spec.view_of
    )


def _compare_views(
    schema: Schema,
    similarity: NDArray[np.float64],
    compared: NDArray[np.bool_],
    both_present: NDArray[np.bool_],
) -> Compared:
    """:func:`compare_fields` for a schema with views: a comparison is present where any of
    its fields is compared, with the largest Dice among them."""
    shape = (similarity.shape[0], len(schema.comparison_names))
    out_sim = np.zeros(shape, dtype=np.float64)
    out_present = np.zeros(shape, dtype=np.bool_)
    out_held = np.zeros(shape, dtype=np.bool_)
    for f, c in enumerate(schema.comparison_of_field):
        np.maximum(
            out_sim[:, c], np.where(compared[:, f], similarity[:, f], 0.0), out=out_sim[:, c]
        )
        out_present[:, c] |= compared[:, f]
        out_held[:, c] |= both_present[:, f]
    _lift_by_parts(schema, similarity, compared, out_sim, out_present)
    return Compared(out_sim, out_present, out_held & ~out_present)


def _lift_by_parts(
    schema: Schema,
    similarity: NDArray[np.float64],
    compared: NDArray[np.bool_],
    out_sim: NDArray[np.float64],
    out_present: NDArray[np.bool_],
) -> None:
    """Where a view is equal (at its top cut-off), the parts of the salting value it is salted
    with agree; where some but not all parts of a value (the date of birth) are seen to agree,
    its similarity is lifted to its second cut-off, the level just below exact. Diffused
    filters of nearly equal dates are hardly more similar than those of unrelated dates; equal
    views say which parts agree, and show the matcher nothing their filters did not."""
    parts: dict[int, dict[str, NDArray[np.bool_]]] = {}
    for f, spec in enumerate(schema.fields):
        if not spec.view_of:
            continue
        source, transform = spec.salt.split(".")
        if transform == "value" or source not in schema.comparison_names:
            continue
        seen = parts.setdefault(schema.comparison_names.index(source), {})
        equal = compared[:, f] & (similarity[:, f] >= spec.levels[0])
        seen[transform] = seen[transform] | equal if transform in seen else equal
    for c, seen in parts.items():
        levels = schema.comparison_specs[c].levels
        if len(seen) < 2 or len(levels) < 2:
            continue
        agreeing = np.sum(list(seen.values()), axis=0)
        lift = out_present[:, c] & (agreeing > 0) & (agreeing < len(seen))
        out_sim[lift, c] = np.maximum(out_sim[lift, c], levels[1])


def not_compared(
    schema: Schema, both_present: NDArray[np.bool_], levels: NDArray[np.integer[Any]]
) -> NDArray[np.bool_]:
    """(n_pairs, n_comparisons): both records hold the value (some field of it present on both
    sides, ``both_present`` per field) but its comparison level is missing: not compared. A
    combined field never is (as in :func:`compare_fields`): the fields it combines say what
    was not compared."""
    held = np.zeros(levels.shape, dtype=np.bool_)
    specs = schema.comparison_specs
    for f, c in enumerate(schema.comparison_of_field):
        if not specs[c].combines:
            held[:, c] |= both_present[:, f]
    out: NDArray[np.bool_] = held & (levels == MISSING_LEVEL)
    return out
