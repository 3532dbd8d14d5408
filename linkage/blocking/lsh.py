"""Bit-sampling LSH for Hamming distance: band keys from packed record-level filters.

Contract: :func:`lsh_keys` gives one ``uint64`` key per record and band, in the block-key
format of :mod:`linkage.blocking` (0 for an all-zero filter, never otherwise), so LSH bands
block exactly as keyed blocking rules do. Bit positions are drawn from a seed the matcher
chooses; they are not secret.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage.errors import FilterFormatError, JigsawError
from linkage.harden import GOLDEN_GAMMA, splitmix64_mix

_MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------------------------------------
# locality-sensitive hashing on packed filters


def _check_filters(filters: Any) -> NDArray[np.uint64]:
    if not isinstance(filters, np.ndarray):
        raise FilterFormatError("filters must be a numpy array of dtype uint64")
    if filters.dtype != np.uint64:
        raise FilterFormatError(f"filters must have dtype uint64, got {filters.dtype}")
    if filters.ndim != 2:
        raise FilterFormatError(
            f"filters must have shape (n_records, words), got {filters.ndim} dims"
        )
    if filters.shape[1] == 0:
        raise FilterFormatError("filters must have at least one 64-bit word per record")
    return filters


def lsh_bit_positions(
    filter_bits: int, *, bands: int, bits_per_band: int, seed: int
) -> NDArray[np.int64]:
    """The sampled bit positions, shape ``(bands, bits_per_band)``, as :func:`lsh_keys` uses."""
    rng = np.random.default_rng(seed)
    rows = [rng.choice(filter_bits, size=bits_per_band, replace=False) for _ in range(bands)]
    return np.array(rows, dtype=np.int64).reshape(bands, bits_per_band)


def lsh_keys(
    filters: NDArray[np.uint64], *, bands: int, bits_per_band: int, seed: int
) -> NDArray[np.uint64]:
    """Hamming (bit-sampling) LSH band keys, shape ``(n_records, bands)``, dtype ``uint64``.

    The keys feed :func:`candidate_pairs_link` / :func:`candidate_pairs_dedupe`. Key format
    (bit ``i`` of a filter is bit ``i % 64`` of word ``i // 64``, least significant bit first):
    for each band ``b`` (``0 <= b < bands``), ``bits_per_band`` distinct bit positions are
    drawn, band after band, with ``rng.choice(filter_bits, bits_per_band, replace=False)``
    from ``np.random.default_rng(seed)`` (:func:`lsh_bit_positions`; not secret: the matcher
    chooses them). Sampled bit ``t`` of band ``b`` becomes bit ``t`` of a 64-bit ``pattern``;
    the band key is ``splitmix64_finalise(pattern + (b + 1) * 0x9E3779B97F4A7C15 mod 2**64)``
    with the finaliser ``z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27;
    z *= 0x94D049BB133111EB; z ^= z >> 31`` (all modulo 2**64). The finaliser is a bijection,
    so within a band two records get equal keys exactly when their sampled bits are equal, and
    equal bit patterns in different bands give different keys. An all-zero filter (a missing
    record) gets key 0 in every band; a computed key of 0 becomes 1.
    """
    checked = _check_filters(filters)
    filter_bits = checked.shape[1] * 64
    if isinstance(bands, bool) or not isinstance(bands, int) or bands < 1:
        raise JigsawError("bands must be a positive integer")
    if isinstance(bits_per_band, bool) or not isinstance(bits_per_band, int):
        raise JigsawError("bits_per_band must be an integer")
    if not 1 <= bits_per_band <= min(64, filter_bits):
        raise JigsawError("bits_per_band must be between 1 and min(64, filter bits)")
    positions = lsh_bit_positions(filter_bits, bands=bands, bits_per_band=bits_per_band, seed=seed)
    words = positions // 64
    shifts = (positions % 64).astype(np.uint64)
    weights = np.left_shift(np.uint64(1), np.arange(bits_per_band, dtype=np.uint64))
    n = checked.shape[0]
    keys = np.empty((n, bands), dtype=np.uint64)
    one = np.uint64(1)
    for band in range(bands):
        gathered = checked[:, words[band]]
        gathered >>= shifts[band]
        gathered &= one
        gathered *= weights
        pattern = np.bitwise_or.reduce(gathered, axis=1)
        pattern += np.uint64(((band + 1) * int(GOLDEN_GAMMA)) & _MASK64)
        keys[:, band] = splitmix64_mix(pattern)
    keys[keys == 0] = one
    keys[~checked.any(axis=1)] = 0
    return keys
