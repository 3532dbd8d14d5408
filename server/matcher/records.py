"""The published records: the matcher's one owner of its store, index and form map.

Role: everything nodes publish lives in three places that must agree — the
:class:`~server.matcher.store.MatcherStore` (SQLite, the durable copy), the
:class:`~linkage.index.MatchIndex` (in memory, rebuilt from the store at start) and the
:class:`FormMap` (which rows are *forms* of which record, :mod:`linkage.forms`). A
:class:`PublishedRecords` holds all three and is the only code that writes them.

Invariants:

- every write (:meth:`PublishedRecords.publish`, :meth:`PublishedRecords.withdraw`) runs under
  one lock, commits to the store first (its own transaction) and then updates the map and the
  index, so a ``kill -9`` loses at most the write in flight, which the node re-sends (upserts
  are idempotent);
- the map learns a form before the index holds it, so a concurrent query never meets a form
  it cannot name; the rows a publish replaced (a record's old forms, or its own row) and the
  forms of a withdrawn record leave the index and the map together;
- a record's forms are that record: :meth:`PublishedRecords.query` reports each record once,
  under its own reference, at its best candidate over every query row and every form;
  :meth:`PublishedRecords.snapshot` numbers rows by record; counts are of records, not rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from linkage import forms
from linkage.encode import EncodedBatch, concat_batches
from linkage.index import CONFIDENT_PROBABILITY, IndexedCandidate, MatchIndex
from linkage.scoring import FellegiSunterModel
from server.matcher.memory import release_free_memory
from server.matcher.store import MatcherStore, UpsertCounts

logger = logging.getLogger(__name__)

#: Rows read from the store per step of the rebuild at start.
REBUILD_CHUNK = 10_000
#: The batch link's lowest edge probability when the operator names none.
DEFAULT_MIN_PROBABILITY = 0.5
#: A lookup's candidates go down to this probability: staff judge each answer, and a child whose
#: family name changed and who moved house scores below the batch link's 0.5 on given name,
#: date of birth and sex alone. Below 0.5 a candidate is in the band "low".
LOOKUP_MIN_PROBABILITY = 0.1


class FormMap:
    """Which published rows are forms, and of which record, per agency (thread-safe).

    A row not held here is a record published as itself. Holds only the forms (a record
    lacking sex: about one in a hundred at scale), so it costs nothing for the others.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._record: dict[str, dict[str, str]] = {}  # agency -> form reference -> record
        self._forms: dict[str, dict[str, int]] = {}  # agency -> record -> how many forms

    def __len__(self) -> int:
        with self._lock:
            return sum(len(held) for held in self._record.values())

    def record_of(self, agency: str, reference: str) -> str:
        """The record ``reference`` is a form of, or ``reference`` itself."""
        held = self._record.get(agency)
        return reference if held is None else held.get(reference, reference)

    def assign(self, agency: str, references: Sequence[str], form_of: Sequence[str]) -> None:
        """Row ``references[i]`` is a form of ``form_of[i]`` ("" = a record itself)."""
        with self._lock:
            held = self._record.setdefault(agency, {})
            counts = self._forms.setdefault(agency, {})
            for reference, record in zip(references, form_of, strict=True):
                self._drop(held, counts, reference)
                if record:
                    held[reference] = record
                    counts[record] = counts.get(record, 0) + 1

    def discard(self, agency: str, references: Sequence[str]) -> None:
        """Forget these rows (withdrawn or replaced); references that are no form are ignored."""
        with self._lock:
            held = self._record.get(agency)
            if held:
                counts = self._forms[agency]
                for reference in references:
                    self._drop(held, counts, reference)

    @staticmethod
    def _drop(held: dict[str, str], counts: dict[str, int], reference: str) -> None:
        record = held.pop(reference, None)
        if record is not None:
            counts[record] -= 1
            if not counts[record]:
                del counts[record]

    def surplus_rows(self) -> dict[str, int]:
        """Per agency, rows minus records: forms held, less the records they belong to."""
        with self._lock:
            return {
                agency: len(held) - len(self._forms[agency])
                for agency, held in self._record.items()
            }

    def records(self, agency_of: Sequence[str], references: Sequence[str]) -> list[str]:
        """``record_of`` of each (agency, reference) pair."""
        return [
            self.record_of(agency, reference)
            for agency, reference in zip(agency_of, references, strict=True)
        ]


