"""Household address lines and the mistakes agencies make in them.

Contract: :func:`draw_addresses` draws ``count`` true address lines (a house number, a street,
for a share of them a flat) from a generator of its own; :func:`agency_addresses` writes one
agency's copy of them with its errors (``AgencyProfile.address_*_rate``,
``MissingRates.address``), moving the records that ``moved`` names to a newly drawn address.
Every draw is made from the generators passed in, in numpy arrays up front, so a population
drawn with addresses has every other value exactly as one drawn without.

The streets: the most common street names of Great Britain (a short, Zipf-weighted list: High
Street, Station Road...) for a share :data:`COMMON_STREET_SHARE` of addresses, the rest a
plausible name built from a place or tree word and a street type ("Willow Close"), so that a
street is a frequent value, as it is in real data, without being one of a handful.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from linkage.synthetic.profiles import ADDRESS_ERROR_CATEGORIES, FLAT_SHARE, AgencyProfile

COMMON_STREETS: tuple[str, ...] = (
    "High Street", "Station Road", "Main Street", "Park Road", "Church Road", "Church Street",
    "London Road", "Victoria Road", "Green Lane", "Manor Road", "Church Lane", "Park Avenue",
    "The Avenue", "The Crescent", "Queens Road", "New Road", "Grange Road", "Kings Road",
    "Kingsway", "Windsor Road", "Highfield Road", "Mill Lane", "Alexandra Road", "York Road",
    "Main Road", "Broadway", "King Street", "The Green", "Springfield Road", "George Street",
    "Park Lane", "Victoria Street", "Albert Road", "Queensway", "New Street", "Queen Street",
    "West Street", "North Street", "Manchester Road", "The Drive", "Richmond Road", "Grove Road",
    "South Street", "School Lane", "The Grove", "Mill Road", "Chester Road", "Stanley Road",
)  # fmt: skip
"""Street names often counted among Great Britain's most common, in roughly that order (a
judgement from published rankings of the Royal Mail address file; drawn Zipf-weighted)."""

COMMON_STREET_SHARE = 0.3
"""Share of addresses on one of :data:`COMMON_STREETS` (judgement); the rest are built."""

_STREET_WORDS: tuple[str, ...] = (
    "Acacia", "Ash", "Beech", "Birch", "Cedar", "Elm", "Hawthorn", "Hazel", "Holly", "Laurel",
    "Lime", "Maple", "Oak", "Rowan", "Sycamore", "Willow", "Abbey", "Albion", "Ashford",
    "Belmont", "Bridge", "Brook", "Castle", "Chapel", "Clarence", "Coronation", "Cromwell",
    "Dale", "Derwent", "Farm", "Fernhill", "Forest", "Garden", "Hall", "Heath", "Hillside",
    "Jubilee", "Lake", "Meadow", "Milton", "Moor", "Nelson", "Orchard", "Primrose", "Priory",
    "Riverside", "St Johns", "St Marys", "Sandy", "Silver", "Spring", "Tudor", "Valley",
    "Wellington", "Westfield", "Woodland", "Beaconsfield", "Cavendish", "Kingsley", "Rosebery",
)  # fmt: skip
"""First words of the built street names: trees, places and people common in them."""

STREET_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "Road": "Rd", "Street": "St", "Lane": "Ln", "Avenue": "Ave", "Close": "Cl",
        "Drive": "Dr", "Way": "Wy", "Crescent": "Cres", "Gardens": "Gdns", "Grove": "Gr",
        "Place": "Pl", "Terrace": "Ter", "Court": "Ct", "Mews": "Mws", "Rise": "Rs",
    }
)  # fmt: skip
"""Street type -> the abbreviation an agency may write (``address_abbreviated``)."""

_COMMON_STREET_WEIGHTS = 1.0 / (np.arange(1, len(COMMON_STREETS) + 1) + 2.0)
_COMMON_STREET_WEIGHTS /= _COMMON_STREET_WEIGHTS.sum()  # Zipf-Mandelbrot, offset 2 (judgement)

_BUILT_TYPES = tuple(STREET_TYPES)
_BUILT_TYPE_WEIGHTS = np.array(
    [30, 12, 10, 8, 12, 8, 5, 4, 4, 3, 2, 2, 3, 1, 1], dtype=np.float64
)  # judgement: roads and closes the most frequent, mews and rises the rarest
_BUILT_TYPE_WEIGHTS /= _BUILT_TYPE_WEIGHTS.sum()


@dataclass(frozen=True)
class Addresses:
    """True address lines, one entry each: house number, street, flat number (0: no flat)."""

    number: NDArray[np.int64]
    street: list[str]
    flat: NDArray[np.int64]

    def take(self, rows: NDArray[np.int64]) -> Addresses:
        index = rows.tolist()
        return Addresses(self.number[rows], [self.street[i] for i in index], self.flat[rows])


def render(number: int, street: str, flat: int) -> str:
    """The address line: "12 Station Road", "Flat 3, 12 Station Road", or "Station Road"
    where the number is left out (0)."""
    line = f"{number} {street}" if number else street
    return f"Flat {flat}, {line}" if flat else line


def draw_addresses(rng: np.random.Generator, count: int) -> Addresses:
    """``count`` true addresses: small house numbers more often than large, a street from
    :data:`COMMON_STREETS` (Zipf) or built, a flat for :data:`FLAT_SHARE` of them."""
    number = np.minimum(rng.geometric(1 / 40, size=count), 400).astype(np.int64)
    common = rng.random(count) < COMMON_STREET_SHARE
    common_pick = rng.choice(len(COMMON_STREETS), size=count, p=_COMMON_STREET_WEIGHTS).tolist()
    word = rng.integers(0, len(_STREET_WORDS), size=count).tolist()
    kind = rng.choice(len(_BUILT_TYPES), size=count, p=_BUILT_TYPE_WEIGHTS).tolist()
    street = [
        COMMON_STREETS[c] if is_common else f"{_STREET_WORDS[w]} {_BUILT_TYPES[k]}"
        for is_common, c, w, k in zip(common.tolist(), common_pick, word, kind, strict=True)
    ]
    in_flat = rng.random(count) < FLAT_SHARE
    flat = np.where(in_flat, rng.integers(1, 25, size=count), 0).astype(np.int64)
    return Addresses(number=number, street=street, flat=flat)


def abbreviate(street: str) -> str:
    """The street with its type abbreviated ("Station Rd"); itself when it has no type."""
    head, _, last = street.rpartition(" ")
    short = STREET_TYPES.get(last)
    return f"{head} {short}" if head and short else street


def mistype_number(number: int, pick: float, digit: float) -> int:
    """``number`` with one digit keyed wrongly: two adjacent different digits swapped (chosen by
    ``pick`` < 0.3 where there are some) or one digit replaced by another (never a leading 0),
    always a different positive number."""
    text = str(number)
    swappable = [i for i in range(len(text) - 1) if text[i] != text[i + 1] and text[i + 1] != "0"]
    if pick < 0.3 and swappable:
        i = swappable[min(int(pick / 0.3 * len(swappable)), len(swappable) - 1)]
        return int(text[:i] + text[i + 1] + text[i] + text[i + 2 :])
    at = min(int(pick * len(text)), len(text) - 1)
    choices = [d for d in "0123456789" if d != text[at] and not (at == 0 and d == "0")]
    new = choices[min(int(digit * len(choices)), len(choices) - 1)]
    return int(text[:at] + new + text[at + 1 :])


def agency_addresses(
    rng: np.random.Generator,
    profile: AgencyProfile,
    truth: Addresses,
    moved: Sequence[int],
) -> tuple[list[str | None], dict[str, NDArray[np.bool_]]]:
    """One agency's address column (one entry per record of ``truth``) and its error flags.

    ``moved`` are the records of a child who moved house (the postcode's ``moved_house``
    draw): each gets a newly drawn address. A blank is ``None`` or ``""`` at random, as for
    the other columns.
    """
    count = len(truth.street)
    number = truth.number.copy()
    street = list(truth.street)
    flat = truth.flat.copy()
    moves = draw_addresses(rng, len(moved))
    for k, r in enumerate(moved):
        number[r], street[r], flat[r] = moves.number[k], moves.street[k], moves.flat[k]

    flags = {category: np.zeros(count, dtype=np.bool_) for category in ADDRESS_ERROR_CATEGORIES}
    draws = rng.random((count, 7))
    for r in np.flatnonzero(draws[:, 0] < profile.address_abbreviation_rate).tolist():
        short = abbreviate(street[r])
        flags["address_abbreviated"][r] = short != street[r]
        street[r] = short
    dropped = (draws[:, 1] < profile.address_number_missing_rate) & (number > 0)
    flags["address_number_missing"] = dropped
    flags["address_flat_dropped"] = (
        (draws[:, 2] < profile.address_flat_dropped_rate) & (flat > 0) & ~dropped
    )
    flat[dropped | flags["address_flat_dropped"]] = 0
    number[dropped] = 0
    typo = (draws[:, 3] < profile.address_number_typo_rate) & ~dropped
    for r in np.flatnonzero(typo).tolist():
        number[r] = mistype_number(int(number[r]), float(draws[r, 4]), float(draws[r, 5]))
    flags["address_number_typo"] = typo

    address: list[str | None] = [
        render(n, s, f) for n, s, f in zip(number.tolist(), street, flat.tolist(), strict=True)
    ]
    blank = draws[:, 6] < profile.missing.address
    empty_string = rng.random(count) < 0.5
    for r in np.flatnonzero(blank).tolist():
        address[r] = "" if empty_string[r] else None
    for category in ADDRESS_ERROR_CATEGORIES:
        flags[category] &= ~blank
    flags["address_missing"] = blank
    return address, flags
