"""The C HMAC-SHA256 behind token hashing (``_dicekernel.hmac_words``) against Python's hmac.

The encoder's golden vectors pin its output too; these tests pin the primitive itself on the
RFC 4231 inputs (keys shorter than, equal to and longer than the 64-byte block, messages
across the padding boundaries) and on random input, with and without the block counter.
"""

from __future__ import annotations

import hmac

import linkage._dicekernel as kernel
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage.encode import (
    _tokens64,
    token64_reference,
    token_positions,
    token_positions_reference,
)

# RFC 4231 section 4 inputs (test cases 1-4, 6, 7); expected values come from Python's hmac
RFC4231 = [
    (b"\x0b" * 20, b"Hi There"),
    (b"Jefe", b"what do ya want for nothing?"),
    (b"\xaa" * 20, b"\xdd" * 50),
    (bytes(range(1, 26)), b"\xcd" * 50),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First"),
    (
        b"\xaa" * 131,
        b"This is a test using a larger than block-size key and a larger than block-size "
        b"data. The key needs to be hashed before being used by the HMAC algorithm.",
    ),
]


#: Indices of the SHA-256 paths this CPU runs (portable always; SHA-NI where supported), and
#: -1, the fastest: every test below runs on each, so both implementations are held to hmac.
PATHS = [-1] + [index for index, (_, supported) in enumerate(kernel.hmac_paths()) if supported]


def run(
    key: bytes, messages: list[bytes], blocks: int, counter: bool, path: int = -1
) -> np.ndarray:
    offsets = np.zeros(len(messages) + 1, dtype=np.int64)
    np.cumsum([len(m) for m in messages], out=offsets[1:])
    out = np.zeros((len(messages), 8 * blocks), dtype=np.uint32)
    kernel.hmac_words(key, b"".join(messages), offsets, blocks, counter, out, path)
    return out


def reference(key: bytes, message: bytes, blocks: int, counter: bool) -> list[int]:
    parts = [bytes((b,)) + message if counter else message for b in range(blocks)]
    digest = b"".join(hmac.digest(key, part, "sha256") for part in parts)
    return np.frombuffer(digest, dtype="<u4").tolist()


def test_the_portable_path_always_exists_and_names_are_known() -> None:
    paths = kernel.hmac_paths()
    assert paths[0] == ("portable", True)
    assert {name for name, _ in paths} == {"portable", "sha-ni"}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("key", "message"), RFC4231)
def test_rfc4231_inputs(key: bytes, message: bytes, path: int) -> None:
    assert run(key, [message], 1, False, path)[0].tolist() == reference(key, message, 1, False)
    assert run(key, [message], 2, True, path)[0].tolist() == reference(key, message, 2, True)


@settings(deadline=None, max_examples=60)
@given(
    st.binary(max_size=140),
    st.lists(st.binary(max_size=130), max_size=6),
    st.integers(1, 3),
)
def test_random_keys_and_messages(key: bytes, messages: list[bytes], blocks: int) -> None:
    for path in PATHS:
        out = run(key, messages, blocks, True, path)
        for row, message in zip(out, messages, strict=True):
            assert row.tolist() == reference(key, message, blocks, True)


@pytest.mark.parametrize("path", PATHS)
def test_padding_boundaries(path: int) -> None:
    key = bytes(range(32))
    messages = [bytes([7]) * length for length in (0, 54, 55, 56, 63, 64, 65, 119, 120)]
    out = run(key, messages, 1, False, path)
    for row, message in zip(out, messages, strict=True):
        assert row.tolist() == reference(key, message, 1, False)


def test_an_unknown_or_unsupported_path_is_refused() -> None:
    offsets = np.array([0, 3], dtype=np.int64)
    unsupported = [i for i, (_, ok) in enumerate(kernel.hmac_paths()) if not ok]
    for path in [-2, len(kernel.hmac_paths()), *unsupported]:
        with pytest.raises(ValueError, match="path"):
            kernel.hmac_words(b"k", b"abc", offsets, 1, False, np.zeros((1, 8), np.uint32), path)


def test_bad_arguments_are_refused() -> None:
    offsets = np.array([0, 3], dtype=np.int64)
    with pytest.raises(ValueError, match="blocks"):
        kernel.hmac_words(b"k", b"abc", offsets, 2, False, np.zeros((1, 16), np.uint32))
    with pytest.raises(ValueError, match="offsets"):
        kernel.hmac_words(b"k", b"ab", offsets, 1, True, np.zeros((1, 8), np.uint32))
    with pytest.raises(ValueError, match="out"):
        kernel.hmac_words(b"k", b"abc", offsets, 1, True, np.zeros((2, 8), np.uint32))


@settings(deadline=None, max_examples=30)
@given(st.lists(st.text(max_size=12), max_size=8), st.integers(1, 20), st.sampled_from([64, 256]))
def test_token_positions_match_the_specification(tokens: list[str], hashes: int, bits: int) -> None:
    key = bytes(range(32))
    np.testing.assert_array_equal(
        token_positions(key, tokens, hashes, bits),
        token_positions_reference(key, tokens, hashes, bits),
    )


@settings(deadline=None, max_examples=30)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_tokens64_match_the_specification(messages: list[bytes]) -> None:
    key = bytes(range(32, 64))
    assert _tokens64(key, messages).tolist() == [token64_reference(key, m) for m in messages]
