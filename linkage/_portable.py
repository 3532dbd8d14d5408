"""The kernels of ``linkage._dicekernel`` in numpy and Python's :mod:`hmac`: the portable path.

Role: :mod:`linkage.kernel` runs these where the C extension is not built or not importable,
or when ``JIGSAW_PORTABLE_KERNEL=1`` asks for them. Slower, same results.

Contract: every function takes the C functions' arguments in the same order and gives
bit-identical output: the same scores (``2 * and_count / (count_a + count_b)`` in float64,
0.0 for two empty filters), the same pairs in the same order and the same resume positions
from :func:`scan`, the same HMAC words, filters and masks. Arguments are checked as the C
module checks them, with the same messages for the buffer checks: ``TypeError`` for an object
that is not a buffer, ``ValueError`` for a wrong item type, shape, layout or range,
``IndexError`` for an index outside its batch. Output buffers are written in place; nothing
is kept between calls. Layouts (filters as little-endian uint64 words, bit ``i`` in word
``i // 64`` at bit ``i % 64``) and each function's arguments are those of the C sources in
``linkage/_kernel/``; ``tests/linkage/test_kernel_paths.py`` holds the two implementations together.

The one CPU path is called ``"numpy"`` (kernel id 0); :func:`hmac_paths` names one SHA-256
path, ``"python-hmac"``.
"""

from __future__ import annotations

import hmac
import math
import operator
import sys
from typing import Any

import numpy as np
from numpy.typing import NDArray

U64 = np.uint64
_KERNELS = ("numpy",)
_HMAC_PATHS = (("python-hmac", True),)
#: Bytes of candidate filters per cache tile of :func:`scan` (as in the C kernel: the tile
#: size decides where a full output buffer stops the scan, so it is part of the contract).
_TILE_BYTES = 262144
#: Elements of the (queries, candidates, words) AND block computed at once by :func:`scan`.
_SCAN_ELEMENTS = 1 << 20
#: Pairs per chunk of :func:`pairs`, rows per chunk of :func:`diffuse` and :func:`blip_mask`.
_CHUNK = 1 << 14
_GAMMA = U64(0x9E3779B97F4A7C15)
_MIX_1 = U64(0xBF58476D1CE4E5B9)
_MIX_2 = U64(0x94D049BB133111EB)
_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1

# (label, itemsize, accepted struct format codes, dtype) per buffer kind, as buffers.c checks.
_KINDS = {
    "u64": ("uint64", 8, "QL", np.dtype(np.uint64)),
    "u32": ("uint32", 4, "IL", np.dtype(np.uint32)),
    "i64": ("int64", 8, "ql", np.dtype(np.int64)),
    "f64": ("float64", 8, "d", np.dtype(np.float64)),
}


# ------------------------------------------------------------------------------ arguments


def _acquire(value: object, name: str, kind: str, ndim: int, writable: bool = False) -> Any:
    """``value`` as an array sharing its memory, checked as buffers.c's ``acquire`` checks."""
    label, itemsize, codes, dtype = _KINDS[kind]
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name}: expected a {label} buffer, got {type(value).__name__}") from None
    if not view.c_contiguous or (writable and view.readonly):
        raise ValueError(
            f"{name}: expected a C-contiguous{' writable' if writable else ''} {label} buffer"
        )
    form = view.format
    native = ("@", "=", "<") if sys.byteorder == "little" else ("@", "=")
    code = form[1:] if form[:1] in native else form
    if len(code) != 1 or code not in codes or view.itemsize != itemsize:
        raise ValueError(f"{name}: expected {label} items, got format '{form}'")
    if view.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got {view.ndim}")
    if ndim == 2 and view.shape is not None and view.shape[1] < 1:
        raise ValueError(f"{name}: expected at least one 64-bit word per filter")
    array = np.asarray(view)
    return array if array.dtype == dtype else array.view(dtype)


def _bytes(value: object) -> bytes:
    """A bytes-like argument (the C module's ``y*``): its bytes; ``str`` is refused."""
    if isinstance(value, str):
        raise TypeError(f"a bytes-like object is required, not '{type(value).__name__}'")
    return memoryview(value).tobytes()  # type: ignore[arg-type]


