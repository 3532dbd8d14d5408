"""Tests for salting, views and salt tags: the shipped child schema's golden bytes, the
documented salted-token and salt-tag constructions, keys, missing salts, views (a field salted
several ways, published once per salt, with no salt tag), and how a salted field is compared
in batch linkage (a field with a salt of its own only where the salt tags agree; a field in
views where both records hold it and both have the date of birth or both lack it, at the best
of its views; a combined field only where none of the fields it combines is). The shipped
schema salts names and postcode with the whole date and publishes their combined fallbacks in
views; NAME_VIEWS puts the names and postcode themselves in views, for the view machinery.

The golden file (tests/linkage/golden/shipped_filters.json) is made by
tests/linkage/golden/make_vectors.py under the published test key and changes only
deliberately (see tests/linkage/golden/README.md).
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
from linkage.compare import compare_fields, not_compared, salt_comparable
from linkage.encode import (
    EncodedBatch,
    encode_records,
    token_positions,
    tokenise,
)
from linkage.errors import FilterFormatError, SchemaError
from linkage.keys import TEST_SECRET_HEX, KeySet, LinkageSecret, derive_key
from linkage.schema import Hardening, Schema, load_schema
from tests.helpers.schemas import DATE_SALTED

GOLDEN = Path(__file__).parent / "golden"
SHIPPED: dict[str, Any] = json.loads((GOLDEN / "shipped_filters.json").read_text("utf-8"))
CHILD = load_schema("child")
SALT = "date_of_birth.value"  # the salt of names and postcode (a value source)
#: the salts of the shipped views: pairs of date parts (day and month unordered)
DATE_SALTS = ("date_of_birth.year_month", "date_of_birth.year_day", "date_of_birth.day_month")
VIEWS = ("year_month", "year_day", "day_month")
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


def test_shipped_schema_salts_names_with_the_date_and_their_fallbacks_with_date_parts() -> None:
    assert CHILD.version == 3
    # two salt tags, of the date of birth and of sex; the views publish none (a tag of a pair
    # of date parts would group records by it, a grouping their filters do not show)
    assert CHILD.salt_sources == (SALT, SEX_SALT)
    assert {f.name for f in CHILD.fields if f.salt == SALT} == set(DOB_SALTED)
    views = [f for f in CHILD.fields if f.view_of]
    assert len(views) == len(DATE_SALTS) * len(COMBINED)
    assert not {f.salt for f in views} & set(CHILD.salt_sources)
    for salt, view in zip(DATE_SALTS, VIEWS, strict=True):
        salted = {f.name for f in CHILD.fields if f.salt == salt}
        assert salted == {f"{name}@{view}" for name in COMBINED}
        for name in COMBINED:
            assert CHILD.field(f"{name}@{view}").view_of == name
    assert CHILD.field("full_name").combines == ("given_name", "family_name")
    assert {f.name for f in CHILD.fields if f.salt == SEX_SALT} == {"date_of_birth"}
    assert {f.name for f in CHILD.fields if not f.salt} == {"sex", "nhs_number"}
    assert CHILD.input_names == (
        "given_name",
        "middle_names",
        "family_name",
        "date_of_birth",
        "sex",
        "postcode",
        "nhs_number",
    )
    assert CHILD.comparison_names == (*CHILD.input_names, *COMBINED)
    assert dict(zip(CHILD.comparison_names, CHILD.comparison_salts, strict=True)) == {
        "given_name": SALT,
        "middle_names": SALT,
        "family_name": SALT,
        "date_of_birth": SEX_SALT,
        "sex": "",
        "postcode": SALT,
        "nhs_number": "",
        "full_name": "",  # compared under whichever view's salt agrees
    }
    assert SHIPPED["schema_fingerprint"] == CHILD.fingerprint()
    assert SHIPPED["salt_sources"] == [SALT, SEX_SALT]
    assert all(set(row["salt_tags"]) == {SALT, SEX_SALT} for row in SHIPPED["rows"])
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
    """The salt tag as EncodedBatch's docstring specifies it, computed independently."""
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
        assert value_sources == [SALT, SEX_SALT]
        for source in value_sources:
            s = schema.salt_sources.index(source)
            column = batch.field_filters[schema.field_names.index(source.split(".")[0])]
            for row in (0, 1):
                tag = documented_tag(keys, source, hex_of(column[row]))
                assert int(batch.salt_tags[row, s]) == tag
        sex = schema.salt_sources.index(SEX_SALT)
        assert batch.salt_tags[0, sex] == batch.salt_tags[1, sex]  # the same sex, unsalted
    for schema in (CHILD, VALUE_SALTED):
        batch = encode_records(schema, keys, columns_of(records))
        no_date = schema.salt_sources.index(SALT)
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


