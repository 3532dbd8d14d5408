"""Attack 1: frequency alignment of name encodings."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from benchmarks.attack.fields import salt_values
from benchmarks.attack.settings import NAME_FIELDS, normalised_values
from linkage.encode import EncodedBatch
from linkage.schema import Schema

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- attack 1


def frequency_attack(
    filters: NDArray[np.uint64],
    present: NDArray[np.bool_],
    true_values: Sequence[str | None],
    attacker_values: Sequence[str | None],
    attacker_salts: Sequence[str] | None = None,
    encoded_salts: Sequence[str] | None = None,
) -> tuple[float, float]:
    """Rank-align identical-filter groups with the attacker's name list.

    Without ``attacker_salts`` the attacker ranks values alone. With them (the attacker knows
    from the published schema that the field is salted, and with what), it ranks the
    (salt, value) combinations of its own population, since a salted encoding groups records
    by that combination, and labels a group with the value of the combination of equal rank.
    With ``encoded_salts`` too (the salt value of every encoded record: an upper bound on what
    the published salt tags give away, since they tell which records share a salt value but
    not which value), it ranks groups and combinations within each salt value separately.
    Either way a record counts as re-identified when its group is labelled with its true value.

    Returns (share of present encodings re-identified, share of distinct true values of
    which at least one group was labelled correctly).
    """
    rows = np.flatnonzero(present)
    if rows.size == 0:
        return 0.0, 0.0
    view = np.ascontiguousarray(filters[rows]).view(np.dtype((np.void, filters.shape[1] * 8)))
    _, group, sizes = np.unique(view.ravel(), return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    first_seen = np.full(sizes.shape[0], rows.size, dtype=np.int64)
    np.minimum.at(first_seen, group, np.arange(rows.size))
    salts = attacker_salts if attacker_salts is not None else [""] * len(attacker_values)
    public = Counter((v, salt) for v, salt in zip(attacker_values, salts, strict=True) if v)
    # the salt value a group is ranked within ("" for one ranking over every group)
    group_salt = [""] * sizes.shape[0]
    if encoded_salts is not None:
        for g, r in zip(group.tolist(), rows.tolist(), strict=True):
            group_salt[g] = encoded_salts[r]
    ranked_by_salt: dict[str, list[str]] = {}
    for (name, salt), _ in sorted(public.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        ranked_by_salt.setdefault(salt if encoded_salts is not None else "", []).append(name)
    guess: list[str | None] = [None] * sizes.shape[0]
    next_rank: dict[str, int] = {}
    # groups in order: size descending, then first appearance; each takes the next name of
    # its salt's ranking
    for g in np.lexsort((first_seen, -sizes)).tolist():
        ranking = ranked_by_salt.get(group_salt[g], [])
        rank = next_rank.get(group_salt[g], 0)
        next_rank[group_salt[g]] = rank + 1
        guess[g] = ranking[rank] if rank < len(ranking) else None
    truth = [true_values[int(r)] for r in rows]
    hit = np.array([guess[int(g)] == t for g, t in zip(group, truth, strict=True)], dtype=bool)
    distinct = {t for t in truth if t}
    found = {t for t, h in zip(truth, hit, strict=True) if h}
    return float(hit.mean()), len(found) / max(1, len(distinct))


def frequency_shares(
    schema: Schema,
    encoded: EncodedBatch,
    encoded_columns: dict[str, list[str | None]],
    public_columns: dict[str, list[str | None]],
) -> dict[str, float]:
    """The frequency attack on each of :data:`NAME_FIELDS`: ``frequency_<field>[_salted |
    _salt_known]_records`` and ``..._values`` (see :func:`run_attack`). A field published in
    views is attacked view by view; the best view counts."""
    row: dict[str, float] = {}
    for field in NAME_FIELDS:
        truth = normalised_values(schema, field, encoded_columns[field])
        public = normalised_values(schema, field, public_columns[field])
        for view in (spec.name for spec in schema.fields if spec.input_name == field):
            index = encoded.field_names.index(view)
            filters, present = encoded.field_filters[index], encoded.field_present[:, index]
            found = {"": frequency_attack(filters, present, truth, public)}
            # salt-aware: (value, salt) combinations ranked (the same when unsalted)
            salts = salt_values(schema, view, public_columns)
            found["_salted"] = frequency_attack(filters, present, truth, public, salts)
            # salt-known: ranked within each salt value (what salt tags could give away)
            known = salt_values(schema, view, encoded_columns)
            found["_salt_known"] = frequency_attack(filters, present, truth, public, salts, known)
            for kind, (share, distinct) in found.items():
                if share >= row.get(f"frequency_{field}{kind}_records", -1.0):
                    row[f"frequency_{field}{kind}_records"] = share
                    row[f"frequency_{field}{kind}_values"] = distinct
    return row
