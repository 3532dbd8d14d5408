"""The one place where protobuf messages and ``linkage`` domain objects are converted.

Role: the node turns an :class:`~linkage.encode.EncodedBatch` into ``EncodedColumns`` to
publish (:func:`encoded_to_columns`) or into ``EncodedRecord`` rows to query
(:func:`encoded_to_proto`); the matcher turns either back into arrays
(:func:`columns_to_encoded`, :func:`proto_to_encoded`), validated against its schema, before
comparing. Servicers never touch filter bytes themselves, so a change of wire format stays in
``proto/`` and this module. Byte layouts: ``proto/FORMATS.md`` ("Wire encodings").

Invariants: one encoding has exactly one wire form (presence is strict: a row absent from the
presence bitmap must carry all-zero filter bytes, anything else is refused); ``form_of`` is
read apart from the filters (:func:`columns_form_of`) and is "" or a well-formed reference
that is not one of the message's own.

Contract: validation errors are :class:`server.common.status.RequestError` naming the exact
path (``queries[3].field_filters[1]``, ``columns.references[5]``) and the expected byte count,
never the bytes. :func:`band_for` maps a probability to the staff-facing band,
:func:`agreement_for` a ``linkage.scoring`` level label to the ``Agreement`` enum and
:func:`label_for` back (``NOT_COMPARED`` is no level of the model: the matcher sends it for a
salted field whose salt tags differ).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from linkage.encode import EncodedBatch
from linkage.errors import FilterFormatError, IncompatibleEncodingError
from linkage.schema import Schema
from proto.jigsaw.v1 import jigsaw_pb2
from server.common.status import RequestError, require_filter_bytes, require_reference

_LE_U64 = np.dtype("<u8")
#: A reference as ``server.common.status.require_reference`` accepts it (checked again there
#: on errors).
_REFERENCE_FULL = re.compile(r"[0-9a-f]{32}")
#: Any number of concatenated references' characters (lengths are checked separately).
_REFERENCE_TEXT = re.compile(r"[0-9a-f]*")

BAND_THRESHOLDS: tuple[tuple[float, jigsaw_pb2.ProbabilityBand], ...] = (
    (0.99, jigsaw_pb2.PROBABILITY_BAND_VERY_HIGH),
    (0.90, jigsaw_pb2.PROBABILITY_BAND_HIGH),
    (0.50, jigsaw_pb2.PROBABILITY_BAND_POSSIBLE),
)

AGREEMENT_BY_LABEL: Mapping[str, jigsaw_pb2.Agreement] = {
    "exact": jigsaw_pb2.AGREEMENT_EXACT,
    "strong": jigsaw_pb2.AGREEMENT_STRONG,
    "moderate": jigsaw_pb2.AGREEMENT_WEAK,
    "weak": jigsaw_pb2.AGREEMENT_WEAK,
    "disagrees": jigsaw_pb2.AGREEMENT_DISAGREES,
    "missing": jigsaw_pb2.AGREEMENT_MISSING,
    "not_compared": jigsaw_pb2.AGREEMENT_NOT_COMPARED,
}

LABEL_BY_AGREEMENT: Mapping[int, str] = {
    jigsaw_pb2.AGREEMENT_EXACT: "exact",
    jigsaw_pb2.AGREEMENT_STRONG: "strong",
    jigsaw_pb2.AGREEMENT_WEAK: "weak",
    jigsaw_pb2.AGREEMENT_DISAGREES: "disagrees",
    jigsaw_pb2.AGREEMENT_MISSING: "missing",
    jigsaw_pb2.AGREEMENT_NOT_COMPARED: "not_compared",
}


def band_for(probability: float) -> jigsaw_pb2.ProbabilityBand:
    """The staff-facing band of a match probability (NaN is low)."""
    for threshold, band in BAND_THRESHOLDS:
        if probability >= threshold:
            return band
    return jigsaw_pb2.PROBABILITY_BAND_LOW


def agreement_for(label: str) -> jigsaw_pb2.Agreement:
    """The ``Agreement`` of a ``linkage.scoring`` level label (unknown → UNSPECIFIED)."""
    if label.startswith("similar_"):
        return jigsaw_pb2.AGREEMENT_WEAK
    return AGREEMENT_BY_LABEL.get(label, jigsaw_pb2.AGREEMENT_UNSPECIFIED)


def label_for(agreement: int) -> str:
    """The canonical label of an ``Agreement`` value ("unspecified" for anything else)."""
    return LABEL_BY_AGREEMENT.get(agreement, "unspecified")


def _row_bytes(words: NDArray[np.uint64]) -> bytes:
    return np.ascontiguousarray(words, dtype=_LE_U64).tobytes()


def encoded_to_proto(
    batch: EncodedBatch, references: Sequence[str]
) -> list[jigsaw_pb2.EncodedRecord]:
    """One ``EncodedRecord`` per row of ``batch``, with ``references[i]`` for row ``i``."""
    if len(references) != len(batch):
        raise FilterFormatError(
            f"references: expected {len(batch)} (one per encoded row), got {len(references)}"
        )
    # whole arrays converted once; rows are then slices of the little-endian bytes
    field_bytes = [
        np.ascontiguousarray(filters, dtype=_LE_U64).tobytes() for filters in batch.field_filters
    ]
    field_widths = [filters.shape[1] * 8 for filters in batch.field_filters]
    record_bytes = _row_bytes(batch.record_filters)
    record_width = batch.record_filters.shape[1] * 8
    present = batch.field_present
    block_keys = batch.block_keys.tolist()
    salt_tags = batch.salt_tags.tolist()
    out: list[jigsaw_pb2.EncodedRecord] = []
    for row, reference in enumerate(references):
        filters = [
            data[row * width : (row + 1) * width] if present[row, f] else b""
            for f, (data, width) in enumerate(zip(field_bytes, field_widths, strict=True))
        ]
        out.append(
            jigsaw_pb2.EncodedRecord(
                reference=reference,
                field_filters=filters,
                record_filter=record_bytes[row * record_width : (row + 1) * record_width],
                block_keys=block_keys[row],
                salt_tags=salt_tags[row],
            )
        )
    return out


def _form_of_argument(form_of: Sequence[str] | None, rows: int) -> list[str]:
    """``form_of`` as a list of ``rows`` entries, or [] when absent or all "" (the encoders'
    own argument check; the decoders check what they receive)."""
    if form_of is None:
        return []
    if len(form_of) != rows:
        raise FilterFormatError(
            f"form_of: expected {rows} (one per encoded row), got {len(form_of)}"
        )
    forms = list(form_of)
    return forms if any(forms) else []


def proto_to_encoded(
    records: Sequence[jigsaw_pb2.EncodedRecord],
    schema: Schema,
    *,
    fingerprint: str,
    key_version: int,
    field_prefix: str = "records",
    unique_references: bool = True,
) -> tuple[EncodedBatch, list[str]]:
    """Validate received records against ``schema`` and return (batch, references).

    Raises :class:`IncompatibleEncodingError` when ``fingerprint`` is not the schema's, and
    :class:`RequestError` naming ``<field_prefix>[i]...`` for a malformed record: a bad
    reference, a repeated one (unless ``unique_references`` is False: the rows of one lookup
    share its reference), the wrong number of field filters, block keys or salt tags, or a
    filter of the wrong length.
    """
    if fingerprint != schema.fingerprint():
        raise IncompatibleEncodingError(
            "schema_fingerprint: the encodings were made with a different schema than this server's"
        )
    fast = _proto_to_encoded_fast(records, schema, fingerprint, key_version, unique_references)
    if fast is not None:
        return fast
    # something is malformed: the record-by-record loop below finds and names the first problem
    n = len(records)
    field_widths = [spec.published_words * 8 for spec in schema.fields]
    record_width = schema.published_record_words * 8
    n_rules = len(schema.blocking)
    field_chunks: list[list[bytes]] = [[] for _ in schema.fields]
    present = np.zeros((n, len(schema.fields)), dtype=bool)
    record_chunks: list[bytes] = []
    block_keys = np.zeros((n, n_rules), dtype=np.uint64)
    n_salts = len(schema.salt_sources)
    salt_tags = np.zeros((n, n_salts), dtype=np.uint64)
    references: list[str] = []
    seen: dict[str, int] = {}
    for i, record in enumerate(records):
        where = f"{field_prefix}[{i}]"
        reference = require_reference(record.reference, f"{where}.reference")
        if unique_references and reference in seen:
            raise RequestError(
                f"{where}.reference", f"must be unique; repeats {field_prefix}[{seen[reference]}]"
            )
        seen[reference] = i
        references.append(reference)
        if len(record.field_filters) != len(field_widths):
            raise RequestError(
                f"{where}.field_filters",
                f"expected {len(field_widths)} filters (one per schema field), "
                f"got {len(record.field_filters)}",
            )
        for j, (data, width) in enumerate(zip(record.field_filters, field_widths, strict=True)):
            if data:
                field_chunks[j].append(
                    require_filter_bytes(data, f"{where}.field_filters[{j}]", width)
                )
                present[i, j] = True
            else:
                field_chunks[j].append(bytes(width))
        record_chunks.append(
            require_filter_bytes(record.record_filter, f"{where}.record_filter", record_width)
        )
        for name, values, out, what in (
            ("block_keys", record.block_keys, block_keys, "keys (one per schema blocking rule)"),
            ("salt_tags", record.salt_tags, salt_tags, "tags (one per schema salt source)"),
        ):
            if len(values) != out.shape[1]:
                raise RequestError(
                    f"{where}.{name}", f"expected {out.shape[1]} {what}, got {len(values)}"
                )
            if out.shape[1]:
                out[i] = values
    field_filters = tuple(
        _words(chunks, n, spec.published_words)
        for chunks, spec in zip(field_chunks, schema.fields, strict=True)
    )
    batch = EncodedBatch(
        schema_fingerprint=fingerprint,
        key_version=key_version,
        field_names=schema.field_names,
        field_filters=field_filters,
        field_present=present,
        record_filters=_words(record_chunks, n, schema.published_record_words),
        block_keys=block_keys,
        salt_tags=salt_tags,
    )
    return batch, references


def _proto_to_encoded_fast(
    records: Sequence[jigsaw_pb2.EncodedRecord],
    schema: Schema,
    fingerprint: str,
    key_version: int,
    unique_references: bool = True,
) -> tuple[EncodedBatch, list[str]] | None:
    """Column-at-a-time :func:`proto_to_encoded` for well-formed records, else None.

    Every check of the record-by-record loop is made here too, on whole columns (lengths
    compared as arrays); on any failure it returns None and the caller's loop, which checks
    records in order, raises the error naming the first offending record.
    """
    n = len(records)
    n_fields = len(schema.fields)
    n_rules = len(schema.blocking)
    n_salts = len(schema.salt_sources)
    references = [record.reference for record in records]
    if unique_references and len(set(references)) != n:
        return None
    if not all(map(_REFERENCE_FULL.fullmatch, references)):
        return None
    filter_lists = [record.field_filters for record in records]
    if any(len(filters) != n_fields for filters in filter_lists):
        return None
    present = np.zeros((n, n_fields), dtype=bool)
    field_filters = []
    for j, spec in enumerate(schema.fields):
        width = spec.published_words * 8
        column = [filters[j] for filters in filter_lists]
        lengths = np.fromiter(map(len, column), dtype=np.int64, count=n)
        if np.any((lengths != 0) & (lengths != width)):
            return None
        present[:, j] = lengths != 0
        if not present[:, j].all():
            empty = bytes(width)
            column = [data or empty for data in column]
        field_filters.append(_words(column, n, spec.published_words))
    record_column = [record.record_filter for record in records]
    record_width = schema.published_record_words * 8
    if any(len(data) != record_width for data in record_column):
        return None
    key_lists = [record.block_keys for record in records]
    block_keys = _fixed64_columns(key_lists, n, n_rules)
    if block_keys is None:
        return None
    salt_tags = _fixed64_columns([record.salt_tags for record in records], n, n_salts)
    if salt_tags is None:
        return None
    batch = EncodedBatch(
        schema_fingerprint=fingerprint,
        key_version=key_version,
        field_names=schema.field_names,
        field_filters=tuple(field_filters),
        field_present=present,
        record_filters=_words(record_column, n, schema.published_record_words),
        block_keys=block_keys,
        salt_tags=salt_tags,
    )
    return batch, references


def _fixed64_columns(
    lists: Sequence[Sequence[int]], rows: int, columns: int
) -> NDArray[np.uint64] | None:
    """(rows, columns) uint64 array of repeated fixed64 fields, None if a row's count differs."""
    if any(len(values) != columns for values in lists):
        return None
    if not columns:
        return np.zeros((rows, 0), dtype=np.uint64)
    return np.array([list(values) for values in lists], dtype=np.uint64).reshape(rows, columns)


