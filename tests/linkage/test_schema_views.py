"""Tests for linkage.schema: generated schemas round trip; views of a field salted several
ways; combined fields."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import replace as dataclasses_replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.schema import (
    BLOCKING_TRANSFORMS,
    FIELD_KINDS,
    PHONETIC_CODES,
    Schema,
    parse_schema,
    schema_from_dict,
)
from tests.helpers.schemas import problems_of

# ---------------------------------------------------------------------------------------------
# round trip of generated schemas (Hypothesis)

_NAME_KINDS = ("name", "family_name", "text")
_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)  # non-BMP and controls too
_OPTIONAL = st.booleans()


def _refs_to(field: str, kind: str, *, salt: bool = False) -> st.SearchStrategy[str]:
    """``"<field>.<transform>"`` references to ``field`` with a transform its kind allows (a
    salt: any but ``filter``)."""
    allowed = BLOCKING_TRANSFORMS[kind] - ({"filter"} if salt else set())
    return st.sampled_from([f"{field}.{t}" for t in sorted(allowed)])


@st.composite
def schema_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid schema mapping; each optional key is either written out or left to its default."""
    names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
            min_size=1,
            max_size=5,
            unique=True,
        )
    )
    kinds = {n: draw(st.sampled_from(FIELD_KINDS)) for n in names}
    fields: list[dict[str, Any]] = []
    for name in names:
        kind = kinds[name]
        spec: dict[str, Any] = {"name": name, "kind": kind}
        tokenisers = ["qgram", "exact"] + (["date"] if kind == "date" else [])
        tokenisers += ["postcode"] if kind == "postcode" else []
        options: dict[str, Any] = {
            "tokeniser": st.sampled_from(tokenisers),
            "q": st.integers(1, 4),
            "padded": st.booleans(),
            "filter_bits": st.integers(1, 128).map(lambda w: 64 * w),
            "hashes_per_token": st.integers(1, 64),
            "record_hashes_per_token": st.integers(0, 64),
            "levels": st.lists(
                st.floats(0, 1, exclude_min=True), min_size=1, max_size=5, unique=True
            ).map(lambda xs: sorted(xs, reverse=True)),
        }
        if kind in _NAME_KINDS:
            options["phonetic"] = st.lists(st.sampled_from(PHONETIC_CODES), unique=True)
        others = [n for n in names if n != name]
        if others:
            options["salt"] = st.one_of([_refs_to(o, kinds[o], salt=True) for o in others])
        for key, strategy in options.items():
            if draw(_OPTIONAL):
                spec[key] = draw(strategy)
        fields.append(spec)
    refs = st.one_of([_refs_to(n, kinds[n]) for n in names])
    rule_names = draw(st.lists(_TEXT.filter(lambda s: s and "/" not in s), max_size=3, unique=True))
    rules = [{"name": r, "parts": draw(st.lists(refs, min_size=1, max_size=3))} for r in rule_names]
    head: dict[str, Any] = {
        "name": draw(_TEXT.filter(bool)),
        "version": draw(st.integers(1, 2**31)),
    }
    head_options = {
        "day_first": st.booleans(),
        "record_filter_bits": st.integers(1, 64).map(lambda w: 64 * w),
        "description": _TEXT,
    }
    for key, strategy in head_options.items():
        if draw(_OPTIONAL):
            head[key] = draw(strategy)
    data: dict[str, Any] = {"schema": head, "field": fields}
    if rules:
        data["blocking"] = rules
    if draw(_OPTIONAL):
        data["hardening"] = {
            "balance": draw(st.booleans()),
            "xor_fold": draw(st.booleans()),
            "blip_epsilon": draw(st.floats(0, 20, allow_nan=False)),
            "diffusion_t": draw(st.integers(0, 64)),
        }
        hardening = data["hardening"]
        if hardening["xor_fold"] and not hardening["balance"]:
            # folding needs an even number of 64-bit words
            head["record_filter_bits"] = draw(st.integers(1, 32).map(lambda w: 128 * w))
    return data


@settings(deadline=None, derandomize=True, max_examples=150)
@given(schema_dicts())
def test_generated_schemas_round_trip(data: dict[str, Any]) -> None:
    schema = schema_from_dict(data)
    assert isinstance(schema, Schema)
    again = parse_schema(schema.to_toml())
    assert again == schema
    assert again.fingerprint() == schema.fingerprint()
    assert schema_from_dict(schema.to_dict()) == schema
    assert schema_from_dict(copy.deepcopy(data)).fingerprint() == schema.fingerprint()


