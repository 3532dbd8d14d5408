"""Seeded synthetic multi-agency child population with ground truth.

Role: the test, demo and benchmark data. Nothing here is real: a population of
children living in England is drawn from a seed, then each agency (police, health, school,
children's social care) receives its own messy copy of the children it "knows", in its own
formats, and the true child behind every record is kept (``AgencyData.child_id``) so that
linkage quality can be measured.

How a population is drawn (all from ``seed``; the output never depends on today's date):

* Households. A share of children (:data:`SIBLING_SHARE`) live with a sibling (groups of 2 or
  3 sharing family name and postcode); some sibling groups contain twins (:data:`TWIN_SHARE`).
  Each household has a cultural background (``namedata.NAME_GROUPS``), a family name drawn
  from that background with a long-tailed Zipf-Mandelbrot frequency, and a postcode: a real
  outward code (district) plus a random inward part "9AA".
* Children. Sex, a given name by sex (some from another background), some with one or two
  middle names, a date of birth giving an age of 0-17 on :data:`REFERENCE_DATE`, a unique NHS
  number valid under modulus 11.
* Agency records. A child appears in an agency with probability ``coverage``; a held child has
  a second record with probability ``duplicate_rate``. Every record gets independent errors at
  the agency's rates (see ``AgencyProfile``). Records are shuffled before numbering, so a
  record id ("POL-000123") says nothing about the child.

Invariants: the output depends only on the seed and the profiles (never on today's date);
every per-record choice is drawn in numpy arrays up front, and Python-level string edits run
only over the records flagged for an edit.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from anyascii import anyascii
from numpy.typing import NDArray

from linkage import namedata
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

_OLDEST_BIRTH_DATE = dt.date(REFERENCE_DATE.year - 18, REFERENCE_DATE.month, REFERENCE_DATE.day)
_MONTH_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                        "Nov", "Dec")  # fmt: skip
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")  # fmt: skip
_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # letters used in the inward part of a UK postcode
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> Mapping[str, str]:
    """Letter -> the letters touching its key on a UK QWERTY keyboard.

    Each row sits about half a key to the right of the row above, so key ``col`` of a row
    touches keys ``col`` and ``col + 1`` of the row above and ``col - 1`` and ``col`` below.
    """
    neighbours: dict[str, str] = {}
    for row, keys in enumerate(_KEYBOARD_ROWS):
        for col, letter in enumerate(keys):
            touching = [(row, col - 1), (row, col + 1), (row - 1, col), (row - 1, col + 1),
                        (row + 1, col - 1), (row + 1, col)]  # fmt: skip
            neighbours[letter] = "".join(
                _KEYBOARD_ROWS[r][c]
                for r, c in touching
                if 0 <= r < len(_KEYBOARD_ROWS) and 0 <= c < len(_KEYBOARD_ROWS[r])
            )
    return MappingProxyType(neighbours)


_KEYBOARD_NEIGHBOURS = _keyboard_neighbours()
_NICKNAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(dict(namedata.NICKNAMES))


def _build_variants() -> Mapping[str, tuple[str, ...]]:
    variants: dict[str, list[str]] = {}
    for spellings in namedata.TRANSLITERATIONS:
        for name in spellings:
            known = variants.setdefault(name, [])
            known.extend(other for other in spellings if other != name and other not in known)
    return MappingProxyType({name: tuple(others) for name, others in variants.items()})


_TRANSLITERATIONS = _build_variants()


@dataclass(frozen=True)
class MissingRates:
    """Probability that an agency leaves each field empty (``None`` or ``""``, mixed)."""

    given_name: float = 0.0
    middle_names: float = 0.0
    family_name: float = 0.0
    date_of_birth: float = 0.0
    sex: float = 0.0
    postcode: float = 0.0


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

    def __post_init__(self) -> None:
        problems: list[str] = []
        for field_name in (
            "coverage", "duplicate_rate", "typo_rate", "nickname_rate", "transliteration_rate",
            "family_name_change_rate", "hyphenation_rate", "date_transposition_rate",
            "moved_house_rate", "has_nhs_number", "case_noise_rate", "postcode_no_space_rate",
            "nhs_spaced_rate", "dob_day_off_rate", "dob_month_off_rate", "dob_digit_rate",
            "dob_year_off_rate", "dob_placeholder_rate", "dob_unknown_date_rate",
            "given_middle_swap_rate", "given_family_swap_rate", "family_name_half_rate",
            "nhs_wrong_child_rate", "sex_unknown_rate",
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


@dataclass(frozen=True)
class AgencyData:
    """One agency's records: raw strings as it stores them, and the true child of each record.

    ``columns`` maps every name in ``COLUMNS`` to one value per record; a missing value is
    ``None`` or ``""`` (agencies mix both). ``child_id[i]`` is the true child of record ``i``.
    ``errors[category][i]`` says whether record ``i`` carries that error (``ERROR_CATEGORIES``).
    """

    name: str
    profile: AgencyProfile
    columns: dict[str, list[str | None]]
    child_id: NDArray[np.int64]
    errors: Mapping[str, NDArray[np.bool_]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.child_id.shape[0])


@dataclass(frozen=True)
class CombinedRecords:
    """Every agency's records one after another; ``source[i]`` names the agency of record i."""

    columns: dict[str, list[str | None]]
    child_id: NDArray[np.int64]
    source: NDArray[np.str_]
    errors: Mapping[str, NDArray[np.bool_]] = field(default_factory=dict)
    """``ERROR_CATEGORIES`` -> one flag per record, as in ``AgencyData.errors``."""