def test_the_shipped_views_publish_no_salt_tag() -> None:
    records = [child(), child(date_of_birth="03/05/2015"), child(date_of_birth=None)]
    for schema in (CHILD, NAME_VIEWS):
        batch = encode_records(schema, published_keys(), columns_of(records))
        # the tags of the value sources alone: none of a pair of date parts
        assert all(source.endswith(".value") for source in schema.salt_sources)
        assert batch.salt_tags.shape == (3, len(schema.salt_sources))
        sex = schema.field_names.index("sex")
        s = schema.salt_sources.index(SEX_SALT)
        tag = documented_tag(published_keys(), SEX_SALT, hex_of(batch.field_filters[sex][0]))
        assert batch.salt_tags[:, s].tolist() == [tag] * 3  # the same sex, whatever the date
    assert NAME_VIEWS.salt_sources == (SEX_SALT,)


@pytest.mark.parametrize(
    ("transform", "parts"),
    [
        ("year_month", ("2015-03", "2015-05", "2015-03")),
        ("year_day", ("2015-14", "2015-03", "2015-05")),
        ("day_month", ("03/14", "03/05", "03/05")),  # day_month is unordered
    ],
)
def test_salt_tag_of_a_date_part_transform_is_the_hmac_of_the_parts(
    transform: str, parts: tuple[str, str, str]
) -> None:
    # the transforms of the views as the single salt of fields that are not views (so tagged)
    keys = published_keys()
    source = f"date_of_birth.{transform}"
    schema = CHILD.with_salt("").with_salt(source, NAMES)
    assert schema.salt_sources == (source,)
    records = [
        child(),  # 14 March 2015
        child(date_of_birth="03/05/2015"),  # 3 May: day and month both at most 12
        child(date_of_birth="05/03/2015"),  # 5 March: the same day and month transposed
        child(date_of_birth=None),
    ]
    batch = encode_records(schema, keys, columns_of(records))
    for row, part in enumerate(parts):
        assert int(batch.salt_tags[row, 0]) == documented_tag(keys, source, part), row
    assert int(batch.salt_tags[3, 0]) == 0  # no date of birth: no tag


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
    # the views of the full name: its value is the given and family names joined, normalised
    # as a name, each token prefixed with the view's date parts
    keys = published_keys()
    plain_hardening = CHILD.with_hardening(Hardening(), Hardening())  # salts kept
    assert not any(spec.hardening.enabled for spec in plain_hardening.fields)
    records = [child(), child(date_of_birth=None)]
    batch = encode_records(plain_hardening, keys, columns_of(records))
    prefixes = {"year_month": "2015-03|", "year_day": "2015-14|", "day_month": "03/14|"}
    for view, prefix in prefixes.items():
        spec = plain_hardening.field(f"full_name@{view}")
        assert spec.salt == f"date_of_birth.{view}"
        f = plain_hardening.field_names.index(spec.name)
        for row, row_prefix in ((0, prefix), (1, "~|")):
            tokens = [row_prefix + t for t in tokenise(spec, "olivia okafor")]
            positions = token_positions(  # under the view's own key
                keys.key("filter", spec.name), tokens, spec.hashes_per_token, spec.filter_bits
            )
            expected = np.zeros(spec.filter_words, dtype=np.uint64)
            for p in positions.ravel().tolist():
                expected[p // 64] |= np.uint64(1) << np.uint64(p % 64)
            np.testing.assert_array_equal(batch.field_filters[f][row], expected)


_VIEW_CASES = [
    *((schema, name) for schema in ("shipped", "unhardened") for name in COMBINED),
    *(("name_views", name) for name in DOB_SALTED),
]


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize(("schema_name", "name"), _VIEW_CASES)
def test_a_view_is_the_single_salt_encoding_under_the_views_name(
    schema_name: str, view: str, name: str
) -> None:
    """A view's filter is the field's filter encoded with that one salt (hardening included),
    with the keys of the view's name: the single-salt schema with the field renamed to the
    view gives the same bytes."""
    schema = {
        "shipped": CHILD,
        "unhardened": CHILD.with_hardening(Hardening(), Hardening()),
        "name_views": NAME_VIEWS,
    }[schema_name]
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
        child(**{part: None for part in (schema.field(name).combines or (name,))}),
    ]
    keys = published_keys()
    want = encode_records(renamed, keys, columns_of(records))
    got = encode_records(schema, keys, columns_of(records))
    f_want = renamed.field_names.index(view_name)
    f_got = schema.field_names.index(view_name)
    np.testing.assert_array_equal(got.field_filters[f_got], want.field_filters[f_want])
    np.testing.assert_array_equal(got.field_present[:, f_got], want.field_present[:, f_want])
    assert got.field_filters[f_got][:3].any(axis=1).all()  # present, so the check has bits
    assert not got.field_present[3, f_got]  # its value missing: the view is missing
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
@pytest.mark.parametrize("schema", [CHILD, NAME_VIEWS], ids=["shipped", "name_views"])
def test_a_view_is_shared_exactly_where_its_date_parts_agree(
    schema: Schema, other_date: str, shared: set[str]
) -> None:
    batch = encode_records(
        schema, published_keys(), columns_of([child(), child(date_of_birth=other_date)])
    )
    viewed = sorted({spec.view_of for spec in schema.fields if spec.view_of})
    assert viewed == sorted(COMBINED if schema is CHILD else DOB_SALTED)
    for name in viewed:
        for view in VIEWS:
            filters = batch.field_filters[schema.field_names.index(f"{name}@{view}")]
            assert np.array_equal(filters[0], filters[1]) == (view in shared), (name, view)
    same_date = len(shared) == len(VIEWS)
    # the fields salted with the whole date share a filter only under the same date
    for name in (n for n in DOB_SALTED if n in schema.field_names):
        filters = batch.field_filters[schema.field_names.index(name)]
        assert np.array_equal(filters[0], filters[1]) == same_date, name
    # the tags tell the records apart by their dates only as the date's filter does: the sex
    # tag is shared, the date's (where published) only under the same date
    sex = schema.salt_sources.index(SEX_SALT)
    assert batch.salt_tags[0, sex] == batch.salt_tags[1, sex]
    if SALT in schema.salt_sources:
        date = schema.salt_sources.index(SALT)
        assert (batch.salt_tags[0, date] == batch.salt_tags[1, date]) == same_date


