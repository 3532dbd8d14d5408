"""Key material: the agencies' shared linkage secret and the keys derived from it.

Role: every keyed hash in Jigsaw (Bloom-filter positions, record-level filter positions,
blocking tokens, salt tags, hardening transforms) uses its own key, derived on the agency node
from the shared secret with HKDF-SHA256 (RFC 5869, from ``cryptography``). The derivation is
the compatibility contract between agencies (changing it changes every encoding):
``proto/FORMATS.md`` ("Derived keys").

Invariants: distinct (purpose, subject, version) triples give independent keys, so a key
leaked for one field says nothing about another, and rotating the secret or the version
changes every key. The matcher never holds the secret or any derived key. Secrets and keys are
wrapped in types whose ``repr`` is redacted; a :class:`KeySet` caches the keys it derived for
the life of one job (an ordinary object, never a module global).
"""

from __future__ import annotations

import hmac
import secrets as _secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from linkage.errors import KeyMaterialError

_T = TypeVar("_T")

HKDF_SALT = b"jigsaw/hkdf-salt/v1"
KEY_BYTES = 32
MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 64

#: The purposes a key may be derived for.
PURPOSES = frozenset({"filter", "record", "block", "salt", "harden", "probe"})

#: A published, visibly-fake secret for golden vectors, tests and documentation examples.
#: Never use it for real data: anyone can derive every key from it.
TEST_SECRET_HEX = "6a69677361772d54455354204f4e4c592d6e6f742d612d7265616c2d6b657921"


class LinkageSecret:
    """The agencies' shared linkage secret. ``repr`` and ``str`` never show the bytes."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray):
            raise KeyMaterialError("linkage secret: expected bytes")
        if not MIN_SECRET_BYTES <= len(value) <= MAX_SECRET_BYTES:
            raise KeyMaterialError(
                f"linkage secret: expected {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
                f"got {len(value)}"
            )
        self._value = bytes(value)

    @classmethod
    def generate(cls) -> LinkageSecret:
        """A fresh random 32-byte secret from the operating system's CSPRNG."""
        return cls(_secrets.token_bytes(MIN_SECRET_BYTES))

    @classmethod
    def from_hex(cls, text: str) -> LinkageSecret:
        """Parse a hex-encoded secret (whitespace ignored)."""
        try:
            raw = bytes.fromhex("".join(text.split()))
        except ValueError:
            raise KeyMaterialError("linkage secret: expected hexadecimal text") from None
        return cls(raw)

    @classmethod
    def for_tests(cls) -> LinkageSecret:
        """The published test secret (:data:`TEST_SECRET_HEX`)."""
        return cls.from_hex(TEST_SECRET_HEX)

    def to_hex(self) -> str:
        """Hex form, for writing the secret file. Handle the result as a secret."""
        return self._value.hex()

    def reveal(self) -> bytes:
        """The raw bytes. Only key derivation should call this."""
        return self._value

    def __repr__(self) -> str:
        return "LinkageSecret(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LinkageSecret):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("LinkageSecret", hmac.digest(self._value, b"hash", "sha256")))


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256 (thin wrapper so known-answer tests hit the real wiring)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive_key(secret: LinkageSecret, *, purpose: str, subject: str, key_version: int) -> bytes:
    """Derive the 32-byte key for one (purpose, subject, key version)."""
    if purpose not in PURPOSES:
        raise KeyMaterialError(f"key purpose: expected one of {sorted(PURPOSES)}")
    if not subject or "/" in subject:
        raise KeyMaterialError("key subject: expected a non-empty name without '/'")
    if key_version < 1:
        raise KeyMaterialError("key version: expected an integer >= 1")
    info = f"jigsaw/v1/{purpose}/{subject}/k{key_version}".encode()
    return hkdf_sha256(secret.reveal(), salt=HKDF_SALT, info=info, length=KEY_BYTES)


@dataclass(eq=False)
class KeySet:
    """Keys for one job under one secret and key version; derives each key once, on demand."""

    secret: LinkageSecret = field(repr=False)
    key_version: int = 1
    _cache: dict[tuple[str, str], bytes] = field(default_factory=dict, repr=False)
    _derived: dict[tuple[object, ...], object] = field(default_factory=dict, repr=False)

    def key(self, purpose: str, subject: str) -> bytes:
        """The key for ``purpose`` and ``subject`` (a field, rule or ``"record"``)."""
        slot = (purpose, subject)
        found = self._cache.get(slot)
        if found is None:
            found = derive_key(
                self.secret, purpose=purpose, subject=subject, key_version=self.key_version
            )
            self._cache[slot] = found
        return found

    def derived(self, slot: tuple[object, ...], make: Callable[[], _T]) -> _T:
        """``make()`` computed once per KeySet for ``slot`` (tables derived from these keys,
        e.g. a diffusion table): a node encoding one lookup at a time must not rebuild them
        per query. Lives and dies with the KeySet, like the keys themselves."""
        found = self._derived.get(slot)
        if found is None:
            found = make()
            self._derived[slot] = found
        return found  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"KeySet(key_version={self.key_version}, secret=<redacted>)"
