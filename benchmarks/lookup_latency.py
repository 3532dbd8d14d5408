"""Lookup latency in the matcher's index, in-process: a lookup's rows one by one or in one pass.

Role: the latency of the index work of one ``Match`` (RESULTS.md "Lookup latency"), without
gRPC, TLS or the node. The seeded synthetic population is published into a
:class:`linkage.index.MatchIndex` as nodes publish (forms included), the model fitted as the
matcher fits it; then records of one agency (``--from``) are looked up as staff type them:
the query's rows (:func:`linkage.forms.encode_query`, one per assumed sex value) and, with
``hypotheses``, the rows of its date hypotheses (:func:`linkage.forms.encode_date_hypotheses`,
blocking only), asked and merged per record exactly as the matcher's ``Match`` asks
(``max_candidates`` 20 times ``max_forms`` per row, ``CONFIDENT_PROBABILITY``,
``server.matcher.records.candidates_per_record``). The rows are encoded before timing; the time is
the index calls and the merge.

Paths, timed side by side in one process on the same lookups (interleaved, the order
rotated from one lookup to the next, so that the machine's noise falls on every path alike):

* ``per_row``: one ``MatchIndex.query`` per row, as the matcher asked before ``query_rows``;
* ``one_pass``: one ``MatchIndex.query_rows`` over all the rows (the matcher now);
* ``baseline`` (with ``--baseline REV``): one ``query`` per row of the ``MatchIndex`` of the
  single-file ``linkage/index.py`` at git revision ``REV``, in an index of its own built by
  the same upserts (the code before the change, measured beside it).

``identical`` is the share of lookups whose answer (candidates, order, probabilities,
levels) equals the first path's. Figures: median, 99th percentile and mean milliseconds.

``python -m benchmarks.lookup_latency --children 100000 --lookups 1000 [--baseline REV]
[--report]``; 100,000 children are about 230,000 indexed records.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from linkage import forms, pipeline, synthetic
from linkage.encode import EncodedBatch, concat_batches
from linkage.index import CONFIDENT_PROBABILITY, MatchIndex
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import default_child_schema
from server.common.limits import DEFAULT_MAX_CANDIDATES
from server.matcher.model import MODEL_FIT_RECORDS, MODEL_FIT_SEED
from server.matcher.records import (
    DEFAULT_MIN_PROBABILITY,
    FormMap,
    candidates_per_record,
)

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 20  # lookups run on every path before timing


def load_baseline(revision: str) -> types.ModuleType:
    """The module ``linkage/index.py`` at git ``revision`` (the single-file index), loaded
    beside the current package under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:linkage/index.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    name = "benchmarks._baseline_index"
    module = types.ModuleType(name)
    module.__file__ = f"{revision}:linkage/index.py"
    sys.modules[name] = module  # dataclasses resolve their annotations through it
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def _per_row(
    index: Any, typed: list[EncodedBatch], extra: list[EncodedBatch], model: Any, asked: int
) -> list[Any]:
    return [
        index.query(
            row,
            model,
            max_candidates=asked,
            min_probability=DEFAULT_MIN_PROBABILITY,
            confident_probability=CONFIDENT_PROBABILITY,
        )
        for row in typed
    ] + [
        index.query(
            row,
            model,
            max_candidates=asked,
            min_probability=DEFAULT_MIN_PROBABILITY,
            scan_top_k=0,
        )
        for row in extra
    ]


def _one_pass(
    index: Any, typed: list[EncodedBatch], extra: list[EncodedBatch], model: Any, asked: int
) -> list[Any]:
    return [
        index.query_rows(
            concat_batches([*typed, *extra]),
            model,
            max_candidates=asked,
            min_probability=DEFAULT_MIN_PROBABILITY,
            confident_probability=CONFIDENT_PROBABILITY,
            scanning_rows=len(typed),
        )
    ]