def _int(value: object) -> int:
    return operator.index(value)  # type: ignore[arg-type]


def _real(value: object) -> float:
    """A float argument (the C module's ``d``): numbers only, never text."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"must be real number, not {type(value).__name__}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"must be real number, not {type(value).__name__}") from None


def _check_kernel(kernel: object) -> None:
    kernel_id = _int(kernel)
    if kernel_id != 0:
        raise ValueError(f"kernel: expected a supported kernel id, got {kernel_id}")


def _check_hmac_path(path: object, function: str) -> None:
    if _int(path) not in (-1, *range(len(_HMAC_PATHS))):
        raise ValueError(
            f"{function}: path must be -1 (the fastest) or the index of a path in "
            "hmac_paths() that this CPU supports"
        )


def _offsets_valid(offsets: NDArray[np.int64], count: int, length: int) -> bool:
    """offsets[0..count] ascending, each within [0, length] (offsets_valid in buffers.c)."""
    if count < 0:
        return False
    head, tail = offsets[:count], offsets[1 : count + 1]
    return bool(np.all(head >= 0) and np.all(head <= tail) and np.all(tail <= length))


# ------------------------------------------------------------------------------ Dice


def kernel_name() -> str:
    """Name of the CPU path in use: ``"numpy"``."""
    return _KERNELS[0]


def available_kernels() -> tuple[str, ...]:
    """The CPU paths of this implementation (kernel ids are positions here)."""
    return _KERNELS


def _row_counts(filters: NDArray[np.uint64]) -> NDArray[np.uint64]:
    counts: NDArray[np.uint64] = np.bitwise_count(filters).sum(axis=1, dtype=U64)
    return counts


def _dice(
    and_counts: NDArray[np.uint64], counts_a: NDArray[Any], counts_b: NDArray[Any]
) -> NDArray[np.float64]:
    """``2 * and / (a + b)`` in float64 (both operands exact), 0.0 where ``a + b == 0``."""
    denominators = counts_a.astype(U64) + counts_b.astype(U64)
    scores = np.zeros(np.broadcast(and_counts, denominators).shape, dtype=np.float64)
    np.divide(
        (U64(2) * and_counts).astype(np.float64),
        denominators.astype(np.float64),
        out=scores,
        where=denominators != 0,
    )
    return scores


def popcounts(filters: object, out: object, kernel: object) -> None:
    """``out[i]`` = number of set bits of ``filters[i]``."""
    _check_kernel(kernel)
    batch = _acquire(filters, "filters", "u64", 2)
    counts = _acquire(out, "out", "u32", 1, writable=True)
    if counts.shape[0] != batch.shape[0]:
        raise ValueError("out: expected one entry per filter")
    if batch.shape[1] * 64 > _UINT32_MAX:
        raise ValueError("filters: expected fewer than 2**32 bits per filter")
    counts[:] = _row_counts(batch)


def _dice_bound(count_a: int, count_b: int) -> float:
    total = count_a + count_b
    return 0.0 if total == 0 else 2 * min(count_a, count_b) / total


def _feasible_interval(
    query_count: int, max_count: int, threshold: float, use_bound: bool
) -> tuple[int, int]:
    """Candidate popcounts whose Dice bound reaches ``threshold`` (dice.c's
    ``feasible_interval``): ``(low, high)``, empty when ``low > high``."""
    if not use_bound:
        return 0, _UINT64_MAX
    max_count = max(max_count, query_count)
    if query_count == 0:
        return (0, _UINT64_MAX) if threshold <= 0.0 else (1, 0)
    if not threshold <= 1.0:
        return 1, 0
    lo, hi = 0, query_count
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if _dice_bound(query_count, mid) >= threshold:
            hi = mid
        else:
            lo = mid + 1
    low = lo
    lo, hi = query_count, max_count
    while lo < hi:
        mid = lo + (hi - lo + 1) // 2
        if _dice_bound(query_count, mid) >= threshold:
            lo = mid
        else:
            hi = mid - 1
    return low, (_UINT64_MAX if lo == max_count else lo)


def scan(
    queries: object,
    query_popcounts: object,
    candidates: object,
    candidate_popcounts: object,
    threshold: object,
    query_start: object,
    query_stop: object,
    candidate_start: object,
    candidate_stop: object,
    resume_block: object,
    resume_query: object,
    out_query: object,
    out_candidate: object,
    out_score: object,
    use_bound: object,
    kernel: object,
) -> tuple[int, int, int]:
    """Every pair at or above ``threshold`` in the ranges, resumable: the contract of
    ``scan`` in dice.c, with the same tiles, order and stopping points."""
    limit = _real(threshold)
    q_start, q_stop, c_start, c_stop, block, query = map(
        _int, (query_start, query_stop, candidate_start, candidate_stop, resume_block, resume_query)
    )
    bounded = bool(use_bound)
    _check_kernel(kernel)
    if math.isnan(limit):
        raise ValueError("threshold: expected a number, got NaN")
    q_filters = _acquire(queries, "queries", "u64", 2)
    q_counts = _acquire(query_popcounts, "query_popcounts", "u32", 1)
    c_filters = _acquire(candidates, "candidates", "u64", 2)
    c_counts = _acquire(candidate_popcounts, "candidate_popcounts", "u32", 1)
    found_query = _acquire(out_query, "out_query", "i64", 1, writable=True)
    found_candidate = _acquire(out_candidate, "out_candidate", "i64", 1, writable=True)
    found_score = _acquire(out_score, "out_score", "f64", 1, writable=True)
    words = q_filters.shape[1]
    capacity = found_query.shape[0]
    problem = None
    if c_filters.shape[1] != words:
        problem = "candidates: expected the same number of words per filter as queries"
    elif q_counts.shape[0] != q_filters.shape[0]:
        problem = "query_popcounts: expected one entry per query"
    elif c_counts.shape[0] != c_filters.shape[0]:
        problem = "candidate_popcounts: expected one entry per candidate"
    elif found_candidate.shape[0] != capacity or found_score.shape[0] != capacity:
        problem = "out_query, out_candidate, out_score: expected equal lengths"
    elif capacity < 1:
        problem = "out_score: expected room for at least one pair"
    elif q_start < 0 or q_stop > q_filters.shape[0] or q_start > q_stop:
        problem = "query_start, query_stop: expected a range within the queries"
    elif c_start < 0 or c_stop > c_filters.shape[0] or c_start > c_stop:
        problem = "candidate_start, candidate_stop: expected a range within the candidates"
    elif not (c_start <= block <= c_stop and q_start <= query <= q_stop):
        problem = "resume_block, resume_query: expected a position inside the ranges"
    if problem is not None:
        raise ValueError(problem)

    tile = min(max(1, _TILE_BYTES // (words * 8)), capacity)
    max_count = words * 64
    floor = limit * (1.0 - 1e-12) if limit > 0.0 else 0.0
    counts_of_queries = q_counts.tolist()
    intervals = {
        q: _feasible_interval(counts_of_queries[q], max_count, limit, bounded)
        for q in range(q_start, q_stop)
    }
    count = 0
    while block < c_stop:
        block_end = min(block + tile, c_stop)
        width = block_end - block
        block_filters = c_filters[block:block_end]
        block_counts = c_counts[block:block_end].astype(U64)
        step = max(1, _SCAN_ELEMENTS // (width * words))
        while query < q_stop:
            if capacity - count < width:
                return count, block, query
            end = min(query + step, q_stop)
            rows = np.arange(query, end)
            and_counts = np.bitwise_count(
                q_filters[query:end, None, :] & block_filters[None, :, :]
            ).sum(axis=2, dtype=U64)
            row_counts = q_counts[query:end].astype(U64)[:, None]
            # The popcount bound, then the division-free rejection, then the score (dice.c).
            lows = np.array([intervals[q][0] for q in rows.tolist()], dtype=U64)[:, None]
            highs = np.array([intervals[q][1] for q in rows.tolist()], dtype=U64)[:, None]
            candidates_row = block_counts[None, :]
            keep = (candidates_row >= lows) & (candidates_row <= highs)
            denominators = (row_counts + candidates_row).astype(np.float64)
            keep &= ~((U64(2) * and_counts).astype(np.float64) < floor * denominators)
            scores = _dice(and_counts, row_counts, candidates_row)
            keep &= scores >= limit
            per_query = keep.sum(axis=1)
            # A query is written only when a whole block's worth of room is left before it.
            before = count + np.concatenate(([0], np.cumsum(per_query)[:-1]))
            short = np.flatnonzero(capacity - before < width)
            fits = int(short[0]) if short.size else len(rows)
            hit_rows, hit_columns = np.nonzero(keep[:fits])
            written = hit_rows.shape[0]
            found_query[count : count + written] = rows[hit_rows]
            found_candidate[count : count + written] = hit_columns + block
            found_score[count : count + written] = scores[hit_rows, hit_columns]
            count += written
            query += fits
            if fits < len(rows):
                return count, block, query
        query = q_start
        block += tile
    return count, c_stop, q_start


def pairs(
    left: object,
    left_popcounts: object,
    right: object,
    right_popcounts: object,
    left_idx: object,
    right_idx: object,
    start: object,
    stop: object,
    out: object,
    kernel: object,
) -> None:
    """``out[k - start] = Dice(left[left_idx[k]], right[right_idx[k]])`` for ``start <= k <
    stop``; ``IndexError`` naming the index argument at the first index out of range (the
    scores before it are written, as in C)."""
    first, last = _int(start), _int(stop)
    _check_kernel(kernel)
    left_filters = _acquire(left, "left", "u64", 2)
    left_counts = _acquire(left_popcounts, "left_popcounts", "u32", 1)
    right_filters = _acquire(right, "right", "u64", 2)
    right_counts = _acquire(right_popcounts, "right_popcounts", "u32", 1)
    left_index = _acquire(left_idx, "left_idx", "i64", 1)
    right_index = _acquire(right_idx, "right_idx", "i64", 1)
    scores = _acquire(out, "out", "f64", 1, writable=True)
    pair_count = left_index.shape[0]
    problem = None
    if right_filters.shape[1] != left_filters.shape[1]:
        problem = "right: expected the same number of words per filter as left"
    elif left_counts.shape[0] != left_filters.shape[0]:
        problem = "left_popcounts: expected one entry per left filter"
    elif right_counts.shape[0] != right_filters.shape[0]:
        problem = "right_popcounts: expected one entry per right filter"
    elif right_index.shape[0] != pair_count:
        problem = "right_idx: expected the same length as left_idx"
    elif first < 0 or last > pair_count or first > last:
        problem = "start, stop: expected a range within the pairs"
    elif scores.shape[0] != last - first:
        problem = "out: expected one entry per pair in the range"
    if problem is not None:
        raise ValueError(problem)
    left_rows, right_rows = left_filters.shape[0], right_filters.shape[0]
    lefts, rights = left_index[first:last], right_index[first:last]
    bad = (lefts < 0) | (lefts >= left_rows) | (rights < 0) | (rights >= right_rows)
    end = int(np.argmax(bad)) if np.any(bad) else last - first
    for begin in range(0, end, _CHUNK):
        li, ri = lefts[begin : min(begin + _CHUNK, end)], rights[begin : min(begin + _CHUNK, end)]
        and_counts = np.bitwise_count(left_filters[li] & right_filters[ri]).sum(axis=1, dtype=U64)
        scores[begin : begin + li.shape[0]] = _dice(and_counts, left_counts[li], right_counts[ri])
    if end < last - first:
        left_bad = bool(lefts[end] < 0 or lefts[end] >= left_rows)
        name, rows = ("left_idx", left_rows) if left_bad else ("right_idx", right_rows)
        raise IndexError(f"{name}: entry at position {first + end} is outside [0, {rows})")


# ------------------------------------------------------------------------------ hardening


def _bits(filters: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """(n, words) filters as (n, 64 * words) bits, bit ``i`` of a row at column ``i``."""
    raw = np.ascontiguousarray(filters, dtype="<u8").view(np.uint8)
    return np.unpackbits(raw, axis=1, bitorder="little")


def _words(bits: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """The inverse of :func:`_bits`."""
    packed = np.packbits(bits, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(U64)


def diffuse(filters: object, table: object, out: object) -> None:
    """Output bit ``j`` of a row = XOR of its input bits ``table[j, 0..t-1]``."""
    batch = _acquire(filters, "filters", "u64", 2)
    positions = _acquire(table, "table", "i64", 2)
    result = _acquire(out, "out", "u64", 2, writable=True)
    rows, in_words = batch.shape
    out_bits = positions.shape[0]
    if result.shape[0] != rows or result.shape[1] * 64 != out_bits:
        raise ValueError("out: expected one row per filter and table rows / 64 words")
    if np.any(positions < 0) or np.any(positions >= in_words * 64):
        raise ValueError("table: expected input bit positions")
    step = max(1, _CHUNK // max(1, positions.shape[1]))
    for begin in range(0, rows, step):
        bits = _bits(batch[begin : begin + step])
        mixed = np.bitwise_xor.reduce(bits[:, positions], axis=2)
        result[begin : begin + step] = _words(mixed)


def blip_mask(seeds: object, threshold: object, out: object) -> None:
    """The BLIP flip mask from one seed per row: random word ``c`` (``c = 1, 2, ...``) of a
    row is splitmix64's mix of ``seed + c * 0x9E3779B97F4A7C15``; its four 16-bit lanes,
    lowest first, decide bits ``4 (c - 1) .. 4 (c - 1) + 3``: a bit flips when its lane is
    below ``threshold``."""
    limit = U64(_int(threshold) & _UINT64_MAX)
    row_seeds = _acquire(seeds, "seeds", "u64", 1)
    result = _acquire(out, "out", "u64", 2, writable=True)
    rows, words = result.shape
    if rows != row_seeds.shape[0]:
        raise ValueError("out: expected one row per seed")
    counters = np.arange(1, 16 * words + 1, dtype=U64) * _GAMMA
    shifts = np.arange(4, dtype=U64) * U64(16)
    step = max(1, _CHUNK // words)
    with np.errstate(over="ignore"):
        for begin in range(0, rows, step):
            z = row_seeds[begin : begin + step, None] + counters[None, :]
            z = (z ^ (z >> U64(30))) * _MIX_1
            z = (z ^ (z >> U64(27))) * _MIX_2
            z ^= z >> U64(31)
            lanes = (z[:, :, None] >> shifts) & U64(0xFFFF)
            flips = (lanes < limit).reshape(z.shape[0], 64 * words).astype(np.uint8)
            result[begin : begin + step] = _words(flips)


# ------------------------------------------------------------------------------ HMAC


def hmac_paths() -> tuple[tuple[str, bool], ...]:
    """``((name, supported), ...)`` of the SHA-256 paths, by index: Python's hmac only."""
    return _HMAC_PATHS


