"""The linkage schema: which fields exist and how each is normalised, tokenised and encoded.

Role in the pipeline: every agency node and the matcher load the same schema file. The node
uses it to encode; the matcher uses it to compare and score. A schema is a versioned TOML
file, parsed strictly (an unknown key is an error, every problem is reported at once) into
frozen dataclasses.

File layout::

    [schema]                      name, version, day_first, record_filter_bits
    [hardening]                   record-level hardening (see linkage.harden)
    [[field]]                     one table per field, in encoding order:
        name, kind, tokeniser, q, padded, filter_bits, hashes_per_token,
        record_hashes_per_token, phonetic, levels, salt
    [[blocking]]                  one table per keyed blocking rule: name, parts

A blocking part or salt is written ``"<field>.<transform>"``, e.g. ``"family_name.soundex"``
or ``"date_of_birth.year"``; the transforms each kind supports are in
:data:`BLOCKING_TRANSFORMS`.

Fingerprint (travels with every encoding; the matcher refuses encodings whose fingerprint
differs from the schema it serves): ``"sha256:" + hex(SHA-256(canonical))`` where
``canonical`` is the UTF-8 JSON serialisation, with keys sorted, separators ``","`` and
``":"`` and ASCII escapes, of the object ``{"schema": to_dict(schema),
"normalisation_version": NORMALISATION_VERSION, "encoding_version": ENCODING_VERSION}``.
``to_dict`` writes every option with its resolved default, so two files that differ only in
spelling out a default have the same fingerprint.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from linkage.errors import SchemaError

#: Version of the tokenisation + Bloom-filter construction. Bump on any change of output.
ENCODING_VERSION = 1

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
    "name": frozenset({"value", "soundex", "nysiis", "metaphone", "initial", "first_part"}),
    "family_name": frozenset({"value", "soundex", "nysiis", "metaphone", "initial", "first_part"}),
    "text": frozenset({"value", "soundex", "initial"}),
    "date": frozenset({"value", "year", "month_day", "year_month"}),
    "postcode": frozenset({"value", "sector", "district", "area"}),
    "nhs_number": frozenset({"value"}),
    "sex": frozenset({"value"}),
    "exact": frozenset({"value"}),
}

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
}
_BLOCKING_KEYS = {"name", "parts"}
_TOP_KEYS = {"schema", "hardening", "field", "blocking"}


@dataclass(frozen=True)
class FieldSpec:
    """How one field is normalised, tokenised, encoded and compared.

    ``filter_bits`` (the paper symbol *l*) is the field-level Bloom filter length, a multiple
    of 64; ``hashes_per_token`` (*k*) the number of positions each token sets in it;
    ``record_hashes_per_token`` the positions each token sets in the record-level filter
    (0 keeps the field out of it). ``levels`` are descending Dice cut-offs for the
    Fellegi-Sunter comparison levels. ``salt`` names a ``field.transform`` whose value is mixed
    into every token of this field (hardening; empty for none).
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

    @property
    def filter_words(self) -> int:
        """Number of uint64 words in this field's packed filter."""
        return self.filter_bits // 64


@dataclass(frozen=True)
class BlockingRule:
    """A keyed blocking rule: records agreeing on every part share a block."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (field name, transform)


@dataclass(frozen=True)
class Hardening:
    """Record-level hardening options (all off by default); see :mod:`linkage.harden`."""

    balance: bool = False
    xor_fold: bool = False
    blip_epsilon: float = 0.0
    diffusion_t: int = 0


@dataclass(frozen=True)
class Schema:
    """A parsed, validated linkage schema."""

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
        return self.record_filter_bits // 64

    def field(self, name: str) -> FieldSpec:
        for spec in self.fields:
            if spec.name == name:
                return spec
        raise KeyError(name)

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
            "hardening": {
                "balance": self.hardening.balance,
                "xor_fold": self.hardening.xor_fold,
                "blip_epsilon": self.hardening.blip_epsilon,
                "diffusion_t": self.hardening.diffusion_t,
            },
            "field": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "tokeniser": f.tokeniser,
                    "q": f.q,
                    "padded": f.padded,
                    "filter_bits": f.filter_bits,
                    "hashes_per_token": f.hashes_per_token,
                    "record_hashes_per_token": f.record_hashes_per_token,
                    "phonetic": list(f.phonetic),
                    "levels": list(f.levels),
                    "salt": f.salt,
                }
                for f in self.fields
            ],
            "blocking": [
                {"name": b.name, "parts": [f"{fld}.{tr}" for fld, tr in b.parts]}
                for b in self.blocking
            ],
        }

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
        """The canonical form hashed by :meth:`fingerprint` (see module docstring)."""
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
        """``sha256:<hex>`` over the canonical form; identical schemas give identical prints."""
        return "sha256:" + hashlib.sha256(self.canonical_bytes()).hexdigest()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def parse_schema(text: str) -> Schema:
    """Parse TOML text into a :class:`Schema`; raise :class:`SchemaError` listing all problems."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError([f"not valid TOML: {exc}"]) from None
    return schema_from_dict(data)


