"""The schema file's tables as strict models, and the rules that span tables.

Contract: :class:`SchemaDocument`, :class:`SchemaHead`, :class:`HardeningTable`,
:class:`FieldTable` and :class:`BlockingTable` are the shape of a schema file, validated with
:mod:`linkage.strict` (unknown keys, types and one-key rules; every problem collected, by
position, never quoting the file); :func:`read_table` validates one table so that a key with a
problem takes its default and the rest of the table is still checked by the rules that span
tables, which :mod:`linkage.schema.model` applies. :func:`_parse_ref` resolves a
``"<field>.<transform>"`` reference, naming only validated field names and our own words;
:func:`_check_hardening_width` checks hardening against a filter's width.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field, PlainValidator

from linkage.normalise import DATE_RANGE, YearRange
from linkage.schema.fields import BLOCKING_TRANSFORMS, PHONETIC_CODES, Hardening, view_suffix
from linkage.strict import Problems, StrictModel, did_you_mean, rule, validate

T = TypeVar("T", bound=StrictModel)

#: Years a date can be written with: the normaliser reads four-digit years only.
_WRITABLE_YEARS = (1, 9999)
#: Tables written as headers in problem positions (``[schema].name``).
BRACKETS = frozenset({"schema", "hardening"})


def _within(low: int, high: int, expected: str) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise rule(expected)
        return value

    return check


def _bits(most: int, expected: str) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < 64 or value % 64 or value > most:
            raise rule(expected)
        return value

    return check


def _date_range(value: object) -> YearRange:
    """``[schema].date_range``: two integer years, first <= last, four digits at most."""
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(y, bool) or not isinstance(y, int) for y in value)
    ):
        raise rule("expected two integer years [first, last]")
    first, last = value
    low, high = _WRITABLE_YEARS
    if not low <= first <= last <= high:
        raise rule(f"expected {low} <= first <= last <= {high}")
    return first, last


def _blip(value: float) -> float:
    if not value >= 0 or value == float("inf"):
        raise rule("expected >= 0 (0 turns BLIP off)")
    return float(value)


def _diffusion(value: int) -> int:
    if value < 0:
        raise rule("expected >= 0 (0 turns diffusion off)")
    return value


def _phonetic(codes: list[str]) -> list[str]:
    if any(code not in PHONETIC_CODES for code in codes):
        raise rule(f"expected codes from {', '.join(PHONETIC_CODES)}")
    return codes


def _levels(levels: list[float]) -> list[float]:
    if not all(0 < level <= 1 for level in levels):
        raise rule("expected numbers in (0, 1]")
    if not levels or any(a <= b for a, b in itertools.pairwise(levels)):
        raise rule("expected a non-empty, strictly descending list")
    return [float(level) for level in levels]


def _salt(value: object) -> str | list[str]:
    """One salt (``""`` for none), or a list of two or more with different transforms."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise rule("expected a string or a list of strings")
    if len(value) < 2:
        raise rule('a list needs two or more salts (one salt: "<field>.<x>")')
    if len({view_suffix(x) for x in value}) != len(value):
        raise rule("the salts of a list need different transforms")
    return value


