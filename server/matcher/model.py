"""The matcher's Fellegi-Sunter model: loaded, fitted on demand, replaced by each link.

Role: ``Match`` scores with the current model and ``Link`` refits it on everything it links.
:class:`MatchModel` holds it: loaded from the store at start (:meth:`MatchModel.load`; a stored
model that no longer fits the served schema is dropped and refitted), fitted at the first
``Match`` when there is none (:meth:`MatchModel.ensure`, on a random sample of at most
:data:`MODEL_FIT_RECORDS` published records, fixed seed), and replaced by a link
(:meth:`MatchModel.replace`).

Invariants: every model it holds is in the store too (saved before it is used); the forms of
one record are never a pair of the fit; the candidates' evidence table
(:class:`~server.matcher.wire.EvidenceTable`) is built once per model.
"""

from __future__ import annotations

import logging
import threading
import time

from linkage import pipeline
from linkage.errors import ModelError
from linkage.schema import Schema
from linkage.scoring import FellegiSunterModel
from server.matcher.records import PublishedRecords
from server.matcher.store import MatcherStore
from server.matcher.wire import EvidenceTable, evidence_table

logger = logging.getLogger(__name__)

#: Records (drawn at random, fixed seed) the on-demand model fit of the first Match uses:
#: m and u are proportions that a sample of this size estimates well, and scoring every
#: blocked pair of a large index takes more memory than a matcher host has.
MODEL_FIT_RECORDS = 100_000
MODEL_FIT_SEED = 20_260_101


def load_model(store: MatcherStore, schema: Schema) -> FellegiSunterModel | None:
    """The stored model, or None when there is none or it does not fit ``schema``."""
    data = store.load_model()
    if data is None:
        return None
    try:
        model = FellegiSunterModel.from_dict(data)
    except ModelError:
        logger.warning("the stored model is unusable; it will be refitted")
        return None
    thresholds = tuple(tuple(spec.levels) for spec in schema.comparison_specs)
    if model.field_names != schema.comparison_names or model.thresholds != thresholds:
        logger.warning("the stored model does not fit the served schema; it will be refitted")
        return None
    return model


class MatchModel:
    """The current model of one matcher and its evidence table (thread-safe)."""

    def __init__(self, records: PublishedRecords, model: FellegiSunterModel | None) -> None:
        self._records = records
        self._store = records.store
        self._model = model
        self._evidence: EvidenceTable | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, records: PublishedRecords) -> MatchModel:
        return cls(records, load_model(records.store, records.store.schema))

    @property
    def current(self) -> FellegiSunterModel | None:
        return self._model

    def ensure(self) -> FellegiSunterModel:
        """The current model, fitted on a sample of the published records (and stored) if
        there is none yet; ModelError when fewer than 2 records are published."""
        with self._lock:
            if self._model is None:
                snapshot = self._records.sample(MODEL_FIT_RECORDS, MODEL_FIT_SEED)
                if snapshot.rows < 2:
                    raise ModelError("no fitted model: at least 2 published records are needed")
                started = time.perf_counter()
                (batch,) = snapshot.datasets
                model = pipeline.score_pairs(
                    self._store.schema, batch, None, record=snapshot.record
                ).model
                self._store.save_model(model.to_dict())
                self._model = model
                logger.info(
                    "fitted the model on %d records in %.2f s",
                    len(batch), time.perf_counter() - started,
                )  # fmt: skip
            return self._model

    def replace(self, model: FellegiSunterModel) -> None:
        """Store ``model`` and use it from now on."""
        with self._lock:
            self._store.save_model(model.to_dict())
            self._model = model

    def evidence(self, model: FellegiSunterModel) -> EvidenceTable:
        """The evidence table of ``model`` (built at its first use)."""
        table = self._evidence
        if table is None or table.model is not model:
            table = self._evidence = evidence_table(model)
        return table


__all__ = ["MODEL_FIT_RECORDS", "MODEL_FIT_SEED", "MatchModel", "load_model"]
