"""The mistakes agencies make in a value: typos, transliterations, wrong dates, NHS numbers.

Contract: every function is a pure function of the value and of draws (numbers in [0, 1) or a
seeded generator) supplied by the caller, so the generator's seed alone decides every mistake.
:func:`make_typo` makes a keyboard-neighbour substitution, deletion, insertion or
transposition; :func:`transliterate` swaps a name for a common spelling variant; the date
errors are the usual ones of real records (a day or month off, day and month transposed, a
placeholder date).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
from anyascii import anyascii
from numpy.typing import NDArray

from linkage import namedata
from linkage.errors import InvalidValueError
from linkage.synthetic.profiles import _DOB_ERRORS, REFERENCE_DATE, UNKNOWN_DATE, AgencyProfile

_MONTH_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                        "Nov", "Dec")  # fmt: skip
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August",
                "September", "October", "November", "December")  # fmt: skip
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
