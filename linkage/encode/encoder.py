"""The encoder: raw values of a batch (or one record) to an :class:`EncodedBatch`.

Contract: :func:`encode_records` normalises, tokenises, hashes and hardens a batch given as
columns; :func:`encode_record` encodes one record (a lookup) bit for bit as a one-row batch,
without the batch machinery that costs more than the hashing for one row. A value that fails
normalisation is encoded as missing and reported as a :class:`ValueProblem` (row, field,
reason), never with the value. Per-batch dictionaries die with the call; no global caches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from linkage import harden
from linkage import kernel as _kernel
from linkage import normalise as norm
from linkage.encode.batch import EncodedBatch, ValueProblem
from linkage.encode.hashing import (
    _UNIT_SEP,
    _message_positions,
    _offsets,
    _tokens64,
    blocking_token,
    filter_part,
    token64_reference,
)
from linkage.encode.tokens import _salted, blocking_value, tokenise
from linkage.errors import InvalidValueError, SchemaError
from linkage.keys import KeySet
from linkage.schema import FieldSpec, Schema

log = logging.getLogger(__name__)
U64 = np.uint64

# --------------------------------------------------------------------------- encoder


def _unique_rows(
    rows: NDArray[np.int64], radix: Sequence[int]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``np.unique(rows, axis=0, return_inverse=True)`` via a mixed-radix 1-d code (fast)."""
    capacity = 1
    for r in radix:
        capacity *= max(r, 1)
    if capacity >= 2**62:
        uniq, inv = np.unique(rows, axis=0, return_inverse=True)
        return uniq, inv.reshape(-1)
    code = np.zeros(rows.shape[0], dtype=np.int64)
    for column, r in enumerate(radix):
        code = code * max(r, 1) + rows[:, column]
    uniq_code, inv = np.unique(code, return_inverse=True)
    out = np.empty((uniq_code.size, len(radix)), dtype=np.int64)
    rest = uniq_code
    for column in range(len(radix) - 1, -1, -1):
        r = max(radix[column], 1)
        out[:, column] = rest % r
        rest = rest // r
    return out, inv.reshape(-1)


@dataclass
class _FieldColumn:
    """Per-batch working state of one field (dies with the call)."""

    spec: FieldSpec
    inverse: NDArray[np.int64]  # row -> distinct index; -1 when missing/invalid
    values: list[str] = field(default_factory=list)  # distinct normalised values


def _normalise_value(
    spec: FieldSpec, value: str | None, schema: Schema
) -> tuple[str | None, str | None]:
    """``(canonical value or None when missing, None)``, or ``(None, reason)`` when the value
    fails normalisation (the reason names the expectation, never the value). The schema's
    ``day_first`` and ``date_range`` decide how dates are read and which are valid."""
    normaliser = norm.NORMALISERS[spec.kind]
    try:
        canonical = normaliser(
            value, field=spec.input_name, day_first=schema.day_first, years=schema.date_range
        )
        return canonical, None
    except InvalidValueError as exc:
        return None, exc.reason


def raw_values(
    spec: FieldSpec, columns: Mapping[str, Sequence[str | None]]
) -> Sequence[str | None]:
    """The raw values a field encodes: its own column, or for a combined field the values of
    the fields it combines joined with a space (missing where all are missing). An input that
    is missing (blank, a null marker such as "N/A", or not text) adds nothing to the join."""
    if not spec.combines:
        return columns[spec.input_name]
    parts = [columns[name] for name in spec.combines]
    return [
        " ".join(v.strip() for v in row if _joinable(v)) or None for row in zip(*parts, strict=True)
    ]


def _joinable(value: object) -> bool:
    """Whether an input's raw value is present text that a combined field joins."""
    if not isinstance(value, str):
        return False
    collapsed = " ".join(value.split())
    return bool(collapsed) and collapsed.lower() not in norm.NULL_MARKERS


