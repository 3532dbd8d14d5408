"""Tests for linkage.keys: RFC 5869 known answers, key derivation, and secret redaction."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from linkage.errors import KeyMaterialError
from linkage.keys import (
    HKDF_SALT,
    KEY_BYTES,
    MAX_SECRET_BYTES,
    MIN_SECRET_BYTES,
    PURPOSES,
    TEST_SECRET_HEX,
    KeySet,
    LinkageSecret,
    derive_key,
    hkdf_sha256,
)

RFC_PATH = Path(__file__).parent / "golden" / "hkdf_rfc5869.json"
RFC_CASES: list[dict[str, Any]] = json.loads(RFC_PATH.read_text(encoding="utf-8"))["cases"]
TEST_SECRET = bytes.fromhex(TEST_SECRET_HEX)


def _plain_hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with the standard library's HMAC (reference for the wiring)."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    block = b""
    okm = b""
    counter = 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


# ---------------------------------------------------------------------------------------------
# RFC 5869 known answers


def test_rfc_file_holds_the_three_sha256_cases() -> None:
    assert [case["name"][:3] for case in RFC_CASES] == ["A.1", "A.2", "A.3"]
    for case in RFC_CASES:
        assert len(bytes.fromhex(case["okm"])) == case["length"]
        assert len(bytes.fromhex(case["prk"])) == 32


@pytest.mark.parametrize("case", RFC_CASES, ids=[c["name"][:3] for c in RFC_CASES])
def test_hkdf_sha256_matches_rfc5869(case: dict[str, Any]) -> None:
    ikm, salt, info = (bytes.fromhex(case[k]) for k in ("ikm", "salt", "info"))
    okm = hkdf_sha256(ikm, salt=salt, info=info, length=case["length"])
    assert okm.hex() == case["okm"]
    # The reference implementation agrees too, so the file itself is internally consistent.
    assert _plain_hkdf_sha256(ikm, salt, info, case["length"]).hex() == case["okm"]
    if not salt:
        # RFC 5869: "if not provided, [salt] is set to a string of HashLen zeros".
        assert hkdf_sha256(ikm, salt=None, info=info, length=case["length"]).hex() == case["okm"]


def test_derive_key_is_the_documented_hkdf_call() -> None:
    secret = LinkageSecret.for_tests()
    key = derive_key(secret, purpose="filter", subject="given_name", key_version=3)
    info = b"jigsaw/v1/filter/given_name/k3"
    assert HKDF_SALT == b"jigsaw/hkdf-salt/v1"
    assert key == _plain_hkdf_sha256(TEST_SECRET, HKDF_SALT, info, KEY_BYTES)
    assert len(key) == KEY_BYTES == 32


# ---------------------------------------------------------------------------------------------
# derive_key


def test_derive_key_is_deterministic() -> None:
    first = derive_key(LinkageSecret.for_tests(), purpose="block", subject="r", key_version=1)
    second = derive_key(
        LinkageSecret.from_hex(TEST_SECRET_HEX), purpose="block", subject="r", key_version=1
    )
    assert first == second


def test_every_purpose_subject_and_version_gives_a_distinct_key() -> None:
    secret = LinkageSecret.for_tests()
    seen: dict[bytes, tuple[str, str, int]] = {}
    for purpose in sorted(PURPOSES):
        for subject in ("given_name", "family_name", "record", "nhs_number"):
            for version in (1, 2, 3):
                key = derive_key(secret, purpose=purpose, subject=subject, key_version=version)
                assert key not in seen, (purpose, subject, version, seen.get(key))
                seen[key] = (purpose, subject, version)
    assert len(seen) == len(PURPOSES) * 4 * 3


def test_different_secret_gives_different_keys() -> None:
    other = LinkageSecret(bytes(range(32)))
    for purpose in sorted(PURPOSES):
        assert derive_key(other, purpose=purpose, subject="f", key_version=1) != derive_key(
            LinkageSecret.for_tests(), purpose=purpose, subject="f", key_version=1
        )


def test_subject_boundary_is_unambiguous() -> None:
    # "a" + "/" would collide with a purpose/subject split if '/' were allowed in subjects.
    secret = LinkageSecret.for_tests()
    assert derive_key(secret, purpose="filter", subject="ab", key_version=1) != derive_key(
        secret, purpose="filter", subject="a", key_version=1
    )


@pytest.mark.parametrize(
    ("purpose", "subject", "version"),
    [
        ("", "f", 1),
        ("Filter", "f", 1),
        ("encrypt", "f", 1),
        ("filter", "", 1),
        ("filter", "a/b", 1),
        ("filter", "/", 1),
        ("filter", "f", 0),
        ("filter", "f", -1),
    ],
)
def test_invalid_derivation_inputs_raise_key_material_error(
    purpose: str, subject: str, version: int
) -> None:
    with pytest.raises(KeyMaterialError):
        derive_key(LinkageSecret.for_tests(), purpose=purpose, subject=subject, key_version=version)


def test_keyset_matches_derive_key_and_caches() -> None:
    keys = KeySet(LinkageSecret.for_tests(), key_version=2)
    expected = derive_key(keys.secret, purpose="record", subject="given_name", key_version=2)
    assert keys.key("record", "given_name") == expected
    assert keys.key("record", "given_name") is keys.key("record", "given_name")
    assert keys.key("filter", "given_name") != expected
    with pytest.raises(KeyMaterialError):
        keys.key("nonsense", "given_name")


def test_two_keysets_do_not_share_a_cache() -> None:
    first = KeySet(LinkageSecret.for_tests())
    second = KeySet(LinkageSecret(bytes(range(32))))
    assert first.key("filter", "f") != second.key("filter", "f")


# ---------------------------------------------------------------------------------------------
# secret lengths and parsing


@pytest.mark.parametrize("length", [MIN_SECRET_BYTES, 48, MAX_SECRET_BYTES])
def test_secret_lengths_inside_the_limits_are_accepted(length: int) -> None:
    secret = LinkageSecret(bytes(length))
    assert len(secret.reveal()) == length
    assert LinkageSecret.from_hex(secret.to_hex()) == secret


@pytest.mark.parametrize("length", [0, 1, 16, MIN_SECRET_BYTES - 1, MAX_SECRET_BYTES + 1, 128])
def test_secret_lengths_outside_the_limits_are_rejected(length: int) -> None:
    with pytest.raises(KeyMaterialError):
        LinkageSecret(bytes(length))
    with pytest.raises(KeyMaterialError):
        LinkageSecret.from_hex("ab" * length)


@pytest.mark.parametrize("value", ["not bytes at all, a string of 32+ chars", 12345, None])
def test_secret_must_be_bytes(value: Any) -> None:
    with pytest.raises(KeyMaterialError):
        LinkageSecret(value)


def test_from_hex_ignores_whitespace_and_round_trips() -> None:
    spaced = " ".join(TEST_SECRET_HEX[i : i + 8] for i in range(0, len(TEST_SECRET_HEX), 8))
    assert LinkageSecret.from_hex(spaced + "\n") == LinkageSecret.for_tests()
    assert LinkageSecret.for_tests().to_hex() == TEST_SECRET_HEX
    assert LinkageSecret.for_tests().reveal() == TEST_SECRET


def test_generate_gives_fresh_valid_secrets() -> None:
    first, second = LinkageSecret.generate(), LinkageSecret.generate()
    assert len(first.reveal()) == MIN_SECRET_BYTES
    assert first != second


def test_test_secret_is_visibly_a_test_secret() -> None:
    assert b"TEST ONLY" in TEST_SECRET and b"not-a-real-key" in TEST_SECRET


@pytest.mark.parametrize(
    "text",
    [
        "zz" * 32,
        TEST_SECRET_HEX[:-1],  # odd number of digits
        TEST_SECRET_HEX[:-2] + "g0",
        "0x" + TEST_SECRET_HEX,
        "Zqxsecretcanary" * 5,
    ],
    ids=["not-hex", "odd-length", "bad-digit", "0x-prefix", "canary"],
)
def test_from_hex_errors_do_not_echo_the_input(text: str) -> None:
    with pytest.raises(KeyMaterialError) as info:
        LinkageSecret.from_hex(text)
    message = (str(info.value) + repr(info.value)).lower()
    assert text.lower() not in message
    assert TEST_SECRET_HEX[:16] not in message
    assert "zqx" not in message


def test_short_hex_error_gives_length_not_bytes() -> None:
    short = TEST_SECRET_HEX[:40]
    with pytest.raises(KeyMaterialError) as info:
        LinkageSecret.from_hex(short)
    assert short not in str(info.value)
    assert "20" in str(info.value)  # the length it got, which is not secret


# ---------------------------------------------------------------------------------------------
# redaction


def _renderings(obj: object) -> list[str]:
    return [repr(obj), str(obj), f"{obj}", f"{obj!r}", repr([obj]), repr({"k": obj})]


def _leaks(text: str) -> bool:
    lowered = text.lower()
    return (
        TEST_SECRET_HEX in lowered
        or TEST_SECRET_HEX[:16] in lowered
        or repr(TEST_SECRET)[2:-1].lower()[:16] in lowered
        or "test only" in lowered
        or "not-a-real-key" in lowered
    )


def test_linkage_secret_repr_and_str_are_redacted() -> None:
    secret = LinkageSecret.for_tests()
    for text in _renderings(secret):
        assert not _leaks(text), text
        assert "redacted" in text


def test_keyset_repr_and_str_are_redacted_even_after_deriving_keys() -> None:
    keys = KeySet(LinkageSecret.for_tests(), key_version=1)
    derived = keys.key("filter", "given_name")
    for text in _renderings(keys):
        assert not _leaks(text), text
        assert derived.hex() not in text.lower()
        assert repr(derived)[2:-1] not in text
        assert "key_version=1" in text


def test_secrets_compare_by_value_and_hash_consistently() -> None:
    assert LinkageSecret.for_tests() == LinkageSecret.from_hex(TEST_SECRET_HEX)
    assert hash(LinkageSecret.for_tests()) == hash(LinkageSecret.from_hex(TEST_SECRET_HEX))
    assert LinkageSecret.for_tests() != LinkageSecret(bytes(32))
    assert LinkageSecret.for_tests() != TEST_SECRET  # never equal to the raw bytes


def test_keyset_derives_a_table_once_and_per_keyset() -> None:
    calls: list[int] = []

    def make() -> list[int]:
        calls.append(1)
        return [len(calls)]

    keys = KeySet(LinkageSecret.for_tests())
    first = keys.derived(("diffusion", 3), make)
    assert keys.derived(("diffusion", 3), make) is first and len(calls) == 1
    keys.derived(("diffusion", 5), make)
    assert len(calls) == 2
    assert KeySet(LinkageSecret.for_tests()).derived(("diffusion", 3), make) == [3]
