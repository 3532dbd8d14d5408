"""Tests for linkage.synthetic's error profiles: every error kind at its rate, labelled as
written, and the hard profile at least as messy as the typical one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from functools import cache

import numpy as np
import pytest

from linkage import namedata
from linkage.errors import InvalidValueError
from linkage.normalise import normalise_date, normalise_sex
from linkage.synthetic import (
    COLUMNS,
    DEFAULT_AGENCIES,
    ERROR_CATEGORIES,
    PROFILES,
    REFERENCE_DATE,
    SEX_STYLES,
    SEX_UNKNOWN_CODES,
    UNKNOWN_DATE,
    AgencyData,
    AgencyProfile,
    MissingRates,
    SyntheticData,
    generate_population,
)
from tests.helpers.synthetic import LARGE, large_population, parse_date, reference_nhs_valid

# --------------------------------------------------------------------------- errors, profiles

#: sha256 of generate_population(n, seed=s) with default arguments, computed on the code before
#: the newer error kinds existed (revision 940e7a1): the default output must not change.
DEFAULT_OUTPUT_SHA256 = {
    (3000, 11): "456beb32beaced457e26a42a12033e99cb8de14ba796d482b5bef38e9b3c5da7",
    (LARGE, 2026): "ba842cd0cb971660d74e4deab587645769494365df2acf67a6964b6a093c6812",
}
NEW_ERRORS = (
    "dob_day_off", "dob_month_off", "dob_digit", "dob_year_off", "dob_placeholder",
    "dob_unknown_date", "given_middle_swap", "given_family_swap", "family_half",
    "nhs_wrong_child", "sex_unknown",
)  # fmt: skip


def output_digest(data: SyntheticData) -> str:
    digest = hashlib.sha256()
    for name, agency in data.agencies.items():
        digest.update(name.encode())
        for column in COLUMNS:
            digest.update(json.dumps(agency.columns[column]).encode())
        digest.update(agency.child_id.astype("<i8").tobytes())
    digest.update(data.household_id.astype("<i8").tobytes())
    return digest.hexdigest()


def test_default_output_is_unchanged() -> None:
    assert output_digest(generate_population(3000, seed=11)) == DEFAULT_OUTPUT_SHA256[3000, 11]
    assert output_digest(large_population()) == DEFAULT_OUTPUT_SHA256[LARGE, 2026]
    for agency in large_population().agencies.values():
        for category in NEW_ERRORS:
            assert not agency.errors[category].any()


CLEAN = AgencyProfile(
    name="truth", record_prefix="TRU", coverage=1.0, duplicate_rate=0.0, typo_rate=0.0,
    nickname_rate=0.0, transliteration_rate=0.0, family_name_change_rate=0.0,
    hyphenation_rate=0.0, date_transposition_rate=0.0, moved_house_rate=0.0,
    missing=MissingRates(), date_format="iso", has_nhs_number=1.0, sex_style="M/F",
)  # fmt: skip
"""Every child once, exactly as drawn: the truth the erroneous records are checked against."""
MESSY = dataclasses.replace(
    CLEAN, name="messy", record_prefix="MSY", date_format="uk", sex_style="1/2",
    dob_day_off_rate=0.05, dob_month_off_rate=0.05, dob_digit_rate=0.05, dob_year_off_rate=0.05,
    dob_placeholder_rate=0.05, dob_unknown_date_rate=0.03, given_middle_swap_rate=0.2,
    given_family_swap_rate=0.05, family_name_half_rate=0.5, nhs_wrong_child_rate=0.1,
    sex_unknown_rate=0.1,
)  # fmt: skip
MESSY_CHILDREN = 5000


@cache
def messy_population() -> SyntheticData:
    return generate_population(
        MESSY_CHILDREN, seed=77, agencies=(CLEAN, MESSY), double_barrelled_share=0.2
    )


def truth_and_messy() -> tuple[AgencyData, AgencyData]:
    data = messy_population()
    truth, messy = data.agencies["truth"], data.agencies["messy"]
    order = np.argsort(truth.child_id)
    assert np.array_equal(truth.child_id[order], np.arange(MESSY_CHILDREN))
    return truth, messy


def true_value(truth: AgencyData, column: str, child: int) -> str:
    index = int(np.flatnonzero(truth.child_id == child)[0])
    return truth.columns[column][index] or ""


def test_each_new_error_kind_occurs_at_about_its_rate() -> None:
    truth, messy = truth_and_messy()
    true_middle = np.array([bool(true_value(truth, "middle_names", c)) for c in messy.child_id])
    true_family = [true_value(truth, "family_name", c) for c in messy.child_id.tolist()]
    # Double-barrelled by the household draw: a hyphenated name that no name table holds.
    double = np.array([family not in namedata_family_names() for family in true_family])
    double_or_table = np.array(["-" in family for family in true_family])
    everyone = np.ones(len(messy), dtype=np.bool_)
    expected = {
        "dob_day_off": (MESSY.dob_day_off_rate, everyone),
        "dob_month_off": (MESSY.dob_month_off_rate, everyone),
        "dob_digit": (MESSY.dob_digit_rate, everyone),
        "dob_year_off": (MESSY.dob_year_off_rate, everyone),
        "dob_placeholder": (MESSY.dob_placeholder_rate, everyone),
        "dob_unknown_date": (MESSY.dob_unknown_date_rate, everyone),
        "given_middle_swap": (MESSY.given_middle_swap_rate, true_middle),
        "given_family_swap": (MESSY.given_family_swap_rate, everyone),
        "family_half": (MESSY.family_name_half_rate, double),
        "nhs_wrong_child": (MESSY.nhs_wrong_child_rate, everyone),
        "sex_unknown": (MESSY.sex_unknown_rate, everyone),
    }
    assert double.sum() > 500 and true_middle.sum() > 1000
    for category, (rate, eligible) in expected.items():
        observed = messy.errors[category][eligible].mean()
        # Within 20 % of the rate (several standard errors at these sizes); a date error with no
        # valid result (a month off for 31 May) is rare enough to stay inside that.
        assert abs(observed - rate) < 0.2 * rate, category
        never = ~double_or_table if category == "family_half" else ~eligible
        assert not messy.errors[category][never].any(), category


@cache
def namedata_family_names() -> list[str]:
    return [name for group in namedata.NAME_GROUPS for name in group.family]


def test_date_error_labels_match_the_dates_written() -> None:
    truth, messy = truth_and_messy()
    for r, child in enumerate(messy.child_id.tolist()):
        written = parse_date(messy.columns["date_of_birth"][r] or "", "uk")
        real = dt.date.fromisoformat(true_value(truth, "date_of_birth", child))
        flagged = [c for c in NEW_ERRORS if c.startswith("dob_") and messy.errors[c][r]]
        assert len(flagged) <= 1
        assert normalise_date(messy.columns["date_of_birth"][r], field="dob") is not None
        if not flagged:
            assert written == real
            continue
        kind = flagged[0]
        same = [written.year == real.year, written.month == real.month, written.day == real.day]
        if kind == "dob_year_off":
            assert abs(written.year - real.year) == 1 and same[1:] == [True, True]
        elif kind == "dob_month_off":
            assert abs(written.month - real.month) == 1 and same[0] and same[2]
        elif kind == "dob_day_off":
            assert abs(written.day - real.day) == 1 and same[:2] == [True, True]
        elif kind == "dob_digit":
            before, after = real.strftime("%Y%m%d"), written.strftime("%Y%m%d")
            assert sum(a != b for a, b in zip(before, after, strict=True)) == 1
        elif kind == "dob_placeholder":
            assert written == dt.date(real.year, 1, 1) != real
        else:
            assert written == UNKNOWN_DATE
        assert written <= REFERENCE_DATE


def test_name_error_labels_match_the_names_written() -> None:
    truth, messy = truth_and_messy()
    flagged = np.flatnonzero(
        messy.errors["given_middle_swap"]
        | messy.errors["given_family_swap"]
        | messy.errors["family_half"]
    ).tolist()
    assert len(flagged) > 300
    for r in flagged:
        child = int(messy.child_id[r])
        true_given = true_value(truth, "given_name", child)
        true_middle = true_value(truth, "middle_names", child).split(" ")
        true_family = true_value(truth, "family_name", child)
        given, family = messy.columns["given_name"][r], messy.columns["family_name"][r]
        middle = (messy.columns["middle_names"][r] or "").split(" ")
        # Errors apply in this order: half a family name, given/middle swap, given/family swap.
        expected_family = true_family
        if messy.errors["family_half"][r]:
            assert expected_family.count("-") >= 1
            halves = expected_family.split("-")
            swapped = family if not messy.errors["given_family_swap"][r] else given
            assert swapped is not None
            expected_family = swapped
            assert expected_family in ("-".join(halves[:-1]), halves[-1], halves[0])
            assert expected_family != true_family
        expected_given = true_given
        if messy.errors["given_middle_swap"][r]:
            assert middle[0] == true_given
            expected_given = true_middle[0]
        else:
            assert middle == true_middle or not any(middle)
        if messy.errors["given_family_swap"][r]:
            expected_given, expected_family = expected_family, expected_given
        assert (given, family) == (expected_given, expected_family)


def test_wrong_nhs_numbers_are_valid_and_another_childs() -> None:
    truth, messy = truth_and_messy()
    owner = {
        number: int(child)
        for number, child in zip(truth.columns["nhs_number"], truth.child_id, strict=True)
    }
    wrong = np.flatnonzero(messy.errors["nhs_wrong_child"]).tolist()
    assert wrong
    for r in range(len(messy)):
        number = (messy.columns["nhs_number"][r] or "").replace(" ", "")
        assert reference_nhs_valid(number)
        if r in wrong:
            assert owner[number] != int(messy.child_id[r])
        else:
            assert owner[number] == int(messy.child_id[r])


def test_sex_unknown_is_written_in_the_agency_style_and_reads_as_missing() -> None:
    _, messy = truth_and_messy()
    unknown = np.flatnonzero(messy.errors["sex_unknown"]).tolist()
    assert unknown
    for r in unknown:
        assert messy.columns["sex"][r] in SEX_UNKNOWN_CODES[MESSY.sex_style]
        assert normalise_sex(messy.columns["sex"][r], field="sex") is None
    for style, codes in SEX_UNKNOWN_CODES.items():
        assert style in SEX_STYLES
        assert all(normalise_sex(code, field="sex") is None for code in codes)


def test_existing_error_labels_match_the_records() -> None:
    for agency in large_population().agencies.values():
        for column, category in (
            ("date_of_birth", "dob_missing"), ("sex", "sex_missing"),
            ("postcode", "postcode_missing"), ("given_name", "given_missing"),
            ("family_name", "family_missing"), ("nhs_number", "nhs_missing"),
        ):  # fmt: skip
            blank = np.array([not value for value in agency.columns[column]])
            assert np.array_equal(agency.errors[category], blank), (agency.name, category)
        _, counts = np.unique(agency.child_id, return_counts=True)
        assert agency.errors["duplicate"].sum() == (counts - 1).sum()
        assert set(agency.errors) == set(ERROR_CATEGORIES)
    combined = large_population().all_records()
    assert all(combined.errors[c].shape == combined.child_id.shape for c in ERROR_CATEGORIES)


def test_profiles_are_valid_and_hard_is_at_least_as_messy_as_typical() -> None:
    assert set(PROFILES) == {"typical", "hard"}
    default_names = [profile.name for profile in DEFAULT_AGENCIES]
    for profiles in PROFILES.values():
        assert [profile.name for profile in profiles] == default_names
        for profile in profiles:
            assert dataclasses.replace(profile) == profile  # validates again
    for typical, hard in zip(PROFILES["typical"], PROFILES["hard"], strict=True):
        for name in [f.name for f in dataclasses.fields(AgencyProfile)]:
            if name.endswith("_rate") and name not in ("case_noise_rate", "nhs_spaced_rate",
                                                       "postcode_no_space_rate"):  # fmt: skip
                assert getattr(hard, name) >= getattr(typical, name), (hard.name, name)
        for name in [f.name for f in dataclasses.fields(MissingRates)]:
            assert getattr(hard.missing, name) >= getattr(typical.missing, name)
        assert hard.has_nhs_number <= typical.has_nhs_number


def test_the_hard_profile_shows_every_error_category() -> None:
    data = generate_population(5000, seed=5, agencies=PROFILES["hard"])
    errors = data.all_records().errors
    for category in ERROR_CATEGORIES:
        assert errors[category].any(), category
    again = generate_population(5000, seed=5, agencies=PROFILES["hard"])
    assert output_digest(again) == output_digest(data)


def test_date_rates_over_one_are_rejected() -> None:
    with pytest.raises(InvalidValueError, match="sum to at most 1"):
        dataclasses.replace(DEFAULT_AGENCIES[0], dob_day_off_rate=0.6, dob_year_off_rate=0.6)
    with pytest.raises(InvalidValueError, match="double_barrelled_share"):
        generate_population(10, seed=1, double_barrelled_share=1.5)