def _normalise_column(
    spec: FieldSpec, raw: Sequence[str | None], schema: Schema, problems: list[ValueProblem]
) -> _FieldColumn:
    """Normalise each distinct raw value once; map rows to distinct normalised values.

    Row codes: ``>= 0`` index into ``values``; ``-1`` missing; ``<= -2`` invalid (reason
    ``reasons[-2 - code]``), reported as a problem and then encoded as missing.
    """
    slot_of: dict[str | None, int] = {}
    distinct_norm: dict[str, int] = {}
    values: list[str] = []
    reasons: list[str] = []
    for value in dict.fromkeys(raw):  # distinct raw values, first-seen order
        canon, reason = _normalise_value(spec, value, schema)
        if reason is not None:
            slot_of[value] = -2 - len(reasons)
            reasons.append(reason)
            continue
        if canon is None:
            slot_of[value] = -1
            continue
        slot = distinct_norm.setdefault(canon, len(values))
        if slot == len(values):
            values.append(canon)
        slot_of[value] = slot
    inverse = np.fromiter(map(slot_of.__getitem__, raw), dtype=np.int64, count=len(raw))
    if reasons:
        bad_rows = np.flatnonzero(inverse <= -2)
        problems.extend(
            ValueProblem(row, spec.input_name, reasons[-2 - code])
            for row, code in zip(bad_rows.tolist(), inverse[bad_rows].tolist(), strict=True)
        )
        inverse[bad_rows] = -1
    return _FieldColumn(spec, inverse, values)


def _transform_column(col: _FieldColumn, transform: str) -> tuple[NDArray[np.int64], list[str]]:
    """Per-row index into distinct transformed values (-1 where missing)."""
    mapped: dict[str, int] = {}
    out_values: list[str] = []
    remap = np.empty(len(col.values) + 1, dtype=np.int64)
    remap[-1] = -1
    for i, v in enumerate(col.values):
        t = blocking_value(col.spec.kind, transform, v)
        if not t:
            remap[i] = -1
            continue
        slot = mapped.setdefault(t, len(out_values))
        if slot == len(out_values):
            out_values.append(t)
        remap[i] = slot
    return remap[col.inverse], out_values


@dataclass(frozen=True)
class _Published:
    """One field's published filters as the batch encoder built them: ``inverse`` maps each
    row to its distinct (value, salt value) combination (-1 where missing) and ``distinct``
    holds each combination's published filter."""

    inverse: NDArray[np.int64]
    distinct: NDArray[np.uint64]

    @cached_property
    def column(self) -> tuple[NDArray[np.int64], list[str]]:
        """:func:`_transform_column` for a ``filter`` part: per-row index into the distinct
        values (-1 where missing) and the values, each a filter as :func:`filter_part`
        writes it. Combinations whose filters coincide share the value, so records group
        exactly as equal published filters do; one hex string per combination, not per row,
        made once however many rules and salt sources read the field."""
        return self.inverse, [filter_part(row) for row in self.distinct]


class _TokenBlob:
    """One field's distinct values' tokens and the salt prefixes, as the byte blobs and
    offsets of ``kernel.token_filters``, which builds each (value, prefix) combination's
    filter in one call: the bits of :func:`token_positions` of the prefixed tokens, as
    :func:`_salted` prefixes them (``tests/linkage/test_encode_salted.py`` checks this against the
    Python specification)."""

    def __init__(self, prefixes: Sequence[str], value_tokens: Sequence[Sequence[str]]) -> None:
        encoded_prefixes = [p.encode("utf-8") for p in prefixes]
        self.prefixes = b"".join(encoded_prefixes)
        self.prefix_offsets = _offsets(encoded_prefixes)
        encoded = [t.encode("utf-8") for tokens in value_tokens for t in tokens]
        self.tokens = b"".join(encoded)
        self.token_offsets = _offsets(encoded)
        self.value_tokens = _offsets(value_tokens)

    def filters(
        self,
        key: bytes,
        combo_value: NDArray[np.int64],
        combo_prefix: NDArray[np.int64],
        hashes: int,
        bits: int,
        words: int,
    ) -> NDArray[np.uint64]:
        """(combinations, words): the filter of value ``combo_value[c]``'s tokens, each
        prefixed with prefix ``combo_prefix[c]``, under ``key``."""
        out = np.empty((combo_value.shape[0], words), dtype=U64)
        _kernel.token_filters(
            key,
            self.prefixes,
            self.prefix_offsets,
            self.tokens,
            self.token_offsets,
            self.value_tokens,
            np.ascontiguousarray(combo_value, dtype=np.int64),
            np.ascontiguousarray(combo_prefix, dtype=np.int64),
            hashes,
            bits,
            out,
        )
        return out


