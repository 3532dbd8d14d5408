"""Strict parsing helpers: problems collected all at once, named by position, never quoted.

Contract: :class:`_Problems` collects every problem of a schema before one
:class:`~linkage.errors.SchemaError` is raised; an unknown key is a problem, with the nearest
allowed word when it looks like a misspelling (:func:`_did_you_mean`). A problem names a
position built from known structure (``field[2].salt``, "key 4 of the table"), never a key,
name or value from the file, which may be an identifier pasted in by mistake; the same holds
for TOML decoding errors (:func:`toml_error_text`). :func:`_toml_value` renders the values a
schema holds as TOML, for :meth:`linkage.schema.Schema.to_toml`.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from typing import Any

from linkage.errors import ArgumentTypeError
from linkage.normalise import DATE_RANGE
from linkage.schema.fields import BLOCKING_TRANSFORMS, Hardening

_SCHEMA_KEYS = {
    "name",
    "version",
    "day_first",
    "date_range",
    "record_filter_bits",
    "description",
}
_HARDENING_KEYS = {"balance", "xor_fold", "blip_epsilon", "diffusion_t"}
_FIELD_KEYS = {
    "name",
    "kind",
    "tokeniser",
    "q",
    "padded",
    "filter_bits",
    "hashes_per_token",
    "record_hashes_per_token",
    "phonetic",
    "levels",
    "salt",
    "hardening",
    "combines",
}
_BLOCKING_KEYS = {"name", "parts"}
_TOP_KEYS = {"schema", "hardening", "field", "blocking"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_basic_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table; keys are our own option names
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise ArgumentTypeError(f"cannot render {type(value).__name__} as TOML")


def _toml_basic_string(text: str) -> str:
    """``text`` as a TOML basic string that parses back to exactly ``text``.

    Written between double quotes; ``"`` and ``\\`` are escaped with a backslash, the
    control characters U+0000 to U+001F and U+007F (which TOML forbids raw) as ``\\uXXXX``
    (four upper-case hex digits), and every other character, including characters outside the
    Basic Multilingual Plane, is written as itself (the file is UTF-8). ``json.dumps`` is not
    used: its ASCII escapes write a non-BMP character as a surrogate pair, which TOML rejects.
    """
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


#: tomllib messages that quote the document (a key, a table name, a character), which may be an
#: identifier pasted into the file, and what to say instead.
_TOML_REASONS_QUOTING_THE_TEXT = {
    "Cannot declare": "a table is declared twice",
    "Cannot mutate immutable namespace": "a key extends an inline table or a static array",
    "Cannot redefine namespace": "a dotted key redefines a table",
    "Duplicate inline table key": "a key is repeated in an inline table",
    "Found invalid character": "invalid character in a comment or literal string",
    "Illegal character": "illegal character in a string",
}
#: tomllib messages made of the parser's own words only; they are passed on as they are.
_TOML_OWN_REASONS = re.compile(
    r"Invalid statement|Expected newline or end of document after a statement"
    r"|Cannot overwrite a value|Expected '\]' at the end of a table declaration"
    r"|Expected '\]\]' at the end of an array declaration"
    r"|Expected '=' after a key in a key/value pair|Invalid initial character for a key part"
    r"|Unclosed array|Unclosed inline table|Unescaped '\\' in a string|Invalid hex value"
    r"|Escaped character is not a Unicode scalar value|Unterminated string"
    r"|Invalid date or datetime|Invalid value|Expected \"'{1,3}\""
)
_TOML_POSITION = re.compile(r" \(at (line \d+, column \d+|end of document)\)\Z")


def toml_error_text(error: tomllib.TOMLDecodeError) -> str:
    """tomllib's reason and position, without any text quoted from the document.

    A schema or config path may point at a data file by mistake: the message keeps the line and
    column and the parser's own reason, and replaces a reason that quotes the text. Used for
    every TOML the project reads (schemas here, node and matcher configs in
    ``server.common.config``).
    """
    message = str(error)
    position = _TOML_POSITION.search(message)
    reason = message[: position.start()] if position else message
    where = f" ({position.group(1)})" if position else ""
    if _TOML_OWN_REASONS.fullmatch(reason):
        return reason + where
    for prefix, safe in _TOML_REASONS_QUOTING_THE_TEXT.items():
        if reason.startswith(prefix):
            return safe + where
    return "syntax error" + where


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def unknown_keys(self, where: str, got: Mapping[str, Any], allowed: set[str]) -> None:
        """One problem per unknown key, by position: the key itself may be an identifier."""
        container = "the document" if where == "top level" else "the table"
        expected = ", ".join(sorted(allowed))
        for position, key in enumerate(got, start=1):
            if key not in allowed:
                self.add(
                    f"{where}: unknown key (key {position} of {container}), "
                    f"expected one of: {expected}{_did_you_mean(key, sorted(allowed))}"
                )

    def typed(self, where: str, got: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
        if key not in got:
            return default
        value = got[key]
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            self.add(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
            return default
        return value


def _did_you_mean(word: object, choices: list[str]) -> str:
    """``' (did you mean "x"?)'`` for the closest of our own ``choices``, or ``""``.

    Only a word from ``choices`` is ever printed, never ``word``.
    """
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, choices, n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


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
    problems: _Problems, where: str, ref: Any, known: _KnownFields, *, salt: bool = False
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
                f"{_did_you_mean(fld, names)}"
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
            f"{_did_you_mean(transform, allowed)}"
        )
        return None
    return fld, transform, position


#: Years a date can be written with: the normaliser reads four-digit years only.
_WRITABLE_YEARS = (1, 9999)


def _parse_date_range(problems: _Problems, value: Any) -> tuple[int, int]:
    """``[schema].date_range``: two integer years, first <= last, four digits at most."""
    where = "[schema].date_range"
    if (
        not isinstance(value, list)
        or len(value) != 2
        or any(isinstance(y, bool) or not isinstance(y, int) for y in value)
    ):
        problems.add(f"{where}: expected two integer years [first, last]")
        return DATE_RANGE
    first, last = value
    low, high = _WRITABLE_YEARS
    if not low <= first <= last <= high:
        problems.add(f"{where}: expected {low} <= first <= last <= {high}")
        return DATE_RANGE
    return first, last


def _parse_hardening(problems: _Problems, where: str, table: Any) -> Hardening:
    """The :class:`Hardening` of a ``[hardening]`` or ``field[i].hardening`` table."""
    if not isinstance(table, dict):
        problems.add(f"{where}: expected a table")
        table = {}
    problems.unknown_keys(where, table, _HARDENING_KEYS)
    options = Hardening(
        balance=problems.typed(where, table, "balance", bool, False),
        xor_fold=problems.typed(where, table, "xor_fold", bool, False),
        blip_epsilon=problems.typed(where, table, "blip_epsilon", float, 0.0),
        diffusion_t=problems.typed(where, table, "diffusion_t", int, 0),
    )
    if not options.blip_epsilon >= 0 or options.blip_epsilon == float("inf"):
        problems.add(f"{where}.blip_epsilon: expected >= 0 (0 turns BLIP off)")
    if options.diffusion_t < 0:
        problems.add(f"{where}.diffusion_t: expected >= 0 (0 turns diffusion off)")
    return options


def _check_hardening_width(
    problems: _Problems, where: str, options: Hardening, filter_bits: int, bits_key: str
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
