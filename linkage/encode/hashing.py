"""Keyed hashing: token positions in a filter, blocking tokens and salt tags.

Contract: every output is HMAC-SHA256 under a key derived for one field and purpose; positions
come from independent HMAC output (never double hashing). The fast paths run the HMACs in
one kernel call per batch (:mod:`linkage.kernel`: the key's pad blocks hashed once, no GIL);
the ``*_reference`` functions are the specification, written with Python's :mod:`hmac`, and
the tests hold the kernel to them.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence, Sized
from itertools import accumulate

import numpy as np
from numpy.typing import NDArray

from linkage import kernel as _kernel

U64 = np.uint64

_UNIT_SEP = "\x1f"


# --------------------------------------------------------------------------- hashing


def token_positions(key: bytes, tokens: Sequence[str], hashes: int, bits: int) -> NDArray[np.int64]:
    """Positions (shape ``(len(tokens), hashes)``) of each token under ``key``.

    Token ``t`` (UTF-8) sets ``k = hashes`` positions in a filter of ``m = bits`` bits. Block
    ``b`` of 32 bytes is ``HMAC-SHA256(key, bytes([b]) + t)``; position ``i`` (``0 <= i < k``)
    is the little-endian uint32 at bytes ``4*(i % 8)`` of block ``i // 8``, reduced modulo
    ``m``. Each position comes from independent pseudo-random output; the modulo bias is
    below 2^-19 for every allowed ``m``. A field filter uses ``key("filter", field)`` and
    ``hashes_per_token``; the record filter ``key("record", field)``,
    ``record_hashes_per_token`` and ``record_filter_bits``.

    The HMACs are computed in one kernel call (``kernel.hmac_words``: the key's pad blocks
    hashed once, every token and block without the GIL); the same bits as
    :func:`token_positions_reference`, which uses Python's :mod:`hmac`.
    """
    return _message_positions(key, [tok.encode("utf-8") for tok in tokens], hashes, bits)


def _message_positions(
    key: bytes, messages: Sequence[bytes], hashes: int, bits: int
) -> NDArray[np.int64]:
    """:func:`token_positions` of tokens already encoded in UTF-8."""
    words = _hmac_words(key, messages, (hashes + 7) // 8, counter=True)
    return (words[:, :hashes].astype(np.int64)) % bits


def _offsets(parts: Sequence[Sized]) -> NDArray[np.int64]:
    """Start offsets of ``parts`` (byte strings, lists) laid end to end, then the total."""
    return np.fromiter(accumulate(map(len, parts), initial=0), dtype=np.int64, count=len(parts) + 1)


def _hmac_words(
    key: bytes, messages: Sequence[bytes], blocks: int, *, counter: bool
) -> NDArray[np.uint32]:
    """Per message, the little-endian uint32 words of ``blocks`` HMAC-SHA256 digests under
    ``key`` (of ``bytes([b]) + message`` with ``counter``, of the message itself without,
    then ``blocks`` is 1), computed in one kernel call."""
    offsets = _offsets(messages)
    words = np.empty((len(messages), blocks * 8), dtype=np.uint32)
    _kernel.hmac_words(key, b"".join(messages), offsets, blocks, counter, words)
    return words


def token_positions_reference(
    key: bytes, tokens: Sequence[str], hashes: int, bits: int
) -> NDArray[np.int64]:
    """:func:`token_positions` with Python's :mod:`hmac` (the specification, for tests)."""
    blocks = (hashes + 7) // 8
    raw = bytearray()
    for tok in tokens:
        data = tok.encode("utf-8")
        for b in range(blocks):
            raw += hmac.digest(key, bytes((b,)) + data, "sha256")
    words = np.frombuffer(bytes(raw), dtype="<u4").reshape(len(tokens), blocks * 8)
    return (words[:, :hashes].astype(np.int64)) % bits


def blocking_token(key: bytes, parts: Sequence[str]) -> int:
    """Keyed 64-bit blocking token of the joined part values (never 0).

    For rule ``r`` with parts ``(field, transform)``, the parts' values are joined with
    ``"\\x1f"`` and the token is the first 8 bytes, as a little-endian uint64, of
    ``HMAC-SHA256(key("block", r), joined)``; 0 is reserved for "a part is missing" (a
    computed 0 becomes 1). A ``filter`` part takes the field's published filter as its value
    (:func:`filter_part`), so a rule of ``filter`` parts only groups records exactly as equal
    published filters do: it shows the matcher nothing the filters do not. Any other
    transform (a soundex code, a birth year) publishes a grouping the filters do not show,
    which an attacker who encodes a population of its own reproduces.
    """
    digest = hmac.digest(key, _UNIT_SEP.join(parts).encode("utf-8"), "sha256")
    return int.from_bytes(digest[:8], "little") or 1


def _tokens64(key: bytes, messages: Sequence[bytes]) -> NDArray[np.uint64]:
    """Keyed 64-bit tokens (blocking tokens, salt tags): the first 8 bytes, little endian,
    of ``HMAC-SHA256(key, message)``, with 0 (reserved for "missing") mapped to 1. The
    HMACs run in one kernel call (:func:`token_positions`); :func:`token64_reference` is the
    specification."""
    words = _hmac_words(key, messages, 1, counter=False)
    tokens = words[:, 0].astype(U64) | (words[:, 1].astype(U64) << np.uint64(32))
    tokens[tokens == 0] = 1
    return tokens


def token64_reference(key: bytes, message: bytes) -> int:
    """One keyed 64-bit token with Python's :mod:`hmac` (the specification, for tests; also
    the salt tag of :func:`encode_record`, where one message does not repay a C call)."""
    return int.from_bytes(hmac.digest(key, message, "sha256")[:8], "little") or 1


def filter_part(row: NDArray[np.uint64]) -> str:
    """The value of a ``<field>.filter`` blocking part, and the salt-tag message of a
    ``<field>.value`` salt source: the published filter ``row`` (one packed row) as hex."""
    return np.ascontiguousarray(row, dtype=U64).tobytes().hex()
