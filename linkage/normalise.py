"""Normalisation: raw identifier strings to canonical values, before tokenisation.

Role: ``schema -> normalise -> encode``. Every field value an agency holds passes through one
of these normalisers before it is tokenised and hashed, so that two agencies holding "Dr José
O'Brien" and "JOSE OBRIEN" produce the same tokens. ``NORMALISERS`` maps the schema's kind to
its function, each ``normalise_x(raw, *, field, day_first=True, years=DATE_RANGE) -> str |
None`` (``day_first`` and ``years`` are read by :func:`normalise_date` only).

Invariants:

* Pure, deterministic, idempotent and Unicode-aware (NFKC, then ``anyascii``: letters are
  transliterated, never dropped, so José -> jose and Müller -> muller).
* Missing is ``None``: ``None``, NaN, empty or blank text, a null marker
  (:data:`NULL_MARKERS`), or a value whose canonical form is one ("N.A." -> "na").
* A present value that cannot be normalised raises
  :class:`linkage.errors.InvalidValueError` naming the field and the expectation, never the
  value; the caller decides whether to count it as missing.
* :data:`NORMALISATION_VERSION` is part of the schema fingerprint: any change of output for
  any input bumps it and the golden vectors (``tests/linkage/golden/normalise.json``), because two
  agencies that normalise differently produce encodings that silently fail to match.

Canonical forms::

    name        lowercase ASCII letters, parts separated by single spaces ("vanderberg mary")
    date        ISO 8601 calendar date "YYYY-MM-DD", year in the schema's date_range
    postcode    uppercase outward code, one space, inward code ("SW1A 1AA")
    nhs_number  ten ASCII digits, no separators, valid modulus-11 check digit
    sex         "m", "f" or "x"
    text        lowercase ASCII letters and digits separated by single spaces
    exact       stripped, whitespace collapsed to single spaces, lowercased (no other change)
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Protocol

from anyascii import anyascii

from linkage.errors import InvalidValueError

__all__ = [
    "DATE_RANGE",
    "NAME_PARTICLES",
    "NAME_TITLES",
    "NORMALISATION_VERSION",
    "NORMALISERS",
    "NULL_MARKERS",
    "PLACEHOLDER_DATES",
    "Normaliser",
    "YearRange",
    "date_parts",
    "is_valid_nhs_number",
    "name_parts",
    "nhs_check_digit",
    "normalise_date",
    "normalise_exact",
    "normalise_name",
    "normalise_nhs_number",
    "normalise_postcode",
    "normalise_sex",
    "normalise_text",
    "postcode_area",
    "postcode_district",
    "postcode_sector",
]

NORMALISATION_VERSION: Final = 1
"""Version of every rule in this module; bump it on any change of output for any input."""

YearRange = tuple[int, int]
"""The first and last year a date may have, both included."""

DATE_RANGE: Final[YearRange] = (1900, 2100)
"""The plausible years of a date unless the schema says otherwise (``[schema] date_range``):
a date of birth outside them is a keying error, not a child."""

NULL_MARKERS: Final = frozenset({"null", "none", "n/a", "na", "unknown", "not known", "-", "?"})
"""Values (lowercased, stripped, whitespace collapsed) that mean "missing"."""

NAME_TITLES: Final = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "master", "dr", "prof", "sir", "rev"}
)
"""Honorifics removed when they are a whole leading part of a name (with or without a dot)."""

NAME_PARTICLES: Final = frozenset(
    {
        "van", "von", "der", "den", "de", "del", "della", "la", "le", "di", "da", "du",
        "dos", "das", "al", "el", "bin", "ibn", "ben", "ter", "ten", "st", "mac", "mc", "o",
    }
)  # fmt: skip
"""Name particles glued to the following part so a family name is one comparable part."""


class Normaliser(Protocol):
    """The uniform signature of every normaliser in ``NORMALISERS``."""

    def __call__(
        self, raw: str | None, *, field: str, day_first: bool = True, years: YearRange = DATE_RANGE
    ) -> str | None: ...


# ---------------------------------------------------------------------------------------------
# shared helpers

_WHITESPACE_RE: Final = re.compile(r"\s+")


def _collapse(text: str) -> str:
    """Strip and collapse every run of (Unicode) whitespace to one ASCII space."""
    return _WHITESPACE_RE.sub(" ", text).strip()


def _present_text(raw: object, field: str) -> str | None:
    """Return the stripped text of a present value, or None when the value is missing.

    Raises InvalidValueError for a value that is not a string (naming only its type).
    """
    if raw is None:
        return None
    if isinstance(raw, float) and math.isnan(raw):
        return None
    if not isinstance(raw, str):
        raise InvalidValueError(field, f"expected a string, got {type(raw).__name__}")
    stripped = _collapse(raw)
    if not stripped or stripped.lower() in NULL_MARKERS:
        return None
    return stripped


def _transliterate(text: str) -> str:
    """NFKC, then ASCII transliteration (letters are transliterated, never dropped)."""
    return anyascii(unicodedata.normalize("NFKC", text))


# ---------------------------------------------------------------------------------------------
# names

# After transliteration and lowercasing, these characters separate the parts of a name.
# Hyphens, commas, underscores and whitespace are the brief's separators; slashes, brackets,
# quotes and the like never occur *inside* a name part, so they separate too
# ('Smith (nee Jones)' -> 'smith nee jones'). Every other non-letter (apostrophes, dots,
# digits, backticks) is deleted and the word joined: O'Brien -> obrien.
_NAME_SEPARATOR_RE: Final = re.compile(r"""[\s\-,_/\\;:&+()\[\]{}<>|"=*#!?]+""")
_NON_LETTER_RE: Final = re.compile(r"[^a-z]+")
# A title glued to the next word by a dot and nothing else ("Dr.Smith"): the dot separates.
_LEADING_DOTTED_TITLE_RE: Final = re.compile(
    r"^(?:" + "|".join(sorted(NAME_TITLES, key=len, reverse=True)) + r")\.(?=[a-z])"
)
# The Catalan middle dot joins letters (Col·lell); anyascii would turn it into a hyphen.
_JOINING_MARKS: Final = str.maketrans({"\u00b7": None, "\u0387": None, "\u2027": None})


