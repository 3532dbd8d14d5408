"""Lookups: the rows of one lookup in, its ranked candidates out, in one pass.

Role: :class:`MatchIndex` is the matcher's index (:mod:`linkage.index.store` holds the
records); this module answers ``Match``. A lookup is several query rows, hypotheses about one
person (one row per assumed sex value, :mod:`linkage.forms`; the date hypotheses, which meet
records through blocking only); the answer is its candidates (agency, reference,
probability, per-comparison levels), each once, best first.

One pass (:meth:`MatchIndex.query_rows`): the (row, slot) pairs sharing a blocking token are
found for all rows at once (one vectorised find per rule), each pair once; the live slots'
rows are copied once each, every pair scored in one batch (a record that is a *form* whose
assumed salt value the row contradicts, or that contradicts a row that is a form, is dropped,
not scored: the record's other form is the comparison that counts); then each scanning row
whose blocking found no confident candidate runs the full scan (the ``scan_top_k`` slots
whose record-level filter is most similar, with the fast Dice kernel: it catches records
whose every blocking token is damaged), and the slots it proposes that the row's blocking
did not find are scored likewise. The scan is the one cost that grows with the index.

Contract: the answer equals querying each row alone (:meth:`MatchIndex.query`) and merging
the rows' lists, each candidate at its best (:mod:`linkage.index.pairs`). The index does not
know which slots are forms of one record; the matcher merges them.

Skipping the scan: with ``confident_probability`` set (the matcher passes
:data:`CONFIDENT_PROBABILITY` and :data:`CONFIDENT_CANDIDATES`), a row scans only when none
of its blocking candidates already reaches that probability: a row whose child blocking
found needs no safety net, and a row that found nothing still gets it. Skipping can only
remove candidates, and only from rows whose child is already found with confidence
(``benchmarks.scan_value`` compares the settings). ``confident_probability=None`` (the library
default) scans on every scanning row.

Concurrency: a lookup holds the store's lock only to find the blocking pairs and copy their
rows, and (when it scans) to copy the scan's rows; scoring and the full scan (GIL-free in the
kernel) run without it, so concurrent lookups use every core. The scan only proposes slots;
each is re-checked (live?) and its rows copied under the lock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from linkage import forms, scoring, similarity
from linkage.compare import compare_fields
from linkage.encode import EncodedBatch
from linkage.errors import FilterFormatError, InvalidArgumentError
from linkage.index.pairs import (
    _concatenate_scores,
    _confident_rows,
    _dice_fields,
    _level_cut_offs,
    _Pairs,
    _QueryFields,
    _rank_rows,
    _Scored,
)
from linkage.index.sorted_keys import narrow_block_keys
from linkage.index.store import IndexStore
from linkage.schema import Schema

#: With ``MatchIndex.query(..., confident_probability=CONFIDENT_PROBABILITY)`` a lookup skips
#: the full record-filter scan when at least ``CONFIDENT_CANDIDATES`` blocking candidates are
#: at least that likely matches (the matcher's setting; see the module docstring).
CONFIDENT_PROBABILITY = 0.95
CONFIDENT_CANDIDATES = 1
#: A rule's tokens of at most this many rows are found one by one, more all at once.
FEW_KEYS = 4


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
        # are invalid: then ``scoring.comparison_levels`` scores, and raises its error, at
        # every lookup
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
        """Ranked candidates for one encoded record: :meth:`query_rows` of a one-row query.

        At most ``max_candidates`` at ``min_probability`` or more, best first (on a tie,
        blocking candidates before the scan's, each by slot).
        """
        if len(query) != 1:
            self._check(query)  # a malformed query is refused as such first
            raise FilterFormatError("query: expected exactly one encoded record")
        return self.query_rows(
            query,
            model,
            max_candidates=max_candidates,
            min_probability=min_probability,
            scan_top_k=scan_top_k,
            scan_threshold=scan_threshold,
            confident_probability=confident_probability,
            confident_candidates=confident_candidates,
            threads=threads,
        )

    def query_rows(
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
        scanning_rows: int | None = None,
        threads: int = 1,
    ) -> list[IndexedCandidate]:
        """Ranked candidates for the rows of one lookup (hypotheses about one person), in one
        pass (see the module docstring).

        The answer is what querying each row alone (:meth:`query`, the same settings) and
        merging the rows' lists gives: every candidate once, at its best probability over the
        rows (the earlier row on a tie), best first; at most ``max_candidates`` from each
        row's list, so at most ``rows · max_candidates`` in all.

        Only the first ``scanning_rows`` rows (all when None) may run the full scan
        (``scan_top_k`` most similar record filters at Dice >= ``scan_threshold``): each on
        every lookup (``confident_probability=None``, the default), or only when fewer than
        ``confident_candidates`` of that row's blocking candidates reach
        ``confident_probability``; the other rows meet records through blocking only.
        ``scan_top_k=0`` never scans.
        """
        self._check(query)
        rows = len(query)
        if rows < 1:
            raise FilterFormatError("query: expected at least one encoded record")
        scanning = rows if scanning_rows is None else scanning_rows
        if not 0 <= scanning <= rows:
            raise InvalidArgumentError(f"scanning_rows: expected 0 to {rows}")
        query_fields = _QueryFields.of(query, self._field_layout)
        query_tags = narrow_block_keys(query.salt_tags)  # held narrow, like the index's
        with self._lock:
            size = self._size
            # array objects, not copies: a concurrent upsert writes rows in place and a growth
            # swaps in new arrays, which leaves these as they were (see the scan below)
            record_filters = self._record[:size]
            record_popcounts = self._record_pop[:size]
            blocked_rows, blocked_slots = self._blocked(query)
            pairs = self._gather_pairs(blocked_rows, blocked_slots, scanned=False)
        scored = self._score(query, query_fields, query_tags, model, pairs)
        if scan_top_k and size and scanning:
            confident = _confident_rows(scored, confident_probability, rows)[:scanning]
            scan_rows = np.flatnonzero(confident < confident_candidates).tolist()
            # The full scan runs outside the lock, so that concurrent lookups use every core
            # (the kernel releases the GIL). It only proposes slots: a row being rewritten
            # meanwhile can at worst change which slots are proposed, and every proposed slot
            # is checked (live?) and its rows copied below, under the lock.
            found_rows: list[NDArray[np.int64]] = []
            found_slots: list[NDArray[np.int64]] = []
            for row in scan_rows:
                proposed, _ = similarity.dice_one_to_many(
                    query.record_filters[row],
                    record_filters,
                    threshold=scan_threshold,
                    top_k=scan_top_k,
                    threads=threads,
                    candidate_popcounts=record_popcounts,
                )
                new = np.setdiff1d(
                    proposed.astype(np.int64), blocked_slots[blocked_rows == row]
                ).astype(np.int64, copy=False)
                found_rows.append(np.full(new.size, row, dtype=np.int64))
                found_slots.append(new)
            if found_rows:
                with self._lock:
                    late = self._gather_pairs(
                        np.concatenate(found_rows), np.concatenate(found_slots), scanned=True
                    )
                scored = _concatenate_scores(
                    scored, self._score(query, query_fields, query_tags, model, late)
                )
        answer = _rank_rows(scored, min_probability, max_candidates).tolist()
        agencies = self._agencies  # only grows: every code gathered is in it
        levels = scored.levels[answer].tolist()
        not_compared = scored.not_compared[answer].tolist()
        return [
            IndexedCandidate(
                agency=agencies[code],
                reference=bytes(reference).hex(),
                probability=probability,
                levels=tuple(level),
                not_compared=tuple(flags),
            )
            for code, reference, probability, level, flags in zip(
                scored.agency_codes[answer].tolist(),
                scored.references[answer],
                scored.probabilities[answer].tolist(),
                levels,
                not_compared,
                strict=True,
            )
        ]

    def _blocked(self, query: EncodedBatch) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Every (query row, slot) pair sharing a blocking token, each once, ordered by row
        then slot, dead slots included (call under the lock).

        Per rule, the rows' tokens are found one by one when they are few
        (:meth:`_SortedKeys.find_unordered`), else all at once (:meth:`_SortedKeys.find_each`),
        whichever takes fewer numpy calls."""
        keys = narrow_block_keys(query.block_keys)  # (rows, rules)
        capacity = self._agency.shape[0]  # every slot is below it: a pair is one int64
        found: list[NDArray[np.int64]] = []
        for rule, (index, column) in enumerate(
            zip(self._block_index, keys.T.tolist(), strict=True)
        ):
            asked = [(row, key) for row, key in enumerate(column) if key]
            if len(asked) <= FEW_KEYS:
                for row, key in asked:
                    slots = index.find_unordered(key, self._block[rule])
                    found.append(slots.astype(np.int64) + row * capacity if row else slots)
            else:
                rows = np.asarray([row for row, _ in asked], dtype=np.int64)
                which, slots = index.find_each(keys[rows, rule], self._block[rule])
                found.append(rows[which] * capacity + slots)
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        # sorted: by row, then slot
        pairs = np.unique(np.concatenate(found)).astype(np.int64, copy=False)
        query_rows, slots = np.divmod(pairs, capacity)
        return query_rows, slots

    def _gather_pairs(
        self, query_rows: NDArray[np.int64], slots: NDArray[np.int64], *, scanned: bool
    ) -> _Pairs:
        """The pairs of ``query_rows`` with the live records among ``slots``, in the order
        given, each with a copy of its record's rows (call under the lock). A record met by
        several rows is copied for each: a few hundred rows of copies cost less than
        deduplicating them."""
        records, live = self._gather(slots)
        if not live.all():
            query_rows, slots = query_rows[live], slots[live]
        return _Pairs(query_rows, slots, np.full(slots.size, scanned), records)

    def _score(
        self,
        query: EncodedBatch,
        query_fields: _QueryFields,
        query_tags: NDArray[np.uint32],
        model: scoring.FellegiSunterModel,
        pairs: _Pairs,
    ) -> _Scored:
        """Compare each pair's query row with its record field by field and score it.

        A pair where the record is a form whose assumed salt value the query row contradicts,
        or the query row (a form) contradicts the record, is dropped
        (:func:`linkage.forms.assumption_conflicts`): the record's other form is the
        comparison that counts."""
        n_fields = len(self.schema.fields)
        if len(pairs) and n_fields:
            sim, present = _dice_fields(
                query_fields, pairs.query_rows, pairs.records.field_filters, self._field_layout
            )
        else:
            sim = np.zeros((len(pairs), n_fields))
            present = np.zeros((len(pairs), n_fields), dtype=bool)
        query_present = query.field_present[pairs.query_rows]
        pair_tags = query_tags[pairs.query_rows]
        if len(pairs) and self._assumable:
            conflicts = forms.assumption_conflicts(
                self._assumable, query_present, pair_tags, present, pairs.records.salt_tags
            )
            if conflicts.any():
                keep = ~conflicts
                pairs = pairs.take(keep)
                sim, present = sim[keep], present[keep]
                query_present, pair_tags = query_present[keep], pair_tags[keep]
        compared = compare_fields(
            self.schema, sim, query_present, present, pair_tags, pairs.records.salt_tags
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
        count = len(pairs)
        return _Scored(
            query_rows=pairs.query_rows,
            slots=pairs.slots,
            scanned=pairs.scanned,
            agency_codes=pairs.records.agency_codes,
            references=pairs.records.references,
            levels=levels,
            not_compared=compared.not_compared,
            probabilities=(model.match_probability(levels) if count else np.zeros(0, np.float64)),
        )