@dataclass(frozen=True)
class SyntheticData:
    """A generated population: each agency's records, plus the household of every child."""

    seed: int
    n_children: int
    agencies: dict[str, AgencyData]
    household_id: NDArray[np.int64]
    """``household_id[child]``: children with the same value are siblings."""

    def all_records(self) -> CombinedRecords:
        """Concatenate every agency's records (in ``agencies`` order) with their source."""
        parts = list(self.agencies.values())
        columns: dict[str, list[str | None]] = {column: [] for column in COLUMNS}
        for part in parts:
            for column in COLUMNS:
                columns[column].extend(part.columns[column])
        child_id = np.concatenate(
            [part.child_id for part in parts] or [np.zeros(0, dtype=np.int64)]
        ).astype(np.int64, copy=False)
        source = np.repeat(
            np.array([part.name for part in parts], dtype=np.str_),
            [len(part) for part in parts],
        )
        errors = {
            category: np.concatenate(
                [part.errors[category] for part in parts] or [np.zeros(0, dtype=np.bool_)]
            )
            for category in ERROR_CATEGORIES
        }
        return CombinedRecords(columns=columns, child_id=child_id, source=source, errors=errors)


def true_pairs_between(a: AgencyData, b: AgencyData) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every (i, j) with record i of ``a`` and record j of ``b`` about the same child.

    Sorted by i, then j. Duplicates make a record match more than one record of the other side.
    """
    return _pairs_with_equal_ids(a.child_id, b.child_id)


def true_pairs_within(a: AgencyData) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every (i, j) with i < j and records i and j of ``a`` about the same child (duplicates)."""
    left, right = _pairs_with_equal_ids(a.child_id, a.child_id)
    keep = left < right
    return left[keep], right[keep]


