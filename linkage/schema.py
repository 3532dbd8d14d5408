"""The linkage schema: which fields exist and how each is normalised, tokenised and encoded.

Role: every agency node and the matcher load the same schema file. The node uses it to encode;
the matcher uses it to compare and score. A schema is a versioned TOML file::

    [schema]        name, version, day_first, record_filter_bits, description
    [hardening]     record-level hardening: balance, xor_fold, blip_epsilon, diffusion_t
    [[field]]       one table per field, in encoding order: name, kind, tokeniser, q, padded,
                    filter_bits, hashes_per_token, record_hashes_per_token, phonetic, levels,
                    salt, hardening (a table, same keys as [hardening]), combines
    [[blocking]]    one table per keyed blocking rule: name, parts

Invariants and contract:

* Parsed strictly (:func:`parse_schema`, :func:`schema_from_dict`) into frozen dataclasses:
  an unknown key is an error and every problem is reported at once
  (:class:`~linkage.errors.SchemaError`), by position built from known structure
  (``field[2].salt``), never with a key, name or value from the file, which may be an
  identifier pasted in by mistake.
* A blocking part or salt is written ``"<field>.<transform>"``; :data:`BLOCKING_TRANSFORMS`
  lists the transforms of each kind. A list-valued salt publishes the field once per salt,
  as *views* (:meth:`Schema.with_salt`); ``combines`` makes a field of other fields' values.
* Published widths after hardening are stated once: :meth:`Hardening.published_bits`,
  :attr:`FieldSpec.published_bits`, :attr:`Schema.published_record_bits`.
* :meth:`Schema.fingerprint` travels with every encoding; the matcher refuses encodings whose
  fingerprint differs from the schema it serves. It covers everything that changes encoding.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from linkage.errors import ArgumentTypeError, SchemaError

#: Version of the tokenisation + Bloom-filter construction. Bump on any change of output.
ENCODING_VERSION = 2

FIELD_KINDS = ("name", "family_name", "date", "postcode", "nhs_number", "sex", "text", "exact")
TOKENISERS = ("qgram", "date", "postcode", "exact")
PHONETIC_CODES = ("soundex", "nysiis", "metaphone", "match_rating")
DEFAULT_TOKENISER = {
    "name": "qgram",
    "family_name": "qgram",
    "text": "qgram",
    "date": "date",
    "postcode": "postcode",
    "nhs_number": "exact",
    "sex": "exact",
    "exact": "exact",
}
BLOCKING_TRANSFORMS: Mapping[str, frozenset[str]] = {
    "name": frozenset(
        {"value", "soundex", "nysiis", "metaphone", "initial", "first_part", "filter"}
    ),
    "family_name": frozenset(
        {"value", "soundex", "nysiis", "metaphone", "initial", "first_part", "filter"}
    ),
    "text": frozenset({"value", "soundex", "initial", "filter"}),
    "date": frozenset(
        {"value", "year", "month_day", "year_month", "year_day", "day_month", "filter"}
    ),
    "postcode": frozenset({"value", "sector", "district", "area", "filter"}),
    "nhs_number": frozenset({"value", "filter"}),
    "sex": frozenset({"value", "filter"}),
    "exact": frozenset({"value", "filter"}),
}
"""Transforms a blocking part may name, per field kind. ``filter`` (blocking parts only, not
salts) is the field's published filter: a rule of ``filter`` parts groups records exactly as
equal filters do, so it shows the matcher nothing more (:mod:`linkage.encode`)."""

VIEW_SEPARATOR = "@"
"""Joins a field's name and a salt's transform into the name of a view: ``given_name@year``."""


def view_suffix(salt: str) -> str:
    """The part of a view's name that its salt (``"<field>.<transform>"``) gives: the transform."""
    return salt.rsplit(".", 1)[-1]


_SCHEMA_KEYS = {"name", "version", "day_first", "record_filter_bits", "description"}
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