# ---------------------------------------------------------------------------------------------
# views: a field salted several ways

_VIEWS_TOML = """
[schema]
name = "views"
version = 1

[[field]]
name = "given"
kind = "name"
salt = ["dob.year_month", "dob.day_month"]

[[field]]
name = "dob"
kind = "date"
salt = "sex.value"

[[field]]
name = "sex"
kind = "sex"

[[blocking]]
name = "given@year_month"
parts = ["given@year_month.filter", "dob.year"]

[[blocking]]
name = "sex"
parts = ["sex.filter"]
"""


def test_a_salt_list_publishes_one_view_per_salt() -> None:
    schema = parse_schema(_VIEWS_TOML)
    assert schema.field_names == ("given@year_month", "given@day_month", "dob", "sex")
    assert schema.input_names == ("given", "dob", "sex")
    assert [(f.salt, f.view_of) for f in schema.fields] == [
        ("dob.year_month", "given"),
        ("dob.day_month", "given"),
        ("sex.value", ""),
        ("", ""),
    ]
    first, second = schema.fields[:2]
    assert dataclasses_replace(first, name=second.name, salt=second.salt) == second
    assert schema.field("given") is first and schema.field("given@day_month") is second
    assert schema.comparison_salts == ("", "sex.value", "")
    assert schema.salt_sources == ("sex.value",)  # the views publish no salt tag
    assert schema.blocking[0].parts == (("given@year_month", "filter"), ("dob", "year"))
    with pytest.raises(KeyError):
        schema.field("given@year")


def test_a_schema_with_views_round_trips_and_keeps_its_fingerprint() -> None:
    schema = parse_schema(_VIEWS_TOML)
    assert schema.to_dict()["field"][0]["salt"] == ["dob.year_month", "dob.day_month"]
    assert [f["name"] for f in schema.to_dict()["field"]] == ["given", "dob", "sex"]
    again = parse_schema(schema.to_toml())
    assert again == schema and again.fingerprint() == schema.fingerprint()
    assert schema_from_dict(schema.to_dict()) == schema
    assert parse_schema(_VIEWS_TOML).fingerprint() == schema.fingerprint()  # stable
    # the views' order is part of the schema (it orders the published fields)
    swapped = _VIEWS_TOML.replace(
        '["dob.year_month", "dob.day_month"]', '["dob.day_month", "dob.year_month"]'
    )
    assert parse_schema(swapped).fingerprint() != schema.fingerprint()
    # one salt instead of the list is another schema
    single = schema.with_salt("dob.year_month", ["given"])
    assert single.field_names == ("given", "dob", "sex")
    assert single.blocking[0].parts == (("given", "filter"), ("dob", "year"))
    assert single.fingerprint() != schema.fingerprint()


_ONE_SALT = 'field[0].salt: a list needs two or more salts (one salt: "<field>.<x>")'
_SAME_TRANSFORM = "field[0].salt: the salts of a list need different transforms"


@pytest.mark.parametrize(
    ("salt", "problem"),
    [
        (["dob.year_month"], _ONE_SALT),
        ([], _ONE_SALT),
        (["dob.year_month", "dob.year_month"], _SAME_TRANSFORM),
        (["dob.value", "sex.value"], _SAME_TRANSFORM),  # views are named by the transform
        (["dob.year_month", 3], "field[0].salt: expected a string or a list of strings"),
        (7, "field[0].salt: expected a string or a list of strings"),
    ],
)  # fmt: skip
def test_bad_salt_lists_are_reported_by_position(salt: Any, problem: str) -> None:
    data = tomllib.loads(_VIEWS_TOML)
    data["field"][0]["salt"] = salt
    data["blocking"] = data["blocking"][1:]  # no part naming a view
    assert problems_of(data) == (problem,)


def test_a_filter_part_naming_a_viewed_fields_plain_name_is_an_error() -> None:
    data = tomllib.loads(_VIEWS_TOML)
    data["blocking"][0]["parts"] = ["dob.year", "given.filter"]
    problems = problems_of(data)
    assert problems == (
        "blocking[0].parts[1]: field[0] is published in views; a filter part names one of "
        'them ("<field>@<transform>.filter")',
    )
    # a value part of the plain name is fine: the views share the value
    data["blocking"][0]["parts"] = ["dob.year", "given.soundex"]
    assert schema_from_dict(data).blocking[0].parts == (("dob", "year"), ("given", "soundex"))


