"""Batch linkage wired end to end: candidates -> field Dice -> levels -> EM -> probabilities.

Role in the pipeline: the one place where ``blocking``, ``similarity``, ``scoring`` and
``solve`` are put together, used alike by the matcher (online index and batch Link), the
benchmarks and the demo. Everything here works on :class:`~linkage.encode.EncodedBatch`
encodings only — no identifier, no key.

Modules: :mod:`.candidates` (options, candidates, comparison), :mod:`.fitting` (the model),
:mod:`.linking` (scores, links, clusters). Steps for a batch link or deduplication:

1. **Candidates**: records that share a keyed blocking token for some rule, united with
   pairs that share a band of bit-sampling LSH keys on the record-level filters (when
   ``lsh_bands > 0``).
2. **Comparison**: per field, the Dice coefficient of the two field filters (fast kernel);
   a pair where either side lacks the field, or whose salted field was encoded under two
   different salt values (salt tags differ), is marked missing, not dissimilar.
3. **Model**: u from the comparison levels of uniformly random record pairs (nearly all
   non-matches); m and the match prior by EM over the candidates' comparison vectors; no
   labels anywhere. Each field's m is estimated without the candidates that blocking
   selected through that field (:func:`fitting_pairs`, :func:`rule_columns`); an EM that
   stops at its iteration cap is logged as a warning (:func:`reported`). A salted field
   whose compared random pairs are mostly matches (a fine salt in a small population) gets
   its u by EM over pairs sharing the salt value instead (:func:`salted_u_by_em`). The
   threshold is the model's own: match probability >= 0.5.
4. **Solving**: one-to-one assignment for two datasets without duplicates, clustering for
   deduplication and for many agencies (duplicates within one agency allowed; two records of
   one agency with different NHS numbers never joined through a chain, clusters over
   :func:`linkage.solve.cluster_size_bound` split at their weakest merges).
"""

from linkage.pipeline.candidates import (
    COMPARE_CHUNK_PAIRS,
    LinkageOptions,
    Progress,
    candidate_pairs,
    check_compatible,
    compare_pairs,
    n_levels_of,
    random_pairs,
    rule_columns,
    shared_block_keys,
    thresholds_of,
)
from linkage.pipeline.fitting import (
    CONTAMINATION_CAP,
    IDENTIFIER_KINDS,
    MIN_SALTED_COMPARED_PAIRS,
    SALTED_U_ROUNDS,
    FittingPairs,
    fit_model,
    fitting_pairs,
    identifier_u,
    reported,
    salt_sources_over_cap,
    salted_u_by_em,
    same_salt_pairs,
)
from linkage.pipeline.linking import (
    HARD_EVIDENCE_KINDS,
    ClusterResult,
    LinkResult,
    ScoredPairs,
    cluster_datasets,
    cluster_forms,
    link_two,
    nhs_evidence,
    score_pairs,
)

__all__ = [
    "COMPARE_CHUNK_PAIRS",
    "CONTAMINATION_CAP",
    "HARD_EVIDENCE_KINDS",
    "IDENTIFIER_KINDS",
    "MIN_SALTED_COMPARED_PAIRS",
    "SALTED_U_ROUNDS",
    "ClusterResult",
    "FittingPairs",
    "LinkResult",
    "LinkageOptions",
    "Progress",
    "ScoredPairs",
    "candidate_pairs",
    "check_compatible",
    "cluster_datasets",
    "cluster_forms",
    "compare_pairs",
    "fit_model",
    "fitting_pairs",
    "identifier_u",
    "link_two",
    "n_levels_of",
    "nhs_evidence",
    "random_pairs",
    "reported",
    "rule_columns",
    "salt_sources_over_cap",
    "salted_u_by_em",
    "same_salt_pairs",
    "score_pairs",
    "shared_block_keys",
    "thresholds_of",
]