@dataclass(frozen=True)
class Hardening:
    """Hardening options of one filter (all off by default); see :mod:`linkage.harden`.

    The schema's ``[hardening]`` table hardens the record-level filter; a field's
    ``hardening`` table hardens that field's filter. Each filter is hardened under its own key.
    """

    balance: bool = False
    xor_fold: bool = False
    blip_epsilon: float = 0.0
    diffusion_t: int = 0

    @property
    def enabled(self) -> bool:
        """True when any transform is on (the filter is not published as encoded)."""
        return self != Hardening()

    def published_bits(self, filter_bits: int) -> int:
        """Width in bits of a ``filter_bits``-bit filter once hardened: what is published.

        The one statement of the width rule (:func:`linkage.harden.hardened_bits`, the
        encoder, the index and the wire checks all use it): balancing doubles the width, XOR
        folding halves it, diffusion and BLIP keep it. A validated schema never asks for a
        fold of an odd number of 64-bit words.
        """
        bits = 2 * filter_bits if self.balance else filter_bits
        return bits // 2 if self.xor_fold else bits

    def to_dict(self) -> dict[str, Any]:
        return {
            "balance": self.balance,
            "xor_fold": self.xor_fold,
            "blip_epsilon": self.blip_epsilon,
            "diffusion_t": self.diffusion_t,
        }


@dataclass(frozen=True)
class FieldSpec:
    """How one field is normalised, tokenised, encoded and compared.

    ``filter_bits`` (the paper symbol *l*) is the field-level Bloom filter length, a multiple
    of 64; ``hashes_per_token`` (*k*) the number of positions each token sets in it;
    ``record_hashes_per_token`` the positions each token sets in the record-level filter
    (0 keeps the field out of it). ``levels`` are descending Dice cut-offs for the
    Fellegi-Sunter comparison levels. ``salt`` names a ``field.transform`` whose value is mixed
    into every token of this field (hardening; empty for none). ``hardening`` transforms the
    field filter after encoding; the published width is :attr:`published_bits`.
    """

    name: str
    kind: str
    tokeniser: str
    q: int = 2
    padded: bool = True
    filter_bits: int = 256
    hashes_per_token: int = 4
    record_hashes_per_token: int = 2
    phonetic: tuple[str, ...] = ()
    levels: tuple[float, ...] = (0.9, 0.7, 0.5)
    salt: str = ""
    hardening: Hardening = field(default_factory=Hardening)
    view_of: str = ""
    """For a *view* (one of the filters of a field salted several ways): the field whose value
    it encodes. Empty for a field published once."""
    combines: tuple[str, ...] = ()
    """For a *combined* field: the input fields whose values, joined with a space in this
    order, are its value. It is compared only where none of them is (a fallback)."""

    @property
    def input_name(self) -> str:
        """The comparison this filter feeds: the field's name (a view's field's name)."""
        return self.view_of or self.name

    @property
    def filter_words(self) -> int:
        """Number of uint64 words in this field's filter as encoded (before hardening)."""
        return self.filter_bits // 64

    @property
    def published_bits(self) -> int:
        """Width in bits of this field's filter as published (after its hardening)."""
        return self.hardening.published_bits(self.filter_bits)

    @property
    def published_words(self) -> int:
        """Number of uint64 words in this field's filter as published (after its hardening)."""
        return self.published_bits // 64


