"""Tests for linkage.encode: golden tokens and filters, filter layout, keys, missing/invalid values.

The golden files (tests/linkage/golden/tokens.json, filters.json) are made by
tests/linkage/golden/make_vectors.py under the published test key and change only deliberately (see
tests/linkage/golden/README.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.encode import (
    EncodedBatch,
    blocking_token,
    blocking_value,
    concat_batches,
    encode_records,
    raw_values,
    token_positions,
    tokenise,
    validate_filters,
)
from linkage.errors import FilterFormatError, SchemaError
from linkage.keys import TEST_SECRET_HEX, KeySet, LinkageSecret
from linkage.normalise import NORMALISATION_VERSION, NORMALISERS
from linkage.schema import ENCODING_VERSION, Hardening, Schema, load_schema, schema_from_dict

GOLDEN = Path(__file__).parent / "golden"
TOKEN_CASES: list[dict[str, Any]] = json.loads((GOLDEN / "tokens.json").read_text("utf-8"))
FILTERS: dict[str, Any] = json.loads((GOLDEN / "filters.json").read_text("utf-8"))
FILTER_ROWS: list[dict[str, Any]] = FILTERS["rows"]

# The plain encoding contract: the shipped child schema with salting and hardening off (the
# shipped hardening is pinned separately by hardened_filters.json and the fingerprint).
CHILD = load_schema("child").with_salt("").with_hardening(Hardening(), Hardening())
FIELDS = CHILD.field_names
#: the columns a node reads (the combined fields read theirs from these)
INPUTS = CHILD.input_names


def published_keys() -> KeySet:
    """Keys under the published test secret (linkage.keys.TEST_SECRET_HEX), key version 1."""
    return KeySet(LinkageSecret.for_tests(), key_version=1)


def columns_of(records: Sequence[Mapping[str, str | None]]) -> dict[str, list[str | None]]:
    return {f: [r.get(f) for r in records] for f in INPUTS}


def encode(records: Sequence[Mapping[str, str | None]], keys: KeySet | None = None) -> EncodedBatch:
    return encode_records(CHILD, keys or published_keys(), columns_of(records))


def row_hex(words: np.ndarray[Any, Any]) -> str:
    return bytes(words.astype("<u8").tobytes()).hex()


def batches_equal(a: EncodedBatch, b: EncodedBatch) -> bool:
    return (
        a.schema_fingerprint == b.schema_fingerprint
        and a.key_version == b.key_version
        and a.field_names == b.field_names
        and all(np.array_equal(x, y) for x, y in zip(a.field_filters, b.field_filters, strict=True))
        and np.array_equal(a.field_present, b.field_present)
        and np.array_equal(a.record_filters, b.record_filters)
        and np.array_equal(a.block_keys, b.block_keys)
        # problem order is not specified (encode_records lists them field by field,
        # concat_batches batch by batch), so compare them as sorted by (row, field)
        and sorted(a.problems, key=_problem_order) == sorted(b.problems, key=_problem_order)
    )


def _problem_order(problem: Any) -> tuple[int, int]:
    return problem.row, FIELDS.index(problem.field)


JOSE: dict[str, str | None] = {
    "given_name": "José",
    "middle_names": "María",
    "family_name": "Müller",
    "date_of_birth": "02/03/2014",
    "sex": "F",
    "postcode": "SW1A 1AA",
    "nhs_number": "943 476 5919",
}


# ---------------------------------------------------------------------------------------------
# an independent, plain-Python statement of the position rule in the encode.py docstring


def plain_positions(key: bytes, token: str, hashes: int, bits: int) -> list[int]:
    """Position i: little-endian uint32 at bytes 4*(i%8) of HMAC(key, bytes([i//8]) + token)."""
    out = []
    for i in range(hashes):
        block = hmac.new(key, bytes([i // 8]) + token.encode("utf-8"), hashlib.sha256).digest()
        out.append(int.from_bytes(block[4 * (i % 8) : 4 * (i % 8) + 4], "little") % bits)
    return out


def plain_filter_bytes(positions: set[int], bits: int) -> bytes:
    """Bit i is bit i % 8 (LSB first) of byte i // 8."""
    out = bytearray(bits // 8)
    for p in positions:
        out[p // 8] |= 1 << (p % 8)
    return bytes(out)


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


# ---------------------------------------------------------------------------------------------
# missing and invalid values


@pytest.mark.parametrize("missing", [None, "", "   ", "N/A", "unknown"])
@pytest.mark.parametrize("field", ["family_name", "date_of_birth", "postcode", "nhs_number"])
def test_missing_value_gives_zero_filter_and_zero_block_keys(field: str, missing: Any) -> None:
    record = dict(JOSE, **{field: missing})
    batch = encode([record, JOSE])
    f = FIELDS.index(field)
    assert not batch.field_present[0, f] and batch.field_present[1, f]
    assert not batch.field_filters[f][0].any() and batch.field_filters[f][1].any()
    assert batch.problems == ()
    # a combined field of this input alone is missing with it; one of it and others is the
    # others' values, the missing marker adding nothing to the join
    combining = {s.name for s in CHILD.fields if field in s.combines}
    emptied = {field} | {name for name in combining if CHILD.field(name).combines == (field,)}
    without = encode([dict(JOSE, **{field: None})])
    for name in combining - emptied:
        g = FIELDS.index(name)
        assert batch.field_present[0, g]
        assert np.array_equal(batch.field_filters[g][0], without.field_filters[g][0])
        assert not np.array_equal(batch.field_filters[g][0], batch.field_filters[g][1])
    for name in emptied:
        g = FIELDS.index(name)
        assert not batch.field_present[0, g] and not batch.field_filters[g][0].any()
    for r, rule in enumerate(CHILD.blocking):
        uses_field = any(part_field in emptied for part_field, _ in rule.parts)
        assert (batch.block_keys[0, r] == 0) == uses_field, rule.name
        if not any(part_field in combining | emptied for part_field, _ in rule.parts):
            assert batch.block_keys[0, r] == batch.block_keys[1, r]
    # the other fields are unaffected
    for g, name in enumerate(FIELDS):
        if name not in combining | emptied:
            assert np.array_equal(batch.field_filters[g][0], batch.field_filters[g][1])


def test_all_missing_record_is_all_zero() -> None:
    batch = encode([{}])
    assert not batch.field_present.any()
    assert not batch.record_filters.any()
    assert not batch.block_keys.any()
    assert all(not f.any() for f in batch.field_filters)


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("date_of_birth", "31/02/2014"),
        ("date_of_birth", "2014-13-01"),
        ("date_of_birth", "not a date at all"),
        ("nhs_number", "943 476 5918"),
        ("nhs_number", "12345"),
        ("sex", "Q"),
        ("postcode", "NOT A POSTCODE"),
    ],
)
def test_invalid_value_is_a_problem_naming_row_and_field_not_value(field: str, raw: str) -> None:
    records = [JOSE, dict(JOSE, **{field: raw}), JOSE, dict(JOSE, **{field: raw})]
    batch = encode(records)
    f = FIELDS.index(field)
    assert [(p.row, p.field) for p in batch.problems] == [(1, field), (3, field)]
    assert batch.invalid_counts()[field] == 2
    for problem in batch.problems:
        for text in (problem.reason, repr(problem), str(problem)):
            assert raw.lower() not in text.lower()
    assert batch.field_present[:, f].tolist() == [True, False, True, False]
    assert not batch.field_filters[f][1].any()
    assert np.array_equal(batch.field_filters[f][0], batch.field_filters[f][2])


def test_problems_survive_concatenation_with_shifted_rows() -> None:
    bad = dict(JOSE, date_of_birth="31/02/2014")
    joined = concat_batches([encode([JOSE, bad]), encode([bad])])
    assert [(p.row, p.field) for p in joined.problems] == [
        (1, "date_of_birth"),
        (2, "date_of_birth"),
    ]


# ---------------------------------------------------------------------------------------------
# per-batch caching never changes the result (Hypothesis)

VALUE_POOLS: dict[str, list[str | None]] = {
    "given_name": ["José", "JOSE", "Nguyễn Văn", "Ben Ali", None, "", "Mary-Jane"],
    "middle_names": ["Anne", None, "Zoë Anne", ""],
    "family_name": ["Müller", "MULLER", "van der Berg", "O'Brien", "Smith-Jones", None],
    "date_of_birth": ["02/03/2014", "2014-03-02", "03/02/2014", "31/02/2014", None, "1999-12-31"],
    "sex": ["F", "m", "U", "Q", None],
    "postcode": ["SW1A 1AA", "sw1a1aa", "M1 1AE", "bogus", None],
    "nhs_number": ["943 476 5919", "9434765918", "4010232137", None],
}

records_strategy = st.lists(
    st.fixed_dictionaries({f: st.sampled_from(pool) for f, pool in VALUE_POOLS.items()}),
    min_size=1,
    max_size=6,
)


@settings(deadline=None, derandomize=True, max_examples=40)
@given(records_strategy)
def test_batch_encoding_equals_concatenated_single_row_encodings(
    records: list[dict[str, str | None]],
) -> None:
    keys = published_keys()
    whole = encode(records, keys)
    singles = concat_batches([encode([r], keys) for r in records])
    assert batches_equal(whole, singles)
    # and take() recovers any row on its own
    last = len(records) - 1
    alone = whole.take([last])
    assert np.array_equal(alone.record_filters, encode([records[last]], keys).record_filters)


# ---------------------------------------------------------------------------------------------
# salted fields (hardening)


def _salted_schema() -> Schema:
    data = CHILD.to_dict()
    data["field"][0]["salt"] = "date_of_birth.year"
    return schema_from_dict(data)


def test_salted_field_prefixes_every_token_with_the_salt_value() -> None:
    schema = _salted_schema()
    keys = published_keys()
    cols = {f: [JOSE[f], JOSE[f]] for f in INPUTS}
    cols["date_of_birth"] = ["02/03/2014", None]
    batch = encode_records(schema, keys, cols)
    spec = schema.field("given_name")
    key = keys.key("filter", "given_name")
    for row, salt in enumerate(("2014", "~")):
        expected: set[int] = set()
        for token in tokenise(spec, "jose"):
            expected.update(
                plain_positions(key, f"{salt}|{token}", spec.hashes_per_token, spec.filter_bits)
            )
        got = bytes(batch.field_filters[0][row].astype("<u8").tobytes())
        assert got == plain_filter_bytes(expected, spec.filter_bits)
    assert batch.schema_fingerprint != CHILD.fingerprint()


# ---------------------------------------------------------------------------------------------
# blocking values


@pytest.mark.parametrize(
    ("kind", "transform", "value", "expected"),
    [
        ("family_name", "value", "vanderberg", "vanderberg"),
        ("family_name", "soundex", "smith jones", "S530 J520"),
        ("name", "initial", "mary jane", "m"),
        ("name", "first_part", "mary jane", "mary"),
        ("date", "year", "2014-03-02", "2014"),
        ("date", "month_day", "2014-03-02", "03-02"),
        ("date", "year_month", "2014-03-02", "2014-03"),
        ("date", "year_day", "2014-03-02", "2014-02"),
        ("date", "year_day", "2014-12-31", "2014-31"),
        ("date", "day_month", "2014-05-03", "03/05"),  # 3 May: day first
        ("date", "day_month", "2014-03-05", "03/05"),  # 5 March: the same pair, unordered
        ("date", "day_month", "2014-12-31", "12/31"),
        ("date", "day_month", "2014-01-01", "01/01"),
        ("postcode", "sector", "SW1A 1AA", "SW1A 1"),
        ("postcode", "district", "SW1A 1AA", "SW1A"),
        ("postcode", "area", "SW1A 1AA", "SW"),
    ],
)
def test_blocking_value(kind: str, transform: str, value: str, expected: str) -> None:
    assert blocking_value(kind, transform, value) == expected


@pytest.mark.parametrize(
    ("left", "right"),
    [("03/05/2014", "05/03/2014"), ("2014-01-12", "2014-12-01"), ("1 Feb 2010", "2 Jan 2010")],
)
def test_day_month_is_unordered_and_the_other_date_parts_are_not(left: str, right: str) -> None:
    # a day/month transposition (both dates valid) keeps day_month and changes the ordered
    # parts; the year is kept, so year_month and year_day swap their day and month
    a, b = (
        NORMALISERS["date"](raw, field="date_of_birth", day_first=True) for raw in (left, right)
    )
    assert a is not None and b is not None and a != b
    assert blocking_value("date", "day_month", a) == blocking_value("date", "day_month", b)
    assert blocking_value("date", "year", a) == blocking_value("date", "year", b)
    for transform in ("value", "month_day", "year_month", "year_day"):
        assert blocking_value("date", transform, a) != blocking_value("date", transform, b)
    assert blocking_value("date", "year_month", a)[5:] == blocking_value("date", "year_day", b)[5:]


@settings(deadline=None, derandomize=True, max_examples=200)
@given(st.dates())
def test_year_day_and_day_month_are_parts_of_the_iso_date(day: Any) -> None:
    value = day.isoformat()
    year, month, dom = value[:4], value[5:7], value[8:10]
    assert blocking_value("date", "year_day", value) == f"{year}-{dom}"
    assert blocking_value("date", "day_month", value) == "/".join(sorted((month, dom)))
    assert blocking_value("date", "year_month", value) == f"{year}-{month}"


def test_blocking_value_rejects_an_unavailable_transform() -> None:
    with pytest.raises(SchemaError):
        blocking_value("date", "soundex", "2014-03-02")


# ---------------------------------------------------------------------------------------------
# input validation


@pytest.mark.parametrize(
    "filters",
    [
        np.zeros((3, 4), dtype=np.uint32),
        np.zeros((3, 4), dtype=np.int64),
        np.zeros(12, dtype=np.uint64),
        np.zeros((3, 4, 1), dtype=np.uint64),
        np.zeros((2, 4), dtype=np.uint64),
        np.zeros((3, 5), dtype=np.uint64),
        np.zeros((4, 3), dtype=np.uint64),
    ],
    ids=["uint32", "int64", "1-d", "3-d", "rows", "words", "transposed"],
)
def test_validate_filters_rejects_wrong_shape_or_dtype(filters: np.ndarray[Any, Any]) -> None:
    with pytest.raises(FilterFormatError) as info:
        validate_filters("query_filters", filters, 3, 4)
    assert str(info.value).startswith("query_filters:")


def test_validate_filters_accepts_the_right_array() -> None:
    validate_filters("f", np.zeros((3, 4), dtype=np.uint64), 3, 4)


def test_missing_column_is_a_schema_error_naming_the_field() -> None:
    columns = columns_of([JOSE])
    del columns["postcode"]
    del columns["sex"]
    with pytest.raises(SchemaError) as info:
        encode_records(CHILD, published_keys(), columns)
    assert len(info.value.problems) == 2
    joined = " ".join(info.value.problems)
    assert "'postcode'" in joined and "'sex'" in joined


def test_extra_columns_are_ignored() -> None:
    columns = columns_of([JOSE])
    columns["shoe_size"] = ["12"]
    assert batches_equal(encode_records(CHILD, published_keys(), columns), encode([JOSE]))


def test_columns_of_different_lengths_are_a_schema_error() -> None:
    columns = columns_of([JOSE, JOSE])
    columns["sex"] = ["F"]
    with pytest.raises(SchemaError):
        encode_records(CHILD, published_keys(), columns)


def test_concat_batches_rejects_empty_and_mismatched_input() -> None:
    with pytest.raises(FilterFormatError):
        concat_batches([])
    other = encode_records(_salted_schema(), published_keys(), columns_of([JOSE]))
    with pytest.raises(FilterFormatError):
        concat_batches([encode([JOSE]), other])
    rotated = encode([JOSE], KeySet(LinkageSecret.for_tests(), key_version=2))
    with pytest.raises(FilterFormatError):
        concat_batches([encode([JOSE]), rotated])


def test_empty_batch_encodes_to_empty_arrays() -> None:
    batch = encode_records(CHILD, published_keys(), {f: [] for f in INPUTS})
    assert len(batch) == 0
    assert batch.block_keys.shape == (0, len(CHILD.blocking))


@settings(deadline=None, derandomize=True, max_examples=40)
@given(records_strategy)
def test_filter_keys_and_tags_group_records_exactly_as_their_filters(
    records: list[dict[str, str | None]],
) -> None:
    # under the shipped schema (views, salted, hardened): two records share a filter rule's
    # key, or a salt tag (of the date of birth, of sex), exactly when the published filters of
    # every part (of the views the rule names) are equal
    shipped = load_schema("child")
    batch = encode_records(
        shipped, published_keys(), {f: [r.get(f) for r in records] for f in INPUTS}
    )
    names = shipped.field_names
    columns = [
        (batch.block_keys[:, r], [names.index(part) for part, _ in rule.parts])
        for r, rule in enumerate(shipped.blocking)
    ] + [
        (batch.salt_tags[:, s], [names.index(source.split(".")[0])])
        for s, source in enumerate(shipped.salt_sources)
        if source.endswith(".value")
    ]
    # every source is a ".value" (views publish no tag): date_of_birth.value and sex.value
    assert len(columns) == len(shipped.blocking) + 2
    for keys_column, fields in columns:
        present = np.asarray(batch.field_present[:, fields].all(axis=1))
        for i in range(len(records)):
            assert (keys_column[i] == 0) == (not present[i])
            for j in range(len(records)):
                if present[i] and present[j]:
                    same_filters = all(
                        np.array_equal(batch.field_filters[f][i], batch.field_filters[f][j])
                        for f in fields
                    )
                    assert (keys_column[i] == keys_column[j]) == same_filters
