"""The schema as a whole: its fields, views, comparisons, blocking rules and fingerprint.

Contract: :func:`schema_from_dict` validates a decoded mapping (every problem reported at
once) into a frozen :class:`Schema`: each table through its strict model
(:mod:`linkage.schema.strict`, :mod:`linkage.strict`), then the rules across tables (names,
references, views, combined fields, hardening widths); :meth:`Schema.with_salt` and
:meth:`Schema.with_hardening` derive variants validated the same way. :meth:`Schema.to_dict`
writes every option with its resolved value and round-trips; :meth:`Schema.fingerprint` is
the SHA-256 of the canonical form (:meth:`Schema.canonical_bytes`), which covers everything
that changes an encoding.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import tomli_w

from linkage.errors import SchemaError
from linkage.normalise import DATE_RANGE, NORMALISATION_VERSION, YearRange
from linkage.schema.fields import (
    DEFAULT_TOKENISER,
    ENCODING_VERSION,
    FIELD_KINDS,
    TOKENISERS,
    VIEW_SEPARATOR,
    BlockingRule,
    FieldSpec,
    Hardening,
    view_suffix,
)
from linkage.schema.strict import (
    BRACKETS,
    BlockingTable,
    FieldTable,
    HardeningTable,
    SchemaDocument,
    SchemaHead,
    _check_hardening_width,
    _KnownFields,
    _parse_ref,
    read_table,
)
from linkage.strict import Problems, validate


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
    #: the first and last year a date may have (:func:`linkage.normalise.normalise_date`)
    date_range: YearRange = DATE_RANGE
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
                # written only when not the default: a schema that keeps the default range
                # has the canonical form (and so the fingerprint) of one without the option
                **({"date_range": list(self.date_range)} if self.date_range != DATE_RANGE else {}),
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
        """Render as TOML text (written by ``tomli_w``) that parses back to an equal schema."""
        return tomli_w.dumps(self.to_dict())

    def canonical_bytes(self) -> bytes:
        """The canonical form hashed by :meth:`fingerprint`.

        The UTF-8 JSON serialisation, with keys sorted, separators ``","`` and ``":"`` and
        ASCII escapes, of ``{"schema": to_dict(schema), "normalisation_version":
        NORMALISATION_VERSION, "encoding_version": ENCODING_VERSION}``. ``to_dict`` writes
        every option with its resolved default, so two files that differ only in spelling out
        a default have the same fingerprint; the exceptions are a field's ``hardening``,
        written (all four options) only when some option is on, and ``[schema].date_range``,
        written only when it is not :data:`~linkage.normalise.DATE_RANGE` (it decides which
        dates are valid, so schemas with different ranges never share a fingerprint). Record
        and field hardening are both in the canonical form: encodings hardened differently
        never share a fingerprint.
        """
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


def schema_from_dict(data: Mapping[str, Any]) -> Schema:
    """Validate a decoded TOML mapping; every problem is collected before raising."""
    p = Problems()
    validate(SchemaDocument, data, p, brackets=BRACKETS)
    if not isinstance(data.get("schema"), dict):
        p.add("[schema]: table is required")
    raw_head = data.get("schema")
    head, head_bad = read_table(
        SchemaHead, raw_head if isinstance(raw_head, dict) else {}, p, ("schema",)
    )
    if not head.name:
        p.add("[schema].name: required, a non-empty string")
    if head.version < 1:
        p.add("[schema].version: required, an integer >= 1")
    record_bits = head.record_filter_bits
    hardening_table, _ = read_table(HardeningTable, data.get("hardening", {}), p, ("hardening",))
    hardening = hardening_table.options()
    if "record_filter_bits" not in head_bad:
        _check_hardening_width(p, "[hardening]", hardening, record_bits, "record_filter_bits")

    raw_fields = data.get("field", [])
    if not isinstance(raw_fields, list) or not raw_fields:
        p.add("[[field]]: at least one field table is required")
        raw_fields = []
    fields: list[FieldSpec] = []
    known = _KnownFields()
    pending_salts: list[tuple[int, str]] = []
    viewed: dict[int, list[str]] = {}  # position in ``fields`` -> its views' salts
    pending_combines: list[tuple[int, list[str]]] = []
    for i, raw in enumerate(raw_fields):
        # Problems are placed by table position only: a name may be anything (a pasted record).
        where = f"field[{i}]"
        if not isinstance(raw, dict):
            validate(FieldTable, raw, p, where=("field", i))
            continue
        entry, bad = read_table(FieldTable, raw, p, ("field", i))
        fname = entry.name
        name_is_valid = False
        if not fname or not fname.replace("_", "").isalnum() or not fname.isascii():
            p.add(f"{where}.name: required, ASCII letters, digits and underscores")
            if fname:
                known.rejected.setdefault(fname, i)
        elif fname in known.valid:
            p.add(f"{where}.name: duplicate field name (same as field[{known.valid[fname][0]}])")
        else:
            name_is_valid = True
        kind = entry.kind
        if kind not in FIELD_KINDS:
            p.add(f"{where}.kind: expected one of {', '.join(FIELD_KINDS)}")
            kind = "text"
        if name_is_valid:
            known.valid[fname] = (i, kind)
        tokeniser = entry.tokeniser or DEFAULT_TOKENISER[kind]
        if tokeniser not in TOKENISERS:
            p.add(f"{where}.tokeniser: expected one of {', '.join(TOKENISERS)}")
        elif tokeniser == "date" and kind != "date":
            p.add(f"{where}.tokeniser: 'date' needs kind 'date'")
        elif tokeniser == "postcode" and kind != "postcode":
            p.add(f"{where}.tokeniser: 'postcode' needs kind 'postcode'")
        if entry.phonetic and kind not in ("name", "family_name", "text"):
            p.add(f"{where}.phonetic: only name and text fields take phonetic codes")
        salts = (
            [entry.salt] if isinstance(entry.salt, str) and entry.salt else list(entry.salt or [])
        )
        pending_salts.extend((i, salt) for salt in salts)
        if isinstance(entry.salt, list) and name_is_valid:
            viewed[len(fields)] = salts
        if entry.combines:
            pending_combines.append((i, entry.combines))
        field_hardening = entry.hardening.options()
        if "hardening" in bad and isinstance(raw["hardening"], dict):  # its valid options
            lenient = read_table(HardeningTable, raw["hardening"], Problems(), ())[0]
            field_hardening = lenient.options()
        if "filter_bits" not in bad:
            _check_hardening_width(
                p, f"{where}.hardening", field_hardening, entry.filter_bits, "filter_bits"
            )
        fields.append(
            FieldSpec(
                name=fname,
                kind=kind,
                tokeniser=tokeniser,
                q=entry.q,
                padded=entry.padded,
                filter_bits=entry.filter_bits,
                hashes_per_token=entry.hashes_per_token,
                record_hashes_per_token=entry.record_hashes_per_token,
                phonetic=tuple(entry.phonetic),
                levels=tuple(entry.levels),
                salt=salts[0] if len(salts) == 1 else "",
                hardening=field_hardening,
                combines=tuple(entry.combines),
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
            validate(BlockingTable, raw, p, where=("blocking", i))
            continue
        rule, _ = read_table(BlockingTable, raw, p, ("blocking", i))
        rname = rule.name
        if not rname or "/" in rname:
            p.add(f"{where}.name: required, without '/'")
        elif rname in rule_positions:
            p.add(f"{where}.name: duplicate rule name (same as blocking[{rule_positions[rname]}])")
        else:
            rule_positions[rname] = i
        parts_raw = rule.parts
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

    p.raise_as(SchemaError)
    return Schema(
        name=head.name,
        version=head.version,
        fields=tuple(fields),
        blocking=tuple(rules),
        day_first=head.day_first,
        date_range=head.date_range,
        record_filter_bits=record_bits,
        hardening=hardening,
        description=head.description,
    )
