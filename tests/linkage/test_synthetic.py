"""Tests for the seeded synthetic multi-agency child population (linkage.synthetic)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections import Counter, defaultdict

import jellyfish
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import namedata
from linkage.errors import InvalidValueError
from linkage.synthetic import (
    COLUMNS,
    DEFAULT_AGENCIES,
    REFERENCE_DATE,
    SEX_STYLES,
    AgencyData,
    AgencyProfile,
    SyntheticData,
    generate_population,
    is_valid_nhs_number,
    make_typo,
    nhs_check_digit,
    rows,
    transliterate,
    true_pairs_between,
    true_pairs_within,
)
from tests.helpers.synthetic import LARGE, large_population, parse_date, reference_nhs_valid

POSTCODE_SHAPE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][ABD-HJLNP-UW-Z]{2}$")


def present(values: list[str | None]) -> list[str]:
    return [value for value in values if value]


def blank_fraction(values: list[str | None]) -> float:
    return sum(1 for value in values if not value) / len(values)


def canonical(value: str | None) -> str:
    """Undo formatting noise only (case, spaces), as any normaliser would."""
    return (value or "").replace(" ", "").upper()


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_output() -> None:
    first = generate_population(3000, seed=11)
    second = generate_population(3000, seed=11)
    assert list(first.agencies) == [profile.name for profile in DEFAULT_AGENCIES]
    for name, agency in first.agencies.items():
        assert agency.columns == second.agencies[name].columns
        np.testing.assert_array_equal(agency.child_id, second.agencies[name].child_id)
    np.testing.assert_array_equal(first.household_id, second.household_id)


def test_different_seed_gives_different_output() -> None:
    first = generate_population(3000, seed=11)
    second = generate_population(3000, seed=12)
    for name, agency in first.agencies.items():
        assert agency.columns["family_name"] != second.agencies[name].columns["family_name"]
        assert agency.columns["nhs_number"] != second.agencies[name].columns["nhs_number"]


def test_an_agency_does_not_depend_on_the_other_agencies() -> None:
    everyone = generate_population(2000, seed=5)
    police_only = generate_population(2000, seed=5, agencies=DEFAULT_AGENCIES[:1])
    assert list(police_only.agencies) == ["police"]
    assert police_only.agencies["police"].columns == everyone.agencies["police"].columns


def test_output_does_not_depend_on_todays_date() -> None:
    data = generate_population(2000, seed=3)
    health = data.agencies["health"]
    dates = [parse_date(value, "iso") for value in present(health.columns["date_of_birth"])]
    assert max(dates) <= REFERENCE_DATE
    assert min(dates) > dt.date(2008, 1, 1)  # every child is 0-17 on 2026-01-01


# --------------------------------------------------------------------------- ground truth


def reference_pairs(left: AgencyData, right: AgencyData) -> set[tuple[int, int]]:
    positions: dict[int, list[int]] = defaultdict(list)
    for j, child in enumerate(right.child_id.tolist()):
        positions[child].append(j)
    return {(i, j) for i, child in enumerate(left.child_id.tolist()) for j in positions[child]}


def test_true_pairs_between_match_a_plain_reference() -> None:
    data = generate_population(3000, seed=1)
    police, care = data.agencies["police"], data.agencies["childrens_social_care"]
    left, right = true_pairs_between(police, care)
    pairs = list(zip(left.tolist(), right.tolist(), strict=True))
    assert pairs == sorted(pairs)
    assert set(pairs) == reference_pairs(police, care)
    assert len(pairs) > 0
    np.testing.assert_array_equal(police.child_id[left], care.child_id[right])


def test_true_pairs_within_are_the_duplicates() -> None:
    data = generate_population(3000, seed=1)
    care = data.agencies["childrens_social_care"]
    left, right = true_pairs_within(care)
    assert left.size > 0, "social care must hold duplicate records"
    assert np.all(left < right)
    expected = {(i, j) for i, j in reference_pairs(care, care) if i < j}
    assert set(zip(left.tolist(), right.tolist(), strict=True)) == expected
    assert left.size == len(care) - np.unique(care.child_id).size  # at most one duplicate each


def test_record_ids_are_unique_agency_local_and_shuffled() -> None:
    data = large_population()
    for profile in DEFAULT_AGENCIES:
        agency = data.agencies[profile.name]
        record_ids = agency.columns["record_id"]
        assert len(set(record_ids)) == len(agency)
        pattern = re.compile(rf"^{profile.record_prefix}-\d{{6}}$")
        assert all(pattern.match(record_id or "") for record_id in record_ids)
        order = np.arange(len(agency))
        correlation = np.corrcoef(order, agency.child_id)[0, 1]
        assert abs(correlation) < 0.05, "record order must not follow child order"


def test_true_pairs_agree_on_the_fields_they_should() -> None:
    """Records of one child mostly agree: would fail if child_id were misaligned with rows."""
    data = large_population()
    health, school = data.agencies["health"], data.agencies["school"]
    left, right = true_pairs_between(health, school)
    health_dob = health.columns["date_of_birth"]
    school_dob = school.columns["date_of_birth"]
    health_sex = health.columns["sex"]
    school_sex = school.columns["sex"]
    same_dob = same_sex = compared_dob = compared_sex = 0
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        if health_dob[i] and school_dob[j]:
            compared_dob += 1
            same_dob += parse_date(health_dob[i] or "", "iso") == parse_date(
                school_dob[j] or "", "mon"
            )
        if health_sex[i] and school_sex[j]:
            compared_sex += 1
            same_sex += SEX_STYLES["1/2"].index(health_sex[i] or "") == SEX_STYLES[
                "Male/Female"
            ].index(school_sex[j] or "")
    assert same_sex == compared_sex
    assert 0.97 < same_dob / compared_dob < 1.0  # a few transpositions, nothing else


def test_all_records_concatenates_with_sources() -> None:
    data = generate_population(1000, seed=4)
    combined = data.all_records()
    total = sum(len(agency) for agency in data.agencies.values())
    assert combined.child_id.shape == (total,)
    assert all(len(values) == total for values in combined.columns.values())
    assert Counter(combined.source.tolist()) == {
        name: len(agency) for name, agency in data.agencies.items()
    }
    offset = 0
    for name, agency in data.agencies.items():
        part = slice(offset, offset + len(agency))
        np.testing.assert_array_equal(combined.child_id[part], agency.child_id)
        assert set(combined.source[part].tolist()) == {name}
        assert combined.columns["family_name"][part] == agency.columns["family_name"]
        offset += len(agency)


def test_rows_yield_strings_for_csv() -> None:
    agency = generate_population(500, seed=4).agencies["police"]
    written = list(rows(agency))
    assert len(written) == len(agency)
    for index, row in enumerate(written):
        assert tuple(row) == COLUMNS
        assert all(isinstance(value, str) for value in row.values())
        assert row["family_name"] == (agency.columns["family_name"][index] or "")


# --------------------------------------------------------------------------- validity


def test_nhs_numbers_are_valid_and_unique_per_child() -> None:
    data = large_population()
    number_of_child: dict[int, str] = {}
    for agency in data.agencies.values():
        for child, value in zip(
            agency.child_id.tolist(), agency.columns["nhs_number"], strict=True
        ):
            if not value:
                continue
            digits = value.replace(" ", "")
            assert reference_nhs_valid(digits)
            assert number_of_child.setdefault(child, digits) == digits
    assert len(set(number_of_child.values())) == len(number_of_child)


def test_nhs_helpers_on_known_answers() -> None:
    assert is_valid_nhs_number("943 476 5919")  # the NHS's published example
    assert is_valid_nhs_number("9434765919")
    assert not is_valid_nhs_number("9434765918")
    assert not is_valid_nhs_number("943476591")
    assert not is_valid_nhs_number("94347659x9")
    assert nhs_check_digit("943476591") == 9
    with pytest.raises(InvalidValueError):
        nhs_check_digit("12345")


@settings(deadline=None, max_examples=200)
@given(st.integers(min_value=0, max_value=999_999_999))
def test_nhs_check_digit_matches_reference(body_number: int) -> None:
    body = f"{body_number:09d}"
    check = nhs_check_digit(body)
    if check is None:
        assert not any(reference_nhs_valid(body + str(digit)) for digit in range(10))
    else:
        assert reference_nhs_valid(body + str(check))
        assert is_valid_nhs_number(body + str(check))


def test_postcodes_have_a_uk_shape_and_a_real_district() -> None:
    data = large_population()
    districts = set(namedata.OUTWARD_CODES)
    for agency in data.agencies.values():
        for value in present(agency.columns["postcode"]):
            compact = value.replace(" ", "").upper()
            assert POSTCODE_SHAPE.match(compact)
            assert compact[:-3] in districts


def test_dates_parse_in_their_agency_format() -> None:
    data = large_population()
    for profile in DEFAULT_AGENCIES:
        values = present(data.agencies[profile.name].columns["date_of_birth"])
        assert values
        for value in values:
            born = parse_date(value, profile.date_format)
            assert dt.date(2008, 1, 2) <= born <= REFERENCE_DATE


def test_sex_codes_follow_the_agency_style() -> None:
    data = large_population()
    for profile in DEFAULT_AGENCIES:
        codes = set(present(data.agencies[profile.name].columns["sex"]))
        assert codes == set(SEX_STYLES[profile.sex_style])


# --------------------------------------------------------------------------- rates


@pytest.mark.parametrize("profile", DEFAULT_AGENCIES, ids=lambda profile: profile.name)
def test_rates_are_roughly_as_configured(profile: AgencyProfile) -> None:
    agency = large_population().agencies[profile.name]
    held = np.unique(agency.child_id).size
    assert abs(held / LARGE - profile.coverage) < 0.03
    assert abs((len(agency) - held) / held - profile.duplicate_rate) < 0.03
    nhs_present = 1 - blank_fraction(agency.columns["nhs_number"])
    assert abs(nhs_present - profile.has_nhs_number) < 0.03
    for column in ("given_name", "family_name", "date_of_birth", "sex"):
        expected = getattr(profile.missing, column)
        assert abs(blank_fraction(agency.columns[column]) - expected) < 0.03
    missing_middle = blank_fraction(agency.columns["middle_names"])
    expected_middle = 1 - 0.3 * (1 - profile.missing.middle_names)
    assert abs(missing_middle - expected_middle) < 0.03
    spaced = [value for value in present(agency.columns["nhs_number"]) if " " in value]
    assert (
        abs(len(spaced) / len(present(agency.columns["nhs_number"])) - profile.nhs_spaced_rate)
        < 0.05
    )


def test_missing_values_mix_none_and_empty_strings() -> None:
    police = large_population().agencies["police"]
    for column in ("middle_names", "date_of_birth", "postcode", "nhs_number"):
        values = police.columns[column]
        assert None in values
        assert "" in values


def test_about_a_quarter_of_children_have_a_sibling() -> None:
    data = large_population()
    sizes = np.bincount(data.household_id)
    with_sibling = sizes[data.household_id] >= 2
    assert abs(with_sibling.mean() - 0.25) < 0.03
    assert sizes.max() <= 3


def test_siblings_share_family_name_and_postcode_and_some_are_twins() -> None:
    data = large_population()
    health = data.agencies["health"]
    by_household: dict[int, list[int]] = defaultdict(list)
    for record, child in enumerate(health.child_id.tolist()):
        by_household[int(data.household_id[child])].append(record)
    agree = compared = twins = 0
    for records in by_household.values():
        children = {int(health.child_id[r]): r for r in records}
        if len(children) < 2:
            continue
        first, second = list(children.values())[:2]
        compared += 1
        agree += all(
            canonical(health.columns[column][first]) == canonical(health.columns[column][second])
            for column in ("family_name", "postcode")
        )
        twins += health.columns["date_of_birth"][first] == health.columns["date_of_birth"][second]
    assert compared > 1000
    assert agree / compared > 0.6  # per-record errors (moves, typos, name changes) break some
    assert 0.01 < twins / compared < 0.1


def test_police_is_the_messiest_agency() -> None:
    by_name = {profile.name: profile for profile in DEFAULT_AGENCIES}
    police = by_name.pop("police")
    for other in by_name.values():
        assert police.typo_rate > other.typo_rate
        assert police.date_transposition_rate >= other.date_transposition_rate


# --------------------------------------------------------------------------- names and variation


def test_name_tables_are_large_and_diverse() -> None:
    given_names = {name for group in namedata.NAME_GROUPS for name in (*group.boys, *group.girls)}
    family_names = {name for group in namedata.NAME_GROUPS for name in group.family}
    assert len(given_names) >= 400
    assert len(family_names) >= 600
    for name in ("Muhammad", "Aisha", "Arjun", "Priya", "Zainab", "Harpreet", "Jakub", "Zuzanna",
                 "Oliwia", "Andrei", "Ionut", "Chidi", "Ngozi", "Oluwaseun", "Kwame", "Amara",
                 "Abena", "Zoë", "Siobhán", "José", "Łukasz"):  # fmt: skip
        assert name in given_names
    for name in ("Smith", "Jones", "Khan", "Ahmed", "Begum", "Patel", "Singh", "Kaur", "Nowak",
                 "Kowalski", "Popescu", "Okafor", "Adeyemi", "Mensah", "Nguyen", "Chen",
                 "O'Brien", "van der Berg", "Smith-Jones", "McDonald", "MacDonald", "Müller",
                 "Nguyễn"):  # fmt: skip
        assert name in family_names
    assert len(namedata.OUTWARD_CODES) >= 300
    assert abs(sum(group.population_share for group in namedata.NAME_GROUPS) - 1) < 1e-9


def test_given_names_are_long_tailed() -> None:
    health = large_population().agencies["health"]
    counts = Counter(present(health.columns["given_name"]))
    shares = sorted(counts.values(), reverse=True)
    assert len(counts) >= 350
    assert shares[0] / sum(shares) < 0.05
    assert shares[0] > 10 * shares[len(shares) // 2]  # the head is far above the median


def formal_names_by_child(data: SyntheticData) -> dict[int, str]:
    """Child -> given name as health (the cleanest agency) holds it in its first record."""
    health = data.agencies["health"]
    names: dict[int, str] = {}
    for child, name in zip(health.child_id.tolist(), health.columns["given_name"], strict=True):
        if name:
            names.setdefault(child, name)
    return names


def test_police_records_show_every_kind_of_variation() -> None:
    data = large_population()
    police = data.agencies["police"]
    given_names = police.columns["given_name"]
    family_names = police.columns["family_name"]
    nicknames = {short for _, shorts in namedata.NICKNAMES for short in shorts}
    formal = formal_names_by_child(data)
    nickname_used = sum(
        1
        for child, name in zip(police.child_id.tolist(), given_names, strict=True)
        if name in nicknames and formal.get(child) not in (None, name)
    )
    assert nickname_used > 20
    assert any(name and name.startswith("  ") for name in given_names)  # padded
    assert any(name and name.strip().isupper() and len(name.strip()) > 2 for name in family_names)
    assert any(name and name.islower() for name in family_names)
    assert any(name and "-" in name.strip() for name in family_names)
    postcodes = present(police.columns["postcode"])
    assert any(" " not in value.strip() for value in postcodes)
    assert any(" " in value.strip() for value in postcodes)


def test_variants_reach_transliterated_and_ascii_forms() -> None:
    data = large_population()
    all_given = {
        name.strip().lower()
        for agency in data.agencies.values()
        for name in present(agency.columns["given_name"])
    }
    all_family = {
        name.strip().lower()
        for agency in data.agencies.values()
        for name in present(agency.columns["family_name"])
    }
    assert {"muhammad", "mohammed"} <= all_given
    assert all_given & {"mohammad", "mohamed", "muhammed"}
    assert any(not name.isascii() for name in all_family)
    assert {"o'brien"} & all_family or {"o'connor"} & all_family


def test_transliterate_examples() -> None:
    assert transliterate("Muhammad", 0.0) in {"Mohammed", "Mohammad", "Mohamed", "Muhammed"}
    assert transliterate("Łukasz", 0.5) == "Lukasz"
    assert transliterate("Nguyễn", 0.5) == "Nguyen"
    assert transliterate("Zoë", 0.5) == "Zoe"
    assert transliterate("Smith", 0.5) == "Smith"


@settings(deadline=None, max_examples=300)
@given(
    st.text(
        alphabet=st.characters(categories=("Lu", "Ll"), include_characters=" '-"),
        min_size=1,
        max_size=20,
    ),
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_a_typo_is_exactly_one_edit(text: str, kind: float, position: float, letter: float) -> None:
    typo = make_typo(text, kind, position, letter)
    assert typo
    assert typo != text
    assert jellyfish.damerau_levenshtein_distance(text, typo) == 1


def test_typos_use_keyboard_neighbours() -> None:
    assert make_typo("Smith", 0.6, 0.0, 0.0) in {"Wmith", "Emith", "Amith", "Dmith", "Zmith",
                                                   "Xmith"}  # fmt: skip
    assert make_typo("Smith", 0.3, 0.99, 0.0) == "Smit"
    assert make_typo("Smith", 0.9, 0.0, 0.0) == "mSith"
    with pytest.raises(InvalidValueError):
        make_typo("", 0.5, 0.5, 0.5)


# --------------------------------------------------------------------------- arguments


def test_bad_profiles_are_rejected_with_every_problem() -> None:
    with pytest.raises(InvalidValueError) as caught:
        dataclasses.replace(DEFAULT_AGENCIES[0], coverage=1.5, date_format="american")
    message = str(caught.value)
    assert "coverage" in message
    assert "date_format" in message


@pytest.mark.parametrize("n_children", [-1, 2.5, True])
def test_bad_population_sizes_are_rejected(n_children: object) -> None:
    with pytest.raises(InvalidValueError):
        generate_population(n_children, seed=1)  # type: ignore[arg-type]


def test_duplicate_agency_names_are_rejected() -> None:
    with pytest.raises(InvalidValueError):
        generate_population(10, seed=1, agencies=(DEFAULT_AGENCIES[0], DEFAULT_AGENCIES[0]))


@pytest.mark.parametrize("n_children", [0, 1, 2, 7])
def test_tiny_populations_work(n_children: int) -> None:
    data = generate_population(n_children, seed=9)
    for agency in data.agencies.values():
        assert all(len(values) == len(agency) for values in agency.columns.values())
        assert np.all(agency.child_id < max(n_children, 1))
    assert data.household_id.shape == (n_children,)


# --------------------------------------------------------------------------- size


def test_a_population_holds_at_least_two_records_per_child() -> None:
    # (how fast a million records are generated is a benchmark figure, not a unit test's)
    data = generate_population(5_000, seed=1)
    records = sum(len(agency) for agency in data.agencies.values())
    assert records >= 10_000


def test_middle_names_never_repeat_the_given_name() -> None:
    health = generate_population(5000, seed=8).agencies["health"]
    pairs = zip(health.columns["given_name"], health.columns["middle_names"], strict=True)
    with_middle = [(given_name, middle) for given_name, middle in pairs if given_name and middle]
    assert len(with_middle) > 1000
    for given_name, middle in with_middle:
        assert (given_name or "").strip().lower() not in (middle or "").lower().split()