@dataclass(frozen=True)
class BlockingRule:
    """A keyed blocking rule: records agreeing on every part share a block."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (field name, transform)


@dataclass(frozen=True)
class Schema:
    """A parsed, validated linkage schema.

    Views: a field whose ``salt`` is a list (``["date_of_birth.year_month",
    "date_of_birth.day_month"]``) is published once per salt, each a *view* with a field of its
    own in :attr:`fields` named ``<field>@<transform>`` (``given_name@year_month``): its own
    filter and blocking parts (``"given_name@year_month.filter"``), and no salt tag (a tag
    would group records by the salt value, which the filters do not show;
    :attr:`salt_sources`). The views of a field are one comparison (:attr:`comparison_names`,
    :mod:`linkage.compare`): the best of its views, so an error in one part of the salt value
    leaves the field compared.

    Combined fields: a field with ``combines = ["given_name", "family_name"]`` reads no column
    of its own; its value is those fields' raw values joined with a space
    (:func:`linkage.encode.raw_values`), and it is compared only where none of them is (a
    fallback, never counted twice). :attr:`input_names` are the columns a node reads;
    :attr:`comparison_names` the model's columns, combined fields included.
    """

    name: str
    version: int
    fields: tuple[FieldSpec, ...]
    blocking: tuple[BlockingRule, ...] = ()
    day_first: bool = True
    record_filter_bits: int = 1024
    hardening: Hardening = field(default_factory=Hardening)
    description: str = ""

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def record_filter_words(self) -> int:
        """Number of uint64 words in the record filter as encoded (before hardening)."""
        return self.record_filter_bits // 64

    @property
    def published_record_bits(self) -> int:
        """Width in bits of the record filter as published (after ``[hardening]``)."""
        return self.hardening.published_bits(self.record_filter_bits)

    @property
    def published_record_words(self) -> int:
        """Number of uint64 words in the record filter as published (after ``[hardening]``)."""
        return self.published_record_bits // 64

    @functools.cached_property
    def comparison_names(self) -> tuple[str, ...]:
        """The comparison columns of the model, in schema order: one per field, a field's
        views compared as one (:mod:`linkage.compare`)."""
        return tuple(dict.fromkeys(f.input_name for f in self.fields))

    @functools.cached_property
    def input_names(self) -> tuple[str, ...]:
        """The input fields (the values a node reads), in schema order: the comparisons but
        the combined fields, whose values come from other inputs."""
        return tuple(spec.input_name for spec in self.comparison_specs if not spec.combines)

    @functools.cached_property
    def comparison_of_field(self) -> tuple[int, ...]:
        """Per published field (view), the index of its comparison in
        :attr:`comparison_names`."""
        index = {name: i for i, name in enumerate(self.comparison_names)}
        return tuple(index[f.input_name] for f in self.fields)

    @functools.cached_property
    def comparison_specs(self) -> tuple[FieldSpec, ...]:
        """Per comparison, its first field: normalisation, kind and levels (equal across the
        views of a field by construction)."""
        first: dict[str, FieldSpec] = {}
        for spec in self.fields:
            first.setdefault(spec.input_name, spec)
        return tuple(first.values())

    @functools.cached_property
    def comparison_salts(self) -> tuple[str, ...]:
        """Per comparison, the salt of its one field, or "" for an unsalted field and for a
        field published in views (compared under whichever of its salts agree)."""
        salts: dict[str, list[str]] = {}
        for spec in self.fields:
            salts.setdefault(spec.input_name, []).append(spec.salt)
        return tuple(found[0] if len(found) == 1 else "" for found in salts.values())

    @property
    def salt_sources(self) -> tuple[str, ...]:
        """The distinct salts (``"<field>.<transform>"``) of the salted fields that are not
        views, in the order fields first name them: one published salt tag per source
        (:mod:`linkage.encode`). Views publish no tag (see :class:`Schema`)."""
        return tuple(dict.fromkeys(f.salt for f in self.fields if f.salt and not f.view_of))

    def field(self, name: str) -> FieldSpec:
        """The field (or view) called ``name``, else the first view of the input ``name``."""
        for spec in self.fields:
            if spec.name == name:
                return spec
        for spec in self.fields:
            if spec.input_name == name:
                return spec
        raise KeyError(name)

    def with_hardening(
        self,
        record: Hardening | None = None,
        fields: Hardening | Mapping[str, Hardening] | None = None,
    ) -> Schema:
        """This schema with other hardening, validated as a parsed file would be.

        ``record`` replaces ``[hardening]`` (None keeps it); ``fields`` is one
        :class:`Hardening` for every field, or field name -> :class:`Hardening` for some
        (None keeps every field's). Raises :class:`SchemaError` when an option cannot apply to
        a filter's width or a named field does not exist.
        """
        data = self.to_dict()
        if record is not None:
            data["hardening"] = record.to_dict()
        if fields is not None:
            chosen = (
                dict.fromkeys(self.comparison_names, fields)
                if isinstance(fields, Hardening)
                else dict(fields)
            )
            unknown = [name for name in chosen if name not in self.comparison_names]
            if unknown:
                raise SchemaError([f"fields: {len(unknown)} name(s) not fields of this schema"])
            for entry in data["field"]:
                if entry["name"] in chosen:
                    entry["hardening"] = chosen[entry["name"]].to_dict()
        return schema_from_dict(data)

    def with_salt(self, salt: str | Sequence[str], fields: Collection[str] | None = None) -> Schema:
        """This schema with ``salt`` (``"<field>.<transform>"``, a list of them for views, or
        ``""`` for none) on ``fields`` (None: every field), validated as a parsed file would
        be. A blocking part naming a view the new salts do not make names the field's own
        filter where the field is no longer published in views, and is dropped where it is
        (a rule left without parts with it; rules that come out equal are kept once). Fields
        not named
        keep their salt. ``with_salt("")`` gives the unsalted schema. Names that are not
        fields of this schema are ignored, so one call serves schemas with different fields.
        """
        data = self.to_dict()
        for entry in data["field"]:
            if fields is None or entry["name"] in fields:
                entry["salt"] = salt if isinstance(salt, str) else list(salt)
        views = {
            f"{entry['name']}{VIEW_SEPARATOR}{view_suffix(source)}"
            for entry in data["field"]
            if isinstance(entry["salt"], list)
            for source in entry["salt"]
        }
        single = {entry["name"] for entry in data["field"] if isinstance(entry["salt"], str)}
        suffixes = {
            entry["name"]: [view_suffix(source) for source in entry["salt"]]
            for entry in data["field"]
            if isinstance(entry["salt"], list)
        }
        rules: dict[tuple[str, ...], dict[str, Any]] = {}
        for rule in data["blocking"]:
            names = [part.rsplit(".", 1)[0] for part in rule["parts"]]
            viewed = [n for n in names if n in suffixes]
            # a filter part of a field now in views: the rule once per view
            for suffix in suffixes[viewed[0]] if viewed else [""]:
                parts: list[str] = []
                for part in rule["parts"]:
                    name, transform = part.rsplit(".", 1)
                    if name in suffixes and suffix and transform == "filter":
                        if suffix not in suffixes[name]:
                            continue
                        part = f"{name}{VIEW_SEPARATOR}{suffix}.{transform}"
                    elif VIEW_SEPARATOR in name and name not in views:
                        field_name = name.split(VIEW_SEPARATOR)[0]
                        if field_name not in single:
                            continue
                        part = f"{field_name}.{transform}"
                    parts.append(part)
                parts = list(dict.fromkeys(parts))
                name = f"{rule['name']}{VIEW_SEPARATOR}{suffix}" if suffix else rule["name"]
                if parts:
                    rules.setdefault(tuple(parts), {**rule, "name": name, "parts": parts})
        data["blocking"] = list(rules.values())
        return schema_from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Every option with its resolved value; round-trips through :func:`parse_schema`."""
        return {
            "schema": {
                "name": self.name,
                "version": self.version,
                "day_first": self.day_first,
                "record_filter_bits": self.record_filter_bits,
                "description": self.description,
            },
            "hardening": self.hardening.to_dict(),
            "field": [
                {
                    "name": f.input_name,
                    "kind": f.kind,
                    "tokeniser": f.tokeniser,
                    "q": f.q,
                    "padded": f.padded,
                    "filter_bits": f.filter_bits,
                    "hashes_per_token": f.hashes_per_token,
                    "record_hashes_per_token": f.record_hashes_per_token,
                    "phonetic": list(f.phonetic),
                    "levels": list(f.levels),
                    "salt": self._salt_entry(f),
                    # written only when on: a field without hardening has the canonical
                    # form (and so the fingerprint) of a field with no hardening option
                    **({"hardening": f.hardening.to_dict()} if f.hardening.enabled else {}),
                    **({"combines": list(f.combines)} if f.combines else {}),
                }
                for f in self.comparison_specs
            ],
            "blocking": [
                {"name": b.name, "parts": [f"{fld}.{tr}" for fld, tr in b.parts]}
                for b in self.blocking
            ],
        }

    def _salt_entry(self, spec: FieldSpec) -> str | list[str]:
        """A field's ``salt`` as written: its one salt, or the list of its views' salts."""
        if not spec.view_of:
            return spec.salt
        return [f.salt for f in self.fields if f.view_of == spec.view_of]

    def to_toml(self) -> str:
        """Render as TOML text that parses back to an equal schema."""
        data = self.to_dict()
        out: list[str] = []
        for table in ("schema", "hardening"):
            out.append(f"[{table}]")
            out.extend(f"{k} = {_toml_value(v)}" for k, v in data[table].items())
            out.append("")
        for arr in ("field", "blocking"):
            for item in data[arr]:
                out.append(f"[[{arr}]]")
                out.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
                out.append("")
        return "\n".join(out)

    def canonical_bytes(self) -> bytes:
        """The canonical form hashed by :meth:`fingerprint`.

        The UTF-8 JSON serialisation, with keys sorted, separators ``","`` and ``":"`` and
        ASCII escapes, of ``{"schema": to_dict(schema), "normalisation_version":
        NORMALISATION_VERSION, "encoding_version": ENCODING_VERSION}``. ``to_dict`` writes
        every option with its resolved default, so two files that differ only in spelling out
        a default have the same fingerprint; the one exception is a field's ``hardening``,
        written (all four options) only when some option is on. Record and field hardening
        are both in the canonical form: encodings hardened differently never share a
        fingerprint.
        """
        from linkage.normalise import NORMALISATION_VERSION

        payload = {
            "schema": self.to_dict(),
            "normalisation_version": NORMALISATION_VERSION,
            "encoding_version": ENCODING_VERSION,
        }
        return json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode()

    def fingerprint(self) -> str:
        """``sha256:<hex>`` over the canonical form; identical schemas give identical prints.

        Hashed once per schema object and then kept on it (the schema is frozen, so its print
        cannot change; the print is public, not a secret): the matcher checks it several
        times a Match, and rebuilding and hashing the canonical form each time is waste.
        """
        cached: str | None = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = "sha256:" + hashlib.sha256(self.canonical_bytes()).hexdigest()
            object.__setattr__(self, "_fingerprint", cached)  # frozen: the one cache slot
        return cached


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


def parse_schema(text: str) -> Schema:
    """Parse TOML text into a :class:`Schema`; raise :class:`SchemaError` listing all problems."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError([f"not valid TOML: {toml_error_text(exc)}"]) from None
    return schema_from_dict(data)


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
    ``server.config_parsing``).
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


def load_schema(name_or_text: str) -> Schema:
    """A shipped schema by name (``"child"``, ``"febrl"``) — see :func:`shipped_schema_names`."""
    return parse_schema(shipped_schema_text(name_or_text))


def shipped_schema_names() -> tuple[str, ...]:
    return ("child", "child_date_salted", "febrl")


def shipped_schema_text(name: str) -> str:
    if name not in shipped_schema_names():
        # The asked name is not echoed: an operator may have pasted a path or a record here.
        raise SchemaError(
            [f"unknown shipped schema name: expected one of {', '.join(shipped_schema_names())}"]
        )
    return resources.files("linkage").joinpath("schemas", f"{name}.toml").read_text("utf-8")


def default_child_schema() -> Schema:
    return load_schema("child")


def febrl_schema() -> Schema:
    return load_schema("febrl")


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


def schema_from_dict(data: Mapping[str, Any]) -> Schema:
    """Validate a decoded TOML mapping; every problem is collected before raising."""
    p = _Problems()
    p.unknown_keys("top level", data, _TOP_KEYS)
    head = data.get("schema")
    if not isinstance(head, dict):
        p.add("[schema]: table is required")
        head = {}
    p.unknown_keys("[schema]", head, _SCHEMA_KEYS)
    name = p.typed("[schema]", head, "name", str, "")
    if not name:
        p.add("[schema].name: required, a non-empty string")
    version = p.typed("[schema]", head, "version", int, 0)
    if version < 1:
        p.add("[schema].version: required, an integer >= 1")
    day_first = p.typed("[schema]", head, "day_first", bool, True)
    record_bits = p.typed("[schema]", head, "record_filter_bits", int, 1024)
    if record_bits < 64 or record_bits % 64:
        p.add("[schema].record_filter_bits: expected a positive multiple of 64")
    description = p.typed("[schema]", head, "description", str, "")

    hardening = _parse_hardening(p, "[hardening]", data.get("hardening", {}))
    if record_bits >= 64 and record_bits % 64 == 0:
        _check_hardening_width(p, "[hardening]", hardening, record_bits, "record_filter_bits")

    raw_fields = data.get("field", [])
    if not isinstance(raw_fields, list) or not raw_fields:
        p.add("[[field]]: at least one field table is required")
        raw_fields = []
    fields: list[FieldSpec] = []
    known = _KnownFields()
    pending_salts: list[tuple[int, Any]] = []
    viewed: dict[int, list[str]] = {}  # position in ``fields`` -> its views' salts
    pending_combines: list[tuple[int, list[str]]] = []
    for i, raw in enumerate(raw_fields):
        # Problems are placed by table position only: a name may be anything (a pasted record).
        where = f"field[{i}]"
        if not isinstance(raw, dict):
            p.add(f"{where}: expected a table")
            continue
        p.unknown_keys(where, raw, _FIELD_KEYS)
        fname = p.typed(where, raw, "name", str, "")
        name_is_valid = False
        if not fname or not fname.replace("_", "").isalnum() or not fname.isascii():
            p.add(f"{where}.name: required, ASCII letters, digits and underscores")
            if fname:
                known.rejected.setdefault(fname, i)
        elif fname in known.valid:
            p.add(f"{where}.name: duplicate field name (same as field[{known.valid[fname][0]}])")
        else:
            name_is_valid = True
        kind = p.typed(where, raw, "kind", str, "")
        if kind not in FIELD_KINDS:
            p.add(f"{where}.kind: expected one of {', '.join(FIELD_KINDS)}")
            kind = "text"
        if name_is_valid:
            known.valid[fname] = (i, kind)
        tokeniser = p.typed(where, raw, "tokeniser", str, DEFAULT_TOKENISER[kind])
        if tokeniser not in TOKENISERS:
            p.add(f"{where}.tokeniser: expected one of {', '.join(TOKENISERS)}")
        elif tokeniser == "date" and kind != "date":
            p.add(f"{where}.tokeniser: 'date' needs kind 'date'")
        elif tokeniser == "postcode" and kind != "postcode":
            p.add(f"{where}.tokeniser: 'postcode' needs kind 'postcode'")
        q = p.typed(where, raw, "q", int, 2)
        if not 1 <= q <= 4:
            p.add(f"{where}.q: expected 1 to 4")
        padded = p.typed(where, raw, "padded", bool, True)
        bits = p.typed(where, raw, "filter_bits", int, 256)
        if bits < 64 or bits % 64 or bits > 8192:
            p.add(f"{where}.filter_bits: expected a multiple of 64 from 64 to 8192")
        k = p.typed(where, raw, "hashes_per_token", int, 4)
        if not 1 <= k <= 64:
            p.add(f"{where}.hashes_per_token: expected 1 to 64")
        rk = p.typed(where, raw, "record_hashes_per_token", int, 2)
        if not 0 <= rk <= 64:
            p.add(f"{where}.record_hashes_per_token: expected 0 to 64")
        phon_raw = p.typed(where, raw, "phonetic", list, [])
        phonetic: list[str] = []
        for code in phon_raw:
            if code not in PHONETIC_CODES:
                p.add(f"{where}.phonetic: expected codes from {', '.join(PHONETIC_CODES)}")
            else:
                phonetic.append(code)
        if phonetic and kind not in ("name", "family_name", "text"):
            p.add(f"{where}.phonetic: only name and text fields take phonetic codes")
        levels_raw = p.typed(where, raw, "levels", list, [0.9, 0.7, 0.5])
        levels: list[float] = []
        for lv in levels_raw:
            if isinstance(lv, bool) or not isinstance(lv, int | float) or not 0 < lv <= 1:
                p.add(f"{where}.levels: expected numbers in (0, 1]")
                break
            levels.append(float(lv))
        if not levels or any(a <= b for a, b in itertools.pairwise(levels)):
            p.add(f"{where}.levels: expected a non-empty, strictly descending list")
        salt_raw = raw.get("salt", "")
        salts: list[str] = []
        if isinstance(salt_raw, str):
            salts = [salt_raw] if salt_raw else []
        elif isinstance(salt_raw, list) and all(isinstance(x, str) for x in salt_raw):
            salts = list(salt_raw)
            if len(salts) < 2:
                p.add(f'{where}.salt: a list needs two or more salts (one salt: "<field>.<x>")')
            elif len({view_suffix(x) for x in salts}) != len(salts):
                p.add(f"{where}.salt: the salts of a list need different transforms")
        else:
            p.add(f"{where}.salt: expected a string or a list of strings")
        for salt in salts:
            pending_salts.append((i, salt))
        list_is_valid = len(salts) >= 2 and len({view_suffix(x) for x in salts}) == len(salts)
        if isinstance(salt_raw, list) and list_is_valid and name_is_valid:
            viewed[len(fields)] = salts
        combines_raw = p.typed(where, raw, "combines", list, [])
        combines = [x for x in combines_raw if isinstance(x, str)]
        if combines_raw and (
            len(combines) != len(combines_raw)
            or not combines
            or len(set(combines)) != len(combines)
        ):
            p.add(f"{where}.combines: expected a list of different field names")
        elif combines:
            pending_combines.append((i, combines))
        field_hardening = _parse_hardening(p, f"{where}.hardening", raw.get("hardening", {}))
        if 64 <= bits <= 8192 and bits % 64 == 0:
            _check_hardening_width(p, f"{where}.hardening", field_hardening, bits, "filter_bits")
        fields.append(
            FieldSpec(
                name=fname,
                kind=kind,
                tokeniser=tokeniser,
                q=q,
                padded=padded,
                filter_bits=bits,
                hashes_per_token=k,
                record_hashes_per_token=rk,
                phonetic=tuple(phonetic),
                levels=tuple(levels),
                salt=salts[0] if len(salts) == 1 else "",
                hardening=field_hardening,
                combines=tuple(combines),
            )
        )
    viewed_names = {fields[position].name for position in viewed}
    unresolved: set[tuple[int, str]] = set()  # a view's name would hold text from the file
    for i, salt in pending_salts:
        ref = _parse_ref(p, f"field[{i}].salt", salt, known, salt=True)
        if ref is None:
            unresolved.add((i, salt))
        elif ref[2] == i:
            p.add(f"field[{i}].salt: a field cannot be salted with itself")
        elif ref[0] in viewed_names:
            p.add(f"field[{i}].salt: names a field published in views, which cannot be a salt")
    combined = {fields[position].name for position, _ in pending_combines}
    for i, names in pending_combines:
        for j, combined_name in enumerate(names):
            if (
                combined_name not in known.valid
                or known.valid[combined_name][0] >= i
                or combined_name in combined
            ):
                p.add(
                    f"field[{i}].combines[{j}]: expected an earlier field of this schema that "
                    "combines none itself"
                )
    # a field salted several ways is published as one view per salt, each a field of its own
    expanded: list[FieldSpec] = []
    for position, spec in enumerate(fields):
        if position not in viewed:
            expanded.append(spec)
            continue
        table, kind = known.valid[spec.name]
        for salt in viewed[position]:
            if (table, salt) in unresolved:
                continue  # already a problem; no view, so its name is never listed
            view = replace(
                spec, name=f"{spec.name}{VIEW_SEPARATOR}{view_suffix(salt)}", salt=salt,
                view_of=spec.name,
            )  # fmt: skip
            expanded.append(view)
            known.valid[view.name] = (table, kind)
    fields = expanded

    raw_rules = data.get("blocking", [])
    if not isinstance(raw_rules, list):
        p.add("[[blocking]]: expected an array of tables")
        raw_rules = []
    rules: list[BlockingRule] = []
    rule_positions: dict[str, int] = {}
    for i, raw in enumerate(raw_rules):
        where = f"blocking[{i}]"  # by position only, as for fields
        if not isinstance(raw, dict):
            p.add(f"{where}: expected a table")
            continue
        p.unknown_keys(where, raw, _BLOCKING_KEYS)
        rname = p.typed(where, raw, "name", str, "")
        if not rname or "/" in rname:
            p.add(f"{where}.name: required, without '/'")
        elif rname in rule_positions:
            p.add(f"{where}.name: duplicate rule name (same as blocking[{rule_positions[rname]}])")
        else:
            rule_positions[rname] = i
        parts_raw = p.typed(where, raw, "parts", list, [])
        if not parts_raw:
            p.add(f'{where}.parts: expected a non-empty list of "<field>.<transform>"')
        parts = [
            _parse_ref(p, f"{where}.parts[{j}]", part, known) for j, part in enumerate(parts_raw)
        ]
        for j, ref in enumerate(parts):
            if ref is not None and ref[0] in viewed_names and ref[1] == "filter":
                p.add(
                    f"{where}.parts[{j}]: field[{ref[2]}] is published in views; a filter part "
                    f'names one of them ("<field>{VIEW_SEPARATOR}<transform>.filter")'
                )
        rules.append(BlockingRule(rname, tuple(x[:2] for x in parts if x is not None)))

    if p.items:
        raise SchemaError(p.items)
    return Schema(
        name=name,
        version=version,
        fields=tuple(fields),
        blocking=tuple(rules),
        day_first=day_first,
        record_filter_bits=record_bits,
        hardening=hardening,
        description=description,
    )