def _words(chunks: list[bytes], rows: int, words: int) -> NDArray[np.uint64]:
    """Native-order uint64 array (rows, words) from little-endian row bytes."""
    data = np.frombuffer(b"".join(chunks), dtype=_LE_U64).reshape(rows, words)
    return np.ascontiguousarray(data.astype(np.uint64))


# ---------------------------------------------------------------------------- columns


def encoded_to_columns(
    batch: EncodedBatch, references: Sequence[str], form_of: Sequence[str] | None = None
) -> jigsaw_pb2.EncodedColumns:
    """The ``EncodedColumns`` of ``batch`` (layout in proto/FORMATS.md), row ``i`` as
    ``references[i]``; the filters of missing values are sent as zero bytes whatever they hold.
    ``form_of`` (one entry per row, "" for a record itself) is written only when some entry
    is not "".
    """
    if len(references) != len(batch):
        raise FilterFormatError(
            f"references: expected {len(batch)} (one per encoded row), got {len(references)}"
        )
    forms = _form_of_argument(form_of, len(batch))
    present = np.asarray(batch.field_present, dtype=bool)
    field_filters = []
    for f, filters in enumerate(batch.field_filters):
        column = present[:, f]
        if not column.all():
            filters = np.where(column[:, None], filters, np.uint64(0))
        field_filters.append(_row_bytes(filters))
    return jigsaw_pb2.EncodedColumns(
        references=references,
        field_filters=field_filters,
        field_present=np.packbits(present.reshape(-1), bitorder="little").tobytes(),
        record_filters=_row_bytes(batch.record_filters),
        block_keys=_row_bytes(batch.block_keys),
        salt_tags=_row_bytes(batch.salt_tags),
        form_of=forms,
    )