def encode_records(
    schema: Schema,
    keys: KeySet,
    columns: Mapping[str, Sequence[str | None]],
) -> EncodedBatch:
    """Encode a batch given as columns of raw strings (``None``/empty for missing).

    Every schema field must have a column; extra columns are ignored. Values that fail
    normalisation are encoded as missing and reported in ``problems`` (row, field, reason —
    never the value).

    A salted field's tokens are each ``<salt value>|<token>`` (``~|`` where the salt value is
    missing): salting splits the field's equal-value groups by the salt, so a frequency attack
    meets flat (value, salt) groups. A field with ``hardening`` has its filters passed through
    :func:`linkage.harden.harden_field_filters` (key ``harden/<field name>``), the record
    filter through :func:`linkage.harden.harden_record_filters` (key ``harden/record``) when
    ``[hardening]`` is on; a missing value stays all zero (hardening would set bits for it),
    and a record none of whose record-filter fields is present keeps an all-zero record filter.

    How: every distinct raw value of a field is normalised and tokenised once per batch, each
    distinct (value, salt value) is hardened once, and each field's filters are built in one
    kernel call per key (``kernel.token_filters``) with no per-token Python work.
    """
    missing = [name for name in schema.input_names if name not in columns]
    if missing:
        raise SchemaError([f"column for field {name!r} is missing" for name in missing])
    lengths = {len(columns[name]) for name in schema.input_names}
    if len(lengths) != 1:
        raise SchemaError(["columns: every field column must have the same number of rows"])
    n = lengths.pop()

    problems: list[ValueProblem] = []
    cols = {  # by comparison: a field's views share one normalised column
        spec.input_name: _normalise_column(
            spec,
            raw_values(spec, columns),
            schema,
            [] if spec.combines else problems,  # a combined field's inputs report their own
        )
        for spec in schema.comparison_specs
    }
    record = np.zeros((n, schema.record_filter_words), dtype=U64)
    field_filters: list[NDArray[np.uint64]] = []
    published: dict[str, _Published] = {}
    present = np.zeros((n, len(schema.fields)), dtype=bool)

    for f_index, spec in enumerate(schema.fields):
        col = cols[spec.input_name]
        inverse = col.inverse
        values = col.values
        if spec.salt:
            salt_field, salt_transform = spec.salt.split(".")
            salt_idx, salt_values = _transform_column(cols[salt_field], salt_transform)
            # distinct (value, salt) combinations; salt index 0 is "missing"
            radix = len(salt_values) + 1
            combo = inverse * radix + (salt_idx + 1)
            combo[inverse < 0] = -1
            uniq, inv = np.unique(combo, return_inverse=True)
            has_missing = bool(uniq.size and uniq[0] < 0)
            pairs = uniq[1:] if has_missing else uniq
            combo_value, combo_prefix = np.divmod(pairs, radix)
            prefixes = ["~|", *(v + "|" for v in salt_values)]
            inverse = inv.reshape(-1).astype(np.int64) - (1 if has_missing else 0)
        else:
            combo_value = np.arange(len(values), dtype=np.int64)
            combo_prefix = np.zeros(len(values), dtype=np.int64)
            prefixes = [""]
        blob = _TokenBlob(prefixes, [tokenise(spec, v) for v in values])
        n_combos = combo_value.shape[0]
        distinct_filters = blob.filters(
            keys.key("filter", spec.name),
            combo_value,
            combo_prefix,
            spec.hashes_per_token,
            spec.filter_bits,
            spec.filter_words,
        )
        ok = inverse >= 0
        if spec.hardening.enabled and n_combos:
            # one row per distinct present value: hardening is a function of (key, bytes), so
            # this equals hardening every row, and missing rows never reach it
            distinct_filters = harden.harden_field_filters(
                distinct_filters, spec.hardening, keys, spec.name
            )
        out = np.zeros((n, spec.published_words), dtype=U64)
        if n_combos:  # else no row has a value (and the unhardened width may differ)
            out[ok] = distinct_filters[inverse[ok]]
        field_filters.append(out)
        published[spec.name] = _Published(np.where(ok, inverse, -1), distinct_filters)
        present[:, f_index] = ok

        rk = spec.record_hashes_per_token
        if rk:
            distinct_record = blob.filters(
                keys.key("record", spec.name),
                combo_value,
                combo_prefix,
                rk,
                schema.record_filter_bits,
                schema.record_filter_words,
            )
            record[ok] |= distinct_record[inverse[ok]]

    block_keys = np.zeros((n, len(schema.blocking)), dtype=U64)
    for r_index, rule in enumerate(schema.blocking):
        key = keys.key("block", rule.name)
        part_idx: list[NDArray[np.int64]] = []
        part_vals: list[list[str]] = []
        for fname, transform in rule.parts:
            if transform == "filter":
                idx, vals = published[fname].column
            else:
                idx, vals = _transform_column(cols[schema.field(fname).input_name], transform)
            part_idx.append(idx)
            part_vals.append(vals)
        stacked = np.stack(part_idx, axis=1)
        ok = np.asarray((stacked >= 0).all(axis=1), dtype=np.bool_)
        if not ok.any():
            continue
        uniq, inv = _unique_rows(stacked[ok], [len(v) for v in part_vals])
        # per part, the encoded value of every distinct combination (plain ints: indexing a
        # list with numpy scalars is several times slower), then joined combination-wise
        part_columns = [
            [encoded[i] for i in uniq[:, p].tolist()]
            for p, encoded in enumerate([v.encode("utf-8") for v in vals] for vals in part_vals)
        ]
        messages = list(map(_UNIT_SEP.encode().join, zip(*part_columns, strict=True)))
        tokens = _tokens64(key, messages)
        block_keys[ok, r_index] = tokens[inv.reshape(-1)]

    salt_tags = np.zeros((n, len(schema.salt_sources)), dtype=U64)
    for s_index, source in enumerate(schema.salt_sources):
        salt_field, salt_transform = source.split(".")
        if salt_transform == "value":  # the published filter: see EncodedBatch
            idx, salt_values = published[salt_field].column
        else:
            idx, salt_values = _transform_column(cols[salt_field], salt_transform)
        key = keys.key("salt", source)
        tags = _tokens64(key, [v.encode("utf-8") for v in salt_values])
        has = idx >= 0
        salt_tags[has, s_index] = tags[idx[has]]

    if schema.hardening.enabled:
        # a record with no value in any record-filter field keeps its all-zero filter
        in_record = [spec.record_hashes_per_token > 0 for spec in schema.fields]
        has_values = present[:, in_record].any(axis=1)
        hardened = np.zeros((n, schema.published_record_words), dtype=U64)
        if has_values.any():
            hardened[has_values] = harden.harden_record_filters(
                record[has_values], schema.hardening, keys
            )
        record = hardened

    field_order = {name: i for i, name in enumerate(schema.input_names)}
    problems.sort(key=lambda p: (p.row, field_order[p.field]))  # row-major, schema order
    log.debug("encoded %d records, %d invalid values", n, len(problems))
    return EncodedBatch(
        schema_fingerprint=schema.fingerprint(),
        key_version=keys.key_version,
        field_names=schema.field_names,
        field_filters=tuple(field_filters),
        field_present=present,
        record_filters=record,
        block_keys=block_keys,
        salt_tags=salt_tags,
        problems=tuple(problems),
    )