def _combines(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise rule("expected a list of different field names")
    return names


class SchemaDocument(StrictModel):
    """The top level of a schema file: which tables it may hold."""

    schema_head: Any = Field(default=None, alias="schema")
    hardening: Any = None
    field: Any = None
    blocking: Any = None


class SchemaHead(StrictModel):
    """The ``[schema]`` table."""

    name: str = ""
    version: int = 0
    day_first: bool = True
    date_range: Annotated[YearRange, PlainValidator(_date_range)] = DATE_RANGE
    record_filter_bits: Annotated[
        int, AfterValidator(_bits(2**31, "expected a positive multiple of 64"))
    ] = 1024
    description: str = ""


class HardeningTable(StrictModel):
    """The ``[hardening]`` table, or a field's ``hardening`` table."""

    balance: bool = False
    xor_fold: bool = False
    blip_epsilon: Annotated[float, AfterValidator(_blip)] = 0.0
    diffusion_t: Annotated[int, AfterValidator(_diffusion)] = 0

    def options(self) -> Hardening:
        return Hardening(self.balance, self.xor_fold, self.blip_epsilon, self.diffusion_t)


class FieldTable(StrictModel):
    """One ``[[field]]`` table. ``name``, ``kind`` and ``tokeniser`` are checked by the
    schema's own rules (they depend on each other and on the other fields)."""

    name: str = ""
    kind: str = ""
    tokeniser: str | None = None
    q: Annotated[int, AfterValidator(_within(1, 4, "expected 1 to 4"))] = 2
    padded: bool = True
    filter_bits: Annotated[
        int, AfterValidator(_bits(8192, "expected a multiple of 64 from 64 to 8192"))
    ] = 256
    hashes_per_token: Annotated[int, AfterValidator(_within(1, 64, "expected 1 to 64"))] = 4
    record_hashes_per_token: Annotated[int, AfterValidator(_within(0, 64, "expected 0 to 64"))] = 2
    phonetic: Annotated[list[str], AfterValidator(_phonetic)] = Field(default_factory=list)
    levels: Annotated[list[float], AfterValidator(_levels)] = Field(
        default_factory=lambda: [0.9, 0.7, 0.5]
    )
    salt: Annotated[str | list[str], PlainValidator(_salt)] = ""
    hardening: HardeningTable = HardeningTable()
    combines: Annotated[list[str], AfterValidator(_combines)] = Field(default_factory=list)


class BlockingTable(StrictModel):
    """One ``[[blocking]]`` table; its parts are resolved by :func:`_parse_ref`."""

    name: str = ""
    parts: list[Any] = Field(default_factory=list)


def read_table(
    model: type[T], data: Any, problems: Problems, where: tuple[str | int, ...]
) -> tuple[T, frozenset[object]]:
    """``data`` validated as ``model``, and the keys that had a problem.

    Every key of the models here has a default: a key with a problem is reported and takes
    its default, so the rules that span tables still see the rest of the table.
    """
    parsed = validate(model, data, problems, where=where, brackets=BRACKETS)
    if parsed is not None:
        return parsed, frozenset()
    if not isinstance(data, dict):
        return model.model_validate({}), frozenset()
    bad = frozenset(key for key in data if validate(model, {key: data[key]}, Problems()) is None)
    return model.model_validate({k: v for k, v in data.items() if k not in bad}), bad


class _KnownFields:
    """Field names seen so far, for resolving ``"<field>.<transform>"`` references.

    ``valid`` maps each validated field name (first table with that name) to its position and
    kind; ``rejected`` maps a name that failed validation to its position, so that a reference
    to it is reported against that table rather than as unknown.
    """

    def __init__(self) -> None:
        self.valid: dict[str, tuple[int, str]] = {}
        self.rejected: dict[str, int] = {}


def _parse_ref(
    problems: Problems, where: str, ref: Any, known: _KnownFields, *, salt: bool = False
) -> tuple[str, str, int] | None:
    """``(field, transform, field position)`` of a valid reference, else record a problem.
    A ``salt`` reference may not name ``filter`` (a salt is a value).

    Messages name ``where`` and the expectation, and list only validated field names and our
    own transform names: never the unresolved text of the reference.
    """
    if not isinstance(ref, str) or ref.count(".") != 1:
        problems.add(f'{where}: expected "<field>.<transform>"')
        return None
    fld, transform = ref.split(".")
    if fld not in known.valid:
        if fld in known.rejected:
            problems.add(
                f'{where}: the part before "." names field[{known.rejected[fld]}], '
                "whose name is invalid"
            )
        else:
            names = list(known.valid)
            problems.add(
                f'{where}: the part before "." is not a field of this schema, '
                f"expected one of: {', '.join(names) or '(no valid fields)'}"
                f"{did_you_mean(fld, names)}"
            )
        return None
    position, kind = known.valid[fld]
    allowed = sorted(BLOCKING_TRANSFORMS[kind] - ({"filter"} if salt else set()))
    if salt and transform == "filter":
        problems.add(
            f'{where}: the transform "filter" is for blocking parts, '
            'expected a value transform such as "value" or "year"'
        )
        return None
    if transform not in allowed:
        problems.add(
            f'{where}: the transform after "." is not available for field[{position}] '
            f"({fld}, a {kind} field), expected one of: {', '.join(allowed)}"
            f"{did_you_mean(transform, allowed)}"
        )
        return None
    return fld, transform, position


def _check_hardening_width(
    problems: Problems, where: str, options: Hardening, filter_bits: int, bits_key: str
) -> None:
    """Record a problem when ``options`` cannot apply to a ``filter_bits``-bit filter.

    The transforms run in the order balance -> diffusion -> xor_fold -> BLIP
    (:mod:`linkage.harden`): diffusion and folding see the width after balancing.
    """
    bits = 2 * filter_bits if options.balance else filter_bits
    if options.diffusion_t > bits:
        problems.add(
            f"{where}.diffusion_t: expected at most {bits}, the filter width in bits at that step"
        )
    if options.xor_fold and (bits // 64) % 2:
        problems.add(
            f"{where}.xor_fold: needs an even number of 64-bit words to fold; {bits_key} gives "
            f"{bits // 64} at that step (turn on balance or use a multiple of 128 bits)"
        )
