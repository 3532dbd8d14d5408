"""Tests of proto <-> domain conversion (server.convert): round trips, byte layout, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.encode import EncodedBatch, encode_records
from linkage.errors import FilterFormatError, IncompatibleEncodingError
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import load_schema
from proto.jigsaw.v1 import jigsaw_pb2
from server.convert import (
    agreement_for,
    band_for,
    encoded_to_proto,
    label_for,
    proto_to_encoded,
)
from server.status import RequestError

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


@settings(deadline=None, max_examples=40)
@given(st.integers(min_value=0, max_value=6), st.integers(min_value=0, max_value=2**32))
@pytest.mark.parametrize("schema_name", ["febrl", "child"])  # unsalted; names salted
def test_round_trip_of_random_arrays(schema_name: str, rows: int, seed: int) -> None:
    schema = load_schema(schema_name)
    rng = np.random.default_rng(seed)
    present = rng.random((rows, len(schema.fields))) < 0.7
    filters = tuple(
        np.where(
            present[:, [f]],
            rng.integers(0, 2**64, size=(rows, spec.filter_words), dtype=np.uint64),
            np.uint64(0),
        ).astype(np.uint64)
        for f, spec in enumerate(schema.fields)
    )
    batch = EncodedBatch(
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
    refs = [f"{i:032x}" for i in range(rows)]
    back, got_refs = proto_to_encoded(
        encoded_to_proto(batch, refs), schema, fingerprint=schema.fingerprint(), key_version=1
    )
    assert got_refs == refs
    assert_same(batch, back)


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
        ("bogus", jigsaw_pb2.AGREEMENT_UNSPECIFIED, "unspecified"),
    ],
)
def test_agreement_labels(label: str, agreement: int, canonical: str) -> None:
    assert agreement_for(label) == agreement
    assert label_for(agreement) == canonical
    if canonical != "unspecified":
        assert agreement_for(label_for(agreement)) == agreement
