"""The index's lookup tables: slots sorted by a key, searched by bisection.

Role: :class:`~linkage.index.store.IndexStore` keeps one :class:`_SortedKeys` per blocking
rule (keyed by that rule's token) and one for references (keyed by a 64-bit key computed from
the reference, :func:`_ref_keys_of`); a lookup finds the slots holding a blocking token here,
an upsert finds a reference's current slot.

Layout: a *sorted permutation* of slot numbers (int32, ordered by key), the *fences* (the key
of every :data:`FENCE_STRIDE`-th slot of the permutation), and a small unsorted *delta* of
slots added since the last merge (folded into the permutation past ``merge_threshold``). The
keys themselves are not held here: they are read from the index's per-slot arrays
(``keys_of``, uint32 blocking tokens or :class:`_RefKeys`).

Invariants:

* **A slot's key never changes while a permutation holds it** (the store moves a record whose
  tokens change to a fresh slot, and drops dead slots from every permutation only at a merge
  with ``drop``); every bisection here relies on it.
* A slot is held at most once: in the sorted order or in the delta, never both.
* Keys passed to a find are of the width ``keys_of`` holds (the store narrows blocking tokens
  with :func:`narrow_block_keys` before looking them up).

Contract: the finds return every slot whose key equals the one asked for, dead slots
included (the caller checks liveness); ``find_reference`` is the plain bisection the fenced
finds are tested against.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

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

        Each slot appears once because the sorted order holds a slot at most once, the delta
        likewise, and never both (see ``merge``). Two bisections of the fences (every
        ``FENCE_STRIDE``-th sorted key) bound the run of equal keys to a window a stride
        wider than the run; only that window's keys are read. For a few keys this costs
        fewer numpy calls than :meth:`find_each`.
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

    def find_each(
        self, keys: NDArray[np.unsignedinteger[Any]], keys_of: _Keys
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Every slot holding each of ``keys``, as pairs (position in ``keys``, slot), in no
        particular order; each pair once for distinct keys (a key repeated in ``keys`` finds
        its slots again, at each of its positions).

        All keys at once, in a fixed number of numpy calls (as :meth:`find_unordered` finds
        one): per key, two bisections of the fences bound the run of equal keys to a window a
        stride wider than the run, and only the windows' keys are read; the delta's sorted
        keys are bisected likewise. A slot is found once per key because the sorted order
        holds a slot at most once, the delta likewise, and never both (see ``merge``).
        Raises OverflowError for a key wider than the keys held.
        """
        order = self.order
        positions = np.arange(np.asarray(keys).size, dtype=np.int64)
        found_which = found_slots = np.zeros(0, dtype=np.int64)
        if order.size:
            fences = self._fences
            wanted = _as_width(keys, fences.dtype)
            below = fences.searchsorted(wanted, side="left").astype(np.int64)  # fences < key
            at_most = fences.searchsorted(wanted, side="right").astype(np.int64)  # <= key
            # every slot before ``start`` has a smaller key, the key at ``stop`` is larger
            # (``stop >= start``: ``below`` <= ``at_most``, and ``start`` < ``order.size``)
            start = np.maximum(0, (below - 1) * FENCE_STRIDE)
            lengths = np.minimum(order.size, at_most * FENCE_STRIDE) - start
            which = np.repeat(positions, lengths)
            window = order[_ranges(start, lengths)]
            hit = np.asarray(keys_of[window]).reshape(-1) == wanted[which]
            found_which, found_slots = which[hit], window[hit].astype(np.int64)
        if self.delta.size:
            delta_keys, delta_slots = self._sorted_delta(keys_of)
            wanted = _as_width(keys, delta_keys.dtype)
            low = delta_keys.searchsorted(wanted, side="left").astype(np.int64)
            lengths = delta_keys.searchsorted(wanted, side="right").astype(np.int64) - low
            if lengths.any():
                found_which = np.concatenate([found_which, np.repeat(positions, lengths)])
                found_slots = np.concatenate([found_slots, delta_slots[_ranges(low, lengths)]])
        return found_which, found_slots

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


def _as_width(
    keys: NDArray[np.unsignedinteger[Any]], dtype: np.dtype[Any]
) -> NDArray[np.unsignedinteger[Any]]:
    """``keys`` as unsigned integers of ``dtype``; OverflowError for a key that does not fit
    (it would otherwise wrap round and find another key's slots)."""
    array = np.asarray(keys).reshape(-1)
    if array.dtype == dtype:
        return array
    if array.size and (array.min() < 0 or array.max() > np.iinfo(dtype).max):
        raise OverflowError(f"key too wide for the {dtype} keys held")
    return array.astype(dtype)


def _ranges(starts: NDArray[np.int64], lengths: NDArray[np.int64]) -> NDArray[np.int64]:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])``, vectorised."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(total, dtype=np.int64)