def normalise_name(
    raw: str | None, *, field: str, day_first: bool = True, years: YearRange = DATE_RANGE
) -> str | None:
    """Return a given or middle name as lowercase ASCII letters, parts separated by spaces.

    The same steps as :func:`normalise_family_name` except that name particles are NOT
    glued: "Ben", "Al" and "Van" are given names in their own right ("Ben Ali" stays
    "ben ali").
    """
    return _normalise_person_name(raw, field=field, glue_particles=False)


def normalise_family_name(
    raw: str | None, *, field: str, day_first: bool = True, years: YearRange = DATE_RANGE
) -> str | None:
    """Return a family name as lowercase ASCII letters, parts separated by single spaces.

    Steps: NFKC and ``anyascii`` transliteration (José -> jose, Straße -> strasse,
    Þ -> th); lowercase; split into parts on whitespace, hyphens, commas, underscores and
    other bracketing punctuation; delete every other non-letter inside a part
    (O'Brien -> obrien, St. -> st); drop leading titles (Mr, Dr., Prof, ...) while another
    part follows, so a surname that *is* a title word ("Master") survives alone; glue name
    particles (van, de, al, mac, a lone o, ...) to the following part (van der Berg ->
    vanderberg, O Brien -> obrien, St John -> stjohn). A particle with no following part is
    kept as it is. Mac/Mc are not rewritten. Empty result, or a result that is a null
    marker, -> None.

    Particles are matched after transliteration, so the forms with and without diacritics
    agree. Given names use :func:`normalise_name`, which never glues.
    """
    return _normalise_person_name(raw, field=field, glue_particles=True)


def _normalise_person_name(raw: str | None, *, field: str, glue_particles: bool) -> str | None:
    present = _present_text(raw, field)
    if present is None:
        return None
    text = _transliterate(present.translate(_JOINING_MARKS)).lower().strip()
    while match := _LEADING_DOTTED_TITLE_RE.match(text):
        text = text[match.end() :]

    parts = [_NON_LETTER_RE.sub("", chunk) for chunk in _NAME_SEPARATOR_RE.split(text)]
    parts = [part for part in parts if part]
    while len(parts) > 1 and parts[0] in NAME_TITLES:
        del parts[0]

    if not glue_particles:
        result = " ".join(parts)
        return None if not result or result in NULL_MARKERS else result

    glued: list[str] = []
    pending = ""
    for part in parts:
        combined = pending + part
        # Keep gluing while the current part is a particle, or while what has been glued so
        # far is itself a particle ("de l" -> "del"): the second rule keeps the function
        # idempotent, since no part of the output except the last is then a particle.
        if part in NAME_PARTICLES or combined in NAME_PARTICLES:
            pending = combined
        else:
            glued.append(combined)
            pending = ""
    if pending:
        glued.append(pending)

    result = " ".join(glued)
    if not result or result in NULL_MARKERS:
        return None
    return result


