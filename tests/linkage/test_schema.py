"""Tests for linkage.schema: shipped schemas, round trips, the fingerprint, the date range."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.encode import encode_records
from linkage.errors import SchemaError
from linkage.keys import KeySet, LinkageSecret
from linkage.normalise import DATE_RANGE, NORMALISATION_VERSION
from linkage.schema import (
    DEFAULT_TOKENISER,
    ENCODING_VERSION,
    FieldSpec,
    Hardening,
    default_child_schema,
    load_schema,
    parse_schema,
    schema_from_dict,
    shipped_schema_names,
    shipped_schema_text,
)
from tests.helpers.schemas import (
    DATE_VIEWS,
    VIEWED_FIELDS,
    child_dict,
    field_index,
    mutated,
    problems_of,
    set_option,
)

FINGERPRINT_PATH = Path(__file__).parent / "golden" / "fingerprint.json"
GOLDEN_FINGERPRINTS: dict[str, str] = json.loads(FINGERPRINT_PATH.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# shipped schemas


@pytest.mark.parametrize("name", shipped_schema_names())
def test_shipped_schema_parses_and_round_trips(name: str) -> None:
    schema = load_schema(name)
    assert schema.fields and schema.blocking
    assert parse_schema(schema.to_toml()) == schema
    assert schema_from_dict(schema.to_dict()) == schema
    assert parse_schema(shipped_schema_text(name)) == schema
    assert len(set(schema.field_names)) == len(schema.fields)


def test_child_schema_has_the_expected_fields() -> None:
    schema = load_schema("child")
    assert schema.version == 3
    inputs = (
        "given_name",
        "middle_names",
        "family_name",
        "date_of_birth",
        "sex",
        "postcode",
        "nhs_number",
    )
    assert schema.input_names == inputs
    # the model's columns: the inputs, then the combined fallback field
    assert schema.comparison_names == (*inputs, "full_name")
    # the inputs are published once each; the combined fields in three views each

    def views(name: str) -> tuple[str, ...]:
        return tuple(f"{name}@{v}" for v in DATE_VIEWS)

    assert schema.field_names == (*inputs, *views("full_name"))
    for spec in schema.fields:
        assert spec.input_name == (spec.view_of or spec.name)
        assert (spec.view_of != "") == (spec.input_name in VIEWED_FIELDS)
    assert schema.field("full_name").combines == ("given_name", "family_name")
    assert all(not schema.field(name).combines for name in inputs)
    assert schema.comparison_of_field == (0, 1, 2, 3, 4, 5, 6, 7, 7, 7)
    assert tuple(spec.name for spec in schema.comparison_specs) == (
        *inputs,
        "full_name@year_month",
    )
    # the inputs keep their one salt; the views' comparisons are under whichever views agree
    assert schema.comparison_salts == (
        *(["date_of_birth.value"] * 3),
        "sex.value",
        "",
        "date_of_birth.value",
        "",
        "",
    )
    assert len(schema.blocking) == 8
    assert {f.kind for f in schema.fields} == {
        "name",
        "family_name",
        "date",
        "sex",
        "postcode",
        "nhs_number",
    }
    for spec in schema.fields:
        assert spec.filter_bits % 64 == 0 and spec.filter_words == spec.filter_bits // 64


def test_unknown_shipped_schema_is_a_schema_error() -> None:
    with pytest.raises(SchemaError) as info:
        load_schema("no-such-schema")
    assert info.value.problems == (
        "unknown shipped schema name: expected one of " + ", ".join(shipped_schema_names()),
    )


# ---------------------------------------------------------------------------------------------
# fingerprint


def test_fingerprint_golden_file_covers_every_shipped_schema() -> None:
    assert set(GOLDEN_FINGERPRINTS) == set(shipped_schema_names())


@pytest.mark.parametrize("name", sorted(GOLDEN_FINGERPRINTS))
def test_fingerprint_matches_golden(name: str) -> None:
    assert load_schema(name).fingerprint() == GOLDEN_FINGERPRINTS[name]


@pytest.mark.parametrize("name", shipped_schema_names())
def test_fingerprint_follows_the_documented_canonical_form(name: str) -> None:
    schema = load_schema(name)
    payload = {
        "schema": schema.to_dict(),
        "normalisation_version": NORMALISATION_VERSION,
        "encoding_version": ENCODING_VERSION,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert schema.canonical_bytes() == canonical.encode("utf-8")
    assert schema.fingerprint() == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def test_shipped_schemas_have_different_fingerprints() -> None:
    prints = [load_schema(n).fingerprint() for n in shipped_schema_names()]
    assert len(set(prints)) == len(prints)


def _rename_field(data: dict[str, Any], old: str, new: str) -> None:
    data["field"][field_index(data, old)]["name"] = new

    def renamed(ref: str) -> str:  # "<field>.<x>" or "<field>@<view>.<x>"
        name = ref.split(".")[0].split("@")[0]
        return new + ref[len(old) :] if name == old else ref

    for spec in data["field"]:
        salt = spec["salt"]
        spec["salt"] = [renamed(x) for x in salt] if isinstance(salt, list) else renamed(salt)
        if "combines" in spec:
            spec["combines"] = [new if x == old else x for x in spec["combines"]]
    for rule in data["blocking"]:
        rule["parts"] = [renamed(p) for p in rule["parts"]]


# One change of one option per entry, covering every key that to_dict writes (checked below).
# Field 0 is given_name (kind name), field 3 date_of_birth (kind date), field 7 full_name (a
# combined field in views).
SINGLE_CHANGES: list[tuple[str, Any]] = [
    ("schema.name", set_option("schema", "name", "child-records-2")),
    ("schema.version", set_option("schema", "version", 4)),
    ("schema.day_first", set_option("schema", "day_first", False)),
    ("schema.record_filter_bits", set_option("schema", "record_filter_bits", 2048)),
    ("schema.description", set_option("schema", "description", "changed")),
    ("hardening.balance", set_option("hardening", "balance", True)),
    ("hardening.xor_fold", set_option("hardening", "xor_fold", True)),
    ("hardening.blip_epsilon", set_option("hardening", "blip_epsilon", 2.0)),
    ("hardening.diffusion_t", set_option("hardening", "diffusion_t", 4)),
    ("field.name", lambda d: _rename_field(d, "given_name", "first_name")),
    ("field.kind", set_option("field", "kind", "family_name", 0)),
    ("field.tokeniser", set_option("field", "tokeniser", "exact", 0)),
    ("field.tokeniser(date)", set_option("field", "tokeniser", "qgram", 3)),
    ("field.q", set_option("field", "q", 3, 0)),
    ("field.padded", set_option("field", "padded", False, 0)),
    ("field.filter_bits", set_option("field", "filter_bits", 512, 0)),
    ("field.filter_bits(date)", set_option("field", "filter_bits", 192, 3)),
    ("field.hashes_per_token", set_option("field", "hashes_per_token", 5, 0)),
    ("field.record_hashes_per_token", set_option("field", "record_hashes_per_token", 0, 0)),
    ("field.phonetic", set_option("field", "phonetic", ["soundex"], 0)),
    ("field.phonetic(order)", set_option("field", "phonetic", ["nysiis", "soundex"], 0)),
    ("field.levels", set_option("field", "levels", [0.95, 0.8, 0.6], 0)),
    ("field.levels(value)", set_option("field", "levels", [0.95, 0.8, 0.6, 0.41], 0)),
    ("field.salt", set_option("field", "salt", "sex.value", 6)),  # nhs_number, unsalted
    ("field.salt(one)", set_option("field", "salt", "nhs_number.value", 3)),  # date_of_birth
    # views: one more, and the same views in another order
    ("field.salt(views)", lambda d: d["field"][7]["salt"].append("date_of_birth.year")),
    ("field.salt(view order)", lambda d: d["field"][7]["salt"].reverse()),
    ("field.combines", set_option("field", "combines", ["given_name", "middle_names"], 7)),
    ("field.combines(order)", set_option("field", "combines", ["family_name", "given_name"], 7)),
    ("field.combines(add)", set_option("field", "combines", ["given_name", "family_name"], 5)),
    ("blocking.name", set_option("blocking", "name", "renamed_rule", 0)),
    (
        "blocking.parts",
        set_option("blocking", "parts", ["family_name.nysiis", "date_of_birth.year"], 0),
    ),
    (
        "blocking.parts(order)",
        set_option("blocking", "parts", ["date_of_birth.year", "family_name.soundex"], 0),
    ),
    ("blocking(drop a rule)", lambda d: d["blocking"].pop()),
    ("field.hardening", lambda d: d["field"][0]["hardening"].update(blip_epsilon=2.0)),
    ("field(order)", lambda d: d["field"].insert(0, d["field"].pop(1))),
]


def test_single_changes_cover_every_option() -> None:
    data = child_dict()
    covered = {name.split("(")[0] for name, _ in SINGLE_CHANGES}
    expected = {f"schema.{k}" for k in data["schema"]}
    expected |= {f"hardening.{k}" for k in data["hardening"]}
    expected |= {f"field.{k}" for spec in data["field"] for k in spec}
    expected |= {f"blocking.{k}" for k in data["blocking"][0]}
    assert expected <= covered, expected - covered


@pytest.mark.parametrize("change", SINGLE_CHANGES, ids=[name for name, _ in SINGLE_CHANGES])
def test_changing_any_single_option_changes_the_fingerprint(change: tuple[str, Any]) -> None:
    base = load_schema("child")
    data = child_dict()
    change[1](data)
    changed = schema_from_dict(data)  # the change must itself be a valid schema
    assert changed != base
    assert changed.fingerprint() != base.fingerprint()


def _strip_defaults(data: dict[str, Any]) -> int:
    """Delete every option equal to its default; return how many were deleted."""
    removed = 0
    head_defaults = {"day_first": True, "record_filter_bits": 1024, "description": ""}
    for key, default in head_defaults.items():
        if data["schema"].get(key) == default:
            del data["schema"][key]
            removed += 1
    if data["hardening"] == {k: getattr(Hardening(), k) for k in data["hardening"]}:
        del data["hardening"]
        removed += 1
    spec_defaults = {
        "q": 2,
        "padded": True,
        "filter_bits": 256,
        "hashes_per_token": 4,
        "record_hashes_per_token": 2,
        "phonetic": [],
        "levels": [0.9, 0.7, 0.5],
        "salt": "",
    }
    for spec in data["field"]:
        defaults = dict(spec_defaults, tokeniser=DEFAULT_TOKENISER[spec["kind"]])
        for key, default in defaults.items():
            if spec.get(key) == default:
                del spec[key]
                removed += 1
    return removed


@pytest.mark.parametrize("name", shipped_schema_names())
def test_spelling_out_a_default_does_not_change_the_fingerprint(name: str) -> None:
    schema = load_schema(name)
    minimal = schema.to_dict()
    assert _strip_defaults(minimal) >= 10
    assert schema_from_dict(minimal) == schema
    assert schema_from_dict(minimal).fingerprint() == schema.fingerprint()


def test_defaults_in_toml_text_match_explicit_values() -> None:
    terse = """
