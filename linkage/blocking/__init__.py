"""Candidate pairs: which records the matcher compares, from keyed blocking tokens and LSH.

Role: after the nodes have published, the matcher must decide which pairs of records are worth
the Dice kernel. This module turns per-record *block keys* into :class:`CandidatePairs`, with
no Python loop over blocks or records (only over blocking rules and LSH bands, which are few).

Modules: :mod:`.pairs` (the fast candidate pairs), :mod:`.reference` (their plain
references), :mod:`.lsh` (LSH band keys).

Contract:

* Block keys are a ``uint64`` array ``(n_records, n_rules)``: column ``r`` holds rule ``r``'s
  key, a keyed blocking token from the node (:func:`linkage.encode.blocking_token`) or an LSH
  band key (:func:`lsh_keys`). ``0`` means "no key" and never puts two records in a block.
  Rules meet column to column only: a key of rule 0 never meets a key of rule 1.
* Candidate pairs are unique across rules and sorted by ``(left, right)``; for deduplication
  within one dataset every pair has ``left < right``.
* A block is skipped *as a whole* when its pair count exceeds ``max_block_size`` (never
  silently truncated) and counted; :func:`count_block_pairs_link` and
  :func:`count_block_pairs_dedupe` give the counts without materialising any pair. With a
  :class:`BlockPruning`, a large deduplication block is pruned to each member's nearest
  neighbours instead.
* Every fast function has a plain reference beside it (``*_reference``) with the same answer.

Errors: malformed filters raise :class:`~linkage.errors.FilterFormatError`; key arrays with the
wrong shape or dtype and bad parameters raise :class:`~linkage.errors.JigsawError`; left and
right key arrays with different rule counts raise
:class:`~linkage.errors.IncompatibleEncodingError`. No message carries a key or filter value.
"""

from linkage.blocking.lsh import lsh_bit_positions, lsh_keys
from linkage.blocking.pairs import (
    BlockCounts,
    BlockPruning,
    CandidatePairs,
    candidate_pairs_dedupe,
    candidate_pairs_link,
    count_block_pairs_dedupe,
    count_block_pairs_link,
    union_pairs,
)
from linkage.blocking.reference import (
    candidate_pairs_dedupe_reference,
    candidate_pairs_link_reference,
)

__all__ = [
    "BlockCounts",
    "BlockPruning",
    "CandidatePairs",
    "candidate_pairs_dedupe",
    "candidate_pairs_dedupe_reference",
    "candidate_pairs_link",
    "candidate_pairs_link_reference",
    "count_block_pairs_dedupe",
    "count_block_pairs_link",
    "lsh_bit_positions",
    "lsh_keys",
    "union_pairs",
]
