"""Attack 2, the two sides of one field: the attacker's plaintext values and the published filters.

Role: what the decoding (:mod:`.decoding`), value-seeding (:mod:`.seeding`) and co-occurrence
(:mod:`.cooccurrence`) stages read of a field. :func:`_plain_field` normalises and tokenises
the attacker's own column exactly as the production encoder does (salt included, as
:func:`salt_values` reproduces it); :func:`_cipher_field` groups the encoded side's rows by
identical filter (equal values give equal filters).

Invariants: a row missing its value is ``-1`` in ``row_value`` / ``row_group`` and in no
group; filters are numbered in :func:`numpy.unique`'s sorted order and plaintext values in
the order first met, the same however often a stage builds them; nothing here reads the
linkage secret.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from benchmarks.attack.graph import _unpacked
from benchmarks.attack.settings import filter_index, normalised_values
from linkage.encode import EncodedBatch, blocking_value, raw_values, tokenise
from linkage.schema import Schema

#: Largest dense (values x filters) cost matrix computed for one field's value alignment.
_DENSE_LIMIT = 6_000_000


@dataclass(frozen=True)
class _PlainField:
    """The attacker's plaintext of one field: distinct (salted) values and their tokens."""

    row_value: NDArray[np.int64]  # row -> distinct value, -1 where missing
    tokens: sparse.csr_matrix  # (distinct values, vocabulary) incidence, float32
    counts: NDArray[np.int64]  # rows per distinct value


@dataclass(frozen=True)
class _CipherField:
    """The encoded side of one field: distinct filters (equal values give equal filters)."""

    row_group: NDArray[np.int64]  # row -> distinct filter, -1 where missing
    packed: NDArray[np.uint64]  # (distinct, words)
    bits: NDArray[np.float32]  # (distinct, filter bits) 0/1
    counts: NDArray[np.int64]  # rows per distinct filter
    hashes: int  # positions per token (published with the schema)


def salt_values(schema: Schema, field: str, columns: dict[str, list[str | None]]) -> list[str]:
    """Per row, the salt the encoder mixes into ``field`` ("" when the field is unsalted; "~"
    where the salting value is missing, as the encoder writes it)."""
    spec = schema.field(field)
    rows = len(raw_values(spec, columns))
    if not spec.salt:
        return [""] * rows
    salt_field, transform = spec.salt.split(".")
    salt_kind = schema.field(salt_field).kind
    values = normalised_values(schema, salt_field, columns[salt_field])
    return [(blocking_value(salt_kind, transform, s) if s else "") or "~" for s in values]


def _plain_field(schema: Schema, field: str, columns: dict[str, list[str | None]]) -> _PlainField:
    """Normalise and tokenise the attacker's column exactly as the production encoder does."""
    spec = schema.field(field)
    values = normalised_values(schema, spec.input_name, raw_values(spec, columns))
    salts = salt_values(schema, field, columns)
    index: dict[tuple[str, str], int] = {}
    row_value = np.full(len(values), -1, dtype=np.int64)
    for row, (value, salt) in enumerate(zip(values, salts, strict=True)):
        if value is not None:
            row_value[row] = index.setdefault((salt, value), len(index))
    vocabulary: dict[str, int] = {}
    owners: list[int] = []
    columns_of: list[int] = []
    for slot, (salt, value) in enumerate(index):
        for token in tokenise(spec, value):
            owners.append(slot)
            columns_of.append(vocabulary.setdefault(f"{salt}|{token}" if salt else token,
                                                    len(vocabulary)))  # fmt: skip
    tokens = sparse.csr_matrix(
        (np.ones(len(owners), dtype=np.float32), (owners, columns_of)),
        shape=(len(index), max(1, len(vocabulary))),
    )
    counts = np.bincount(row_value[row_value >= 0], minlength=len(index)).astype(np.int64)
    return _PlainField(row_value, tokens, counts)


def _cipher_field(batch: EncodedBatch, field: str, hashes: int) -> _CipherField:
    index = filter_index(batch, field)
    filters = batch.field_filters[index]
    present = batch.field_present[:, index]
    rows = np.flatnonzero(present)
    view = np.ascontiguousarray(filters[rows]).view(np.dtype((np.void, filters.shape[1] * 8)))
    _, first, group, counts = np.unique(
        view.ravel(), return_index=True, return_inverse=True, return_counts=True
    )
    row_group = np.full(filters.shape[0], -1, dtype=np.int64)
    row_group[rows] = group.reshape(-1)
    packed = np.ascontiguousarray(filters[rows[first]])
    return _CipherField(row_group, packed, _unpacked(packed), counts.astype(np.int64), hashes)


def _pack(bits: NDArray[np.bool_]) -> NDArray[np.uint64]:
    packed = np.packbits(bits, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64)


def _decoded_rows(cipher: _CipherField, aligned: NDArray[np.int64]) -> NDArray[np.int64]:
    """Per encoded row, the plain value its filter decodes to (-1 when none)."""
    out = np.full(cipher.row_group.shape[0], -1, dtype=np.int64)
    present = cipher.row_group >= 0
    out[present] = aligned[cipher.row_group[present]]
    return out
