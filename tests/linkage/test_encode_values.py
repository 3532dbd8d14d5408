"""Tests for linkage.encode beyond the golden vectors: missing and invalid values, salted
fields, blocking values, argument checks, and properties of whole batches (Hypothesis).

The golden vectors, filter layout and keys are tests/linkage/test_encode.py; both encode under
the plain contract of :mod:`tests.helpers.plain_encoding`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.encode import (
    blocking_value,
    concat_batches,
    encode_records,
    tokenise,
    validate_filters,
)
from linkage.errors import FilterFormatError, SchemaError
from linkage.keys import KeySet, LinkageSecret
from linkage.normalise import NORMALISERS
from linkage.schema import Schema, load_schema, schema_from_dict
from tests.helpers.plain_encoding import (
    CHILD,
    FIELDS,
    INPUTS,
    JOSE,
    batches_equal,
    columns_of,
    encode,
    plain_filter_bytes,
    plain_positions,
    published_keys,
)

# ---------------------------------------------------------------------------------------------
# missing and invalid values


@pytest.mark.parametrize("missing", [None, "", "   ", "N/A", "unknown"])
@pytest.mark.parametrize("field", ["family_name", "date_of_birth", "postcode", "nhs_number"])
def test_missing_value_gives_zero_filter_and_zero_block_keys(field: str, missing: Any) -> None:
    record = dict(JOSE, **{field: missing})
    batch = encode([record, JOSE])
    f = FIELDS.index(field)
    assert not batch.field_present[0, f] and batch.field_present[1, f]
    assert not batch.field_filters[f][0].any() and batch.field_filters[f][1].any()
    assert batch.problems == ()
    # a combined field of this input alone is missing with it; one of it and others is the
    # others' values, the missing marker adding nothing to the join
    combining = {s.name for s in CHILD.fields if field in s.combines}
    emptied = {field} | {name for name in combining if CHILD.field(name).combines == (field,)}
    without = encode([dict(JOSE, **{field: None})])
    for name in combining - emptied:
        g = FIELDS.index(name)
        assert batch.field_present[0, g]
        assert np.array_equal(batch.field_filters[g][0], without.field_filters[g][0])
        assert not np.array_equal(batch.field_filters[g][0], batch.field_filters[g][1])
    for name in emptied:
        g = FIELDS.index(name)
        assert not batch.field_present[0, g] and not batch.field_filters[g][0].any()
    for r, rule in enumerate(CHILD.blocking):
        uses_field = any(part_field in emptied for part_field, _ in rule.parts)
        assert (batch.block_keys[0, r] == 0) == uses_field, rule.name
        if not any(part_field in combining | emptied for part_field, _ in rule.parts):
            assert batch.block_keys[0, r] == batch.block_keys[1, r]
    # the other fields are unaffected
    for g, name in enumerate(FIELDS):
        if name not in combining | emptied:
            assert np.array_equal(batch.field_filters[g][0], batch.field_filters[g][1])


def test_all_missing_record_is_all_zero() -> None:
    batch = encode([{}])
    assert not batch.field_present.any()
    assert not batch.record_filters.any()
    assert not batch.block_keys.any()
    assert all(not f.any() for f in batch.field_filters)


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("date_of_birth", "31/02/2014"),
        ("date_of_birth", "2014-13-01"),
        ("date_of_birth", "not a date at all"),
        ("nhs_number", "943 476 5918"),
        ("nhs_number", "12345"),
        ("sex", "Q"),
        ("postcode", "NOT A POSTCODE"),
    ],
)
def test_invalid_value_is_a_problem_naming_row_and_field_not_value(field: str, raw: str) -> None:
    records = [JOSE, dict(JOSE, **{field: raw}), JOSE, dict(JOSE, **{field: raw})]
    batch = encode(records)
    f = FIELDS.index(field)
    assert [(p.row, p.field) for p in batch.problems] == [(1, field), (3, field)]
    assert batch.invalid_counts()[field] == 2
    for problem in batch.problems:
        for text in (problem.reason, repr(problem), str(problem)):
            assert raw.lower() not in text.lower()
    assert batch.field_present[:, f].tolist() == [True, False, True, False]
    assert not batch.field_filters[f][1].any()
    assert np.array_equal(batch.field_filters[f][0], batch.field_filters[f][2])


def test_problems_survive_concatenation_with_shifted_rows() -> None:
    bad = dict(JOSE, date_of_birth="31/02/2014")
    joined = concat_batches([encode([JOSE, bad]), encode([bad])])
    assert [(p.row, p.field) for p in joined.problems] == [
        (1, "date_of_birth"),
        (2, "date_of_birth"),
    ]


# ---------------------------------------------------------------------------------------------
# per-batch caching never changes the result (Hypothesis)

VALUE_POOLS: dict[str, list[str | None]] = {
    "given_name": ["José", "JOSE", "Nguyễn Văn", "Ben Ali", None, "", "Mary-Jane"],
    "middle_names": ["Anne", None, "Zoë Anne", ""],
    "family_name": ["Müller", "MULLER", "van der Berg", "O'Brien", "Smith-Jones", None],
    "date_of_birth": ["02/03/2014", "2014-03-02", "03/02/2014", "31/02/2014", None, "1999-12-31"],
    "sex": ["F", "m", "U", "Q", None],
    "postcode": ["SW1A 1AA", "sw1a1aa", "M1 1AE", "bogus", None],
    "nhs_number": ["943 476 5919", "9434765918", "4010232137", None],
}

records_strategy = st.lists(
    st.fixed_dictionaries({f: st.sampled_from(pool) for f, pool in VALUE_POOLS.items()}),
    min_size=1,
    max_size=6,
)


@settings(deadline=None, derandomize=True, max_examples=40)
@given(records_strategy)
def test_batch_encoding_equals_concatenated_single_row_encodings(
    records: list[dict[str, str | None]],
) -> None:
    keys = published_keys()
    whole = encode(records, keys)
    singles = concat_batches([encode([r], keys) for r in records])
    assert batches_equal(whole, singles)
    # and take() recovers any row on its own
    last = len(records) - 1
    alone = whole.take([last])
    assert np.array_equal(alone.record_filters, encode([records[last]], keys).record_filters)


# ---------------------------------------------------------------------------------------------
# salted fields (hardening)


def _salted_schema() -> Schema:
    data = CHILD.to_dict()
    data["field"][0]["salt"] = "date_of_birth.year"
    return schema_from_dict(data)


def test_salted_field_prefixes_every_token_with_the_salt_value() -> None:
    schema = _salted_schema()
    keys = published_keys()
    cols = {f: [JOSE[f], JOSE[f]] for f in INPUTS}
    cols["date_of_birth"] = ["02/03/2014", None]
    batch = encode_records(schema, keys, cols)
    spec = schema.field("given_name")
    key = keys.key("filter", "given_name")
    for row, salt in enumerate(("2014", "~")):
        expected: set[int] = set()
        for token in tokenise(spec, "jose"):
            expected.update(
                plain_positions(key, f"{salt}|{token}", spec.hashes_per_token, spec.filter_bits)
            )
        got = bytes(batch.field_filters[0][row].astype("<u8").tobytes())
        assert got == plain_filter_bytes(expected, spec.filter_bits)
    assert batch.schema_fingerprint != CHILD.fingerprint()


# ---------------------------------------------------------------------------------------------
# blocking values


@pytest.mark.parametrize(
    ("kind", "transform", "value", "expected"),
    [
        ("family_name", "value", "vanderberg", "vanderberg"),
        ("family_name", "soundex", "smith jones", "S530 J520"),
        ("name", "initial", "mary jane", "m"),
        ("name", "first_part", "mary jane", "mary"),
        ("date", "year", "2014-03-02", "2014"),
        ("date", "month_day", "2014-03-02", "03-02"),
        ("date", "year_month", "2014-03-02", "2014-03"),
        ("date", "year_day", "2014-03-02", "2014-02"),
        ("date", "year_day", "2014-12-31", "2014-31"),
        ("date", "day_month", "2014-05-03", "03/05"),  # 3 May: day first
        ("date", "day_month", "2014-03-05", "03/05"),  # 5 March: the same pair, unordered
        ("date", "day_month", "2014-12-31", "12/31"),
        ("date", "day_month", "2014-01-01", "01/01"),
        ("postcode", "sector", "SW1A 1AA", "SW1A 1"),
        ("postcode", "district", "SW1A 1AA", "SW1A"),
        ("postcode", "area", "SW1A 1AA", "SW"),
    ],
)
def test_blocking_value(kind: str, transform: str, value: str, expected: str) -> None:
    assert blocking_value(kind, transform, value) == expected


@pytest.mark.parametrize(
    ("left", "right"),
    [("03/05/2014", "05/03/2014"), ("2014-01-12", "2014-12-01"), ("1 Feb 2010", "2 Jan 2010")],
)
def test_day_month_is_unordered_and_the_other_date_parts_are_not(left: str, right: str) -> None:
    # a day/month transposition (both dates valid) keeps day_month and changes the ordered
    # parts; the year is kept, so year_month and year_day swap their day and month
    a, b = (
        NORMALISERS["date"](raw, field="date_of_birth", day_first=True) for raw in (left, right)
    )
    assert a is not None and b is not None and a != b
    assert blocking_value("date", "day_month", a) == blocking_value("date", "day_month", b)
    assert blocking_value("date", "year", a) == blocking_value("date", "year", b)
    for transform in ("value", "month_day", "year_month", "year_day"):
        assert blocking_value("date", transform, a) != blocking_value("date", transform, b)
    assert blocking_value("date", "year_month", a)[5:] == blocking_value("date", "year_day", b)[5:]


@settings(deadline=None, derandomize=True, max_examples=200)
@given(st.dates())
def test_year_day_and_day_month_are_parts_of_the_iso_date(day: Any) -> None:
    value = day.isoformat()
    year, month, dom = value[:4], value[5:7], value[8:10]
    assert blocking_value("date", "year_day", value) == f"{year}-{dom}"
    assert blocking_value("date", "day_month", value) == "/".join(sorted((month, dom)))
    assert blocking_value("date", "year_month", value) == f"{year}-{month}"


def test_blocking_value_rejects_an_unavailable_transform() -> None:
    with pytest.raises(SchemaError):
        blocking_value("date", "soundex", "2014-03-02")


# ---------------------------------------------------------------------------------------------
# input validation


@pytest.mark.parametrize(
    "filters",
    [
        np.zeros((3, 4), dtype=np.uint32),
        np.zeros((3, 4), dtype=np.int64),
        np.zeros(12, dtype=np.uint64),
        np.zeros((3, 4, 1), dtype=np.uint64),
        np.zeros((2, 4), dtype=np.uint64),
        np.zeros((3, 5), dtype=np.uint64),
        np.zeros((4, 3), dtype=np.uint64),
    ],
    ids=["uint32", "int64", "1-d", "3-d", "rows", "words", "transposed"],
)
def test_validate_filters_rejects_wrong_shape_or_dtype(filters: np.ndarray[Any, Any]) -> None:
    with pytest.raises(FilterFormatError) as info:
        validate_filters("query_filters", filters, 3, 4)
    assert str(info.value).startswith("query_filters:")


def test_validate_filters_accepts_the_right_array() -> None:
    validate_filters("f", np.zeros((3, 4), dtype=np.uint64), 3, 4)


def test_missing_column_is_a_schema_error_naming_the_field() -> None:
    columns = columns_of([JOSE])
    del columns["postcode"]
    del columns["sex"]
    with pytest.raises(SchemaError) as info:
        encode_records(CHILD, published_keys(), columns)
    assert len(info.value.problems) == 2
    joined = " ".join(info.value.problems)
    assert "'postcode'" in joined and "'sex'" in joined


def test_extra_columns_are_ignored() -> None:
    columns = columns_of([JOSE])
    columns["shoe_size"] = ["12"]
    assert batches_equal(encode_records(CHILD, published_keys(), columns), encode([JOSE]))


def test_columns_of_different_lengths_are_a_schema_error() -> None:
    columns = columns_of([JOSE, JOSE])
    columns["sex"] = ["F"]
    with pytest.raises(SchemaError):
        encode_records(CHILD, published_keys(), columns)


def test_concat_batches_rejects_empty_and_mismatched_input() -> None:
    with pytest.raises(FilterFormatError):
        concat_batches([])
    other = encode_records(_salted_schema(), published_keys(), columns_of([JOSE]))
    with pytest.raises(FilterFormatError):
        concat_batches([encode([JOSE]), other])
    rotated = encode([JOSE], KeySet(LinkageSecret.for_tests(), key_version=2))
    with pytest.raises(FilterFormatError):
        concat_batches([encode([JOSE]), rotated])


def test_empty_batch_encodes_to_empty_arrays() -> None:
    batch = encode_records(CHILD, published_keys(), {f: [] for f in INPUTS})
    assert len(batch) == 0
    assert batch.block_keys.shape == (0, len(CHILD.blocking))


@settings(deadline=None, derandomize=True, max_examples=40)
@given(records_strategy)
def test_filter_keys_and_tags_group_records_exactly_as_their_filters(
    records: list[dict[str, str | None]],
) -> None:
    # under the shipped schema (views, salted, hardened): two records share a filter rule's
    # key, or a salt tag (of the date of birth, of sex), exactly when the published filters of
    # every part (of the views the rule names) are equal
    shipped = load_schema("child")
    batch = encode_records(
        shipped, published_keys(), {f: [r.get(f) for r in records] for f in INPUTS}
    )
    names = shipped.field_names
    columns = [
        (batch.block_keys[:, r], [names.index(part) for part, _ in rule.parts])
        for r, rule in enumerate(shipped.blocking)
    ] + [
        (batch.salt_tags[:, s], [names.index(source.split(".")[0])])
        for s, source in enumerate(shipped.salt_sources)
        if source.endswith(".value")
    ]
    # every source is a ".value" (views publish no tag): date_of_birth.value and sex.value
    assert len(columns) == len(shipped.blocking) + 2
    for keys_column, fields in columns:
        present = np.asarray(batch.field_present[:, fields].all(axis=1))
        for i in range(len(records)):
            assert (keys_column[i] == 0) == (not present[i])
            for j in range(len(records)):
                if present[i] and present[j]:
                    same_filters = all(
                        np.array_equal(batch.field_filters[f][i], batch.field_filters[f][j])
                        for f in fields
                    )
                    assert (keys_column[i] == keys_column[j]) == same_filters
