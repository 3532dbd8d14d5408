"""Helpers for tests of the synthetic population: one shared large population, and checks
written independently of the module under test."""

from __future__ import annotations

import datetime as dt
from functools import cache

from linkage.synthetic import DATE_FORMATS, SyntheticData, generate_population

#: children in the shared large population
LARGE = 20_000


@cache
def large_population() -> SyntheticData:
    """One 20 k-child population shared by the rate tests (generated once, read only)."""
    return generate_population(LARGE, seed=2026)


def reference_nhs_valid(text: str) -> bool:
    """Modulus 11 check written independently of the module under test."""
    digits = [int(c) for c in text]
    if len(digits) != 10:
        return False
    remainder = sum(d * (10 - position) for position, d in enumerate(digits[:9])) % 11
    check = (11 - remainder) % 11
    return check != 10 and check == digits[9]


def parse_date(value: str, date_format: str) -> dt.date:
    """A written date of birth read back in its agency's format."""
    return dt.datetime.strptime(value, DATE_FORMATS[date_format]).date()
