"""Tests for linkage.schema: shipped schemas, strict parsing, round trips and the fingerprint."""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from dataclasses import replace as dataclasses_replace
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
    BLOCKING_TRANSFORMS,
    DEFAULT_TOKENISER,
    ENCODING_VERSION,
    FIELD_KINDS,
    PHONETIC_CODES,
    FieldSpec,
    Hardening,
    Schema,
    default_child_schema,
    load_schema,
    parse_schema,
    schema_from_dict,
    shipped_schema_names,
    shipped_schema_text,
)

FINGERPRINT_PATH = Path(__file__).parent / "golden" / "fingerprint.json"
#: the keys a [[field]] table may hold: FieldSpec's fields but view_of, which the parser sets on
#: the views of a field salted several ways
_FILE_FIELD_KEYS = set(FieldSpec.__dataclass_fields__) - {"view_of"}
GOLDEN_FINGERPRINTS: dict[str, str] = json.loads(FINGERPRINT_PATH.read_text(encoding="utf-8"))


def child_dict() -> dict[str, Any]:
    return load_schema("child").to_dict()


def problems_of(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(SchemaError) as info:
        schema_from_dict(data)
    assert info.value.problems, "a SchemaError must list its problems"
    return info.value.problems


def field_index(data: dict[str, Any], name: str) -> int:
    return next(i for i, f in enumerate(data["field"]) if f["name"] == name)


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


#: the combined fallback fields of the shipped schema, each published in three views
_VIEWED = ("full_name",)
_DATE_VIEWS = ("year_month", "year_day", "day_month")


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
        return tuple(f"{name}@{v}" for v in _DATE_VIEWS)

    assert schema.field_names == (*inputs, *views("full_name"))
    for spec in schema.fields:
        assert spec.input_name == (spec.view_of or spec.name)
        assert (spec.view_of != "") == (spec.input_name in _VIEWED)
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


def _set(table: str, key: str, value: Any, index: int | None = None) -> Any:
    def apply(data: dict[str, Any]) -> None:
        target = data[table] if index is None else data[table][index]
        target[key] = value

    return apply


# One change of one option per entry, covering every key that to_dict writes (checked below).
# Field 0 is given_name (kind name), field 3 date_of_birth (kind date), field 7 full_name (a
# combined field in views).
SINGLE_CHANGES: list[tuple[str, Any]] = [
    ("schema.name", _set("schema", "name", "child-records-2")),
    ("schema.version", _set("schema", "version", 4)),
    ("schema.day_first", _set("schema", "day_first", False)),
    ("schema.record_filter_bits", _set("schema", "record_filter_bits", 2048)),
    ("schema.description", _set("schema", "description", "changed")),
    ("hardening.balance", _set("hardening", "balance", True)),
    ("hardening.xor_fold", _set("hardening", "xor_fold", True)),
    ("hardening.blip_epsilon", _set("hardening", "blip_epsilon", 2.0)),
    ("hardening.diffusion_t", _set("hardening", "diffusion_t", 4)),
    ("field.name", lambda d: _rename_field(d, "given_name", "first_name")),
    ("field.kind", _set("field", "kind", "family_name", 0)),
    ("field.tokeniser", _set("field", "tokeniser", "exact", 0)),
    ("field.tokeniser(date)", _set("field", "tokeniser", "qgram", 3)),
    ("field.q", _set("field", "q", 3, 0)),
    ("field.padded", _set("field", "padded", False, 0)),
    ("field.filter_bits", _set("field", "filter_bits", 512, 0)),
    ("field.filter_bits(date)", _set("field", "filter_bits", 192, 3)),
    ("field.hashes_per_token", _set("field", "hashes_per_token", 5, 0)),
    ("field.record_hashes_per_token", _set("field", "record_hashes_per_token", 0, 0)),
    ("field.phonetic", _set("field", "phonetic", ["soundex"], 0)),
    ("field.phonetic(order)", _set("field", "phonetic", ["nysiis", "soundex"], 0)),
    ("field.levels", _set("field", "levels", [0.95, 0.8, 0.6], 0)),
    ("field.levels(value)", _set("field", "levels", [0.95, 0.8, 0.6, 0.41], 0)),
    ("field.salt", _set("field", "salt", "sex.value", 6)),  # nhs_number, unsalted
    ("field.salt(one)", _set("field", "salt", "nhs_number.value", 3)),  # date_of_birth
    # views: one more, and the same views in another order
    ("field.salt(views)", lambda d: d["field"][7]["salt"].append("date_of_birth.year")),
    ("field.salt(view order)", lambda d: d["field"][7]["salt"].reverse()),
    ("field.combines", _set("field", "combines", ["given_name", "middle_names"], 7)),
    ("field.combines(order)", _set("field", "combines", ["family_name", "given_name"], 7)),
    ("field.combines(add)", _set("field", "combines", ["given_name", "family_name"], 5)),
    ("blocking.name", _set("blocking", "name", "renamed_rule", 0)),
    ("blocking.parts", _set("blocking", "parts", ["family_name.nysiis", "date_of_birth.year"], 0)),
    (
        "blocking.parts(order)",
        _set("blocking", "parts", ["date_of_birth.year", "family_name.soundex"], 0),
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
# strictness: unknown keys at every level


@pytest.mark.parametrize(
    ("level", "where"),
    [
        ("top", "top level"),
        ("schema", "[schema]"),
        ("hardening", "[hardening]"),
        ("field", "field[2]"),  # family_name; unknown keys are reported by table index
        ("blocking", "blocking[1]"),  # the rule named nhs_number
    ],
)
def test_unknown_key_at_every_level_is_an_error(level: str, where: str) -> None:
    data = child_dict()
    if level == "top":
        data["xor_folds"] = 1
    elif level in ("schema", "hardening"):
        data[level]["xor_folds"] = 1
    elif level == "field":
        data["field"][field_index(data, "family_name")]["xor_folds"] = 1
    else:
        rule = next(r for r in data["blocking"] if r["name"] == "nhs_number")
        rule["xor_folds"] = 1
    problems = problems_of(data)
    assert len(problems) == 1
    table = data if level == "top" else data[level]
    if level == "field":
        table = data["field"][field_index(data, "family_name")]
    elif level == "blocking":
        table = data["blocking"][1]
    place = f"key {len(table)} of the {'document' if level == 'top' else 'table'}"  # added last
    assert problems[0].startswith(f"{where}: unknown key ({place})")
    assert "xor_folds" not in problems[0]  # the key itself is never echoed
    allowed = {
        "top": "blocking, field, hardening, schema",
        "schema": "date_range, day_first, description, name, record_filter_bits, version",
        "hardening": ", ".join(sorted(Hardening.__dataclass_fields__)),
        "field": ", ".join(sorted(_FILE_FIELD_KEYS)),
        "blocking": "name, parts",
    }[level]
    assert f"expected one of: {allowed}" in problems[0]
    if level == "hardening":
        assert problems[0].endswith('(did you mean "xor_fold"?)')


def test_misspelled_key_in_toml_is_an_error() -> None:
    text = load_schema("child").to_toml().replace("xor_fold =", "xorFold =", 1)  # [hardening]
    with pytest.raises(SchemaError) as info:
        parse_schema(text)
    place = list(child_dict()["hardening"]).index("xor_fold") + 1
    assert info.value.problems == (
        f"[hardening]: unknown key (key {place} of the table), expected one of: "
        + ", ".join(sorted(Hardening.__dataclass_fields__))
        + ' (did you mean "xor_fold"?)',
    )


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("nmae", "name"),
        ("filterbits", "filter_bits"),
        ("hashes_per_tokens", "hashes_per_token"),
        ("phonetics", "phonetic"),
        ("tokenizer", "tokeniser"),
        ("zzzz", None),
        (3, None),
    ],
)
def test_unknown_field_key_names_place_expected_keys_and_nearest_key(
    key: Any, suggestion: str | None
) -> None:
    data = child_dict()
    data["field"][3][key] = 1
    problems = problems_of(data)
    assert len(problems) == 1
    place = len(data["field"][3])
    expected = ", ".join(sorted(_FILE_FIELD_KEYS))
    message = f"field[3]: unknown key (key {place} of the table), expected one of: {expected}"
    if suggestion is not None:
        message += f' (did you mean "{suggestion}"?)'
    assert problems == (message,)


def test_each_unknown_key_is_reported_by_its_place_in_the_table() -> None:
    data = child_dict()
    head = data["schema"]
    data["schema"] = {"versoin": 1, **head, "day_frist": True}
    problems = problems_of(data)
    assert [p.split(", expected")[0] for p in problems] == [
        "[schema]: unknown key (key 1 of the table)",
        f"[schema]: unknown key (key {len(head) + 2} of the table)",
    ]
    assert problems[0].endswith('(did you mean "version"?)')
    assert problems[1].endswith('(did you mean "day_first"?)')


def test_invalid_toml_is_a_schema_error() -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema("[schema\nname = ")
    assert "TOML" in info.value.problems[0]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[schema\n", "Expected ']' at the end of a table declaration (line 1, column 8)"),
        ('[schema]\nname = "x\n', "illegal character in a string (line 2, column 10)"),
        ("[schema]\nname = x\n", "Invalid value (line 2, column 8)"),
        ("[schema]\n[schema]\n", "a table is declared twice (line 2, column 8)"),
        ("x = {a = 1, a = 2}", "a key is repeated in an inline table (line 1, column 18)"),
        ("x = [1]\nx.y = 2", "a key extends an inline table or a static array (end of document)"),
        ("# \x01", "invalid character in a comment or literal string (line 1, column 3)"),
    ],
)
def test_invalid_toml_names_the_position_and_no_text(text: str, problem: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse_schema(text)
    assert info.value.problems == (f"not valid TOML: {problem}",)


def test_all_problems_are_reported_at_once() -> None:
    data = child_dict()
    data["schema"]["record_filter_bits"] = 1000
    data["field"][0]["filter_bits"] = 100
    data["field"][1]["kind"] = "shoe_size"
    data["field"][2]["levels"] = [0.5, 0.9]
    data["blocking"][0]["parts"] = ["family_name.year"]
    data["hardening"]["diffusion_t"] = -1
    problems = problems_of(data)
    assert len(problems) >= 6
    joined = "\n".join(problems)
    for needle in (
        "record_filter_bits",
        "filter_bits",
        ".kind",
        ".levels",
        "parts",
        "diffusion_t",
    ):
        assert needle in joined
    assert str(SchemaError(problems)).count(";") == len(problems) - 1


# ---------------------------------------------------------------------------------------------
# individual validation rules


def _mutated(mutate: Any) -> dict[str, Any]:
    data = child_dict()
    mutate(data)
    return data


@pytest.mark.parametrize("bits", [0, 32, 100, 255, 8256, -64, "256", True, 256.0])
def test_bad_filter_bits(bits: Any) -> None:
    problems = problems_of(_mutated(_set("field", "filter_bits", bits, 0)))
    assert all("filter_bits" in p for p in problems)


@pytest.mark.parametrize("bits", [64, 128, 8192])
def test_good_filter_bits(bits: int) -> None:
    assert schema_from_dict(_mutated(_set("field", "filter_bits", bits, 0))).fields[0].filter_bits


@pytest.mark.parametrize("bits", [0, 100, -1024, "1024"])
def test_bad_record_filter_bits(bits: Any) -> None:
    problems = problems_of(_mutated(_set("schema", "record_filter_bits", bits)))
    assert any("record_filter_bits" in p for p in problems)


@pytest.mark.parametrize(
    "levels",
    [
        [0.5, 0.9],
        [0.9, 0.9],
        [0.9, 0.7, 0.8],
        [],
        [1.5, 0.5],
        [0.9, 0.0],
        [0.9, -0.1],
        ["high"],
        [True],
        "0.9",
    ],
)
def test_bad_levels(levels: Any) -> None:
    problems = problems_of(_mutated(_set("field", "levels", levels, 0)))
    assert all(".levels" in p for p in problems)


@pytest.mark.parametrize("kind", ["shoe_size", "Name", "", 3])
def test_unknown_kind(kind: Any) -> None:
    problems = problems_of(_mutated(_set("field", "kind", kind, 1)))  # middle_names: no refs
    assert any(".kind" in p for p in problems)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (_set("field", "tokeniser", "bigram", 0), ".tokeniser"),
        (_set("field", "tokeniser", "date", 0), ".tokeniser"),
        (_set("field", "tokeniser", "postcode", 3), ".tokeniser"),
        (_set("field", "q", 0, 0), ".q"),
        (_set("field", "q", 5, 0), ".q"),
        (_set("field", "hashes_per_token", 0, 0), ".hashes_per_token"),
        (_set("field", "hashes_per_token", 65, 0), ".hashes_per_token"),
        (_set("field", "record_hashes_per_token", -1, 0), ".record_hashes_per_token"),
        (_set("field", "phonetic", ["caverphone"], 0), ".phonetic"),
        (_set("field", "phonetic", ["soundex"], 3), ".phonetic"),
        (_set("field", "padded", "yes", 0), ".padded"),
        (_set("field", "name", "given name", 0), ".name"),
        (_set("field", "name", "", 0), ".name"),
        (_set("schema", "version", 0), ".version"),
        (_set("schema", "name", ""), ".name"),
        (_set("schema", "day_first", 1), ".day_first"),
        (_set("hardening", "blip_epsilon", -0.5), "blip_epsilon"),
        (_set("hardening", "balance", "false"), "balance"),
        (lambda d: d.pop("schema"), "[schema]"),
        (lambda d: d.__setitem__("field", []), "[[field]]"),
        (lambda d: d.__setitem__("hardening", [1]), "[hardening]"),
        (lambda d: d.__setitem__("blocking", {"name": "x"}), "[[blocking]]"),
        (lambda d: d["field"].append("not a table"), "field[8]"),
    ],
)
def test_single_invalid_option_is_reported(mutate: Any, needle: str) -> None:
    problems = problems_of(_mutated(mutate))
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize(
    "part",
    [
        "family_name",
        "family_name.soundex.extra",
        "shoe_size.value",
        "family_name.year",
        "date_of_birth.soundex",
        "postcode.initial",
        "nhs_number.sector",
        "",
        3,
    ],
)
def test_bad_blocking_part(part: Any) -> None:
    problems = problems_of(_mutated(_set("blocking", "parts", [part, "date_of_birth.year"], 0)))
    assert len(problems) == 1
    assert problems[0].startswith("blocking[0].parts[0]: ")
    if part:
        assert str(part) not in problems[0]  # the reference itself is never echoed


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "r", "parts": []},
        {"name": "a/b", "parts": ["nhs_number.value"]},
        {"name": "", "parts": ["nhs_number.value"]},
        {"name": "nhs_number", "parts": ["nhs_number.value"]},  # duplicate rule name
        {"parts": ["nhs_number.value"]},
    ],
)
def test_bad_blocking_rule(rule: dict[str, Any]) -> None:
    problems_of(_mutated(lambda d: d["blocking"].append(rule)))


