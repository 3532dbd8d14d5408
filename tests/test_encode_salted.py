"""Tests for salting and salt tags: the shipped child schema's golden bytes, the documented
salted-token and salt-tag constructions, keys, missing salts, and how a salted field is
compared (only where the salt tags agree) in batch linkage.

The golden file (tests/golden/shipped_filters.json) is made by tests/golden/make_vectors.py
under the published test key and changes only deliberately (see tests/golden/README.md).
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import pipeline, scoring
from linkage.compare import salt_comparable
from linkage.encode import (
    EncodedBatch,
    encode_records,
    token_positions,
    tokenise,
)
from linkage.errors import FilterFormatError, SchemaError
from linkage.keys import TEST_SECRET_HEX, KeySet, LinkageSecret, derive_key
from linkage.schema import Hardening, load_schema

GOLDEN = Path(__file__).parent / "golden"
SHIPPED: dict[str, Any] = json.loads((GOLDEN / "shipped_filters.json").read_text("utf-8"))
CHILD = load_schema("child")
SALT = "date_of_birth.value"
SEX_SALT = "sex.value"
NAMES = ("given_name", "middle_names", "family_name")
#: fields salted with the date of birth (the date of birth itself is salted with sex)
DOB_SALTED = (*NAMES, "postcode")


def published_keys(key_version: int = 1) -> KeySet:
    return KeySet(LinkageSecret.for_tests(), key_version=key_version)


def hex_of(words: np.ndarray[Any, Any]) -> str:
    return bytes(words.astype("<u8").tobytes()).hex()


def columns_of(records: list[dict[str, str | None]]) -> dict[str, list[str | None]]:
    return {f: [r.get(f) for r in records] for f in CHILD.field_names}


def child(**values: str | None) -> dict[str, str | None]:
    base: dict[str, str | None] = {
        "given_name": "Olivia",
        "middle_names": "Rose",
        "family_name": "Okafor",
        "date_of_birth": "14/03/2015",
        "sex": "F",
        "postcode": "LS6 2AB",
        "nhs_number": None,
    }
    return base | values


@pytest.fixture(scope="module")
def golden_batch() -> EncodedBatch:
    records = [row["record"] for row in SHIPPED["rows"]]
    return encode_records(CHILD, published_keys(), columns_of(records))


# ----------------------------------------------------------------------------- golden vectors


def test_shipped_schema_salts_names_and_postcode_with_the_date_and_the_date_with_sex() -> None:
    assert CHILD.salt_sources == (SALT, SEX_SALT)
    assert {f.name for f in CHILD.fields if f.salt == SALT} == set(DOB_SALTED)
    assert {f.name for f in CHILD.fields if f.salt == SEX_SALT} == {"date_of_birth"}
    assert SHIPPED["schema_fingerprint"] == CHILD.fingerprint()
    assert SHIPPED["salt_sources"] == [SALT, SEX_SALT]
    assert SHIPPED["secret_hex"] == TEST_SECRET_HEX


@pytest.mark.parametrize(
    "expected", SHIPPED["rows"], ids=[f"row{r['row']}" for r in SHIPPED["rows"]]
)
def test_shipped_filters_golden(golden_batch: EncodedBatch, expected: dict[str, Any]) -> None:
    index = expected["row"]
    for f, name in enumerate(CHILD.field_names):
        assert hex_of(golden_batch.field_filters[f][index]) == expected["field_filters"][name], name
        assert bool(golden_batch.field_present[index, f]) == expected["present"][name], name
    assert hex_of(golden_batch.record_filters[index]) == expected["record_filter"]
    assert {
        source: f"{int(golden_batch.salt_tags[index, s]):016x}"
        for s, source in enumerate(CHILD.salt_sources)
    } == expected["salt_tags"]


# ----------------------------------------------------------------------------- constructions


def documented_tag(keys: KeySet, source: str, message: str) -> int:
    """The salt tag as the encode module docstring specifies it, computed independently."""
    key = derive_key(keys.secret, purpose="salt", subject=source, key_version=keys.key_version)
    return int.from_bytes(hmac.digest(key, message.encode("utf-8"), "sha256")[:8], "little") or 1


def test_salt_tag_of_a_value_source_is_the_hmac_of_the_published_filter() -> None:
    keys = published_keys()
    records = [child(), child(date_of_birth="02/11/2009"), child(date_of_birth=None)]
    batch = encode_records(CHILD, keys, columns_of(records))
    assert batch.salt_tags.shape == (3, 2) and batch.salt_tags.dtype == np.uint64
    for s, source in enumerate(CHILD.salt_sources):
        column = batch.field_filters[CHILD.field_names.index(source.split(".")[0])]
        for row in (0, 1):
            assert int(batch.salt_tags[row, s]) == documented_tag(keys, source, hex_of(column[row]))
    assert int(batch.salt_tags[2, 0]) == 0  # no date of birth: no tag
    assert batch.salt_tags[0, 1] == batch.salt_tags[1, 1]  # the same sex (and no salt on it)


def test_salt_tag_of_another_transform_is_the_hmac_of_the_value() -> None:
    keys = published_keys()
    schema = CHILD.with_salt("").with_salt("date_of_birth.year", NAMES)
    records = [child(), child(date_of_birth="02/11/2015"), child(date_of_birth=None)]
    batch = encode_records(schema, keys, columns_of(records))
    source = "date_of_birth.year"
    assert int(batch.salt_tags[0, 0]) == documented_tag(keys, source, "2015")
    assert batch.salt_tags[0, 0] == batch.salt_tags[1, 0]
    assert int(batch.salt_tags[2, 0]) == 0


def test_a_tag_groups_records_exactly_as_the_salt_fields_filter_does() -> None:
    records = [
        child(),
        child(given_name="Amara"),  # same date and sex: same date filter, same tag
        child(sex="M"),  # same date, other sex: the date filter (salted with sex) differs
        child(date_of_birth="15/03/2015"),
    ]
    batch = encode_records(CHILD, published_keys(), columns_of(records))
    dob = batch.field_filters[CHILD.field_names.index("date_of_birth")]
    for i in range(4):
        for j in range(4):
            same_filter = bool(np.array_equal(dob[i], dob[j]))
            assert (batch.salt_tags[i, 0] == batch.salt_tags[j, 0]) == same_filter, (i, j)


def test_salted_field_filter_is_the_union_of_salted_token_positions() -> None:
    keys = published_keys()
    plain_hardening = CHILD.with_hardening(Hardening(), Hardening())  # salts kept
    records = [child(), child(date_of_birth=None)]
    batch = encode_records(plain_hardening, keys, columns_of(records))
    spec = plain_hardening.field("given_name")
    for row, prefix in ((0, "2015-03-14|"), (1, "~|")):
        tokens = [prefix + t for t in tokenise(spec, "olivia")]
        positions = token_positions(
            keys.key("filter", spec.name), tokens, spec.hashes_per_token, spec.filter_bits
        )
        expected = np.zeros(spec.filter_words, dtype=np.uint64)
        for p in positions.ravel().tolist():
            expected[p // 64] |= np.uint64(1) << np.uint64(p % 64)
        np.testing.assert_array_equal(batch.field_filters[0][row], expected)


def test_tags_depend_on_the_key_and_are_deterministic() -> None:
    columns = columns_of([child(), child(given_name="Amara")])
    first = encode_records(CHILD, published_keys(), columns)
    again = encode_records(CHILD, published_keys(), columns)
    other_version = encode_records(CHILD, published_keys(key_version=2), columns)
    other_secret = encode_records(CHILD, KeySet(LinkageSecret(bytes(range(32)))), columns)
    np.testing.assert_array_equal(first.salt_tags, again.salt_tags)
    assert (first.salt_tags[0] == first.salt_tags[1]).all()  # same date of birth, other name
    assert not np.array_equal(first.salt_tags, other_version.salt_tags)
    assert not np.array_equal(first.salt_tags, other_secret.salt_tags)


def test_same_name_salted_differently_shares_no_filter() -> None:
    batch = encode_records(
        CHILD, published_keys(), columns_of([child(), child(date_of_birth="14/04/2015")])
    )
    given = CHILD.field_names.index("given_name")
    assert not np.array_equal(batch.field_filters[given][0], batch.field_filters[given][1])


def test_unsalted_schema_has_no_tag_columns() -> None:
    unsalted = CHILD.with_salt("")
    assert unsalted.salt_sources == ()
    batch = encode_records(unsalted, published_keys(), columns_of([child()]))
    assert batch.salt_tags.shape == (1, 0)
    assert unsalted.fingerprint() != CHILD.fingerprint()


def test_with_salt_validates_like_a_parsed_file() -> None:
    with pytest.raises(SchemaError, match="salt"):
        CHILD.with_salt("postcode.year_month", ["given_name"])
    with pytest.raises(SchemaError, match="blocking parts"):
        CHILD.with_salt("sex.filter", ["given_name"])
    resalted = (
        CHILD.with_salt("").with_salt(SALT, DOB_SALTED).with_salt(SEX_SALT, ["date_of_birth"])
    )
    assert resalted.fingerprint() == CHILD.fingerprint()


# ----------------------------------------------------------------------------- comparison


def test_salted_name_is_missing_not_disagreeing_when_the_salts_differ() -> None:
    records = [
        child(),
        child(),  # same child, same salt
        child(date_of_birth="14/03/2016"),  # same child, a typo in the birth year
        child(given_name="Zainab", family_name="Walsh"),  # other child, same salt
    ]
    batch = encode_records(CHILD, published_keys(), columns_of(records))
    left = np.zeros(3, dtype=np.int64)
    right = np.array([1, 2, 3], dtype=np.int64)
    levels = pipeline.compare_pairs(CHILD, batch, batch, left, right)
    names = [CHILD.field_names.index(n) for n in NAMES]
    top = [len(CHILD.field(n).levels) for n in NAMES]
    assert levels[0, names].tolist() == top  # identical: every name at its top level
    assert (levels[1, names] == scoring.MISSING_LEVEL).all()
    given, family = names[0], names[2]
    assert levels[2, given] == 0 and levels[2, family] == 0  # compared, and disagree
    sex = CHILD.field_names.index("sex")
    assert levels[1, sex] != scoring.MISSING_LEVEL  # unsalted fields are still compared
    dob = CHILD.field_names.index("date_of_birth")
    assert levels[1, dob] != scoring.MISSING_LEVEL  # the date is salted with sex, which agrees


@settings(deadline=None, max_examples=50)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=20),
    st.lists(st.integers(0, 3), min_size=1, max_size=20),
)
def test_salt_comparable_is_tag_equality_on_salted_fields_only(
    left: list[int], right: list[int]
) -> None:
    n = min(len(left), len(right))
    # two tag columns (one per salt source): the second is the first shifted, so they differ
    a = np.array(left[:n], dtype=np.uint64).reshape(n, 1)
    b = np.array(right[:n], dtype=np.uint64).reshape(n, 1)
    a2 = np.concatenate([a, (a + np.uint64(1)) % np.uint64(3)], axis=1)
    b2 = np.concatenate([b, b % np.uint64(2)], axis=1)
    out = salt_comparable(CHILD, a2, b2)
    assert out.shape == (n, len(CHILD.fields))
    for f, spec in enumerate(CHILD.fields):
        if spec.salt:
            s = CHILD.salt_sources.index(spec.salt)
            expected = a2[:, s] == b2[:, s]
        else:
            expected = np.ones(n, dtype=bool)
        np.testing.assert_array_equal(out[:, f], expected)


def test_linkage_refuses_salt_tags_of_the_wrong_shape() -> None:
    batch = encode_records(CHILD, published_keys(), columns_of([child(), child()]))
    wrong = EncodedBatch(**{**batch.__dict__, "salt_tags": np.zeros((2, 1), dtype=np.uint64)})
    with pytest.raises(FilterFormatError, match=r"salt_tags: expected a uint64 array of shape"):
        pipeline.check_compatible(CHILD, wrong)
