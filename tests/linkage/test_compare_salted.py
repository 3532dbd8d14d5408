"""Tests for linkage.compare on salted encodings: a field under another salt is not compared,
not a disagreement; views and the combined full name are compared where the names are not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import pipeline, scoring
from linkage.compare import compare_fields, not_compared, salt_comparable
from linkage.encode import (
    EncodedBatch,
    encode_records,
)
from linkage.errors import FilterFormatError
from linkage.schema import Schema, load_schema
from tests.helpers.records import child, columns_of, published_keys
from tests.helpers.schemas import DATE_SALTED

CHILD = load_schema("child")
#: the salts of the shipped views: pairs of date parts (day and month unordered)
DATE_SALTS = ("date_of_birth.year_month", "date_of_birth.year_day", "date_of_birth.day_month")
SEX_SALT = "sex.value"
NAMES = ("given_name", "middle_names", "family_name")
#: fields salted with the whole date of birth (the date of birth itself is salted with sex)
DOB_SALTED = (*NAMES, "postcode")
#: the shipped combined fallback fields, published in views salted with pairs of date parts
COMBINED = ("full_name",)
#: names and postcode salted with the whole date, without the combined fields
VALUE_SALTED = DATE_SALTED
#: the view machinery on input fields: names and postcode themselves in views salted with
#: pairs of date parts (no combined fields)
NAME_VIEWS = DATE_SALTED.with_salt(list(DATE_SALTS), DOB_SALTED)

# ----------------------------------------------------------------------------- comparison


def test_salted_name_is_missing_not_disagreeing_when_the_salts_differ() -> None:
    records = [
        child(),
        child(),  # same child, same salt
        child(date_of_birth="14/03/2016"),  # same child, a typo in the birth year
        child(given_name="Zainab", family_name="Walsh"),  # other child, same salt
    ]
    batch = encode_records(VALUE_SALTED, published_keys(), columns_of(records))
    left = np.zeros(3, dtype=np.int64)
    right = np.array([1, 2, 3], dtype=np.int64)
    levels = pipeline.compare_pairs(VALUE_SALTED, batch, batch, left, right)
    names = [VALUE_SALTED.input_names.index(n) for n in NAMES]
    top = [len(VALUE_SALTED.field(n).levels) for n in NAMES]
    assert levels[0, names].tolist() == top  # identical: every name at its top level
    assert (levels[1, names] == scoring.MISSING_LEVEL).all()
    given, family = names[0], names[2]
    assert levels[2, given] == 0 and levels[2, family] == 0  # compared, and disagree
    sex = VALUE_SALTED.input_names.index("sex")
    assert levels[1, sex] != scoring.MISSING_LEVEL  # unsalted fields are still compared
    dob = VALUE_SALTED.input_names.index("date_of_birth")
    assert levels[1, dob] != scoring.MISSING_LEVEL  # the date is salted with sex, which agrees


def test_a_name_in_views_is_compared_unless_the_date_is_on_one_side_only() -> None:
    records = [
        child(),
        child(date_of_birth="14/03/2016"),  # same child, the birth year wrong: day_month agrees
        child(date_of_birth="15/03/2015"),  # the day wrong: year_month agrees
        child(date_of_birth="02/11/2009"),  # no part pair agrees: every view unrelated
        child(given_name="Zainab", family_name="Walsh", date_of_birth="14/03/2016"),
        child(date_of_birth=None),  # the date missing on one side: no view can be compared
        child(date_of_birth=None),  # and on both: the views are encoded under "missing"
    ]
    batch = encode_records(NAME_VIEWS, published_keys(), columns_of(records))
    left = np.array([0, 0, 0, 0, 0, 5], dtype=np.int64)
    right = np.array([1, 2, 3, 4, 5, 6], dtype=np.int64)
    levels = pipeline.compare_pairs(NAME_VIEWS, batch, batch, left, right)
    assert levels.shape == (len(right), len(NAME_VIEWS.input_names))
    compared = [NAME_VIEWS.input_names.index(n) for n in DOB_SALTED]
    top = [len(NAME_VIEWS.field(n).levels) for n in DOB_SALTED]
    assert levels[0, compared].tolist() == top  # one part wrong: still compared, and agree
    assert levels[1, compared].tolist() == top
    # no part agrees: compared (no tag says otherwise), on filters of unrelated salts, so the
    # same names read as disagreeing
    given, family = (NAME_VIEWS.input_names.index(n) for n in ("given_name", "family_name"))
    assert (levels[2, compared] != scoring.MISSING_LEVEL).all()
    assert levels[2, given] == 0 and levels[2, family] == 0
    assert levels[3, given] == 0 and levels[3, family] == 0  # compared, and disagree
    assert (levels[4, compared] == scoring.MISSING_LEVEL).all()  # not compared
    assert levels[5, compared].tolist() == top  # both without the date: compared, and agree
    sex = NAME_VIEWS.input_names.index("sex")
    assert (levels[:, sex] != scoring.MISSING_LEVEL).all()  # unsalted fields are compared
    # "not compared" (both hold the value, level missing) is the date on one side only
    both = batch.field_present[left] & batch.field_present[right]
    held_apart = not_compared(NAME_VIEWS, both, levels)
    expected = np.zeros_like(held_apart)
    expected[4, compared] = True
    np.testing.assert_array_equal(held_apart, expected)


def test_the_full_name_is_compared_only_where_the_given_and_family_names_are_not() -> None:
    # the shipped schema: the names and postcode are salted with the whole date, so a date
    # one part off leaves them not compared; their combined fallbacks, in views salted with
    # pairs of date parts, are then compared (the view whose parts agree is equal), and the
    # date itself is lifted to the level just below exact
    records = [
        child(),
        child(),  # the same record: the names compared, the fallbacks not
        child(date_of_birth="15/03/2015"),  # the day wrong
        child(date_of_birth="14/03/2016"),  # the year wrong
        child(date_of_birth=None),  # the date on one side only: no view compared either
    ]
    batch = encode_records(CHILD, published_keys(), columns_of(records))
    left = np.zeros(4, dtype=np.int64)
    right = np.array([1, 2, 3, 4], dtype=np.int64)
    levels = pipeline.compare_pairs(CHILD, batch, batch, left, right)
    assert levels.shape == (4, len(CHILD.comparison_names))
    at = {name: CHILD.comparison_names.index(name) for name in CHILD.comparison_names}
    top = {name: len(CHILD.field(name).levels) for name in CHILD.comparison_names}
    missing = scoring.MISSING_LEVEL
    held_apart = not_compared(CHILD, batch.field_present[left] & batch.field_present[right], levels)
    # the same date: given and family names exact, the full name missing (never counted twice)
    for name in ("given_name", "family_name", "postcode", "date_of_birth"):
        assert levels[0, at[name]] == top[name], name
    for name in COMBINED:
        assert levels[0, at[name]] == missing and not held_apart[0, at[name]], name
    # one part of the date wrong: the names "not compared", the full name exact, the date
    # at its second level
    for pair in (1, 2):
        for name in DOB_SALTED:
            assert levels[pair, at[name]] == missing and held_apart[pair, at[name]], name
        for name in COMBINED:
            assert levels[pair, at[name]] == top[name], name
            assert not held_apart[pair, at[name]], name
        assert levels[pair, at["date_of_birth"]] == top["date_of_birth"] - 1
    # the date on one side: nothing salted with it is compared; only the inputs are reported
    for name in (*DOB_SALTED, *COMBINED):
        assert levels[3, at[name]] == missing, name
        assert held_apart[3, at[name]] == (name in DOB_SALTED), name
    # the same evidence through compare_fields: combined never "not compared"
    sim = np.ones((1, len(CHILD.fields)))
    present = np.ones((1, len(CHILD.fields)), dtype=np.bool_)
    out = compare_fields(CHILD, sim, present, present, batch.salt_tags[[0]], batch.salt_tags[[2]])
    assert out.present[0].tolist() == [name not in DOB_SALTED for name in CHILD.comparison_names]
    assert out.not_compared[0].tolist() == [name in DOB_SALTED for name in CHILD.comparison_names]


def _views_of(schema: Schema, name: str) -> list[int]:
    return [f for f, spec in enumerate(schema.fields) if spec.view_of == name]


def test_compare_fields_takes_the_best_view_where_the_date_is_on_both_sides_or_neither() -> None:
    # four pairs, similarities made up per field: each view of given_name a different Dice
    n = 4
    sim = np.full((n, len(NAME_VIEWS.fields)), 0.5)
    views = _views_of(NAME_VIEWS, "given_name")
    assert len(views) == 3
    sim[:, views] = [0.2, 0.9, 0.4]
    present = np.ones((n, len(NAME_VIEWS.fields)), dtype=np.bool_)
    left_present, right_present = present.copy(), present.copy()
    dob = NAME_VIEWS.field_names.index("date_of_birth")
    left_present[1, dob] = False  # pair 1: the date on the right only
    right_present[2, dob] = False  # pair 2: on the left only
    left_present[3, dob] = right_present[3, dob] = False  # pair 3: on neither side
    tags = np.ones((n, len(NAME_VIEWS.salt_sources)), dtype=np.uint64)
    out = compare_fields(NAME_VIEWS, sim, left_present, right_present, tags, tags)
    given = NAME_VIEWS.input_names.index("given_name")
    assert out.similarity.shape == (n, len(NAME_VIEWS.input_names))
    assert out.present[:, given].tolist() == [True, False, False, True]
    assert out.not_compared[:, given].tolist() == [False, True, True, False]
    assert out.similarity[[0, 3], given].tolist() == [0.9, 0.9]  # the best view
    # the value missing on one side: neither compared nor "not compared"
    left_present[0, views] = False
    out = compare_fields(NAME_VIEWS, sim, left_present, right_present, tags, tags)
    assert not out.present[0, given] and not out.not_compared[0, given]
    # the date, salted with sex, is compared where the sex tags agree
    dob_column = NAME_VIEWS.input_names.index("date_of_birth")
    other = tags.copy()
    other[0, NAME_VIEWS.salt_sources.index(SEX_SALT)] = 2
    out = compare_fields(NAME_VIEWS, sim, present, present, tags, other)
    assert out.present[:, dob_column].tolist() == [False, True, True, True]
    assert out.not_compared[:, dob_column].tolist() == [True, False, False, False]
    assert out.present[:, given].all()  # the views have no tag to disagree


@pytest.mark.parametrize(
    "schema", [CHILD, DATE_SALTED, NAME_VIEWS], ids=["shipped", "date_salted", "name_views"]
)
@settings(deadline=None, max_examples=50)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=20),
    st.lists(st.integers(0, 3), min_size=1, max_size=20),
)
def test_salt_comparable_is_tag_equality_on_salted_fields_that_are_not_views(
    schema: Schema, left: list[int], right: list[int]
) -> None:
    n = min(len(left), len(right))
    # one tag column per salt source, each a different function of the drawn values, so the
    # sources agree on different pairs
    sources = len(schema.salt_sources)
    assert sources == (1 if schema is NAME_VIEWS else 2)
    a = np.array(left[:n], dtype=np.uint64).reshape(n, 1)
    b = np.array(right[:n], dtype=np.uint64).reshape(n, 1)
    a2 = np.concatenate([(a + np.uint64(s)) % np.uint64(s + 2) for s in range(sources)], axis=1)
    b2 = np.concatenate([(b * np.uint64(s + 1)) % np.uint64(s + 2) for s in range(sources)], axis=1)
    out = salt_comparable(schema, a2, b2)
    assert out.shape == (n, len(schema.fields))
    for f, spec in enumerate(schema.fields):
        if spec.salt and not spec.view_of:
            s = schema.salt_sources.index(spec.salt)
            expected = a2[:, s] == b2[:, s]
        else:  # unsalted, or a view: no tag to test
            expected = np.ones(n, dtype=bool)
        np.testing.assert_array_equal(out[:, f], expected)


@pytest.mark.parametrize("width", [0, 1, 5], ids=["no tags", "one tag", "a tag per view salt"])
def test_linkage_refuses_salt_tags_of_the_wrong_shape(width: int) -> None:
    batch = encode_records(CHILD, published_keys(), columns_of([child(), child()]))
    assert batch.salt_tags.shape == (2, 2)
    pipeline.check_compatible(CHILD, batch)
    wrong = EncodedBatch(**{**batch.__dict__, "salt_tags": np.zeros((2, width), dtype=np.uint64)})
    with pytest.raises(FilterFormatError, match=r"salt_tags: expected a uint64 array of shape"):
        pipeline.check_compatible(CHILD, wrong)


def test_the_full_name_is_compared_where_the_names_are_in_another_order() -> None:
    # given and family names swapped, the date the same: both names disagree, so the full
    # name (the two joined, whose tokens do not depend on their order) is compared, exact
    swapped = child(given_name=child()["family_name"], family_name=child()["given_name"])
    other = child(given_name="Wiktoria", family_name="Nakamura")
    batch = encode_records(CHILD, published_keys(), columns_of([child(), swapped, other]))
    levels = pipeline.compare_pairs(
        CHILD, batch, batch, np.zeros(2, dtype=np.int64), np.array([1, 2], dtype=np.int64)
    )
    at = {name: CHILD.comparison_names.index(name) for name in CHILD.comparison_names}
    assert levels[0, at["given_name"]] == 0 and levels[0, at["family_name"]] == 0
    assert levels[0, at["full_name"]] == len(CHILD.field("full_name").levels)
    # another child: the full name, where compared at all, is far from exact
    assert levels[1, at["full_name"]] < len(CHILD.field("full_name").levels) - 1
