"""Tests for linkage.harden: golden vectors, references, determinism, keys, shapes, rates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from linkage import harden
from linkage.errors import FilterFormatError, KeyMaterialError
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Hardening
from linkage.similarity import popcounts

GOLDEN = json.loads((Path(__file__).parent / "golden" / "harden.json").read_text())
TEST_KEY = bytes(range(32))  # the published golden-vector key: visibly a test key
OTHER_KEY = bytes(range(1, 33))


def from_hex(rows: list[str]) -> NDArray[np.uint64]:
    return np.array(
        [np.frombuffer(bytes.fromhex(r), dtype="<u8") for r in rows], dtype=np.uint64
    ).reshape(len(rows), -1)


def random_filters(seed: int, rows: int, words: int, density: float = 0.3) -> NDArray[np.uint64]:
    rng = np.random.default_rng(seed)
    bits = (rng.random((rows, 64 * words)) < density).astype(np.uint8)
    packed = np.packbits(bits, axis=1, bitorder="little").view("<u8")
    return np.ascontiguousarray(packed.astype(np.uint64))


def apply(transform: str, params: dict[str, Any], x: NDArray[np.uint64], key: bytes) -> Any:
    if transform == "balance":
        return harden.balance(x, key)
    if transform == "xor_fold":
        return harden.xor_fold(x)
    if transform == "blip":
        return harden.blip(x, params["epsilon"], key)
    if transform == "diffuse":
        return harden.diffuse(x, params["t"], key, params.get("out_bits"))
    if transform == "harden_filters":
        return harden.harden_filters(x, Hardening(**params), key)
    raise AssertionError(f"unknown transform in golden file: {transform}")


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_golden_vectors(case: dict[str, Any]) -> None:
    assert bytes.fromhex(GOLDEN["key_hex"]) == TEST_KEY
    out = apply(case["transform"], case["params"], from_hex(case["input"]), TEST_KEY)
    assert out.dtype == np.uint64
    assert [r.astype("<u8").tobytes().hex() for r in out] == case["expected"]


@pytest.mark.parametrize("words", [1, 2, 3, 4])
def test_fast_equals_reference(words: int) -> None:
    x = random_filters(words, 6, words)
    x[0] = 0
    assert np.array_equal(harden.balance(x, TEST_KEY), harden.balance_reference(x, TEST_KEY))
    assert np.array_equal(harden.blip(x, 3.0, TEST_KEY), harden.blip_reference(x, 3.0, TEST_KEY))
    for t in (1, 3, 5):
        assert np.array_equal(
            harden.diffuse(x, t, TEST_KEY), harden.diffuse_reference(x, t, TEST_KEY)
        )
    assert np.array_equal(
        harden.diffuse(x, 4, TEST_KEY, out_bits=192),
        harden.diffuse_reference(x, 4, TEST_KEY, out_bits=192),
    )


ALL_TRANSFORMS = [
    ("balance", lambda x, k: harden.balance(x, k)),
    ("blip", lambda x, k: harden.blip(x, 2.0, k)),
    ("diffuse", lambda x, k: harden.diffuse(x, 3, k)),
    (
        "harden_all",
        lambda x, k: harden.harden_filters(
            x, Hardening(balance=True, xor_fold=True, blip_epsilon=4.0, diffusion_t=3), k
        ),
    ),
]


@pytest.mark.parametrize("name,transform", ALL_TRANSFORMS, ids=[n for n, _ in ALL_TRANSFORMS])
def test_deterministic_and_keyed(name: str, transform: Any) -> None:
    x = random_filters(7, 50, 4)
    first = transform(x, TEST_KEY)
    again = transform(x.copy(), TEST_KEY)
    assert np.array_equal(first, again), "same key and input must give the same output"
    other = transform(x, OTHER_KEY)
    assert first.shape == other.shape
    assert not np.array_equal(first, other), "a different key must change the output"
    # row-wise: the output of a row does not depend on its neighbours (idempotent publishing)
    assert np.array_equal(transform(x[10:11], TEST_KEY), first[10:11])


def test_shapes_and_widths() -> None:
    x = random_filters(3, 9, 4)
    assert harden.balance(x, TEST_KEY).shape == (9, 8)
    assert harden.xor_fold(x).shape == (9, 2)
    assert harden.blip(x, 1.0, TEST_KEY).shape == (9, 4)
    assert harden.diffuse(x, 3, TEST_KEY).shape == (9, 4)
    assert harden.diffuse(x, 3, TEST_KEY, out_bits=512).shape == (9, 8)
    full = Hardening(balance=True, xor_fold=True, blip_epsilon=2.0, diffusion_t=3)
    assert harden.harden_filters(x, full, TEST_KEY).shape == (9, 4)
    assert harden.hardened_bits(256, full) == 256
    assert harden.hardened_bits(256, Hardening(balance=True)) == 512
    assert harden.hardened_bits(256, Hardening(xor_fold=True)) == 128
    assert harden.hardened_bits(64, Hardening(balance=True, xor_fold=True)) == 64
    assert harden.hardened_bits(1024, Hardening(diffusion_t=5, blip_epsilon=4.0)) == 1024
    with pytest.raises(FilterFormatError):
        harden.hardened_bits(64, Hardening(xor_fold=True))
    with pytest.raises(FilterFormatError):
        harden.xor_fold(random_filters(1, 3, 3))
    with pytest.raises(FilterFormatError):
        harden.harden_filters(random_filters(1, 3, 1), Hardening(xor_fold=True), TEST_KEY)
    with pytest.raises(FilterFormatError):
        harden.balance(x.astype(np.int64), TEST_KEY)
    with pytest.raises(FilterFormatError):
        harden.diffuse(x, 3, TEST_KEY, out_bits=100)
    with pytest.raises(KeyMaterialError):
        harden.balance(x, b"short")
    with pytest.raises(ValueError):
        harden.blip(x, -1.0, TEST_KEY)


def test_all_off_is_identity() -> None:
    x = random_filters(5, 20, 2)
    assert np.array_equal(harden.harden_filters(x, Hardening(), TEST_KEY), x)


@settings(deadline=None, max_examples=30)
@given(words=st.integers(1, 6), seed=st.integers(0, 2**32 - 1), density=st.floats(0.0, 1.0))
def test_balance_sets_exactly_m_bits(words: int, seed: int, density: float) -> None:
    x = random_filters(seed, 8, words, density)
    out = harden.balance(x, TEST_KEY)
    assert np.all(popcounts(out) == 64 * words)
    # a permutation of (filter || complement): the multiset of bits is preserved, and the
    # balanced Hamming distance is twice the original one
    a, b = out[0], out[1]
    assert int(popcounts((a ^ b)[None, :])[0]) == 2 * int(popcounts((x[0] ^ x[1])[None, :])[0])


def test_keyed_permutation_is_a_permutation() -> None:
    perm = harden.keyed_permutation(TEST_KEY, 2048)
    assert sorted(perm.tolist()) == list(range(2048))
    assert not np.array_equal(perm, np.arange(2048))


@settings(deadline=None, max_examples=30)
@given(words=st.integers(1, 5).map(lambda w: 2 * w), seed=st.integers(0, 2**32 - 1))
def test_xor_fold_definition(words: int, seed: int) -> None:
    x = random_filters(seed, 5, words)
    out = harden.xor_fold(x)
    m = 64 * words
    for row in range(5):
        value = int.from_bytes(x[row].astype("<u8").tobytes(), "little")
        folded = int.from_bytes(out[row].astype("<u8").tobytes(), "little")
        for i in range(m // 2):
            assert (folded >> i) & 1 == ((value >> i) & 1) ^ ((value >> (i + m // 2)) & 1)


@pytest.mark.parametrize("epsilon", [1.0, 2.0, 4.0, 8.0])
def test_blip_flip_rate(epsilon: float) -> None:
    x = random_filters(11, 100, 16)  # 102 400 bits
    flipped = harden.blip(x, epsilon, TEST_KEY) ^ x
    rate = float(popcounts(flipped).sum()) / (100 * 1024)
    expected = 1.0 / (1.0 + np.exp(epsilon / 2))
    sigma = np.sqrt(expected * (1 - expected) / (100 * 1024))
    assert abs(rate - expected) < 5 * sigma + 1e-4
    assert harden.blip_flip_probability(epsilon) == pytest.approx(expected)


def test_blip_noise_depends_on_input_not_position() -> None:
    x = random_filters(12, 2, 4)
    twice = np.concatenate([x, x])
    out = harden.blip(twice, 2.0, TEST_KEY)
    assert np.array_equal(out[:2], out[2:]), "identical filters must get identical noise"
    masks = out ^ twice
    assert not np.array_equal(masks[0], masks[1]), "different filters get different noise"


def test_blip_epsilon_zero_is_coin_flip() -> None:
    assert harden.blip_flip_probability(0.0) == 0.5


def test_diffusion_table_rows_distinct() -> None:
    table = harden.diffusion_table(TEST_KEY, 5, 256, 256)
    assert table.shape == (256, 5)
    assert all(len(set(row)) == 5 for row in table.tolist())
    assert table.min() >= 0 and table.max() < 256
    # most input positions are used (coverage of a random table with 1280 draws over 256)
    assert len(np.unique(table)) > 240


def test_diffusion_keeps_similar_filters_similar() -> None:
    rng = np.random.default_rng(5)
    base = random_filters(13, 200, 16, density=0.15)
    near = base.copy()
    flips = rng.integers(0, 1024, size=(200, 8))
    for row in range(200):
        for p in flips[row]:
            near[row, p // 64] ^= np.uint64(1) << np.uint64(p % 64)
    far = random_filters(14, 200, 16, density=0.15)
    d_base, d_near, d_far = (harden.diffuse(a, 3, TEST_KEY) for a in (base, near, far))
    near_distance = popcounts(d_base ^ d_near).mean()
    far_distance = popcounts(d_base ^ d_far).mean()
    assert near_distance < far_distance / 4


def test_field_and_record_helpers_use_their_own_keys() -> None:
    keys = KeySet(LinkageSecret.for_tests())
    x = random_filters(15, 10, 4)
    present = np.ones(10, dtype=bool)
    present[3] = False
    x[3] = 0
    options = Hardening(balance=True, blip_epsilon=4.0)
    given_name = harden.harden_field_filters(x, options, keys, "given_name", present)
    family_name = harden.harden_field_filters(x, options, keys, "family_name", present)
    record = harden.harden_record_filters(x, options, keys)
    assert not np.array_equal(given_name, family_name)
    assert np.array_equal(
        given_name[present],
        harden.harden_filters(x, options, keys.key("harden", "given_name"))[present],
    )
    assert np.all(given_name[3] == 0), "a missing value stays an all-zero filter"
    assert np.array_equal(record, harden.harden_filters(x, options, keys.key("harden", "record")))


@pytest.mark.parametrize("words", [1, 2, 4, 16])
@pytest.mark.parametrize("epsilon", [0.0, 0.5, 4.0, 8.0, 30.0])
def test_blip_mask_in_c_equals_the_numpy_specification(words: int, epsilon: float) -> None:
    rng = np.random.default_rng(words * 100 + int(epsilon * 10))
    filters = rng.integers(0, 2**63, size=(300, words), dtype=np.int64).astype(np.uint64)
    filters[0] = 0  # an all-zero row has a seed like any other
    assert np.array_equal(
        harden.blip_flip_mask(filters, epsilon, TEST_KEY),
        harden.blip_flip_mask_reference(filters, epsilon, TEST_KEY),
    )