def _hmac_digests(key: bytes, messages: list[bytes]) -> bytes:
    """HMAC-SHA256 digests of the messages under one key, concatenated."""
    keyed = hmac.new(key, digestmod="sha256")
    digests = bytearray()
    for message in messages:
        state = keyed.copy()
        state.update(message)
        digests += state.digest()
    return bytes(digests)


def hmac_words(
    key: object,
    data: object,
    offsets: object,
    blocks: object,
    counter: object,
    out: object,
    path: object = -1,
) -> None:
    """``out[i, 8b:8b+8]`` = the little-endian uint32 words of HMAC-SHA256(key, bytes([b]) +
    message i) with ``counter``, of HMAC-SHA256(key, message i) without (then ``blocks`` is
    1); message i = ``data[offsets[i]:offsets[i+1]]``."""
    key_bytes, blob = _bytes(key), _bytes(data)
    block_count, with_counter = _int(blocks), bool(counter)
    _check_hmac_path(path, "hmac_words")
    starts = _acquire(offsets, "offsets", "i64", 1)
    words = _acquire(out, "out", "u32", 2, writable=True)
    messages = starts.shape[0] - 1
    if not (
        1 <= block_count <= 255
        and (with_counter or block_count == 1)
        and _offsets_valid(starts, messages, len(blob))
        and words.shape[0] == messages
        and words.shape[1] == 8 * block_count
    ):
        raise ValueError(
            "hmac_words: expected 1..255 blocks (1 without a counter), offsets[n + 1] "
            "ascending within data, and out of shape (n, 8 * blocks)"
        )
    bounds = starts.tolist()
    parts = [blob[bounds[i] : bounds[i + 1]] for i in range(messages)]
    if with_counter:
        parts = [bytes((b,)) + part for part in parts for b in range(block_count)]
    digests = _hmac_digests(key_bytes, parts)
    words[:] = np.frombuffer(digests, dtype="<u4").reshape(messages, 8 * block_count)


