"""The plain encoding contract for tests: the shipped child schema with salting and hardening
off, the published test keys, a sample child, and a plain-Python statement of the position rule.

Role: what ``tests/linkage/test_encode.py`` (golden vectors, layout, keys) and
``tests/linkage/test_encode_values.py`` (missing, invalid and salted values, blocking values,
batch properties) share. The shipped hardening is pinned separately (hardened_filters.json
and the schema fingerprint); :func:`plain_positions` restates the rule of the
``linkage.encode`` docstring independently of the library, so the two must agree.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from linkage.encode import EncodedBatch, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Hardening, load_schema

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


# An independent, plain-Python statement of the position rule in the encode.py docstring


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
