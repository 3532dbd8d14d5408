"""Agency profiles: how messy each agency's copy of a child is, and where the rates come from.

Contract: an :class:`AgencyProfile` names an agency, its coverage of the population, its
formats (dates, sex codes) and the rate of every error kind (:data:`ERROR_CATEGORIES`),
validated on construction. :data:`PROFILES` maps a profile set's name (``typical``, ``hard``)
to one profile per agency; the rates of each set are justified, source by source, beside
:data:`_PROFILE_RATES`. The population-wide constants (:data:`REFERENCE_DATE`, shares of
siblings, twins, middle names) live here too, so one module says what the data looks like.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from linkage.errors import InvalidValueError

REFERENCE_DATE = dt.date(2026, 1, 1)
"""Ages are relative to this fixed date, not today, so a seed always gives the same data."""

COLUMNS: tuple[str, ...] = (
    "record_id",
    "given_name",
    "middle_names",
    "family_name",
    "date_of_birth",
    "sex",
    "postcode",
    "nhs_number",
)
"""The columns every agency holds, in CSV order."""

DATE_FORMATS: Mapping[str, str] = MappingProxyType(
    {"iso": "%Y-%m-%d", "uk": "%d/%m/%Y", "mon": "%d-%b-%Y", "long": "%d %B %Y"}
)
"""``AgencyProfile.date_format`` key -> the ``strftime`` pattern that agency writes dates in."""

SEX_STYLES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {"M/F": ("M", "F"), "Male/Female": ("Male", "Female"), "1/2": ("1", "2")}
)
"""``AgencyProfile.sex_style`` -> (code for male, code for female)."""

SEX_UNKNOWN_CODES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"M/F": ("U",), "Male/Female": ("Unknown", "Not known"), "1/2": ("0", "9")}
)
"""``AgencyProfile.sex_style`` -> how that agency writes "sex not known" (``sex_unknown_rate``).

Every code is one that ``linkage.normalise.normalise_sex`` reads as missing (NHS Data Dictionary
person gender codes 0 "not known" and 9 "not specified"; U, Unknown, Not known)."""

UNKNOWN_DATE = dt.date(1900, 1, 1)
"""The date an agency writes when it does not know a date of birth (``dob_unknown_date_rate``).
It is a valid, parseable date (the normaliser accepts years 1900-2100), so only linkage sees it."""

DOUBLE_BARRELLED_SHARE = 0.05
"""Share of households with a double-barrelled family name ("Smith-Jones"), drawn only when some
agency profile has a ``family_name_half_rate`` (or ``double_barrelled_share`` is passed).
Judgement: no published English figure was found."""

ERROR_CATEGORIES: tuple[str, ...] = (
    "dob_transposed", "dob_day_off", "dob_month_off", "dob_digit", "dob_year_off",
    "dob_placeholder", "dob_unknown_date", "dob_missing",
    "given_nickname", "name_transliterated", "given_typo", "family_typo", "given_middle_swap",
    "given_family_swap", "family_changed", "family_hyphenated", "family_half", "middle_missing",
    "given_missing", "family_missing",
    "nhs_wrong_child", "nhs_missing",
    "moved_house", "postcode_missing",
    "sex_unknown", "sex_missing",
    "duplicate",
)  # fmt: skip
"""Names of ``AgencyData.errors``: what a record shows that differs from its child's truth.

