"""Unsupervised Fellegi-Sunter scoring: Dice similarities to calibrated match probabilities.

Role: after ``similarity`` has computed, for every candidate pair from ``blocking``, a Dice
similarity per field (``sim[:, f]``, float64 in [0, 1]) and a presence mask
(``both_present[:, f]``, False when either record lacks the field), this module

1. cuts each field's similarity into *comparison levels* (:func:`comparison_levels`),
2. estimates the per-level probabilities without labels: ``u`` (probability of a level among
   non-matches) from random pairs (:func:`estimate_u`), ``m`` (probability among matches) and
   the prior proportion of matches ``λ`` by expectation-maximisation over the candidate pairs'
   comparison vectors (:func:`fit_fellegi_sunter`, :func:`fit_latent_classes`), assuming the
   fields are conditionally independent given the class. A pair selected through blocking
   rules on a field (``blocked_on``) does not inform that field's m, and Dirichlet priors
   (:func:`m_prior`) keep every level's m a real estimate, never zero,
3. turns a comparison vector into per-field weights ``log2(m / u)``, a calibrated match
   probability and a per-field explanation (:class:`FellegiSunterModel`), which ``solve``
   then ranks, assigns or clusters.

Modules: :mod:`.levels` (comparison levels), :mod:`.u_probabilities` (u from random
pairs), :mod:`.em` (m and the prior by EM), :mod:`.model` (the fitted model).

Invariants: a missing field (:data:`MISSING_LEVEL`) carries weight 0, neutral, never counted as
disagreement, and is skipped in the EM likelihood for that field. Fitting is deterministic. The
package holds no state and logs nothing; it never sees an identifier, only similarities.
"""

from linkage.scoring.em import (
    M_PRIOR_DECAY,
    M_PRIOR_NOT_EXACT,
    M_PRIOR_PAIRS,
    M_PRIOR_SHARE,
    MAX_LATENT_CLASSES,
    SHARE_PSEUDO_COUNT,
    LatentClassFit,
    fit_fellegi_sunter,
    fit_latent_classes,
    m_prior,
    priors_by_kind,
)
from linkage.scoring.levels import (
    MISSING_LEVEL,
    comparison_levels,
    level_cut_offs,
    level_label,
    levels_from_cut_offs,
)
from linkage.scoring.model import PROBABILITY_FLOOR, FellegiSunterModel, FieldEvidence
from linkage.scoring.u_probabilities import (
    SharedValueUFit,
    decontaminate_u,
    estimate_u,
    estimate_u_among_matches,
)

__all__ = [
    "MAX_LATENT_CLASSES",
    "MISSING_LEVEL",
    "M_PRIOR_DECAY",
    "M_PRIOR_NOT_EXACT",
    "M_PRIOR_PAIRS",
    "M_PRIOR_SHARE",
    "PROBABILITY_FLOOR",
    "SHARE_PSEUDO_COUNT",
    "FellegiSunterModel",
    "FieldEvidence",
    "LatentClassFit",
    "SharedValueUFit",
    "comparison_levels",
    "decontaminate_u",
    "estimate_u",
    "estimate_u_among_matches",
    "fit_fellegi_sunter",
    "fit_latent_classes",
    "level_cut_offs",
    "level_label",
    "levels_from_cut_offs",
    "m_prior",
    "priors_by_kind",
]
