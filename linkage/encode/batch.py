"""The encodings of a batch of records, as the node publishes them and the matcher reads them.

Contract: an :class:`EncodedBatch` holds, per record and in row order, the packed filter of
every published field, the record-level filter, the presence of each field, one blocking token
per rule and one salt tag per salt source, with the schema fingerprint and key version they
were made under; :func:`validate_filters` and :func:`validate_salt_tags` check arrays read
from elsewhere against that layout. It holds no identifier and no key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from linkage.errors import FilterFormatError
from linkage.schema import VIEW_SEPARATOR


@dataclass(frozen=True)
class ValueProblem:
    """A present value that failed normalisation and was encoded as missing."""

    row: int
    field: str
    reason: str


@dataclass(frozen=True)
class EncodedBatch:
    """The encodings of a batch of records (row order preserved).

    A packed filter of ``m`` bits is ``m / 64`` little-endian uint64 words; bit ``i`` is bit
    ``i % 64`` of word ``i // 64`` (equivalently bit ``i % 8``, LSB first, of byte ``i // 8``).
    A batch of filters is a C-contiguous ``uint64`` array of shape ``(n, m / 64)``.

    ``field_filters[f]`` is the packed filter array of field ``f`` as published (shape
    ``(n, FieldSpec.published_words)``, after the field's hardening); ``record_filters`` has
    shape ``(n, Schema.published_record_words)``. ``field_present[:, f]`` is False where the
    value was missing or invalid (its filter is all zero, hardened or not).
    ``block_keys`` has one column per blocking rule, 0 where a part was missing;
    ``salt_tags`` one column per :attr:`Schema.salt_sources` entry (none for an unsalted
    schema), 0 where the salt value was missing.

    Salt tags let the matcher compare a salted field only where both records were encoded
    under the same salt value (:func:`linkage.compare.salt_comparable`), so a typo in the salt
    makes the field "not compared", not "disagrees". The tag of source ``s`` is the keyed
    64-bit token (:func:`~linkage.encode.hashing.token64_reference`) under ``key("salt", s)``
    of a message: for a ``<field>.value`` source the salt field's *published* filter
    (:func:`~linkage.encode.hashing.filter_part`), so equal tags mean equal published filters
    and a tag shows no grouping the salt field's filter does not already show; for any other
    transform the transformed salt value in UTF-8.
    """

    schema_fingerprint: str
    key_version: int
    field_names: tuple[str, ...]
    field_filters: tuple[NDArray[np.uint64], ...]
    field_present: NDArray[np.bool_]
    record_filters: NDArray[np.uint64]
    block_keys: NDArray[np.uint64]
    salt_tags: NDArray[np.uint64]
    problems: tuple[ValueProblem, ...] = ()

    def __len__(self) -> int:
        return int(self.record_filters.shape[0])

    def take(self, rows: NDArray[np.int64] | Sequence[int]) -> EncodedBatch:
        """A new batch holding only ``rows`` (problems are dropped)."""
        idx = np.asarray(rows, dtype=np.int64)
        return EncodedBatch(
            schema_fingerprint=self.schema_fingerprint,
            key_version=self.key_version,
            field_names=self.field_names,
            field_filters=tuple(np.ascontiguousarray(f[idx]) for f in self.field_filters),
            field_present=np.ascontiguousarray(self.field_present[idx]),
            record_filters=np.ascontiguousarray(self.record_filters[idx]),
            block_keys=np.ascontiguousarray(self.block_keys[idx]),
            salt_tags=np.ascontiguousarray(self.salt_tags[idx]),
        )

    def invalid_counts(self) -> dict[str, int]:
        """How many present values of each field failed normalisation."""
        inputs = (name.split(VIEW_SEPARATOR)[0] for name in self.field_names)
        counts = dict.fromkeys(inputs, 0)  # by input: a field's views share its value
        for p in self.problems:
            counts[p.field] += 1
        return counts


def concat_batches(batches: Sequence[EncodedBatch]) -> EncodedBatch:
    """Concatenate batches made with the same schema and key version."""
    if not batches:
        raise FilterFormatError("batches: expected at least one batch")
    first = batches[0]
    for b in batches[1:]:
        if (b.schema_fingerprint, b.key_version, b.field_names) != (
            first.schema_fingerprint,
            first.key_version,
            first.field_names,
        ):
            raise FilterFormatError("batches: schema fingerprint or key version differ")
    offsets = np.cumsum([0] + [len(b) for b in batches])
    problems = tuple(
        ValueProblem(p.row + int(off), p.field, p.reason)
        for b, off in zip(batches, offsets, strict=False)
        for p in b.problems
    )
    return EncodedBatch(
        schema_fingerprint=first.schema_fingerprint,
        key_version=first.key_version,
        field_names=first.field_names,
        field_filters=tuple(
            np.concatenate([b.field_filters[f] for b in batches])
            for f in range(len(first.field_names))
        ),
        field_present=np.concatenate([b.field_present for b in batches]),
        record_filters=np.concatenate([b.record_filters for b in batches]),
        block_keys=np.concatenate([b.block_keys for b in batches]),
        salt_tags=np.concatenate([b.salt_tags for b in batches]),
        problems=problems,
    )


def validate_filters(name: str, filters: NDArray[np.generic], n: int, words: int) -> None:
    """Raise :class:`FilterFormatError` unless ``filters`` is uint64 of shape ``(n, words)``."""
    if filters.dtype != np.uint64 or filters.ndim != 2:
        raise FilterFormatError(
            f"{name}: expected a 2-d uint64 array, got {filters.ndim}-d {filters.dtype}"
        )
    if filters.shape != (n, words):
        raise FilterFormatError(
            f"{name}: expected shape ({n}, {words}) ({words * 64}-bit filters), "
            f"got {tuple(filters.shape)}"
        )


def validate_salt_tags(tags: NDArray[np.generic], n: int, sources: int) -> None:
    """Raise :class:`FilterFormatError` unless ``tags`` is uint64 of shape ``(n, sources)``."""
    if tags.dtype != np.uint64 or tags.shape != (n, sources):
        raise FilterFormatError(
            f"salt_tags: expected a uint64 array of shape ({n}, {sources}) (one tag per record "
            f"and salt source), got {tags.ndim}-d {tags.dtype} of shape {tuple(tags.shape)}"
        )
