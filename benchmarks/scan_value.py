"""What the lookup's full record-filter scan adds, and what it costs (in-process).

Role: the evidence for how the matcher (``server/matcher/records.py``) calls
:meth:`linkage.index.MatchIndex.query`.
A seeded synthetic population is encoded with the shipped child schema and indexed as the
matcher holds it; the model is fitted as the matcher fits it (on a sample of the index).
Lookups are records of children held at least twice, queried with their own encoding. For
each scan policy it reports the record-level recall (the share of the query child's *other*
records among the candidates) and the time per lookup; then, for the lookups that missed
every other record, whether the model itself rejects the pair (the other records scored
directly, with no retrieval step): a miss the scan could fix is one the model would accept.

``python -m benchmarks.scan_value --children 100000 --lookups 1500`` prints one JSON line per
policy and one for the misses.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from linkage import pipeline, synthetic
from linkage.encode import EncodedBatch, encode_records
from linkage.index import CONFIDENT_PROBABILITY, MatchIndex
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import default_child_schema

#: (name, keyword arguments of MatchIndex.query)
POLICIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("scan_always", {}),
    ("scan_never", {"scan_top_k": 0}),
    (
        "scan_unless_one_confident",
        {"confident_probability": CONFIDENT_PROBABILITY, "confident_candidates": 1},
    ),
)
MODEL_SAMPLE = 100_000


def run(children: int, lookups: int, seed: int) -> list[dict[str, Any]]:
    schema = default_child_schema()
    keys = KeySet(LinkageSecret.for_tests())
    population = synthetic.generate_population(children, seed=seed)
    index = MatchIndex(schema, key_version=1)
    encoded: dict[str, tuple[EncodedBatch, list[int]]] = {}
    child_of: dict[tuple[str, str], tuple[int, int]] = {}
    for code, (agency, data) in enumerate(population.agencies.items()):
        batch = encode_records(schema, keys, data.columns)
        refs = [f"{code:08x}{row:024x}" for row in range(len(batch))]
        index.upsert(agency, refs, batch)
        children_of_rows = [int(c) for c in data.child_id.tolist()]
        encoded[agency] = (batch, children_of_rows)
        for row, ref in enumerate(refs):
            child_of[(agency, ref)] = (children_of_rows[row], row)
    sample, _, _ = index.snapshot(sample=MODEL_SAMPLE, seed=1)
    model = pipeline.score_pairs(schema, sample, None).model
    held: dict[int, list[tuple[str, int]]] = {}
    for agency, (_, rows) in encoded.items():
        for row, child in enumerate(rows):
            held.setdefault(child, []).append((agency, row))
    rng = np.random.default_rng(seed + 1)
    pool = [(a, r) for a, (b, _) in encoded.items() for r in range(len(b))]
    queries: list[tuple[str, int, int]] = []
    for pick in rng.permutation(len(pool)).tolist():
        agency, row = pool[pick]
        child = encoded[agency][1][row]
        if len(held[child]) > 1:
            queries.append((agency, row, child))
        if len(queries) == lookups:
            break
    others_total = sum(len(held[child]) - 1 for _, _, child in queries)
    out: list[dict[str, Any]] = []
    missed: list[tuple[str, int, int]] = []
    for name, options in POLICIES:
        found_others = 0
        times: list[float] = []
        for agency, row, child in queries:
            query = encoded[agency][0].take([row])
            started = time.perf_counter()
            found = index.query(query, model, **options)
            times.append(time.perf_counter() - started)
            hits = sum(
                child_of[(c.agency, c.reference)][0] == child
                and (c.agency, child_of[(c.agency, c.reference)][1]) != (agency, row)
                for c in found
            )
            found_others += hits
            if name == "scan_always" and hits == 0:
                missed.append((agency, row, child))
        out.append(
            {
                "policy": name,
                "records": len(index),
                "lookups": len(queries),
                "record_recall": found_others / max(1, others_total),
                "median_ms": 1000 * float(np.median(times)),
                "mean_ms": 1000 * float(np.mean(times)),
            }
        )
    rejected = 0
    for agency, row, child in missed:
        query = encoded[agency][0].take([row])
        best = 0.0
        for other_agency, other_row in held[child]:
            if (other_agency, other_row) == (agency, row):
                continue
            alone = MatchIndex(schema, key_version=1)
            alone.upsert(other_agency, ["0" * 32], encoded[other_agency][0].take([other_row]))
            scored = alone.query(query, model, min_probability=0.0, scan_threshold=0.0)
            best = max([best, *(c.probability for c in scored)])
        rejected += best < 0.5
    out.append(
        {"misses": len(missed), "misses_the_model_rejects": rejected, "lookups": len(queries)}
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--children", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    for row in run(args.children, args.lookups, args.seed):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