def load_schema(name_or_text: str) -> Schema:
    """A shipped schema by name (``"child"``, ``"febrl"``) — see :func:`shipped_schema_names`."""
    return parse_schema(shipped_schema_text(name_or_text))


def shipped_schema_names() -> tuple[str, ...]:
    return ("child", "febrl")


def shipped_schema_text(name: str) -> str:
    if name not in shipped_schema_names():
        raise SchemaError(
            [f"unknown shipped schema {name!r}; expected one of {list(shipped_schema_names())}"]
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
        for key in sorted(set(got) - allowed):
            self.add(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")

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


def _parse_ref(
    problems: _Problems, where: str, ref: Any, kinds: Mapping[str, str]
) -> tuple[str, str] | None:
    if not isinstance(ref, str) or ref.count(".") != 1:
        problems.add(f'{where}: expected "<field>.<transform>"')
        return None
    fld, transform = ref.split(".")
    if fld not in kinds:
        problems.add(f"{where}: unknown field {fld!r}")
        return None
    allowed = BLOCKING_TRANSFORMS[kinds[fld]]
    if transform not in allowed:
        problems.add(
            f"{where}: transform {transform!r} not available for a {kinds[fld]} field "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
        return None
    return fld, transform


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

    hard = data.get("hardening", {})
    if not isinstance(hard, dict):
        p.add("[hardening]: expected a table")
        hard = {}
    p.unknown_keys("[hardening]", hard, _HARDENING_KEYS)
    hardening = Hardening(
        balance=p.typed("[hardening]", hard, "balance", bool, False),
        xor_fold=p.typed("[hardening]", hard, "xor_fold", bool, False),
        blip_epsilon=p.typed("[hardening]", hard, "blip_epsilon", float, 0.0),
        diffusion_t=p.typed("[hardening]", hard, "diffusion_t", int, 0),
    )
    if not hardening.blip_epsilon >= 0 or hardening.blip_epsilon == float("inf"):
        p.add("[hardening].blip_epsilon: expected >= 0 (0 turns BLIP off)")
    if hardening.diffusion_t < 0:
        p.add("[hardening].diffusion_t: expected >= 0 (0 turns diffusion off)")

    raw_fields = data.get("field", [])
    if not isinstance(raw_fields, list) or not raw_fields:
        p.add("[[field]]: at least one field table is required")
        raw_fields = []
    fields: list[FieldSpec] = []
    seen: set[str] = set()
    kinds: dict[str, str] = {}
    pending_salts: list[tuple[str, Any]] = []
    for i, raw in enumerate(raw_fields):
        where = f"field[{i}]"
        if not isinstance(raw, dict):
            p.add(f"{where}: expected a table")
            continue
        p.unknown_keys(where, raw, _FIELD_KEYS)
        fname = p.typed(where, raw, "name", str, "")
        if fname:
            where = f"field {fname!r}"
        if not fname or not fname.replace("_", "").isalnum() or not fname.isascii():
            p.add(f"{where}.name: required, letters, digits and underscores")
        elif fname in seen:
            p.add(f"{where}: duplicate field name")
        seen.add(fname)
        kind = p.typed(where, raw, "kind", str, "")
        if kind not in FIELD_KINDS:
            p.add(f"{where}.kind: expected one of {', '.join(FIELD_KINDS)}")
            kind = "text"
        kinds[fname] = kind
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
        salt = p.typed(where, raw, "salt", str, "")
        if salt:
            pending_salts.append((where, salt))
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
                salt=salt,
            )
        )
    for where, salt in pending_salts:
        ref = _parse_ref(p, f"{where}.salt", salt, kinds)
        if ref is not None and where == f"field {ref[0]!r}":
            p.add(f"{where}.salt: a field cannot be salted with itself")

    raw_rules = data.get("blocking", [])
    if not isinstance(raw_rules, list):
        p.add("[[blocking]]: expected an array of tables")
        raw_rules = []
    rules: list[BlockingRule] = []
    rule_names: set[str] = set()
    for i, raw in enumerate(raw_rules):
        where = f"blocking[{i}]"
        if not isinstance(raw, dict):
            p.add(f"{where}: expected a table")
            continue
        p.unknown_keys(where, raw, _BLOCKING_KEYS)
        rname = p.typed(where, raw, "name", str, "")
        if rname:
            where = f"blocking {rname!r}"
        if not rname or "/" in rname:
            p.add(f"{where}.name: required, without '/'")
        elif rname in rule_names:
            p.add(f"{where}: duplicate rule name")
        rule_names.add(rname)
        parts_raw = p.typed(where, raw, "parts", list, [])
        if not parts_raw:
            p.add(f'{where}.parts: expected a non-empty list of "<field>.<transform>"')
        parts = [_parse_ref(p, f"{where}.parts", part, kinds) for part in parts_raw]
        rules.append(BlockingRule(rname, tuple(x for x in parts if x is not None)))

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