def _pairs_with_equal_ids(
    left_ids: NDArray[np.int64], right_ids: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    right_order = np.argsort(right_ids, kind="stable")
    right_sorted = right_ids[right_order]
    starts = np.searchsorted(right_sorted, left_ids, side="left")
    counts = np.searchsorted(right_sorted, left_ids, side="right") - starts
    left = np.repeat(np.arange(left_ids.shape[0], dtype=np.int64), counts)
    group_starts = np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.repeat(starts, counts) + (np.arange(left.shape[0]) - group_starts)
    right = right_order[positions].astype(np.int64, copy=False)
    return left, right


def rows(agency: AgencyData) -> Iterator[dict[str, str]]:
    """Yield one ``{column: value}`` dict per record, missing values as "" (for CSV writing)."""
    columns = [agency.columns[column] for column in COLUMNS]
    for values in zip(*columns, strict=True):
        yield {
            column: "" if value is None else value
            for column, value in zip(COLUMNS, values, strict=True)
        }


def nhs_check_digit(body: str) -> int | None:
    """The modulus 11 check digit of a 9-digit NHS number body, or None if no digit is valid."""
    if len(body) != 9 or not body.isascii() or not body.isdigit():
        raise InvalidValueError("nhs_number", "body must be exactly 9 ASCII digits")
    total = sum(int(digit) * weight for digit, weight in zip(body, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def is_valid_nhs_number(text: str) -> bool:
    """True if ``text`` (spaces allowed) is 10 digits whose last is the modulus 11 check digit."""
    digits = text.replace(" ", "")
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    return nhs_check_digit(digits[:9]) == int(digits[9])


def zipf_weights(count: int, *, offset: float, exponent: float = 1.0) -> NDArray[np.float64]:
    """Zipf-Mandelbrot probabilities ``1 / (rank + offset) ** exponent`` for ranks 1..count."""
    ranks = np.arange(1, count + 1, dtype=np.float64)
    weights = 1.0 / (ranks + offset) ** exponent
    normalised: NDArray[np.float64] = weights / weights.sum()
    return normalised


def make_typo(text: str, kind: float, position: float, letter: float) -> str:
    """Return ``text`` with exactly one keyboard-style edit, chosen by three draws in [0, 1).

    ``kind`` picks insert, delete, substitute (by a keyboard neighbour where there is one) or
    transpose (two adjacent, different characters). A deletion never empties the text and a
    transposition falls back to a substitution when every adjacent pair is equal, so the result
    always differs from ``text`` by one Damerau-Levenshtein edit.
    """
    if not text:
        raise InvalidValueError("text", "a typo needs a non-empty value")
    edit = min(int(kind * 4), 3)
    at = min(int(position * len(text)), len(text) - 1)
    if edit == 1 and len(text) >= 2:  # delete
        return text[:at] + text[at + 1 :]
    if edit == 3:  # transpose
        swappable = [i for i in range(len(text) - 1) if text[i] != text[i + 1]]
        if swappable:
            i = swappable[min(int(position * len(swappable)), len(swappable) - 1)]
            return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    original = text[at]
    replacement = _neighbour_letter(original, letter)
    if edit == 0:  # insert a neighbour of the key just struck, after it
        return text[: at + 1] + replacement + text[at + 1 :]
    return text[:at] + replacement + text[at + 1 :]  # substitute


def _neighbour_letter(character: str, draw: float) -> str:
    options = _KEYBOARD_NEIGHBOURS.get(character.lower())
    if not options:
        options = "etaoinshrdlu".replace(character.lower(), "")
    chosen = options[min(int(draw * len(options)), len(options) - 1)]
    return chosen.upper() if character.isupper() else chosen


def transliterate(name: str, draw: float) -> str:
    """Another spelling of ``name`` (Mohammed for Muhammad), or its accents dropped; else itself."""
    others = _TRANSLITERATIONS.get(name)
    if others:
        return others[min(int(draw * len(others)), len(others) - 1)]
    if not name.isascii():
        return str(anyascii(name))
    return name


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class _NameTables:
    """All names of all groups in one array each, with each group's slice and weights."""

    given: NDArray[np.object_]
    family: NDArray[np.object_]
    boys: tuple[tuple[int, NDArray[np.float64]], ...]  # (offset into given, weights) per group
    girls: tuple[tuple[int, NDArray[np.float64]], ...]
    family_slices: tuple[tuple[int, NDArray[np.float64]], ...]
    group_shares: NDArray[np.float64]


def _name_tables() -> _NameTables:
    given: list[str] = []
    family: list[str] = []
    boys: list[tuple[int, NDArray[np.float64]]] = []
    girls: list[tuple[int, NDArray[np.float64]]] = []
    families: list[tuple[int, NDArray[np.float64]]] = []
    for group in namedata.NAME_GROUPS:
        boys.append((len(given), zipf_weights(len(group.boys), offset=5.0)))
        given.extend(group.boys)
        girls.append((len(given), zipf_weights(len(group.girls), offset=5.0)))
        given.extend(group.girls)
        families.append((len(family), zipf_weights(len(group.family), offset=10.0)))
        family.extend(group.family)
    shares = np.array([group.population_share for group in namedata.NAME_GROUPS])
    return _NameTables(
        given=np.array(given, dtype=object),
        family=np.array(family, dtype=object),
        boys=tuple(boys),
        girls=tuple(girls),
        family_slices=tuple(families),
        group_shares=shares / shares.sum(),
    )


def _draw_from_groups(
    rng: np.random.Generator,
    groups: NDArray[np.int64],
    slices: Sequence[tuple[int, NDArray[np.float64]]],
) -> NDArray[np.int64]:
    """For each entry of ``groups``, an index into the global name array, Zipf within group."""
    chosen = np.zeros(groups.shape[0], dtype=np.int64)
    for group, (offset, weights) in enumerate(slices):
        members = np.flatnonzero(groups == group)
        if members.size:
            chosen[members] = offset + rng.choice(weights.shape[0], size=members.size, p=weights)
    return chosen


def _draw_postcodes(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` postcodes "OUTWARD 9AA": a real district and a random inward part."""
    outward = rng.integers(0, len(namedata.OUTWARD_CODES), size=count).tolist()
    sector = rng.integers(0, 10, size=count).tolist()
    letters = rng.integers(0, len(_INWARD_LETTERS), size=(count, 2)).tolist()
    return [
        f"{namedata.OUTWARD_CODES[o]} {s}{_INWARD_LETTERS[a]}{_INWARD_LETTERS[b]}"
        for o, s, (a, b) in zip(outward, sector, letters, strict=True)
    ]


def _draw_nhs_numbers(rng: np.random.Generator, count: int) -> NDArray[np.int64]:
    """``count`` distinct valid NHS numbers (as integers) with bodies 900000000-999999999.

    NHS numbers are 10 digits: nine body digits and a check digit. The check digit is
    ``11 - (sum of body digit i * weight i) mod 11`` with weights 10, 9, ..., 2; a result of 11 is
    written 0 and a result of 10 makes the body unusable (redrawn). Synthetic bodies all start with
    the digit 9: England, Wales and the Isle of Man issue 3xx, 4xx and 6xx-7xx numbers to patients,
    so a synthetic number should not be a real patient's. (The published test block 999 xxx xxxx
    holds only about 909,000 valid numbers, too few for the large benchmark populations.)
    """
    weights = np.arange(10, 1, -1, dtype=np.int64)
    chosen = np.zeros(0, dtype=np.int64)
    while chosen.shape[0] < count:
        bodies = rng.integers(900_000_000, 1_000_000_000, size=int(count * 1.2) + 16)
        digits = (bodies[:, None] // 10 ** np.arange(8, -1, -1)) % 10
        check = 11 - (digits @ weights) % 11
        check[check == 11] = 0
        numbers = (bodies * 10 + check)[check != 10]
        merged = np.concatenate([chosen, numbers])
        _, first = np.unique(merged, return_index=True)
        chosen = merged[np.sort(first)]
    return chosen[:count].astype(np.int64, copy=False)


@dataclass(frozen=True)
class _Children:
    """The true population: one entry per child (names as global table indices)."""

    household: NDArray[np.int64]
    is_boy: NDArray[np.bool_]
    given: NDArray[np.int64]
    middle: list[str | None]
    family: NDArray[np.int64]
    birth_year: NDArray[np.int64]
    birth_month: NDArray[np.int64]
    birth_day: NDArray[np.int64]
    postcode: list[str]
    nhs_number: NDArray[np.int64]
    household_family: NDArray[np.int64]  # family-name index of every household
    household_group: NDArray[np.int64]  # name background of every household
    second_family: NDArray[np.int64]  # second half of a double-barrelled family name, or -1


def _sibling_group_sizes(rng: np.random.Generator, children_in_groups: int) -> list[int]:
    sizes: list[int] = []
    remaining = children_in_groups
    draws = rng.random(children_in_groups // 2 + 1).tolist()
    for draw in draws:
        if remaining < 2:
            break
        size = 3 if draw < 0.3 and remaining != 4 else 2
        size = remaining if remaining <= 3 else size
        sizes.append(size)
        remaining -= size
    return sizes


def _draw_children(rng: np.random.Generator, n_children: int, tables: _NameTables) -> _Children:
    # Households: sibling groups first, then single-child households; then shuffle children.
    group_sizes = _sibling_group_sizes(rng, round(SIBLING_SHARE * n_children))
    in_groups = sum(group_sizes)
    n_households = len(group_sizes) + (n_children - in_groups)
    household_in_order = np.concatenate(
        [
            np.repeat(np.arange(len(group_sizes), dtype=np.int64), group_sizes),
            np.arange(len(group_sizes), n_households, dtype=np.int64),
        ]
    )
    household = household_in_order[rng.permutation(n_children)]

    household_group = rng.choice(
        tables.group_shares.shape[0], size=n_households, p=tables.group_shares
    ).astype(np.int64)
    household_family = _draw_from_groups(rng, household_group, tables.family_slices)
    household_postcode = _draw_postcodes(rng, n_households)

    is_boy = rng.random(n_children) < BOY_SHARE
    name_group = household_group[household]
    mixed = rng.random(n_children) < MIXED_NAME_SHARE
    name_group[mixed] = rng.choice(
        tables.group_shares.shape[0], size=int(mixed.sum()), p=tables.group_shares
    )
    given = np.where(
        is_boy,
        _draw_from_groups(rng, name_group, tables.boys),
        _draw_from_groups(rng, name_group, tables.girls),
    )
    first_middle = np.where(
        is_boy,
        _draw_from_groups(rng, name_group, tables.boys),
        _draw_from_groups(rng, name_group, tables.girls),
    )
    second_middle = np.where(
        is_boy,
        _draw_from_groups(rng, name_group, tables.boys),
        _draw_from_groups(rng, name_group, tables.girls),
    )
    middle_draw = rng.random(n_children)
    middle: list[str | None] = [None] * n_children
    for child in np.flatnonzero(middle_draw < MIDDLE_NAME_SHARE).tolist():
        # A middle name never repeats the given name or the other middle name.
        candidates = [first_middle[child], second_middle[child]]
        chosen = [index for index in dict.fromkeys(candidates) if index != given[child]]
        two = middle_draw[child] < MIDDLE_NAME_SHARE / 10
        names = [str(tables.given[index]) for index in chosen[: 2 if two else 1]]
        middle[child] = " ".join(names) or None

    # Dates of birth: age 0-17 on REFERENCE_DATE; twins copy their sibling's date.
    span_days = (REFERENCE_DATE - _OLDEST_BIRTH_DATE).days  # born after the oldest date
    days_before = rng.integers(0, span_days, size=n_children)
    birth = np.datetime64(REFERENCE_DATE.isoformat(), "D") - days_before.astype("timedelta64[D]")
    twin_groups = np.flatnonzero(rng.random(len(group_sizes)) < TWIN_SHARE)
    if twin_groups.size:
        order = np.argsort(household, kind="stable")  # children of each group side by side
        group_starts = np.searchsorted(household[order], twin_groups)
        birth[order[group_starts + 1]] = birth[order[group_starts]]
    months = birth.astype("datetime64[M]")
    birth_year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    birth_month = months.astype(np.int64) % 12 + 1
    birth_day = (birth - months).astype(np.int64) + 1

    return _Children(
        household=household,
        is_boy=is_boy,
        given=given.astype(np.int64),
        middle=middle,
        family=household_family[household],
        birth_year=birth_year,
        birth_month=birth_month,
        birth_day=birth_day,
        postcode=[household_postcode[h] for h in household.tolist()],
        nhs_number=_draw_nhs_numbers(rng, n_children),
        household_family=household_family,
        household_group=household_group,
        second_family=np.full(n_children, -1, dtype=np.int64),
    )


def _with_double_barrelled_names(
    rng: np.random.Generator, children: _Children, tables: _NameTables, share: float
) -> _Children:
    """Give a ``share`` of households a second family name from their background (own stream)."""
    households = children.household_family.shape[0]
    double = rng.random(households) < share
    second = _draw_from_groups(rng, children.household_group, tables.family_slices)
    double &= second != children.household_family
    per_household = np.where(double, second, -1).astype(np.int64)
    return dataclasses.replace(children, second_family=per_household[children.household])


def _flagged(rng: np.random.Generator, count: int, rate: float) -> list[int]:
    """Indices of the records (out of ``count``) that an error with probability ``rate`` hits."""
    return np.flatnonzero(rng.random(count) < rate).tolist()


def _render_dates(
    year: list[int], month: list[int], day: list[int], date_format: str
) -> list[str | None]:
    if date_format == "iso":
        return [f"{y:04d}-{m:02d}-{d:02d}" for y, m, d in zip(year, month, day, strict=True)]
    if date_format == "uk":
        return [f"{d:02d}/{m:02d}/{y:04d}" for y, m, d in zip(year, month, day, strict=True)]
    names = _MONTH_ABBREVIATIONS if date_format == "mon" else _MONTH_NAMES
    separator = "-" if date_format == "mon" else " "
    return [
        f"{d:02d}{separator}{names[m - 1]}{separator}{y:04d}"
        for y, m, d in zip(year, month, day, strict=True)
    ]


def _case_noise(text: str, style: int) -> str:
    if style == 0:
        return text.upper()
    if style == 1:
        return text.lower()
    if style == 2:
        return f"  {text.upper()} "
    return f" {text}  "


def _agency_records(
    rng: np.random.Generator,
    extra: np.random.Generator,
    profile: AgencyProfile,
    children: _Children,
    tables: _NameTables,
) -> AgencyData:
    """One agency's records. ``rng`` draws the original errors, ``extra`` the newer ones.

    The newer errors (the ``AgencyProfile`` fields that default to 0.0) draw only from
    ``extra``, so the records of a profile that leaves them at 0.0 are the same as before they
    existed.
    """
    n_children = children.household.shape[0]
    held = np.flatnonzero(rng.random(n_children) < profile.coverage)
    second = held[rng.random(held.shape[0]) < profile.duplicate_rate]
    child_id = np.concatenate([held, second]).astype(np.int64)
    order = rng.permutation(child_id.shape[0])
    child_id = child_id[order]
    count = int(child_id.shape[0])
    flags = {category: np.zeros(count, dtype=np.bool_) for category in ERROR_CATEGORIES}
    flags["duplicate"] = order >= held.shape[0]
    width = max(6, len(str(count)))
    record_id: list[str | None] = [
        f"{profile.record_prefix}-{k:0{width}d}" for k in range(1, count + 1)
    ]

    given: list[str | None] = tables.given[children.given[child_id]].tolist()
    family: list[str | None] = tables.family[children.family[child_id]].tolist()
    second_family = children.second_family[child_id]
    double_barrelled = np.flatnonzero(second_family >= 0).tolist()
    for r in double_barrelled:
        family[r] = f"{family[r]}-{tables.family[second_family[r]]}"
    middle: list[str | None] = [children.middle[c] for c in child_id.tolist()]
    draws = rng.random((count, 3))  # the choices (which nickname, which spelling...) of edits

    def draw(record: int, which: int) -> float:
        return float(draws[record, which])

    half_draws = extra.random((count, 2))
    for r in double_barrelled:
        if half_draws[r, 0] < profile.family_name_half_rate:
            halves = (children.family[child_id[r]], second_family[r])
            family[r] = str(tables.family[halves[int(half_draws[r, 1] < 0.5)]])
            flags["family_half"][r] = True

    for r in _flagged(rng, count, profile.nickname_rate):
        short_forms = _NICKNAMES.get(given[r] or "")
        if short_forms:
            given[r] = short_forms[min(int(draw(r, 0) * len(short_forms)), len(short_forms) - 1)]
            flags["given_nickname"][r] = True
    for r in _flagged(rng, count, profile.transliteration_rate):
        before = (given[r], family[r])
        given[r] = transliterate(given[r] or "", draw(r, 1))
        family[r] = transliterate(family[r] or "", draw(r, 2))
        flags["name_transliterated"][r] = before != (given[r], family[r])

    households = children.household_family.shape[0]
    for r in _flagged(rng, count, profile.family_name_change_rate):
        partner = children.household_family[int(draw(r, 0) * households)]
        before_change = family[r]
        family[r] = str(tables.family[partner])
        if family[r] != before_change:
            flags["family_changed"][r] = True
            flags["family_half"][r] = False
    for r in _flagged(rng, count, profile.hyphenation_rate):
        other = str(tables.family[children.household_family[int(draw(r, 1) * households)]])
        style = int(draw(r, 2) * 3)
        own = family[r] or ""
        if other != own:
            family[r] = (f"{own}-{other}", f"{own} {other}", f"{other}-{own}")[style]
            flags["family_hyphenated"][r] = True
    typo_records = _flagged(rng, count, profile.typo_rate)
    typo_draws = rng.random((len(typo_records), 4)).tolist()
    for r, (field_draw, kind, position, letter) in zip(typo_records, typo_draws, strict=True):
        names = given if field_draw < 0.5 else family
        names[r] = make_typo(names[r] or "?", kind, position, letter)
        flags["given_typo" if field_draw < 0.5 else "family_typo"][r] = True

    swap_draws = extra.random((count, 2))
    for r in np.flatnonzero(swap_draws[:, 0] < profile.given_middle_swap_rate).tolist():
        if middle[r]:
            first_middle, _, other_middles = (middle[r] or "").partition(" ")
            middle[r] = f"{given[r]} {other_middles}".strip()
            given[r] = first_middle
            flags["given_middle_swap"][r] = True
    for r in np.flatnonzero(swap_draws[:, 1] < profile.given_family_swap_rate).tolist():
        given[r], family[r] = family[r], given[r]
        flags["given_family_swap"][r] = True

    # Dates, with day/month transposed where the day could also be a month.
    year = children.birth_year[child_id]
    month = children.birth_month[child_id].copy()
    day = children.birth_day[child_id].copy()
    transpose = (rng.random(count) < profile.date_transposition_rate) & (day <= 12)
    flags["dob_transposed"] = transpose & (day != month)
    month[transpose], day[transpose] = day[transpose], month[transpose]
    _date_errors(extra, profile, year, month, day, ~transpose, flags)
    date_of_birth = _render_dates(year.tolist(), month.tolist(), day.tolist(), profile.date_format)

    male, female = SEX_STYLES[profile.sex_style]
    sex: list[str | None] = np.where(children.is_boy[child_id], male, female).tolist()
    unknown_codes = SEX_UNKNOWN_CODES[profile.sex_style]
    sex_draws = extra.random((count, 2))
    for r in np.flatnonzero(sex_draws[:, 0] < profile.sex_unknown_rate).tolist():
        sex[r] = unknown_codes[
            min(int(sex_draws[r, 1] * len(unknown_codes)), len(unknown_codes) - 1)
        ]
        flags["sex_unknown"][r] = True

    postcode: list[str | None] = [children.postcode[c] for c in child_id.tolist()]
    moved = _flagged(rng, count, profile.moved_house_rate)
    for r, new_postcode in zip(moved, _draw_postcodes(rng, len(moved)), strict=True):
        flags["moved_house"][r] = new_postcode != postcode[r]
        postcode[r] = new_postcode
    for r in _flagged(rng, count, profile.postcode_no_space_rate):
        postcode[r] = (postcode[r] or "").replace(" ", "")

    case_records = _flagged(rng, count, profile.case_noise_rate)
    case_styles = rng.integers(0, 4, size=len(case_records)).tolist()
    for r, style in zip(case_records, case_styles, strict=True):
        given[r] = _case_noise(given[r] or "", style)
        family[r] = _case_noise(family[r] or "", style)
        if middle[r] is not None:
            middle[r] = _case_noise(middle[r] or "", style)
        if style in (1, 3):
            postcode[r] = (postcode[r] or "").lower() if style == 1 else f"{postcode[r]} "

    nhs_present = rng.random(count) < profile.has_nhs_number
    nhs_number: list[str | None] = [None] * count
    spaced = rng.random(count) < profile.nhs_spaced_rate
    wrong_draws = extra.random((count, 2))
    wrong_child = nhs_present & (wrong_draws[:, 0] < profile.nhs_wrong_child_rate)
    if n_children > 1:  # another child's number: any child but this record's own
        others = (wrong_draws[:, 1] * (n_children - 1)).astype(np.int64)
        others += others >= child_id
        number_of = np.where(wrong_child, others, child_id)
        flags["nhs_wrong_child"] = wrong_child
    else:
        number_of = child_id
    for r, number, with_spaces in zip(
        np.flatnonzero(nhs_present).tolist(),
        children.nhs_number[number_of[nhs_present]].tolist(),
        spaced[nhs_present].tolist(),
        strict=True,
    ):
        text = str(number)
        nhs_number[r] = f"{text[:3]} {text[3:6]} {text[6:]}" if with_spaces else text

    columns: dict[str, list[str | None]] = {
        "record_id": record_id,
        "given_name": given,
        "middle_names": middle,
        "family_name": family,
        "date_of_birth": date_of_birth,
        "sex": sex,
        "postcode": postcode,
        "nhs_number": nhs_number,
    }
    # Missing values, written as None or "" at random; NHS numbers too, where absent.
    for column in ("given_name", "middle_names", "family_name", "date_of_birth", "sex",
                   "postcode"):  # fmt: skip
        values = columns[column]
        blanks = _flagged(rng, count, getattr(profile.missing, column))
        empty_string = rng.random(len(blanks)) < 0.5
        for r, as_empty in zip(blanks, empty_string.tolist(), strict=True):
            values[r] = "" if as_empty else None
    for r in np.flatnonzero(~nhs_present)[rng.random(int((~nhs_present).sum())) < 0.5].tolist():
        nhs_number[r] = ""

    _flag_blanks(columns, children, child_id, flags)
    flags["nhs_missing"] = ~nhs_present
    return AgencyData(
        name=profile.name,
        profile=profile,
        columns=columns,
        child_id=child_id,
        errors=MappingProxyType(flags),
    )


_HIDDEN_BY_BLANK: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "given_name": ("given_missing", "given_nickname", "given_typo"),
        "family_name": (
            "family_missing", "family_changed", "family_hyphenated", "family_half", "family_typo",
        ),
        "date_of_birth": ("dob_missing", "dob_transposed", *_DOB_ERRORS),
        "sex": ("sex_missing", "sex_unknown"),
        "postcode": ("postcode_missing", "moved_house"),
    }
)  # fmt: skip
"""Column -> (the category of its blank, then the errors a blank in it hides)."""


def _flag_blanks(
    columns: Mapping[str, list[str | None]],
    children: _Children,
    child_id: NDArray[np.int64],
    flags: dict[str, NDArray[np.bool_]],
) -> None:
    """Flag the blank fields and clear the errors that a blank hid."""
    for column, (missing, *hidden) in _HIDDEN_BY_BLANK.items():
        blank = np.array([not value for value in columns[column]], dtype=np.bool_)
        flags[missing] = blank
        for category in hidden:
            flags[category] &= ~blank
    has_middle = np.array([children.middle[c] is not None for c in child_id.tolist()], bool)
    no_middle = np.array([not value for value in columns["middle_names"]], dtype=np.bool_)
    flags["middle_missing"] = has_middle & no_middle


def _date_errors(
    rng: np.random.Generator,
    profile: AgencyProfile,
    year: NDArray[np.int64],
    month: NDArray[np.int64],
    day: NDArray[np.int64],
    eligible: NDArray[np.bool_],
    flags: dict[str, NDArray[np.bool_]],
) -> None:
    """Apply at most one of ``_DOB_ERRORS`` to each ``eligible`` date, in place, and flag it.

    An error that has no valid result for a date (a month off for 31 May needs a 31-day
    neighbour) or that would write the same date leaves the date alone, unflagged.
    """
    kind_draw = rng.random(eligible.shape[0])
    choice_draws = rng.random((eligible.shape[0], 2))
    rates = np.array([getattr(profile, f"{kind}_rate") for kind in _DOB_ERRORS], dtype=float)
    kinds = np.asarray(np.searchsorted(np.cumsum(rates), kind_draw, side="right"))
    for r in np.flatnonzero(eligible & (kinds < len(_DOB_ERRORS))).tolist():
        kind = _DOB_ERRORS[int(kinds[r])]
        date = (int(year[r]), int(month[r]), int(day[r]))
        changed = _date_error(kind, date, float(choice_draws[r, 0]), float(choice_draws[r, 1]))
        if changed is not None and changed != date:
            year[r], month[r], day[r] = changed
            flags[kind][r] = True


def _is_birth_date(year: int, month: int, day: int) -> bool:
    """A calendar date from 1900 up to ``REFERENCE_DATE``."""
    if not (1 <= month <= 12 and year >= 1900):
        return False
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return False
    return dt.date(year, month, day) <= REFERENCE_DATE


def _date_error(
    kind: str, date: tuple[int, int, int], pick: float, digit: float
) -> tuple[int, int, int] | None:
    """The date with one error of ``kind``; ``pick`` and ``digit`` choose among the options."""
    year, month, day = date
    if kind == "dob_placeholder":
        return (year, 1, 1)
    if kind == "dob_unknown_date":
        return (UNKNOWN_DATE.year, UNKNOWN_DATE.month, UNKNOWN_DATE.day)
    if kind == "dob_digit":
        text = f"{year:04d}{month:02d}{day:02d}"
        # Positions 2-7 (decade, year, month, day digits), tried from a drawn start.
        start, first_shift = int(pick * 6), int(digit * 9)
        for attempt in range(6 * 9):
            position = 2 + (start + attempt // 9) % 6
            shift = 1 + (first_shift + attempt) % 9  # 1-9: never the digit already there
            new = str((int(text[position]) + shift) % 10)
            typed = text[:position] + new + text[position + 1 :]
            candidate = (int(typed[:4]), int(typed[4:6]), int(typed[6:]))
            if candidate != date and _is_birth_date(*candidate):
                return candidate
        return None
    step = -1 if pick < 0.5 else 1
    for delta in (step, -step):  # the drawn direction first, then the other
        if kind == "dob_day_off":
            candidate = (year, month, day + delta)
        elif kind == "dob_month_off":
            candidate = (year, month + delta, day)
        else:  # dob_year_off
            candidate = (year + delta, month, day)
        if _is_birth_date(*candidate):
            return candidate
    return None


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def generate_population(
    n_children: int,
    *,
    seed: int,
    agencies: Sequence[AgencyProfile] = DEFAULT_AGENCIES,
    double_barrelled_share: float | None = None,
) -> SyntheticData:
    """Draw ``n_children`` children and each agency's records about them, all from ``seed``.

    Each agency draws from its own random streams keyed by its name, so adding, removing or
    reordering agencies leaves the other agencies' records unchanged. Select a profile with
    ``agencies=PROFILES["hard"]``. ``double_barrelled_share`` (default: ``DOUBLE_BARRELLED_SHARE``
    when some agency has a ``family_name_half_rate``, else none, as before that error existed)
    gives that share of households a double-barrelled family name, from a stream of its own.
    """
    if isinstance(n_children, bool) or not isinstance(n_children, int) or n_children < 0:
        raise InvalidValueError("n_children", "must be a non-negative integer")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidValueError("seed", "must be a non-negative integer")
    names = [profile.name for profile in agencies]
    prefixes = [profile.record_prefix for profile in agencies]
    if len(set(names)) != len(names) or len(set(prefixes)) != len(prefixes):
        raise InvalidValueError("agencies", "agency names and record prefixes must be unique")

    if double_barrelled_share is None:
        wanted = any(profile.family_name_half_rate > 0 for profile in agencies)
        double_barrelled_share = DOUBLE_BARRELLED_SHARE if wanted else 0.0
    if not _is_probability(double_barrelled_share):
        raise InvalidValueError("double_barrelled_share", "must be a probability in [0, 1]")

    tables = _name_tables()
    children = _draw_children(_stream(seed, 0), n_children, tables)
    if double_barrelled_share > 0:
        children = _with_double_barrelled_names(
            _stream(seed, 2), children, tables, double_barrelled_share
        )
    records = {}
    for profile in agencies:
        key = zlib.crc32(profile.name.encode("utf-8"))
        records[profile.name] = _agency_records(
            _stream(seed, 1, key), _stream(seed, 3, key), profile, children, tables
        )
    return SyntheticData(
        seed=seed, n_children=n_children, agencies=records, household_id=children.household
    )