A flag is set only where the error is visible in the output: an edit that changed nothing (a
new postcode equal to the old one, 1 January written for a child born on 1 January) or that a
later blank hid (a mistyped date then left empty is ``dob_missing`` only) is not flagged.
``duplicate`` marks the second record an agency holds about a child; ``nhs_missing`` every
record without an NHS number; ``middle_missing`` a child with a middle name whose record has
none. Formatting noise (case, spaces, date and sex styles) is not an error."""

ADDRESS_COLUMN = "address"
"""The column of the household address line, present only in a population drawn with
``addresses=True`` (``generate_population``); not one of :data:`COLUMNS`, so the records (and
their CSV rows) of a population drawn without it are exactly as before it existed."""

ADDRESS_ERROR_CATEGORIES: tuple[str, ...] = (
    "address_abbreviated", "address_number_typo", "address_number_missing",
    "address_flat_dropped", "address_missing",
)  # fmt: skip
"""Names of the address errors in ``AgencyData.errors``, present only where the population has
addresses. Flagged as :data:`ERROR_CATEGORIES` are (only where visible; a blank address hides
the others). A house move is ``moved_house``: it changes the postcode and the address together.
Case and padding are formatting noise, as for the names."""

FLAT_SHARE = 0.15
"""Share of households that live in a flat ("Flat 3, 12 Station Road"). Judgement: below the
roughly one fifth of English dwellings that are flats (English Housing Survey headline figure,
as remembered; not re-checked offline), since families with children more often live in
houses."""

_DOB_ERRORS: tuple[str, ...] = (
    "dob_day_off", "dob_month_off", "dob_digit", "dob_year_off", "dob_placeholder",
    "dob_unknown_date",
)  # fmt: skip
"""The date errors drawn together (at most one per record, never on a transposed date)."""

SIBLING_SHARE = 0.25
"""Share of children who live with at least one sibling (same family name and postcode)."""
TWIN_SHARE = 0.04
"""Share of sibling groups whose first two children are twins (same date of birth)."""
MIDDLE_NAME_SHARE = 0.30
"""Share of children with at least one middle name (a tenth of them have two)."""
MIXED_NAME_SHARE = 0.10
"""Share of children whose given name comes from a background other than their household's."""
BOY_SHARE = 0.512


@dataclass(frozen=True)
class MissingRates:
    """Probability that an agency leaves each field empty (``None`` or ``""``, mixed)."""

    given_name: float = 0.0
    middle_names: float = 0.0
    family_name: float = 0.0
    date_of_birth: float = 0.0
    sex: float = 0.0
    postcode: float = 0.0
    address: float = 0.0
    """Only where the population has addresses (``ADDRESS_COLUMN``)."""


