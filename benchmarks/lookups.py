"""Staff lookups: is the right child's record ranked first among an agency's candidates?

Role: the lookup-quality figure (RESULTS.md "Lookups"). Every agency of the seeded
synthetic population, in an error profile (:data:`linkage.synthetic.PROFILES`), is published
into a :class:`linkage.index.MatchIndex` as nodes publish (forms included); the model is fitted
as the matcher fits it (on a sample of the index). Then records of one agency (``--from``,
children's social care) whose child the target agency (``--to``, health) holds are looked up
as staff would type them: the node's query (:func:`linkage.forms.encode_query`, one row per
assumed sex value; with ``hypotheses`` also the rows of its date hypotheses,
:func:`linkage.forms.encode_date_hypotheses`, which meet records through blocking only, as the
matcher queries them: all rows in one :meth:`~linkage.index.MatchIndex.query_rows`), the rows'
candidates merged per record under its best probability;
every profile is run without and with the hypotheses. For each lookup the
target agency's candidates at or above ``floor`` are ranked; ``top1`` is the share of lookups
whose first candidate is the child's record, ``top5`` whose first five hold one, ``none`` the
share with no candidate of that agency at all. Records of children the target agency does
*not* hold (``absent_lookups`` of them, drawn from every other agency) are looked up too:
``absent_any`` is the share of them answered with some candidate at or above ``floor`` (a
false lead), ``absent_possible`` with one in the band "possible" or above. Two floors: the
band "possible" (0.5) and the matcher's lookup floor
(:data:`server.matcher.records.LOOKUP_MIN_PROBABILITY`; below 0.5 a candidate is in the band
"low").

``--salting NAME`` (repeatable) runs the lookups under candidate saltings of the child schema
(:data:`benchmarks.salting_choice.VARIANTS`) instead of the shipped one, each row naming its
salting: the lookup side of "Salting: the frontier", written to its own section.

Labels are used only to score; only shares are printed.
Run ``python -m benchmarks.lookups --children 20000 --profile hard [--report]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from benchmarks.salting_choice import VARIANTS
from linkage import forms, pipeline, synthetic
from linkage.encode import concat_batches
from linkage.index import MatchIndex
from linkage.keys import KeySet, LinkageSecret
from linkage.schema import Schema, default_child_schema
from proto.jigsaw.v1 import jigsaw_pb2
from server.common.wire import BAND_THRESHOLDS
from server.matcher.model import MODEL_FIT_RECORDS, MODEL_FIT_SEED
from server.matcher.records import LOOKUP_MIN_PROBABILITY

#: Where the band "possible" starts.
POSSIBLE = dict((band, floor) for floor, band in BAND_THRESHOLDS)[
    jigsaw_pb2.PROBABILITY_BAND_POSSIBLE
]

PROFILES = ("default", "typical", "hard")


def run(
    children: int,
    profile: str,
    lookups: int,
    seed: int,
    source: str,
    target: str,
    hypotheses: tuple[bool, ...] = (False, True),
    floors: tuple[float, ...] = (POSSIBLE, LOOKUP_MIN_PROBABILITY),
    schema: Schema | None = None,
) -> list[dict[str, Any]]:
    """The rows of one profile; ``schema`` is the shipped child schema unless given."""
    schema = schema or default_child_schema()
    keys = KeySet(LinkageSecret.for_tests())
    agencies = synthetic.DEFAULT_AGENCIES if profile == "default" else synthetic.PROFILES[profile]
    population = synthetic.generate_population(children, seed=seed, agencies=agencies)
    index = MatchIndex(schema, key_version=1)
    owner: dict[str, tuple[str, int]] = {}  # published reference -> (agency, child)
    for code, (agency, data) in enumerate(population.agencies.items()):
        published = forms.encode_forms(schema, keys, data.columns)
        refs = [
            forms.form_reference(f"{code:08x}{int(row):024x}", int(form))
            for row, form in zip(published.origin.tolist(), published.form.tolist(), strict=True)
        ]
        index.upsert(agency, refs, published.batch)
        for ref, row in zip(refs, published.origin.tolist(), strict=True):
            owner[ref] = (agency, int(data.child_id[row]))
    sample, _, _ = index.snapshot(sample=MODEL_FIT_RECORDS, seed=MODEL_FIT_SEED)
    model = pipeline.score_pairs(schema, sample, None).model
    held = set(population.agencies[target].child_id.tolist())
    asking = population.agencies[source]
    rng = np.random.default_rng(seed + 1)
    present = [r for r, child in enumerate(asking.child_id.tolist()) if child in held]
    present = rng.permutation(present)[:lookups].tolist()
    # children the target does not hold, as any other agency records them
    absent = [
        (data, r)
        for name, data in population.agencies.items()
        if name != target
        for r, child in enumerate(data.child_id.tolist())
        if child not in held
    ]
    absent = [absent[k] for k in rng.permutation(len(absent))[:lookups].tolist()]

    def answer(data: synthetic.AgencyData, row: int, date_errors: bool) -> dict[int, float]:
        """The target's candidates of one lookup (by child), each at its best probability."""
        values = {name: data.columns[name][row] for name in schema.input_names}
        query = forms.encode_query(schema, keys, values)
        extra = forms.encode_date_hypotheses(schema, keys, values) if date_errors else None
        sent = query if extra is None else concat_batches([query, extra])
        best: dict[int, float] = {}
        # the hypotheses through blocking only: only the query's own rows scan
        for c in index.query_rows(
            sent,
            model,
            max_candidates=20,
            min_probability=min(floors),
            scanning_rows=len(query),
        ):
            agency, child = owner[c.reference]
            if agency == target:
                best[child] = max(best.get(child, 0.0), c.probability)
        return best

    out = []
    for date_errors in hypotheses:
        found = [(int(asking.child_id[r]), answer(asking, r, date_errors)) for r in present]
        false = [answer(data, r, date_errors) for data, r in absent]
        for floor in floors:
            top1 = top5 = none = 0
            for want, best in found:
                ranked = sorted((c for c in best if best[c] >= floor), key=lambda c: -best[c])
                top1 += bool(ranked) and ranked[0] == want
                top5 += want in ranked[:5]
                none += not ranked
            n = max(1, len(found))
            out.append(
                {
                    "profile": profile,
                    "hypotheses": "yes" if date_errors else "no",
                    "floor": floor,
                    "records": len(index),
                    "lookups": len(found),
                    "from": source,
                    "to": target,
                    "top1": top1 / n,
                    "top5": top5 / n,
                    "none": none / n,
                    "absent_lookups": len(false),
                    "absent_any": sum(any(p >= floor for p in b.values()) for b in false)
                    / max(1, len(false)),
                    "absent_possible": sum(any(p >= POSSIBLE for p in b.values()) for b in false)
                    / max(1, len(false)),
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--children", type=int, default=20_000)
    parser.add_argument("--profile", choices=PROFILES, action="append")
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--from", dest="source", default="childrens_social_care")
    parser.add_argument("--to", dest="target", default="health")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--salting",
        action="append",
        choices=list(VARIANTS),
        help="a candidate salting of the child schema (benchmarks.salting_choice); repeatable",
    )
    parser.add_argument("--report", action="store_true", help="write RESULTS.md's section")
    args = parser.parse_args(argv)
    rows = []
    for profile in args.profile or PROFILES:
        for salting in args.salting or [None]:
            print(f"{profile}: publishing and looking up", file=sys.stderr, flush=True)
            schema = None if salting is None else VARIANTS[salting]()
            found = run(
                args.children,
                profile,
                args.lookups,
                args.seed,
                args.source,
                args.target,
                schema=schema,
            )
            for row in found:
                row = {"salting": salting, **row} if salting else row
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.report:
        from benchmarks.report import write_table_section

        write_table_section(
            "lookups-salting" if args.salting else "lookups",
            "Lookups by salting" if args.salting else "Lookups",
            "benchmarks.lookups",
            argv,
            "Every agency of the seeded synthetic population published into the matcher's "
            "index as nodes publish (forms included), the model fitted as the matcher fits "
            "it; records of one agency whose child the other holds looked up as staff type "
            "them (one query row per assumed sex value; `hypotheses`: also the rows of the "
            "date hypotheses, `linkage.forms.encode_date_hypotheses`, blocking only; all rows "
            "in one pass, merged per record). Candidates at or above `floor` count: 0.5 is "
            'where the band "possible" starts, 0.1 the matcher\'s lookup floor '
            '(`LOOKUP_MIN_PROBABILITY`, band "low" below 0.5). `top1`: the target agency\'s '
            "first candidate is the child's record; `top5`: among its first five; `none`: no "
            "candidate of that agency. `absent_lookups`: records of children the target does "
            "not hold, from every other agency, looked up the same way; `absent_any`: the "
            "share answered with a candidate at or above `floor` (a false lead); "
            '`absent_possible`: with one in the band "possible" or above.'
            + (
                " `salting`: the child schema's candidate salting the records and queries were"
                ' encoded under (benchmarks.salting_choice, RESULTS "Salting: the frontier").'
                if args.salting
                else ""
            ),
            rows,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
