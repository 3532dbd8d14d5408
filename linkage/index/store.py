"""The index's storage: one slot per published record, upserts, withdrawals, compaction.

Role: the part of :class:`~linkage.index.MatchIndex` that holds what the matcher's agencies
published (rebuilt from the matcher's SQLite store at start) and keeps it findable. It holds
encodings and opaque references only — nothing here can be read back as an identifier.

Layout (columnar numpy arrays over *slots*; a slot is one record, reused when the same
(agency, reference) is published again):

* the packed field filters of all fields side by side, one row per slot
  ``(capacity, sum of words_f)`` (:class:`_FieldLayout`), so that a lookup gathers each
  candidate's filters as one contiguous row; an all-zero filter means the field is missing
  (a present value always sets at least one bit);
* the record-level filters ``(capacity, record_words)`` and their popcounts (kept because
  counting them on every scan costs more than storing them);
* the keyed blocking tokens ``(rules, capacity)``, narrowed to 32 bits
  (:func:`~linkage.index.sorted_keys.narrow_block_keys`), and the salt tags, narrowed alike;
* the agency code (int16; -1 marks a free or dead slot) and the reference (16 raw bytes).

Per blocking rule and for references a :class:`~linkage.index.sorted_keys._SortedKeys` finds
slots by key. Nothing else is stored per record: about ``sum(field filter bytes) + record
filter bytes + 4·rules + 4·(rules + 2) + 18`` bytes.

Invariants (what the lookup tables rely on):

* **A slot's keys never change while any permutation holds it.** A withdrawn record's slot is
  marked dead (agency -1, filters zeroed, keys kept); a republished record whose blocking
  tokens changed moves to a new slot and its old slot dies. Dead slots are dropped from every
  permutation at the next compaction and only then reused.
* One live slot per (agency, reference); within one upsert the last occurrence wins.

Concurrency: one re-entrant lock (``_lock``) guards every mutation; readers take it to find
slots and copy rows (:meth:`IndexStore._gather`), never to score.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import similarity
from linkage.encode import EncodedBatch, validate_filters, validate_salt_tags
from linkage.errors import FilterFormatError, IncompatibleEncodingError
from linkage.index.sorted_keys import _ref_keys_of, _RefKeys, _SortedKeys, narrow_block_keys
from linkage.schema import Schema

REFERENCE_BYTES = 16


def reference_to_bytes(reference: str) -> bytes:
    """A reference's 16 raw bytes (references are 32 lowercase hex characters)."""
    if len(reference) != 2 * REFERENCE_BYTES:
        raise FilterFormatError(f"reference: expected {2 * REFERENCE_BYTES} hex characters")
    try:
        return bytes.fromhex(reference)
    except ValueError:
        raise FilterFormatError("reference: expected hexadecimal characters") from None


@dataclass(frozen=True)
class _FieldLayout:
    """Where each field's filter sits in a row of every field's filter side by side: field f
    in columns ``[starts[f], starts[f] + widths[f])`` (words), fields in schema order."""

    starts: NDArray[np.int64]
    widths: NDArray[np.int64]
    words: int
    #: the starts of the fields at least one word wide, and which fields those are (None
    #: when all are: every schema a schema file can state)
    summed_starts: NDArray[np.int64]
    summed_fields: NDArray[np.int64] | None

    @classmethod
    def of(cls, widths: Sequence[int]) -> _FieldLayout:
        width_array = np.asarray(widths, dtype=np.int64).reshape(-1)
        starts = np.cumsum([0, *widths], dtype=np.int64)[:-1]
        wide = width_array > 0
        return cls(
            starts=starts,
            widths=width_array,
            words=int(width_array.sum()),
            summed_starts=starts[wide],
            summed_fields=None if wide.all() else np.flatnonzero(wide),
        )

    def columns(self) -> list[tuple[int, int]]:
        """Each field's (first column, column after its last)."""
        return [
            (int(start), int(start + width))
            for start, width in zip(self.starts, self.widths, strict=True)
        ]

    def sum_by_field(self, counts: NDArray[Any]) -> NDArray[np.int64]:
        """Per-word counts (..., words) summed per field: (..., fields), int64."""
        if self.summed_fields is None:
            summed: NDArray[np.int64] = np.add.reduceat(
                counts, self.starts, axis=-1, dtype=np.int64
            )
            return summed
        out = np.zeros((*counts.shape[:-1], self.widths.size), dtype=np.int64)
        if self.summed_starts.size:
            out[..., self.summed_fields] = np.add.reduceat(
                counts, self.summed_starts, axis=-1, dtype=np.int64
            )
        return out


