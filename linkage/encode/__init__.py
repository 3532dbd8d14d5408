"""Encoding: normalised identifiers -> tokens -> keyed positions -> packed Bloom filters.

Role: runs on the agency node only (it needs the keys). For a batch of records it produces,
per record, one Bloom filter per published field (compared field by field by the matcher),
one record-level filter (a CLK, used for LSH blocking), one keyed blocking token per blocking
rule and one salt tag per salt source (:class:`EncodedBatch`). Nothing in the output can be
turned back into a value without the linkage secret.

Modules: :mod:`.tokens` (values to tokens), :mod:`.hashing` (keyed hashes), :mod:`.batch`
(the output), :mod:`.encoder` (the encoder).

Invariants:

* Deterministic: the same schema, keys and values always give the same bytes, so publishing
  is idempotent. Per-batch dictionaries die with the call; no global caches of values,
  tokens or keys.
* Every keyed hash is HMAC-SHA256 under a key derived for one field and purpose
  (:class:`linkage.keys.KeySet`); positions never come from double hashing, whose linear
  structure is exploitable.
* A missing or invalid value is an all-zero filter with ``field_present`` False, a blocking
  token or salt tag of 0, and a :class:`ValueProblem` naming row, field and reason, never the
  value.
* Hardening (:mod:`linkage.harden`) is the last step; published widths are the schema's
  (:attr:`FieldSpec.published_bits`, :attr:`Schema.published_record_bits`).
* The kernel's HMAC (:mod:`linkage.kernel`) is held to Python's :mod:`hmac` by the references
  :func:`token_positions_reference` and :func:`token64_reference`, and the one-record lookup
  path :func:`encode_record` to the batch path :func:`encode_records`.
"""

from linkage.encode.batch import (
    EncodedBatch,
    ValueProblem,
    concat_batches,
    validate_filters,
    validate_salt_tags,
)
from linkage.encode.encoder import encode_record, encode_records, raw_values
from linkage.encode.hashing import (
    blocking_token,
    filter_part,
    token64_reference,
    token_positions,
    token_positions_reference,
)
from linkage.encode.tokens import blocking_value, tokenise

__all__ = [
    "EncodedBatch",
    "ValueProblem",
    "blocking_token",
    "blocking_value",
    "concat_batches",
    "encode_record",
    "encode_records",
    "filter_part",
    "raw_values",
    "token64_reference",
    "token_positions",
    "token_positions_reference",
    "tokenise",
    "validate_filters",
    "validate_salt_tags",
]
