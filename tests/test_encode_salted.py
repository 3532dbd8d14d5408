"""Tests for salting, views and salt tags: the shipped child schema's golden bytes, the
documented salted-token and salt-tag constructions, keys, missing salts, views (a field salted
several ways, published once per salt), and how a salted field is compared (only where the
salt tags agree; a field in views wherever the tags of any of its views agree) in batch
linkage.

The golden file (tests/golden/shipped_filters.json) is made by tests/golden/make_vectors.py
under the published test key and changes only deliberately (see tests/golden/README.md).
"""

from __future__ import annotations

import dataclasses
import hmac
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import pipeline, scoring
from linkage.compare import salt_comparable
from linkage.encode import (
    EncodedBatch,
    encode_records,
    token_positions,
    tokenise,
)
from linkage.errors import FilterFormatError, SchemaError
from linkage.keys import TEST_SECRET_HEX, KeySet, LinkageSecret, derive_key
from linkage.schema import Hardening, load_schema

GOLDEN = Path(__file__).parent / "golden"
SHIPPED: dict[str, Any] = json.loads((GOLDEN / "shipped_filters.json").read_text("utf-8"))
CHILD = load_schema("child")
SALT = "date_of_birth.value"  # the version 2 salt of names and postcode (a value source)
#: the salts of the shipped views: pairs of date parts (day and month unordered)
DATE_SALTS = ("date_of_birth.year_month", "date_of_birth.year_day", "date_of_birth.day_month")
VIEWS = ("year_month", "year_day", "day_month")
SEX_SALT = "sex.value"
NAMES = ("given_name", "middle_names", "family_name")
#: fields published in views salted with parts of the date of birth (the date of birth itself
#: is salted with sex)
DOB_SALTED = (*NAMES, "postcode")
#: the shipped schema with names and postcode salted with the whole date instead (version 2)
VALUE_SALTED = CHILD.with_salt(SALT, DOB_SALTED)


def published_keys(key_version: int = 1) -> KeySet:
    return KeySet(LinkageSecret.for_tests(), key_version=key_version)


def hex_of(words: np.ndarray[Any, Any]) -> str:
    return bytes(words.astype("<u8").tobytes()).hex()


def columns_of(records: list[dict[str, str | None]]) -> dict[str, list[str | None]]:
    return {f: [r.get(f) for r in records] for f in CHILD.input_names}


