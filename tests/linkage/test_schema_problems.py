"""Tests for linkage.schema's strict parsing: unknown keys, invalid options and references,
each reported by its position and never with the value."""

from __future__ import annotations

from typing import Any

import pytest

from linkage.errors import SchemaError
from linkage.schema import (
    FieldSpec,
    Hardening,
    load_schema,
    parse_schema,
    schema_from_dict,
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

#: the keys a [[field]] table may hold: FieldSpec's fields but view_of, which the parser sets on
#: the views of a field salted several ways
_FILE_FIELD_KEYS = set(FieldSpec.__dataclass_fields__) - {"view_of"}


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


@pytest.mark.parametrize("bits", [0, 32, 100, 255, 8256, -64, "256", True, 256.0])
def test_bad_filter_bits(bits: Any) -> None:
    problems = problems_of(mutated(set_option("field", "filter_bits", bits, 0)))
    assert all("filter_bits" in p for p in problems)


@pytest.mark.parametrize("bits", [64, 128, 8192])
def test_good_filter_bits(bits: int) -> None:
    assert (
        schema_from_dict(mutated(set_option("field", "filter_bits", bits, 0))).fields[0].filter_bits
    )


@pytest.mark.parametrize("bits", [0, 100, -1024, "1024"])
def test_bad_record_filter_bits(bits: Any) -> None:
    problems = problems_of(mutated(set_option("schema", "record_filter_bits", bits)))
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
    problems = problems_of(mutated(set_option("field", "levels", levels, 0)))
    assert all(".levels" in p for p in problems)


@pytest.mark.parametrize("kind", ["shoe_size", "Name", "", 3])
def test_unknown_kind(kind: Any) -> None:
    problems = problems_of(mutated(set_option("field", "kind", kind, 1)))  # middle_names: no refs
    assert any(".kind" in p for p in problems)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (set_option("field", "tokeniser", "bigram", 0), ".tokeniser"),
        (set_option("field", "tokeniser", "date", 0), ".tokeniser"),
        (set_option("field", "tokeniser", "postcode", 3), ".tokeniser"),
        (set_option("field", "q", 0, 0), ".q"),
        (set_option("field", "q", 5, 0), ".q"),
        (set_option("field", "hashes_per_token", 0, 0), ".hashes_per_token"),
        (set_option("field", "hashes_per_token", 65, 0), ".hashes_per_token"),
        (set_option("field", "record_hashes_per_token", -1, 0), ".record_hashes_per_token"),
        (set_option("field", "phonetic", ["caverphone"], 0), ".phonetic"),
        (set_option("field", "phonetic", ["soundex"], 3), ".phonetic"),
        (set_option("field", "padded", "yes", 0), ".padded"),
        (set_option("field", "name", "given name", 0), ".name"),
        (set_option("field", "name", "", 0), ".name"),
        (set_option("schema", "version", 0), ".version"),
        (set_option("schema", "name", ""), ".name"),
        (set_option("schema", "day_first", 1), ".day_first"),
        (set_option("hardening", "blip_epsilon", -0.5), "blip_epsilon"),
        (set_option("hardening", "balance", "false"), "balance"),
        (lambda d: d.pop("schema"), "[schema]"),
        (lambda d: d.__setitem__("field", []), "[[field]]"),
        (lambda d: d.__setitem__("hardening", [1]), "[hardening]"),
        (lambda d: d.__setitem__("blocking", {"name": "x"}), "[[blocking]]"),
        (lambda d: d["field"].append("not a table"), "field[8]"),
    ],
)
def test_single_invalid_option_is_reported(mutate: Any, needle: str) -> None:
    problems = problems_of(mutated(mutate))
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
    problems = problems_of(
        mutated(set_option("blocking", "parts", [part, "date_of_birth.year"], 0))
    )
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
    problems_of(mutated(lambda d: d["blocking"].append(rule)))


def test_salt_referencing_its_own_field_is_an_error() -> None:
    problems = problems_of(mutated(set_option("field", "salt", "date_of_birth.year", 3)))
    assert problems == ("field[3].salt: a field cannot be salted with itself",)
    # in a list too (field[1] is middle_names, published in views no blocking rule names)
    own = ["date_of_birth.year_month", "middle_names.initial"]
    problems = problems_of(mutated(set_option("field", "salt", own, 1)))
    assert problems == ("field[1].salt: a field cannot be salted with itself",)


@pytest.mark.parametrize("salt", ["date_of_birth", "nowhere.value", "date_of_birth.soundex"])
@pytest.mark.parametrize("index", [6, 1])  # nhs_number, and middle_names' list of salts
def test_bad_salt_reference(salt: str, index: int) -> None:
    value: Any = salt if index == 6 else ["date_of_birth.year_month", salt]
    problems = problems_of(mutated(set_option("field", "salt", value, index)))
    assert len(problems) == 1 and problems[0].startswith(f"field[{index}].salt: ")
    echo = {"nowhere.value": "nowhere", "date_of_birth.soundex": "soundex"}.get(salt)
    assert echo is None or echo not in problems[0]  # the reference is never echoed


_CHILD_FIELDS = (
    "given_name, middle_names, family_name, date_of_birth, sex, postcode, nhs_number, full_name"
)
#: what a blocking part may name: the fields (the combined ones too), then the views of the
#: fields salted several ways
_CHILD_PARTS = _CHILD_FIELDS + "".join(
    f", {name}@{view}" for name in VIEWED_FIELDS for view in DATE_VIEWS
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
    problems = problems_of(mutated(set_option("blocking", "parts", parts, 1)))
    as_part = message.replace("{filter}", _FILTER).replace("{fields}", _CHILD_PARTS)
    assert problems == (f"blocking[1].parts[1]: {as_part.replace('{day_month}', 'day_month, ')}",)
    salt_problems = problems_of(mutated(set_option("field", "salt", part, 6)))
    # a salt names a field, never a view (views are made from the salts)
    as_salt = message.replace("{filter}", "").replace("{fields}", _CHILD_FIELDS)
    assert salt_problems == (f"field[6].salt: {as_salt.replace('{day_month}', 'day_month, ')}",)


def test_a_salt_may_not_name_the_published_filter() -> None:
    problems = problems_of(mutated(set_option("field", "salt", "sex.filter", 6)))
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
    schema = schema_from_dict(mutated(set_option("field", "salt", "nhs_number.value", 3)))
    assert schema.field("date_of_birth").salt == "nhs_number.value"


def test_duplicate_field_names() -> None:
    problems = problems_of(mutated(set_option("field", "name", "given_name", 1)))
    assert any("duplicate field name" in p for p in problems)