# --------------------------------------------------------------------------- one record


def _set_token_bits(
    filter_bits: NDArray[np.uint8], key: bytes, messages: Sequence[bytes], hashes: int
) -> None:
    """Set the positions of the UTF-8 ``messages`` (tokens) under ``key`` in a filter held
    as one byte per bit (``filter_bits[i]`` is bit ``i``; see :func:`token_positions`)."""
    if messages:
        filter_bits[_message_positions(key, messages, hashes, filter_bits.shape[0])] = 1


def _packed_row(filter_bits: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """A ``(1, words)`` packed filter (the byte layout above) from one byte per bit."""
    return harden._pack_bits(filter_bits.reshape(1, -1))


def encode_record(schema: Schema, keys: KeySet, values: Mapping[str, str | None]) -> EncodedBatch:
    """Encode ONE record: an :class:`EncodedBatch` of length 1, bit for bit the batch
    ``encode_records(schema, keys, {f: [values.get(f)] for f in schema.input_names})``.

    ``values`` maps input names (:attr:`Schema.input_names`) to raw strings; a field without
    a key, ``None`` or empty is missing, extra keys are ignored. Values that fail
    normalisation are encoded as missing and
    reported in ``problems`` (row 0). This is the lookup path (one query at a time): plain
    Python over the few fields and tokens, one C HMAC call per filter key, bits set in one
    small numpy op per key, blocking tokens and salt tags one HMAC each, hardening tables
    reused through ``keys.derived`` as in the batch path; none of the batch machinery
    (distinct values, unique rows, scatter) that costs more than the hashing for one row.
    tests/linkage/test_encode_record.py holds it to :func:`encode_records` (its plain counterpart).
    """
    problems: list[ValueProblem] = []
    canonical: dict[str, str] = {}  # by comparison
    given = {name: [values.get(name)] for name in schema.input_names}
    for spec in schema.comparison_specs:
        raw = raw_values(spec, given)[0]
        canon, reason = _normalise_value(spec, raw, schema)
        if reason is not None and not spec.combines:  # its inputs report their own
            problems.append(ValueProblem(0, spec.input_name, reason))
        elif canon is not None:
            canonical[spec.input_name] = canon
    specs = {spec.name: spec for spec in schema.fields} | {
        spec.input_name: spec for spec in schema.comparison_specs
    }
    part_values: dict[tuple[str, str], str] = {}  # dies with the call

    def part_value(field_name: str, transform: str) -> str:
        """The value of a blocking part or salt; empty when missing (as in the batch path)."""
        found = part_values.get((field_name, transform))
        if found is None:
            spec = specs[field_name]
            value = canonical.get(spec.input_name)
            found = "" if value is None else blocking_value(spec.kind, transform, value)
            part_values[field_name, transform] = found
        return found

    field_filters: list[NDArray[np.uint64]] = []
    record_bits = np.zeros(schema.record_filter_bits, dtype=np.uint8)
    record_has_values = False  # some field that feeds the record filter is present
    for spec in schema.fields:
        value = canonical.get(spec.input_name)
        if value is None:
            field_filters.append(np.zeros((1, spec.published_words), dtype=U64))
            continue
        tokens = tokenise(spec, value)
        if spec.salt:
            salt_field, salt_transform = spec.salt.split(".")
            tokens = _salted(tokens, part_value(salt_field, salt_transform))
        messages = [token.encode("utf-8") for token in tokens]
        field_bits = np.zeros(spec.filter_bits, dtype=np.uint8)
        _set_token_bits(field_bits, keys.key("filter", spec.name), messages, spec.hashes_per_token)
        filter_row = _packed_row(field_bits)
        if spec.hardening.enabled:
            filter_row = harden.harden_field_filters(filter_row, spec.hardening, keys, spec.name)
        field_filters.append(filter_row)
        if spec.record_hashes_per_token:
            record_has_values = True
            _set_token_bits(
                record_bits, keys.key("record", spec.name), messages, spec.record_hashes_per_token
            )
    record = _packed_row(record_bits)
    if schema.hardening.enabled:
        record = (
            harden.harden_record_filters(record, schema.hardening, keys)
            if record_has_values
            else np.zeros((1, schema.published_record_words), dtype=U64)
        )

    position = {name: i for i, name in enumerate(schema.field_names)}

    def published(field_name: str) -> str:
        """:func:`filter_part` of the field's published filter; empty when missing."""
        if specs[field_name].input_name not in canonical:
            return ""
        return filter_part(field_filters[position[field_name]])

    block_keys = np.zeros((1, len(schema.blocking)), dtype=U64)
    for r_index, rule in enumerate(schema.blocking):
        parts = [
            published(field_name) if transform == "filter" else part_value(field_name, transform)
            for field_name, transform in rule.parts
        ]
        if all(parts):
            block_keys[0, r_index] = blocking_token(keys.key("block", rule.name), parts)

    salt_tags = np.zeros((1, len(schema.salt_sources)), dtype=U64)
    for s_index, source in enumerate(schema.salt_sources):
        salt_field, salt_transform = source.split(".")
        if salt_transform == "value":
            salt_value = published(salt_field)
        else:
            salt_value = part_value(salt_field, salt_transform)
        if salt_value:
            salt_tags[0, s_index] = token64_reference(
                keys.key("salt", source), salt_value.encode("utf-8")
            )

    return EncodedBatch(
        schema_fingerprint=schema.fingerprint(),
        key_version=keys.key_version,
        field_names=schema.field_names,
        field_filters=tuple(field_filters),
        field_present=np.array([[spec.input_name in canonical for spec in schema.fields]]),
        record_filters=record,
        block_keys=block_keys,
        salt_tags=salt_tags,
        problems=tuple(problems),
    )