def candidates_per_record(
    found: Sequence[Sequence[IndexedCandidate]], form_map: FormMap, limit: int
) -> list[IndexedCandidate]:
    """One lookup's candidates from the ranked lists of its query rows (each best first):
    each record once, at its most probable candidate over every row and every form of it
    (the earlier row on a tie), reported under the record's reference, most probable first,
    at most ``limit`` of them."""
    ranked = sorted(itertools.chain.from_iterable(found), key=lambda c: -c.probability)
    out: list[IndexedCandidate] = []
    seen: set[tuple[str, str]] = set()
    for candidate in ranked:
        record = form_map.record_of(candidate.agency, candidate.reference)
        if (candidate.agency, record) in seen:
            continue
        seen.add((candidate.agency, record))
        if record != candidate.reference:
            candidate = dataclasses.replace(candidate, reference=record)
        out.append(candidate)
        if len(out) == limit:
            break
    return out


def record_numbers(members: Sequence[tuple[str, str]]) -> NDArray[np.int64] | None:
    """Per row, a number for its member (record): 0.. in order of first appearance; None
    when every row is its own record (no forms)."""
    numbers: dict[tuple[str, str], int] = {}
    out = np.fromiter(
        (numbers.setdefault(member, len(numbers)) for member in members),
        dtype=np.int64,
        count=len(members),
    )
    return None if len(numbers) == len(members) else out


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The published rows at one moment, in ``datasets`` (one batch per agency, in the order
    of their names; one batch of every row when taken as a sample): ``members[i]`` is the
    (agency, record reference) of row ``i`` of their concatenation, a form's being its
    record's, and ``present`` that row's field presence."""

    datasets: list[EncodedBatch]
    members: list[tuple[str, str]]
    present: NDArray[np.bool_]

    @property
    def rows(self) -> int:
        return len(self.members)

    @property
    def record(self) -> NDArray[np.int64] | None:
        """Row numbers by member (:func:`record_numbers`): the forms of a record share one."""
        return record_numbers(self.members)


class PublishedRecords:
    """The store, index and form map of everything published, kept in step (thread-safe)."""

    def __init__(self, store: MatcherStore, index: MatchIndex, form_map: FormMap) -> None:
        self._store = store
        self._index = index
        self._forms = form_map
        self._max_forms = forms.max_forms(store.schema)
        self._write_lock = threading.Lock()

    @classmethod
    def load(cls, store: MatcherStore, *, chunk_size: int = REBUILD_CHUNK) -> PublishedRecords:
        """The index and form map rebuilt from every row in ``store``."""
        started = time.perf_counter()
        form_map = FormMap()
        index = MatchIndex(store.schema, key_version=store.key_version, capacity=store.count())
        for chunk in store.iter_encodings(chunk_size=chunk_size):
            if any(chunk.form_of):
                form_map.assign(chunk.agency, chunk.references, chunk.form_of)
            index.upsert(chunk.agency, chunk.references, chunk.batch)
        release_free_memory()  # the store's chunks were parsed into short-lived objects
        logger.info(
            "rebuilt the index: %d records in %.2f s", len(index), time.perf_counter() - started
        )
        return cls(store, index, form_map)

    @property
    def store(self) -> MatcherStore:
        return self._store

    @property
    def rows(self) -> int:
        """Rows held: a record published as forms counts once per form."""
        return len(self._index)

    def __len__(self) -> int:
        """Records held (a record published as forms counts once)."""
        return len(self._index) - sum(self._forms.surplus_rows().values())

    def counts_by_agency(self) -> dict[str, int]:
        """Records held per agency (agencies holding none left out)."""
        counts = self._index.counts_by_agency()
        for agency, surplus in self._forms.surplus_rows().items():
            counts[agency] = counts.get(agency, 0) - surplus
        return {agency: count for agency, count in counts.items() if count}

    def publish(
        self,
        agency: str,
        references: Sequence[str],
        batch: EncodedBatch,
        form_of: Sequence[str],
    ) -> UpsertCounts:
        """Insert or replace ``agency``'s rows (``form_of[i]``: "" or the record row ``i`` is
        a form of); the rows these replace (a record's old forms, or its own row) go."""
        with self._write_lock:
            counts = self._store.upsert(agency, references, batch, form_of)  # committed
            self._forms.assign(agency, references, form_of)  # before the index holds them
            if counts.removed:
                self._index.remove(agency, counts.removed)
                self._forms.discard(agency, counts.removed)
            if counts.changed_rows:
                rows = list(counts.changed_rows)
                if rows == list(range(len(references))):  # every row new or changed: no copy
                    self._index.upsert(agency, references, batch)
                else:
                    self._index.upsert(agency, [references[r] for r in rows], batch.take(rows))
        return counts

    def withdraw(self, agency: str, references: Sequence[str]) -> int:
        """Remove ``agency``'s records (and their forms); how many records were held."""
        with self._write_lock:
            deleted = self._store.delete(agency, references)  # records and forms
            self._index.remove(agency, [*references, *deleted.removed])
            self._forms.discard(agency, deleted.removed)
        return deleted.withdrawn

    def query(
        self,
        queries: EncodedBatch,
        hypotheses: EncodedBatch,
        model: FellegiSunterModel,
        max_candidates: int,
    ) -> list[IndexedCandidate]:
        """One lookup's ranked candidates at or above :data:`LOOKUP_MIN_PROBABILITY`, each
        record once (:func:`candidates_per_record`).

        Every row goes through the index in one pass (``MatchIndex.query_rows``): blocking,
        and the full scan only for the query's own rows and only when blocking found no
        confident candidate; the date hypotheses through blocking only. A record's forms may
        take several places, so each row is asked for ``max_forms`` times ``max_candidates``.
        """
        found = self._index.query_rows(
            concat_batches([queries, hypotheses]) if len(hypotheses) else queries,
            model,
            max_candidates=max_candidates * self._max_forms,
            min_probability=LOOKUP_MIN_PROBABILITY,
            confident_probability=CONFIDENT_PROBABILITY,
            scanning_rows=len(queries),
        )
        return candidates_per_record([found], self._forms, max_candidates)

    def sample(self, size: int, seed: int) -> Snapshot:
        """At most ``size`` rows drawn at random with ``seed``, as one dataset."""
        batch, codes, references = self._index.snapshot(sample=size, seed=seed)
        members = self._members(codes, references)
        return Snapshot([batch], members, np.asarray(batch.field_present, dtype=bool))

    def snapshot(self) -> Snapshot:
        """Every row, one dataset per agency (in the order of their names)."""
        batch, codes, references = self._index.snapshot()
        order: list[int] = []
        datasets = []
        agency_codes = sorted(
            np.unique(codes).tolist(), key=lambda c: self._index.agency_name(int(c))
        )
        for code in agency_codes:
            rows = np.flatnonzero(codes == code)
            datasets.append(batch.take(rows))
            order.extend(rows.tolist())
        members = self._members(codes[order], [references[r] for r in order])
        return Snapshot(datasets, members, batch.field_present[order])

    def _members(
        self, codes: NDArray[np.int16], references: Sequence[str]
    ) -> list[tuple[str, str]]:
        """(agency, record reference) of each snapshot row: a form's is its record's."""
        agencies = [self._index.agency_name(int(code)) for code in codes.tolist()]
        return list(zip(agencies, self._forms.records(agencies, references), strict=True))


__all__ = [
    "DEFAULT_MIN_PROBABILITY",
    "LOOKUP_MIN_PROBABILITY",
    "FormMap",
    "PublishedRecords",
    "Snapshot",
    "candidates_per_record",
    "record_numbers",
]
