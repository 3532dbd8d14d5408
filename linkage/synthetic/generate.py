"""The generator: a seeded population of children and each agency's messy copy of it.

Contract: :func:`generate_population` draws households, children and agency records from
``seed`` alone (one independent stream per purpose, :func:`_stream`), so a change of one
profile leaves the draws of the others as they were. Every per-record choice is drawn in numpy
arrays up front; Python-level string edits run only over the records flagged for an edit.
Records are shuffled before numbering, so a record id says nothing about the child.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from linkage import namedata
from linkage.errors import InvalidValueError
from linkage.synthetic.addresses import Addresses, agency_addresses, draw_addresses
from linkage.synthetic.mistakes import (
    _MONTH_ABBREVIATIONS,
    _MONTH_NAMES,
    _NICKNAMES,
    _date_errors,
    make_typo,
    transliterate,
)
from linkage.synthetic.profiles import (
    _DOB_ERRORS,
    ADDRESS_COLUMN,
    BOY_SHARE,
    DEFAULT_AGENCIES,
    DOUBLE_BARRELLED_SHARE,
    ERROR_CATEGORIES,
    MIDDLE_NAME_SHARE,
    MIXED_NAME_SHARE,
    REFERENCE_DATE,
    SEX_STYLES,
    SEX_UNKNOWN_CODES,
    SIBLING_SHARE,
    TWIN_SHARE,
    AgencyProfile,
    _is_probability,
)
from linkage.synthetic.records import AgencyData, SyntheticData

_OLDEST_BIRTH_DATE = dt.date(REFERENCE_DATE.year - 18, REFERENCE_DATE.month, REFERENCE_DATE.day)
_INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # letters used in the inward part of a UK postcode


def zipf_weights(count: int, *, offset: float, exponent: float = 1.0) -> NDArray[np.float64]:
    """Zipf-Mandelbrot probabilities ``1 / (rank + offset) ** exponent`` for ranks 1..count."""
    ranks = np.arange(1, count + 1, dtype=np.float64)
    weights = 1.0 / (ranks + offset) ** exponent
    normalised: NDArray[np.float64] = weights / weights.sum()
    return normalised


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
    addresses: tuple[np.random.Generator, Addresses] | None = None,
) -> AgencyData:
    """One agency's records. ``rng`` draws the original errors, ``extra`` the newer ones.

    The newer errors (the ``AgencyProfile`` fields that default to 0.0) draw only from
    ``extra``, so the records of a profile that leaves them at 0.0 are the same as before they
    existed. ``addresses`` (a generator of the agency's own and every household's address)
    adds the ``ADDRESS_COLUMN``; it draws only from that generator, reusing the postcode's
    move and the names' case noise, so every other value is as without it.
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
    if addresses is not None:
        address_rng, household_address = addresses
        truth = household_address.take(children.household[child_id])
        address, address_flags = agency_addresses(address_rng, profile, truth, moved)
        for r, style in zip(case_records, case_styles, strict=True):
            if address[r]:
                address[r] = _case_noise(address[r] or "", style)
        columns[ADDRESS_COLUMN] = address
        flags.update(address_flags)
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


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def generate_population(
    n_children: int,
    *,
    seed: int,
    agencies: Sequence[AgencyProfile] = DEFAULT_AGENCIES,
    double_barrelled_share: float | None = None,
    addresses: bool = False,
) -> SyntheticData:
    """Draw ``n_children`` children and each agency's records about them, all from ``seed``.

    Each agency draws from its own random streams keyed by its name, so adding, removing or
    reordering agencies leaves the other agencies' records unchanged. Select a profile with
    ``agencies=PROFILES["hard"]``. ``double_barrelled_share`` (default: ``DOUBLE_BARRELLED_SHARE``
    when some agency has a ``family_name_half_rate``, else none, as before that error existed)
    gives that share of households a double-barrelled family name, from a stream of its own.
    ``addresses`` gives every household an address line and every agency an ``ADDRESS_COLUMN``
    with its address errors (``ADDRESS_ERROR_CATEGORIES``), all from streams of their own: every
    other value, and so every figure measured without addresses, is the same with them.
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
    household_address = None
    if addresses:
        household_address = draw_addresses(_stream(seed, 4), children.household_family.shape[0])
    records = {}
    for profile in agencies:
        key = zlib.crc32(profile.name.encode("utf-8"))
        agency_address = None
        if household_address is not None:
            agency_address = (_stream(seed, 5, key), household_address)
        records[profile.name] = _agency_records(
            _stream(seed, 1, key), _stream(seed, 3, key), profile, children, tables,
            agency_address,
        )  # fmt: skip
    return SyntheticData(
        seed=seed, n_children=n_children, agencies=records, household_id=children.household
    )
