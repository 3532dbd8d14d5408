"""Forms: a record whose salt value is missing is published once per value it can take.

Role in the pipeline: between encoding (:mod:`linkage.encode`) and everything that compares
(:mod:`linkage.pipeline`, the matcher). The shipped schema salts the date of birth with sex
(and publishes names and postcode in views salted with parts of the date). A salted field is
compared only between records encoded under the same salt value
(:func:`linkage.compare.salt_comparable`), so a record without a sex would have a date of
birth that only other records without a sex could be compared with. Where the missing salt
field has few possible values (:data:`linkage.normalise.FINITE_VALUES`: sex), the record is
instead encoded once per value, each *form* with the assumed value used only as a salt:

* the assumed field itself is published as missing (zero filter, not present), so it is never
  compared and adds no evidence; its salt tag is kept, so what it salts is compared under it;
* a form is compared with a record only where the assumption does not contradict it
  (:func:`assumption_conflicts`: both tags set and different, one side assumed), so a form
  never borrows the "not compared" neutrality of a salt it could have matched;
* the forms of one record are one record: pairs inside it are dropped and of the pairs
  between two records the most probable consistent one counts (:func:`best_per_record`).

A lookup that lacks sex is queried the same way (one row per value, all in one Match call,
merged by the matcher per record); forms do the same for the published side. Forms are ordered
by their salt tags, which the matcher sees anyway, so the order tells it nothing about which
value each assumes. A form's reference (:func:`form_reference`) is derived from the record's,
so republishing is idempotent; the matcher is told which record each form belongs to
(``form_of``).

What it costs the matcher: it learns that a record lacks the assumed field, which the
presence bitmap already said, and that the forms belong together, which their identical
unsalted filters already said.

A lookup may also send *date hypotheses* (:func:`encode_date_hypotheses`): the
fields salted with a date (the names and postcode, salted with the date of birth) are compared
only where the two dates are equal, so the record of a child whose date one agency keyed a day
off, transposed or left out would never meet the query. Each hypothesis is one more query
row, encoded as if the date were one of its usual errors (:func:`date_hypotheses`) and
*withholding* the date itself (published as missing, its salt tag kept, as a form does): the
salted fields meet the records that hold that date, and the date adds no evidence for or
against, so a record found only under a hypothesis ranks below one whose date agrees. Query
rows are the node's own and publish nothing; the matcher learns only that the rows of one
lookup belong together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
from numpy.typing import NDArray

from linkage.encode import EncodedBatch, concat_batches, encode_record, encode_records
from linkage.errors import InvalidValueError
from linkage.keys import KeySet
from linkage.normalise import FINITE_VALUES, PLACEHOLDER_DATES, normalise_date
from linkage.schema import Schema

#: ``Forms.form`` of a record published as itself (nothing assumed)
NO_FORM = -1
_FORM_REFERENCE_DOMAIN = b"jigsaw form reference v1\x00"


@dataclass(frozen=True)
class Forms:
    """The published rows of a batch: each record once, or once per assumed value.

    ``batch`` has one row per form; ``origin[i]`` is the input row form ``i`` encodes and
    ``form[i]`` its number among that record's forms (:data:`NO_FORM` for a record published
    as itself). A record's forms are consecutive rows, records in input order."""

    batch: EncodedBatch
    origin: NDArray[np.int64]
    form: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.batch)


def assumable_fields(schema: Schema) -> tuple[str, ...]:
    """Fields a form may assume: few possible values, and salting another field by value."""
    kinds = {spec.name: spec.kind for spec in schema.fields}
    sources = {source.split(".")[0] for source in schema.salt_sources if source.endswith(".value")}
    return tuple(
        spec.name
        for spec in schema.fields
        if spec.name in sources and kinds[spec.name] in FINITE_VALUES
    )


def max_forms(schema: Schema) -> int:
    """The most forms one record can have (1 for a schema that assumes nothing)."""
    kinds = {spec.name: spec.kind for spec in schema.fields}
    count = 1
    for name in assumable_fields(schema):
        count *= len(FINITE_VALUES[kinds[name]])
    return count


