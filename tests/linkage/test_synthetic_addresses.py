"""Tests for the synthetic population's household addresses (``addresses=True``): present and
shared by a household, errors as documented, moved with the postcode, deterministic, and
drawn so that every other value is exactly as without them."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from functools import cache

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkage.synthetic import (
    ADDRESS_COLUMN,
    ADDRESS_ERROR_CATEGORIES,
    COLUMNS,
    DEFAULT_AGENCIES,
    ERROR_CATEGORIES,
    FLAT_SHARE,
    PROFILES,
    AgencyData,
    AgencyProfile,
    MissingRates,
    SyntheticData,
    generate_population,
    rows,
)
from linkage.synthetic.addresses import STREET_TYPES, abbreviate, mistype_number
from tests.linkage.test_synthetic_errors import output_digest

#: (profile, children, seed) -> sha256 of the columns (``output_digest``) and of the error flags
#: of generate_population, computed at revision bb26883, before addresses existed.
BEFORE_ADDRESSES_SHA256 = {
    ("typical", 3000, 11): (
        "99747d3b2fd8cfce88e29da937ac0132d3383e7639ae08f98e95de698134736c",
        "86bae6aa5b61b1e43532357160840204744efb35e31a437549de51c632d37243",
    ),
    ("hard", 3000, 11): (
        "965828e1eef9b389ba818c0b7f40c6d5a82bc90199c646f61c6c6624d23fc725",
        "a4efb7ac7644798010082e7aeca62bc1e389ca72226ee588b0eb85106de49ecc",
    ),
}

CLEAN = AgencyProfile(
    name="truth", record_prefix="TRU", coverage=1.0, duplicate_rate=0.0, typo_rate=0.0,
    nickname_rate=0.0, transliteration_rate=0.0, family_name_change_rate=0.0,
    hyphenation_rate=0.0, date_transposition_rate=0.0, moved_house_rate=0.0,
    missing=MissingRates(), date_format="iso", has_nhs_number=1.0, sex_style="M/F",
)  # fmt: skip
"""Every child once, at the household's address as drawn."""
MESSY = dataclasses.replace(
    CLEAN, name="messy", record_prefix="MSY", address_abbreviation_rate=0.3,
    address_number_typo_rate=0.05, address_number_missing_rate=0.05,
    address_flat_dropped_rate=0.4, missing=MissingRates(address=0.1),
)  # fmt: skip
"""Address errors only (no move, no case noise): each record differs from the truth only by
the errors it is flagged with."""
MOVING = dataclasses.replace(CLEAN, name="moving", record_prefix="MOV", moved_house_rate=0.3)
CHILDREN = 5000
_FLAT = re.compile(r"^Flat (\d+), (.*)$")
_NUMBERED = re.compile(r"^(\d+) (.*)$")


@cache
def population() -> SyntheticData:
    return generate_population(CHILDREN, seed=31, agencies=(CLEAN, MESSY, MOVING), addresses=True)


def by_child(agency: AgencyData, column: str = ADDRESS_COLUMN) -> list[str | None]:
    """The agency's value of each child, in child order (one record per child here)."""
    order = np.argsort(agency.child_id)
    assert np.array_equal(agency.child_id[order], np.arange(CHILDREN))
    values = agency.columns[column]
    return [values[i] for i in order.tolist()]


def flags_by_child(agency: AgencyData, category: str) -> np.ndarray:
    return agency.errors[category][np.argsort(agency.child_id)]


def parts(address: str) -> tuple[int, int, str]:
    """(flat, house number, street) of an address line; 0 for a part left out."""
    flat = 0
    if match := _FLAT.match(address):
        flat, address = int(match[1]), match[2]
    if match := _NUMBERED.match(address):
        return flat, int(match[1]), match[2]
    return flat, 0, address