def request_references(request: jigsaw_pb2.PublishRequest) -> list[str]:
    """The references a ``PublishRequest`` carries, in row order."""
    return list(request.columns.references)


def request_form_of(request: jigsaw_pb2.PublishRequest) -> list[str]:
    """The ``form_of`` of every row of a ``PublishRequest``, in row order ("" for a record
    published as itself; not validated: see :func:`columns_form_of`)."""
    columns = request.columns
    return list(columns.form_of) if columns.form_of else [""] * len(columns.references)


def columns_form_of(
    columns: jigsaw_pb2.EncodedColumns,
    references: Sequence[str],
    *,
    field_prefix: str = "columns",
) -> list[str]:
    """The validated ``form_of`` of each row of ``columns`` ("" for a record itself).

    ``references`` are the rows' references as :func:`columns_to_encoded` returned them.
    Absent = every row a record itself; else one entry per row (RequestError naming
    ``<field_prefix>.form_of``), each "" or a reference that is not one of ``references``
    (RequestError naming ``<field_prefix>.form_of[i]``).
    """
    n = len(references)
    if not columns.form_of:
        return [""] * n
    forms = list(columns.form_of)
    if len(forms) != n:
        raise RequestError(
            f"{field_prefix}.form_of",
            f"expected no entries (every row a record itself) or {n} (one per row), "
            f"got {len(forms)}",
        )
    _check_form_of(
        forms,
        references,
        lambda i: f"{field_prefix}.form_of[{i}]",
        f"{field_prefix}.references",
    )
    return forms