@pytest.mark.parametrize("schema", [CHILD, NAME_VIEWS], ids=["shipped", "name_views"])
def test_transposed_day_and_month_share_the_day_month_view(schema: Schema) -> None:
    batch = encode_records(
        schema,
        published_keys(),
        columns_of([child(date_of_birth="05/03/2015"), child(date_of_birth="03/05/2015")]),
    )
    viewed = {spec.view_of for spec in schema.fields if spec.view_of}
    assert viewed
    for name in viewed:
        for view in VIEWS:
            filters = batch.field_filters[schema.field_names.index(f"{name}@{view}")]
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
        CHILD.with_salt("full_name.value", ["nhs_number"])  # full_name is published in views
    with pytest.raises(SchemaError, match="blocking parts"):
        CHILD.with_salt("sex.filter", ["given_name"])
    with pytest.raises(SchemaError, match="a list needs two or more salts"):
        CHILD.with_salt([SEX_SALT], ["nhs_number"])
    resalted = (
        CHILD.with_salt(list(DATE_SALTS), COMBINED)
        .with_salt(SEX_SALT, ["date_of_birth"])
        .with_salt(SALT, DOB_SALTED)
    )
    assert resalted == CHILD
    assert resalted.fingerprint() == CHILD.fingerprint()
    unsalted = CHILD.with_salt("")
    assert unsalted.salt_sources == ()
    assert unsalted.field_names == unsalted.comparison_names == (*CHILD.input_names, *COMBINED)
    assert unsalted.fingerprint() != CHILD.fingerprint()


