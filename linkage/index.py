"""The matcher's in-memory index of published encodings, for online lookups.

Role in the pipeline: the matcher holds every agency's published encodings here (rebuilt
from its SQLite store at start) and answers ``Match``: one encoded query in, ranked
candidates (agency, reference, probability, per-field comparison levels) out. It holds
encodings and opaque references only — nothing here can be read back as an identifier.

Layout (columnar numpy arrays over *slots*; a slot is one record, reused when the same
(agency, reference) is published again):

* the packed field filters of all fields side by side, one row per slot
  ``(capacity, sum of words_f)``: field f in columns ``[start_f, start_f + words_f)``, fields
  in schema order, so that a lookup gathers each candidate's filters as one contiguous row
  (one fancy-index read, not one per field); an all-zero filter means the field is missing
  (a present value always sets at least one bit);
* the record-level filters ``(capacity, record_words)`` and their popcounts;
* the keyed blocking tokens ``(rules, capacity)``, narrowed to 32 bits
  (:func:`narrow_block_keys`: a collision can only add a candidate, which is then scored);
* the agency code (int16; -1 marks a free slot) and the reference (16 raw bytes).

Finding things: per blocking rule, and for references, a *sorted permutation* of the slots
(int32, ordered by key) is searched by bisection (of its *fences*, the key of every
``FENCE_STRIDE``-th slot, then of one stride's keys), plus a small unsorted *delta* of slots
written since the last merge, scanned vectorised; the delta is merged into the sorted
permutation when it grows past ``merge_threshold``. The invariant that makes bisection
sound: **a slot's keys never change while any permutation holds it.** A withdrawn record's
slot is marked dead (agency -1, filters zeroed, keys kept); a republished record whose
blocking tokens changed moves to a new slot and its old slot dies. Dead slots are dropped
from every permutation at the next compaction and only then reused. This keeps the index at
roughly
``sum(field filter bytes) + record filter bytes + 4·rules + 4·(rules + 2) + 18`` bytes per
record, popcounts of the record filters included (kept because counting them on every
scan costs more than storing them). Nothing else is stored per
record: the references' 64-bit lookup keys are computed from the references when a
bisection probes them.

A lookup takes the slots that share a blocking token with the query, copies their rows and
scores them field by field with the fitted Fellegi-Sunter model (a record that is a *form*,
:mod:`linkage.forms`, whose assumed salt value the query contradicts is dropped, not scored:
its record's other form is the comparison that counts; the index does not know which slots
are forms of one record, the matcher merges them); then it adds the
``scan_top_k`` slots whose record-level filter is most similar to the query's (a full scan
with the fast Dice kernel, which catches records whose every blocking token is damaged) and
scores those it did not have. The scan is the one cost that grows with the index.

Skipping the scan: with ``confident_probability`` set (the matcher passes
``CONFIDENT_PROBABILITY`` and ``CONFIDENT_CANDIDATES``), the scan runs only when no
blocking candidate already reaches that probability: a lookup whose child blocking found
needs no safety net, and a lookup that found nothing (a child held once, or damaged tokens)
still gets it. Skipping can only remove candidates, and only from lookups whose child is
already found with confidence (``benchmarks.scan_value`` compares the three settings).
``confident_probability=None`` (the library default) scans on every lookup.

Concurrency: one re-entrant lock guards every mutation. A lookup holds it only to find the
blocking candidates and gather copies of their rows, and (when it scans) to gather the scan's
rows; scoring and the full scan (GIL-free in the kernel) run without it, so concurrent
lookups use every core. The scan only proposes slots; each is re-checked (live?) and its
rows copied under the lock.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from linkage import forms, scoring, similarity
from linkage.compare import compare_fields
from linkage.encode import EncodedBatch, validate_filters, validate_salt_tags
from linkage.errors import FilterFormatError, IncompatibleEncodingError, ModelError
from linkage.schema import Schema

REFERENCE_BYTES = 16
#: With ``MatchIndex.query(..., confident_probability=CONFIDENT_PROBABILITY)`` a lookup skips
#: the full record-filter scan when at least ``CONFIDENT_CANDIDATES`` blocking candidates are
#: at least that likely matches (the matcher's setting; see the module docstring).
CONFIDENT_PROBABILITY = 0.95
CONFIDENT_CANDIDATES = 1
#: ``_SortedKeys`` keeps the key of every this-many-th sorted slot (8 bytes per this many
#: records and rule), so a blocking lookup reads about this many keys instead of bisecting.
FENCE_STRIDE = 64


def narrow_block_keys(block_keys: NDArray[np.uint64]) -> NDArray[np.uint32]:
    """The 32-bit form in which the index holds blocking tokens (any shape, elementwise).

    A token is kept as its low 32 bits, except that a token whose low 32 bits are all zero
    becomes 1, because 0 marks a missing token (the encoder maps a zero token to 1 likewise).
    Two different tokens may share a narrow form, and that can only *add* a candidate, never
    lose one: a lookup finds every slot whose narrow token equals the query's narrow token,
    which includes every slot whose full token equals the query's, and every candidate is
    then scored on its field filters by the model (blocking tokens never enter a score), so
    a colliding stranger is ranked as what it is. With HMAC tokens a collision between two
    distinct tokens has probability 2**-32.
    """
    low = (block_keys & np.uint64(0xFFFF_FFFF)).astype(np.uint32)
    return np.where((low == 0) & (block_keys != 0), np.uint32(1), low)


def reference_to_bytes(reference: str) -> bytes:
    """A reference's 16 raw bytes (references are 32 lowercase hex characters)."""
    if len(reference) != 2 * REFERENCE_BYTES:
        raise FilterFormatError(f"reference: expected {2 * REFERENCE_BYTES} hex characters")
    try:
        return bytes.fromhex(reference)
    except ValueError:
        raise FilterFormatError("reference: expected hexadecimal characters") from None


