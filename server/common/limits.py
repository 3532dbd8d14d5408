"""Bounds that a node and the matcher both apply to what a caller sends.

Role: one definition of the sizes both services accept, so that a lookup a node accepts is
one the matcher accepts too. A caller past a bound gets ``INVALID_ARGUMENT`` naming the
field (a node caps ``max_candidates`` instead of refusing it).
"""

from __future__ import annotations

#: Candidates a lookup returns when the caller names no number (``max_candidates`` = 0).
DEFAULT_MAX_CANDIDATES = 20
#: The most candidates one lookup (one Match) may ask for.
MAX_CANDIDATES = 100
#: The longest free-text purpose a caller may state (``ResolveReference``).
MAX_PURPOSE_CHARS = 500

__all__ = ["DEFAULT_MAX_CANDIDATES", "MAX_CANDIDATES", "MAX_PURPOSE_CHARS"]
