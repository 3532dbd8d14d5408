"""Hardening transforms for packed Bloom filters: the last step of encoding on the node.

Role: after :mod:`linkage.encode` has built a field-level or record-level filter batch, the
node may harden it before publishing, so that an honest-but-curious matcher (who sees every
encoding but never the key) learns less from bit patterns and frequencies.

Transforms (paper symbols in the function docstrings): :func:`balance` (balanced filters,
removes the popcount leak), :func:`diffuse` (keyed XOR diffusion), :func:`xor_fold` (XOR
folding), :func:`blip` (randomised response per bit). Salting is not here but in
:mod:`linkage.encode`, because it changes the tokens, not the filter.

Invariants:

* Every transform takes and returns packed batches in the library-wide layout (C-contiguous
  ``uint64`` arrays ``(n, words)``; bit ``i`` is bit ``i % 64`` of word ``i // 64``).
* Every transform is a deterministic function of (key, input): publishing the same record
  twice gives the same bytes. No unseeded randomness, global state or I/O.
* Keyed material comes from ``subkey(key, name) = HMAC-SHA256(key, b"jigsaw/harden/v1/" +
  name)`` (:func:`_subkey`, :func:`_stream_words`); ``key`` is ``KeySet.key("harden",
  subject)`` with subject the field name, or ``"record"`` for the record filter. These
  derivations are the compatibility contract between agencies: a change alters every encoding.
* :func:`harden_filters` applies the enabled transforms in the fixed order
  ``balance -> diffusion -> xor_fold -> BLIP`` (why: see its docstring).
* The kernel loops (:mod:`linkage.kernel`) are held to the plain ``*_reference`` functions at
  the end.
"""

from __future__ import annotations

import hmac
import math

import numpy as np
from numpy.typing import NDArray

from linkage import kernel as _kernel
from linkage.errors import FilterFormatError, InvalidArgumentError, KeyMaterialError
from linkage.keys import KeySet
from linkage.schema import Hardening

__all__ = [
    "balance",
    "blip",
    "blip_flip_probability",
    "diffuse",
    "diffusion_table",
    "harden_field_filters",
    "harden_filters",
    "harden_record_filters",
    "hardened_bits",
    "keyed_permutation",
    "xor_fold",
]

U64 = np.uint64
_LABEL_PREFIX = b"jigsaw/harden/v1/"
#: splitmix64's increment (also :mod:`linkage.blocking`'s LSH band offsets)
GOLDEN_GAMMA = U64(0x9E3779B97F4A7C15)
_MIX_1 = U64(0xBF58476D1CE4E5B9)
_MIX_2 = U64(0x94D049BB133111EB)
_LANE_BITS = 16
_LANES_PER_WORD = 64 // _LANE_BITS
# Rows processed at once when a transform expands filters to one byte per bit.
_CHUNK_ROWS = 16384


# --------------------------------------------------------------------------- helpers


def _check_key(key: object) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) < 16:
        raise KeyMaterialError("hardening key: expected at least 16 bytes")
    return bytes(key)


def _check_batch(filters: object, name: str = "filters") -> NDArray[np.uint64]:
    if not isinstance(filters, np.ndarray) or filters.dtype != U64 or filters.ndim != 2:
        raise FilterFormatError(f"{name}: expected a 2-d uint64 array of packed filters")
    if filters.shape[1] < 1:
        raise FilterFormatError(f"{name}: expected at least one 64-bit word per filter")
    return np.ascontiguousarray(filters)


def _subkey(key: bytes, name: str) -> bytes:
    """``HMAC-SHA256(key, b"jigsaw/harden/v1/" + name)``, ``name`` one of ``balance``,
    ``blip``, ``diffusion/t=<t>/in=<m>/out=<out_bits>``."""
    return hmac.digest(key, _LABEL_PREFIX + name.encode("ascii"), "sha256")


def _stream_words(subkey: bytes, count: int, start_block: int = 0) -> NDArray[np.uint64]:
    """``count`` keyed uint64 words from HMAC-SHA256 in counter mode: ``HMAC-SHA256(subkey,
    uint64_le(0)) || HMAC-SHA256(subkey, uint64_le(1)) || ...`` read as little-endian uint64
    words, starting at block ``start_block``."""
    blocks = (count + 3) // 4
    raw = b"".join(
        hmac.digest(subkey, block.to_bytes(8, "little"), "sha256")
        for block in range(start_block, start_block + blocks)
    )
    return np.frombuffer(raw, dtype="<u8")[:count].astype(U64)


