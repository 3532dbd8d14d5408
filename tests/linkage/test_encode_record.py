"""The one-record encoder (lookup fast path) gives exactly the one-row batch encoding.

``linkage.encode.encode_record`` is the fast path; ``encode_records`` of a one-row batch is its
plain counterpart. Every published array (field filters, presence, record filter, block keys,
salt tags) must be bit for bit the same, with the same dtype and shape, and the same value
problems, on salted and diffusion-hardened (shipped), plain, balanced/folded/BLIP-hardened and
FEBRL schemas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.encode import EncodedBatch, encode_record, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Hardening, Schema, load_schema
from tests.helpers.schemas import DATE_SALTED

KEYS = KeySet(LinkageSecret.for_tests(), key_version=1)  # the published test key
SHIPPED = load_schema("child")  # salted; combined fields in views; diffusion everywhere
PLAIN = SHIPPED.with_salt("").with_hardening(Hardening(), Hardening())
# Every transform the harden module offers, per field and on the record filter.
MIXED = SHIPPED.with_hardening(
    Hardening(balance=True, diffusion_t=3, blip_epsilon=8.0),
    {
        "given_name": Hardening(balance=True, xor_fold=True),
        "family_name": Hardening(diffusion_t=3),
        "date_of_birth": Hardening(blip_epsilon=4.0),
        "postcode": Hardening(balance=True),
        "nhs_number": Hardening(balance=True, xor_fold=True, blip_epsilon=6.0, diffusion_t=5),
    },
)
FEBRL = load_schema("febrl")  # text and exact fields, other blocking transforms
# input fields in views (the view machinery on fields a node reads itself)
NAME_VIEWS = DATE_SALTED.with_salt(
    ["date_of_birth.year_month", "date_of_birth.year_day", "date_of_birth.day_month"],
    ["given_name", "family_name"],
)
SCHEMAS = {
    "shipped": SHIPPED,
    "plain": PLAIN,
    "mixed": MIXED,
    "febrl": FEBRL,
    "name_views": NAME_VIEWS,
}
CANARY = "Zebedee-Quaxworth-1931"  # must never appear in a problem

# Values that exercise every normaliser on every field: missing markers, non-ASCII names,
# particles and titles, valid, impossible and unparseable dates, postcodes, NHS numbers (valid
# and failing the check digit), sex codes, addresses, and values that are wrong for the kind.
POOL = [
    None,
    "",
    "   ",
    "N/A",
    "unknown",
    "José",
    "Müller",
    "Nguyễn Văn",
    "O'Brien",
    "van der Berg",
    "Dr Mary-Ann Smith",
    "李小龙",
    "ß",
    "\u00a0",
    "02/03/2014",
    "2014-03-02",
    "03/02/2014",
    "31/02/2014",
    "13/13/2013",
    "1850-01-01",
    "3/2/14",
    "SW1A 1AA",
    "sw1a1aa",
    "M1 1AE",
    "XYZ",
    "943 476 5919",
    "9434765919",
    "1234567890",
    "F",
    "m",
    "male",
    "x",
    "12",
    "Flat 3, 12 High St",
    "NSW",
    CANARY,
]
_ABSENT = object()  # the field has no key in the values mapping


def raw_values(schema: Schema) -> st.SearchStrategy[dict[str, str | None]]:
    """A record for ``schema``: per input field a pool value, random text, or no key at all,
    plus a key that names no field and the name of a view (both ignored by both paths: values
    are keyed by input names)."""
    value = st.one_of(st.just(_ABSENT), st.sampled_from(POOL), st.text(max_size=14))
    fields: dict[str, st.SearchStrategy[Any]] = {name: value for name in schema.input_names}
    fields["not_a_field"] = st.sampled_from(POOL)
    views = [spec.name for spec in schema.fields if spec.view_of]
    if views:
        fields[views[0]] = st.sampled_from(POOL)
    return st.fixed_dictionaries(fields).map(
        lambda record: {name: v for name, v in record.items() if v is not _ABSENT}
    )


def one_row_batch(schema: Schema, values: dict[str, Any]) -> EncodedBatch:
    return encode_records(schema, KEYS, {f: [values.get(f)] for f in schema.input_names})


def assert_same(single: EncodedBatch, batch: EncodedBatch) -> None:
    assert len(single) == len(batch) == 1
    assert single.schema_fingerprint == batch.schema_fingerprint
    assert single.key_version == batch.key_version
    assert single.field_names == batch.field_names
    pairs = [
        *zip(single.field_filters, batch.field_filters, strict=True),
        (single.field_present, batch.field_present),
        (single.record_filters, batch.record_filters),
        (single.block_keys, batch.block_keys),
        (single.salt_tags, batch.salt_tags),
    ]
    for got, want in pairs:
        assert got.dtype == want.dtype
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert single.problems == batch.problems


def test_the_shipped_schemas_under_test_publish_views() -> None:
    # the equality below covers views (one value, several salted filters) only if they exist
    # (of combined fields in the shipped schema, of input fields in NAME_VIEWS)
    for schema in (SHIPPED, MIXED):
        assert len(schema.fields) > len(schema.comparison_names) > len(schema.input_names)
        assert {spec.view_of for spec in schema.fields if spec.view_of} == {"full_name"}
    assert {spec.view_of for spec in NAME_VIEWS.fields if spec.view_of} == {
        "given_name",
        "family_name",
    }
    # no salt, no views; the combined fields published once each
    assert PLAIN.field_names == PLAIN.comparison_names
    assert PLAIN.field_names[len(PLAIN.input_names) :] == ("full_name",)


@pytest.mark.parametrize("schema_name", list(SCHEMAS))
@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_encode_record_equals_one_row_batch(schema_name: str, data: st.DataObject) -> None:
    schema = SCHEMAS[schema_name]
    values = data.draw(raw_values(schema), label="values")
    assert_same(encode_record(schema, KEYS, values), one_row_batch(schema, values))


@pytest.mark.parametrize("schema_name", list(SCHEMAS))
def test_full_and_empty_records_equal_the_batch(schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    full = {
        "given_name": "José",
        "middle_names": "Mary Ann",
        "family_name": "O'Brien",
        "surname": "Nguyễn",
        "date_of_birth": "02/03/2014",
        "sex": "F",
        "postcode": "SW1A 1AA",
        "nhs_number": "943 476 5919",
        "street_number": "12",
        "address_1": "High Street",
        "suburb": "Camden",
        "state": "NSW",
        "soc_sec_id": "1234567",
    }
    encoded = encode_record(schema, KEYS, full)
    assert_same(encoded, one_row_batch(schema, full))
    # a combined field is present where any field it combines is
    assert encoded.field_present[0].tolist() == [
        spec.input_name in full or any(name in full for name in spec.combines)
        for spec in schema.fields
    ]
    assert (encoded.block_keys != 0).any()
    empty = encode_record(schema, KEYS, {})
    assert_same(empty, one_row_batch(schema, {}))
    assert not empty.field_present.any() and not empty.record_filters.any()


def test_failing_values_give_the_batch_problems_without_the_value() -> None:
    values = {
        "given_name": "Amy",
        "date_of_birth": CANARY,
        "postcode": CANARY,
        "nhs_number": CANARY,
        "sex": CANARY,
    }
    single = encode_record(SHIPPED, KEYS, values)
    assert_same(single, one_row_batch(SHIPPED, values))
    assert [p.field for p in single.problems] == ["date_of_birth", "sex", "postcode", "nhs_number"]
    assert all(p.row == 0 for p in single.problems)
    text = repr(single.problems) + "".join(p.reason for p in single.problems)
    for fragment in (CANARY, "Zebedee", "Quaxworth", "1931"):
        assert fragment not in text
    # a failing value is encoded as missing: no bits, no salt tag from an invalid date or sex;
    # only the given name and the views of the full name (its value the given name alone) are
    # present; the postcode's combined field reports no problem of its own and is missing
    assert single.field_present[0].tolist() == [
        spec.input_name in ("given_name", "full_name") for spec in SHIPPED.fields
    ]
    assert not single.salt_tags.any()
