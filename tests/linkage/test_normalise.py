"""Tests for linkage.normalise: golden vectors, properties, helpers and the PII canary."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.errors import InvalidValueError
from linkage.normalise import (
    NAME_PARTICLES,
    NAME_TITLES,
    NORMALISATION_VERSION,
    NORMALISERS,
    NULL_MARKERS,
    date_parts,
    is_valid_nhs_number,
    name_parts,
    nhs_check_digit,
    normalise_date,
    normalise_family_name,
    normalise_name,
    normalise_nhs_number,
    normalise_postcode,
    postcode_area,
    postcode_district,
    postcode_sector,
)

GOLDEN_PATH = Path(__file__).parent / "golden" / "normalise.json"
GOLDEN: list[dict[str, Any]] = json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))
KINDS = ("name", "family_name", "date", "postcode", "nhs_number", "sex", "text", "exact")
CANARY = "Zqxcanary"


def _case_id(case: dict[str, Any]) -> str:
    flag = "" if case.get("day_first", True) else "-month-first"
    return f"{case['kind']}{flag}:{case['raw']!r}"


def _normalise_or_reason(kind: str, raw: str | None, *, day_first: bool = True) -> str | None:
    """The normalised value, or "rejected" when the normaliser raises InvalidValueError."""
    try:
        return NORMALISERS[kind](raw, field="field_under_test", day_first=day_first)
    except InvalidValueError:
        return "rejected"


# ---------------------------------------------------------------------------------------------
# golden vectors


def test_golden_file_is_well_formed_and_covers_every_kind() -> None:
    assert len(GOLDEN) >= 60
    for case in GOLDEN:
        assert set(case) <= {"kind", "raw", "expected", "error", "day_first"}, case
        assert case["kind"] in KINDS, case
        assert case["expected"] is None or case["error"] is None, case
    assert {case["kind"] for case in GOLDEN} == set(KINDS)
    raws = {case["raw"] for case in GOLDEN}
    for required in ("José", "Müller", "Nguyễn", "O'Brien", "van der Berg", "Smith-Jones",
                     "Zoë", "Siobhán", "Łukasz", "Ngozi", "Oluwaseun", "943 476 5919"):  # fmt: skip
        assert required in raws, required


@pytest.mark.parametrize("case", GOLDEN, ids=_case_id)
def test_golden_vector(case: dict[str, Any]) -> None:
    normaliser = NORMALISERS[case["kind"]]
    day_first = case.get("day_first", True)
    if case["error"] is not None:
        with pytest.raises(InvalidValueError) as caught:
            normaliser(case["raw"], field="golden_field", day_first=day_first)
        assert case["error"] in caught.value.reason
        assert caught.value.field == "golden_field"
    else:
        assert (
            normaliser(case["raw"], field="golden_field", day_first=day_first) == case["expected"]
        )


# ---------------------------------------------------------------------------------------------
# module contract


def test_version_is_an_int_constant() -> None:
    assert NORMALISATION_VERSION == 1
    assert type(NORMALISATION_VERSION) is int


def test_normalisers_mapping_is_uniform_and_read_only() -> None:
    assert set(NORMALISERS) == set(KINDS)
    for kind in KINDS:
        assert NORMALISERS[kind](None, field="f", day_first=False) is None
    with pytest.raises(TypeError):
        NORMALISERS["name"] = normalise_name  # type: ignore[index]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "marker", [*sorted(NULL_MARKERS), "", "   ", "\t\n", " NULL ", "Not  Known", "N/A", "NONE"]
)
def test_every_null_marker_is_missing_for_every_kind(kind: str, marker: str) -> None:
    assert NORMALISERS[kind](marker, field="f") is None


@pytest.mark.parametrize("kind", KINDS)
def test_nan_is_missing_and_other_non_strings_are_rejected(kind: str) -> None:
    assert NORMALISERS[kind](float("nan"), field="f") is None  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="expected a string, got int"):
        NORMALISERS[kind](1234, field="f")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# names

NAME_ALPHABET = st.sampled_from(
    [*"abcxyzABCXYZéüøßæþðłŁñçÆ '’.-,_/()·0123456789\t", "ễ", "ʻ", "–", "\xa0"]
)
NAME_WORDS = st.sampled_from(
    [
        *sorted(NAME_TITLES | NAME_PARTICLES),
        *["Mr.", "Dr.", "St.", "O'", "Van", "DE", "l", "r", "smith", "José", "Jones-Smith", "na"],
    ]
)
name_like = st.lists(st.one_of(NAME_WORDS, st.text(NAME_ALPHABET, max_size=6)), max_size=6).map(
    " ".join
)


@settings(deadline=None, derandomize=True, max_examples=300)
@given(st.one_of(name_like, st.text(max_size=20)))
def test_name_output_alphabet_and_idempotence(raw: str) -> None:
    once = _normalise_or_reason("name", raw)
    if once is None or once == "rejected":
        return
    assert re.fullmatch(r"[a-z]+( [a-z]+)*", once), once
    assert _normalise_or_reason("name", once) == once
    assert name_parts(once) == tuple(once.split(" "))


@settings(deadline=None, derandomize=True, max_examples=100)
@given(st.sampled_from(sorted(NAME_TITLES)), st.sampled_from(["", "."]), name_like)
def test_leading_title_never_survives_before_another_part(title: str, dot: str, rest: str) -> None:
    without = normalise_name(rest, field="f")
    if without is None or without.split(" ")[0] in NAME_PARTICLES:
        return  # a particle would glue across the boundary, which is a different rule
    assert normalise_name(f"{title.title()}{dot} {rest}", field="f") == without


@settings(deadline=None, derandomize=True, max_examples=100)
@given(st.sampled_from(sorted(NAME_PARTICLES)), st.from_regex(r"[a-z]{2,8}", fullmatch=True))
def test_particle_glues_to_the_following_part(particle: str, family: str) -> None:
    if family in NAME_PARTICLES | NAME_TITLES or particle + family in NULL_MARKERS:
        return
    glued = normalise_family_name(f"{particle.upper()} {family.title()}", field="f")
    assert glued == particle + family
    assert normalise_family_name(f"{family} {particle}", field="f") == f"{family} {particle}"
    # given names never glue: "Ben Jones" is a first and a last name
    assert normalise_name(f"{particle} {family}", field="f") == f"{particle} {family}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("de l Smith", "delsmith"), ("da s Silva", "dassilva"), ("o Brien van", "obrien van")],
)
def test_glued_particle_that_forms_a_particle_keeps_gluing(raw: str, expected: str) -> None:
    """'de' + 'l' is the particle 'del': without the rule, a second pass would glue again."""
    once = normalise_family_name(raw, field="f")
    assert once == expected
    assert normalise_family_name(once, field="f") == once


def test_name_parts() -> None:
    assert name_parts("vanderberg mary ann") == ("vanderberg", "mary", "ann")
    assert name_parts("jose") == ("jose",)


# ---------------------------------------------------------------------------------------------
# dates

plausible_dates = st.dates(
    min_value=datetime.date(1900, 1, 1), max_value=datetime.date(2100, 12, 31)
)
DATE_LAYOUTS = (
    "{y:04d}-{m:02d}-{d:02d}",
    "{y:04d}/{m}/{d}",
    "{y:04d}{m:02d}{d:02d}",
    "{d:02d}/{m:02d}/{y:04d}",
    "{d}-{m}-{y:04d}",
    "{d:02d}.{m:02d}.{y:04d}",
    "{d} {month} {y:04d}",
    "{d:02d}-{mon}-{y:04d}",
    "{month} {d}, {y:04d}",
    "{y:04d}-{m:02d}-{d:02d}T00:00:00",
    "{y:04d}-{m:02d}-{d:02d} 23:59:59",
)


@settings(deadline=None, derandomize=True, max_examples=200)
@given(plausible_dates, st.sampled_from(DATE_LAYOUTS))
def test_every_date_layout_round_trips_to_iso(date: datetime.date, layout: str) -> None:
    raw = layout.format(
        y=date.year, m=date.month, d=date.day, month=date.strftime("%B"), mon=date.strftime("%b")
    )
    assert normalise_date(raw, field="dob") == date.isoformat()
    assert normalise_date(raw.upper(), field="dob") == date.isoformat()
    assert date_parts(date.isoformat()) == (date.year, date.month, date.day)


@settings(deadline=None, derandomize=True, max_examples=200)
@given(plausible_dates)
def test_day_first_decides_only_ambiguous_numeric_dates(date: datetime.date) -> None:
    day_month = f"{date.day}/{date.month}/{date.year}"
    month_day = f"{date.month}/{date.day}/{date.year}"
    assert normalise_date(day_month, field="dob", day_first=True) == date.isoformat()
    assert normalise_date(month_day, field="dob", day_first=False) == date.isoformat()
    if date.day > 12:  # unambiguous: either setting reads it the one possible way
        assert normalise_date(day_month, field="dob", day_first=False) == date.isoformat()
        assert normalise_date(month_day, field="dob", day_first=True) == date.isoformat()


@settings(deadline=None, derandomize=True, max_examples=300)
@given(st.integers(0, 40), st.integers(0, 40), st.integers(1890, 2110))
def test_numeric_dates_agree_with_the_calendar(first: int, second: int, year: int) -> None:
    """A plain reference (datetime.date) against the regex parser, day first."""
    expected: str | None = None
    if first <= 12 or second <= 12:  # otherwise neither part can be the month
        day, month = (second, first) if second > 12 else (first, second)
        try:
            expected = datetime.date(year, month, day).isoformat()
        except ValueError:
            expected = None
    if not 1900 <= year <= 2100:
        expected = None
    got = _normalise_or_reason("date", f"{first:02d}/{second:02d}/{year}")
    assert got == (expected if expected is not None else "rejected")


def test_date_parts_rejects_non_iso() -> None:
    with pytest.raises(InvalidValueError, match="ISO"):
        date_parts("02/03/2014")


# ---------------------------------------------------------------------------------------------
# postcodes

POSTCODE_HIERARCHY = [
    ("M1 1AE", "M", "M1", "M1 1"),
    ("B33 8TH", "B", "B33", "B33 8"),
    ("W1A 0AX", "W", "W1A", "W1A 0"),
    ("CR2 6XH", "CR", "CR2", "CR2 6"),
    ("DN55 1PT", "DN", "DN55", "DN55 1"),
    ("SW1A 1AA", "SW", "SW1A", "SW1A 1"),
    ("GIR 0AA", "GIR", "GIR", "GIR 0"),
]


@pytest.mark.parametrize(("postcode", "area", "district", "sector"), POSTCODE_HIERARCHY)
def test_postcode_hierarchy(postcode: str, area: str, district: str, sector: str) -> None:
    assert normalise_postcode(postcode.lower().replace(" ", ""), field="pc") == postcode
    assert postcode_area(postcode) == area
    assert postcode_district(postcode) == district
    assert postcode_sector(postcode) == sector


@pytest.mark.parametrize("helper", [postcode_area, postcode_district, postcode_sector])
@pytest.mark.parametrize("bad", ["sw1a 1aa", "SW1A1AA", "SW1A  1AA", "12345"])
def test_postcode_helpers_require_normalised_input(helper: Any, bad: str) -> None:
    with pytest.raises(InvalidValueError, match="normalised UK postcode"):
        helper(bad)


# ---------------------------------------------------------------------------------------------
# NHS numbers


def _reference_check_digit(first_nine: str) -> int | None:
    """Plain restatement of the NHS Data Dictionary rule, for comparison."""
    remainder = sum(int(first_nine[i]) * (10 - i) for i in range(9)) % 11
    return {0: 0, 1: None}.get(remainder, 11 - remainder)


def test_nhs_check_digit_known_answers() -> None:
    assert nhs_check_digit("943476591") == 9
    assert nhs_check_digit("401000009") == 0
    assert nhs_check_digit("428194821") is None  # remainder 1: check would be 10
    with pytest.raises(InvalidValueError, match="9 digits"):
        nhs_check_digit("94347659")


@settings(deadline=None, derandomize=True, max_examples=300)
@given(st.from_regex(r"[0-9]{9}", fullmatch=True))
def test_nhs_check_digit_matches_reference_and_only_one_last_digit_is_valid(nine: str) -> None:
    check = nhs_check_digit(nine)
    assert check == _reference_check_digit(nine)
    valid_last = [digit for digit in "0123456789" if is_valid_nhs_number(nine + digit)]
    if check is None or len(set(nine + str(check))) == 1:
        assert valid_last == []
    else:
        assert valid_last == [str(check)]
        spaced = f"{nine[:3]} {nine[3:6]}-{nine[6:]}{check}"
        assert normalise_nhs_number(spaced, field="nhs") == nine + str(check)


def test_is_valid_nhs_number() -> None:
    assert is_valid_nhs_number("9434765919")
    assert is_valid_nhs_number("943 476 5919")
    assert not is_valid_nhs_number("9434765918")
    assert not is_valid_nhs_number("943476591")
    assert not is_valid_nhs_number("1111111111")  # passes modulus 11, but a placeholder


# ---------------------------------------------------------------------------------------------
# idempotence of every normaliser on arbitrary text


@settings(deadline=None, derandomize=True, max_examples=150)
@given(kind=st.sampled_from(KINDS), raw=st.text(max_size=24), day_first=st.booleans())
def test_every_normaliser_is_idempotent(kind: str, raw: str, day_first: bool) -> None:
    once = _normalise_or_reason(kind, raw, day_first=day_first)
    if once is None or once == "rejected":
        return
    assert _normalise_or_reason(kind, once, day_first=day_first) == once


@settings(deadline=None, derandomize=True, max_examples=100)
@given(
    kind=st.sampled_from(["date", "postcode", "nhs_number", "sex"]),
    raw=st.one_of(
        st.from_regex(r"[0-9]{1,2}[/.-][0-9]{1,2}[/.-][0-9]{2,4}", fullmatch=True),
        st.from_regex(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}( [0-9]{2}:[0-9]{2})?", fullmatch=True),
        st.from_regex(r"[A-Za-z]{1,2}[0-9][0-9A-Za-z]? ?[0-9][A-Za-z]{2}", fullmatch=True),
        st.from_regex(r"[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}", fullmatch=True),
        st.sampled_from(["M", "f", "Girl", "boy", "X", "9", "other", "Female."]),
    ),
)
def test_structured_normalisers_are_idempotent_on_plausible_input(kind: str, raw: str) -> None:
    once = _normalise_or_reason(kind, raw)
    if once is None or once == "rejected":
        return
    assert _normalise_or_reason(kind, once) == once


# ---------------------------------------------------------------------------------------------
# the canary: no value ever reaches an error message

CANARY_CASES = [
    ("name", CANARY.encode()),  # names reject only non-strings; the type name is reported
    ("text", CANARY.encode()),
    ("exact", CANARY.encode()),
    ("date", CANARY),
    ("date", f"02/03/{CANARY}"),
    ("date", f"2 {CANARY} 2014"),
    ("date", f"2014-03-02{CANARY}"),
    ("date", "31/02/2014"),
    ("postcode", CANARY),
    ("postcode", f"SW1A {CANARY}"),
    ("nhs_number", CANARY),
    ("nhs_number", f"943 476 {CANARY}"),
    ("sex", CANARY),
]


def _assert_no_canary(error: InvalidValueError, secret: str) -> None:
    """Case-insensitive: normalisers lower- or upper-case a value before they reject it."""
    for text in (str(error), repr(error), error.reason, error.field, *map(str, error.args)):
        assert secret.lower() not in text.lower()


@pytest.mark.parametrize(("kind", "raw"), CANARY_CASES)
def test_canary_never_appears_in_error_messages(kind: str, raw: Any) -> None:
    with pytest.raises(InvalidValueError) as caught:
        NORMALISERS[kind](raw, field="canary_field")
    _assert_no_canary(caught.value, CANARY)
    _assert_no_canary(caught.value, "31/02")
    assert caught.value.field == "canary_field"


@pytest.mark.parametrize("helper", [date_parts, postcode_area, postcode_district, postcode_sector])
def test_canary_never_appears_in_helper_errors(helper: Any) -> None:
    with pytest.raises(InvalidValueError) as caught:
        helper(CANARY)
    _assert_no_canary(caught.value, CANARY)


@settings(deadline=None, derandomize=True, max_examples=100)
@given(kind=st.sampled_from(KINDS), before=st.text(max_size=8), after=st.text(max_size=8))
def test_canary_property(kind: str, before: str, after: str) -> None:
    try:
        NORMALISERS[kind](before + CANARY + after, field="canary_field")
    except InvalidValueError as error:
        _assert_no_canary(error, CANARY)


def test_normalise_date_reads_the_years_it_is_given() -> None:
    assert normalise_date("1890-05-06", field="dob", years=(1850, 2100)) == "1890-05-06"
    with pytest.raises(InvalidValueError, match="plausible range 1900-2100"):
        normalise_date("1890-05-06", field="dob")
    with pytest.raises(InvalidValueError, match="plausible range 2000-2020"):
        normalise_date("21/07/2021", field="dob", years=(2000, 2020))