@dataclass(frozen=True)
class IndexedCandidate:
    """One lookup result: who holds it, how likely it is the same person and why."""

    agency: str
    reference: str
    probability: float
    levels: tuple[int, ...]
    #: per comparison (:attr:`Schema.comparison_names`): True where both records hold the value
    #: but it could not be compared (linkage.compare; its level is then the missing level)
    not_compared: tuple[bool, ...]


class _Keys(Protocol):
    """Per-slot unsigned keys (uint64 references, uint32 blocking tokens), indexed by a slot
    number or an array of them."""

    def __getitem__(self, slots: Any, /) -> Any: ...


def _ref_keys_of(refs: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """64-bit lookup key of each 16-byte reference: low half XOR (high half * odd const)."""
    halves = np.ascontiguousarray(refs).view("<u8").reshape(-1, 2)
    with np.errstate(over="ignore"):
        return halves[:, 0] ^ (halves[:, 1] * np.uint64(0x9E3779B97F4A7C15))


class _RefKeys:
    """The lookup key of each slot's reference, computed from the references when asked.

    Storing them would cost 8 bytes a record; the references index only reads the keys of
    the few slots a bisection probes, and of every slot at a merge.
    """

    def __init__(self, refs: NDArray[np.uint8]) -> None:
        self._refs = refs

    def __getitem__(self, slots: Any, /) -> Any:
        if isinstance(slots, int | np.integer):
            return _ref_keys_of(self._refs[[int(slots)]])[0]
        return _ref_keys_of(self._refs[slots])


class _SortedKeys:
    """Slots sorted by an unsigned key, plus an unsorted delta; lookups by bisection.

    The keys live in the index's per-slot arrays (``keys_of``, uint64 or uint32); this class
    holds only slot numbers (int32), so it relies on the index never changing the key of a
    slot it holds. Keys passed to ``find``/``find_many`` must be of the width ``keys_of``
    holds (the index narrows blocking tokens before looking them up).
    """

    def __init__(self, merge_threshold: int) -> None:
        self.order = np.zeros(0, dtype=np.int32)
        # slots added since the last merge: an int32 array (4 bytes a slot; a list of Python
        # ints took about 36, up to ``merge_threshold`` entries per permutation)
        self.delta = np.zeros(0, dtype=np.int32)
        self.merge_threshold = merge_threshold
        # the delta's keys sorted, and its slots in that order: built once per change
        self._delta_sorted: tuple[NDArray[np.unsignedinteger[Any]], NDArray[np.int64]] | None = None
        # the key of every FENCE_STRIDE-th slot of ``order``, rebuilt whenever ``order``
        # changes: ``find`` bisects these in C, then reads one stride of keys
        self._fences: NDArray[np.unsignedinteger[Any]] = np.zeros(0, dtype=np.uint64)

    def add(self, slots: NDArray[np.int64], keys_of: _Keys) -> None:
        self.delta = np.concatenate([self.delta, np.asarray(slots, dtype=np.int32)])
        self._delta_sorted = None
        if self.delta.size > self.merge_threshold:
            self.merge(keys_of)

    def delta_array(self) -> NDArray[np.int64]:
        """``delta`` as an int64 array."""
        return self.delta.astype(np.int64)

    def _sorted_delta(
        self, keys_of: _Keys
    ) -> tuple[NDArray[np.unsignedinteger[Any]], NDArray[np.int64]]:
        """The delta's keys in ascending order and its slots in that order.

        Built once per change of the delta (a held slot keeps its key), so that a lookup
        bisects the delta too instead of comparing every one of its keys.
        """
        if self._delta_sorted is None:
            slots = self.delta_array()
            keys = np.asarray(keys_of[slots]).reshape(-1)
            by_key = np.argsort(keys, kind="stable")
            self._delta_sorted = (keys[by_key], slots[by_key])
        return self._delta_sorted

    def _set_order(self, order: NDArray[np.int32], keys_of: _Keys) -> None:
        self.order = order
        self.delta = np.zeros(0, dtype=np.int32)
        self._delta_sorted = None
        self._fences = np.asarray(keys_of[order[::FENCE_STRIDE]]).reshape(-1)

    def merge(self, keys_of: _Keys, *, drop: NDArray[np.int64] | None = None) -> None:
        """Fold the delta into the sorted order; ``drop`` removes dead slots."""
        if not self.delta.size and (drop is None or drop.size == 0):
            return
        if drop is None or drop.size == 0:
            # the common case: sort only the delta and insert it into the sorted order, O(n)
            # a delta slot is never in the order too: slots are added only when fresh, or
            # reused after compaction dropped them from every permutation
            delta = np.unique(self.delta)
            delta = delta[np.argsort(keys_of[delta], kind="stable")]
            at = np.searchsorted(keys_of[self.order], keys_of[delta], side="right")
            self._set_order(np.insert(self.order, at, delta).astype(np.int32), keys_of)
            return
        slots = np.concatenate([self.order, self.delta])
        if drop is not None and drop.size:
            slots = slots[~np.isin(slots, drop)]
        slots = np.unique(slots)
        self._set_order(slots[np.argsort(keys_of[slots], kind="stable")].astype(np.int32), keys_of)

    def find(self, key: int, keys_of: _Keys) -> NDArray[np.int64]:
        """Slots whose key equals ``key``, ascending (the caller filters dead slots)."""
        return np.unique(self.find_unordered(key, keys_of)).astype(np.int64, copy=False)

    def find_unordered(self, key: int, keys_of: _Keys) -> NDArray[np.signedinteger[Any]]:
        """``find`` in no particular order: each slot once (int32 or int64).

        A lookup unions the slots of several rules and sorts them once, so it need not sort
        each rule's. Each slot appears once because the sorted order holds a slot at most
        once, the delta likewise, and never both (see ``merge``).

        Two bisections of the fences (every ``FENCE_STRIDE``-th sorted key) bound the run of
        equal keys to a window a stride wider than the run; only that window's keys are read.
        """
        order = self.order
        fences = self._fences
        wanted = fences.dtype.type(key)  # raises OverflowError for a too-wide key
        # (the ndarray methods: the np.searchsorted wrapper costs as much as the search)
        below = int(fences.searchsorted(wanted, side="left"))  # fences < key
        at_most = int(fences.searchsorted(wanted, side="right"))  # fences <= key
        start = max(0, (below - 1) * FENCE_STRIDE)  # every slot before it has a smaller key
        stop = min(order.size, at_most * FENCE_STRIDE)  # the key at ``stop`` is larger
        window = order[start:stop]
        window_keys = np.asarray(keys_of[window]).reshape(-1)
        low = int(window_keys.searchsorted(wanted, side="left"))
        high = int(window_keys.searchsorted(wanted, side="right"))
        found: NDArray[np.signedinteger[Any]] = window[low:high]
        if self.delta.size:
            delta_keys, delta_slots = self._sorted_delta(keys_of)
            wanted = delta_keys.dtype.type(key)
            low = int(delta_keys.searchsorted(wanted, side="left"))
            high = int(delta_keys.searchsorted(wanted, side="right"))
            if high > low:
                found = np.concatenate([found, delta_slots[low:high]])
        return found

    def find_reference(self, key: int, keys_of: _Keys) -> NDArray[np.int64]:
        """``find`` by plain bisection of the sorted order (the reference for tests)."""
        order = self.order

        def at(i: int) -> int:
            return int(keys_of[order[i]])

        lo = bisect_left(range(len(order)), key, key=at)
        hi = bisect_right(range(len(order)), key, lo=lo, key=at)
        found = order[lo:hi].astype(np.int64)
        if self.delta.size:
            d = self.delta_array()
            found = np.concatenate([found, d[keys_of[d] == key]])
        return np.unique(found)

    def find_many(self, keys: NDArray[np.uint64], keys_of: _Keys) -> NDArray[np.int64]:
        """For each key, one slot holding it (-1 when none); for unique keys such as refs."""
        out = np.full(keys.size, -1, dtype=np.int64)
        if self.order.size:
            # a bisection of every key at once: reads about 2·log2(n) keys per looked-up key
            # instead of gathering all n sorted keys
            order = self.order
            low = np.zeros(keys.size, dtype=np.int64)
            high = np.full(keys.size, order.size, dtype=np.int64)
            while True:
                active = low < high
                if not active.any():
                    break
                middle = (low + high) // 2
                probe = np.asarray(keys_of[order[np.minimum(middle, order.size - 1)]])
                right = active & (probe < keys)
                low = np.where(right, middle + 1, low)
                high = np.where(active & ~right, middle, high)
            pos = np.minimum(low, order.size - 1)
            hit = np.asarray(keys_of[order[pos]]) == keys
            out[hit] = order[pos[hit]]
        if self.delta.size:
            delta_keys, delta_slots = self._sorted_delta(keys_of)
            pos = np.minimum(np.searchsorted(delta_keys, keys), delta_keys.size - 1)
            hit = (delta_keys[pos] == keys) & (out < 0)
            out[hit] = delta_slots[pos[hit]]
        return out


class MatchIndex:
    """Encodings of many agencies, searchable by blocking token and record similarity."""

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
        # the schema's comparison-level cut-offs by rank, or None when the schema's levels
        # are invalid: then ``scoring.comparison_levels`` scores, and raises its error, as it
        # always did
        self._level_cut_offs = _level_cut_offs(schema)
        # per field a published form may assume (linkage.forms): its column in the presence
        # rows and the column of its salt tag (none: no pair can conflict); found once here,
        # not per lookup
        self._assumable = forms.assumable_columns(schema)
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

    def query(
        self,
        query: EncodedBatch,
        model: scoring.FellegiSunterModel,
        *,
        max_candidates: int = 10,
        min_probability: float = 0.5,
        scan_top_k: int = 20,
        scan_threshold: float = 0.5,
        confident_probability: float | None = None,
        confident_candidates: int = CONFIDENT_CANDIDATES,
        threads: int = 1,
    ) -> list[IndexedCandidate]:
        """Ranked candidates for one encoded record (see the module docstring).

        The full scan (``scan_top_k`` most similar record filters at Dice >= ``scan_threshold``)
        runs on every lookup (``confident_probability=None``, the default), or only when fewer
        than ``confident_candidates`` blocking candidates reach ``confident_probability``;
        ``scan_top_k=0`` never scans.
        """
        self._check(query)
        if len(query) != 1:
            raise FilterFormatError("query: expected exactly one encoded record")
        with self._lock:
            size = self._size
            # array objects, not copies: a concurrent upsert writes rows in place and a growth
            # swaps in new arrays, which leaves these as they were (see the scan below)
            record_filters = self._record[:size]
            record_popcounts = self._record_pop[:size]
            found: list[NDArray[np.signedinteger[Any]]] = []
            query_keys = narrow_block_keys(query.block_keys[0]).tolist()
            for r, idx in enumerate(self._block_index):
                key = int(query_keys[r])
                if key:
                    found.append(idx.find_unordered(key, self._block[r]))
            # one sort for all the rules (each rule's slots are distinct, not sorted)
            blocked = (
                np.unique(np.concatenate(found)).astype(np.int64, copy=False)
                if found
                else np.zeros(0, np.int64)
            )
            # scored before the scan only when a confident result may make the scan needless
            early = self._gather(blocked) if confident_probability is not None else None
        query_fields = self._query_fields(query)
        scored = self._score(query, query_fields, model, early) if early is not None else None
        wanted = blocked  # slots not yet scored
        if scored is not None:
            wanted = np.zeros(0, np.int64)
            if _count_confident(scored, confident_probability) >= confident_candidates:
                scan_top_k = 0
        if scan_top_k and size:
            # The full scan runs outside the lock, so that concurrent lookups use every core
            # (the kernel releases the GIL). It only proposes slots: a row being rewritten
            # meanwhile can at worst change which slots are proposed, and every proposed slot
            # is checked (live?) and its rows copied below, under the lock.
            scan_idx, _ = similarity.dice_one_to_many(
                query.record_filters[0],
                record_filters,
                threshold=scan_threshold,
                top_k=scan_top_k,
                threads=threads,
                candidate_popcounts=record_popcounts,
            )
            scanned = np.setdiff1d(scan_idx.astype(np.int64), blocked)
            wanted = np.concatenate([wanted, scanned]) if wanted.size else scanned
        if wanted.size or scored is None:
            with self._lock:
                gathered = self._gather(wanted)
            late = self._score(query, query_fields, model, gathered)
            scored = late if scored is None else _concatenate_scores(scored, late)
        order, probs = _rank(scored.probabilities, min_probability, max_candidates)
        return [
            IndexedCandidate(
                agency=self._agencies[scored.agency_codes[i]],
                reference=bytes(scored.references[i]).hex(),
                probability=float(p),
                levels=tuple(int(x) for x in scored.levels[i]),
                not_compared=tuple(bool(x) for x in scored.not_compared[i]),
            )
            for i, p in zip(order.tolist(), probs.tolist(), strict=True)
        ]

    def _gather(self, slots: NDArray[np.int64]) -> _Gathered:
        """Copies of the live records among ``slots`` (call under the lock).

        Copies, not views: scoring then runs without the lock. A slot's field filters are
        one contiguous row, so they are gathered by one fancy-index read.
        """
        codes = self._agency[slots]
        live = codes >= 0
        if not live.all():
            slots, codes = slots[live], codes[live]
        return _Gathered(
            agency_codes=codes,
            references=self._refs[slots],
            field_filters=self._fields[slots],
            salt_tags=self._salt[slots],
        )

    def _query_fields(self, query: EncodedBatch) -> _QueryFields:
        """The query's field filters side by side (as the index holds a slot's) and their
        bit counts per field."""
        if not self._fields.shape[1]:
            # no field has a word: every field empty
            return _QueryFields(np.zeros(0, np.uint64), np.zeros(len(self.schema.fields), np.int64))
        row = np.concatenate([f[0] for f in query.field_filters])
        return _QueryFields(row, self._field_layout.sum_by_field(np.bitwise_count(row)))

    def _score(
        self,
        query: EncodedBatch,
        query_fields: _QueryFields,
        model: scoring.FellegiSunterModel,
        gathered: _Gathered,
    ) -> _Scored:
        """Compare the query with gathered records field by field and score them.

        A record that is a form whose assumed salt value the query contradicts, or that the
        query (a form) contradicts, is dropped (:func:`linkage.forms.assumption_conflicts`):
        the record's other form is the comparison that counts."""
        count = len(gathered.agency_codes)
        n_fields = len(self.schema.fields)
        if count and n_fields:
            sim, present = _dice_fields_to_one(
                query_fields, gathered.field_filters, self._field_layout
            )
        else:
            sim = np.zeros((count, n_fields))
            present = np.zeros((count, n_fields), dtype=bool)
        query_tags = narrow_block_keys(query.salt_tags[:1])  # held narrow, like the index's
        if count and self._assumable:
            conflicts = forms.assumption_conflicts(
                self._assumable, query.field_present[:1], query_tags, present, gathered.salt_tags
            )
            if conflicts.any():
                keep = ~conflicts
                gathered = gathered.take(keep)
                sim, present = sim[keep], present[keep]
                count = len(gathered.agency_codes)
        compared = compare_fields(
            self.schema, sim, query.field_present[:1], present, query_tags, gathered.salt_tags
        )
        if self._level_cut_offs is None:
            levels = scoring.comparison_levels(
                compared.similarity,
                compared.present,
                tuple(f.levels for f in self.schema.comparison_specs),
            )
        else:
            levels = scoring.levels_from_cut_offs(
                compared.similarity, compared.present, self._level_cut_offs
            )
        return _Scored(
            agency_codes=gathered.agency_codes,
            references=gathered.references,
            levels=levels,
            not_compared=compared.not_compared,
            probabilities=(model.match_probability(levels) if count else np.zeros(0, np.float64)),
        )


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
class _QueryFields:
    """A query's field filters side by side (one row, columns as the index's) and the number
    of bits set in each field."""

    row: NDArray[np.uint64]
    bits: NDArray[np.int64]


def _dice_fields_to_one(
    query: _QueryFields, candidates: NDArray[np.uint64], layout: _FieldLayout
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Dice of the query with each candidate row, per field, and which fields are non-empty.

    ``candidates`` is (rows, total words), every field's filter side by side (``layout``).
    Returns two (rows, fields) arrays: per field the same values as ``similarity.dice_pairs``
    on that field's columns (``2·|q∧c| / (|q| + |c|)``, 0.0 when both are empty;
    :func:`_dice_to_one_reference`), and whether the candidate's filter has any bit set. In
    a handful of numpy calls for all fields at once: a lookup scores tens of rows, where the
    kernel's argument checks and task set-up (or a call per field) cost more than counting.
    """
    candidate_bits = layout.sum_by_field(np.bitwise_count(candidates))
    common = layout.sum_by_field(np.bitwise_count(candidates & query.row))
    total = candidate_bits + query.bits
    dice = np.divide(2.0 * common, total, out=np.zeros(total.shape), where=total > 0)
    return dice, candidate_bits > 0


def _level_cut_offs(schema: Schema) -> tuple[NDArray[np.float64], ...] | None:
    """``scoring.level_cut_offs`` of the schema's comparisons, checked once per index; None when
    they are invalid (or there are no fields), so each query raises as
    ``scoring.comparison_levels`` does."""
    if not schema.fields:
        return None
    try:
        return scoring.level_cut_offs(tuple(tuple(spec.levels) for spec in schema.comparison_specs))
    except ModelError:
        return None


def _dice_to_one_reference(
    query: NDArray[np.uint64], candidates: NDArray[np.uint64]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Dice of one filter with each row of ``candidates`` through ``similarity.dice_pairs``,
    and which rows are non-empty (the reference for :func:`_dice_fields_to_one` in tests)."""
    rows = np.arange(candidates.shape[0], dtype=np.int64)
    dice = similarity.dice_pairs(query.reshape(1, -1), candidates, np.zeros_like(rows), rows)
    present: NDArray[np.bool_] = np.asarray(candidates.any(axis=1), dtype=bool)
    return dice, present


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


@dataclass(frozen=True)
class _Scored:
    """Scored candidates of one query, row-aligned."""

    agency_codes: NDArray[np.int16]
    references: NDArray[np.uint8]
    levels: NDArray[np.int8]
    not_compared: NDArray[np.bool_]
    probabilities: NDArray[np.float64]


def _count_confident(scored: _Scored, probability: float | None) -> int:
    """How many scored candidates reach ``probability`` (0 when it is None: always scan)."""
    if probability is None:
        return 0
    return int(np.count_nonzero(scored.probabilities >= probability))


def _concatenate_scores(first: _Scored, second: _Scored) -> _Scored:
    return _Scored(
        agency_codes=np.concatenate([first.agency_codes, second.agency_codes]),
        references=np.concatenate([first.references, second.references]),
        levels=np.concatenate([first.levels, second.levels]),
        not_compared=np.concatenate([first.not_compared, second.not_compared]),
        probabilities=np.concatenate([first.probabilities, second.probabilities]),
    )


def _rank(
    prob: NDArray[np.float64], threshold: float, top_k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    from linkage.solve import rank_candidates

    return rank_candidates(np.arange(prob.size), prob, threshold=threshold, top_k=top_k)