@dataclass(frozen=True)
class AgencyProfile:
    """How one agency holds children: who it sees, its formats, and how messy its records are.

    Every ``*_rate`` is a per-record probability. Some errors only apply where they can:
    a nickname needs a formal name with a known short form, a transliteration needs a name with
    another spelling (or accents to drop), a day/month transposition needs a day of 12 or less.
    NHS numbers are present with probability ``has_nhs_number`` (no separate missing rate).
    """

    name: str
    record_prefix: str
    coverage: float
    duplicate_rate: float
    typo_rate: float
    nickname_rate: float
    transliteration_rate: float
    family_name_change_rate: float
    hyphenation_rate: float
    date_transposition_rate: float
    moved_house_rate: float
    missing: MissingRates
    date_format: str
    has_nhs_number: float
    sex_style: str
    case_noise_rate: float = 0.0
    """Names (and postcode) upper-cased, lower-cased or padded with spaces ("  SMITH ")."""
    postcode_no_space_rate: float = 0.0
    nhs_spaced_rate: float = 0.0
    """NHS number written "943 476 5919" instead of "9434765919"."""
    # Errors of the ``typical`` and ``hard`` profiles; 0.0 leaves older profiles' output unchanged.
    dob_day_off_rate: float = 0.0
    """Day of birth one more or one less (same month and year, still a valid date)."""
    dob_month_off_rate: float = 0.0
    """Month of birth one more or one less (same day and year, still a valid date)."""
    dob_digit_rate: float = 0.0
    """One digit of YYYYMMDD (not the century) keyed wrongly, still a valid past date."""
    dob_year_off_rate: float = 0.0
    """Year of birth one more or one less (not after ``REFERENCE_DATE``)."""
    dob_placeholder_rate: float = 0.0
    """Day and month not known: written as 1 January of the birth year."""
    dob_unknown_date_rate: float = 0.0
    """Date not known: written as ``UNKNOWN_DATE`` (1 January 1900) rather than left empty."""
    given_middle_swap_rate: float = 0.0
    """Given name and (first) middle name recorded the other way round (needs a middle name)."""
    given_family_swap_rate: float = 0.0
    """Given name and family name recorded in each other's fields."""
    family_name_half_rate: float = 0.0
    """Of the records of a child with a double-barrelled family name, one half only."""
    nhs_wrong_child_rate: float = 0.0
    """Of the records with an NHS number, a valid number that belongs to another child."""
    sex_unknown_rate: float = 0.0
    """Sex written as the agency's "not known" code (``SEX_UNKNOWN_CODES``), not left empty."""
    # Address errors: drawn only where the population has addresses (ADDRESS_COLUMN), from
    # streams of their own, so they change nothing else.
    address_abbreviation_rate: float = 0.0
    """Street type abbreviated ("Station Rd" for "Station Road"), where the street has one."""
    address_number_typo_rate: float = 0.0
    """One digit of the house number keyed wrongly (another digit, or two swapped)."""
    address_number_missing_rate: float = 0.0
    """House number (and flat) left out: the street alone."""
    address_flat_dropped_rate: float = 0.0
    """Of the records of a child living in a flat, the "Flat N, " prefix left out."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        for field_name in (
            "coverage", "duplicate_rate", "typo_rate", "nickname_rate", "transliteration_rate",
            "family_name_change_rate", "hyphenation_rate", "date_transposition_rate",
            "moved_house_rate", "has_nhs_number", "case_noise_rate", "postcode_no_space_rate",
            "nhs_spaced_rate", "dob_day_off_rate", "dob_month_off_rate", "dob_digit_rate",
            "dob_year_off_rate", "dob_placeholder_rate", "dob_unknown_date_rate",
            "given_middle_swap_rate", "given_family_swap_rate", "family_name_half_rate",
            "nhs_wrong_child_rate", "sex_unknown_rate", "address_abbreviation_rate",
            "address_number_typo_rate", "address_number_missing_rate",
            "address_flat_dropped_rate",
        ):  # fmt: skip
            if not _is_probability(getattr(self, field_name)):
                problems.append(f"{field_name} must be a probability in [0, 1]")
        date_rates = [getattr(self, f"{kind}_rate") for kind in _DOB_ERRORS]
        if all(_is_probability(rate) for rate in date_rates) and sum(date_rates) > 1:
            problems.append("the dob_*_rate fields must sum to at most 1 (one error per date)")
        for field_name, rate in vars(self.missing).items():
            if not _is_probability(rate):
                problems.append(f"missing.{field_name} must be a probability in [0, 1]")
        if self.date_format not in DATE_FORMATS:
            problems.append(f"date_format must be one of {sorted(DATE_FORMATS)}")
        if self.sex_style not in SEX_STYLES:
            problems.append(f"sex_style must be one of {sorted(SEX_STYLES)}")
        if not self.name:
            problems.append("name must not be empty")
        if not self.record_prefix:
            problems.append("record_prefix must not be empty")
        if problems:
            raise InvalidValueError(f"AgencyProfile {self.name!r}", "; ".join(problems))


def _is_probability(value: object) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and 0 <= value <= 1


DEFAULT_AGENCIES: tuple[AgencyProfile, ...] = (
    AgencyProfile(
        name="police",
        record_prefix="POL",
        coverage=0.25,
        duplicate_rate=0.08,
        typo_rate=0.08,
        nickname_rate=0.12,
        transliteration_rate=0.08,
        family_name_change_rate=0.05,
        hyphenation_rate=0.03,
        date_transposition_rate=0.04,
        moved_house_rate=0.15,
        missing=MissingRates(
            given_name=0.01,
            middle_names=0.5,
            family_name=0.005,
            date_of_birth=0.05,
            sex=0.02,
            postcode=0.10,
        ),
        date_format="uk",
        has_nhs_number=0.3,
        sex_style="M/F",
        case_noise_rate=0.4,
        postcode_no_space_rate=0.3,
        nhs_spaced_rate=0.5,
    ),
    AgencyProfile(
        name="health",
        record_prefix="HLT",
        coverage=0.95,
        duplicate_rate=0.02,
        typo_rate=0.02,
        nickname_rate=0.01,
        transliteration_rate=0.02,
        family_name_change_rate=0.03,
        hyphenation_rate=0.02,
        date_transposition_rate=0.005,
        moved_house_rate=0.08,
        missing=MissingRates(middle_names=0.1, date_of_birth=0.002, sex=0.002, postcode=0.01),
        date_format="iso",
        has_nhs_number=0.98,
        sex_style="1/2",
        case_noise_rate=0.05,
        postcode_no_space_rate=0.05,
        nhs_spaced_rate=0.1,
    ),
    AgencyProfile(
        name="school",
        record_prefix="SCH",
        coverage=0.85,
        duplicate_rate=0.01,
        typo_rate=0.03,
        nickname_rate=0.06,
        transliteration_rate=0.03,
        family_name_change_rate=0.04,
        hyphenation_rate=0.04,
        date_transposition_rate=0.01,
        moved_house_rate=0.06,
        missing=MissingRates(middle_names=0.3, date_of_birth=0.005, sex=0.005, postcode=0.03),
        date_format="mon",
        has_nhs_number=0.2,
        sex_style="Male/Female",
        case_noise_rate=0.1,
        postcode_no_space_rate=0.1,
        nhs_spaced_rate=0.3,
    ),
    AgencyProfile(
        name="childrens_social_care",
        record_prefix="CSC",
        coverage=0.15,
        duplicate_rate=0.10,
        typo_rate=0.05,
        nickname_rate=0.05,
        transliteration_rate=0.05,
        family_name_change_rate=0.06,
        hyphenation_rate=0.03,
        date_transposition_rate=0.02,
        moved_house_rate=0.20,
        missing=MissingRates(
            given_name=0.005, middle_names=0.4, date_of_birth=0.03, sex=0.01, postcode=0.08
        ),
        date_format="long",
        has_nhs_number=0.6,
        sex_style="M/F",
        case_noise_rate=0.15,
        postcode_no_space_rate=0.15,
        nhs_spaced_rate=0.4,
    ),
)


# --------------------------------------------------------------------------- profiles
#
# The `typical` and `hard` profiles keep each agency's coverage and formats from
# DEFAULT_AGENCIES and set every error rate below. Each row: field -> (typical, hard), each a
# (police, health, school, children's social care) tuple of per-record probabilities. `typical`
# is the published figure where one exists for that agency's kind of data; `hard` is at least
# as messy as the worst published figure found. Sources (what each measured):
#
#   [Harron17]  Harron et al. 2017, BMC Med Res Methodol 17:23: HES admissions (ages 0-1, 5-6,
#               18-19) against PDS: sex or date of birth disagreeing or missing in 0.11 % of
#               records, postcode in 53 %.
#   [HJ15a]     Hagger-Johnson et al. 2015, BMJ Open 5:e008118: the HESID algorithm against
#               PICANet (ages 0-19): 4.1 % of true matches missed (one child split into two
#               ids), 0.2 % false matches.
#   [HJ15b]     Hagger-Johnson et al. 2015, Health Serv Res 50:1162: HES infants: 0.1 % possible
#               false matches (two children under one id); unknown dates of birth recorded as
#               missing or default values; 37 of 100 unmatched records failed on the name.
#   [Lam24]     Lam, Boyd, Linacre, Blackburn, Harron 2024, IJPDS 9:2389: ALSPAC, two
#               collection points: within-person disagreement in 18 % of surnames, 12 % of
#               forenames (natural change and invalid entries).
#   [Luo14]     Luo et al. 2014, BMC Bioinformatics 15:185: 1.5 % of birthdates incorrect in a
#               state-wide public health service data set (> 20,000 patients).
#   [Doidge20]  Doidge et al. 2020, IJPDS 5:1157: NDSCR-HES links: date of birth more than 180
#               days apart in 0.4 % of deterministic links and 6.0 % of the weakest links.
#   [Libuy21]   Libuy et al. 2021, IJPDS 6:1671: NPD pupils linked to HES: 95 % (92 % for the
#               1990/91 cohort, 99 % for 2004/05); fewer for ethnic minorities (name recording).
#   [CLAWales]  "Improving opportunities for data linkage within Children Looked After
#               administrative records in Wales", IJPDS article 2383: only 37 % of looked-after
#               children had a linkage id; discrepant weeks of birth, duplicate identifiers.
#   [Zhu15]     Zhu et al. 2015, J Biomed Inform: linkage simulation; below 5 % missing or error
#               per identifier counts as exceptionally good quality data.
#   [Christen]  Christen & Pudjijono 2009 (Febrl/GeCo generator) and Christen 2006 (single
#               error analysis): the kinds of error modelled (typos, swapped words, missing,
#               variants), no rates; swapped words are the hardest single error to compare.
#
# No published rate was found for police records, for a day or month off by one, a mistyped
# digit, a year off by one, names swapped between fields, or double-barrelled names: those rates
# are judgements, bounded by the figure named beside them. A date error is at most one per
# record (see AgencyProfile); a transposition applies only where the day is 12 or less, so its
# visible share is about 0.38 of its rate.
_PROFILE_RATES: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = MappingProxyType({
    # Within-agency duplicates. Health hard = [HJ15a] 4.1 % split; others judgement,
    # [CLAWales] reports duplicate identifiers in social care without a rate.
    "duplicate_rate": ((0.05, 0.02, 0.01, 0.05), (0.10, 0.041, 0.02, 0.10)),
    # Names: judgement, bounded by [Lam24] 12 % forename / 18 % surname disagreement (all
    # causes together) and [HJ15b] names behind 37 of 100 failed matches.
    "typo_rate": ((0.04, 0.01, 0.02, 0.03), (0.08, 0.03, 0.04, 0.06)),
    "nickname_rate": ((0.08, 0.01, 0.04, 0.04), (0.12, 0.02, 0.06, 0.06)),
    "transliteration_rate": ((0.04, 0.01, 0.02, 0.03), (0.08, 0.03, 0.04, 0.06)),
    "family_name_change_rate": ((0.04, 0.02, 0.03, 0.05), (0.10, 0.06, 0.08, 0.12)),
    "hyphenation_rate": ((0.02, 0.01, 0.02, 0.02), (0.04, 0.02, 0.04, 0.04)),
    # Of double-barrelled children only (DOUBLE_BARRELLED_SHARE): judgement.
    "family_name_half_rate": ((0.20, 0.05, 0.10, 0.20), (0.40, 0.10, 0.20, 0.40)),
    # Judgement, bounded by [Lam24] 12 % forename disagreement; kind from [Christen].
    "given_middle_swap_rate": ((0.005, 0.002, 0.003, 0.005), (0.03, 0.01, 0.02, 0.03)),
    "given_family_swap_rate": ((0.003, 0.001, 0.002, 0.003), (0.02, 0.005, 0.01, 0.02)),
    # Dates. Health typical sums to about [Harron17] 0.11 %; police typical to about [Luo14]
    # 1.5 %; hard health to [Luo14] 1.5 %, hard police to [Doidge20] 6.0 %, social care and
    # school between. The split between kinds is judgement.
    "date_transposition_rate": ((0.003, 0.0005, 0.001, 0.002), (0.015, 0.004, 0.005, 0.01)),
    "dob_day_off_rate": ((0.003, 0.0003, 0.001, 0.002), (0.012, 0.003, 0.004, 0.01)),
    "dob_month_off_rate": ((0.002, 0.0002, 0.0005, 0.001), (0.006, 0.0015, 0.002, 0.005)),
    "dob_digit_rate": ((0.003, 0.0002, 0.001, 0.002), (0.01, 0.0025, 0.003, 0.008)),
    "dob_year_off_rate": ((0.003, 0.0002, 0.001, 0.002), (0.01, 0.002, 0.003, 0.008)),
    # Default dates for unknown ones: [HJ15b] (no rate); judgement.
    "dob_placeholder_rate": ((0.001, 0.0001, 0.0002, 0.001), (0.005, 0.001, 0.002, 0.006)),
    "dob_unknown_date_rate": ((0.0005, 0.0001, 0.0, 0.0005), (0.002, 0.001, 0.001, 0.003)),
    # Missing dates: judgement, bounded by [Harron17] 0.11 % (health) and [Zhu15] 5 % (hard).
    "missing.date_of_birth": ((0.02, 0.001, 0.002, 0.01), (0.05, 0.002, 0.005, 0.03)),
    # NHS numbers. Present: typical as DEFAULT_AGENCIES; hard social care = [CLAWales] 37 %.
    "has_nhs_number": ((0.3, 0.98, 0.2, 0.6), (0.2, 0.95, 0.1, 0.37)),
    # Another child's number: bounded by [HJ15b] 0.1 % and [HJ15a] 0.2 % false matches
    # (health); other agencies and hard: judgement.
    "nhs_wrong_child_rate": ((0.002, 0.0005, 0.001, 0.002), (0.01, 0.002, 0.005, 0.01)),
    # Postcodes: hard health = [Harron17] 53 % moved or missing; the rest judgement below it.
    "moved_house_rate": ((0.15, 0.10, 0.06, 0.20), (0.40, 0.45, 0.30, 0.45)),
    "missing.postcode": ((0.05, 0.01, 0.02, 0.05), (0.10, 0.08, 0.05, 0.10)),
    # Sex not known or missing: health typical about [Harron17] 0.11 % (with dates);
    # the rest judgement below [Zhu15] 5 %.
    "sex_unknown_rate": ((0.005, 0.0005, 0.001, 0.005), (0.02, 0.005, 0.01, 0.02)),
    "missing.sex": ((0.01, 0.0005, 0.002, 0.005), (0.03, 0.005, 0.01, 0.02)),
    # Other missing names: judgement, bounded by [Lam24] (12 % forename disagreement).
    "missing.given_name": ((0.005, 0.0, 0.0, 0.003), (0.01, 0.001, 0.002, 0.01)),
    "missing.family_name": ((0.003, 0.0, 0.0, 0.002), (0.005, 0.001, 0.002, 0.005)),
    "missing.middle_names": ((0.5, 0.1, 0.3, 0.4), (0.6, 0.2, 0.4, 0.5)),
    # Addresses (only where the population has them): no published rate was found for the
    # address line itself. A move changes it with the postcode (moved_house_rate, above, from
    # [Harron17]); a missing address is as often as a missing postcode (the two are taken
    # together); the rest is judgement: abbreviating the street type is a keying habit (the
    # Royal Mail address file writes it in full, free-text systems let staff shorten it), and
    # a mistyped or missing house number is rarer than a name typo (a number of one to three
    # digits). The kinds follow [Christen] (abbreviations, missing and mistyped values).
    "address_abbreviation_rate": ((0.30, 0.10, 0.20, 0.20), (0.50, 0.30, 0.40, 0.40)),
    "address_number_typo_rate": ((0.01, 0.003, 0.005, 0.01), (0.03, 0.01, 0.02, 0.03)),
    "address_number_missing_rate": ((0.03, 0.005, 0.01, 0.02), (0.06, 0.02, 0.03, 0.05)),
    # Of children living in a flat (FLAT_SHARE): judgement.
    "address_flat_dropped_rate": ((0.30, 0.10, 0.20, 0.20), (0.50, 0.30, 0.40, 0.40)),
    "missing.address": ((0.05, 0.01, 0.02, 0.05), (0.10, 0.08, 0.05, 0.10)),
})  # fmt: skip


def _profiles(which: int) -> tuple[AgencyProfile, ...]:
    """DEFAULT_AGENCIES with the rates of column ``which`` (0 typical, 1 hard) of the table."""
    profiles = []
    for agency, base in enumerate(DEFAULT_AGENCIES):
        rates = {name: values[which][agency] for name, values in _PROFILE_RATES.items()}
        missing = {
            name.removeprefix("missing."): rate
            for name, rate in rates.items()
            if name.startswith("missing.")
        }
        changes: dict[str, Any] = {
            name: rate for name, rate in rates.items() if not name.startswith("missing.")
        }
        changes["missing"] = dataclasses.replace(base.missing, **missing)
        profiles.append(dataclasses.replace(base, **changes))
    return tuple(profiles)


PROFILES: Mapping[str, tuple[AgencyProfile, ...]] = MappingProxyType(
    {"typical": _profiles(0), "hard": _profiles(1)}
)
"""Named four-agency profiles: ``generate_population(n, seed=s, agencies=PROFILES["hard"])``.

``typical``: published error rates of English administrative child data; ``hard``: at least as
messy as the worst published rates. Every rate and its source: ``_PROFILE_RATES``.
"""
