"""Tests of proto <-> domain conversion (server.common.wire): round trips, byte layout, validation.

Both wire forms are covered: ``EncodedRecord`` per record and ``EncodedColumns`` per message.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.encode import EncodedBatch, encode_records
from linkage.errors import FilterFormatError, IncompatibleEncodingError
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from proto.jigsaw.v1 import jigsaw_pb2
from server.common.status import RequestError
from server.common.wire import (
    agreement_for,
    band_for,
    columns_form_of,
    columns_to_encoded,
    encoded_to_columns,
    encoded_to_proto,
    label_for,
    proto_to_encoded,
    request_form_of,
    request_references,
)

SCHEMA = load_schema("child")
FINGERPRINT = SCHEMA.fingerprint()
REFS = [f"{i:032x}" for i in range(1, 4)]


def sample_batch() -> EncodedBatch:
    columns: dict[str, list[str | None]] = {
        "given_name": ["Amy", "José", None],
        "middle_names": [None, "Maria", None],
        "family_name": ["Smith", "Müller", "O'Brien"],
        "date_of_birth": ["02/03/2014", "2015-12-31", "not a date"],
        "sex": ["F", "M", None],
        "postcode": ["SW1A 1AA", None, "B1 1AA"],
        "nhs_number": ["943 476 5919", None, None],
    }
    return encode_records(SCHEMA, KeySet(LinkageSecret.for_tests(), 1), columns)


def assert_same(a: EncodedBatch, b: EncodedBatch) -> None:
    assert a.field_names == b.field_names
    assert (a.schema_fingerprint, a.key_version) == (b.schema_fingerprint, b.key_version)
    for left, right in zip(a.field_filters, b.field_filters, strict=True):
        assert left.dtype == right.dtype == np.uint64
        np.testing.assert_array_equal(left, right)
    np.testing.assert_array_equal(a.field_present, b.field_present)
    np.testing.assert_array_equal(a.record_filters, b.record_filters)
    np.testing.assert_array_equal(a.block_keys, b.block_keys)
    np.testing.assert_array_equal(a.salt_tags, b.salt_tags)


def test_round_trip_of_real_encodings() -> None:
    batch = sample_batch()
    records = encoded_to_proto(batch, REFS)
    wire = [jigsaw_pb2.EncodedRecord.FromString(r.SerializeToString()) for r in records]
    back, refs = proto_to_encoded(wire, SCHEMA, fingerprint=FINGERPRINT, key_version=1)
    assert refs == REFS
    assert_same(batch, back)


def test_byte_layout_is_little_endian_words_and_missing_is_empty() -> None:
    batch = sample_batch()
    records = encoded_to_proto(batch, REFS)
    given = batch.field_filters[0][0]
    expected = b"".join(int(word).to_bytes(8, "little") for word in given)
    assert records[0].field_filters[0] == expected
    assert len(records[0].field_filters[0]) == SCHEMA.fields[0].filter_bits // 8
    # bit i is bit i % 8 of byte i // 8
    data = records[0].field_filters[0]
    bits = [i for i in range(len(data) * 8) if data[i // 8] >> (i % 8) & 1]
    words = [i for i in range(256) if int(given[i // 64]) >> (i % 64) & 1]
    assert bits == words and bits
    assert records[2].field_filters[0] == b""  # given name missing
    assert records[2].field_filters[3] == b""  # invalid date is encoded as missing
    assert len(records[0].field_filters) == len(SCHEMA.fields)
    assert list(records[0].block_keys) == batch.block_keys[0].tolist()
    assert len(records[0].record_filter) == SCHEMA.record_filter_bits // 8


def test_reference_count_must_match_rows() -> None:
    with pytest.raises(FilterFormatError, match="references: expected 3"):
        encoded_to_proto(sample_batch(), REFS[:2])


def valid_records() -> list[jigsaw_pb2.EncodedRecord]:
    return encoded_to_proto(sample_batch(), REFS)


def expect_request_error(records: list[jigsaw_pb2.EncodedRecord], field: str, text: str) -> None:
    with pytest.raises(RequestError) as info:
        proto_to_encoded(records, SCHEMA, fingerprint=FINGERPRINT, key_version=1)
    assert info.value.field == field
    assert text in str(info.value)


def test_wrong_filter_length_names_record_field_and_byte_count() -> None:
    records = valid_records()
    records[1].field_filters[2] = b"\x01" * 31
    expect_request_error(records, "records[1].field_filters[2]", "expected 32 bytes, got 31")


def test_wrong_number_of_filters() -> None:
    records = valid_records()
    del records[2].field_filters[-1]
    expect_request_error(
        records, "records[2].field_filters", f"expected {len(SCHEMA.fields)} filters"
    )


def test_wrong_record_filter_length() -> None:
    records = valid_records()
    records[0].record_filter = b""
    expect_request_error(records, "records[0].record_filter", "expected 128 bytes, got 0")


def test_wrong_block_key_count() -> None:
    records = valid_records()
    records[1].block_keys.append(7)
    rules = len(SCHEMA.blocking)
    expect_request_error(
        records, "records[1].block_keys", f"expected {rules} keys (one per schema blocking rule)"
    )


@pytest.mark.parametrize("reference", ["", "ABCDEF" * 5 + "00", "0" * 31, "g" * 32, "0" * 33])
def test_bad_reference(reference: str) -> None:
    records = valid_records()
    records[2].reference = reference
    expect_request_error(records, "records[2].reference", "32 lowercase hex")


def test_duplicate_reference() -> None:
    records = valid_records()
    records[2].reference = records[0].reference
    expect_request_error(records, "records[2].reference", "repeats records[0]")


def test_fingerprint_mismatch_is_incompatible() -> None:
    with pytest.raises(IncompatibleEncodingError):
        proto_to_encoded(valid_records(), SCHEMA, fingerprint="sha256:" + "0" * 64, key_version=1)


def test_empty_input_gives_empty_batch() -> None:
    batch, refs = proto_to_encoded([], SCHEMA, fingerprint=FINGERPRINT, key_version=3)
    assert refs == [] and len(batch) == 0 and batch.key_version == 3
    assert batch.field_filters[0].shape == (0, SCHEMA.fields[0].filter_words)


def random_batch(
    schema_name: str, rows: int, seed: int, *, stray_bits: bool = False
) -> EncodedBatch:
    """Random arrays shaped like ``schema_name``'s encodings; missing rows zero unless
    ``stray_bits`` (a sender bug the converters must not carry over)."""
    schema = load_schema(schema_name)
    rng = np.random.default_rng(seed)
    present = rng.random((rows, len(schema.fields))) < 0.7
    filters = tuple(
        np.where(
            present[:, [f]] | stray_bits,
            rng.integers(0, 2**64, size=(rows, spec.filter_words), dtype=np.uint64),
            np.uint64(0),
        ).astype(np.uint64)
        for f, spec in enumerate(schema.fields)
    )
    return EncodedBatch(
        schema_fingerprint=schema.fingerprint(),
        key_version=1,
        field_names=schema.field_names,
        field_filters=filters,
        field_present=present,
        record_filters=rng.integers(
            0, 2**64, size=(rows, schema.record_filter_words), dtype=np.uint64
        ),
        block_keys=rng.integers(0, 2**64, size=(rows, len(schema.blocking)), dtype=np.uint64),
        salt_tags=rng.integers(0, 2**64, size=(rows, len(schema.salt_sources)), dtype=np.uint64),
    )


def zero_missing(batch: EncodedBatch) -> EncodedBatch:
    """``batch`` with the filters of missing values zeroed (what both wire forms carry)."""
    filters = tuple(
        np.where(batch.field_present[:, [f]], words, np.uint64(0)).astype(np.uint64)
        for f, words in enumerate(batch.field_filters)
    )
    return EncodedBatch(
        schema_fingerprint=batch.schema_fingerprint,
        key_version=batch.key_version,
        field_names=batch.field_names,
        field_filters=filters,
        field_present=batch.field_present,
        record_filters=batch.record_filters,
        block_keys=batch.block_keys,
        salt_tags=batch.salt_tags,
    )


@settings(deadline=None, max_examples=40)
@given(st.integers(min_value=0, max_value=6), st.integers(min_value=0, max_value=2**32))
@pytest.mark.parametrize("schema_name", ["febrl", "child"])  # unsalted; names salted
def test_round_trip_of_random_arrays(schema_name: str, rows: int, seed: int) -> None:
    schema = load_schema(schema_name)
    batch = random_batch(schema_name, rows, seed)
    refs = [f"{i:032x}" for i in range(rows)]
    back, got_refs = proto_to_encoded(
        encoded_to_proto(batch, refs), schema, fingerprint=schema.fingerprint(), key_version=1
    )
    assert got_refs == refs
    assert_same(batch, back)


# ---------------------------------------------------------------------------- columns


def wire_columns(batch: EncodedBatch, refs: list[str]) -> jigsaw_pb2.EncodedColumns:
    """``encoded_to_columns`` through serialisation, as the matcher receives it."""
    data = encoded_to_columns(batch, refs).SerializeToString()
    return jigsaw_pb2.EncodedColumns.FromString(data)


@settings(deadline=None, max_examples=40)
@given(
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=0, max_value=2**32),
    st.booleans(),
)
@pytest.mark.parametrize("schema_name", ["febrl", "child"])  # unsalted; names salted
def test_columns_round_trip_equals_the_record_form(
    schema_name: str, rows: int, seed: int, stray_bits: bool
) -> None:
    schema = load_schema(schema_name)
    batch = random_batch(schema_name, rows, seed, stray_bits=stray_bits)
    rng = np.random.default_rng(seed)
    refs = [f"{int(value):032x}" for value in rng.choice(2**62, size=rows, replace=False)]
    back, got_refs = columns_to_encoded(
        wire_columns(batch, refs), schema, fingerprint=schema.fingerprint(), key_version=1
    )
    assert got_refs == refs
    assert_same(zero_missing(batch), back)
    # the reference implementation: the record form gives the same batch
    via_records, record_refs = proto_to_encoded(
        encoded_to_proto(batch, refs), schema, fingerprint=schema.fingerprint(), key_version=1
    )
    assert record_refs == refs
    assert_same(via_records, back)


def test_columns_round_trip_of_real_encodings_and_byte_layout() -> None:
    batch = sample_batch()
    columns = wire_columns(batch, REFS)
    back, refs = columns_to_encoded(columns, SCHEMA, fingerprint=FINGERPRINT, key_version=1)
    assert refs == REFS == list(columns.references)
    assert_same(batch, back)
    records = encoded_to_proto(batch, REFS)
    n_fields = len(SCHEMA.fields)
    for f, spec in enumerate(SCHEMA.fields):
        width = spec.published_words * 8
        assert len(columns.field_filters[f]) == 3 * width
        # row r of a column is the record form's bytes, or zeros where the value is missing
        expected = b"".join(record.field_filters[f] or bytes(width) for record in records)
        assert columns.field_filters[f] == expected
    assert columns.record_filters == b"".join(record.record_filter for record in records)
    # presence: bit r * F + f, LSB first
    assert len(columns.field_present) == (3 * n_fields + 7) // 8
    for row in range(3):
        for f in range(n_fields):
            bit = row * n_fields + f
            is_set = bool(columns.field_present[bit // 8] >> (bit % 8) & 1)
            assert is_set == bool(records[row].field_filters[f]) == batch.field_present[row, f]
    assert not batch.field_present.all()  # the sample has missing values to check
    assert len(columns.block_keys) == 3 * len(SCHEMA.blocking) * 8
    keys = [
        int.from_bytes(columns.block_keys[i : i + 8], "little")
        for i in range(0, len(columns.block_keys), 8)
    ]
    assert keys == [key for record in records for key in record.block_keys]
    assert columns.salt_tags == b"".join(
        int(tag).to_bytes(8, "little") for record in records for tag in record.salt_tags
    )


def test_columns_reference_count_must_match_rows() -> None:
    with pytest.raises(FilterFormatError, match="references: expected 3"):
        encoded_to_columns(sample_batch(), REFS[:2])


def test_empty_columns_give_an_empty_batch() -> None:
    batch, refs = columns_to_encoded(
        encoded_to_columns(sample_batch().take([]), []),
        SCHEMA,
        fingerprint=FINGERPRINT,
        key_version=2,
    )
    assert refs == [] and len(batch) == 0 and batch.key_version == 2
    assert batch.field_filters[1].shape == (0, SCHEMA.fields[1].published_words)


def test_columns_fingerprint_mismatch_is_incompatible() -> None:
    with pytest.raises(IncompatibleEncodingError):
        columns_to_encoded(
            encoded_to_columns(sample_batch(), REFS),
            SCHEMA,
            fingerprint="sha256:" + "0" * 64,
            key_version=1,
        )


def _set_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] |= 1 << (bit % 8)
    return bytes(out)


def _clear_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] &= ~(1 << (bit % 8)) & 0xFF
    return bytes(out)


Mutation = Callable[[jigsaw_pb2.EncodedColumns], None]
F = len(SCHEMA.fields)
RULES = len(SCHEMA.blocking)
SALTS = len(SCHEMA.salt_sources)
# published fields in wire order: given_name's three views first, so given_name@year_month
# of row 2 is missing in sample_batch (bit 2 * F + 0) and given_name@day_month of row 1 present
MISSING_BIT = 2 * F
PRESENT_BIT = 1 * F + 2
DOB = SCHEMA.field_names.index("date_of_birth")  # a 128-bit filter among 256-bit names


def bitmap_bytes(rows: int) -> int:
    """Bytes of the presence bitmap of ``rows`` rows: one bit per (row, published field)."""
    return -(-rows * F // 8)


MALFORMED_COLUMNS: list[tuple[str, Mutation, str, str]] = [
    (
        "bad reference",
        lambda c: c.references.__setitem__(1, "Zebulonqx" + "0" * 23),
        "columns.references[1]",
        "32 lowercase hex",
    ),
    (
        "reference with a trailing newline",
        lambda c: c.references.__setitem__(2, "0" * 32 + "\n"),
        "columns.references[2]",
        "32 lowercase hex",
    ),
    (
        "short reference",
        lambda c: c.references.__setitem__(0, "0" * 31),
        "columns.references[0]",
        "32 lowercase hex",
    ),
    (
        "repeated reference",
        lambda c: c.references.__setitem__(2, REFS[0]),
        "columns.references[2]",
        "must be unique; repeats columns.references[0]",
    ),
    (
        "one field column too few",
        lambda c: c.field_filters.__delitem__(-1),
        "columns.field_filters",
        f"expected {F} columns (one per schema field), got {F - 1}",
    ),
    (
        "one field column too many",
        lambda c: c.field_filters.append(b""),
        "columns.field_filters",
        f"expected {F} columns",
    ),
    (
        "field column a byte short",
        lambda c: c.field_filters.__setitem__(2, c.field_filters[2][:-1]),
        "columns.field_filters[2]",
        "expected 96 bytes (3 rows x 32 bytes of filter), got 95 bytes",
    ),
    (
        "field column a row long",
        lambda c: c.field_filters.__setitem__(DOB, c.field_filters[DOB] * 2),
        f"columns.field_filters[{DOB}]",
        "expected 48 bytes (3 rows x 16 bytes of filter), got 96 bytes",
    ),
    (
        "bits in a missing value's filter",
        lambda c: c.field_filters.__setitem__(0, _set_bit(c.field_filters[0], 2 * 256 + 5)),
        "columns.field_filters[0]",
        "row 2 is absent in columns.field_present, so its 32 filter bytes must all be zero",
    ),
    (
        "present value marked absent",
        lambda c: setattr(c, "field_present", _clear_bit(c.field_present, PRESENT_BIT)),
        "columns.field_filters[2]",
        "row 1 is absent",
    ),
    (
        "presence bitmap a byte short",
        lambda c: setattr(c, "field_present", c.field_present[:-1]),
        "columns.field_present",
        f"expected {bitmap_bytes(3)} bytes (3 rows x {F} fields, 1 bit each), "
        f"got {bitmap_bytes(3) - 1} bytes",
    ),
    (
        "presence padding bit set",
        lambda c: setattr(c, "field_present", _set_bit(c.field_present, 3 * F)),
        "columns.field_present",
        f"the {8 * bitmap_bytes(3) - 3 * F} padding bits must be zero",
    ),
    (
        "record filters a byte long",
        lambda c: setattr(c, "record_filters", c.record_filters + b"\x00"),
        "columns.record_filters",
        "expected 384 bytes (3 rows x 128 bytes of record filter), got 385 bytes",
    ),
    (
        "block keys a key short",
        lambda c: setattr(c, "block_keys", c.block_keys[:-8]),
        "columns.block_keys",
        f"expected {3 * RULES * 8} bytes (3 rows x {RULES} keys of 8 bytes (one per schema "
        f"blocking rule)), got {3 * RULES * 8 - 8} bytes",
    ),
    (
        "salt tags missing",
        lambda c: setattr(c, "salt_tags", b""),
        "columns.salt_tags",
        f"expected {3 * SALTS * 8} bytes (3 rows x {SALTS} tags of 8 bytes",
    ),
    (
        "one reference too few for the columns",
        lambda c: c.references.__delitem__(-1),
        "columns.field_present",
        f"expected {bitmap_bytes(2)} bytes (2 rows x {F} fields",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field", "text"),
    [pytest.param(m, field, text, id=name) for name, m, field, text in MALFORMED_COLUMNS],
)
def test_malformed_columns_are_refused_naming_the_field(
    mutate: Mutation, field: str, text: str
) -> None:
    assert 3 * F % 8 and MISSING_BIT < 3 * F  # the padding and missing-row cases are real
    batch = sample_batch()
    assert not batch.field_present[2, 0] and batch.field_present[1, 2]
    columns = wire_columns(batch, REFS)
    mutate(columns)
    with pytest.raises(RequestError) as info:
        columns_to_encoded(columns, SCHEMA, fingerprint=FINGERPRINT, key_version=1)
    assert info.value.field == field
    assert text in str(info.value)
    assert "Zebulonqx" not in str(info.value)  # values are never echoed


def test_unsalted_schema_refuses_salt_tags() -> None:
    schema = load_schema("febrl")
    columns = wire_columns(random_batch("febrl", 2, 7), [f"{i:032x}" for i in range(2)])
    assert columns.salt_tags == b""
    columns.salt_tags = bytes(16)
    with pytest.raises(RequestError) as info:
        columns_to_encoded(columns, schema, fingerprint=schema.fingerprint(), key_version=1)
    assert info.value.field == "columns.salt_tags"
    assert "expected 0 bytes (2 rows x 0 tags" in str(info.value)


def test_field_prefix_names_the_columns() -> None:
    columns = wire_columns(sample_batch(), REFS)
    columns.record_filters = b""
    with pytest.raises(RequestError) as info:
        columns_to_encoded(
            columns, SCHEMA, fingerprint=FINGERPRINT, key_version=1, field_prefix="batch"
        )
    assert info.value.field == "batch.record_filters"


def test_request_references_reads_the_columns() -> None:
    batch = sample_batch()
    as_columns = jigsaw_pb2.PublishRequest(columns=encoded_to_columns(batch, REFS))
    assert request_references(as_columns) == REFS
    assert request_references(jigsaw_pb2.PublishRequest()) == []


@pytest.mark.parametrize(
    ("probability", "band"),
    [
        (1.0, jigsaw_pb2.PROBABILITY_BAND_VERY_HIGH),
        (0.99, jigsaw_pb2.PROBABILITY_BAND_VERY_HIGH),
        (0.9899, jigsaw_pb2.PROBABILITY_BAND_HIGH),
        (0.90, jigsaw_pb2.PROBABILITY_BAND_HIGH),
        (0.8999, jigsaw_pb2.PROBABILITY_BAND_POSSIBLE),
        (0.5, jigsaw_pb2.PROBABILITY_BAND_POSSIBLE),
        (0.4999, jigsaw_pb2.PROBABILITY_BAND_LOW),
        (0.0, jigsaw_pb2.PROBABILITY_BAND_LOW),
        (float("nan"), jigsaw_pb2.PROBABILITY_BAND_LOW),
    ],
)
def test_band_for(probability: float, band: int) -> None:
    assert band_for(probability) == band


@pytest.mark.parametrize(
    ("label", "agreement", "canonical"),
    [
        ("exact", jigsaw_pb2.AGREEMENT_EXACT, "exact"),
        ("strong", jigsaw_pb2.AGREEMENT_STRONG, "strong"),
        ("moderate", jigsaw_pb2.AGREEMENT_WEAK, "weak"),
        ("weak", jigsaw_pb2.AGREEMENT_WEAK, "weak"),
        ("similar_3", jigsaw_pb2.AGREEMENT_WEAK, "weak"),
        ("disagrees", jigsaw_pb2.AGREEMENT_DISAGREES, "disagrees"),
        ("missing", jigsaw_pb2.AGREEMENT_MISSING, "missing"),
        ("not_compared", jigsaw_pb2.AGREEMENT_NOT_COMPARED, "not_compared"),
        ("bogus", jigsaw_pb2.AGREEMENT_UNSPECIFIED, "unspecified"),
    ],
)
def test_agreement_labels(label: str, agreement: int, canonical: str) -> None:
    assert agreement_for(label) == agreement
    assert label_for(agreement) == canonical
    if canonical != "unspecified":
        assert agreement_for(label_for(agreement)) == agreement


# ------------------------------------------------------------------------------ forms

FORM_OF = ["", f"{0xF0:032x}", f"{0xF0:032x}"]  # rows 2 and 3 are forms of one record


def test_form_of_round_trips() -> None:
    batch = sample_batch()
    data = encoded_to_columns(batch, REFS, FORM_OF).SerializeToString()
    columns = jigsaw_pb2.EncodedColumns.FromString(data)
    back, refs = columns_to_encoded(columns, SCHEMA, fingerprint=FINGERPRINT, key_version=1)
    assert columns_form_of(columns, refs) == FORM_OF
    assert_same(batch, back)
    request = jigsaw_pb2.PublishRequest(columns=columns)
    assert request_form_of(request) == FORM_OF


def test_form_of_absent_or_all_empty_means_records_themselves() -> None:
    batch = sample_batch()
    for form_of in (None, ["", "", ""]):
        columns = encoded_to_columns(batch, REFS, form_of)
        assert list(columns.form_of) == []  # nothing written
        assert columns_form_of(columns, REFS) == ["", "", ""]
        assert request_form_of(jigsaw_pb2.PublishRequest(columns=columns)) == ["", "", ""]
    with pytest.raises(FilterFormatError, match="form_of: expected 3"):
        encoded_to_columns(batch, REFS, FORM_OF[:2])


@pytest.mark.parametrize(
    ("row", "value", "expectation"),
    [
        (1, "F" * 32, "32 lowercase hex"),
        (1, "0" * 31, "32 lowercase hex"),
        (2, REFS[2], "must not be the row's own reference"),
        (2, REFS[0], "names {refs}[0]"),
    ],
)
def test_form_of_validation_names_the_row(row: int, value: str, expectation: str) -> None:
    forms = list(FORM_OF)
    forms[row] = value
    columns = encoded_to_columns(sample_batch(), REFS)
    columns.form_of.extend(forms)
    with pytest.raises(RequestError) as caught:
        columns_form_of(columns, REFS)
    assert caught.value.field == f"columns.form_of[{row}]"
    assert expectation.format(refs="columns.references") in str(caught.value)
    assert value not in str(caught.value)  # references are not echoed either


def test_form_of_column_of_the_wrong_length() -> None:
    columns = encoded_to_columns(sample_batch(), REFS)
    columns.form_of.extend(["", ""])
    with pytest.raises(RequestError) as caught:
        columns_form_of(columns, REFS)
    assert caught.value.field == "columns.form_of"
    assert "expected no entries (every row a record itself) or 3 (one per row), got 2" in str(
        caught.value
    )
