"""The linkage schema: which fields exist and how each is normalised, tokenised and encoded.

Role: every agency node and the matcher load the same schema file. The node uses it to encode;
the matcher uses it to compare and score. A schema is a versioned TOML file::

    [schema]        name, version, day_first, date_range, record_filter_bits, description
    [hardening]     record-level hardening: balance, xor_fold, blip_epsilon, diffusion_t
    [[field]]       one table per field, in encoding order: name, kind, tokeniser, q, padded,
                    filter_bits, hashes_per_token, record_hashes_per_token, phonetic, levels,
                    salt, hardening (a table, same keys as [hardening]), combines
    [[blocking]]    one table per keyed blocking rule: name, parts

Modules: :mod:`.fields` (the vocabulary and per-field settings), :mod:`.model` (the
schema and its validation), :mod:`.strict` (the tables as strict models, through
:mod:`linkage.strict`, and the rules across tables), :mod:`.files` (files).

Invariants and contract:

* Parsed strictly (:func:`parse_schema`, :func:`schema_from_dict`) into frozen dataclasses:
  an unknown key is an error and every problem is reported at once
  (:class:`~linkage.errors.SchemaError`), by position built from known structure
  (``field[2].salt``), never with a key, name or value from the file, which may be an
  identifier pasted in by mistake.
* A blocking part or salt is written ``"<field>.<transform>"``; :data:`BLOCKING_TRANSFORMS`
  lists the transforms of each kind. A list-valued salt publishes the field once per salt,
  as *views* (:meth:`Schema.with_salt`); ``combines`` makes a field of other fields' values.
* Published widths after hardening are stated once: :meth:`Hardening.published_bits`,
  :attr:`FieldSpec.published_bits`, :attr:`Schema.published_record_bits`.
* :meth:`Schema.fingerprint` travels with every encoding; the matcher refuses encodings whose
  fingerprint differs from the schema it serves. It covers everything that changes encoding.
"""

from linkage.schema.fields import (
    BLOCKING_TRANSFORMS,
    DEFAULT_TOKENISER,
    ENCODING_VERSION,
    FIELD_KINDS,
    PHONETIC_CODES,
    TOKENISERS,
    VIEW_SEPARATOR,
    BlockingRule,
    FieldSpec,
    Hardening,
    view_suffix,
)
from linkage.schema.files import (
    default_child_schema,
    febrl_schema,
    load_schema,
    parse_schema,
    shipped_schema_names,
    shipped_schema_text,
)
from linkage.schema.model import Schema, schema_from_dict

__all__ = [
    "BLOCKING_TRANSFORMS",
    "DEFAULT_TOKENISER",
    "ENCODING_VERSION",
    "FIELD_KINDS",
    "PHONETIC_CODES",
    "TOKENISERS",
    "VIEW_SEPARATOR",
    "BlockingRule",
    "FieldSpec",
    "Hardening",
    "Schema",
    "default_child_schema",
    "febrl_schema",
    "load_schema",
    "parse_schema",
    "schema_from_dict",
    "shipped_schema_names",
    "shipped_schema_text",
    "view_suffix",
]
