"""The vocabulary of a schema and the per-field settings: kinds, tokenisers, transforms.

Contract: :class:`FieldSpec` says how one field is normalised, tokenised, encoded and compared;
:class:`Hardening` the hardening of one filter and the width it is published with;
:class:`BlockingRule` the parts of one keyed blocking rule. All are frozen and built only by
the validator (:func:`linkage.schema.model.schema_from_dict`), which checks every value
against the vocabulary here (:data:`FIELD_KINDS`, :data:`TOKENISERS`,
:data:`BLOCKING_TRANSFORMS`). :data:`ENCODING_VERSION` is part of the fingerprint: bump it on
any change of tokenisation or filter construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Version of the tokenisation + Bloom-filter construction. Bump on any change of output.
ENCODING_VERSION = 2

FIELD_KINDS = ("name", "family_name", "date", "postcode", "nhs_number", "sex", "text", "exact")
TOKENISERS = ("qgram", "date", "postcode", "exact")
PHONETIC_CODES = ("soundex", "nysiis", "metaphone", "match_rating")
DEFAULT_TOKENISER = {
    "name": "qgram",
    "family_name": "qgram",
    "text": "qgram",
    "date": "date",
    "postcode": "postcode",
    "nhs_number": "exact",
    "sex": "exact",
    "exact": "exact",
}
BLOCKING_TRANSFORMS: Mapping[str, frozenset[str]] = {
    "name": frozenset(
        {"value", "soundex", "nysiis", "metaphone", "initial", "first_part", "filter"}
    ),
    "family_name": frozenset(
        {"value", "soundex", "nysiis", "metaphone", "initial", "first_part", "filter"}
    ),
    "text": frozenset({"value", "soundex", "initial", "filter"}),
    "date": frozenset(
        {"value", "year", "month_day", "year_month", "year_day", "day_month", "filter"}
    ),
    "postcode": frozenset({"value", "sector", "district", "area", "filter"}),
    "nhs_number": frozenset({"value", "filter"}),
    "sex": frozenset({"value", "filter"}),
    "exact": frozenset({"value", "filter"}),
}
"""Transforms a blocking part may name, per field kind. ``filter`` (blocking parts only, not
salts) is the field's published filter: a rule of ``filter`` parts groups records exactly as
equal filters do, so it shows the matcher nothing more (:mod:`linkage.encode`)."""

VIEW_SEPARATOR = "@"
"""Joins a field's name and a salt's transform into the name of a view: ``given_name@year``."""


def view_suffix(salt: str) -> str:
    """The part of a view's name that its salt (``"<field>.<transform>"``) gives: the transform."""
    return salt.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Hardening:
    """Hardening options of one filter (all off by default); see :mod:`linkage.harden`.

    The schema's ``[hardening]`` table hardens the record-level filter; a field's
    ``hardening`` table hardens that field's filter. Each filter is hardened under its own key.
    """

    balance: bool = False
    xor_fold: bool = False
    blip_epsilon: float = 0.0
    diffusion_t: int = 0

    @property
    def enabled(self) -> bool:
        """True when any transform is on (the filter is not published as encoded)."""
        return self != Hardening()

    def published_bits(self, filter_bits: int) -> int:
        """Width in bits of a ``filter_bits``-bit filter once hardened: what is published.

        The one statement of the width rule (:func:`linkage.harden.hardened_bits`, the
        encoder, the index and the wire checks all use it): balancing doubles the width, XOR
        folding halves it, diffusion and BLIP keep it. A validated schema never asks for a
        fold of an odd number of 64-bit words.
        """
        bits = 2 * filter_bits if self.balance else filter_bits
        return bits // 2 if self.xor_fold else bits

    def to_dict(self) -> dict[str, Any]:
        return {
            "balance": self.balance,
            "xor_fold": self.xor_fold,
            "blip_epsilon": self.blip_epsilon,
            "diffusion_t": self.diffusion_t,
        }


@dataclass(frozen=True)
class FieldSpec:
    """How one field is normalised, tokenised, encoded and compared.

    ``filter_bits`` (the paper symbol *l*) is the field-level Bloom filter length, a multiple
    of 64; ``hashes_per_token`` (*k*) the number of positions each token sets in it;
    ``record_hashes_per_token`` the positions each token sets in the record-level filter
    (0 keeps the field out of it). ``levels`` are descending Dice cut-offs for the
    Fellegi-Sunter comparison levels. ``salt`` names a ``field.transform`` whose value is mixed
    into every token of this field (hardening; empty for none). ``hardening`` transforms the
    field filter after encoding; the published width is :attr:`published_bits`.
    """

    name: str
    kind: str
    tokeniser: str
    q: int = 2
    padded: bool = True
    filter_bits: int = 256
    hashes_per_token: int = 4
    record_hashes_per_token: int = 2
    phonetic: tuple[str, ...] = ()
    levels: tuple[float, ...] = (0.9, 0.7, 0.5)
    salt: str = ""
    hardening: Hardening = field(default_factory=Hardening)
    view_of: str = ""
    """For a *view* (one of the filters of a field salted several ways): the field whose value
    it encodes. Empty for a field published once."""
    combines: tuple[str, ...] = ()
    """For a *combined* field: the input fields whose values, joined with a space in this
    order, are its value. It is compared only where none of them is (a fallback)."""

    @property
    def input_name(self) -> str:
        """The comparison this filter feeds: the field's name (a view's field's name)."""
        return self.view_of or self.name

    @property
    def filter_words(self) -> int:
        """Number of uint64 words in this field's filter as encoded (before hardening)."""
        return self.filter_bits // 64

    @property
    def published_bits(self) -> int:
        """Width in bits of this field's filter as published (after its hardening)."""
        return self.hardening.published_bits(self.filter_bits)

    @property
    def published_words(self) -> int:
        """Number of uint64 words in this field's filter as published (after its hardening)."""
        return self.published_bits // 64


@dataclass(frozen=True)
class BlockingRule:
    """A keyed blocking rule: records agreeing on every part share a block."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (field name, transform)