def test_with_salt_maps_parts_naming_views_that_no_longer_exist_to_the_fields_filter() -> None:
    # one salt instead of three on the combined fields: the 3 per-view rules of each become
    # one rule on the field's own filter (rules that come out equal are kept once)
    assert len(CHILD.blocking) == 8
    single = CHILD.with_salt(SALT, COMBINED)
    assert [(rule.name, rule.parts) for rule in single.blocking] == [
        ("date_of_birth", (("date_of_birth", "filter"),)),
        ("nhs_number", (("nhs_number", "filter"),)),
        ("given_name", (("given_name", "filter"),)),
        ("family_name", (("family_name", "filter"),)),
        ("postcode", (("postcode", "filter"),)),
        ("full_name@year_month", (("full_name", "filter"),)),
    ]
    assert single.field_names == single.comparison_names == (*CHILD.input_names, *COMBINED)
    assert {f.name for f in single.fields if f.salt == SALT} == {*DOB_SALTED, *COMBINED}
    # fewer views: parts naming a view that remains keep it
    two = CHILD.with_salt(list(DATE_SALTS[:2]), COMBINED)
    assert two.salt_sources == (SALT, SEX_SALT)  # views publish no salt tag
    assert [f.salt for f in two.fields if f.view_of == "full_name"] == list(DATE_SALTS[:2])
    assert [rule.name for rule in two.blocking] == [
        rule.name for rule in CHILD.blocking if not rule.name.endswith("@day_month")
    ]


def test_with_salt_makes_a_rule_per_view_of_a_part_naming_a_now_viewed_fields_filter() -> None:
    # names and postcode into views: each rule on a field's own filter, once per view
    assert [rule.name for rule in VALUE_SALTED.blocking] == [
        "date_of_birth",
        "nhs_number",
        "given_name",
        "family_name",
        "postcode",
    ]
    assert [(rule.name, rule.parts) for rule in NAME_VIEWS.blocking] == [
        ("date_of_birth", (("date_of_birth", "filter"),)),
        ("nhs_number", (("nhs_number", "filter"),)),
        *(
            (f"{name}@{view}", ((f"{name}@{view}", "filter"),))
            for name in ("given_name", "family_name", "postcode")
            for view in VIEWS
        ),
    ]
    assert NAME_VIEWS.comparison_names == NAME_VIEWS.input_names == CHILD.input_names
    # and back: one salt again gives the rules on the fields' own filters
    back = NAME_VIEWS.with_salt(SALT, DOB_SALTED)
    assert [(rule.name, rule.parts) for rule in back.blocking] == [
        ("date_of_birth", (("date_of_birth", "filter"),)),
        ("nhs_number", (("nhs_number", "filter"),)),
        *(
            (f"{name}@year_month", ((name, "filter"),))
            for name in ("given_name", "family_name", "postcode")
        ),
    ]


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