def _unpack_bits(filters: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """(n, words) packed -> (n, 64 * words) array of 0/1 bytes, column i = bit i."""
    as_bytes = filters.astype("<u8", copy=False).view(np.uint8)
    return np.unpackbits(as_bytes, axis=1, bitorder="little")


def _pack_bits(bits: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """Inverse of :func:`_unpack_bits` (column count a multiple of 64)."""
    packed = np.packbits(bits, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(U64, copy=False)


def splitmix64_mix(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """The splitmix64 output mix, a bijection on 64-bit integers (a new array)."""
    z = (z ^ (z >> U64(30))) * _MIX_1
    z = (z ^ (z >> U64(27))) * _MIX_2
    return z ^ (z >> U64(31))


# --------------------------------------------------------------------------- transforms


def keyed_permutation(key: bytes, positions: int) -> NDArray[np.int64]:
    """The balance permutation of ``positions`` bit positions under ``key``.

    Positions ``i = 0..P-1`` sorted by ``(w[i], i)`` ascending, ``w`` the words of
    ``stream(subkey(key, "balance"))``; output bit ``j`` is input bit ``perm[j]``.
    """
    words = _stream_words(_subkey(_check_key(key), "balance"), positions)
    return np.lexsort((np.arange(positions, dtype=np.int64), words)).astype(np.int64)


def balance(filters: NDArray[np.uint64], key: bytes) -> NDArray[np.uint64]:
    """Balanced filters: ``(n, words) -> (n, 2 * words)`` with exactly ``64 * words`` bits set.

    The filter is concatenated with its complement and all ``2m`` positions are permuted by a
    keyed permutation (:func:`keyed_permutation`; Berger's balanced codes; Schnell & Borgs
    2016, "Randomized response and balanced Bloom filters for privacy preserving record
    linkage", ICDMW). Every output has exactly ``m`` bits set, which removes the bit-count
    (popcount) leak.
    """
    batch = _check_batch(filters)
    words = batch.shape[1]
    permutation = keyed_permutation(key, 128 * words)
    out = np.empty((batch.shape[0], 2 * words), dtype=U64)
    for start in range(0, batch.shape[0], _CHUNK_ROWS):
        chunk = batch[start : start + _CHUNK_ROWS]
        doubled = np.concatenate([chunk, ~chunk], axis=1)
        out[start : start + _CHUNK_ROWS] = _pack_bits(_unpack_bits(doubled)[:, permutation])
    return out


def xor_fold(filters: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """XOR folding: ``(n, words) -> (n, words / 2)``, first half XOR second half of the bits.

    Output bit ``i`` is input bit ``i`` XOR input bit ``i + m/2`` (Schnell, Borgs & Encarnação
    2016, "Hardening encrypted patient names against cryptanalysis and pattern mining
    attacks"). Needs an even number of words so that the output keeps whole uint64 words.
    """
    batch = _check_batch(filters)
    words = batch.shape[1]
    if words % 2:
        raise FilterFormatError(
            f"filters: XOR folding needs an even number of 64-bit words, got {words}"
        )
    half = words // 2
    return np.ascontiguousarray(batch[:, :half] ^ batch[:, half:])


def blip_flip_probability(epsilon: float) -> float:
    """BLIP flip probability ``f = 1 / (1 + exp(epsilon / 2))`` (0.5 at epsilon 0)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not epsilon >= 0:
        raise InvalidArgumentError("epsilon: expected a number >= 0")
    if epsilon / 2 > 700:
        return 0.0
    return 1.0 / (1.0 + math.exp(epsilon / 2))


def _row_seeds(batch: NDArray[np.uint64], subkey: bytes) -> NDArray[np.uint64]:
    raw = batch.astype("<u8", copy=False).tobytes()
    width = batch.shape[1] * 8
    digests = b"".join(
        hmac.digest(subkey, raw[offset : offset + width], "sha256")[:8]
        for offset in range(0, len(raw), width)
    )
    return np.frombuffer(digests, dtype="<u8").astype(U64)


def blip_flip_mask(filters: NDArray[np.uint64], epsilon: float, key: bytes) -> NDArray[np.uint64]:
    """The packed mask of bits :func:`blip` flips (exposed for tests and measurement).

    Keyed randomness: per row, ``seed = uint64_le(HMAC-SHA256(subkey(key, "blip"), row
    bytes)[0:8])`` over the row's ``words * 8`` little-endian bytes. The row's random words are
    splitmix64 in counter mode: ``z_c = mix(seed + c * 0x9E3779B97F4A7C15 mod 2^64)`` for
    ``c = 1, 2, ...`` (:func:`splitmix64_mix`; Steele et al. 2014). Bit ``i`` is flipped when
    its 16-bit lane ``(z_{i//4 + 1} >> (16 * (i % 4))) & 0xFFFF`` is below ``round(f *
    65536)``; ``f`` is thereby quantised to 1/65536. splitmix64 is not a cryptographic
    generator: its security rests on the 64-bit seed being a secret PRF output per distinct
    filter, and the matcher sees only the flipped filter, never a random word.
    """
    batch = _check_batch(filters)
    subkey = _subkey(_check_key(key), "blip")
    threshold = U64(round(blip_flip_probability(epsilon) * (1 << _LANE_BITS)))
    out = np.empty(batch.shape, dtype=U64)
    # The splitmix64 lanes in the kernel (same bits as :func:`blip_flip_mask_reference`).
    _kernel.blip_mask(_row_seeds(batch, subkey), int(threshold), out)
    return out


def blip_flip_mask_reference(
    filters: NDArray[np.uint64], epsilon: float, key: bytes
) -> NDArray[np.uint64]:
    """:func:`blip_flip_mask` in numpy, lane by lane (the specification the kernel follows)."""
    batch = _check_batch(filters)
    subkey = _subkey(_check_key(key), "blip")
    threshold = U64(round(blip_flip_probability(epsilon) * (1 << _LANE_BITS)))
    n, words = batch.shape
    bits = 64 * words
    counters = np.arange(1, bits // _LANES_PER_WORD + 1, dtype=U64) * GOLDEN_GAMMA
    shifts = (np.arange(_LANES_PER_WORD, dtype=U64) * U64(_LANE_BITS))[None, None, :]
    seeds = _row_seeds(batch, subkey)
    with np.errstate(over="ignore"):
        random_words = splitmix64_mix(seeds[:, None] + counters[None, :])
    lanes = (random_words[:, :, None] >> shifts) & U64(0xFFFF)
    flips = (lanes.reshape(n, bits) < threshold).astype(np.uint8)
    return _pack_bits(flips)


def blip(filters: NDArray[np.uint64], epsilon: float, key: bytes) -> NDArray[np.uint64]:
    """Randomised response per bit with ``f = 1/(1+e^(epsilon/2))``; same shape as the input.

    BLIP (Alaggan, Gambs & Kermarrec 2012; Schnell & Borgs 2016): each published bit is
    randomised response on its true bit, so a change of one input bit is
    (epsilon / 2)-indistinguishable, and a value change that alters ``d`` bits is
    (d * epsilon / 2)-indistinguishable. Deterministic in (key, filter bytes): identical
    filters get identical noise (idempotent publishing), different filters independent noise
    (:func:`blip_flip_mask`).
    """
    batch = _check_batch(filters)
    return np.ascontiguousarray(batch ^ blip_flip_mask(batch, epsilon, key))


def diffusion_table(key: bytes, t: int, in_bits: int, out_bits: int) -> NDArray[np.int64]:
    """The keyed ``(out_bits, t)`` table of input positions XORed into each output bit.

    From ``stream(subkey(key, "diffusion/t=<t>/in=<in_bits>/out=<out_bits>"))``: for output
    bits ``j = 0, 1, ...`` in order, take the next stream words, reduce each modulo
    ``in_bits``, and keep a position unless it is already in row ``j``, until the row has
    ``t`` positions.
    """
    subkey_bytes = _check_key(key)
    if isinstance(t, bool) or not isinstance(t, int) or t < 1:
        raise InvalidArgumentError("t: expected an integer >= 1")
    if t > in_bits:
        raise InvalidArgumentError(f"t: expected at most the input width ({in_bits} bits)")
    subkey = _subkey(subkey_bytes, f"diffusion/t={t}/in={in_bits}/out={out_bits}")
    table = np.empty((out_bits, t), dtype=np.int64)
    pool = _stream_words(subkey, 4 * out_bits * t)
    next_block = len(pool) // 4
    cursor = 0
    for row in range(out_bits):
        chosen: list[int] = []
        while len(chosen) < t:
            if cursor == len(pool):
                pool = _stream_words(subkey, 4 * t, start_block=next_block)
                next_block += len(pool) // 4
                cursor = 0
            position = int(pool[cursor]) % in_bits
            cursor += 1
            if position not in chosen:
                chosen.append(position)
        table[row] = chosen
    return table


def diffuse(
    filters: NDArray[np.uint64],
    t: int,
    key: bytes,
    out_bits: int | None = None,
    *,
    keys: KeySet | None = None,
) -> NDArray[np.uint64]:
    """Keyed diffusion: output bit ``j`` = XOR of ``t`` input bits.

    The diffusion layer of Armknecht, Heng, Schnell et al. 2023 ("Strengthening
    privacy-preserving record linkage using diffusion", PoPETs 2023 (2)): output bit ``j`` is
    the XOR of the input bits at ``table[j, 0..t-1]`` (:func:`diffusion_table`).

    ``(n, words) -> (n, out_bits / 64)``; ``out_bits`` defaults to the input width and must be
    a positive multiple of 64.
    """
    batch = _check_batch(filters)
    in_bits = 64 * batch.shape[1]
    width = in_bits if out_bits is None else out_bits
    if isinstance(width, bool) or not isinstance(width, int) or width < 64 or width % 64:
        raise FilterFormatError("out_bits: expected a positive multiple of 64")

    def make() -> NDArray[np.int64]:
        return np.ascontiguousarray(diffusion_table(key, t, in_bits, width))

    # With ``keys`` the table (an HMAC stream per output bit) is built once per KeySet.
    table = make() if keys is None else keys.derived(("diffusion", key, t, in_bits, width), make)
    out = np.empty((batch.shape[0], width // 64), dtype=U64)
    _kernel.diffuse(np.ascontiguousarray(batch), table, out)  # kernel loop, GIL released
    return out


# --------------------------------------------------------------------------- composition


def hardened_bits(filter_bits: int, options: Hardening) -> int:
    """Width in bits of a ``filter_bits``-bit filter after :func:`harden_filters`.

    The width rule itself is :meth:`Hardening.published_bits` (one statement, used by the
    schema's published widths); this adds the checks. Raises :class:`FilterFormatError` when
    the options cannot apply to that width (XOR folding of an odd number of words).
    """
    if filter_bits < 64 or filter_bits % 64:
        raise FilterFormatError("filter_bits: expected a positive multiple of 64")
    bits = 2 * filter_bits if options.balance else filter_bits
    if options.xor_fold and (bits // 64) % 2:
        raise FilterFormatError(
            f"XOR folding needs an even number of 64-bit words; a {filter_bits}-bit filter "
            f"has {bits // 64} at that step"
        )
    return options.published_bits(filter_bits)


def harden_filters(
    filters: NDArray[np.uint64], options: Hardening, key: bytes, *, keys: KeySet | None = None
) -> NDArray[np.uint64]:
    """Apply the enabled transforms in the fixed order balance -> diffusion -> xor_fold -> BLIP.

    ``key`` is ``KeySet.key("harden", subject)`` (the field name, or ``"record"``). The output
    width is :func:`hardened_bits` of the input width; with every option off the input is
    returned unchanged (as a contiguous array).

    Why this order: balancing must see the raw filter (the complement of the raw bits is what
    flattens the popcount); diffusion then mixes the balanced bits so that no published bit
    equals a single token position; folding after diffusion compresses the mixed bits (folding
    first would let two token positions cancel before they are mixed); BLIP comes last because
    any deterministic step after a randomised-response step is post-processing: putting it
    last makes the published filter exactly the output of the randomised-response mechanism,
    which is the setting its privacy argument is made in.
    """
    batch = _check_batch(filters)
    hardened_bits(64 * batch.shape[1], options)  # validates the widths up front
    _check_key(key)
    if options.blip_epsilon < 0 or options.diffusion_t < 0:
        raise InvalidArgumentError("hardening options: blip_epsilon and diffusion_t must be >= 0")
    out = batch
    if options.balance:
        out = balance(out, key)
    if options.diffusion_t:
        out = diffuse(out, options.diffusion_t, key, keys=keys)
    if options.xor_fold:
        out = xor_fold(out)
    if options.blip_epsilon:
        out = blip(out, options.blip_epsilon, key)
    return out


def harden_field_filters(
    filters: NDArray[np.uint64],
    options: Hardening,
    keys: KeySet,
    field_name: str,
    present: NDArray[np.bool_] | None = None,
) -> NDArray[np.uint64]:
    """Harden one field's filters under ``keys.key("harden", field_name)``.

    Rows where ``present`` is False (missing values) stay all-zero, as the matcher expects:
    hardening never turns a missing value into a set of bits (balancing alone would set half
    of them).
    """
    batch = _check_batch(filters)
    out = harden_filters(batch, options, keys.key("harden", field_name), keys=keys)
    if present is not None and out is not batch:
        out = out.copy()
        out[~np.asarray(present, dtype=bool)] = 0
    return out


def harden_record_filters(
    filters: NDArray[np.uint64], options: Hardening, keys: KeySet
) -> NDArray[np.uint64]:
    """Harden record-level filters (CLKs) under ``keys.key("harden", "record")``."""
    return harden_filters(filters, options, keys.key("harden", "record"), keys=keys)


# --------------------------------------------------------------------------- references
# Plain, row-by-row implementations of the byte formats above, written from the module
# docstring without numpy tricks; the tests hold the vectorised transforms to them.


def _row_to_bits(row: NDArray[np.uint64]) -> list[int]:
    value = int.from_bytes(row.astype("<u8").tobytes(), "little")
    return [(value >> i) & 1 for i in range(64 * row.shape[0])]


def _bits_to_row(bits: list[int]) -> NDArray[np.uint64]:
    value = sum(bit << i for i, bit in enumerate(bits))
    raw = value.to_bytes(len(bits) // 8, "little")
    return np.frombuffer(raw, dtype="<u8").astype(U64)


def balance_reference(filters: NDArray[np.uint64], key: bytes) -> NDArray[np.uint64]:
    """Row-by-row :func:`balance` from the docstring (slow; for tests)."""
    batch = _check_batch(filters)
    positions = 128 * batch.shape[1]
    words = [int(w) for w in _stream_words(_subkey(_check_key(key), "balance"), positions)]
    permutation = sorted(range(positions), key=lambda i: (words[i], i))
    rows = []
    for row in batch:
        bits = _row_to_bits(row)
        doubled = bits + [1 - b for b in bits]
        rows.append(_bits_to_row([doubled[p] for p in permutation]))
    return np.array(rows, dtype=U64).reshape(batch.shape[0], 2 * batch.shape[1])


def blip_reference(filters: NDArray[np.uint64], epsilon: float, key: bytes) -> NDArray[np.uint64]:
    """Row-by-row :func:`blip` from the docstring (slow; for tests)."""
    batch = _check_batch(filters)
    subkey = _subkey(_check_key(key), "blip")
    threshold = round(blip_flip_probability(epsilon) * 65536)
    mask64 = (1 << 64) - 1
    rows = []
    for row in batch:
        digest = hmac.digest(subkey, row.astype("<u8").tobytes(), "sha256")
        seed = int.from_bytes(digest[:8], "little")
        bits = _row_to_bits(row)
        for i in range(len(bits)):
            z = (seed + (i // 4 + 1) * 0x9E3779B97F4A7C15) & mask64
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask64
            z = z ^ (z >> 31)
            if (z >> (16 * (i % 4))) & 0xFFFF < threshold:
                bits[i] ^= 1
        rows.append(_bits_to_row(bits))
    return np.array(rows, dtype=U64).reshape(batch.shape)


def diffuse_reference(
    filters: NDArray[np.uint64], t: int, key: bytes, out_bits: int | None = None
) -> NDArray[np.uint64]:
    """Row-by-row :func:`diffuse` from the docstring (slow; for tests)."""
    batch = _check_batch(filters)
    in_bits = 64 * batch.shape[1]
    width = in_bits if out_bits is None else out_bits
    subkey = _subkey(_check_key(key), f"diffusion/t={t}/in={in_bits}/out={width}")
    # The continuous counter-mode stream, long enough for any table with t << in_bits.
    stream = iter(int(w) for w in _stream_words(subkey, 4 * width * t))
    table: list[list[int]] = []
    for _ in range(width):
        chosen: list[int] = []
        while len(chosen) < t:
            position = next(stream) % in_bits
            if position not in chosen:
                chosen.append(position)
        table.append(chosen)
    rows = []
    for row in batch:
        bits = _row_to_bits(row)
        out = []
        for chosen in table:
            value = 0
            for p in chosen:
                value ^= bits[p]
            out.append(value)
        rows.append(_bits_to_row(out))
    return np.array(rows, dtype=U64).reshape(batch.shape[0], width // 64)