def name_parts(normalised: str) -> tuple[str, ...]:
    """Split a normalised name into its parts ("vanderberg mary" -> ("vanderberg", "mary"))."""
    return tuple(normalised.split())


# ---------------------------------------------------------------------------------------------
# dates

_DATE_EXPECTATION: Final = "unparseable date (expected ISO YYYY-MM-DD, DD/MM/YYYY or DD-Mon-YYYY)"

_MONTHS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3,
        "april": 4, "apr": 4, "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7,
        "august": 8, "aug": 8, "september": 9, "sept": 9, "sep": 9, "october": 10,
        "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12,
    }
)  # fmt: skip
_MONTH_ALTERNATION: Final = "|".join(sorted(_MONTHS, key=len, reverse=True))
# An optional time of day after the date, as spreadsheets and databases export it:
# " 00:00", "T00:00:00", " 00:00:00.000", "T00:00:00Z", "T00:00:00+01:00". It is ignored:
# the calendar date is taken as written.
_TIME_SUFFIX: Final = (
    r"(?:[t ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?: ?(?:z|[+-]\d{2}:?\d{2}))?)?"
)
# All patterns run on NFKC-normalised, lowercased, whitespace-collapsed text.
_ISO_DATE_RE: Final = re.compile(
    r"(?P<year>\d{4})(?P<sep>[-/.])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2})" + _TIME_SUFFIX,
    re.ASCII,
)
_COMPACT_DATE_RE: Final = re.compile(r"(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})", re.ASCII)
_NUMERIC_DATE_RE: Final = re.compile(
    r"(?P<first>\d{1,2})(?P<sep>[-/.])(?P<second>\d{1,2})(?P=sep)(?P<year>\d+)" + _TIME_SUFFIX,
    re.ASCII,
)
_DAY_MONTH_NAME_RE: Final = re.compile(
    r"(?P<day>\d{1,2})(?:st|nd|rd|th)?[ \-/.]*(?P<month>" + _MONTH_ALTERNATION + r")"
    r"[ \-/.,]*(?P<year>\d+)",
    re.ASCII,
)
_MONTH_NAME_DAY_RE: Final = re.compile(
    r"(?P<month>" + _MONTH_ALTERNATION + r")[ \-/.]*(?P<day>\d{1,2})(?:st|nd|rd|th)?"
    r"[ \-/.,]+(?P<year>\d+)",
    re.ASCII,
)
_STRICT_ISO_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap_year(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _iso_date(year: int, month: int, day: int, field: str, years: YearRange) -> str:
    """Validate a calendar date and format it as YYYY-MM-DD."""
    first, last = years
    if not first <= year <= last:
        raise InvalidValueError(field, f"year outside the plausible range {first}-{last}")
    if not 1 <= month <= 12:
        raise InvalidValueError(field, "no such calendar date (month must be 1-12)")
    last_day = 29 if month == 2 and _is_leap_year(year) else _DAYS_IN_MONTH[month - 1]
    if not 1 <= day <= last_day:
        raise InvalidValueError(field, "no such calendar date")
    return f"{year:04d}-{month:02d}-{day:02d}"


def _four_digit_year(digits: str, field: str) -> int:
    if len(digits) == 4:
        return int(digits)
    if len(digits) == 2:
        raise InvalidValueError(
            field, "two-digit year is ambiguous (write the year in full, e.g. 02/03/2014)"
        )
    raise InvalidValueError(field, _DATE_EXPECTATION)


def normalise_date(
    raw: str | None, *, field: str, day_first: bool = True, years: YearRange = DATE_RANGE
) -> str | None:
    """Return a date as ISO "YYYY-MM-DD".

    Accepted forms (case-insensitive, surrounding whitespace ignored):

    - ISO ``2014-03-02``, ``2014/03/02``, ``2014.3.2``, optionally followed by a time of day
      (``2014-03-02T00:00:00``, ``2014-03-02 00:00:00``, with optional fraction and zone);
    - compact ``20140302`` (always read as YYYYMMDD);
    - numeric ``A/B/YYYY`` with ``/``, ``-`` or ``.`` as the (repeated) separator and one or
      two digits for A and B, optionally followed by a time of day. When one of A, B is
      greater than 12 the only possible reading is used; otherwise ``day_first`` decides
      (True, the UK default: DD/MM/YYYY; False: MM/DD/YYYY);
    - month names, full or three-letter (and "Sept"), with an optional ordinal suffix:
      ``2 March 2014``, ``02-Mar-2014``, ``2nd Mar 2014``, ``March 2, 2014``.

    Two-digit years ("2-mar-14", "02/03/14") are rejected with their own reason rather than
    guessed: for children's dates of birth a wrong century guess links the wrong people.
    The date must exist in the calendar (no 31 February) and its year lie in ``years`` (the
    schema's ``date_range``, :data:`DATE_RANGE` by default).
    """
    present = _present_text(raw, field)
    if present is None:
        return None
    text = unicodedata.normalize("NFKC", present).lower()

    if match := _ISO_DATE_RE.fullmatch(text):
        return _iso_date(int(match["year"]), int(match["month"]), int(match["day"]), field, years)
    if match := _NUMERIC_DATE_RE.fullmatch(text):
        year = _four_digit_year(match["year"], field)
        first, second = int(match["first"]), int(match["second"])
        if first > 12 and second > 12:
            raise InvalidValueError(field, "no such calendar date (neither part can be a month)")
        if first > 12 or (day_first and second <= 12):
            day, month = first, second
        else:
            month, day = first, second
        return _iso_date(year, month, day, field, years)
    if match := _COMPACT_DATE_RE.fullmatch(text):
        return _iso_date(int(match["year"]), int(match["month"]), int(match["day"]), field, years)
    for pattern in (_DAY_MONTH_NAME_RE, _MONTH_NAME_DAY_RE):
        if match := pattern.fullmatch(text):
            year = _four_digit_year(match["year"], field)
            return _iso_date(year, _MONTHS[match["month"]], int(match["day"]), field, years)
    raise InvalidValueError(field, _DATE_EXPECTATION)


def date_parts(iso: str, *, field: str = "date") -> tuple[int, int, int]:
    """Split a normalised ISO date "YYYY-MM-DD" into (year, month, day)."""
    match = _STRICT_ISO_RE.fullmatch(iso)
    if match is None:
        raise InvalidValueError(field, "expected a normalised ISO date YYYY-MM-DD")
    return int(match[1]), int(match[2]), int(match[3])


# ---------------------------------------------------------------------------------------------
# postcodes

# Shapes of a UK postcode with its whitespace removed: the outward code is A9, A99, A9A, AA9,
# AA99 or AA9A, the inward code 9AA; plus the special GIR 0AA. Only the *shape* is checked:
# the per-position letter restrictions of BS 7666 are not enforced, and non-geographic
# overseas-territory and BFPO codes are rejected.
_POSTCODE_RE: Final = re.compile(
    r"(?:(?P<outward>[A-Z]{1,2}[0-9][0-9A-Z]?)(?P<inward>[0-9][A-Z]{2})|GIR0AA)", re.ASCII
)
# A postcode as normalise_postcode returns it, split into area letters, the rest of the
# outward code, and the sector digit; used by the area/district/sector helpers.
_NORMALISED_POSTCODE_RE: Final = re.compile(
    r"(?P<area>[A-Z]{1,2})(?P<rest>[0-9][0-9A-Z]?) (?P<sector>[0-9])[A-Z]{2}|"
    r"(?P<gir>GIR) 0AA",
    re.ASCII,
)


def normalise_postcode(
    raw: str | None, *, field: str, day_first: bool = True, years: YearRange = DATE_RANGE
) -> str | None:
    """Return a UK postcode as "OUTWARD INWARD" in upper case ("sw1a1aa" -> "SW1A 1AA").

    All whitespace is removed, then one space is inserted before the last three characters;
    the result must have the shape A9 9AA, A99 9AA, A9A 9AA, AA9 9AA, AA99 9AA, AA9A 9AA or be
    GIR 0AA.
    """
    present = _present_text(raw, field)
    if present is None:
        return None
    compact = "".join(unicodedata.normalize("NFKC", present).upper().split())
    if _POSTCODE_RE.fullmatch(compact) is None:
        raise InvalidValueError(field, "not a UK postcode shape")
    return f"{compact[:-3]} {compact[-3:]}"


def _postcode_match(postcode: str, field: str) -> re.Match[str]:
    match = _NORMALISED_POSTCODE_RE.fullmatch(postcode)
    if match is None:
        raise InvalidValueError(field, "expected a normalised UK postcode such as 'SW1A 1AA'")
    return match


def postcode_area(postcode: str, *, field: str = "postcode") -> str:
    """The postcode area: the leading letters of a normalised postcode ("SW1A 1AA" -> "SW")."""
    match = _postcode_match(postcode, field)
    return match["gir"] or match["area"]


def postcode_district(postcode: str, *, field: str = "postcode") -> str:
    """The postcode district: the outward code of a normalised postcode ("SW1A 1AA" -> "SW1A")."""
    _postcode_match(postcode, field)
    return postcode.split(" ")[0]


def postcode_sector(postcode: str, *, field: str = "postcode") -> str:
    """The postcode sector: outward code, space, first inward digit ("SW1A 1AA" -> "SW1A 1")."""
    _postcode_match(postcode, field)
    return postcode[:-2]


# ---------------------------------------------------------------------------------------------
# NHS numbers

_NHS_SEPARATORS_RE: Final = re.compile(r"[\s\-]+")
_NINE_DIGITS_RE: Final = re.compile(r"[0-9]{9}", re.ASCII)
_TEN_DIGITS_RE: Final = re.compile(r"[0-9]{10}", re.ASCII)


def nhs_check_digit(first_nine: str, *, field: str = "nhs_number") -> int | None:
    """Modulus-11 check digit for the first nine digits of an NHS number.

    Weights 10, 9, ..., 2 multiply the nine digits; check = 11 - (sum mod 11), with 11 -> 0.
    A result of 10 means no valid NHS number starts with these digits: returns None.
    """
    if _NINE_DIGITS_RE.fullmatch(first_nine) is None:
        raise InvalidValueError(field, "expected the first 9 digits of an NHS number")
    total = sum(
        int(digit) * weight for digit, weight in zip(first_nine, range(10, 1, -1), strict=True)
    )
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def _nhs_problem(digits: str) -> str | None:
    """Why ten separator-free characters are not a usable NHS number, or None if they are."""
    if _TEN_DIGITS_RE.fullmatch(digits) is None:
        return "expected 10 digits"
    if nhs_check_digit(digits[:9]) != int(digits[9]):
        return "NHS number fails the modulus-11 check"
    if len(set(digits)) == 1:
        # 0000000000, 1111111111, 9999999999, ... pass the check but are placeholders typed
        # when the number is not known; accepting them would link unrelated children.
        return "placeholder NHS number (all digits the same)"
    return None


def _strip_nhs_separators(text: str) -> str:
    return _NHS_SEPARATORS_RE.sub("", unicodedata.normalize("NFKC", text))


def is_valid_nhs_number(s: str) -> bool:
    """True when ``s`` (spaces and hyphens ignored) is a number ``normalise_nhs_number`` accepts:
    ten digits with a correct modulus-11 check digit, and not a repeated-digit placeholder."""
    return _nhs_problem(_strip_nhs_separators(s)) is None


def normalise_nhs_number(
    raw: str | None, *, field: str, day_first: bool = True, years: YearRange = DATE_RANGE
) -> str | None:
    """Return an NHS number as ten digits ("943 476 5919" -> "9434765919").

    Spaces and hyphens are removed; the rest must be 10 digits whose last digit is the
    modulus-11 check digit of the first nine (see :func:`nhs_check_digit`). Numbers made of
    one repeated digit (e.g. 0000000000, 9999999999) pass the check but are placeholders,
    and are rejected too.
    """
    present = _present_text(raw, field)
    if present is None:
        return None
    digits = _strip_nhs_separators(present)
    problem = _nhs_problem(digits)
    if problem is not None:
        raise InvalidValueError(field, problem)
    return digits


# ---------------------------------------------------------------------------------------------
# sex

# NHS Data Dictionary person gender code: 0 not known, 1 male, 2 female, 9 not specified.
# 0 and 9 (like U/unknown) carry no information and are missing, not a third category.
_SEX_CODES: Final[Mapping[str, str | None]] = MappingProxyType(
    {
        "m": "m", "male": "m", "1": "m", "boy": "m",
        "f": "f", "female": "f", "2": "f", "girl": "f",
        "x": "x", "indeterminate": "x", "i": "x", "intersex": "x", "other": "x",
        "0": None, "9": None, "u": None, "unknown": None, "not known": None,
        "not specified": None, "not stated": None,
    }
)  # fmt: skip


#: Every normalised sex value.
SEX_VALUES: Final[tuple[str, ...]] = tuple(sorted({v for v in _SEX_CODES.values() if v}))

#: Normalisation kinds with few normalised values, and those values (a lookup that lacks such
#: a field where it salts another can be sent once per value: ``linkage.forms``).
PLACEHOLDER_DATES: Final[tuple[str, ...]] = ("1900-01-01",)
"""Dates agencies write for a date of birth they do not know (valid dates, so only linkage can
tell): a lookup's date hypotheses include them (:func:`linkage.forms.date_hypotheses`)."""

FINITE_VALUES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({"sex": SEX_VALUES})


def normalise_sex(
    raw: str | None, *, field: str, day_first: bool = True, years: YearRange = DATE_RANGE
) -> str | None:
    """Return "m", "f" or "x" from a recorded sex.

    M/Male/1/Boy -> "m"; F/Female/2/Girl -> "f"; X/Indeterminate/I/Intersex/Other -> "x";
    0, 9, U, Unknown, Not known, Not specified, Not stated -> None (missing, following the NHS
    Data Dictionary codes 0 "not known" and 9 "not specified"). Case, surrounding
    whitespace and trailing dots are ignored. Anything else raises InvalidValueError.
    """
    present = _present_text(raw, field)
    if present is None:
        return None
    key = _collapse(unicodedata.normalize("NFKC", present).lower().rstrip("."))
    if key not in _SEX_CODES:
        raise InvalidValueError(
            field, "unrecognised sex code (expected M/F/X, Male/Female/Indeterminate or 1/2)"
        )
    return _SEX_CODES[key]


# ---------------------------------------------------------------------------------------------
# generic text and exact identifiers

_NON_ALNUM_RE: Final = re.compile(r"[^a-z0-9]+")


def normalise_text(
    raw: str | None, *, field: str, day_first: bool = True, years: YearRange = DATE_RANGE
) -> str | None:
    """Return generic text (addresses, suburbs) as lowercase ASCII letters and digits.

    NFKC, ``anyascii`` transliteration, lowercase, every run of other characters (punctuation,
    whitespace) becomes one space, stripped. Empty result or a null marker -> None.
    """
    present = _present_text(raw, field)
    if present is None:
        return None
    result = _NON_ALNUM_RE.sub(" ", _transliterate(present).lower()).strip()
    if not result or result in NULL_MARKERS:
        return None
    return result


def normalise_exact(
    raw: str | None, *, field: str, day_first: bool = True, years: YearRange = DATE_RANGE
) -> str | None:
    """Return an identifier stripped, whitespace collapsed to single spaces, and lowercased.

    For identifiers compared exactly (FEBRL soc_sec_id, street numbers). NFKC is applied
    first so full-width digits equal ASCII ones; nothing else is changed.
    """
    present = _present_text(raw, field)
    if present is None:
        return None
    result = _collapse(unicodedata.normalize("NFKC", present).lower())
    if not result or result in NULL_MARKERS:
        return None
    return result


NORMALISERS: Final[Mapping[str, Normaliser]] = MappingProxyType(
    {
        "name": normalise_name,
        "family_name": normalise_family_name,
        "date": normalise_date,
        "postcode": normalise_postcode,
        "nhs_number": normalise_nhs_number,
        "sex": normalise_sex,
        "text": normalise_text,
        "exact": normalise_exact,
    }
)
"""Normaliser by the schema's normalisation kind; every entry has the uniform signature."""