[schema]
name = "s"
version = 1

[[field]]
name = "given"
kind = "name"
"""
    explicit = """
[schema]
name = "s"
version = 1
day_first = true
record_filter_bits = 1024
description = ""

[hardening]
balance = false
xor_fold = false
blip_epsilon = 0
diffusion_t = 0

[[field]]
name = "given"
kind = "name"
tokeniser = "qgram"
q = 2
padded = true
filter_bits = 256
hashes_per_token = 4
record_hashes_per_token = 2
phonetic = []
levels = [0.9, 0.7, 0.5]
salt = ""
"""
    assert parse_schema(terse) == parse_schema(explicit)
    assert parse_schema(terse).fingerprint() == parse_schema(explicit).fingerprint()
    assert parse_schema(terse).fields[0] == FieldSpec(name="given", kind="name", tokeniser="qgram")


# ---------------------------------------------------------------------------------------------
# TOML strings written by to_toml


@pytest.mark.parametrize("where", ["description", "name", "rule"])
def test_to_toml_round_trips_characters_outside_the_bmp(where: str) -> None:
    data = child_dict()
    if where == "rule":
        data["blocking"][0]["name"] = "rule \U0001f600"
    else:
        data["schema"][where] = "Children \U0001f600"
    schema = schema_from_dict(data)
    assert parse_schema(schema.to_toml()) == schema


@settings(deadline=None, derandomize=True, max_examples=200)
@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_to_toml_writes_any_description_that_parses_back(text: str) -> None:
    data = child_dict()
    data["schema"]["description"] = text
    schema = schema_from_dict(data)
    assert parse_schema(schema.to_toml()).description == text


def test_nan_blip_epsilon_is_rejected() -> None:
    problems_of(mutated(set_option("hardening", "blip_epsilon", float("nan"))))


def test_fingerprint_is_cached_per_schema_and_follows_changes() -> None:
    """The cached print is the hash of the canonical form; another schema gets its own."""
    import dataclasses

    schema = load_schema("child")
    expected = "sha256:" + hashlib.sha256(schema.canonical_bytes()).hexdigest()
    assert schema.fingerprint() == expected
    assert schema.fingerprint() is schema.fingerprint()  # hashed once
    renamed = dataclasses.replace(schema, version=schema.version + 1)
    assert renamed.fingerprint() != expected
    assert renamed.fingerprint() == (
        "sha256:" + hashlib.sha256(renamed.canonical_bytes()).hexdigest()
    )
    assert renamed != schema and copy.deepcopy(schema) == schema  # the cache is not a field
    assert copy.deepcopy(schema).fingerprint() == expected


def test_the_shipped_child_schema_publishes_no_grouping_beyond_its_filters() -> None:
    # every blocking part is a published filter (of a field, or of a view), so no key groups
    # records in a way an attacker could reproduce from values under its own key; the salt
    # tags are of the date of birth and of sex, each derived from that field's published
    # filter (so each groups records exactly as that filter does); the views, salted with
    # pairs of date parts, publish no tag (a tag would group records by birth year and month,
    # a grouping the filters do not show)
    schema = load_schema("child")
    assert schema.blocking
    assert all(t == "filter" for rule in schema.blocking for _, t in rule.parts)
    assert all(name in schema.field_names for rule in schema.blocking for name, _ in rule.parts)
    assert schema.salt_sources == ("date_of_birth.value", "sex.value")
    views = [spec for spec in schema.fields if spec.view_of]
    assert len(views) == 3
    assert not {spec.salt for spec in views} & set(schema.salt_sources)
    # no field filter groups records across dates of birth but sex and the NHS number: names
    # and postcode are salted with the full date, their combined fallbacks with two parts of
    # it in each view, the date with sex
    unsalted = {f.name for f in schema.fields if not f.salt}
    assert unsalted == {"sex", "nhs_number"}
    for spec in schema.fields:
        if spec.view_of:
            assert spec.salt == f"date_of_birth.{spec.name.split('@')[1]}"
        elif spec.name in ("given_name", "middle_names", "family_name", "postcode"):
            assert spec.salt == "date_of_birth.value"
    assert schema.field("date_of_birth").salt == "sex.value"
    # every rule is one filter: the date, the NHS number, the names and postcode, and each
    # view of the combined fields
    assert all(len(rule.parts) == 1 for rule in schema.blocking)
    assert {rule.parts[0][0] for rule in schema.blocking} == {
        "date_of_birth",
        "nhs_number",
        "given_name",
        "family_name",
        "postcode",
        *(f"{name}@{view}" for name in VIEWED_FIELDS for view in DATE_VIEWS),
    }
    assert [rule.name for rule in schema.blocking] == [rule.parts[0][0] for rule in schema.blocking]


# ---------------------------------------------------------------------------------------------
# [schema].date_range


def _with_date_range(value: object) -> dict[str, Any]:
    data = default_child_schema().to_dict()
    data["schema"]["date_range"] = value
    return data


def test_date_range_defaults_to_the_normaliser_range_and_keeps_the_fingerprint() -> None:
    schema = default_child_schema()
    assert schema.date_range == DATE_RANGE == (1900, 2100)
    assert "date_range" not in schema.to_dict()["schema"]
    spelled_out = schema_from_dict(_with_date_range([1900, 2100]))
    assert spelled_out.fingerprint() == schema.fingerprint()


def test_a_date_range_of_its_own_round_trips_and_changes_the_fingerprint() -> None:
    schema = schema_from_dict(_with_date_range([1850, 2030]))
    assert schema.date_range == (1850, 2030)
    assert parse_schema(schema.to_toml()) == schema
    assert schema.fingerprint() != default_child_schema().fingerprint()


@pytest.mark.parametrize(
    "value",
    [[2100, 1900], [1900], [1900, 2100, 2200], ["1900", 2100], [True, 2100], 1900, [0, 2100]],
)
def test_a_bad_date_range_is_refused_by_position(value: object) -> None:
    with pytest.raises(SchemaError, match=r"\[schema\]\.date_range: expected") as caught:
        schema_from_dict(_with_date_range(value))
    assert len(caught.value.problems) == 1


def test_the_date_range_decides_which_dates_are_encoded() -> None:
    wide = schema_from_dict(_with_date_range([1850, 2100]))
    keys = KeySet(LinkageSecret.for_tests(), key_version=1)
    columns: dict[str, list[str | None]] = {name: [None] for name in wide.input_names}
    columns["date_of_birth"] = ["1890-05-06"]
    date = wide.field_names.index("date_of_birth")
    assert encode_records(wide, keys, columns).field_present[0, date]
    narrow = encode_records(default_child_schema(), keys, columns)
    assert not narrow.field_present[0, date]
    assert [p.reason for p in narrow.problems] == ["year outside the plausible range 1900-2100"]