def _check_form_of(
    forms: Sequence[str],
    references: Sequence[str],
    where: Callable[[int], str],
    references_path: str,
) -> None:
    """RequestError on the first ``forms`` entry that is neither "" nor a reference outside
    ``references`` (the message's own rows)."""
    named = [form for form in forms if form]
    if not named:
        return
    own = set(references)
    if all(map(_REFERENCE_FULL.fullmatch, named)) and own.isdisjoint(named):
        return
    row_of = {reference: i for i, reference in enumerate(references)}
    for i, form in enumerate(forms):
        if not form:
            continue
        if not _REFERENCE_FULL.fullmatch(form):
            raise RequestError(
                where(i),
                '"" (a record published as itself) or the reference (32 lowercase hex '
                "characters) of the record this row is a form of",
            )
        if form == references[i]:
            raise RequestError(where(i), "must not be the row's own reference")
        if form in row_of:
            if references_path.endswith(".references"):
                other = f"{references_path}[{row_of[form]}]"
            else:
                other = f"{references_path}[{row_of[form]}].reference"
            raise RequestError(
                where(i),
                f"must name a record not published in this message; names {other}",
            )


def columns_to_encoded(
    columns: jigsaw_pb2.EncodedColumns,
    schema: Schema,
    *,
    fingerprint: str,
    key_version: int,
    field_prefix: str = "columns",
) -> tuple[EncodedBatch, list[str]]:
    """Validate received columns against ``schema`` and return (batch, references).

    The columnar twin of :func:`proto_to_encoded`, with the same checks: every reference well
    formed and unique, ``len(field_filters)`` = the schema's field count, every column exactly
    ``n`` rows long, presence bitmap padding zero and every absent row's filter all zero.
    Raises :class:`IncompatibleEncodingError` for a different fingerprint and
    :class:`RequestError` naming ``<field_prefix>.<column>`` (``[f]`` or ``[row]`` where one
    is to blame) with the expectation, never bytes or values.
    """
    if fingerprint != schema.fingerprint():
        raise IncompatibleEncodingError(
            "schema_fingerprint: the encodings were made with a different schema than this server's"
        )
    references = _column_references(columns.references, field_prefix)
    n = len(references)
    n_fields = len(schema.fields)
    if len(columns.field_filters) != n_fields:
        raise RequestError(
            f"{field_prefix}.field_filters",
            f"expected {n_fields} columns (one per schema field), got {len(columns.field_filters)}",
        )
    present = _presence(columns.field_present, n, n_fields, f"{field_prefix}.field_present")
    field_filters = []
    for f, (data, spec) in enumerate(zip(columns.field_filters, schema.fields, strict=True)):
        where = f"{field_prefix}.field_filters[{f}]"
        width = spec.published_words * 8
        words = _column_words(data, n, spec.published_words, where, f"{width} bytes of filter")
        stray = np.flatnonzero(words[~present[:, f]].any(axis=1))
        if stray.size:
            row = int(np.flatnonzero(~present[:, f])[stray[0]])
            raise RequestError(
                where,
                f"row {row} is absent in {field_prefix}.field_present, so its "
                f"{width} filter bytes must all be zero",
            )
        field_filters.append(words)
    batch = EncodedBatch(
        schema_fingerprint=fingerprint,
        key_version=key_version,
        field_names=schema.field_names,
        field_filters=tuple(field_filters),
        field_present=present,
        record_filters=_column_words(
            columns.record_filters,
            n,
            schema.published_record_words,
            f"{field_prefix}.record_filters",
            f"{schema.published_record_words * 8} bytes of record filter",
        ),
        block_keys=_column_words(
            columns.block_keys,
            n,
            len(schema.blocking),
            f"{field_prefix}.block_keys",
            f"{len(schema.blocking)} keys of 8 bytes (one per schema blocking rule)",
        ),
        salt_tags=_column_words(
            columns.salt_tags,
            n,
            len(schema.salt_sources),
            f"{field_prefix}.salt_tags",
            f"{len(schema.salt_sources)} tags of 8 bytes (one per schema salt source)",
        ),
    )
    return batch, references


