"""Solving: from scored candidate pairs to ranked candidates, one-to-one links and clusters.

Role: ``scoring`` gives every candidate pair a match probability (or any score where higher
means more likely the same child). This module turns those scores into decisions:

- :func:`rank_candidates` - for an online lookup, the candidates at or above a threshold,
  best first;
- :func:`one_to_one` - for linking two datasets without duplicates, a greedy best-first
  assignment in which no record is used twice (vectorised "mutual best" rounds, with the
  plain loop :func:`one_to_one_reference` beside it; both give the identical answer);
- :func:`cluster_records` - for batch linkage across agencies, clusters of records (one
  cluster = one child) by a constrained union-find over edges in descending score order, with
  :func:`cluster_records_reference` as a plain, slow reference;
- :func:`pairs_from_labels` - every within-cluster pair, for evaluation and storage.

Modules: :mod:`.ranking` (lookups and one-to-one links), :mod:`.clustering` (clusters).

Invariants: ordering is total and deterministic everywhere (score descending, then the smaller
record index, then the larger, or left, then right), so the result never depends on input
order. Cluster labels are canonical: a record's label is the smallest record index in its
cluster.

Input errors (shape mismatches, indices out of range, NaN scores) raise
:class:`linkage.errors.ModelError`, the library's error for scoring results that cannot be used.
"""

from linkage.solve.clustering import (
    DIRECT_OVERRIDE,
    MAX_RECORDS_PER_SOURCE,
    PREFETCH_GROUP_HOLDERS,
    Clustering,
    HardEvidence,
    cluster_records,
    cluster_records_reference,
    cluster_size_bound,
)
from linkage.solve.ranking import (
    one_to_one,
    one_to_one_reference,
    pairs_from_labels,
    rank_candidates,
)

__all__ = [
    "DIRECT_OVERRIDE",
    "MAX_RECORDS_PER_SOURCE",
    "PREFETCH_GROUP_HOLDERS",
    "Clustering",
    "HardEvidence",
    "cluster_records",
    "cluster_records_reference",
    "cluster_size_bound",
    "one_to_one",
    "one_to_one_reference",
    "pairs_from_labels",
    "rank_candidates",
]