def run(
    children: int, lookups: int, seed: int, source: str, baseline: str | None
) -> list[dict[str, Any]]:
    schema = default_child_schema()
    keys = KeySet(LinkageSecret.for_tests())
    population = synthetic.generate_population(children, seed=seed)
    old = load_baseline(baseline).MatchIndex(schema, key_version=1) if baseline else None
    index = MatchIndex(schema, key_version=1)
    form_map = FormMap()
    for code, (agency, data) in enumerate(population.agencies.items()):
        published = forms.encode_forms(schema, keys, data.columns)
        records = [f"{code:08x}{int(row):024x}" for row in published.origin.tolist()]
        refs = [
            forms.form_reference(record, int(form))
            for record, form in zip(records, published.form.tolist(), strict=True)
        ]
        index.upsert(agency, refs, published.batch)
        if old is not None:
            old.upsert(agency, refs, published.batch)
        form_map.assign(
            agency,
            refs,
            [
                record if form != forms.NO_FORM else ""
                for record, form in zip(records, published.form.tolist(), strict=True)
            ],
        )
    sample, _, _ = index.snapshot(sample=MODEL_FIT_RECORDS, seed=MODEL_FIT_SEED)
    model = pipeline.score_pairs(schema, sample, None).model
    asked = DEFAULT_MAX_CANDIDATES * forms.max_forms(schema)
    asking = population.agencies[source]
    picked = np.random.default_rng(seed + 1).permutation(len(asking.child_id))
    queries: list[tuple[list[EncodedBatch], list[EncodedBatch]]] = []
    for row in picked[: lookups + WARM_UP].tolist():
        values = {name: asking.columns[name][row] for name in schema.input_names}
        query = forms.encode_query(schema, keys, values)
        dates = forms.encode_date_hypotheses(schema, keys, values)
        queries.append(
            (
                [query.take([q]) for q in range(len(query))],
                [] if dates is None else [dates.take([q]) for q in range(len(dates))],
            )
        )
    paths: list[tuple[str, Any, Callable[..., list[Any]]]] = []
    if old is not None:
        paths.append(("baseline", old, _per_row))
    paths += [("per_row", index, _per_row), ("one_pass", index, _one_pass)]
    times: dict[tuple[bool, str], list[float]] = {}
    same: dict[tuple[bool, str], int] = {}
    rows: dict[bool, list[int]] = {False: [], True: []}
    gc.collect()
    gc.freeze()  # the population and indexes are not the lookups' garbage
    for number, (typed, extra) in enumerate(queries):
        for hypotheses in (False, True):
            sent: list[EncodedBatch] = extra if hypotheses else []
            answers = {}
            turn = number % len(paths)
            for name, target, path in paths[turn:] + paths[:turn]:
                started = time.perf_counter()
                found = candidates_per_record(
                    path(target, typed, sent, model, asked), form_map, DEFAULT_MAX_CANDIDATES
                )
                elapsed = time.perf_counter() - started
                answers[name] = [dataclasses.astuple(c) for c in found]
                if number >= WARM_UP:
                    times.setdefault((hypotheses, name), []).append(elapsed)
            if number >= WARM_UP:
                rows[hypotheses].append(len(typed) + len(sent))
                first = answers[paths[0][0]]
                for name, _, _ in paths:
                    same[(hypotheses, name)] = same.get((hypotheses, name), 0) + (
                        answers[name] == first
                    )
    out = []
    for hypotheses in (False, True):
        for name, _, _ in paths:
            ms = 1000 * np.asarray(times[(hypotheses, name)])
            out.append(
                {
                    "hypotheses": "yes" if hypotheses else "no",
                    "path": name,
                    "records": len(index),
                    "lookups": int(ms.size),
                    "rows_per_lookup": float(np.mean(rows[hypotheses])),
                    "p50_ms": float(np.median(ms)),
                    "p99_ms": float(np.percentile(ms, 99)),
                    "mean_ms": float(ms.mean()),
                    "identical": same[(hypotheses, name)] / max(1, int(ms.size)),
                }
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--children", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--from", dest="source", default="childrens_social_care")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--baseline", metavar="REV", help="also time linkage/index.py at this git revision"
    )
    parser.add_argument("--report", action="store_true", help="write RESULTS.md's section")
    args = parser.parse_args(argv)
    print("publishing, fitting, looking up", file=sys.stderr, flush=True)
    load_before = os.getloadavg()[0]
    rows = run(args.children, args.lookups, args.seed, args.source, args.baseline)
    load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores"
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.report:
        from benchmarks.report import write_table_section

        write_table_section(
            "lookup_latency",
            "Lookup latency",
            "benchmarks.lookup_latency",
            argv,
            "The index work of one `Match`, in-process (no gRPC, TLS or node): the seeded "
            "synthetic population published into the matcher's index as nodes publish (forms "
            "included), the model fitted as the matcher fits it; records of children's social "
            "care looked up as staff type them, asked and merged per record as `Match` asks "
            "(`hypotheses`: also the rows of the date hypotheses, blocking only). Paths timed "
            "side by side on the same lookups, interleaved: `per_row` one `MatchIndex.query` "
            "per row (the matcher before), `one_pass` one `MatchIndex.query_rows` over all "
            "rows (the matcher now), `baseline` one query per row of the index at the "
            "revision given. `identical`: share of lookups whose answer equals the first "
            "path's. Milliseconds per lookup; rows encoded before timing. The machine's "
            f"load average (1 min): {load}.",
            rows,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