def _column_references(values: Sequence[str], field_prefix: str) -> list[str]:
    """``values`` as a list if all are references and unique, else RequestError on the first.

    References are matched whole (``fullmatch``): ``server.common.status.require_reference`` uses
    ``^...$``, which lets a trailing newline through, so it is not called here.
    """
    references = list(values)
    # whole-column checks first; only on a failure does the loop look for the offending row
    if (
        all(len(reference) == 32 for reference in references)
        and _REFERENCE_TEXT.fullmatch("".join(references))
        and len(set(references)) == len(references)
    ):
        return references
    seen: dict[str, int] = {}
    for i, reference in enumerate(references):
        where = f"{field_prefix}.references[{i}]"
        if not _REFERENCE_FULL.fullmatch(reference):
            raise RequestError(where, "expected an opaque reference of 32 lowercase hex characters")
        if reference in seen:
            raise RequestError(
                where, f"must be unique; repeats {field_prefix}.references[{seen[reference]}]"
            )
        seen[reference] = i
    return references  # pragma: no cover - the whole-column checks above found a problem


def _presence(data: bytes, rows: int, fields: int, where: str) -> NDArray[np.bool_]:
    """The (rows, fields) presence bitmap of ``data`` (LSB first, row-major), strictly sized."""
    bits = rows * fields
    expected = (bits + 7) // 8
    if len(data) != expected:
        raise RequestError(
            where,
            f"expected {expected} bytes ({rows} rows x {fields} fields, 1 bit each), "
            f"got {len(data)} bytes",
        )
    unpacked = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if unpacked[bits:].any():
        raise RequestError(where, f"the {expected * 8 - bits} padding bits must be zero")
    return np.ascontiguousarray(unpacked[:bits].reshape(rows, fields).astype(bool))


def _column_words(
    data: bytes, rows: int, words: int, where: str, per_row: str
) -> NDArray[np.uint64]:
    """Native uint64 array (rows, words) of a little-endian column of exactly that size."""
    expected = rows * words * 8
    if len(data) != expected:
        raise RequestError(
            where, f"expected {expected} bytes ({rows} rows x {per_row}), got {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=_LE_U64).reshape(rows, words).astype(np.uint64)