def test_salt_referencing_its_own_field_is_an_error() -> None:
    problems = problems_of(_mutated(_set("field", "salt", "date_of_birth.year", 3)))
    assert problems == ("field[3].salt: a field cannot be salted with itself",)
    # in a list too (field[1] is middle_names, published in views no blocking rule names)
    own = ["date_of_birth.year_month", "middle_names.initial"]
    problems = problems_of(_mutated(_set("field", "salt", own, 1)))
    assert problems == ("field[1].salt: a field cannot be salted with itself",)


@pytest.mark.parametrize("salt", ["date_of_birth", "nowhere.value", "date_of_birth.soundex"])
@pytest.mark.parametrize("index", [6, 1])  # nhs_number, and middle_names' list of salts
def test_bad_salt_reference(salt: str, index: int) -> None:
    value: Any = salt if index == 6 else ["date_of_birth.year_month", salt]
    problems = problems_of(_mutated(_set("field", "salt", value, index)))
    assert len(problems) == 1 and problems[0].startswith(f"field[{index}].salt: ")
    echo = {"nowhere.value": "nowhere", "date_of_birth.soundex": "soundex"}.get(salt)
    assert echo is None or echo not in problems[0]  # the reference is never echoed


_CHILD_FIELDS = (
    "given_name, middle_names, family_name, date_of_birth, sex, postcode, nhs_number, full_name"
)
#: what a blocking part may name: the fields (the combined ones too), then the views of the
#: fields salted several ways
_CHILD_PARTS = _CHILD_FIELDS + "".join(
    f", {name}@{view}" for name in _VIEWED for view in _DATE_VIEWS
)
_NAME_TRANSFORMS = "first_part, initial, metaphone, nysiis, soundex, value"
_FILTER = "filter, "  # blocking parts may name the published filter, salts may not


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (
            "famly_name.soundex",
            'the part before "." is not a field of this schema, expected one of: {fields}'
            ' (did you mean "family_name"?)',
        ),
        (
            "shoe_size.value",
            'the part before "." is not a field of this schema, expected one of: {fields}',
        ),
        (
            "family_name.sundex",
            'the transform after "." is not available for field[2] (family_name, a family_name '
            f'field), expected one of: {{filter}}{_NAME_TRANSFORMS} (did you mean "soundex"?)',
        ),
        (
            "date_of_birth.soundex",
            'the transform after "." is not available for field[3] (date_of_birth, a date '
            "field), expected one of: {day_month}{filter}month_day, value, year, year_day, "
            "year_month",
        ),
        ("family_name", 'expected "<field>.<transform>"'),
    ],
)
def test_bad_reference_messages_name_the_place_and_the_expectation(part: str, message: str) -> None:
    parts = ["date_of_birth.year", part]
    problems = problems_of(_mutated(_set("blocking", "parts", parts, 1)))
    as_part = message.replace("{filter}", _FILTER).replace("{fields}", _CHILD_PARTS)
    assert problems == (f"blocking[1].parts[1]: {as_part.replace('{day_month}', 'day_month, ')}",)
    salt_problems = problems_of(_mutated(_set("field", "salt", part, 6)))
    # a salt names a field, never a view (views are made from the salts)
    as_salt = message.replace("{filter}", "").replace("{fields}", _CHILD_FIELDS)
    assert salt_problems == (f"field[6].salt: {as_salt.replace('{day_month}', 'day_month, ')}",)