def errors_digest(data: SyntheticData) -> str:
    digest = hashlib.sha256()
    for agency in data.agencies.values():
        for category in ERROR_CATEGORIES:
            digest.update(agency.errors[category].tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize(("profile", "children", "seed"), sorted(BEFORE_ADDRESSES_SHA256))
def test_addresses_leave_every_other_value_as_before_they_existed(
    profile: str, children: int, seed: int
) -> None:
    for addresses in (False, True):
        data = generate_population(
            children, seed=seed, agencies=PROFILES[profile], addresses=addresses
        )
        columns, errors = BEFORE_ADDRESSES_SHA256[profile, children, seed]
        assert output_digest(data) == columns
        assert errors_digest(data) == errors
        for agency in data.agencies.values():
            assert (ADDRESS_COLUMN in agency.columns) is addresses
            assert set(agency.errors) == {
                *ERROR_CATEGORIES, *(ADDRESS_ERROR_CATEGORIES if addresses else ())
            }  # fmt: skip


def test_default_agencies_with_and_without_addresses_agree_on_every_other_column() -> None:
    without = generate_population(2000, seed=4)
    with_addresses = generate_population(2000, seed=4, addresses=True)
    assert output_digest(without) == output_digest(with_addresses)
    assert errors_digest(without) == errors_digest(with_addresses)
    for agency in with_addresses.agencies.values():
        assert agency.column_names == (*COLUMNS, ADDRESS_COLUMN)
        for category in ADDRESS_ERROR_CATEGORIES[:-1]:  # the default agencies make none
            assert not agency.errors[category].any(), category


def test_every_child_has_an_address_shared_by_its_household() -> None:
    data = population()
    truth = by_child(data.agencies["truth"])
    assert all(truth)
    household: dict[int, str] = {}
    for child, address in enumerate(truth):
        assert household.setdefault(int(data.household_id[child]), address or "") == address
    assert len(set(truth)) > 0.9 * len(household)  # households rarely share an address
    in_flat = np.mean([bool(_FLAT.match(a or "")) for a in truth])
    assert abs(in_flat - FLAT_SHARE) < 0.03
    streets = {parts(a or "")[2] for a in truth}
    assert 200 < len(streets) < len(truth) / 4  # a street is a frequent value
    assert all(parts(a or "")[1] >= 1 for a in truth)


def test_address_errors_are_as_flagged_and_at_about_their_rates() -> None:
    data = population()
    truth, messy = by_child(data.agencies["truth"]), data.agencies["messy"]
    written = by_child(messy)
    flags = {c: flags_by_child(messy, c) for c in ADDRESS_ERROR_CATEGORIES}
    for child, (true, seen) in enumerate(zip(truth, written, strict=True)):
        flagged = {c for c in ADDRESS_ERROR_CATEGORIES if flags[c][child]}
        if not seen:
            assert flagged == {"address_missing"}
            continue
        true_flat, true_number, true_street = parts(true or "")
        flat, number, street = parts(seen)
        assert ("address_abbreviated" in flagged) == (street != true_street)
        if street != true_street:
            assert street == abbreviate(true_street)
        assert ("address_number_missing" in flagged) == (number == 0)
        assert ("address_number_typo" in flagged) == (0 < number != true_number)
        if "address_number_typo" in flagged:
            differing = sum(a != b for a, b in zip(str(number), str(true_number), strict=True))
            assert differing in (1, 2)  # one digit replaced, or two adjacent swapped
        dropped = "address_flat_dropped" in flagged
        assert dropped == (true_flat > 0 and flat == 0 and number > 0)
        assert flat in (0, true_flat)
    eligible = {
        "address_abbreviated": np.array([abbreviate(parts(t or "")[2]) != parts(t or "")[2]
                                         for t in truth]),
        "address_flat_dropped": np.array([parts(t or "")[0] > 0 for t in truth]),
    }  # fmt: skip
    rates = {
        "address_abbreviated": MESSY.address_abbreviation_rate,
        "address_number_missing": MESSY.address_number_missing_rate,
        "address_flat_dropped": MESSY.address_flat_dropped_rate,
        "address_number_typo": MESSY.address_number_typo_rate,
        "address_missing": MESSY.missing.address,
    }
    present = ~flags["address_missing"]
    for category, rate in rates.items():
        among = eligible.get(category, np.ones(CHILDREN, dtype=np.bool_))
        if category != "address_missing":
            among = among & present
        if category in ("address_flat_dropped", "address_number_typo"):
            among = among & ~flags["address_number_missing"]  # a left-out number hides them
        observed = flags[category][among].mean()
        assert abs(observed - rate) < 0.2 * rate, category
    blanks = [value for value in written if not value]
    assert None in blanks and "" in blanks


def test_a_move_changes_the_address_with_the_postcode() -> None:
    data = population()
    truth = by_child(data.agencies["truth"])
    moving = data.agencies["moving"]
    written = by_child(moving)
    moved = flags_by_child(moving, "moved_house")
    postcode_changed = np.array(
        [a != b for a, b in zip(by_child(moving, "postcode"), by_child(data.agencies["truth"],
                                                                        "postcode"), strict=True)]
    )  # fmt: skip
    address_changed = np.array([a != b for a, b in zip(written, truth, strict=True)])
    assert abs(moved.mean() - MOVING.moved_house_rate) < 0.03
    assert np.array_equal(moved, postcode_changed)
    assert np.array_equal(address_changed, postcode_changed)


def test_addresses_are_deterministic_per_seed() -> None:
    first = generate_population(500, seed=9, agencies=PROFILES["hard"], addresses=True)
    again = generate_population(500, seed=9, agencies=PROFILES["hard"], addresses=True)
    other = generate_population(500, seed=10, agencies=PROFILES["hard"], addresses=True)
    for name, agency in first.agencies.items():
        assert agency.columns[ADDRESS_COLUMN] == again.agencies[name].columns[ADDRESS_COLUMN]
        for category in ADDRESS_ERROR_CATEGORIES:
            assert np.array_equal(agency.errors[category], again.agencies[name].errors[category])
        assert agency.columns[ADDRESS_COLUMN] != other.agencies[name].columns[ADDRESS_COLUMN]


def test_rows_and_all_records_carry_the_address() -> None:
    data = generate_population(300, seed=2, agencies=PROFILES["typical"], addresses=True)
    agency = data.agencies["health"]
    written = list(rows(agency))
    assert tuple(written[0]) == (*COLUMNS, ADDRESS_COLUMN)
    assert [row[ADDRESS_COLUMN] for row in written] == [
        value or "" for value in agency.columns[ADDRESS_COLUMN]
    ]
    combined = data.all_records()
    assert len(combined.columns[ADDRESS_COLUMN]) == combined.child_id.shape[0]
    assert all(
        combined.errors[c].shape == combined.child_id.shape for c in ADDRESS_ERROR_CATEGORIES
    )
    assert ADDRESS_COLUMN not in generate_population(300, seed=2).all_records().columns


def test_the_hard_profile_shows_every_address_error() -> None:
    data = generate_population(3000, seed=5, agencies=PROFILES["hard"], addresses=True)
    errors = data.all_records().errors
    for category in ADDRESS_ERROR_CATEGORIES:
        assert errors[category].any(), category


def test_abbreviations_shorten_the_street_type_only() -> None:
    assert abbreviate("Station Road") == "Station Rd"
    assert abbreviate("High Street") == "High St"
    assert abbreviate("Willow Close") == "Willow Cl"
    assert abbreviate("Broadway") == "Broadway"
    assert abbreviate("The Green") == "The Green"
    assert all(len(short) < len(full) for full, short in STREET_TYPES.items())


@given(
    st.integers(min_value=1, max_value=400),
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_a_mistyped_house_number_is_another_positive_number(
    number: int, pick: float, digit: float
) -> None:
    typed = mistype_number(number, pick, digit)
    assert typed != number and typed >= 1
    assert len(str(typed)) == len(str(number))


def test_address_rates_are_validated() -> None:
    from linkage.errors import InvalidValueError

    with pytest.raises(InvalidValueError, match="address_number_typo_rate"):
        dataclasses.replace(DEFAULT_AGENCIES[0], address_number_typo_rate=1.5)
    with pytest.raises(InvalidValueError, match=r"missing\.address"):
        dataclasses.replace(DEFAULT_AGENCIES[0], missing=MissingRates(address=-0.1))
