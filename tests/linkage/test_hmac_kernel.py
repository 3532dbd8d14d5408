"""The kernel's HMAC-SHA256 behind token hashing (``kernel.hmac_words``, and
``kernel.token_filters``, which builds filters from it) against RFC 4231 and Python's hmac.

The encoder's golden vectors pin its output too; these tests pin the primitive itself on the
RFC 4231 inputs (keys shorter than, equal to and longer than the 64-byte block, messages
across the padding boundaries) and on random input, with and without the block counter. They
test the implementation :mod:`linkage.kernel` runs (OpenSSL in the C extension, or Python's
hmac in the portable one); tests/linkage/test_kernel_paths.py runs them under the portable one too.
"""

from __future__ import annotations

import hmac

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkage import kernel
from linkage.encode import (
    token64_reference,
    token_positions,
    token_positions_reference,
)
from linkage.encode.encoder import _TokenBlob
from linkage.encode.hashing import _tokens64

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
# HMAC-SHA-256 of each, as RFC 4231 publishes it
RFC4231_DIGESTS = [
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
]


#: Indices of the SHA-256 paths this CPU runs, and -1, the fastest: every test below runs on
#: each, so each path is held to hmac.
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
    words: list[int] = np.frombuffer(digest, dtype="<u4").tolist()
    return words


def test_the_first_path_is_supported_and_names_are_known() -> None:
    paths = kernel.hmac_paths()
    assert paths[0][1] is True
    assert {name for name, _ in paths} <= {"openssl", "python-hmac"}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("case", "digest"), list(enumerate(RFC4231_DIGESTS)))
def test_rfc4231_published_digests(case: int, digest: str, path: int) -> None:
    key, message = RFC4231[case]
    words = run(key, [message], 1, False, path)[0]
    assert words.astype("<u4").tobytes().hex() == digest


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


def filters_by_specification(
    key: bytes,
    prefixes: list[str],
    value_tokens: list[list[str]],
    combos: list[tuple[int, int]],
    hashes: int,
    bits: int,
) -> np.ndarray:
    """Each (value, prefix) combination's filter from Python's hmac, bit by bit."""
    words = (bits + 63) // 64
    out = np.zeros((len(combos), words), dtype=np.uint64)
    for row, (value, prefix) in enumerate(combos):
        messages = [prefixes[prefix] + token for token in value_tokens[value]]
        if messages:
            for position in token_positions_reference(key, messages, hashes, bits).ravel():
                out[row, position >> 6] |= np.uint64(1) << np.uint64(position & 63)
    return out


def token_filters(
    blob: _TokenBlob,
    key: bytes,
    combos: list[tuple[int, int]],
    hashes: int,
    bits: int,
    path: int = -1,
    out: np.ndarray | None = None,
) -> np.ndarray:
    if out is None:
        out = np.full((len(combos), (bits + 63) // 64), 0xFF, dtype=np.uint64)  # overwritten
    combo_value = np.array([v for v, _ in combos], dtype=np.int64)
    combo_prefix = np.array([p for _, p in combos], dtype=np.int64)
    kernel.token_filters(
        key,
        blob.prefixes,
        blob.prefix_offsets,
        blob.tokens,
        blob.token_offsets,
        blob.value_tokens,
        combo_value,
        combo_prefix,
        hashes,
        bits,
        out,
        path,
    )
    return out


@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.text(max_size=6), min_size=1, max_size=4),
    st.lists(st.lists(st.text(min_size=1, max_size=70), max_size=5), min_size=1, max_size=5),
    st.data(),
    st.integers(1, 20),
    st.sampled_from([1, 64, 100, 256, 1000]),
)
def test_token_filters_match_the_specification(
    prefixes: list[str],
    value_tokens: list[list[str]],
    data: st.DataObject,
    hashes: int,
    bits: int,
) -> None:
    combos = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(value_tokens) - 1), st.integers(0, len(prefixes) - 1)),
            max_size=8,
        )
    )
    key = bytes(range(7, 39))
    blob = _TokenBlob(prefixes, value_tokens)
    expected = filters_by_specification(key, prefixes, value_tokens, combos, hashes, bits)
    for path in PATHS:
        np.testing.assert_array_equal(
            token_filters(blob, key, combos, hashes, bits, path), expected
        )


def test_token_filters_cross_the_padding_boundary_within_a_message() -> None:
    # prefix and token split across the 55/56-byte padding limit and the 64-byte block
    key = b"\x42" * 40
    prefixes = ["p" * length for length in (0, 1, 30, 54, 63)]
    value_tokens = [["t" * length for length in (1, 24, 25, 26, 33, 70)]]
    combos = [(0, p) for p in range(len(prefixes))]
    blob = _TokenBlob(prefixes, value_tokens)
    expected = filters_by_specification(key, prefixes, value_tokens, combos, 9, 512)
    for path in PATHS:
        np.testing.assert_array_equal(token_filters(blob, key, combos, 9, 512, path), expected)


def test_token_filters_refuse_bad_arguments() -> None:
    blob = _TokenBlob(["a|"], [["xy", "yz"]])
    with pytest.raises(ValueError, match="hashes"):
        token_filters(blob, b"k", [(0, 0)], 0, 64)
    with pytest.raises(ValueError, match="bits"):
        token_filters(blob, b"k", [(0, 0)], 4, 65, out=np.zeros((1, 1), np.uint64))
    with pytest.raises(ValueError, match="combo_value"):
        token_filters(blob, b"k", [(1, 0)], 4, 64)  # no value 1
    with pytest.raises(ValueError, match="combo_prefix"):
        token_filters(blob, b"k", [(0, 1)], 4, 64)  # no prefix 1
    with pytest.raises(ValueError, match="out"):
        token_filters(blob, b"k", [(0, 0)], 4, 64, out=np.zeros((2, 1), np.uint64))
    with pytest.raises(ValueError, match="path"):
        token_filters(blob, b"k", [(0, 0)], 4, 64, path=len(kernel.hmac_paths()))
    broken = _TokenBlob(["a|"], [["xy", "yz"]])
    broken.token_offsets = np.array([0, 3, 2], dtype=np.int64)  # descending
    with pytest.raises(ValueError, match="offsets"):
        token_filters(broken, b"k", [(0, 0)], 4, 64)
    with pytest.raises(TypeError, match="out"):
        token_filters(blob, b"k", [(0, 0)], 4, 64, out=[[0]])  # type: ignore[arg-type]
