"""Tests for linkage.encode: golden tokens and filters, the filter layout, keys and determinism.

The golden files (tests/linkage/golden/tokens.json, filters.json) are made by
tests/linkage/golden/make_vectors.py under the published test key and change only deliberately (see
tests/linkage/golden/README.md). Missing, invalid and salted values, blocking values and batch
properties are tests/linkage/test_encode_values.py; the plain contract both encode under is
:mod:`tests.helpers.plain_encoding`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from linkage.encode import (
    EncodedBatch,
    blocking_token,
    encode_records,
    raw_values,
    token_positions,
    tokenise,
    validate_filters,
)
from linkage.keys import TEST_SECRET_HEX, KeySet, LinkageSecret
from linkage.normalise import NORMALISATION_VERSION, NORMALISERS
from linkage.schema import ENCODING_VERSION, schema_from_dict
from tests.helpers.plain_encoding import (
    CHILD,
    FIELDS,
    INPUTS,
    JOSE,
    batches_equal,
    columns_of,
    encode,
    plain_filter_bytes,
    plain_positions,
    published_keys,
)

GOLDEN = Path(__file__).parent / "golden"
TOKEN_CASES: list[dict[str, Any]] = json.loads((GOLDEN / "tokens.json").read_text("utf-8"))
FILTERS: dict[str, Any] = json.loads((GOLDEN / "filters.json").read_text("utf-8"))
FILTER_ROWS: list[dict[str, Any]] = FILTERS["rows"]


def row_hex(words: np.ndarray[Any, Any]) -> str:
    return bytes(words.astype("<u8").tobytes()).hex()


# ---------------------------------------------------------------------------------------------
# golden vectors


def test_golden_files_match_the_library_versions() -> None:
    assert FILTERS["schema_fingerprint"] == CHILD.fingerprint()
    assert FILTERS["encoding_version"] == ENCODING_VERSION
    assert FILTERS["normalisation_version"] == NORMALISATION_VERSION
    assert FILTERS["secret_hex"] == TEST_SECRET_HEX
    assert {case["field"] for case in TOKEN_CASES} == set(INPUTS)
    assert len(FILTER_ROWS) == 8


@pytest.mark.parametrize(
    "case", TOKEN_CASES, ids=[f"{c['field']}:{c['raw']!r}" for c in TOKEN_CASES]
)
def test_tokens_golden(case: dict[str, Any]) -> None:
    spec = CHILD.field(case["field"])
    assert spec.kind == case["kind"]
    normalised = NORMALISERS[spec.kind](case["raw"], field=spec.name, day_first=CHILD.day_first)
    assert normalised == case["normalised"]
    tokens = [] if normalised is None else tokenise(spec, normalised)
    assert tokens == case["tokens"]


@pytest.fixture(scope="module")
def golden_batch() -> EncodedBatch:
    return encode([row["record"] for row in FILTER_ROWS])


@pytest.mark.parametrize("expected", FILTER_ROWS, ids=[f"row{r['row']}" for r in FILTER_ROWS])
def test_filters_golden(golden_batch: EncodedBatch, expected: dict[str, Any]) -> None:
    row = expected["row"]
    got_fields = {n: row_hex(golden_batch.field_filters[i][row]) for i, n in enumerate(FIELDS)}
    assert got_fields == expected["field_filters"]
    assert row_hex(golden_batch.record_filters[row]) == expected["record_filter"]
    got_present = {n: bool(golden_batch.field_present[row, i]) for i, n in enumerate(FIELDS)}
    assert got_present == expected["present"]
    got_blocks = {
        rule.name: f"{int(golden_batch.block_keys[row, r]):016x}"
        for r, rule in enumerate(CHILD.blocking)
    }
    assert got_blocks == expected["block_keys"]
    assert [p.field for p in golden_batch.problems if p.row == row] == expected["problem_fields"]


def test_golden_filters_are_sane() -> None:
    """What a reader checks by eye: same child, other spelling -> same encoding; missing -> 0."""
    rows = FILTER_ROWS
    same = ("field_filters", "record_filter", "block_keys")
    assert all(rows[0][k] == rows[1][k] for k in same)  # José Müller spelled two ways
    assert rows[4]["field_filters"]["family_name"] == rows[7]["field_filters"]["family_name"]
    assert rows[4]["field_filters"]["postcode"] == rows[7]["field_filters"]["postcode"]
    assert rows[0]["field_filters"]["date_of_birth"] == rows[2]["field_filters"]["date_of_birth"]
    assert rows[0]["field_filters"]["date_of_birth"] != rows[3]["field_filters"]["date_of_birth"]
    empty = rows[6]
    assert not any(empty["present"].values())
    assert set("".join(empty["field_filters"].values()) + empty["record_filter"]) == {"0"}
    assert set("".join(empty["block_keys"].values())) == {"0"}
    assert rows[3]["problem_fields"] == ["nhs_number"]
    assert rows[5]["problem_fields"] == ["date_of_birth"]
    for row in rows:
        for name, present in row["present"].items():
            assert (set(row["field_filters"][name]) != {"0"}) == present


# ---------------------------------------------------------------------------------------------
# filter layout (against the independent re-implementation)


def test_field_filter_is_the_union_of_documented_token_positions() -> None:
    keys = published_keys()
    batch = encode([JOSE], keys)
    spec = CHILD.field("given_name")
    tokens = ["q:_j", "q:jo", "q:os", "q:se", "q:e_", "w:jose", "p:soundex:J200", "p:nysiis:JAS"]
    key = keys.key("filter", "given_name")
    expected: set[int] = set()
    for token in tokens:
        expected.update(plain_positions(key, token, spec.hashes_per_token, spec.filter_bits))
    got = bytes(batch.field_filters[0][0].astype("<u8").tobytes())
    assert got == plain_filter_bytes(expected, spec.filter_bits)
    # Same statement in words: bit i is bit i % 64 of uint64 word i // 64.
    words = batch.field_filters[0][0]
    set_bits = {
        w * 64 + b for w in range(len(words)) for b in range(64) if (int(words[w]) >> b) & 1
    }
    assert set_bits == expected


@pytest.mark.parametrize(("hashes", "bits"), [(1, 64), (4, 256), (8, 128), (9, 1024), (20, 8192)])
def test_token_positions_match_the_documented_rule(hashes: int, bits: int) -> None:
    key = published_keys().key("filter", "any_field")
    tokens = ["q:_j", "w:nguyen", "x:9434765919", "s:SW1A 1", "ü|w:ä"]
    got = token_positions(key, tokens, hashes, bits)
    assert got.shape == (len(tokens), hashes)
    assert got.dtype == np.int64
    for row, token in enumerate(tokens):
        assert got[row].tolist() == plain_positions(key, token, hashes, bits)


def test_record_filter_is_the_union_of_record_positions_of_every_field() -> None:
    keys = published_keys()
    batch = encode([JOSE], keys)
    expected: set[int] = set()
    # the combined fields set no record positions (record_hashes_per_token = 0)
    assert {s.name for s in CHILD.fields if not s.record_hashes_per_token} == {"full_name"}
    for spec in CHILD.fields:
        value = NORMALISERS[spec.kind](raw_values(spec, columns_of([JOSE]))[0], field=spec.name)
        assert value is not None
        for token in tokenise(spec, value):
            expected.update(
                plain_positions(
                    keys.key("record", spec.name),
                    token,
                    spec.record_hashes_per_token,
                    CHILD.record_filter_bits,
                )
            )
    got = bytes(batch.record_filters[0].astype("<u8").tobytes())
    assert got == plain_filter_bytes(expected, CHILD.record_filter_bits)


def test_block_key_is_the_documented_hmac() -> None:
    # a value rule: the transformed values joined with the unit separator
    data = CHILD.to_dict()
    data["blocking"] = [
        {
            "name": "family_soundex_birth_year",
            "parts": ["family_name.soundex", "date_of_birth.year"],
        }
    ]
    schema = schema_from_dict(data)
    keys = published_keys()
    batch = encode_records(schema, keys, {f: [JOSE.get(f)] for f in INPUTS})
    digest = hmac.new(
        keys.key("block", "family_soundex_birth_year"), b"M460\x1f2014", hashlib.sha256
    ).digest()
    assert int(batch.block_keys[0, 0]) == int.from_bytes(digest[:8], "little")
    assert blocking_token(keys.key("block", "x"), ["a", "b"]) == int.from_bytes(
        hmac.new(keys.key("block", "x"), b"a\x1fb", hashlib.sha256).digest()[:8], "little"
    )


def test_filter_block_key_is_the_hmac_of_the_published_filter() -> None:
    keys = published_keys()
    batch = encode([JOSE, {**JOSE, "nhs_number": None}], keys)
    assert {len(rule.parts) for rule in CHILD.blocking} == {1}  # one filter each
    for rule_index, rule in enumerate(CHILD.blocking):
        assert all(transform == "filter" for _, transform in rule.parts)
        # the parts' published filters in hex, joined with the unit separator
        message = "\x1f".join(
            batch.field_filters[FIELDS.index(field_name)][0].astype("<u8").tobytes().hex()
            for field_name, _ in rule.parts
        ).encode()
        digest = hmac.new(keys.key("block", rule.name), message, hashlib.sha256).digest()
        assert int(batch.block_keys[0, rule_index]) == int.from_bytes(digest[:8], "little")
    # a missing value: no key; equal published filters: equal keys
    nhs = [r.name for r in CHILD.blocking].index("nhs_number")
    assert batch.block_keys[1, nhs] == 0
    dob = [r.name for r in CHILD.blocking].index("date_of_birth")
    assert batch.block_keys[0, dob] == batch.block_keys[1, dob] != 0


def test_batch_arrays_have_the_documented_shapes_and_dtypes() -> None:
    batch = encode([JOSE, {}, JOSE])
    assert len(batch) == 3
    assert batch.field_names == FIELDS
    assert batch.schema_fingerprint == CHILD.fingerprint()
    assert batch.key_version == 1
    for spec, filters in zip(CHILD.fields, batch.field_filters, strict=True):
        assert filters.dtype == np.uint64 and filters.flags.c_contiguous
        assert filters.shape == (3, spec.filter_bits // 64)
        validate_filters(spec.name, filters, 3, spec.filter_words)
    assert batch.record_filters.shape == (3, CHILD.record_filter_bits // 64)
    assert batch.record_filters.dtype == np.uint64
    assert batch.field_present.shape == (3, len(FIELDS)) and batch.field_present.dtype == bool
    assert batch.block_keys.shape == (3, len(CHILD.blocking))
    assert batch.block_keys.dtype == np.uint64


# ---------------------------------------------------------------------------------------------
# keys and determinism


def test_encoding_is_deterministic() -> None:
    records = [row["record"] for row in FILTER_ROWS]
    assert batches_equal(encode(records), encode(records, KeySet(LinkageSecret.for_tests())))


def test_a_different_secret_changes_every_filter_and_block_key() -> None:
    records = [JOSE]
    ours = encode(records)
    other = encode(records, KeySet(LinkageSecret(bytes(range(32)))))
    for a, b in zip(ours.field_filters, other.field_filters, strict=True):
        assert not np.array_equal(a, b)
    assert not np.array_equal(ours.record_filters, other.record_filters)
    assert (ours.block_keys != other.block_keys).all()
    assert np.array_equal(ours.field_present, other.field_present)


def test_a_different_key_version_changes_the_encoding() -> None:
    ours = encode([JOSE])
    other = encode([JOSE], KeySet(LinkageSecret.for_tests(), key_version=2))
    assert other.key_version == 2
    assert not np.array_equal(ours.record_filters, other.record_filters)
    assert (ours.block_keys != other.block_keys).all()