@dataclass(frozen=True)
class _Gathered:
    """Copies of some live records' agency codes, references and field filters, row-aligned
    (codes, not names: the index's agency list only grows, so a code is read later)."""

    agency_codes: NDArray[np.int16]
    references: NDArray[np.uint8]
    field_filters: NDArray[np.uint64]  # (rows, total words): every field side by side
    salt_tags: NDArray[np.uint32]

    def take(self, rows: NDArray[Any]) -> _Gathered:
        """The rows ``rows`` selects (a boolean mask or indices)."""
        return _Gathered(
            agency_codes=self.agency_codes[rows],
            references=self.references[rows],
            field_filters=self.field_filters[rows],
            salt_tags=self.salt_tags[rows],
        )


class IndexStore:
    """Encodings of many agencies in slots, findable by reference and blocking token (the
    storage half of :class:`~linkage.index.MatchIndex`)."""

    def __init__(
        self,
        schema: Schema,
        *,
        key_version: int,
        capacity: int = 1024,
        merge_threshold: int = 20_000,
    ) -> None:
        self.schema = schema
        self.fingerprint = schema.fingerprint()
        self.key_version = key_version
        self._lock = threading.RLock()
        self._agencies: list[str] = []
        self._agency_code: dict[str, int] = {}
        self._size = 0  # slots in use or freed (high-water mark)
        self._live = 0
        self._free: list[int] = []  # slots purged from every permutation, ready for reuse
        self._dead: list[int] = []  # withdrawn/moved slots still held by permutations
        self._merge_threshold = merge_threshold
        cap = max(16, capacity)
        # every field's filter of a slot in one row (columns: ``_field_layout``)
        self._field_layout = _FieldLayout.of([spec.published_words for spec in schema.fields])
        self._fields = np.zeros((cap, self._field_layout.words), np.uint64)
        self._record = np.zeros((cap, schema.published_record_words), np.uint64)
        self._record_pop = np.zeros(cap, np.uint32)  # the scan would count them twice as slow
        # rule-major, so that each rule's keys are one contiguous row; 32 bits a token
        self._block = np.zeros((len(schema.blocking), cap), np.uint32)
        # salt tags, narrowed like blocking tokens: a collision only lets two salts' values
        # be compared (the behaviour without tags), and two records' tags that are equal stay
        # equal; one column per salt source
        self._salt = np.zeros((cap, len(schema.salt_sources)), np.uint32)
        self._agency = np.full(cap, -1, np.int16)
        self._refs = np.zeros((cap, REFERENCE_BYTES), np.uint8)
        self._ref_index = _SortedKeys(merge_threshold)
        self._block_index = [_SortedKeys(merge_threshold) for _ in schema.blocking]

    # ------------------------------------------------------------------ bookkeeping

    def __len__(self) -> int:
        return self._live

    @property
    def agencies(self) -> tuple[str, ...]:
        return tuple(self._agencies)

    def counts_by_agency(self) -> dict[str, int]:
        with self._lock:
            codes = self._agency[: self._size]
            counts = np.bincount(codes[codes >= 0], minlength=len(self._agencies))
            return {a: int(counts[i]) for i, a in enumerate(self._agencies)}

    def nbytes(self) -> int:
        """Bytes held by the index arrays (capacity included).

        Not counted: the permutations' fences (one key, 8 bytes for references and 4 for
        blocking tokens, per ``FENCE_STRIDE`` records and permutation: 0.56 bytes a record
        for the default child schema), and each permutation's delta (4 bytes a slot) and its
        sorted copy (at most ``merge_threshold`` entries each).
        """
        arrays: list[NDArray[np.generic]] = [
            self._fields,
            self._record,
            self._record_pop,
            self._block,
            self._salt,
            self._agency,
            self._refs,
            self._ref_index.order,
            *(b.order for b in self._block_index),
        ]
        return int(sum(a.nbytes for a in arrays))

    def _code(self, agency: str) -> int:
        code = self._agency_code.get(agency)
        if code is None:
            code = len(self._agencies)
            self._agencies.append(agency)
            self._agency_code[agency] = code
        return code

    def _grow(self, needed: int) -> None:
        cap = self._agency.shape[0]
        if needed <= cap:
            return
        # Capacity never written costs no memory (np.zeros maps zero pages lazily), except
        # that transparent huge pages (numpy advises them for large arrays) make up to 2 MiB
        # past the last written row of each array resident: a fixed cost, whatever the
        # growth factor.
        new = max(needed, cap * 2)

        def grown(a: NDArray[np.generic], fill: int = 0) -> NDArray[np.generic]:
            # np.zeros maps fresh zero pages lazily: capacity not yet written costs no memory
            out = np.zeros((new, *a.shape[1:]), dtype=a.dtype)
            if fill:
                out[cap:] = fill
            out[:cap] = a
            return out

        self._fields = grown(self._fields)  # type: ignore[assignment]
        self._record = grown(self._record)  # type: ignore[assignment]
        self._record_pop = grown(self._record_pop)  # type: ignore[assignment]
        block = np.zeros((self._block.shape[0], new), dtype=np.uint32)
        block[:, :cap] = self._block
        self._block = block
        self._salt = grown(self._salt)  # type: ignore[assignment]
        self._agency = grown(self._agency, -1)  # type: ignore[assignment]
        self._refs = grown(self._refs)  # type: ignore[assignment]

    def _check(self, batch: EncodedBatch) -> None:
        if batch.schema_fingerprint != self.fingerprint:
            raise IncompatibleEncodingError(
                f"schema fingerprint {batch.schema_fingerprint} differs from the index's "
                f"{self.fingerprint}"
            )
        if batch.key_version != self.key_version:
            raise IncompatibleEncodingError(
                f"key version {batch.key_version} differs from the index's {self.key_version}"
            )
        n = len(batch)
        for spec, filters in zip(self.schema.fields, batch.field_filters, strict=True):
            validate_filters(f"field_filters[{spec.name}]", filters, n, spec.published_words)
        validate_filters(
            "record_filters", batch.record_filters, n, self.schema.published_record_words
        )
        if batch.block_keys.shape != (n, len(self.schema.blocking)):
            raise FilterFormatError(
                f"block_keys: expected shape ({n}, {len(self.schema.blocking)}), "
                f"got {tuple(batch.block_keys.shape)}"
            )
        validate_salt_tags(batch.salt_tags, n, len(self.schema.salt_sources))

    @property
    def _ref_keys(self) -> _RefKeys:
        return _RefKeys(self._refs)

    def _slots_of(self, code: int, refs: NDArray[np.uint8]) -> NDArray[np.int64]:
        """Current live slot of each (agency, reference), -1 when absent (vectorised).

        Lookup keys are 64 bits of a 128-bit reference, so two references may share one; a
        candidate that fails the full comparison is re-checked against every slot holding
        that key (never taken in practice with random references, but always correct).
        """
        keys = _ref_keys_of(refs)
        slots = self._ref_index.find_many(keys, self._ref_keys)
        hit = slots >= 0
        ok = hit.copy()
        ok[hit] = (self._agency[slots[hit]] == code) & (self._refs[slots[hit]] == refs[hit]).all(
            axis=1
        )
        for row in np.flatnonzero(hit & ~ok).tolist():
            slots[row] = -1
            for slot in self._ref_index.find(int(keys[row]), self._ref_keys).tolist():
                if self._agency[slot] == code and bytes(self._refs[slot]) == bytes(refs[row]):
                    slots[row] = slot
                    break
        slots[~hit] = -1
        return slots

    def _retire(self, slots: NDArray[np.int64]) -> None:
        """Mark slots dead (keys kept until compaction; see the module docstring)."""
        if slots.size == 0:
            return
        self._fields[slots] = 0
        self._record[slots] = 0
        self._record_pop[slots] = 0
        self._agency[slots] = -1
        self._dead.extend(slots.tolist())
        self._live -= int(slots.size)
        if len(self._dead) > self._merge_threshold:
            self.compact()

    def compact(self) -> None:
        """Drop dead slots from every permutation and make them reusable."""
        with self._lock:
            dead = np.asarray(self._dead, dtype=np.int64)
            self._ref_index.merge(self._ref_keys, drop=dead)
            for r, idx in enumerate(self._block_index):
                idx.merge(self._block[r], drop=dead)
            self._free.extend(self._dead)
            self._dead = []

    # ------------------------------------------------------------------ mutation

    def upsert(
        self, agency: str, references: Sequence[str], batch: EncodedBatch
    ) -> tuple[int, int]:
        """Insert or replace records; returns (inserted, replaced)."""
        self._check(batch)
        if len(references) != len(batch):
            raise FilterFormatError("references: expected one reference per encoded record")
        refs = np.frombuffer(
            b"".join(reference_to_bytes(r) for r in references), dtype=np.uint8
        ).reshape(-1, REFERENCE_BYTES)
        with self._lock:
            code = self._code(agency)
            slots = self._slots_of(code, refs)
            # a reference repeated inside one batch: the last occurrence wins
            _, last = np.unique(refs[::-1], axis=0, return_index=True)
            keep = np.zeros(len(refs), dtype=bool)
            keep[len(refs) - 1 - last] = True
            existing = (slots >= 0) & keep
            replaced = int(np.count_nonzero(existing))
            # a replacement whose blocking tokens changed moves to a fresh slot (invariant)
            # (compared in the narrow form the index holds: a change of the high bits only
            # leaves the held keys, hence every permutation, as they are)
            block_keys = narrow_block_keys(batch.block_keys)
            moved = existing.copy()
            stored_keys = self._block[:, slots[existing]].T
            moved[existing] = (stored_keys != block_keys[existing]).any(axis=1)
            self._retire(slots[moved])
            slots[moved] = -1
            new_rows = np.flatnonzero((slots < 0) & keep)
            for row in new_rows.tolist():
                if self._free:
                    slots[row] = self._free.pop()
                else:
                    slots[row] = self._size
                    self._size += 1
            self._grow(self._size)
            rows = np.flatnonzero(keep)
            target = slots[rows]
            if self._fields.shape[1]:
                # one row per record, all fields side by side; a missing field is all zero
                fields = np.concatenate([f[rows] for f in batch.field_filters], axis=1)
                missing = np.repeat(~batch.field_present[rows], self._field_layout.widths, axis=1)
                fields[missing] = 0
                self._fields[target] = fields
            self._record[target] = batch.record_filters[rows]
            self._record_pop[target] = similarity.popcounts(batch.record_filters[rows])
            self._salt[target] = narrow_block_keys(batch.salt_tags[rows])
            new_slots = slots[new_rows]
            self._block[:, new_slots] = block_keys[new_rows].T
            self._agency[target] = code
            self._refs[new_slots] = refs[new_rows]
            self._ref_index.add(new_slots, self._ref_keys)
            for r, idx in enumerate(self._block_index):
                idx.add(new_slots, self._block[r])
            self._live += len(new_rows)
            return len(new_rows) - int(np.count_nonzero(moved)), replaced

    def remove(self, agency: str, references: Sequence[str]) -> int:
        """Withdraw records; returns how many were present."""
        if agency not in self._agency_code:
            return 0
        refs = np.frombuffer(
            b"".join(reference_to_bytes(r) for r in references), dtype=np.uint8
        ).reshape(-1, REFERENCE_BYTES)
        with self._lock:
            slots = self._slots_of(self._agency_code[agency], refs)
            slots = np.unique(slots[slots >= 0])
            self._retire(slots)
            return int(slots.size)

    # ------------------------------------------------------------------ queries

    def snapshot(
        self, *, sample: int | None = None, seed: int = 0
    ) -> tuple[EncodedBatch, NDArray[np.int16], list[str]]:
        """All live records as one batch, with their agency codes and references.

        With ``sample``, at most that many live records drawn uniformly without replacement
        (a generator seeded with ``seed``), in slot order.

        ``block_keys`` and ``salt_tags`` are the narrow (32-bit, :func:`narrow_block_keys`)
        tokens and tags the index holds, as uint64: consistent among themselves, so blocking
        a snapshot (a ``Link``, the model fit) finds every pair the full tokens would, plus
        the rare pair of a collision, which is scored like any other (and two salts whose tags
        collide are compared, as without tags). Do not compare them with full 64-bit values.
        """
        with self._lock:
            live = np.flatnonzero(self._agency[: self._size] >= 0)
            if sample is not None and live.size > sample:
                rng = np.random.default_rng(seed)
                live = np.sort(rng.choice(live, size=sample, replace=False))
            fields = tuple(
                np.ascontiguousarray(self._fields[live, start:stop])
                for start, stop in self._field_layout.columns()
            )
            present = (
                np.stack([f.any(axis=1) for f in fields], axis=1)
                if fields
                else np.zeros((len(live), 0), bool)
            )
            batch = EncodedBatch(
                schema_fingerprint=self.fingerprint,
                key_version=self.key_version,
                field_names=self.schema.field_names,
                field_filters=fields,
                field_present=present,
                record_filters=np.ascontiguousarray(self._record[live]),
                block_keys=np.ascontiguousarray(self._block[:, live].T, dtype=np.uint64),
                salt_tags=np.ascontiguousarray(self._salt[live], dtype=np.uint64),
            )
            refs = [bytes(r).hex() for r in self._refs[live]]
            return batch, self._agency[live].copy(), refs

    def agency_name(self, code: int) -> str:
        return self._agencies[code]

    def _gather(self, slots: NDArray[np.int64]) -> tuple[_Gathered, NDArray[np.bool_]]:
        """Copies of the live records among ``slots``, in the order given (call under the
        lock), and which of ``slots`` were live.

        Copies, not views: scoring then runs without the lock. A slot's field filters are
        one contiguous row, so they are gathered by one fancy-index read.
        """
        codes = self._agency[slots]
        live = codes >= 0
        if not live.all():
            slots, codes = slots[live], codes[live]
        gathered = _Gathered(
            agency_codes=codes,
            references=self._refs[slots],
            field_filters=self._fields[slots],
            salt_tags=self._salt[slots],
        )
        return gathered, live
