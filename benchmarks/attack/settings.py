"""Attack settings, the attacked and the attacker's populations, and their encoding."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from linkage import normalise as norm
from linkage import synthetic
from linkage.encode import EncodedBatch, encode_records
from linkage.errors import InvalidValueError
from linkage.forms import Forms, encode_forms
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import (
    Hardening,
    Schema,
    febrl_schema,
    schema_from_dict,
)

log = logging.getLogger(__name__)

NAME_FIELDS = ("given_name", "family_name")
#: Name fields salted by the ``salt`` settings, in the child and the FEBRL schema.
SALTED_FIELDS = ("given_name", "middle_names", "family_name", "surname")
SALT = "date_of_birth.value"
OVERLAPS = (0.2, 0.5, 0.8, 1.0)
#: The attacker's own secret (it never has the agencies' one).
ATTACKER_SECRET = LinkageSecret(bytes(range(100, 132)))
#: The agencies' secret in the benchmark: the published test secret.
AGENCIES_SECRET = LinkageSecret.for_tests()


@dataclass(frozen=True)
class Setting:
    """One hardening configuration: salting of the name fields plus :class:`Hardening`.

    ``hardening`` applies to every field-level filter and, unless ``record_hardening`` says
    otherwise, to the record-level filter alike. ``as_shipped`` measures the schema exactly as
    shipped instead (its salts, hardening and blocking rules untouched; the other options are
    then ignored): the child schema, and for FEBRL4-half its analogue
    (:func:`shipped_febrl_schema`).
    """

    name: str
    as_shipped: bool = False
    salt: bool = False
    hardening: Hardening = dataclasses.field(default_factory=Hardening)
    record_hardening: Hardening | None = None
    #: the salt (``"<field>.<transform>"``) of the name fields when ``salt`` is set
    salt_source: str = SALT


SETTINGS: tuple[Setting, ...] = (
    Setting("shipped", as_shipped=True),
    Setting("none"),
    Setting("salt", salt=True),
    Setting("balance", hardening=Hardening(balance=True)),
    Setting("xor_fold", hardening=Hardening(balance=True, xor_fold=True)),
    Setting("blip_eps8", hardening=Hardening(blip_epsilon=8.0)),
    Setting("blip_eps4", hardening=Hardening(blip_epsilon=4.0)),
    Setting("diffusion_t3", hardening=Hardening(diffusion_t=3)),
    Setting("diffusion_t5", hardening=Hardening(diffusion_t=5)),
    Setting("salt+diffusion_t3", salt=True, hardening=Hardening(diffusion_t=3)),
    Setting("balance+diffusion_t3", hardening=Hardening(balance=True, diffusion_t=3)),
)
"""``shipped`` is the child schema as shipped: names and postcode salted with the full date of
birth, the date of birth with sex, keyed diffusion (t = 3) on every filter, blocking rules of
``filter`` parts. The other settings start from it with every salt removed (then the name
fields salted with :data:`SALT` by the ``salt`` ones) and its hardening replaced; they keep its
blocking rules. ``xor_fold`` is run on balanced filters: the 64-bit ``sex`` filter cannot be
folded alone."""


# --------------------------------------------------------------------------- encoding


def setting_schema(base: Schema, setting: Setting) -> Schema:
    """``base`` hardened as ``setting`` says: ``base`` itself for an ``as_shipped`` setting;
    otherwise every salt of ``base`` removed (the shipped child schema salts), then its name
    fields salted with the setting's ``salt_source`` (:data:`SALT` unless ``--salt`` chose
    another) when the setting salts, and its hardening replaced by the setting's. Blocking
    rules are kept.

    Built with :meth:`Schema.with_hardening`, so the encoder itself hardens (and the schema
    fingerprint, which the matcher and the attacker see, names the hardening).
    """
    if setting.as_shipped:
        return base
    schema = base.with_salt("")
    if setting.salt:
        schema = schema.with_salt(setting.salt_source, SALTED_FIELDS)
    record = setting.hardening if setting.record_hardening is None else setting.record_hardening
    return schema.with_hardening(record=record, fields=setting.hardening)


def filter_blocking(schema: Schema) -> Schema:
    """``schema`` with every blocking rule's parts replaced by ``"<field>.filter"`` for the
    distinct fields the rule names (in order), identical rules after that dropped (the first
    one's name kept): the records a rule groups are then exactly those whose published
    filters of its fields are equal, as in the shipped child schema. Validated as a parsed
    file would be (:func:`schema_from_dict`)."""
    data = schema.to_dict()
    rules: dict[tuple[str, ...], str] = {}
    for rule in schema.blocking:
        parts = tuple(f"{name}.filter" for name in dict.fromkeys(f for f, _ in rule.parts))
        rules.setdefault(parts, rule.name)
    data["blocking"] = [{"name": name, "parts": list(parts)} for parts, name in rules.items()]
    return schema_from_dict(data)


#: FEBRL fields salted in :func:`shipped_febrl_schema`, as the child schema salts the names and
#: the postcode.
FEBRL_SALTED_FIELDS = ("given_name", "surname", "postcode")


def shipped_febrl_schema() -> Schema:
    """The FEBRL analogue of the shipped child schema (FEBRL4-half quality of ``shipped``):
    given name, surname and postcode salted with the full date of birth, keyed diffusion
    (t = 3) on the record filter and every field filter, blocking on equal filters
    (:func:`filter_blocking`). FEBRL has no sex field, so its date of birth stays unsalted."""
    diffusion = Hardening(diffusion_t=3)
    schema = febrl_schema().with_salt(SALT, FEBRL_SALTED_FIELDS)
    return filter_blocking(schema.with_hardening(record=diffusion, fields=diffusion))


def encode_setting(
    base: Schema,
    setting: Setting,
    columns: dict[str, list[str | None]],
    secret: LinkageSecret,
) -> tuple[Schema, EncodedBatch]:
    """Encode ``columns`` as an agency node would under ``setting`` (schema for the matcher).

    The attacker calls this too, on its own population with its own secret: it knows the
    published schema, hardening included, but not the agencies' key.
    """
    schema = setting_schema(base, setting)
    return schema, encode_records(schema, KeySet(secret), columns)


def publish_setting(
    base: Schema,
    setting: Setting,
    columns: dict[str, list[str | None]],
    secret: LinkageSecret,
) -> tuple[Schema, Forms]:
    """What an agency node publishes under ``setting``: :func:`encode_setting`'s encodings,
    a record lacking an assumable salt field once per value (:mod:`linkage.forms`)."""
    schema = setting_schema(base, setting)
    return schema, encode_forms(schema, KeySet(secret), columns)


# --------------------------------------------------------------------------- data


def one_record_per_child(
    n_records: int, seed: int, *, addresses: bool = False
) -> tuple[dict[str, list[str | None]], NDArray[np.int64]]:
    """``n_records`` health-agency records of distinct children, in a seeded random order
    (``addresses``: with their address column too, every other value the same)."""
    data = synthetic.generate_population(int(n_records / 0.9) + 200, seed=seed, addresses=addresses)
    health = data.agencies["health"]
    _, first = np.unique(health.child_id, return_index=True)
    order = np.random.default_rng(seed).permutation(first)[:n_records]
    columns = {c: [health.columns[c][int(i)] for i in order] for c in health.columns}
    return columns, health.child_id[order]


def attacker_population(n_records: int, overlap: float, seed: int) -> NDArray[np.int64]:
    """Rows of the pool (:func:`one_record_per_child` of ``n_records * (2 - overlap)`` or more)
    the attacker holds: ``overlap`` of the encoded rows ``0..n_records-1`` and rows beyond
    them, ``n_records`` in all, in a seeded order."""
    shared = round(overlap * n_records)
    rows = np.arange(n_records - shared, 2 * n_records - shared, dtype=np.int64)
    return np.random.default_rng(seed + 1).permutation(rows)


def take_columns(
    columns: dict[str, list[str | None]], rows: NDArray[np.int64]
) -> dict[str, list[str | None]]:
    return {c: [values[int(i)] for i in rows] for c, values in columns.items()}


def normalised_values(schema: Schema, field: str, values: Sequence[str | None]) -> list[str | None]:
    """The shipped normaliser's output per value (None where missing or invalid)."""
    spec = schema.field(field)
    normaliser = norm.NORMALISERS[spec.kind]
    out: list[str | None] = []
    for value in values:
        try:
            out.append(
                normaliser(value, field=field, day_first=schema.day_first, years=schema.date_range)
            )
        except InvalidValueError:
            out.append(None)
    return out


def filter_index(batch: EncodedBatch, field: str) -> int:
    """The column of ``field``'s published filter in ``batch``: the field itself, or the
    first view of a field published in views (the attacks that read one filter per field)."""
    if field in batch.field_names:
        return batch.field_names.index(field)
    return next(i for i, name in enumerate(batch.field_names) if name.startswith(field + "@"))
