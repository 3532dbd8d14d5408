"""Tokens: a normalised value to the strings that are hashed into its filter.

Contract: :func:`tokenise` gives a value's tokens by the field's tokeniser, in a stable order
without duplicates; a prefix keeps token kinds apart, so a bigram never equals a code.
:func:`blocking_value` gives the value a blocking part or salt takes under a transform (a
phonetic code, a birth year). Pure functions of the value and the field's settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jellyfish

from linkage import normalise as norm
from linkage.errors import SchemaError
from linkage.schema import FieldSpec

_PHONETIC: Mapping[str, Callable[[str], str]] = {
    "soundex": jellyfish.soundex,
    "nysiis": jellyfish.nysiis,
    "metaphone": jellyfish.metaphone,
    "match_rating": jellyfish.match_rating_codex,
}


# --------------------------------------------------------------------------- tokenisers


def _qgrams(part: str, q: int, padded: bool) -> list[str]:
    text = f"{'_' * (q - 1)}{part}{'_' * (q - 1)}" if padded and q > 1 else part
    if len(text) < q:
        return [f"q:{text}"]
    return [f"q:{text[i : i + q]}" for i in range(len(text) - q + 1)]


def tokenise(spec: FieldSpec, value: str) -> list[str]:
    """Tokens of one normalised value (order-preserving, duplicates removed).

    Tokens are strings; a prefix keeps token kinds apart, so a bigram can never equal a code:

    * ``qgram`` (names, text): for every part of the value, its q-grams, padded with ``_`` on
      both sides when ``padded`` (``q:_j``, ``q:jo``, ...), the whole part (``w:jo``) and each
      configured phonetic code of the part (``p:soundex:J000``).
    * ``date``: ``y:YYYY``, ``m:MM``, ``d:DD``, ``ym:YYYY-MM``, ``md:MM-DD`` and the unordered
      day/month pair ``dm:<low>/<high>``, so a day/month transposition keeps some similarity.
    * ``postcode``: unit ``u:SW1A1AA``, sector ``s:SW1A 1``, district ``t:SW1A``, area
      ``a:SW`` and padded bigrams of the unit without its space.
    * ``exact``: the whole value ``x:<value>``.

    A salted field's tokens are then prefixed by the encoder (:func:`_salted`).
    """
    tokens: list[str]
    if spec.tokeniser == "qgram":
        tokens = []
        for part in value.split(" "):
            if not part:
                continue
            tokens.extend(_qgrams(part, spec.q, spec.padded))
            tokens.append(f"w:{part}")
            for code in spec.phonetic:
                ph = _PHONETIC[code](part)
                if ph:
                    tokens.append(f"p:{code}:{ph}")
    elif spec.tokeniser == "date":
        y, m, d = value[0:4], value[5:7], value[8:10]
        lo, hi = sorted((m, d))
        tokens = [f"y:{y}", f"m:{m}", f"d:{d}", f"ym:{y}-{m}", f"md:{m}-{d}", f"dm:{lo}/{hi}"]
    elif spec.tokeniser == "postcode":
        unit = value.replace(" ", "")
        district = value.split(" ")[0]
        tokens = [f"u:{unit}", f"t:{district}", f"a:{norm.postcode_area(value)}"]
        if " " in value:
            tokens.append(f"s:{norm.postcode_sector(value)}")
        tokens.extend(_qgrams(unit, 2, True))
    else:
        tokens = [f"x:{value}"]
    return list(dict.fromkeys(tokens))


def blocking_value(kind: str, transform: str, value: str) -> str:
    """The value a blocking part (or salt) takes from a normalised field value."""
    if transform == "value":
        return value
    if kind in ("name", "family_name", "text"):
        first = value.split(" ")[0]
        if transform == "soundex":
            return " ".join(jellyfish.soundex(p) for p in value.split(" ") if p)
        if transform == "nysiis":
            return " ".join(jellyfish.nysiis(p) for p in value.split(" ") if p)
        if transform == "metaphone":
            return " ".join(jellyfish.metaphone(p) for p in value.split(" ") if p)
        if transform == "initial":
            return first[:1]
        if transform == "first_part":
            return first
    if kind == "date":
        if transform == "year":
            return value[0:4]
        if transform == "month_day":
            return value[5:10]
        if transform == "year_month":
            return value[0:7]
        if transform == "year_day":
            return f"{value[0:4]}-{value[8:10]}"
        if transform == "day_month":  # unordered, so that a transposition keeps it
            low, high = sorted((value[5:7], value[8:10]))
            return f"{low}/{high}"
    if kind == "postcode":
        if transform == "sector":
            return norm.postcode_sector(value)
        if transform == "district":
            return norm.postcode_district(value)
        if transform == "area":
            return norm.postcode_area(value)
    raise SchemaError([f"transform {transform!r} not available for a {kind} field"])


def _salted(tokens: Sequence[str], salt_value: str) -> list[str]:
    """``tokens`` prefixed with ``<salt value>|``, or ``~|`` when the salt value is missing
    (empty)."""
    prefix = (salt_value or "~") + "|"
    return [prefix + token for token in tokens]
