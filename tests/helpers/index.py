"""A small published population for tests of linkage.index, and its fitted model (each built
once per process)."""

from __future__ import annotations

from functools import cache

import numpy as np

from linkage import pipeline
from linkage.encode import EncodedBatch, encode_records
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import default_child_schema
from linkage.scoring import FellegiSunterModel
from linkage.synthetic import generate_population

SCHEMA = default_child_schema()
KEYS = KeySet(LinkageSecret.for_tests())


@cache
def index_population() -> tuple[EncodedBatch, np.ndarray]:
    """600 children's records encoded under the shipped schema, and each record's child."""
    data = generate_population(600, seed=3)
    combined = data.all_records()
    return encode_records(SCHEMA, KEYS, combined.columns), combined.child_id


@cache
def population_model() -> FellegiSunterModel:
    """The model fitted on :func:`index_population`."""
    return pipeline.score_pairs(SCHEMA, index_population()[0], None).model


def refs(n: int, start: int = 0) -> list[str]:
    """``n`` references; deliberately structured: their first 8 bytes all collide."""
    return [f"{i:032x}" for i in range(start, start + n)]