def child(**values: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = {
        "given_name": "Olivia",
        "middle_names": "Rose",
        "family_name": "Okafor",
        "date_of_birth": "14/03/2015",
        "sex": "F",
        "postcode": "LS6 2AB",
        "nhs_number": None,
    }
    return base | values


@pytest.fixture(scope="module")
def golden_batch() -> EncodedBatch:
    records = [row["record"] for row in SHIPPED["rows"]]
    return encode_records(CHILD, published_keys(), columns_of(records))


# ----------------------------------------------------------------------------- golden vectors


def test_shipped_schema_salts_name_and_postcode_views_with_date_parts_and_the_date_with_sex() -> (
    None
):
    assert CHILD.version == 3
    assert CHILD.salt_sources == (*DATE_SALTS, SEX_SALT)
    for salt, view in zip(DATE_SALTS, VIEWS, strict=True):
        salted = {f.name for f in CHILD.fields if f.salt == salt}
        assert salted == {f"{name}@{view}" for name in DOB_SALTED}
        for name in DOB_SALTED:
            assert CHILD.field(f"{name}@{view}").view_of == name
    assert {f.name for f in CHILD.fields if f.salt == SEX_SALT} == {"date_of_birth"}
    assert {f.name for f in CHILD.fields if not f.salt} == {"sex", "nhs_number"}
    assert SALT not in CHILD.salt_sources  # no field is salted with the whole date any more
    assert CHILD.input_names == (
        "given_name",
        "middle_names",
        "family_name",
        "date_of_birth",
        "sex",
        "postcode",
        "nhs_number",
    )
    assert dict(zip(CHILD.input_names, CHILD.comparison_salts, strict=True)) == {
        "given_name": "",  # compared under whichever view's salt agrees
        "middle_names": "",
        "family_name": "",
        "date_of_birth": SEX_SALT,
        "sex": "",
        "postcode": "",
        "nhs_number": "",
    }
    assert SHIPPED["schema_fingerprint"] == CHILD.fingerprint()
    assert SHIPPED["salt_sources"] == [*DATE_SALTS, SEX_SALT]
    assert SHIPPED["secret_hex"] == TEST_SECRET_HEX
    assert set(SHIPPED["rows"][0]["field_filters"]) == set(CHILD.field_names)


@pytest.mark.parametrize(
    "expected", SHIPPED["rows"], ids=[f"row{r['row']}" for r in SHIPPED["rows"]]
)
def test_shipped_filters_golden(golden_batch: EncodedBatch, expected: dict[str, Any]) -> None:
    index = expected["row"]
    for f, name in enumerate(CHILD.field_names):
        assert hex_of(golden_batch.field_filters[f][index]) == expected["field_filters"][name], name
        assert bool(golden_batch.field_present[index, f]) == expected["present"][name], name
    assert hex_of(golden_batch.record_filters[index]) == expected["record_filter"]
    assert {
        source: f"{int(golden_batch.salt_tags[index, s]):016x}"
        for s, source in enumerate(CHILD.salt_sources)
    } == expected["salt_tags"]


# ----------------------------------------------------------------------------- constructions


def documented_tag(keys: KeySet, source: str, message: str) -> int:
    """The salt tag as the encode module docstring specifies it, computed independently."""
    key = derive_key(keys.secret, purpose="salt", subject=source, key_version=keys.key_version)
    return int.from_bytes(hmac.digest(key, message.encode("utf-8"), "sha256")[:8], "little") or 1


def test_salt_tag_of_a_value_source_is_the_hmac_of_the_published_filter() -> None:
    keys = published_keys()
    records = [child(), child(date_of_birth="02/11/2009"), child(date_of_birth=None)]
    for schema in (CHILD, VALUE_SALTED):
        batch = encode_records(schema, keys, columns_of(records))
        assert batch.salt_tags.shape == (3, len(schema.salt_sources))
        assert batch.salt_tags.dtype == np.uint64
        value_sources = [s for s in schema.salt_sources if s.endswith(".value")]
        assert value_sources == ([SEX_SALT] if schema is CHILD else [SALT, SEX_SALT])
        for source in value_sources:
            s = schema.salt_sources.index(source)
            column = batch.field_filters[schema.field_names.index(source.split(".")[0])]
            for row in (0, 1):
                tag = documented_tag(keys, source, hex_of(column[row]))
                assert int(batch.salt_tags[row, s]) == tag
        sex = schema.salt_sources.index(SEX_SALT)
        assert batch.salt_tags[0, sex] == batch.salt_tags[1, sex]  # the same sex, unsalted
    no_date = VALUE_SALTED.salt_sources.index(SALT)
    assert int(batch.salt_tags[2, no_date]) == 0  # no date of birth: no tag


def test_salt_tag_of_another_transform_is_the_hmac_of_the_value() -> None:
    keys = published_keys()
    schema = CHILD.with_salt("").with_salt("date_of_birth.year", NAMES)
    records = [child(), child(date_of_birth="02/11/2015"), child(date_of_birth=None)]
    batch = encode_records(schema, keys, columns_of(records))
    source = "date_of_birth.year"
    assert int(batch.salt_tags[0, 0]) == documented_tag(keys, source, "2015")
    assert batch.salt_tags[0, 0] == batch.salt_tags[1, 0]
    assert int(batch.salt_tags[2, 0]) == 0


def test_salt_tags_of_the_shipped_views_are_the_hmac_of_the_date_parts() -> None:
    keys = published_keys()
    records = [
        child(),  # 14 March 2015
        child(date_of_birth="03/05/2015"),  # 3 May: day and month both at most 12
        child(date_of_birth="05/03/2015"),  # 5 March: the same day and month transposed
        child(date_of_birth=None),
    ]
    batch = encode_records(CHILD, keys, columns_of(records))
    expected = {
        0: ("2015-03", "2015-14", "03/14"),
        1: ("2015-05", "2015-03", "03/05"),
        2: ("2015-03", "2015-05", "03/05"),  # day_month is unordered
    }
    for row, parts in expected.items():
        for source, part in zip(DATE_SALTS, parts, strict=True):
            s = CHILD.salt_sources.index(source)
            assert int(batch.salt_tags[row, s]) == documented_tag(keys, source, part)
    day_month = CHILD.salt_sources.index("date_of_birth.day_month")
    assert batch.salt_tags[1, day_month] == batch.salt_tags[2, day_month]
    dates = [CHILD.salt_sources.index(source) for source in DATE_SALTS]
    assert not batch.salt_tags[3, dates].any()  # no date of birth: no tags
    assert batch.salt_tags[3, CHILD.salt_sources.index(SEX_SALT)] != 0  # sex still tagged


def test_a_tag_groups_records_exactly_as_the_salt_fields_filter_does() -> None:
    records = [
        child(),
        child(given_name="Amara"),  # same date and sex: same date filter, same tag
        child(sex="M"),  # same date, other sex: the date filter (salted with sex) differs
        child(date_of_birth="15/03/2015"),
    ]
    for schema, source in ((VALUE_SALTED, SALT), (CHILD, SEX_SALT), (VALUE_SALTED, SEX_SALT)):
        batch = encode_records(schema, published_keys(), columns_of(records))
        salt_field = batch.field_filters[schema.field_names.index(source.split(".")[0])]
        s = schema.salt_sources.index(source)
        groups = set()
        for i in range(4):
            for j in range(4):
                same_filter = bool(np.array_equal(salt_field[i], salt_field[j]))
                assert (batch.salt_tags[i, s] == batch.salt_tags[j, s]) == same_filter, (i, j)
                groups.add(same_filter)
        assert groups == {True, False}  # the records fall in more than one group


def test_salted_field_filter_is_the_union_of_salted_token_positions() -> None:
    keys = published_keys()
    plain_hardening = CHILD.with_hardening(Hardening(), Hardening())  # salts kept
    records = [child(), child(date_of_birth=None)]
    batch = encode_records(plain_hardening, keys, columns_of(records))
    prefixes = {"year_month": "2015-03|", "year_day": "2015-14|", "day_month": "03/14|"}
    for view, prefix in prefixes.items():
        spec = plain_hardening.field(f"given_name@{view}")
        assert spec.salt == f"date_of_birth.{view}"
        f = plain_hardening.field_names.index(spec.name)
        for row, row_prefix in ((0, prefix), (1, "~|")):
            tokens = [row_prefix + t for t in tokenise(spec, "olivia")]
            positions = token_positions(  # under the view's own key
                keys.key("filter", spec.name), tokens, spec.hashes_per_token, spec.filter_bits
            )
            expected = np.zeros(spec.filter_words, dtype=np.uint64)
            for p in positions.ravel().tolist():
                expected[p // 64] |= np.uint64(1) << np.uint64(p % 64)
            np.testing.assert_array_equal(batch.field_filters[f][row], expected)


@pytest.mark.parametrize("schema_name", ["shipped", "unhardened"])
@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("name", DOB_SALTED)
def test_a_view_is_the_single_salt_encoding_under_the_views_name(
    schema_name: str, view: str, name: str
) -> None:
    """A view's filter is the field's filter encoded with that one salt (hardening included),
    with the keys of the view's name: the single-salt schema with the field renamed to the
    view gives the same bytes."""
    schema = CHILD if schema_name == "shipped" else CHILD.with_hardening(Hardening(), Hardening())
    view_name = f"{name}@{view}"
    single = schema.with_salt(f"date_of_birth.{view}", [name])
    assert single.field(name).salt == f"date_of_birth.{view}" and not single.field(name).view_of
    renamed = dataclasses.replace(
        single,
        fields=tuple(
            dataclasses.replace(spec, name=view_name, view_of=name) if spec.name == name else spec
            for spec in single.fields
        ),
        blocking=(),
    )
    records = [
        child(),
        child(date_of_birth="05/03/2015", given_name="Amara", postcode="LS6 3CD"),
        child(date_of_birth=None),
        child(**{name: None}),
    ]
    keys = published_keys()
    want = encode_records(renamed, keys, columns_of(records))
    got = encode_records(schema, keys, columns_of(records))
    f_want = renamed.field_names.index(view_name)
    f_got = schema.field_names.index(view_name)
    np.testing.assert_array_equal(got.field_filters[f_got], want.field_filters[f_want])
    np.testing.assert_array_equal(got.field_present[:, f_got], want.field_present[:, f_want])
    assert got.field_filters[f_got][:3].any(axis=1).all()  # present, so the check has bits
    # and not the other views' bytes: each view has its own salt and keys
    for other in VIEWS:
        if other != view:
            f_other = schema.field_names.index(f"{name}@{other}")
            assert not np.array_equal(got.field_filters[f_got][0], got.field_filters[f_other][0])


def test_tags_depend_on_the_key_and_are_deterministic() -> None:
    columns = columns_of([child(), child(given_name="Amara")])
    first = encode_records(CHILD, published_keys(), columns)
    again = encode_records(CHILD, published_keys(), columns)
    other_version = encode_records(CHILD, published_keys(key_version=2), columns)
    other_secret = encode_records(CHILD, KeySet(LinkageSecret(bytes(range(32)))), columns)
    np.testing.assert_array_equal(first.salt_tags, again.salt_tags)
    assert (first.salt_tags[0] == first.salt_tags[1]).all()  # same date of birth, other name
    assert not np.array_equal(first.salt_tags, other_version.salt_tags)
    assert not np.array_equal(first.salt_tags, other_secret.salt_tags)


def test_same_name_salted_differently_shares_no_filter() -> None:
    batch = encode_records(
        VALUE_SALTED, published_keys(), columns_of([child(), child(date_of_birth="14/04/2015")])
    )
    given = VALUE_SALTED.field_names.index("given_name")
    assert not np.array_equal(batch.field_filters[given][0], batch.field_filters[given][1])


@pytest.mark.parametrize(
    ("other_date", "shared"),
    [
        ("14/03/2015", {"year_month", "year_day", "day_month"}),  # the same date
        ("14/04/2015", {"year_day"}),  # the month wrong
        ("14/03/2016", {"day_month"}),  # the year wrong
        ("15/03/2015", {"year_month"}),  # the day wrong
        ("02/11/2009", set()),  # another date
    ],
)
def test_a_name_view_is_shared_exactly_where_its_date_parts_agree(
    other_date: str, shared: set[str]
) -> None:
    batch = encode_records(
        CHILD, published_keys(), columns_of([child(), child(date_of_birth=other_date)])
    )
    for name in DOB_SALTED:
        for view in VIEWS:
            filters = batch.field_filters[CHILD.field_names.index(f"{name}@{view}")]
            assert np.array_equal(filters[0], filters[1]) == (view in shared), (name, view)
    for source, view in zip(DATE_SALTS, VIEWS, strict=True):
        s = CHILD.salt_sources.index(source)
        assert (batch.salt_tags[0, s] == batch.salt_tags[1, s]) == (view in shared), view


def test_transposed_day_and_month_share_the_day_month_view() -> None:
    batch = encode_records(
        CHILD,
        published_keys(),
        columns_of([child(date_of_birth="05/03/2015"), child(date_of_birth="03/05/2015")]),
    )
    for name in DOB_SALTED:
        for view in VIEWS:
            filters = batch.field_filters[CHILD.field_names.index(f"{name}@{view}")]
            assert np.array_equal(filters[0], filters[1]) == (view == "day_month"), (name, view)


def test_unsalted_schema_has_no_tag_columns() -> None:
    unsalted = CHILD.with_salt("")
    assert unsalted.salt_sources == ()
    batch = encode_records(unsalted, published_keys(), columns_of([child()]))
    assert batch.salt_tags.shape == (1, 0)
    assert unsalted.fingerprint() != CHILD.fingerprint()


def test_with_salt_validates_like_a_parsed_file() -> None:
    with pytest.raises(SchemaError, match="salt"):
        CHILD.with_salt("postcode.year_month", ["given_name"])
    with pytest.raises(SchemaError, match="views, which cannot be a salt"):
        CHILD.with_salt("postcode.value", ["nhs_number"])  # postcode is published in views
    with pytest.raises(SchemaError, match="blocking parts"):
        CHILD.with_salt("sex.filter", ["given_name"])
    with pytest.raises(SchemaError, match="a list needs two or more salts"):
        CHILD.with_salt([SEX_SALT], ["nhs_number"])
    resalted = CHILD.with_salt(list(DATE_SALTS), DOB_SALTED).with_salt(SEX_SALT, ["date_of_birth"])
    assert resalted == CHILD
    assert resalted.fingerprint() == CHILD.fingerprint()
    unsalted = CHILD.with_salt("")
    assert unsalted.salt_sources == () and unsalted.input_names == unsalted.field_names
    assert unsalted.fingerprint() != CHILD.fingerprint()


def test_with_salt_maps_parts_naming_views_that_no_longer_exist_to_the_fields_filter() -> None:
    # one salt instead of three: the 9 per-view rules become the 3 pair rules on the fields'
    # own filters (rules that come out equal are kept once)
    assert len(CHILD.blocking) == 11
    assert [(rule.name, rule.parts) for rule in VALUE_SALTED.blocking] == [
        ("date_of_birth", (("date_of_birth", "filter"),)),
        ("nhs_number", (("nhs_number", "filter"),)),
        (
            "given_name+family_name@year_month",
            (("given_name", "filter"), ("family_name", "filter")),
        ),
        ("given_name+postcode@year_month", (("given_name", "filter"), ("postcode", "filter"))),
        ("family_name+postcode@year_month", (("family_name", "filter"), ("postcode", "filter"))),
    ]
    assert VALUE_SALTED.field_names == VALUE_SALTED.input_names == CHILD.input_names
    assert {f.name for f in VALUE_SALTED.fields if f.salt == SALT} == set(DOB_SALTED)
    # fewer views: parts naming a view that remains keep it
    two = CHILD.with_salt(list(DATE_SALTS[:2]), DOB_SALTED)
    assert two.salt_sources == (*DATE_SALTS[:2], SEX_SALT)
    assert [rule.name for rule in two.blocking] == [
        rule.name for rule in CHILD.blocking if not rule.name.endswith("@day_month")
    ]
    # a field whose rules name its plain filter cannot be split into views without new rules
    with pytest.raises(SchemaError, match="is published in views; a filter part names one"):
        VALUE_SALTED.with_salt(list(DATE_SALTS), DOB_SALTED)


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


def test_a_name_in_views_is_compared_while_any_views_salt_agrees() -> None:
    records = [
        child(),
        child(date_of_birth="14/03/2016"),  # same child, the birth year wrong: day_month agrees
        child(date_of_birth="15/03/2015"),  # the day wrong: year_month agrees
        child(date_of_birth="02/11/2009"),  # no part pair agrees
        child(given_name="Zainab", family_name="Walsh", date_of_birth="14/03/2016"),
        child(date_of_birth=None),  # the date missing on one side: every view's salt differs
    ]
    batch = encode_records(CHILD, published_keys(), columns_of(records))
    right = np.arange(1, len(records), dtype=np.int64)
    left = np.zeros_like(right)
    levels = pipeline.compare_pairs(CHILD, batch, batch, left, right)
    assert levels.shape == (len(right), len(CHILD.input_names))
    compared = [CHILD.input_names.index(n) for n in DOB_SALTED]
    top = [len(CHILD.field(n).levels) for n in DOB_SALTED]
    assert levels[0, compared].tolist() == top  # one part wrong: still compared, and agree
    assert levels[1, compared].tolist() == top
    assert (levels[2, compared] == scoring.MISSING_LEVEL).all()  # not compared, not disagreeing
    given, family = (CHILD.input_names.index(n) for n in ("given_name", "family_name"))
    assert levels[3, given] == 0 and levels[3, family] == 0  # compared, and disagree
    assert (levels[4, compared] == scoring.MISSING_LEVEL).all()
    sex = CHILD.input_names.index("sex")
    assert (levels[:, sex] != scoring.MISSING_LEVEL).all()  # unsalted fields are compared


@settings(deadline=None, max_examples=50)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=20),
    st.lists(st.integers(0, 3), min_size=1, max_size=20),
)
def test_salt_comparable_is_tag_equality_on_salted_fields_only(
    left: list[int], right: list[int]
) -> None:
    n = min(len(left), len(right))
    # one tag column per salt source, each a different function of the drawn values, so the
    # sources agree on different pairs
    sources = len(CHILD.salt_sources)
    assert sources == 4
    a = np.array(left[:n], dtype=np.uint64).reshape(n, 1)
    b = np.array(right[:n], dtype=np.uint64).reshape(n, 1)
    a2 = np.concatenate([(a + np.uint64(s)) % np.uint64(s + 2) for s in range(sources)], axis=1)
    b2 = np.concatenate([(b * np.uint64(s + 1)) % np.uint64(s + 2) for s in range(sources)], axis=1)
    out = salt_comparable(CHILD, a2, b2)
    assert out.shape == (n, len(CHILD.fields))
    for f, spec in enumerate(CHILD.fields):
        if spec.salt:
            s = CHILD.salt_sources.index(spec.salt)
            expected = a2[:, s] == b2[:, s]
        else:
            expected = np.ones(n, dtype=bool)
        np.testing.assert_array_equal(out[:, f], expected)


def test_linkage_refuses_salt_tags_of_the_wrong_shape() -> None:
    batch = encode_records(CHILD, published_keys(), columns_of([child(), child()]))
    wrong = EncodedBatch(**{**batch.__dict__, "salt_tags": np.zeros((2, 1), dtype=np.uint64)})
    with pytest.raises(FilterFormatError, match=r"salt_tags: expected a uint64 array of shape"):
        pipeline.check_compatible(CHILD, wrong)