def token_filters(
    key: object,
    prefixes: object,
    prefix_offsets: object,
    tokens: object,
    token_offsets: object,
    value_tokens: object,
    combo_value: object,
    combo_prefix: object,
    hashes: object,
    bits: object,
    out: object,
    path: object = -1,
) -> None:
    """``out[c]`` = the Bloom filter of the tokens of value ``combo_value[c]``, each prefixed
    with prefix ``combo_prefix[c]``, under ``key``: the positions of ``token_positions``
    (tokens.c states the layout of the blobs and offsets)."""
    key_bytes, prefix_blob, token_blob = _bytes(key), _bytes(prefixes), _bytes(tokens)
    hash_count, modulus = _int(hashes), _int(bits)
    _check_hmac_path(path, "token_filters")
    names = ("prefix_offsets", "token_offsets", "value_tokens", "combo_value", "combo_prefix")
    values = (prefix_offsets, token_offsets, value_tokens, combo_value, combo_prefix)
    prefix_at, token_at, value_at, combo_values, combo_prefixes = (
        _acquire(value, name, "i64", 1) for value, name in zip(values, names, strict=True)
    )
    filters = _acquire(out, "out", "u64", 2, writable=True)
    n_prefixes, n_tokens = prefix_at.shape[0] - 1, token_at.shape[0] - 1
    n_values, combos = value_at.shape[0] - 1, combo_values.shape[0]
    words = filters.shape[1]
    ok = (
        1 <= hash_count <= 255 * 8
        and 1 <= modulus <= words * 64
        and _offsets_valid(prefix_at, n_prefixes, len(prefix_blob))
        and _offsets_valid(token_at, n_tokens, len(token_blob))
        and _offsets_valid(value_at, n_values, n_tokens)
        and combo_prefixes.shape[0] == combos
        and filters.shape[0] == combos
    )
    ok = ok and bool(
        np.all((combo_values >= 0) & (combo_values < n_values))
        and np.all((combo_prefixes >= 0) & (combo_prefixes < n_prefixes))
    )
    if not ok:
        raise ValueError(
            "token_filters: expected 1..2040 hashes, 1 <= bits <= 64 * out words, "
            "ascending offsets within their blobs (value_tokens within the "
            "tokens), combo_value and combo_prefix of one length within range, "
            "and out of shape (combinations, words)"
        )
    blocks = (hash_count + 7) // 8
    prefix_list = [prefix_blob[prefix_at[p] : prefix_at[p + 1]] for p in range(n_prefixes)]
    token_list = [token_blob[token_at[t] : token_at[t + 1]] for t in range(n_tokens)]
    spans = value_at.tolist()
    rows: list[int] = []
    messages: list[bytes] = []
    for c, (v, p) in enumerate(zip(combo_values.tolist(), combo_prefixes.tolist(), strict=True)):
        for t in range(spans[v], spans[v + 1]):
            rows.append(c)
            messages.append(prefix_list[p] + token_list[t])
    # Each distinct message is hashed once per call (a name's tokens recur across values).
    distinct = list(dict.fromkeys(messages))
    numbered = {message: i for i, message in enumerate(distinct)}
    digests = _hmac_digests(
        key_bytes, [bytes((b,)) + message for message in distinct for b in range(blocks)]
    )
    all_words = np.frombuffer(digests, dtype="<u4").reshape(len(distinct), 8 * blocks)
    positions = all_words[:, :hash_count].astype(np.int64) % modulus
    filters[:] = 0
    if not messages:
        return
    chosen = positions[[numbered[message] for message in messages]]
    row_of = np.repeat(np.asarray(rows, dtype=np.int64), hash_count)
    flat = chosen.reshape(-1)
    np.bitwise_or.at(filters, (row_of, flat >> 6), np.left_shift(U64(1), (flat & 63).astype(U64)))
