"""The matcher's in-memory index of published encodings, for online lookups.

Role in the pipeline: the matcher holds every agency's published encodings here (rebuilt
from its SQLite store at start) and answers ``Match``: encoded query rows in, ranked
candidates (agency, reference, probability, per-field comparison levels) out, all the rows of
one lookup in one pass (:meth:`MatchIndex.query_rows`). It holds
encodings and opaque references only — nothing here can be read back as an identifier.

Modules: :mod:`.sorted_keys` (the lookup tables: slots sorted by blocking token or reference
key, bisected), :mod:`.store` (the slots and their arrays: upsert, withdraw, compact,
snapshot), :mod:`.pairs` (per-field Dice, levels and ranking of gathered candidates),
:mod:`.query` (:class:`MatchIndex`: blocking, the full scan, scoring, the ranked answer).
Each opens with its invariants and contract.
"""

# the private names are the tests' (re-exported explicitly, as ``name as name``)
from linkage.index.pairs import _dice_fields as _dice_fields
from linkage.index.pairs import _dice_to_one_reference as _dice_to_one_reference
from linkage.index.pairs import _level_cut_offs as _level_cut_offs
from linkage.index.pairs import _QueryFields as _QueryFields
from linkage.index.query import (
    CONFIDENT_CANDIDATES,
    CONFIDENT_PROBABILITY,
    IndexedCandidate,
    MatchIndex,
)
from linkage.index.sorted_keys import FENCE_STRIDE, narrow_block_keys
from linkage.index.sorted_keys import _SortedKeys as _SortedKeys
from linkage.index.store import REFERENCE_BYTES, reference_to_bytes
from linkage.index.store import _FieldLayout as _FieldLayout

__all__ = [
    "CONFIDENT_CANDIDATES",
    "CONFIDENT_PROBABILITY",
    "FENCE_STRIDE",
    "REFERENCE_BYTES",
    "IndexedCandidate",
    "MatchIndex",
    "narrow_block_keys",
    "reference_to_bytes",
]