def missing_salts(schema: Schema, present: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(n, len(assumable_fields)): True where the row lacks the assumable field but has a
    field salted with it (the rows :func:`encode_forms` publishes as forms)."""
    names = schema.field_names
    assumable = assumable_fields(schema)
    out = np.zeros((present.shape[0], len(assumable)), dtype=np.bool_)
    for a, name in enumerate(assumable):
        salted = [names.index(f.name) for f in schema.fields if f.salt == f"{name}.value"]
        out[:, a] = ~present[:, names.index(name)] & present[:, salted].any(axis=1)
    return out


def assume(schema: Schema, batch: EncodedBatch, fields: Sequence[str]) -> EncodedBatch:
    """``batch`` (encoded with values for ``fields``) with those fields published as missing:
    zero filter, not present, salt tags kept."""
    filters = list(batch.field_filters)
    present = batch.field_present.copy()
    for name in fields:
        index = schema.field_names.index(name)
        filters[index] = np.zeros_like(filters[index])
        present[:, index] = False
    return dataclasses.replace(batch, field_filters=tuple(filters), field_present=present)


def encode_forms(
    schema: Schema, keys: KeySet, columns: Mapping[str, Sequence[str | None]]
) -> Forms:
    """Encode ``columns`` as :func:`linkage.encode.encode_records` does, each record lacking an
    assumable salt field (:func:`missing_salts`) as one form per value of the fields it lacks.

    ``problems`` are the base encoding's (rows are input rows)."""
    base = encode_records(schema, keys, columns)
    n = len(base)
    lacking = missing_salts(schema, base.field_present)
    assumable = assumable_fields(schema)
    expand = lacking.any(axis=1)
    if not expand.any():
        return Forms(base, np.arange(n, dtype=np.int64), np.full(n, NO_FORM, dtype=np.int64))
    kinds = {spec.name: spec.kind for spec in schema.fields}
    source_columns = [schema.salt_sources.index(f"{name}.value") for name in assumable]
    parts: list[EncodedBatch] = [base]
    # per expanded input row: (salt-tag tuple, row in the concatenation of parts)
    forms_of: dict[int, list[tuple[tuple[int, ...], int]]] = {}
    offset = n
    patterns, pattern_of = np.unique(lacking[expand], axis=0, return_inverse=True)
    expanded_rows = np.flatnonzero(expand)
    for p, pattern in enumerate(patterns.tolist()):
        rows = expanded_rows[pattern_of.reshape(-1) == p]
        fields = [name for name, lacks in zip(assumable, pattern, strict=True) if lacks]
        subset = {name: [columns[name][r] for r in rows.tolist()] for name in schema.input_names}
        for values in itertools.product(*(FINITE_VALUES[kinds[name]] for name in fields)):
            assumed = {
                **subset,
                **{name: [value] * rows.size for name, value in zip(fields, values, strict=True)},
            }
            part = assume(schema, encode_records(schema, keys, assumed), fields)
            parts.append(part)
            tags = part.salt_tags[:, source_columns].tolist()
            for i, row in enumerate(rows.tolist()):
                forms_of.setdefault(row, []).append((tuple(tags[i]), offset + i))
            offset += rows.size
    combined = concat_batches(parts)
    order: list[int] = []
    origin: list[int] = []
    form: list[int] = []
    for row in range(n):
        held = forms_of.get(row)
        if held is None:
            order.append(row)
            origin.append(row)
            form.append(NO_FORM)
            continue
        for number, (_, at) in enumerate(sorted(held)):
            order.append(at)
            origin.append(row)
            form.append(number)
    batch = dataclasses.replace(combined.take(order), problems=base.problems)
    return Forms(batch, np.asarray(origin, dtype=np.int64), np.asarray(form, dtype=np.int64))


def date_hypotheses(iso: str) -> tuple[str | None, ...]:
    """The dates an agency often holds instead of ``iso`` (a valid ISO date), each a valid
    date and none equal to it, then None (no date held): the day, the month or the year one
    off, day and month transposed, 1 January of the year, the placeholder dates
    (:data:`linkage.normalise.PLACEHOLDER_DATES`)."""
    year, month, day = (int(part) for part in iso.split("-"))
    shifted = [(year, month, day + d) for d in (-1, 1)]
    shifted += [(year, month + d, day) for d in (-1, 1)]
    shifted += [(year + d, month, day) for d in (-1, 1)]
    shifted += [(year, day, month), (year, 1, 1)]
    found: list[str | None] = []
    for y, m, d in shifted:
        try:
            found.append(date(y, m, d).isoformat())
        except ValueError:
            continue
    found += PLACEHOLDER_DATES
    return (*dict.fromkeys(x for x in found if x != iso), None)


def hypothesis_fields(schema: Schema) -> tuple[str, ...]:
    """Date fields that salt others by value: where :func:`encode_query` adds hypotheses."""
    kinds = {spec.name: spec.kind for spec in schema.fields}
    sources = (source.split(".")[0] for source in schema.salt_sources if source.endswith(".value"))
    return tuple(name for name in dict.fromkeys(sources) if kinds.get(name) == "date")


def encode_query(schema: Schema, keys: KeySet, values: Mapping[str, str | None]) -> EncodedBatch:
    """One record as :func:`encode_forms` publishes it (one row, or one row per form in the
    same order), encoded with :func:`linkage.encode.encode_record`, a third of
    ``encode_records``' time for one record: a lookup's query rows (hypotheses about one
    person, sent together), so that one of them meets each form of a record under the salt it
    assumes. ``problems`` are the record's."""
    base = encode_record(schema, keys, values)
    assumable = assumable_fields(schema)
    fields = [
        name
        for name, lacks in zip(assumable, missing_salts(schema, base.field_present)[0], strict=True)
        if lacks
    ]
    if not fields:
        return base
    kinds = {spec.name: spec.kind for spec in schema.fields}
    source_columns = [schema.salt_sources.index(f"{name}.value") for name in assumable]
    rows = [
        assume(
            schema,
            encode_record(schema, keys, {**values, **dict(zip(fields, combo, strict=True))}),
            fields,
        )
        for combo in itertools.product(*(FINITE_VALUES[kinds[name]] for name in fields))
    ]
    rows.sort(key=lambda row: tuple(row.salt_tags[0, source_columns].tolist()))
    return dataclasses.replace(concat_batches(rows), problems=base.problems)


def encode_date_hypotheses(
    schema: Schema, keys: KeySet, values: Mapping[str, str | None]
) -> EncodedBatch | None:
    """A lookup's date hypotheses (module docstring): for each date field that salts others
    (:func:`hypothesis_fields`) and holds a valid value, the query under each of
    :func:`date_hypotheses`, that date withheld: row for row what :func:`encode_query` gives
    for each hypothesis (its forms included, in the same order), encoded as one batch
    (:func:`encode_forms`). None where there is none (no such field, or no valid date given).
    They meet records only through blocking on the fields the date salts; the typed query's
    rows do the rest. The rows carry no ``problems``: the typed query's report them."""
    parts: list[EncodedBatch] = []
    for name in hypothesis_fields(schema):
        spec = schema.field(name)
        typed = _normalise_date(values.get(spec.input_name), schema)
        if typed is None:
            continue
        dates = date_hypotheses(typed)
        columns = {field: [values.get(field)] * len(dates) for field in schema.input_names}
        columns[spec.input_name] = list(dates)
        parts.append(assume(schema, encode_forms(schema, keys, columns).batch, [name]))
    if not parts:
        return None
    return dataclasses.replace(concat_batches(parts), problems=())


def _normalise_date(value: str | None, schema: Schema) -> str | None:
    """The canonical date, or None where it is missing or not a valid date."""
    try:
        return normalise_date(
            value, field="date", day_first=schema.day_first, years=schema.date_range
        )
    except InvalidValueError:
        return None


def form_reference(reference: str, form: int) -> str:
    """The reference of form ``form`` of the record ``reference`` (32 lowercase hex, like a
    record's): derived, so that republishing a record republishes the same forms."""
    if form == NO_FORM:
        return reference
    digest = hashlib.sha256(
        _FORM_REFERENCE_DOMAIN + reference.encode("ascii") + b"\x00" + str(form).encode("ascii")
    ).digest()
    return digest[:16].hex()


def assumable_columns(schema: Schema) -> tuple[tuple[int, int], ...]:
    """Per :func:`assumable_fields` entry: (its field index, its salt-tag column)."""
    return tuple(
        (schema.field_names.index(name), schema.salt_sources.index(f"{name}.value"))
        for name in assumable_fields(schema)
    )


def assuming_rows(
    columns: Sequence[tuple[int, int]],
    present: NDArray[np.bool_],
    tags: NDArray[np.unsignedinteger],
) -> NDArray[np.bool_]:
    """Per row: True where it is a form, i.e. lacks an assumable field (``columns``:
    :func:`assumable_columns`) but carries its salt tag. Only a pair with such a row can
    conflict (:func:`assumption_conflicts`)."""
    out = np.zeros(present.shape[0], dtype=np.bool_)
    for field, column in columns:
        out |= ~present[:, field] & (tags[:, column] != 0)
    return out


def assumption_conflicts(
    columns: Sequence[tuple[int, int]],
    left_present: NDArray[np.bool_],
    left_tags: NDArray[np.unsignedinteger],
    right_present: NDArray[np.bool_],
    right_tags: NDArray[np.unsignedinteger],
) -> NDArray[np.bool_]:
    """Per pair (rows aligned; a side of one row is paired with every row of the other): True
    where one side is a form whose assumed value the other side contradicts. A row assumes an
    assumable field (``columns``: :func:`assumable_columns`) when it lacks the field but
    carries its salt tag; the other side contradicts it when its tag is set and different.
    Such a pair is not compared at all: the record's other form, the one assuming the other
    side's value, is the comparison that counts."""
    rows = np.broadcast_shapes(left_tags.shape[:1], right_tags.shape[:1])
    out = np.zeros(rows, dtype=np.bool_)
    for field, column in columns:
        lt, rt = left_tags[:, column], right_tags[:, column]
        either = ~left_present[:, field] | ~right_present[:, field]
        out |= either & (lt != 0) & (rt != 0) & (lt != rt)
    return out


def best_per_record(
    left: NDArray[np.int64],
    right: NDArray[np.int64],
    probability: NDArray[np.float64],
    record: NDArray[np.int64],
) -> NDArray[np.bool_]:
    """Mask of the pairs (of rows) to keep when rows are forms of ``record[row]``: none inside
    one record, and between two records only the most probable pair (the first on a tie)."""
    a, b = record[left], record[right]
    keep: NDArray[np.bool_] = a != b
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        return keep
    low, high = np.minimum(a[rows], b[rows]), np.maximum(a[rows], b[rows])
    order = np.lexsort((rows, -probability[rows], high, low))
    first = np.ones(order.size, dtype=np.bool_)
    first[1:] = (low[order][1:] != low[order][:-1]) | (high[order][1:] != high[order][:-1])
    out = np.zeros(keep.shape, dtype=np.bool_)
    out[rows[order[first]]] = True
    return out