def test_a_view_that_does_not_exist_is_an_unknown_field() -> None:
    data = tomllib.loads(_VIEWS_TOML)
    data["blocking"][0]["parts"] = ["given@year.filter"]
    assert problems_of(data) == (
        'blocking[0].parts[0]: the part before "." is not a field of this schema, expected one '
        'of: given, dob, sex, given@year_month, given@day_month (did you mean "given@year_month"?)',
    )


def test_a_viewed_field_cannot_be_a_salt() -> None:
    data = tomllib.loads(_VIEWS_TOML)
    data["field"][2]["salt"] = "given.initial"
    assert problems_of(data) == (
        "field[2].salt: names a field published in views, which cannot be a salt",
    )
    data["field"][2]["salt"] = "given@year_month.value"  # a view is not a field to salt with
    (problem,) = problems_of(data)
    assert problem.startswith('field[2].salt: the part before "." is not a field of this schema')
    assert "given@year_month" not in problem.split("expected one of:")[1]


def test_view_problems_never_echo_the_file() -> None:
    data = tomllib.loads(_VIEWS_TOML)
    canary = "Zebedee"
    data["field"][0]["salt"] = [f"{canary}.year_month", f"dob.{canary}"]
    data["field"][2]["salt"] = [f"{canary}.value"]
    data["blocking"][0]["parts"] = [f"{canary}@x.filter", f"given@{canary}.filter"]
    problems = problems_of(data)
    assert len(problems) == 5
    assert all(canary not in p and canary.lower() not in p for p in problems)
    # a salt that does not resolve makes no view (whose name would hold the file's text), and
    # a list that is not valid is one problem and makes no views: no problem follows from it
    fields = 'the part before "." is not a field of this schema, expected one of: given, dob, sex'
    assert problems[-2:] == (f"blocking[0].parts[0]: {fields}", f"blocking[0].parts[1]: {fields}")
    assert not any("published in views" in p for p in problems)


# ---------------------------------------------------------------------------------------------
# combined fields

_COMBINED_TOML = """
[schema]
name = "combined"
version = 1

[[field]]
name = "given"
kind = "name"

[[field]]
name = "family"
kind = "family_name"

[[field]]
name = "dob"
kind = "date"

[[field]]
name = "full"
kind = "name"
combines = ["given", "family"]
salt = "dob.year"

[[blocking]]
name = "full"
parts = ["full.filter"]
"""


def test_a_schema_with_combines_round_trips_and_fingerprints_them() -> None:
    schema = parse_schema(_COMBINED_TOML)
    assert schema.field("full").combines == ("given", "family")
    assert schema.input_names == ("given", "family", "dob")
    assert schema.comparison_names == ("given", "family", "dob", "full")
    assert schema.name == "combined"
    assert parse_schema(schema.to_toml()) == schema
    assert schema_from_dict(schema.to_dict()) == schema
    assert schema.to_dict()["field"][3]["combines"] == ["given", "family"]
    # an input field writes no combines key, so schemas without them keep their fingerprints
    assert all("combines" not in entry for entry in schema.to_dict()["field"][:3])
    data = schema.to_dict()
    data["field"][3]["combines"] = ["family", "given"]  # the order of the join is the contract
    reordered = schema_from_dict(data)
    assert reordered != schema and reordered.fingerprint() != schema.fingerprint()


@pytest.mark.parametrize(
    ("combines", "problem"),
    [
        ("given", "field[3].combines: expected an array, got a string"),
        (["given", 3], "field[3].combines[1]: expected a string, got an integer"),
        (["given", "given"], "field[3].combines: expected a list of different field names"),
        (["given", "Zebedee"], "field[3].combines[1]: {earlier}"),  # not a field
        (["full"], "field[3].combines[0]: {earlier}"),  # itself
        (["given", "later"], "field[3].combines[1]: {earlier}"),  # a later field
        (["given", "other"], "field[3].combines[1]: {earlier}"),  # a combined field
    ],
)
def test_combines_problems_are_reported_by_position_without_the_value(
    combines: Any, problem: str
) -> None:
    data = tomllib.loads(_COMBINED_TOML)
    data["field"][3]["combines"] = combines
    data["field"].append({"name": "later", "kind": "name"})
    if "other" in combines:  # a combined field before this one: this one moves to field[4]
        data["field"].insert(3, {"name": "other", "kind": "name", "combines": ["family"]})
        problem = problem.replace("field[3]", "field[4]")
    earlier = "expected an earlier field of this schema that combines none itself"
    assert problems_of(data) == (problem.replace("{earlier}", earlier),)
    assert not any("Zebedee" in p or "zebedee" in p for p in problems_of(data))
