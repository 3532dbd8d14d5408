"""Lookups: the candidates of one encoded query, ranked by the fitted model.

Role: :class:`MatchIndex` is the matcher's index (:mod:`linkage.index.store` holds the
records); this module answers ``Match``: one encoded query in, ranked candidates (agency,
reference, probability, per-field comparison levels) out.

A lookup takes the slots that share a blocking token with the query, copies their rows and
scores them field by field with the fitted Fellegi-Sunter model (a record that is a *form*,
:mod:`linkage.forms`, whose assumed salt value the query contradicts is dropped, not scored:
its record's other form is the comparison that counts; the index does not know which slots
are forms of one record, the matcher merges them); then it adds the ``scan_top_k`` slots
whose record-level filter is most similar to the query's (a full scan with the fast Dice
kernel, which catches records whose every blocking token is damaged) and scores those it did
not have. The scan is the one cost that grows with the index.

Skipping the scan: with ``confident_probability`` set (the matcher passes
:data:`CONFIDENT_PROBABILITY` and :data:`CONFIDENT_CANDIDATES`), the scan runs only when no
blocking candidate already reaches that probability: a lookup whose child blocking found
needs no safety net, and a lookup that found nothing still gets it. Skipping can only remove
candidates, and only from lookups whose child is already found with confidence
(``benchmarks.scan_value`` compares the settings). ``confident_probability=None`` (the library
default) scans on every lookup.

Concurrency: a lookup holds the store's lock only to find the blocking candidates and copy
their rows, and (when it scans) to copy the scan's rows; scoring and the full scan (GIL-free
in the kernel) run without it, so concurrent lookups use every core. The scan only proposes
slots; each is re-checked (live?) and its rows copied under the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from linkage import forms, scoring, similarity
from linkage.compare import compare_fields
from linkage.encode import EncodedBatch
from linkage.errors import FilterFormatError
from linkage.index.pairs import (
    _concatenate_scores,
    _count_confident,
    _dice_fields_to_one,
    _level_cut_offs,
    _QueryFields,
    _rank,
    _Scored,
)
from linkage.index.sorted_keys import narrow_block_keys
from linkage.index.store import IndexStore, _Gathered
from linkage.schema import Schema

#: With ``MatchIndex.query(..., confident_probability=CONFIDENT_PROBABILITY)`` a lookup skips
#: the full record-filter scan when at least ``CONFIDENT_CANDIDATES`` blocking candidates are
#: at least that likely matches (the matcher's setting; see the module docstring).
CONFIDENT_PROBABILITY = 0.95
CONFIDENT_CANDIDATES = 1


@dataclass(frozen=True)
class IndexedCandidate:
    """One lookup result: who holds it, how likely it is the same person and why."""

    agency: str
    reference: str
    probability: float
    levels: tuple[int, ...]
    #: per comparison (:attr:`Schema.comparison_names`): True where both records hold the value
    #: but it could not be compared (linkage.compare; its level is then the missing level)
    not_compared: tuple[bool, ...]


class MatchIndex(IndexStore):
    """Encodings of many agencies, searchable by blocking token and record similarity."""

    def __init__(
        self,
        schema: Schema,
        *,
        key_version: int,
        capacity: int = 1024,
        merge_threshold: int = 20_000,
    ) -> None:
        super().__init__(
            schema, key_version=key_version, capacity=capacity, merge_threshold=merge_threshold
        )
        # the schema's comparison-level cut-offs by rank, or None when the schema's levels
        # are invalid: then ``scoring.comparison_levels`` scores, and raises its error, as it
        # always did
        self._level_cut_offs = _level_cut_offs(schema)
        # per field a published form may assume (linkage.forms): its column in the presence
        # rows and the column of its salt tag (none: no pair can conflict); found once here,
        # not per lookup
        self._assumable = forms.assumable_columns(schema)

    def query(
        self,
        query: EncodedBatch,
        model: scoring.FellegiSunterModel,
        *,
        max_candidates: int = 10,
        min_probability: float = 0.5,
        scan_top_k: int = 20,
        scan_threshold: float = 0.5,
        confident_probability: float | None = None,
        confident_candidates: int = CONFIDENT_CANDIDATES,
        threads: int = 1,
    ) -> list[IndexedCandidate]:
        """Ranked candidates for one encoded record (see the module docstring).

        The full scan (``scan_top_k`` most similar record filters at Dice >= ``scan_threshold``)
        runs on every lookup (``confident_probability=None``, the default), or only when fewer
        than ``confident_candidates`` blocking candidates reach ``confident_probability``;
        ``scan_top_k=0`` never scans.
        """
        self._check(query)
        if len(query) != 1:
            raise FilterFormatError("query: expected exactly one encoded record")
        with self._lock:
            size = self._size
            # array objects, not copies: a concurrent upsert writes rows in place and a growth
            # swaps in new arrays, which leaves these as they were (see the scan below)
            record_filters = self._record[:size]
            record_popcounts = self._record_pop[:size]
            found: list[NDArray[np.signedinteger[Any]]] = []
            query_keys = narrow_block_keys(query.block_keys[0]).tolist()
            for r, idx in enumerate(self._block_index):
                key = int(query_keys[r])
                if key:
                    found.append(idx.find_unordered(key, self._block[r]))
            # one sort for all the rules (each rule's slots are distinct, not sorted)
            blocked = (
                np.unique(np.concatenate(found)).astype(np.int64, copy=False)
                if found
                else np.zeros(0, np.int64)
            )
            # scored before the scan only when a confident result may make the scan needless
            early = self._gather(blocked) if confident_probability is not None else None
        query_fields = self._query_fields(query)
        scored = self._score(query, query_fields, model, early) if early is not None else None
        wanted = blocked  # slots not yet scored
        if scored is not None:
            wanted = np.zeros(0, np.int64)
            if _count_confident(scored, confident_probability) >= confident_candidates:
                scan_top_k = 0
        if scan_top_k and size:
            # The full scan runs outside the lock, so that concurrent lookups use every core
            # (the kernel releases the GIL). It only proposes slots: a row being rewritten
            # meanwhile can at worst change which slots are proposed, and every proposed slot
            # is checked (live?) and its rows copied below, under the lock.
            scan_idx, _ = similarity.dice_one_to_many(
                query.record_filters[0],
                record_filters,
                threshold=scan_threshold,
                top_k=scan_top_k,
                threads=threads,
                candidate_popcounts=record_popcounts,
            )
            scanned = np.setdiff1d(scan_idx.astype(np.int64), blocked)
            wanted = np.concatenate([wanted, scanned]) if wanted.size else scanned
        if wanted.size or scored is None:
            with self._lock:
                gathered = self._gather(wanted)
            late = self._score(query, query_fields, model, gathered)
            scored = late if scored is None else _concatenate_scores(scored, late)
        order, probs = _rank(scored.probabilities, min_probability, max_candidates)
        return [
            IndexedCandidate(
                agency=self._agencies[scored.agency_codes[i]],
                reference=bytes(scored.references[i]).hex(),
                probability=float(p),
                levels=tuple(int(x) for x in scored.levels[i]),
                not_compared=tuple(bool(x) for x in scored.not_compared[i]),
            )
            for i, p in zip(order.tolist(), probs.tolist(), strict=True)
        ]

    def _query_fields(self, query: EncodedBatch) -> _QueryFields:
        """The query's field filters side by side (as the index holds a slot's) and their
        bit counts per field."""
        if not self._fields.shape[1]:
            # no field has a word: every field empty
            return _QueryFields(np.zeros(0, np.uint64), np.zeros(len(self.schema.fields), np.int64))
        row = np.concatenate([f[0] for f in query.field_filters])
        return _QueryFields(row, self._field_layout.sum_by_field(np.bitwise_count(row)))

    def _score(
        self,
        query: EncodedBatch,
        query_fields: _QueryFields,
        model: scoring.FellegiSunterModel,
        gathered: _Gathered,
    ) -> _Scored:
        """Compare the query with gathered records field by field and score them.

        A record that is a form whose assumed salt value the query contradicts, or that the
        query (a form) contradicts, is dropped (:func:`linkage.forms.assumption_conflicts`):
        the record's other form is the comparison that counts."""
        count = len(gathered.agency_codes)
        n_fields = len(self.schema.fields)
        if count and n_fields:
            sim, present = _dice_fields_to_one(
                query_fields, gathered.field_filters, self._field_layout
            )
        else:
            sim = np.zeros((count, n_fields))
            present = np.zeros((count, n_fields), dtype=bool)
        query_tags = narrow_block_keys(query.salt_tags[:1])  # held narrow, like the index's
        if count and self._assumable:
            conflicts = forms.assumption_conflicts(
                self._assumable, query.field_present[:1], query_tags, present, gathered.salt_tags
            )
            if conflicts.any():
                keep = ~conflicts
                gathered = gathered.take(keep)
                sim, present = sim[keep], present[keep]
                count = len(gathered.agency_codes)
        compared = compare_fields(
            self.schema, sim, query.field_present[:1], present, query_tags, gathered.salt_tags
        )
        if self._level_cut_offs is None:
            levels = scoring.comparison_levels(
                compared.similarity,
                compared.present,
                tuple(f.levels for f in self.schema.comparison_specs),
            )
        else:
            levels = scoring.levels_from_cut_offs(
                compared.similarity, compared.present, self._level_cut_offs
            )
        return _Scored(
            agency_codes=gathered.agency_codes,
            references=gathered.references,
            levels=levels,
            not_compared=compared.not_compared,
            probabilities=(model.match_probability(levels) if count else np.zeros(0, np.float64)),
        )