def test_a_salt_may_not_name_the_published_filter() -> None:
    problems = problems_of(_mutated(_set("field", "salt", "sex.filter", 6)))
    assert problems == (
        'field[6].salt: the transform "filter" is for blocking parts, expected a value '
        'transform such as "value" or "year"',
    )


def test_known_field_list_holds_only_validated_names() -> None:
    data = child_dict()
    data["field"][1]["name"] = "middle names"  # invalid: a space
    data["field"][5]["name"] = "sex"  # duplicate of field[4]
    data["field"][0]["salt"] = "middle names.value"
    data["field"][6]["salt"] = "postcode.value"  # postcode was renamed
    problems = problems_of(data)
    assert "field[1].name: required, ASCII letters, digits and underscores" in problems
    assert "field[5].name: duplicate field name (same as field[4])" in problems
    assert 'field[0].salt: the part before "." names field[1], whose name is invalid' in problems
    unknown = [p for p in problems if p.startswith("field[6].salt")]
    assert unknown == [
        'field[6].salt: the part before "." is not a field of this schema, expected one of: '
        "given_name, family_name, date_of_birth, sex, nhs_number, full_name"
    ]


def test_bad_rule_names_are_reported_by_position() -> None:
    data = child_dict()
    data["blocking"][3]["name"] = "a/b"
    data["blocking"][4]["name"] = data["blocking"][2]["name"]
    problems = problems_of(data)
    assert problems == (
        "blocking[3].name: required, without '/'",
        "blocking[4].name: duplicate rule name (same as blocking[2])",
    )


def test_salt_may_reference_a_later_field() -> None:
    schema = schema_from_dict(_mutated(_set("field", "salt", "nhs_number.value", 3)))
    assert schema.field("date_of_birth").salt == "nhs_number.value"


def test_duplicate_field_names() -> None:
    problems = problems_of(_mutated(_set("field", "name", "given_name", 1)))
    assert any("duplicate field name" in p for p in problems)


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
    problems_of(_mutated(_set("hardening", "blip_epsilon", float("nan"))))


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
        *(f"{name}@{view}" for name in _VIEWED for view in _DATE_VIEWS),
    }
    assert [rule.name for rule in schema.blocking] == [rule.parts[0][0] for rule in schema.blocking]


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
