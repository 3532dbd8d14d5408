"""Tests for salting, views and salt tags: the shipped child schema's golden bytes, the
documented salted-token and salt-tag constructions, keys, missing salts, and views (a field
salted several ways, published once per salt, with no salt tag). The shipped schema salts names
and postcode with the whole date and publishes their combined fallbacks in views; NAME_VIEWS
puts the names and postcode themselves in views, for the view machinery. How a salted field is
compared: tests/linkage/test_compare_salted.py."""

from __future__ import annotations

import dataclasses
import hmac
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from linkage.encode import (
    EncodedBatch,
    encode_records,
    token_positions,
    tokenise,
)
from linkage.errors import SchemaError
from linkage.keys import TEST_SECRET_HEX, KeySet, LinkageSecret, derive_key
from linkage.schema import Hardening, Schema, load_schema
from tests.helpers.records import child, columns_of, published_keys
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


def hex_of(words: np.ndarray[Any, Any]) -> str:
    return bytes(words.astype("<u8").tobytes()).hex()


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
